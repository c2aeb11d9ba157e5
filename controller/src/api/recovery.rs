//! Point-in-time recovery on the admin side: an instance's recovery window, the fleet
//! status table built on it, and turning a restore request into a physical restore job.

use std::collections::HashMap;

use serde_json::json;
use tidemark_core::ids::BackupId;
use tidemark_proto as pb;

use super::State;
use super::error::{ApiError, ApiResult};
use crate::binlog_window::BinlogWindow;
use crate::catalog::{BackupRow, InstanceRow};
use crate::pitr::{Target, Window};

pub async fn instance(state: &State, name: &str) -> ApiResult<InstanceRow> {
    state.catalog.instance(name).await?.ok_or_else(|| {
        ApiError::NotFound(format!(
            "no instance {name:?} is registered; tidemark agents lists them"
        ))
    })
}

pub async fn window(state: &State, inst: &InstanceRow) -> ApiResult<Window> {
    let bases = state.catalog.complete_base_backups(&inst.name).await?;
    let segments = state.catalog.wal_segments(&inst.name).await?;
    Ok(Window::compute(&bases, &segments, inst.segment_size()))
}

pub async fn binlog_window(state: &State, inst: &InstanceRow) -> ApiResult<BinlogWindow> {
    let backups = state.catalog.binlog_backups(&inst.name, "base").await?;
    let files = state.catalog.wal_segments(&inst.name).await?;
    Ok(BinlogWindow::compute(&backups, &files, inst.binlog_base()))
}

/// A MariaDB instance's window: positions are shown as binlog file:offset.
async fn binlog_window_info(state: &State, inst: &InstanceRow) -> ApiResult<pb::PitrWindowInfo> {
    let w = binlog_window(state, inst).await?;
    let mut info = pb::PitrWindowInfo {
        instance: inst.name.clone(),
        base_backups: w.reaches.len() as i64,
        wal_files: state.catalog.wal_file_count(&inst.name).await?,
        newest_wal: w.newest_file.clone().unwrap_or_default(),
        gap: w.gap.clone().unwrap_or_default(),
        detail: w.describe(),
        ..Default::default()
    };
    if let (Some(o), Some(n)) = (w.oldest(), w.newest()) {
        info.restorable = true;
        info.oldest_time = o.backup.stop_time;
        info.oldest_lsn = format!("{}:{}", o.backup.file, o.backup.position);
        info.newest_time = n.end_time;
        info.newest_lsn = n
            .files
            .last()
            .map(|f| f.0.clone())
            .unwrap_or_else(|| format!("{}:{}", n.backup.file, n.backup.position));
    }
    Ok(info)
}

pub async fn window_info(state: &State, inst: &InstanceRow) -> ApiResult<pb::PitrWindowInfo> {
    if inst.is_mariadb() {
        return binlog_window_info(state, inst).await;
    }
    let w = window(state, inst).await?;
    let mut info = pb::PitrWindowInfo {
        instance: inst.name.clone(),
        base_backups: w.reaches.len() as i64,
        wal_files: state.catalog.wal_file_count(&inst.name).await?,
        newest_wal: w.newest_wal.clone().unwrap_or_default(),
        gap: w.gap.clone().unwrap_or_default(),
        detail: w.describe(),
        ..Default::default()
    };
    if let (Some(o), Some(n)) = (w.oldest(), w.newest()) {
        info.restorable = true;
        info.oldest_time = o.base.stop_time;
        info.oldest_lsn = o.base.stop_lsn.to_string();
        info.newest_time = n.end_time;
        info.newest_lsn = n.end_lsn.to_string();
    }
    Ok(info)
}

/// The newest finish time of a complete backup of `kind`, 0 when none.
fn last_complete(backups: &[BackupRow], kind: &str) -> i64 {
    backups
        .iter()
        .filter(|b| b.kind == kind && b.status == "complete")
        .filter_map(|b| b.finished_at)
        .max()
        .unwrap_or(0)
}

