use crate::catalog::{BackupKind, BackupStatus};
use tidemark_core::ids::{BackupId, ChunkId};

use super::*;
use crate::catalog::{CatalogError, ManifestEntry, NewChunk, test_catalog};
use crate::store::PackLoc;

/// The names of instance pg's archived files.
async fn log_names(cat: &Catalog) -> Vec<String> {
    cat.archived_log_positions("pg")
        .await
        .unwrap()
        .into_iter()
        .map(|(name, _, _)| name)
        .collect()
}

fn chunk(n: u8) -> ChunkId {
    ChunkId::of(&[n])
}

fn new_in(pack: &str, ids: &[ChunkId]) -> Vec<NewChunk> {
    ids.iter()
        .enumerate()
        .map(|(i, id)| NewChunk {
            id: *id,
            raw_len: 1,
            stored_len: 10,
            pack: Some(PackLoc {
                pack: pack.into(),
                offset: 10 * i as u64,
                len: 10,
            }),
        })
        .collect()
}

fn entries(ids: &[ChunkId]) -> Vec<ManifestEntry> {
    ids.iter()
        .enumerate()
        .map(|(i, id)| ManifestEntry {
            seq: i as u64,
            id: *id,
            raw_len: 1,
        })
        .collect()
}

/// A finished one-part backup of instance "pg" referring to `refs`, storing `new` first.
async fn backup(cat: &Catalog, refs: &[ChunkId], new: &[NewChunk], ok: bool) -> BackupId {
    let b = cat
        .create_backup(
            "pg",
            "db1",
            BackupKind::Base,
            None,
            &["base".into()],
            &[],
            "15",
            "15",
        )
        .await
        .unwrap();
    cat.add_manifest(b, "base", &entries(refs), new)
        .await
        .unwrap();
    assert!(
        cat.finish_backup(b, ok, if ok { "" } else { "broke" })
            .await
            .unwrap()
    );
    b
}

async fn wal(cat: &Catalog, name: &str, refs: &[ChunkId], new: &[NewChunk]) {
    let f = crate::catalog::wal::test_file(name, name);
    cat.add_wal(&f, &entries(refs), new).await.unwrap();
}

fn expiry(backups: &[BackupId], logs: &[&str], kept: &[BackupId]) -> Expiry {
    Expiry {
        instance: "pg".into(),
        backups: backups
            .iter()
            .map(|b| (b.0, "no rule keeps it".into()))
            .collect(),
        logs: logs.iter().map(|l| l.to_string()).collect(),
        kept_bases: kept.iter().map(|b| b.0).collect(),
    }
}

