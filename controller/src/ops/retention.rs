//! `tidemark retention plan` and `apply`: the catalog's facts fed to [`crate::retention`]'s
//! planner, and the plan carried out (see [`crate::catalog`]'s retention module for how
//! deleting stays safe against drills, restores and uploads running at the same time).

use tidemark_core::ids::ChunkId;
use tidemark_proto as pb;

use super::State;
use super::error::OpsResult;
use crate::catalog::{BackupKind, BackupRow, BackupStatus, Engine, Expiry, InstanceRow};
use crate::retention::{self, BackupFacts, Kind};

/// An instance's plan, and which of its backups are kept because verify found them damaged.
struct Plan {
    items: Vec<pb::RetentionItem>,
    damaged: Vec<i64>,
}

/// Why a backup verify found damaged is kept: deleting it is an operator's decision.
const DAMAGED: &str = "found damaged by verify; retention never deletes a backup because a read failed (the read may succeed later, and verify then clears it)";

/// An instance without a policy keeps everything: deleting backups is never a default.
const NO_POLICY: &str = "the instance has no [instance.retention] policy in the controller's config; nothing is deleted";

async fn instances(state: &State, instance: &str) -> OpsResult<Vec<InstanceRow>> {
    Ok(if instance.is_empty() {
        let mut all = Vec::new();
        for a in state.repo.catalog.agents().await? {
            all.extend(a.instances);
        }
        all
    } else {
        vec![super::instance(state, instance).await?]
    })
}

pub async fn plan(state: &State, instance: &str) -> OpsResult<pb::RetentionPlanResponse> {
    let in_use = state.repo.catalog.backups_in_use().await?;
    let mut items = Vec::new();
    for inst in &instances(state, instance).await? {
        items.extend(plan_instance(state, inst, &in_use).await?.items);
    }
    Ok(pb::RetentionPlanResponse { items })
}

/// Apply each instance's plan (all of it, or none when the catalog changed under it), then
/// collect the garbage. One run at a time.
pub async fn apply(state: &State, instance: &str) -> OpsResult<pb::RetentionApplyResponse> {
    let _one_at_a_time = state.retention_running.lock().await;
    let in_use = state.repo.catalog.backups_in_use().await?;
    let mut out = pb::RetentionApplyResponse::default();
    for inst in &instances(state, instance).await? {
        let Plan { items, damaged } = plan_instance(state, inst, &in_use).await?;
        let expiry = Expiry {
            instance: inst.name.clone(),
            backups: items
                .iter()
                .filter(|i| !i.keep && i.backup_id != 0)
                .map(|i| (i.backup_id, i.reasons.join("; ")))
                .collect(),
            logs: items
                .iter()
                .filter(|i| !i.keep && i.backup_id == 0)
                .map(|i| i.name.clone())
                .collect(),
            kept_bases: items
                .iter()
                // Premises of the plan: kept bases it counts on, not damaged ones it keeps.
                .filter(|i| i.keep && i.kind == BackupKind::Base.as_str())
                .filter(|i| !damaged.contains(&i.backup_id))
                .map(|i| i.backup_id)
                .collect(),
        };
        if expiry.backups.is_empty() && expiry.logs.is_empty() {
            continue;
        }
        // One instance that cannot be applied (its record not written, its premises
        // changed) holds no other up.
        let why = match apply_expiry(state, &expiry).await {
            Ok(Ok(())) => {
                tracing::info!(instance = %inst.name, backups = expiry.backups.len(),
                    logs = expiry.logs.len(), "retention applied");
                out.deleted.extend(items.into_iter().filter(|i| !i.keep));
                continue;
            }
            Ok(Err(why)) => why,
            Err(e) => e.to_string(),
        };
        out.skipped.push(format!(
            "{}: {why}; nothing was deleted, the next run plans again",
            inst.name
        ));
    }
    collect_garbage(state, &mut out).await?;
    Ok(out)
}