pub async fn fleet_status(state: &State) -> ApiResult<Vec<pb::InstanceStatus>> {
    let mut out = Vec::new();
    let connected_agents = state.connected_agents().await?;
    for agent in state.catalog.agents().await? {
        let connected = connected_agents.contains(&agent.name);
        for inst in &agent.instances {
            let backups = state.catalog.list_backups(Some(&inst.name)).await?;
            let archiver = state.catalog.archiver_status(&inst.name).await?;
            out.push(pb::InstanceStatus {
                instance: inst.name.clone(),
                agent: agent.name.clone(),
                engine: inst.engine.clone(),
                connected,
                window: Some(window_info(state, inst).await?),
                archiver_reported_at: archiver.as_ref().map(|a| a.reported_at).unwrap_or(0),
                archiver: archiver.map(|a| pb::ArchiverStatus {
                    instance: a.instance,
                    last_archived_at: a.last_archived_at,
                    last_archived_wal: a.last_archived_wal,
                    failed_count: a.failed_count,
                    last_failed_at: a.last_failed_at,
                    last_failed_wal: a.last_failed_wal,
                    ready: a.ready,
                    error: a.error,
                    ..Default::default()
                }),
                last_base_backup: last_complete(&backups, "base"),
                newest_wal_stored_at: state.catalog.newest_wal_stored_at(&inst.name).await?,
                last_drill: crate::drill::last(state, &inst.name)
                    .await?
                    .map(|d| crate::drill::info(&d)),
                last_logical_backup: last_complete(&backups, "logical"),
                alerts: state
                    .catalog
                    .alerts(&inst.name)
                    .await?
                    .into_iter()
                    .map(|(t, kind, msg)| {
                        format!("{} {kind}: {msg}", tidemark_core::timefmt::utc(t))
                    })
                    .collect(),
            });
        }
    }
    out.sort_by(|a, b| a.instance.cmp(&b.instance));
    Ok(out)
}

/// Refuse a backup some of whose chunks are missing or were found corrupt.
pub async fn check_chunks_stored(state: &State, b: &BackupRow) -> ApiResult<()> {
    for p in &b.parts {
        if let Some(bad) = state
            .catalog
            .unavailable_chunks(b.id, &p.name, 1)
            .await?
            .first()
        {
            return Err(ApiError::DataLoss(format!(
                "backup {} cannot be restored: chunk {bad} of part {} is missing or was found corrupt",
                b.id, p.name
            )));
        }
    }
    Ok(())
}

