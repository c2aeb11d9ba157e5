//! Backups as agents make them: begun for an instance of their own, parts stored (see
//! `upload`), then finished: complete only when every part is stored and checked and the
//! engine's own condition holds (a PostgreSQL base backup's WAL is archived). Also what an
//! agent may touch: its own backups, instances and jobs, and what a restore job names.

use tidemark_core::binlog::sequence as binlog_sequence;
use tidemark_core::ids::{BackupId, ChunkId, JobId};
use tidemark_core::wal::Lsn;
use tidemark_proto as pb;

use super::{OpsError, OpsResult, State};
use crate::catalog::{
    BackupKind, BackupRow, BackupStatus, BaseBackupRow, BinlogCoordRow, Engine, Expiry, JobRow, now,
};

/// Largest dedup query accepted in one call.
const MAX_HAVE_CHUNKS: usize = 4096;

pub async fn own_backup(state: &State, agent: &str, id: BackupId) -> OpsResult<BackupRow> {
    let b = state.backup(id).await?;
    if b.agent != agent {
        return Err(OpsError::PermissionDenied(format!(
            "backup {id} belongs to agent {}, not to agent {agent}",
            b.agent
        )));
    }
    Ok(b)
}

/// `instance`, if it belongs to `agent`; `what` names the refused act.
pub async fn own_instance(state: &State, agent: &str, instance: &str, what: &str) -> OpsResult<()> {
    let inst = state.repo.catalog.instance(instance).await?;
    if inst.as_ref().map(|i| i.agent.as_str()) != Some(agent) {
        return Err(OpsError::PermissionDenied(format!(
            "agent {agent} may {what} only its own instances, not {instance}"
        )));
    }
    Ok(())
}

pub async fn own_job(state: &State, agent: &str, id: JobId) -> OpsResult<JobRow> {
    let j = state.job(id).await?;
    if j.agent != agent {
        return Err(OpsError::PermissionDenied(format!(
            "job {id} was given to agent {}, not to agent {agent}",
            j.agent
        )));
    }
    Ok(j)
}

/// May `agent` read `part` of `backup`? Its own backups, while it checks them, and any
/// complete backup that a running restore job of its names.
pub async fn may_read(
    state: &State,
    agent: &str,
    b: &BackupRow,
    part: &str,
    job: JobId,
) -> OpsResult<()> {
    if job.0 == 0 {
        if b.agent == agent && b.status == BackupStatus::Running {
            return Ok(());
        }
        return Err(OpsError::PermissionDenied(format!(
            "agent {agent} may read backup {} only for a restore job that names it",
            b.id
        )));
    }
    let j = own_job(state, agent, job).await?;
    let names_part = j.params.get("part").and_then(|v| v.as_str()) == Some(part)
        || j.params
            .get("parts")
            .and_then(|v| v.as_array())
            .is_some_and(|ps| ps.iter().any(|p| p.as_str() == Some(part)));
    let names_it = matches!(j.kind.as_str(), "restore" | "drill")
        && j.params.get("backup_id").and_then(|v| v.as_i64()) == Some(b.id.0)
        && names_part;
    if !names_it || j.state.is_terminal() {
        return Err(OpsError::PermissionDenied(format!(
            "job {job} does not let agent {agent} read part {part} of backup {}",
            b.id
        )));
    }
    if b.status != BackupStatus::Complete {
        return Err(OpsError::FailedPrecondition(format!(
            "backup {} is {}, not complete; only complete backups can be restored",
            b.id, b.status
        )));
    }
    Ok(())
}
enum BaseWal {
    Archived,
    Waiting(String),
}

/// Record the binlog position a MariaDB backup is consistent with. mariabackup's copy
/// carries its own redo log, so unlike a PostgreSQL base backup it needs no archived
/// log to be restorable by itself: it is complete once its parts are stored.
async fn record_binlog(
    state: &State,
    b: &BackupRow,
    info: Option<&pb::BinlogCoordinates>,
) -> OpsResult<()> {
    let info = info.ok_or_else(|| {
        OpsError::InvalidArgument(format!(
            "backup {} finished without its binlog position",
            b.id
        ))
    })?;
    let seq = if info.file.is_empty() {
        None
    } else {
        let inst = state.repo.catalog.instance(&b.instance).await?;
        let base = inst.as_ref().map(|i| i.binlog_base()).unwrap_or_default();
        Some(binlog_sequence(&info.file, base).ok_or_else(|| {
                OpsError::InvalidArgument(format!(
                    "backup {}: binlog {:?} is not named after the instance's log_bin_basename {base:?}",
                    b.id, info.file
                ))
            })?)
    };
    let row = BinlogCoordRow {
        backup_id: b.id,
        file: info.file.clone(),
        seq,
        position: info.position,
        gtid: info.gtid.clone(),
        start_time: info.start_time,
        stop_time: info.stop_time,
    };
    state.repo.catalog.record_binlog_coordinates(&row).await?;
    Ok(())
}