/// Apply one instance's expiry: written to the store first, so that a catalog rebuilt
/// from the store never brings back what was expired (its data may be collected next),
/// then applied in the catalog. An expiry the catalog refuses (its premises changed) is
/// retracted in the store. Ok(Err(why)): refused, nothing changed.
pub async fn apply_expiry(state: &State, e: &Expiry) -> OpsResult<Result<(), String>> {
    let at = crate::catalog::now();
    let name = state.repo.publish_expiry(e, at).await?;
    let outcome = state.repo.catalog.apply_retention_at(e, at).await;
    let refused = match &outcome {
        Ok(Ok(())) => None,
        Ok(Err(why)) => Some(why.clone()),
        Err(err) => Some(err.to_string()),
    };
    if let Some(why) = refused
        && let Err(err) = state.repo.retract(&name, &why).await
    {
        tracing::error!(record = %name, error = %err, "an expiry the catalog refused could not be retracted in the store; a catalog rebuilt from the store would apply it");
    }
    Ok(outcome?)
}

/// Forget the chunks nothing refers to and delete their objects from the store. An object
/// the store refuses to delete stays queued for the next run.
async fn collect_garbage(state: &State, out: &mut pb::RetentionApplyResponse) -> OpsResult<()> {
    for g in state.repo.catalog.collect_garbage().await? {
        let deleted = match g.kind.as_str() {
            "pack" => state.repo.store.delete_pack(&g.object).await,
            _ => match hex::decode(&g.object)
                .ok()
                .and_then(|b| ChunkId::from_slice(&b).ok())
            {
                Some(id) => state.repo.store.delete(&id).await,
                None => {
                    out.objects_failed
                        .push(format!("{}: not a chunk id", g.object));
                    continue;
                }
            },
        };
        match deleted {
            Ok(()) => {
                state.repo.catalog.garbage_deleted(&g.object).await?;
                out.objects_deleted += 1;
                out.chunks_freed += g.chunks;
                out.bytes_freed += g.bytes;
            }
            Err(e) => {
                tracing::warn!(object = %g.object, error = %e, "garbage collection could not delete");
                out.objects_failed
                    .push(format!("{} {}: {e}", g.kind, g.object));
            }
        }
    }
    if out.objects_deleted > 0 {
        tracing::info!(
            objects = out.objects_deleted,
            chunks = out.chunks_freed,
            bytes = out.bytes_freed,
            "garbage collected"
        );
    }
    collect_orphans(state, out).await
}

