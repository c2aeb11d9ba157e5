//! Restore planning: turning a point-in-time restore request into a physical restore job
//! (the backup to restore and the WAL or binlogs to replay), refusing a backup that cannot
//! be read whole.

use std::collections::HashMap;

use serde_json::json;
use tidemark_core::ids::BackupId;
use tidemark_proto as pb;

use super::window::{binlog_window, window};
use super::{OpsError, OpsResult, State, instance};
use crate::catalog::{BackupRow, BackupStatus, Engine, InstanceRow};
use crate::window::binlog::BinlogWindow;
use crate::window::wal::Target;

/// Refuse a backup some of whose chunks are missing or were found corrupt.
pub async fn check_chunks_stored(state: &State, b: &BackupRow) -> OpsResult<()> {
    for p in &b.parts {
        if let Some(bad) = state
            .repo
            .catalog
            .unavailable_chunks(b.id, &p.name, 1)
            .await?
            .first()
        {
            return Err(OpsError::DataLoss(format!(
                "backup {} cannot be restored: chunk {bad} of part {} is missing or was found corrupt",
                b.id, p.name
            )));
        }
    }
    Ok(())
}

/// A restore job ready to dispatch: the agent that runs it, what the catalog records of it,
/// the job, and how many bytes it reads.
pub struct RestorePlan {
    pub host: String,
    pub params: serde_json::Value,
    pub job: pb::RestoreJob,
    pub bytes_total: u64,
}

impl RestorePlan {
    /// A physical restore of backup `b` of `inst` on `host`: it reads every part.
    fn physical(
        host: String,
        b: &BackupRow,
        inst: &InstanceRow,
        physical: pb::PhysicalRestore,
        params: serde_json::Value,
    ) -> Self {
        RestorePlan {
            host,
            params,
            job: pb::RestoreJob {
                backup_id: b.id.0,
                instance: inst.name.clone(),
                physical: Some(physical),
                ..Default::default()
            },
            bytes_total: b.parts.iter().map(|p| p.stats.raw_bytes).sum(),
        }
    }
}

/// A logical restore job for `r`: one database of a complete dump into a new database on
/// an instance of the target host, of the same engine.
pub async fn plan_logical_restore(
    state: &State,
    r: &pb::StartRestoreRequest,
) -> OpsResult<RestorePlan> {
    let cat = &state.repo.catalog;
    let id = BackupId(r.backup_id);
    let b = state.backup(id).await?;
    if b.status != BackupStatus::Complete {
        let why = if b.reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", b.reason)
        };
        return Err(OpsError::FailedPrecondition(format!(
            "backup {id} is {}, not complete{why}; only complete backups can be restored",
            b.status
        )));
    }
    if r.into_database.is_empty() {
        return Err(OpsError::InvalidArgument(
            "name the new database with --into-database".into(),
        ));
    }
    let (part, source_database) = restore_part(&b, &r.database)?;
    let host = r.host.strip_prefix("agent:").unwrap_or(&r.host);
    let agent = cat.agent(host).await?;
    let agent = agent.ok_or_else(|| {
        OpsError::NotFound(format!(
            "no agent {host:?} has registered; tidemark agents lists them"
        ))
    })?;
    let owned: Vec<&str> = agent.instances.iter().map(|i| i.name.as_str()).collect();
    let instance = if !r.target_instance.is_empty() {
        if !owned.contains(&r.target_instance.as_str()) {
            return Err(OpsError::NotFound(format!(
                "agent {host} has no instance {:?}",
                r.target_instance
            )));
        }
        r.target_instance.clone()
    } else if owned.contains(&b.instance.as_str()) {
        b.instance.clone()
    } else if let [one] = owned.as_slice() {
        one.to_string()
    } else {
        return Err(OpsError::InvalidArgument(format!(
            "agent {host} has several instances ({}); pick one with --target-instance",
            owned.join(", ")
        )));
    };
    let source_engine = cat.instance(&b.instance).await?.map(|i| i.engine);
    let target_engine = agent
        .instances
        .iter()
        .find(|i| i.name == instance)
        .map(|i| i.engine);
    if let (Some(s), Some(t)) = (&source_engine, &target_engine)
        && s != t
    {
        return Err(OpsError::InvalidArgument(format!(
            "backup {id} is of a {s} instance, and instance {instance} on {host} is {t}; restore onto a {s} instance"
        )));
    }
    if let Some(bad) = cat.unavailable_chunks(id, &part, 1).await?.first() {
        return Err(OpsError::DataLoss(format!(
            "backup {id} cannot be restored: chunk {bad} of part {part} is missing or was found corrupt"
        )));
    }
    let total = b.part(&part).map(|p| p.stats.raw_bytes).unwrap_or(0);
    let job = pb::RestoreJob {
        backup_id: id.0,
        part: part.clone(),
        instance: instance.clone(),
        into_database: r.into_database.clone(),
        clean: r.clean,
        jobs: r.jobs.max(1),
        no_owner: r.no_owner,
        physical: None,
        database: source_database,
    };
    let params = json!({
        "backup_id": id.0, "part": part, "instance": instance, "into_database": r.into_database,
        "clean": r.clean, "jobs": job.jobs, "no_owner": r.no_owner,
    });
    Ok(RestorePlan {
        host: host.to_string(),
        params,
        job,
        bytes_total: total,
    })
}