#[tokio::test]
async fn applying_expires_backups_and_deletes_logs_keeping_the_rows_as_history() {
    let (cat, _dir) = test_catalog().await;
    let (a, b, c) = (chunk(1), chunk(2), chunk(3));
    let old = backup(&cat, &[a], &new_in("p1", &[a]), true).await;
    let failed = backup(&cat, &[b], &new_in("p2", &[b]), false).await;
    let kept = backup(&cat, &[c], &new_in("p3", &[c]), true).await;
    wal(&cat, "000000010000000000000001", &[a], &[]).await;
    wal(&cat, "000000010000000000000002", &[c], &[]).await;

    let e = expiry(&[old, failed], &["000000010000000000000001"], &[kept]);
    cat.apply_retention(&e).await.unwrap().unwrap();

    let row = cat.backup(old).await.unwrap().unwrap();
    assert_eq!(row.status.as_str(), "expired");
    assert!(row.reason.contains("no rule keeps it"), "{}", row.reason);
    assert!(row.expired_at.is_some());
    let row = cat.backup(failed).await.unwrap().unwrap();
    assert_eq!(
        (row.status.as_str(), row.reason.as_str()),
        ("failed", "broke")
    );
    assert!(row.expired_at.is_some());
    assert!(
        cat.manifest_page(old, "base", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        cat.manifest_page(failed, "base", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        cat.manifest_page(kept, "base", 0, 10).await.unwrap().len(),
        1
    );
    assert_eq!(
        log_names(&cat).await,
        vec!["000000010000000000000002".to_string()]
    );
    assert!(
        cat.wal_manifest("pg", "000000010000000000000001")
            .await
            .unwrap()
            .is_empty()
    );

    // Applied twice, the plan finds its backups already gone and changes nothing.
    let again = cat.apply_retention(&e).await.unwrap();
    assert!(again.unwrap_err().contains(&format!("backup {old}")));
}

#[tokio::test]
async fn a_plan_whose_premises_changed_is_not_applied_at_all() {
    let (cat, _dir) = test_catalog().await;
    let (a, b) = (chunk(1), chunk(2));
    let old = backup(&cat, &[a], &new_in("p1", &[a]), true).await;
    let kept = backup(&cat, &[b], &new_in("p2", &[b]), true).await;
    wal(&cat, "000000010000000000000001", &[a], &[]).await;
    let e = expiry(&[old], &["000000010000000000000001"], &[kept]);
    let unchanged = |cat: Catalog| async move {
        assert_eq!(
            cat.backup(old).await.unwrap().unwrap().status.as_str(),
            "complete"
        );
        assert_eq!(
            cat.manifest_page(old, "base", 0, 10).await.unwrap().len(),
            1
        );
        assert_eq!(log_names(&cat).await.len(), 1);
    };

    // A restore of the backup was queued after the plan was made.
    let job = cat
        .create_job(
            "restore",
            "db1",
            "pg",
            &serde_json::json!({"backup_id": old.0}),
            0,
            &[],
        )
        .await
        .unwrap();
    let why = cat.apply_retention(&e).await.unwrap().unwrap_err();
    assert!(why.contains("used by a drill or restore"), "{why}");
    unchanged(cat.clone()).await;
    cat.update_job(job, crate::catalog::JobState::Succeeded, 0, None, "")
        .await
        .unwrap();
    // Ended, it still holds its backup while its grant lasts: its server, started later
    // (or created with --start off), replays WAL from that backup.
    let why = cat.apply_retention(&e).await.unwrap().unwrap_err();
    assert!(why.contains("used by a drill or restore"), "{why}");
    assert_eq!(cat.backups_in_use().await.unwrap(), vec![old.0]);
    unchanged(cat.clone()).await;
    sqlx::query("UPDATE jobs SET finished_at = $1 WHERE id = $2")
        .bind(crate::catalog::now() - crate::catalog::RESTORE_GRANT_SECS - 60)
        .bind(job.0)
        .execute(&cat.pool)
        .await
        .unwrap();
    assert!(cat.backups_in_use().await.unwrap().is_empty());

    // So was a drill.
    let drill = cat.create_drill("pg", 0, "test", "").await.unwrap();
    sqlx::query("UPDATE drills SET backup_id = $1 WHERE id = $2")
        .bind(old.0)
        .bind(drill)
        .execute(&cat.pool)
        .await
        .unwrap();
    let why = cat.apply_retention(&e).await.unwrap().unwrap_err();
    assert!(why.contains("used by a drill or restore"), "{why}");
    unchanged(cat.clone()).await;
    cat.end_drill(drill, crate::catalog::DrillState::Passed, "")
        .await
        .unwrap();

    // The base backup the plan counted on was found damaged.
    cat.mark_backup_corrupt(kept, "chunk x is missing")
        .await
        .unwrap();
    let why = cat.apply_retention(&e).await.unwrap().unwrap_err();
    assert!(why.contains(&format!("base backup {kept}")), "{why}");
    unchanged(cat.clone()).await;
}

#[tokio::test]
async fn collection_takes_only_packs_nothing_refers_to() {
    let (cat, _dir) = test_catalog().await;
    let ids: Vec<ChunkId> = (1..=6).map(chunk).collect();
    // p1: both chunks only in the backup that expires. p2: one chunk shared with the kept
    // backup. p3: a chunk only archived WAL refers to.
    let old = backup(
        &cat,
        &ids[..4],
        &[new_in("p1", &ids[..2]), new_in("p2", &ids[2..4])].concat(),
        true,
    )
    .await;
    let kept = backup(&cat, &ids[3..4], &[], true).await;
    wal(
        &cat,
        "000000010000000000000009",
        &ids[4..5],
        &new_in("p3", &ids[4..5]),
    )
    .await;

    assert!(
        cat.collect_garbage().await.unwrap().is_empty(),
        "all referenced"
    );
    cat.apply_retention(&expiry(&[old], &[], &[kept]))
        .await
        .unwrap()
        .unwrap();
    let pending = cat.collect_garbage().await.unwrap();
    assert_eq!(
        pending,
        vec![Garbage {
            object: "p1".into(),
            kind: "pack".into(),
            chunks: 2,
            bytes: 20,
        }]
    );
    assert_eq!(cat.chunk_place(&ids[0]).await.unwrap().map(|p| p.0), None);
    assert!(!cat.chunk_owned_by(&ids[0], "db1").await.unwrap());
    // p2's unreferenced chunk stays held (its pack is kept whole), and so does p3's.
    assert!(
        cat.chunk_place(&ids[2])
            .await
            .unwrap()
            .map(|p| p.0)
            .is_some()
    );
    assert!(
        cat.chunk_place(&ids[4])
            .await
            .unwrap()
            .map(|p| p.0)
            .is_some()
    );

    // Pending until the store says it deleted it; collecting again adds nothing.
    assert_eq!(cat.collect_garbage().await.unwrap().len(), 1);
    cat.garbage_deleted("p1").await.unwrap();
    assert!(cat.pending_garbage().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_upload_and_a_collection_never_both_win() {
    let (cat, _dir) = test_catalog().await;
    let (a, b) = (chunk(1), chunk(2));
    let old = backup(&cat, &[a, b], &new_in("p1", &[a, b]), true).await;
    cat.apply_retention(&expiry(&[old], &[], &[]))
        .await
        .unwrap()
        .unwrap();

    // The reference commits first: collection sees it and keeps the pack.
    let first = cat
        .create_backup(
            "pg",
            "db1",
            BackupKind::Base,
            None,
            &["base".into()],
            &[],
            "15",
            "15",
        )
        .await
        .unwrap();
    cat.add_manifest(first, "base", &entries(&[a]), &[])
        .await
        .unwrap();
    assert!(cat.collect_garbage().await.unwrap().is_empty());

    // Collection commits first: the reference is refused, and nothing of it is recorded.
    cat.clear_manifest(first, "base").await.unwrap();
    assert_eq!(cat.collect_garbage().await.unwrap().len(), 1);
    let err = cat
        .add_manifest(first, "base", &entries(&[a]), &[])
        .await
        .unwrap_err();
    assert!(
        matches!(err, CatalogError::ChunkGone(id) if id == a),
        "{err}"
    );
    assert!(
        cat.manifest_page(first, "base", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A WAL file is refused the same way.
    let f = crate::catalog::wal::test_file("000000010000000000000003", "x");
    assert!(matches!(
        cat.add_wal(&f, &entries(&[b]), &[]).await,
        Err(CatalogError::ChunkGone(_))
    ));
    assert!(cat.wal_file("pg", &f.name).await.unwrap().is_none());
    // Sending the bytes again stores the chunk anew, in a new pack.
    cat.add_manifest(first, "base", &entries(&[a]), &new_in("p9", &[a]))
        .await
        .unwrap();
    assert_eq!(
        cat.chunk_place(&a)
            .await
            .unwrap()
            .map(|p| p.0)
            .unwrap()
            .unwrap()
            .pack,
        "p9"
    );
}

#[tokio::test]
async fn a_chunk_stored_as_its_own_object_is_collected_alone() {
    let (cat, _dir) = test_catalog().await;
    let (a, b) = (chunk(1), chunk(2));
    let loose = |id: ChunkId| NewChunk {
        id,
        raw_len: 1,
        stored_len: 7,
        pack: None,
    };
    let old = backup(&cat, &[a, b], &[loose(a), loose(b)], true).await;
    let kept = backup(&cat, &[b], &[], true).await;
    cat.apply_retention(&expiry(&[old], &[], &[kept]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        cat.collect_garbage().await.unwrap(),
        vec![Garbage {
            object: a.to_hex(),
            kind: "chunk".into(),
            chunks: 1,
            bytes: 7,
        }]
    );
    assert_eq!(cat.chunk_place(&a).await.unwrap().map(|p| p.0), None);
    assert!(!cat.chunk_owned_by(&a, "db1").await.unwrap());
    assert_eq!(cat.chunk_place(&b).await.unwrap().map(|p| p.0), Some(None));
}

/// Uploads through one controller and retention with garbage collection through another,
/// at the same time and sharing chunks: no complete backup may ever refer to a chunk the
/// catalog forgot, and no collected pack may still hold a chunk the catalog knows. On
/// PostgreSQL this is what the writing transactions' lock guarantees.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_and_collections_running_together_never_lose_a_reference() {
    let (cat, _dir) = test_catalog().await;
    let other = cat.another_controller().await.unwrap();
    let shared: Vec<ChunkId> = (0..6).map(chunk).collect();

    let uploads = tokio::spawn({
        let cat = cat.clone();
        let shared = shared.clone();
        async move {
            let mut refused = 0;
            for i in 0..40usize {
                let refs = [shared[i % 6], shared[(i + 1) % 6], chunk(100 + i as u8)];
                let b = cat
                    .create_backup(
                        "pg",
                        "db1",
                        BackupKind::Base,
                        None,
                        &["base".into()],
                        &[],
                        "15",
                        "15",
                    )
                    .await
                    .unwrap();
                // Like the receiver: send only the chunks the catalog does not know, and
                // send them all again when one was collected meanwhile.
                let mut attempt = 0;
                loop {
                    let mut unknown = Vec::new();
                    for id in &refs {
                        if cat.chunk_place(id).await.unwrap().map(|p| p.0).is_none() {
                            unknown.push(*id);
                        }
                    }
                    let pack = format!("p{i}-{attempt}");
                    let sent = if attempt == 0 { unknown } else { refs.to_vec() };
                    match cat
                        .add_manifest(b, "base", &entries(&refs), &new_in(&pack, &sent))
                        .await
                    {
                        Ok(()) => break,
                        Err(CatalogError::ChunkGone(_)) => {
                            refused += 1;
                            attempt += 1;
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                assert!(cat.finish_backup(b, true, "").await.unwrap());
                tokio::task::yield_now().await;
            }
            refused
        }
    });

    let mut collected = std::collections::HashSet::new();
    let mut expired = 0;
    // Until the uploads are done, and once more after: that round has older backups to
    // expire whatever the timing was.
    let mut last_round = false;
    while !last_round {
        last_round = uploads.is_finished();
        // Expire every complete backup but the newest, then collect.
        let complete: Vec<BackupId> = other
            .list_backups(Some("pg"))
            .await
            .unwrap()
            .into_iter()
            .filter(|b| b.status == BackupStatus::Complete)
            .map(|b| b.id)
            .collect();
        if let Some((newest, older)) = complete.split_last() {
            let older: Vec<BackupId> = older.to_vec();
            if other
                .apply_retention(&expiry(&older, &[], &[*newest]))
                .await
                .unwrap()
                .is_ok()
            {
                expired += older.len();
            }
        }
        for g in other.collect_garbage().await.unwrap() {
            collected.insert(g.object.clone());
            other.garbage_deleted(&g.object).await.unwrap();
        }
        let dangling: i64 = sqlx::query(
            "SELECT COUNT(*) FROM part_chunks pc JOIN backups b ON b.id = pc.backup_id
             WHERE b.status = 'complete' AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.id = pc.chunk_id)",
        )
        .fetch_one(&other.pool)
        .await
        .unwrap()
        .get(0);
        assert_eq!(dangling, 0, "a complete backup refers to a forgotten chunk");
    }
    let refused = uploads.await.unwrap();
    assert!(expired > 0 && !collected.is_empty(), "retention ran");
    for pack in &collected {
        let live: i64 = sqlx::query("SELECT COUNT(*) FROM chunks WHERE pack = $1")
            .bind(pack)
            .fetch_one(&cat.pool)
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            live, 0,
            "collected pack {pack} still holds chunks the catalog knows"
        );
    }
    eprintln!(
        "{} backups expired, {} packs collected, {refused} uploads refused and resent",
        expired,
        collected.len()
    );
}