/// Delete the packs in the store that nothing in the catalog refers to and that are older
/// than the grace period: what an upload that never committed left (a crash, a dropped
/// connection). Packs this controller's uploads are writing are never candidates, however
/// long they take. Guards keep a catalog that is behind its store (an old copy put back
/// instead of rebuilt) from deleting what it merely does not know: nothing is collected
/// while the store holds a backup record the catalog lacks; a pack describing an archived
/// file the catalog does not hold is kept, with every candidate holding a chunk of that
/// file; and a pack that does not read is kept. Each kept pack is named.
async fn collect_orphans(state: &State, out: &mut pb::RetentionApplyResponse) -> OpsResult<()> {
    let repo = &state.repo;
    let grace = state.settings.orphan_grace.as_secs() as i64;
    let listed = repo.store.list_packs().await?;
    let known = repo.catalog.known_packs().await?;
    let now = crate::catalog::now();
    let candidates: Vec<_> = {
        let in_flight = repo.in_flight.lock().expect("in-flight lock");
        listed
            .into_iter()
            // A store that gives no time (0) is taken as "just written".
            .filter(|p| p.modified > 0 && p.modified <= now - grace)
            .filter(|p| !known.contains(&p.name) && !in_flight.contains(&p.name))
            .collect()
    };
    if candidates.is_empty() {
        return Ok(());
    }
    let held = repo.catalog.backup_starts().await?;
    let unknown = repo
        .store
        .list_records("backups/")
        .await?
        .iter()
        .filter_map(|n| crate::repo::records::backup_of(n))
        .filter(|(id, started)| held.get(id) != Some(started))
        .count();
    if unknown > 0 {
        let why = format!(
            "the store describes {unknown} backup(s) this catalog does not hold: the catalog is behind its store (rebuild it with `tidemark-controller rebuild-catalog --force`); {} unreferenced pack(s) kept",
            candidates.len()
        );
        tracing::error!("{why}");
        out.orphans_kept.push(why);
        return Ok(());
    }
    // Read every candidate first: a description of a file the catalog does not hold keeps
    // its pack and every candidate holding one of that file's chunks.
    let mut read = Vec::with_capacity(candidates.len());
    let mut protected: std::collections::HashSet<ChunkId> = Default::default();
    for p in candidates {
        let contents = crate::repo::rebuild::read_pack(
            repo.store.as_ref(),
            &p.name,
            p.size,
            repo.keys.as_deref(),
        )
        .await;
        let keep = match &contents {
            Err(e) => Some(format!("it could not be read ({e})")),
            Ok(Err(why)) => Some(format!("it does not read as a pack ({why})")),
            Ok(Ok(c)) => match &c.description {
                Some(d) if repo.catalog.wal_file(&d.instance, &d.name).await?.is_none() => {
                    protected.extend(d.chunks.iter().filter_map(|r| r.0.parse::<ChunkId>().ok()));
                    Some(format!(
                        "it describes {} of instance {}, which the catalog does not hold",
                        d.name, d.instance
                    ))
                }
                _ => None,
            },
        };
        read.push((p, contents, keep));
    }
    for (p, contents, keep) in read {
        let keep = keep.or_else(|| {
            let c = contents.as_ref().ok()?.as_ref().ok()?;
            c.chunks
                .iter()
                .any(|(id, _)| protected.contains(id))
                .then(|| {
                    "it holds chunks of an archived file the catalog does not hold".to_string()
                })
        });
        if let Some(why) = keep {
            out.orphans_kept.push(format!("{}: {why}", p.name));
            continue;
        }
        // Recheck: an upload may have committed it since the listing.
        if repo.catalog.known_packs().await?.contains(&p.name) {
            continue;
        }
        match repo.store.delete_pack(&p.name).await {
            Ok(()) => {
                tracing::info!(pack = %p.name, bytes = p.size, "deleted a pack nothing referred to");
                out.orphans_deleted += 1;
                out.orphan_bytes_freed += p.size;
            }
            Err(e) => out.objects_failed.push(format!("pack {}: {e}", p.name)),
        }
    }
    Ok(())
}