/// The part a restore reads: the named database, or the backup's only one.
/// The part to restore, and the database to take from it when it holds several (a
/// MariaDB dump holds every database of the instance in one part).
fn restore_part(b: &BackupRow, database: &str) -> OpsResult<(String, String)> {
    let (dbs, part): (Vec<&str>, Option<&str>) = if b.databases.is_empty() {
        let dbs = b
            .parts
            .iter()
            .filter_map(|p| p.name.strip_prefix("db:"))
            .collect();
        (dbs, None)
    } else {
        let part = b.parts.first().map(|p| p.name.as_str());
        (b.databases.iter().map(String::as_str).collect(), part)
    };
    let pick = |db: &str| match part {
        Some(p) => (p.to_string(), db.to_string()),
        None => (format!("db:{db}"), String::new()),
    };
    if !database.is_empty() {
        if dbs.contains(&database) {
            return Ok(pick(database));
        }
        return Err(OpsError::NotFound(format!(
            "backup {} holds no database {database:?}; it holds: {}",
            b.id,
            dbs.join(", ")
        )));
    }
    match dbs.as_slice() {
        [one] => Ok(pick(one)),
        [] => Err(OpsError::FailedPrecondition(format!(
            "backup {} holds no database dump",
            b.id
        ))),
        many => Err(OpsError::InvalidArgument(format!(
            "backup {} holds several databases ({}); pick one with --database",
            b.id,
            many.join(", ")
        ))),
    }
}

/// A physical restore job for `r`.
pub async fn plan_restore(
    state: &State,
    r: &pb::StartPitrRestoreRequest,
) -> OpsResult<RestorePlan> {
    let inst = instance(state, &r.instance).await?;
    let target = Target::parse(&r.target_kind, &r.target).map_err(OpsError::InvalidArgument)?;
    if !matches!(r.action.as_str(), "pause" | "promote") {
        return Err(OpsError::InvalidArgument(format!(
            "--action must be pause or promote, not {:?}",
            r.action
        )));
    }
    if !r.pgdata.starts_with('/') {
        return Err(OpsError::InvalidArgument(format!(
            "--pgdata must be an absolute path on the target host, not {:?}",
            r.pgdata
        )));
    }
    let host = r.host.strip_prefix("agent:").unwrap_or(&r.host).to_string();
    match state.repo.catalog.agent(&host).await? {
        None => {
            return Err(OpsError::NotFound(format!(
                "no agent {host:?} has registered; tidemark agents lists them"
            )));
        }
        Some(a) if a.role != "agent" => {
            return Err(OpsError::FailedPrecondition(format!(
                "{host} is a sandbox; it runs drills (tidemark drill run), not restores"
            )));
        }
        Some(_) => {}
    }
    match inst.engine {
        Engine::Postgresql => plan_wal_restore(state, r, &inst, host, &target).await,
        Engine::Mariadb => plan_binlog_restore(state, r, &inst, host, &target).await,
    }
}

/// A PostgreSQL point-in-time restore: the base backup that ended before the target, its
/// tablespaces mapped, and the recovery target.
async fn plan_wal_restore(
    state: &State,
    r: &pb::StartPitrRestoreRequest,
    inst: &InstanceRow,
    host: String,
    target: &Target,
) -> OpsResult<RestorePlan> {
    let w = window(state, inst).await?;
    let reach = if r.backup_id != 0 {
        w.reaches
            .iter()
            .find(|x| x.base.backup_id == BackupId(r.backup_id) && x.last_segno.is_some())
            .ok_or_else(|| {
                OpsError::FailedPrecondition(format!(
                    "backup {} is not a restorable base backup of {} (it must be complete with its WAL archived)",
                    r.backup_id, inst.name
                ))
            })?
    } else {
        w.choose(&inst.name, target)
            .map_err(OpsError::FailedPrecondition)?
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
            return Err(OpsError::InvalidArgument(format!(
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
        engine: pb::Engine::from(inst.engine).into(),
    };
    let params = json!({
        "backup_id": b.id.0, "parts": physical.parts, "source_instance": inst.name,
        "pgdata": r.pgdata, "target_kind": r.target_kind, "target": target_value,
        "action": r.action, "start": r.start,
    });
    Ok(RestorePlan::physical(host, &b, inst, physical, params))
}

/// A MariaDB point-in-time restore: the physical backup to prepare, and the binlogs to
/// replay from its position.
async fn plan_binlog_restore(
    state: &State,
    r: &pb::StartPitrRestoreRequest,
    inst: &InstanceRow,
    host: String,
    target: &Target,
) -> OpsResult<RestorePlan> {
    if !r.tablespace_map.is_empty() {
        return Err(OpsError::InvalidArgument(
            "--tablespace-map is PostgreSQL's; a MariaDB restore goes into --datadir".into(),
        ));
    }
    // A physical backup by default; with --from-backup, that backup, which may be a
    // logical dump: loaded into a new server, then the same binlog replay follows.
    let w = if r.backup_id != 0 {
        let chosen = state.backup(BackupId(r.backup_id)).await?;
        if chosen.instance != inst.name {
            return Err(OpsError::InvalidArgument(format!(
                "backup {} is of instance {}, not {}",
                chosen.id, chosen.instance, inst.name
            )));
        }
        let files = state.repo.catalog.wal_segments(&inst.name).await?;
        let backups: Vec<_> = state
            .repo
            .catalog
            .binlog_backups(&inst.name, chosen.kind)
            .await?
            .into_iter()
            .filter(|c| c.backup_id == chosen.id)
            .collect();
        if backups.is_empty() {
            return Err(OpsError::FailedPrecondition(format!(
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
        .map_err(OpsError::FailedPrecondition)?;
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
        engine: pb::Engine::from(inst.engine).into(),
        ..Default::default()
    };
    let params = json!({
        "backup_id": b.id.0, "parts": physical.parts, "source_instance": inst.name, "datadir": r.pgdata,
        "target_kind": r.target_kind, "target": target_value, "binlogs": replay.files,
        "start_position": replay.start_position, "start": r.start,
    });
    Ok(RestorePlan::physical(host, &b, inst, physical, params))
}