/// Record where a base backup sits in the WAL, and whether every segment from its start
/// to its stop is archived: until then it cannot be restored, so it is not complete.
async fn record_base(
    state: &State,
    b: &BackupRow,
    info: Option<&pb::BaseBackupInfo>,
) -> OpsResult<BaseWal> {
    let info = info.ok_or_else(|| {
        OpsError::InvalidArgument(format!(
            "base backup {} finished without its WAL positions",
            b.id
        ))
    })?;
    let lsn = |s: &str| Lsn::parse(s).map_err(OpsError::InvalidArgument);
    let row = BaseBackupRow {
        backup_id: b.id,
        start_lsn: lsn(&info.start_lsn)?,
        stop_lsn: lsn(&info.stop_lsn)?,
        timeline: info.timeline,
        system_identifier: info.system_identifier.clone(),
        backup_label: info.backup_label.clone(),
        start_time: info.start_time,
        stop_time: info.stop_time,
        tablespaces: info.tablespaces.clone().into_iter().collect(),
    };
    if row.stop_lsn < row.start_lsn || row.timeline == 0 {
        return Err(OpsError::InvalidArgument(format!(
            "base backup {}: stop {} before start {}, or no timeline",
            b.id, row.stop_lsn, row.start_lsn
        )));
    }
    state.repo.catalog.record_base_backup(&row).await?;
    let missing = super::archive::missing(
        state,
        &b.instance,
        row.timeline,
        row.start_lsn,
        row.stop_lsn,
    )
    .await?;
    Ok(match missing.as_slice() {
        [] => BaseWal::Archived,
        [one] => BaseWal::Waiting(format!("waiting for WAL segment {one} to be archived")),
        [first, .., last] => BaseWal::Waiting(format!(
            "waiting for {} WAL segments ({first} .. {last}) to be archived",
            missing.len()
        )),
    })
}

/// Record a new backup of `r.instance`, an instance of `agent`'s.
pub async fn begin(
    state: &State,
    agent: &str,
    r: pb::BeginBackupRequest,
) -> OpsResult<pb::BeginBackupResponse> {
    let inst = state
        .repo
        .catalog
        .instance(&r.instance)
        .await?
        .ok_or_else(|| {
            OpsError::NotFound(format!(
                "instance {} is not registered; agents register the instances in their config",
                r.instance
            ))
        })?;
    if inst.agent != agent {
        return Err(OpsError::PermissionDenied(format!(
            "instance {} belongs to agent {}; agent {agent} may only back up its own instances",
            r.instance, inst.agent
        )));
    }
    let Some(kind) = BackupKind::from_name(&r.kind) else {
        return Err(OpsError::InvalidArgument(format!(
            "backup kind {:?} is not supported; use {}",
            r.kind,
            BackupKind::ALL
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(" or ")
        )));
    };
    let mut parts = r.parts.clone();
    parts.sort();
    parts.dedup();
    if parts.is_empty() || parts.len() != r.parts.len() {
        return Err(OpsError::InvalidArgument(
            "a backup needs one or more distinct parts".into(),
        ));
    }
    let job = (r.job_id != 0).then_some(JobId(r.job_id));
    if let Some(j) = job {
        own_job(state, agent, j).await?;
    }
    let id = state
        .repo
        .catalog
        .create_backup(
            &r.instance,
            agent,
            kind,
            job,
            &r.parts,
            &r.warnings,
            &r.server_version,
            &r.tool_version,
        )
        .await?;
    if let Some(j) = job {
        state.repo.catalog.link_job_backup(j, id).await?;
    }
    if !r.databases.is_empty() {
        state
            .repo
            .catalog
            .set_backup_databases(id, &r.databases)
            .await?;
    }
    tracing::info!(backup = %id, instance = %r.instance, agent = %agent, "backup started");
    Ok(pb::BeginBackupResponse { backup_id: id.0 })
}

/// Which of `ids` are stored and may be referred to by `agent` (dedup).
pub async fn have_chunks(
    state: &State,
    agent: &str,
    ids: &[Vec<u8>],
) -> OpsResult<pb::HaveChunksResponse> {
    let ids = ids
        .iter()
        .map(|b| ChunkId::from_slice(b))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| OpsError::InvalidArgument(e.to_string()))?;
    if ids.len() > MAX_HAVE_CHUNKS {
        return Err(OpsError::InvalidArgument(format!(
            "at most {MAX_HAVE_CHUNKS} chunk ids per query"
        )));
    }
    let present = state.repo.catalog.have_chunks(agent, &ids).await?;
    Ok(pb::HaveChunksResponse { present })
}