async fn plan_instance(state: &State, inst: &InstanceRow, in_use: &[i64]) -> OpsResult<Plan> {
    let policy = state.settings.retention.get(&inst.name);
    let mut facts = Vec::new();
    let mut damaged = Vec::new();
    let mut broken = Vec::new();
    for b in state.repo.catalog.list_backups(Some(&inst.name)).await? {
        // Running backups are not done; expired ones are history. Failed ones never
        // completed and restore nothing: their data goes (their rows stay). A corrupt one
        // is kept: a read failed, which may pass, and only an operator deletes it.
        match b.status {
            _ if b.expired_at.is_some() => continue,
            BackupStatus::Running | BackupStatus::Expired => continue,
            BackupStatus::Failed => {
                let why = format!("{}: restores nothing ({})", b.status, b.reason);
                broken.push((b, why));
            }
            BackupStatus::Corrupt => damaged.push(facts_of(state, inst, &b, in_use).await?),
            BackupStatus::Complete => facts.push(facts_of(state, inst, &b, in_use).await?),
        }
    }
    let logs: Vec<retention::LogFile> = state
        .repo
        .catalog
        .archived_log_positions(&inst.name)
        .await?
        .into_iter()
        .map(|(name, timeline, number)| {
            retention::LogFile::placed(name, timeline, number, inst.segment_size())
        })
        .collect();
    let log_kind = inst.engine.log_kind();
    let Some(policy) = policy else {
        let keep = retention::Decision {
            keep: vec![NO_POLICY.into()],
            delete_reason: String::new(),
        };
        let mut out: Vec<pb::RetentionItem> = facts
            .iter()
            .chain(&damaged)
            .map(|f| item(inst, kind_name(f.kind), f.id, "", f.stop, &keep))
            .collect();
        out.extend(
            logs.iter()
                .map(|l| item(inst, log_kind, 0, &l.name, 0, &keep)),
        );
        return Ok(Plan {
            items: out,
            damaged: damaged.iter().map(|f| f.id).collect(),
        });
    };
    let mut decisions = retention::plan_backups(policy, crate::catalog::now(), &facts);
    let mut out: Vec<pb::RetentionItem> = facts
        .iter()
        .map(|f| item(inst, kind_name(f.kind), f.id, "", f.stop, &decisions[&f.id]))
        .collect();
    // A damaged backup is kept, and so is the log it would replay from: if the read that
    // failed succeeds later, it restores again.
    for f in &damaged {
        let d = retention::Decision {
            keep: vec![DAMAGED.into()],
            delete_reason: String::new(),
        };
        out.push(item(inst, kind_name(f.kind), f.id, "", f.stop, &d));
        decisions.insert(f.id, d);
    }
    let with_damaged: Vec<BackupFacts> = facts.iter().chain(&damaged).cloned().collect();
    out.extend(broken.iter().map(|(b, why)| {
        let d = retention::Decision {
            keep: vec![],
            delete_reason: why.clone(),
        };
        item(
            inst,
            b.kind.as_str(),
            b.id.0,
            "",
            b.finished_at.unwrap_or(b.started_at),
            &d,
        )
    }));
    out.sort_by_key(|i| i.backup_id);
    out.extend(
        retention::plan_logs(&with_damaged, &decisions, &logs)
            .iter()
            .map(|(name, d)| item(inst, log_kind, 0, name, 0, d)),
    );
    Ok(Plan {
        items: out,
        damaged: damaged.iter().map(|f| f.id).collect(),
    })
}

/// What retention needs to know of one backup of `inst`.
async fn facts_of(
    state: &State,
    inst: &InstanceRow,
    b: &BackupRow,
    in_use: &[i64],
) -> OpsResult<BackupFacts> {
    let kind = match b.kind {
        BackupKind::Base => Kind::Base,
        BackupKind::Logical => Kind::Logical,
    };
    let start_log = match kind {
        Kind::Logical => None,
        Kind::Base => match inst.engine {
            Engine::Mariadb => state
                .repo
                .catalog
                .binlog_coordinates(b.id)
                .await?
                // Binary logging off: the backup replays no binlog (None). The sequence
                // number recorded with the backup, else the one its name gives.
                .filter(|c| !c.file.is_empty())
                .map(|c| retention::LogFile {
                    pos: c
                        .seq
                        .or_else(|| tidemark_core::binlog::sequence(&c.file, inst.binlog_base()))
                        .map(|number| retention::LogPos {
                            timeline: 0,
                            number,
                        }),
                    name: c.file,
                }),
            Engine::Postgresql => state.repo.catalog.base_backup(b.id).await?.map(|bb| {
                let size = inst.segment_size();
                let number = bb.start_lsn.segno(size);
                retention::LogFile {
                    name: tidemark_core::wal::segment_name(bb.timeline, number, size),
                    pos: Some(retention::LogPos {
                        timeline: bb.timeline,
                        number,
                    }),
                }
            }),
        },
    };
    Ok(BackupFacts {
        id: b.id.0,
        kind,
        stop: b.finished_at.unwrap_or(b.started_at),
        start_log,
        in_use: in_use.contains(&b.id.0),
    })
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Base => "base",
        Kind::Logical => "logical",
    }
}

fn item(
    inst: &InstanceRow,
    kind: &str,
    id: i64,
    name: &str,
    at: i64,
    d: &retention::Decision,
) -> pb::RetentionItem {
    pb::RetentionItem {
        instance: inst.name.clone(),
        kind: kind.into(),
        backup_id: id,
        name: name.into(),
        at,
        keep: d.kept(),
        reasons: if d.kept() {
            d.keep.clone()
        } else {
            vec![d.delete_reason.clone()]
        },
    }
}