/// A physical restore job for `r`: (agent, job params, job).
pub async fn plan_restore(
    state: &State,
    r: &pb::StartPitrRestoreRequest,
) -> ApiResult<(String, serde_json::Value, pb::RestoreJob, u64)> {
    let inst = instance(state, &r.instance).await?;
    let target = Target::parse(&r.target_kind, &r.target).map_err(ApiError::InvalidArgument)?;
    if !matches!(r.action.as_str(), "pause" | "promote") {
        return Err(ApiError::InvalidArgument(format!(
            "--action must be pause or promote, not {:?}",
            r.action
        )));
    }
    if !r.pgdata.starts_with('/') {
        return Err(ApiError::InvalidArgument(format!(
            "--pgdata must be an absolute path on the target host, not {:?}",
            r.pgdata
        )));
    }
    let host = r.host.strip_prefix("agent:").unwrap_or(&r.host).to_string();
    match state.catalog.agent(&host).await? {
        None => {
            return Err(ApiError::NotFound(format!(
                "no agent {host:?} has registered; tidemark agents lists them"
            )));
        }
        Some(a) if a.role != "agent" => {
            return Err(ApiError::FailedPrecondition(format!(
                "{host} is a sandbox; it runs drills (tidemark drill run), not restores"
            )));
        }
        Some(_) => {}
    }
    if inst.is_mariadb() {
        return plan_binlog_restore(state, r, &inst, host, &target).await;
    }
    let w = window(state, &inst).await?;
    let reach = if r.backup_id != 0 {
        w.reaches
            .iter()
            .find(|x| x.base.backup_id == BackupId(r.backup_id) && x.last_segno.is_some())
            .ok_or_else(|| {
                ApiError::FailedPrecondition(format!(
                    "backup {} is not a restorable base backup of {} (it must be complete with its WAL archived)",
                    r.backup_id, inst.name
                ))
            })?
    } else {
        w.choose(&inst.name, &target)
            .map_err(ApiError::FailedPrecondition)?
    };
    let base = &reach.base;
    let b = state.backup(base.backup_id).await?;
    check_chunks_stored(state, &b).await?;
    // Each tablespace goes where the map says (by OID or by old location), else back to
    // its old location.
    let mut tablespaces = HashMap::new();
    for (oid, old) in &base.tablespaces {
        let new = r
            .tablespace_map
            .get(oid)
            .or_else(|| r.tablespace_map.get(old))
            .cloned()
            .unwrap_or_else(|| old.clone());
        tablespaces.insert(oid.clone(), new);
    }
    for key in r.tablespace_map.keys() {
        if !base.tablespaces.contains_key(key) && !base.tablespaces.values().any(|v| v == key) {
            return Err(ApiError::InvalidArgument(format!(
                "--tablespace-map {key}=...: backup {} has no tablespace with that OID or location (it has {})",
                b.id,
                if base.tablespaces.is_empty() {
                    "none".to_string()
                } else {
                    base.tablespaces
                        .iter()
                        .map(|(o, l)| format!("{o} at {l}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )));
        }
    }
    let target_value = match &target {
        Target::Time(t) => tidemark_core::timefmt::pg_timestamp(*t),
        Target::Lsn(l) => l.to_string(),
        Target::Xid(x) | Target::Name(x) => x.clone(),
        Target::Immediate | Target::Latest => String::new(),
    };
    let physical = pb::PhysicalRestore {
        backup_id: b.id.0,
        source_instance: inst.name.clone(),
        pgdata: r.pgdata.clone(),
        parts: b.parts.iter().map(|p| p.name.clone()).collect(),
        tablespaces,
        target_kind: r.target_kind.clone(),
        target: target_value.clone(),
        action: r.action.clone(),
        archive: r.archive,
        port: r.port,
        start: r.start,
        verify: !r.skip_verify,
        binlog: None,
    };
    let total: u64 = b.parts.iter().map(|p| p.stats.raw_bytes).sum();
    let params = json!({
        "backup_id": b.id.0, "parts": physical.parts, "source_instance": inst.name,
        "pgdata": r.pgdata, "target_kind": r.target_kind, "target": target_value,
        "action": r.action, "start": r.start,
    });
    let job = pb::RestoreJob {
        backup_id: b.id.0,
        instance: inst.name.clone(),
        physical: Some(physical),
        ..Default::default()
    };
    Ok((host, params, job, total))
}

/// A MariaDB point-in-time restore: the physical backup to prepare, and the binlogs to
/// replay from its position.
async fn plan_binlog_restore(
    state: &State,
    r: &pb::StartPitrRestoreRequest,
    inst: &InstanceRow,
    host: String,
    target: &Target,
) -> ApiResult<(String, serde_json::Value, pb::RestoreJob, u64)> {
    if !r.tablespace_map.is_empty() {
        return Err(ApiError::InvalidArgument(
            "--tablespace-map is PostgreSQL's; a MariaDB restore goes into --datadir".into(),
        ));
    }
    // A physical backup by default; with --from-backup, that backup, which may be a
    // logical dump: loaded into a new server, then the same binlog replay follows.
    let w = if r.backup_id != 0 {
        let chosen = state.backup(BackupId(r.backup_id)).await?;
        if chosen.instance != inst.name {
            return Err(ApiError::InvalidArgument(format!(
                "backup {} is of instance {}, not {}",
                chosen.id, chosen.instance, inst.name
            )));
        }
        let files = state.catalog.wal_segments(&inst.name).await?;
        let backups: Vec<_> = state
            .catalog
            .binlog_backups(&inst.name, &chosen.kind)
            .await?
            .into_iter()
            .filter(|c| c.backup_id == chosen.id)
            .collect();
        if backups.is_empty() {
            return Err(ApiError::FailedPrecondition(format!(
                "backup {} is not a complete backup of {} with a binlog position",
                chosen.id, inst.name
            )));
        }
        BinlogWindow::compute(&backups, &files, inst.binlog_base())
    } else {
        binlog_window(state, inst).await?
    };
    let (reach, replay) = w
        .plan(&inst.name, target)
        .map_err(ApiError::FailedPrecondition)?;
    let b = state.backup(reach.backup.backup_id).await?;
    check_chunks_stored(state, &b).await?;
    let target_value = match target {
        Target::Time(t) => tidemark_core::timefmt::pg_timestamp(*t),
        _ => String::new(),
    };
    let physical = pb::PhysicalRestore {
        backup_id: b.id.0,
        source_instance: inst.name.clone(),
        pgdata: r.pgdata.clone(),
        parts: b.parts.iter().map(|p| p.name.clone()).collect(),
        target_kind: r.target_kind.clone(),
        target: target_value.clone(),
        port: r.port,
        start: r.start,
        binlog: Some(replay.job(reach)),
        ..Default::default()
    };
    let total: u64 = b.parts.iter().map(|p| p.stats.raw_bytes).sum();
    let params = json!({
        "backup_id": b.id.0, "parts": physical.parts, "source_instance": inst.name, "datadir": r.pgdata,
        "target_kind": r.target_kind, "target": target_value, "binlogs": replay.files,
        "start_position": replay.start_position, "start": r.start,
    });
    let job = pb::RestoreJob {
        backup_id: b.id.0,
        instance: inst.name.clone(),
        physical: Some(physical),
        ..Default::default()
    };
    Ok((host, params, job, total))
}
