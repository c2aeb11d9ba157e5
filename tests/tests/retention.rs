//! Retention on a real fleet: `tidemark retention plan` (the policy from the controller's
//! config, the catalog's backups and archived WAL, every decision with its reason, nothing
//! deleted), then `tidemark retention apply` doing exactly that plan and collecting the packs
//! nothing refers to any more, and a backup that deduplicates against a chunk while
//! collection takes it.

use std::collections::BTreeSet;

use serde_json::Value;
use tidemark_core::ids::ChunkId;
use tidemark_tests::fleet::{Cli, Fleet, FleetOpts};
use tidemark_tests::raw_agent::{RawAgent, noise};

/// What a plan or an apply names: (kind, backup id or log name, keep).
fn decisions(items: &Value) -> BTreeSet<(String, String, bool)> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let what = match i["backup_id"].as_i64() {
                Some(id) => id.to_string(),
                None => i["name"].as_str().unwrap().to_string(),
            };
            (
                i["kind"].as_str().unwrap().to_string(),
                what,
                i["keep"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// `n` logical backups of demo-pg, each asserted complete; their ids.
fn logical_backups(f: &Fleet, n: usize) -> Vec<i64> {
    (0..n)
        .map(|_| {
            let (b, code) = f.backup();
            assert_eq!(code, 0, "{b}");
            b["id"].as_i64().unwrap()
        })
        .collect()
}

#[test]
fn the_plan_keeps_what_the_policy_and_the_wal_need_and_apply_does_exactly_it() {
    let f = Fleet::build(&FleetOpts {
        label: "retplan",
        controller_extra: "[[instance]]\nname = \"demo-pg\"\n[instance.retention]\nmin-base = 2\n",
        ..Default::default()
    });
    f.pg.sql("postgres", "CREATE TABLE t AS SELECT 1 AS x");
    let bases: Vec<i64> = (0..3)
        .map(|_| {
            f.pg.sql("postgres", "INSERT INTO t SELECT 1; SELECT pg_switch_wal()");
            f.base_backup()["id"].as_i64().unwrap()
        })
        .collect();
    let dumps = logical_backups(&f, 2);

    let viewer = Cli::new(f.dir.path(), &f.pki, "viewer:vera", &f.controller.url);
    let plan = viewer.json(&["retention", "plan", "--instance", "demo-pg"]);
    let items = plan.as_array().unwrap();
    let backup = |id: i64| {
        items
            .iter()
            .find(|i| i["backup_id"] == id)
            .unwrap_or_else(|| panic!("backup {id} not planned: {plan:#}"))
    };
    assert_eq!(backup(bases[0])["keep"], false, "{plan:#}");
    assert_eq!(backup(bases[0])["reasons"][0], "no rule keeps it");
    for id in &bases[1..] {
        assert_eq!(backup(*id)["keep"], true, "{plan:#}");
    }
    assert!(
        backup(bases[2])["reasons"]
            .to_string()
            .contains("newest complete base backup")
    );
    assert_eq!(backup(dumps[0])["keep"], false, "{plan:#}");
    assert_eq!(backup(dumps[1])["keep"], true, "{plan:#}");

    // WAL before the second base backup's start goes; from there on it stays.
    let wal: Vec<(&str, bool)> = items
        .iter()
        .filter(|i| i["kind"] == "wal")
        .map(|i| (i["name"].as_str().unwrap(), i["keep"].as_bool().unwrap()))
        .collect();
    assert!(
        wal.iter().any(|w| !w.1),
        "some WAL predates base 2: {plan:#}"
    );
    let first_kept = wal.iter().position(|w| w.1).expect("WAL kept");
    assert!(
        wal[..first_kept].iter().all(|w| !w.1) && wal[first_kept..].iter().all(|w| w.1),
        "{wal:?}"
    );
    let reason = items
        .iter()
        .find(|i| i["kind"] == "wal" && i["keep"] == false)
        .unwrap()["reasons"][0]
        .to_string();
    assert!(reason.contains(&format!("({})", bases[1])), "{reason}");

    // Planning deletes nothing: every backup still restores from the catalog.
    let list = f.admin.json(&["backups", "--instance", "demo-pg"]);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|b| b["status"] == "complete"),
        "{list:#}"
    );
    // The table groups runs of WAL.
    let table = f.admin.run(&["retention", "plan"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.contains(" .. "), "{}", table.stdout);

    // Applying is for admins.
    let refused = viewer.run(&["retention", "apply"]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("admin"), "{}", refused.stderr);

    // Apply does exactly what the plan says is deleted.
    let packs_before = f.controller.pack_files();
    let applied = f
        .admin
        .json(&["retention", "apply", "--instance", "demo-pg"]);
    let planned_deletes: BTreeSet<_> = decisions(&plan).into_iter().filter(|d| !d.2).collect();
    assert_eq!(
        decisions(&applied["deleted"]),
        planned_deletes,
        "{applied:#}"
    );
    assert_eq!(
        applied["skipped"].as_array().unwrap().len(),
        0,
        "{applied:#}"
    );
    assert_eq!(applied["objects_failed"].as_array().unwrap().len(), 0);

    // Expired backups stay listed as history; the others are untouched.
    let list = f.admin.json(&["backups", "--instance", "demo-pg"]);
    let status = |id: i64| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == id)
            .unwrap()["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status(bases[0]), "expired", "{list:#}");
    assert_eq!(status(dumps[0]), "expired", "{list:#}");
    for id in [bases[1], bases[2], dumps[1]] {
        assert_eq!(status(id), "complete", "{list:#}");
    }
    let restore = f.admin.run(&[
        "restore",
        "--host",
        "db1",
        "--backup",
        &dumps[0].to_string(),
        "--into-database",
        "again",
    ]);
    assert_ne!(restore.code, 0, "an expired backup restores nothing");
    assert!(restore.stderr.contains("expired"), "{}", restore.stderr);

    // The packs collection deleted are exactly the ones gone from the store, and every pack
    // the catalog still names is there.
    let deleted = applied["objects_deleted"].as_u64().unwrap();
    assert!(
        deleted >= 1,
        "expired WAL leaves whole packs unreferenced: {applied:#}"
    );
    let packs_after = f.controller.pack_files();
    assert_eq!(packs_before.len() - packs_after.len(), deleted as usize);
    for c in f.controller.stored_chunks() {
        assert!(f.pack_path(&c.pack).exists(), "{c:?}");
    }
    // Everything kept still reads back intact, and the window now starts at base 2.
    let v = f.admin.json(&["verify", "--instance", "demo-pg"]);
    assert_eq!(v["bad"].as_array().unwrap().len(), 0, "{v}");
    let w = f.admin.json(&["pitr-window", "--instance", "demo-pg"]);
    assert_eq!(w["restorable"], true, "{w}");
    let base1 = f.admin.json(&["backups", "show", &bases[1].to_string()]);
    assert_eq!(w["oldest_lsn"], base1["base"]["stop_lsn"], "{w}\n{base1}");

    // A second run finds nothing to do; the plan now keeps everything it lists.
    let again = f.admin.json(&["retention", "apply"]);
    assert_eq!(again["deleted"].as_array().unwrap().len(), 0, "{again:#}");
    assert_eq!(again["objects_deleted"], 0);
    let plan = f
        .admin
        .json(&["retention", "plan", "--instance", "demo-pg"]);
    assert!(decisions(&plan).iter().all(|d| d.2), "{plan:#}");

    let audit = f.admin.json(&["audit"]).to_string();
    assert!(audit.contains("apply retention"), "{audit}");
    assert!(audit.contains("refused"), "{audit}");
    f.dir.keep_if_asked();
}

#[test]
fn an_instance_without_a_policy_keeps_everything() {
    let f = Fleet::build(&FleetOpts {
        label: "retnone",
        ..Default::default()
    });
    let ids = logical_backups(&f, 3);
    let plan = f.admin.json(&["retention", "plan"]);
    assert!(decisions(&plan).iter().all(|d| d.2), "{plan:#}");
    assert!(
        plan.to_string().contains("no [instance.retention] policy"),
        "{plan:#}"
    );
    let applied = f.admin.json(&["retention", "apply"]);
    assert_eq!(
        applied["deleted"].as_array().unwrap().len(),
        0,
        "{applied:#}"
    );
    for id in ids {
        let b = f.admin.json(&["backups", "show", &id.to_string()]);
        assert_eq!(b["status"], "complete", "{b}");
    }
    f.dir.keep_if_asked();
}

/// Collection and a backup referring to the same chunk at the same moment: whichever commits
/// first wins, and the other either keeps the chunk or fails, never a complete backup whose
/// chunk was deleted.
#[test]
fn a_backup_deduplicating_against_collected_garbage_never_completes_without_it() {
    let f = Fleet::build(&FleetOpts {
        label: "retrace",
        controller_extra: "[[instance]]\nname = \"demo-pg\"\n[instance.retention]\n",
        ..Default::default()
    });
    let mut agent = RawAgent::connect(&f);
    let (x, y, z) = (noise(1, 1 << 20), noise(2, 1 << 20), noise(3, 1 << 20));
    let pack_of = |c: &[u8]| f.controller.chunk_place(&ChunkId::of(c).to_hex()).pack;

    // Backup A stores x; the newer B stores y, so A is what retention expires.
    let a = agent.backup(&[(&x, true)]);
    let b = agent.backup(&[(&y, true)]);
    let x_pack = pack_of(&x);
    assert!(f.pack_path(&x_pack).exists());

    // C refers to x, and before C commits, retention expires A and collects x's pack.
    let c = agent.begin();
    let failed = agent
        .upload(c, &[(&x, false), (&z, true)], || {
            // Let the controller read x back for the reference before collection runs.
            std::thread::sleep(std::time::Duration::from_secs(1));
            let applied = f.admin.json(&["retention", "apply"]);
            assert!(
                applied["deleted"]
                    .to_string()
                    .contains(&format!("\"backup_id\":{a}")),
                "{applied:#}"
            );
            assert!(
                applied["objects_deleted"].as_u64().unwrap() >= 1,
                "{applied:#}"
            );
        })
        .unwrap_err();
    assert!(
        failed.message().contains("no longer stored"),
        "the commit's own check refused it: {failed:?}"
    );
    assert!(!f.pack_path(&x_pack).exists(), "x's pack was collected");
    let failed_c = || f.admin.json(&["backups", "show", &c.to_string()]);
    let cb = failed_c();
    assert_eq!(cb["status"], "failed", "{cb}");
    assert!(
        cb["reason"].as_str().unwrap().contains("no longer stored"),
        "{cb}"
    );

    // D refers to y and commits first: collection then finds y referenced and keeps it,
    // although B, its first owner, is expired by the same run (D is newer).
    let d = agent.backup(&[(&y, false)]);
    let y_pack = pack_of(&y);
    let applied = f.admin.json(&["retention", "apply"]);
    let deleted = applied["deleted"].as_array().unwrap();
    let reason_of = |id: i64| {
        deleted
            .iter()
            .find(|i| i["backup_id"] == id)
            .unwrap_or_else(|| panic!("backup {id} not deleted: {applied:#}"))["reasons"]
            .to_string()
    };
    assert!(reason_of(b).contains("no rule keeps it"), "{applied:#}");
    // The failed C's data goes too; its row stays, failed.
    assert!(
        reason_of(c).contains("failed: restores nothing"),
        "{applied:#}"
    );
    assert!(f.pack_path(&y_pack).exists(), "y is D's now");
    let db = f.admin.json(&["backups", "show", &d.to_string()]);
    assert_eq!(db["status"], "complete", "{db}");
    assert_eq!(failed_c()["status"], "failed");

    // Every chunk a kept backup needs is stored and intact.
    let v = f.admin.json(&["verify"]);
    assert_eq!(v["bad"].as_array().unwrap().len(), 0, "{v}");
    assert!(v["chunks_checked"].as_u64().unwrap() >= 1, "{v}");
    f.dir.keep_if_asked();
}

#[test]
fn retention_runs_on_a_schedule() {
    let f = Fleet::build(&FleetOpts {
        label: "retsched",
        controller_extra: "[schedule]\ntick = \"1s\"\n[retention]\nschedule = \"*/2 * * * * *\"\n[[instance]]\nname = \"demo-pg\"\n[instance.retention]\n",
        ..Default::default()
    });
    let ids = logical_backups(&f, 2);
    let (first, second) = (ids[0], ids[1]);
    let run = tidemark_tests::process::wait_for(
        "a scheduled retention run that expired a backup",
        std::time::Duration::from_secs(60),
        || {
            f.admin.json(&["schedule"])["runs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| {
                    r["kind"] == "retention"
                        && r["state"] == "succeeded"
                        && r["message"]
                            .as_str()
                            .unwrap()
                            .starts_with("1 backups expired")
                })
                .cloned()
        },
    );
    assert_eq!(run["instance"], "*", "{run}");
    let b = f.admin.json(&["backups", "show", &first.to_string()]);
    assert_eq!(b["status"], "expired", "{b}");
    assert!(
        b["reason"]
            .as_str()
            .unwrap()
            .contains("expired by retention"),
        "{b}"
    );
    let b = f.admin.json(&["backups", "show", &second.to_string()]);
    assert_eq!(b["status"], "complete", "{b}");
    f.dir.keep_if_asked();
}