/// The agent's verdict on a backup: complete if everything holds, failed with the reason
/// if not, or still running while a base backup's WAL is not archived.
pub async fn finish(
    state: &State,
    agent: &str,
    r: pb::FinishBackupRequest,
) -> OpsResult<pb::FinishBackupResponse> {
    let id = BackupId(r.backup_id);
    let b = own_backup(state, agent, id).await?;
    let cat = &state.repo.catalog;
    for c in &r.checks {
        if b.part(&c.part).is_none() {
            return Err(OpsError::InvalidArgument(format!(
                "backup {id} has no part {:?}",
                c.part
            )));
        }
        cat.set_part_check(id, &c.part, c.ok, &c.detail).await?;
    }
    let engine = super::instance(state, &b.instance).await?.engine;
    if r.error.is_empty() && b.status == BackupStatus::Running {
        match (engine, b.kind) {
            // Every MariaDB backup, dump or copy, records the binlog position it is
            // consistent with: point-in-time recovery replays from there.
            (Engine::Mariadb, _) => record_binlog(state, &b, r.binlog.as_ref()).await?,
            (Engine::Postgresql, BackupKind::Base) => {
                match record_base(state, &b, r.base.as_ref()).await? {
                    BaseWal::Archived => {}
                    BaseWal::Waiting(reason) => {
                        // Not complete until its WAL is archived; the agent asks again.
                        return Ok(pb::FinishBackupResponse {
                            status: BackupStatus::Running.to_string(),
                            reason,
                        });
                    }
                }
            }
            (Engine::Postgresql, BackupKind::Logical) => {}
        }
    }
    let problem = if !r.error.is_empty() {
        Some(r.error.clone())
    } else if let Some(p) = b.parts.iter().find(|p| !p.stored) {
        Some(format!("part {} was never stored", p.name))
    } else if let Some(p) = b
        .parts
        .iter()
        .find(|p| !r.checks.iter().any(|c| c.part == p.name))
    {
        Some(format!("part {} was not checked after storing", p.name))
    } else {
        r.checks
            .iter()
            .find(|c| !c.ok)
            .map(|c| format!("structural check of part {} failed: {}", c.part, c.detail))
    };
    // A complete backup is described in the store first: the store alone must be enough
    // to restore it (see repo::records).
    // Only a backup still running can complete (a finish asked again, or one the
    // controller failed meanwhile, changes nothing and writes nothing).
    let finished_at = now();
    let mut record = None;
    let problem = match problem {
        Some(p) => Some(p),
        None if b.status != BackupStatus::Running => None,
        None => match state.repo.publish_backup(id, finished_at).await {
            Ok(name) => {
                record = Some(name);
                None
            }
            Err(e) => {
                tracing::error!(backup = %id, error = %e, "could not write the backup's manifest record");
                Some(format!(
                    "its manifest record could not be written to the store: {e}"
                ))
            }
        },
    };
    let finished = cat
        .finish_backup_at(
            id,
            problem.is_none(),
            problem.as_deref().unwrap_or(""),
            finished_at,
        )
        .await?;
    if let Some(name) = record
        && !finished
    {
        // It stopped running while its record was written (failed by a restart, say):
        // the store must not say it completed.
        state
            .repo
            .retract(
                &name,
                "the backup was no longer running when it was to complete",
            )
            .await?;
    }
    let after = own_backup(state, agent, id).await?;
    tracing::info!(backup = %id, status = %after.status, reason = %after.reason, "backup finished");
    Ok(pb::FinishBackupResponse {
        status: after.status.to_string(),
        reason: after.reason,
    })
}

/// Delete backup `id`'s data at an operator's request (`who`, with `reason`): it is
/// expired, its row stays as history, and the next collection removes what only it used.
/// Refused while a drill or restore uses it, and for a backup still running.
pub async fn delete(state: &State, id: BackupId, who: &str, reason: &str) -> OpsResult<BackupRow> {
    if reason.trim().is_empty() {
        return Err(OpsError::InvalidArgument(
            "give the reason with --reason; it is kept with the backup and in the audit log".into(),
        ));
    }
    let b = state.backup(id).await?;
    let expiry = Expiry {
        instance: b.instance.clone(),
        backups: vec![(id.0, format!("deleted by {who}: {reason}"))],
        logs: Vec::new(),
        kept_bases: Vec::new(),
    };
    if let Err(why) = super::retention::apply_expiry(state, &expiry).await? {
        return Err(OpsError::FailedPrecondition(format!(
            "backup {id} was not deleted: {why}"
        )));
    }
    tracing::warn!(backup = %id, %who, %reason, "backup deleted by an operator");
    state.backup(id).await
}
