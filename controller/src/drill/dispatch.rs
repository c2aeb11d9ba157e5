//! Hands queued drills to idle sandboxes, oldest first. A sandbox runs one drill at a time;
//! the rest wait in the queue, so `drill run --all` on a pool of one runs them in turn.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tidemark_core::timefmt::pg_timestamp;
use tidemark_proto as pb;

use super::sandboxes_for;
use crate::catalog::{DrillRow, DrillState, Engine, InstanceRow, JobState};
use crate::ops::{OpsError, OpsResult};
use crate::ops::{State, jobs};
use crate::window::wal::Target;

/// Runs for the controller's life: dispatch whenever woken, and every few seconds anyway
/// (a sandbox may have become free without anyone saying so).
pub async fn run_dispatcher(state: Arc<State>) {
    loop {
        // Only the leading controller dispatches drills (see cluster).
        if state.leading()
            && let Err(e) = dispatch(&state).await
        {
            tracing::error!(error = %e, "dispatching drills");
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), state.drills.woken()).await;
    }
}

async fn dispatch(state: &Arc<State>) -> OpsResult<()> {
    let queued = state
        .repo
        .catalog
        .drills_in_state(DrillState::Queued)
        .await?;
    if queued.is_empty() {
        return Ok(());
    }
    let agents = state.repo.catalog.agents().await?;
    let connected = state.connected_agents().await?;
    let mut busy: HashSet<String> = state
        .repo
        .catalog
        .drills_in_state(DrillState::Running)
        .await?
        .into_iter()
        .map(|d| d.sandbox)
        .collect();
    for d in queued {
        let Some(inst) = state.repo.catalog.instance(&d.instance).await? else {
            state
                .repo
                .catalog
                .end_drill(
                    d.id,
                    DrillState::Failed,
                    "the instance is no longer registered",
                )
                .await?;
            continue;
        };
        let Some(major) = inst.engine.series(&inst.server_version) else {
            continue;
        };
        let free = sandboxes_for(&agents, inst.engine, major)
            .into_iter()
            .filter(|a| d.sandbox_wanted.is_empty() || a.name == d.sandbox_wanted)
            .find(|a| !busy.contains(&a.name) && connected.contains(&a.name));
        let Some(sandbox) = free else {
            continue;
        };
        let sandbox = sandbox.name.clone();
        match start(state, &d, &sandbox).await {
            Ok(()) => {
                busy.insert(sandbox);
            }
            Err(e) => {
                tracing::warn!(drill = d.id, error = %e, "drill could not start");
                state
                    .repo
                    .catalog
                    .end_drill(d.id, DrillState::Failed, &e.to_string())
                    .await?;
            }
        }
    }
    Ok(())
}

/// The smoke checks of an instance, as the sandbox runs them.
fn smoke_checks(state: &State, instance: &str) -> Vec<pb::SmokeCheck> {
    state
        .drills
        .checks(instance)
        .iter()
        .map(|c| pb::SmokeCheck {
            name: c.name.clone(),
            database: c.database.clone(),
            sql: c.sql.clone(),
        })
        .collect()
}

/// Pick the backup for the drill's target and send the job.
async fn start(state: &Arc<State>, d: &DrillRow, sandbox: &str) -> OpsResult<()> {
    let inst = crate::ops::instance(state, &d.instance).await?;
    match inst.engine {
        Engine::Postgresql => start_postgres(state, d, sandbox, &inst).await,
        Engine::Mariadb => start_mariadb(state, d, sandbox, &inst).await,
    }
}

/// A PostgreSQL drill: the newest base backup that ended before the target, and its WAL.
async fn start_postgres(
    state: &Arc<State>,
    d: &DrillRow,
    sandbox: &str,
    inst: &InstanceRow,
) -> OpsResult<()> {
    let w = crate::ops::window::window(state, inst).await?;
    let reach = w
        .choose(&inst.name, &Target::Time(d.target))
        .map_err(OpsError::FailedPrecondition)?;
    let base = &reach.base;
    let b = state.backup(base.backup_id).await?;
    crate::ops::restore::check_chunks_stored(state, &b).await?;
    let seg = inst.segment_size();
    let parts: Vec<String> = b.parts.iter().map(|p| p.name.clone()).collect();
    let restore = pb::PhysicalRestore {
        engine: pb::Engine::from(inst.engine).into(),
        backup_id: b.id.0,
        source_instance: inst.name.clone(),
        parts: parts.clone(),
        // The sandbox puts each tablespace under its own directory.
        tablespaces: base
            .tablespaces
            .keys()
            .map(|oid| (oid.clone(), String::new()))
            .collect(),
        target_kind: "time".into(),
        target: pg_timestamp(d.target),
        action: "pause".into(),
        archive: false,
        start: true,
        verify: true,
        ..Default::default()
    };
    let settings = &state.drills.settings;
    let job = pb::DrillJob {
        drill_id: d.id,
        restore: Some(restore),
        checks: smoke_checks(state, &inst.name),
        amcheck: settings.amcheck,
        user: settings.user.clone(),
        major: inst
            .engine
            .series(&b.server_version)
            .or_else(|| inst.engine.series(&inst.server_version))
            .unwrap_or(0),
    };
    let params = json!({
        "drill_id": d.id, "backup_id": b.id.0, "parts": parts, "source_instance": inst.name,
        "start_segno": base.start_lsn.segno(seg), "target": pg_timestamp(d.target),
    });
    send(state, d, sandbox, &inst.name, &b, job, params).await
}

/// A MariaDB drill: the physical backup before the target, and the binlogs to replay.
async fn start_mariadb(
    state: &Arc<State>,
    d: &DrillRow,
    sandbox: &str,
    inst: &crate::catalog::InstanceRow,
) -> OpsResult<()> {
    let w = crate::ops::window::binlog_window(state, inst).await?;
    let (reach, replay) = w
        .plan(&inst.name, &Target::Time(d.target))
        .map_err(OpsError::FailedPrecondition)?;
    let b = state.backup(reach.backup.backup_id).await?;
    crate::ops::restore::check_chunks_stored(state, &b).await?;
    let parts: Vec<String> = b.parts.iter().map(|p| p.name.clone()).collect();
    let restore = pb::PhysicalRestore {
        backup_id: b.id.0,
        source_instance: inst.name.clone(),
        parts: parts.clone(),
        target_kind: "time".into(),
        target: pg_timestamp(d.target),
        start: true,
        binlog: Some(replay.job(reach)),
        engine: pb::Engine::from(inst.engine).into(),
        ..Default::default()
    };
    let job = pb::DrillJob {
        drill_id: d.id,
        restore: Some(restore),
        checks: smoke_checks(state, &inst.name),
        amcheck: state.drills.settings.amcheck,
        user: "root".into(),
        major: inst
            .engine
            .series(&b.server_version)
            .or_else(|| inst.engine.series(&inst.server_version))
            .unwrap_or(0),
    };
    // The sandbox may fetch this instance's binlogs from the backup's file on.
    let params = json!({
        "drill_id": d.id, "backup_id": b.id.0, "parts": parts, "source_instance": inst.name,
        "start_segno": reach.backup.seq, "target": pg_timestamp(d.target),
        "binlogs": replay.files,
    });
    send(state, d, sandbox, &inst.name, &b, job, params).await
}

/// Record the drill's job, mark the drill running, and hand the job to the sandbox.
async fn send(
    state: &Arc<State>,
    d: &DrillRow,
    sandbox: &str,
    instance: &str,
    b: &crate::catalog::BackupRow,
    job: pb::DrillJob,
    params: serde_json::Value,
) -> OpsResult<()> {
    let total: u64 = b.parts.iter().map(|p| p.stats.raw_bytes).sum();
    let job_id = state
        .repo
        .catalog
        .create_job(
            "drill",
            sandbox,
            instance,
            &params,
            total,
            &jobs::encode(&pb::job::Spec::Drill(job.clone())),
        )
        .await?;
    if !state
        .repo
        .catalog
        .start_drill(d.id, sandbox, b.id, job_id)
        .await?
    {
        state
            .repo
            .catalog
            .update_job(
                job_id,
                JobState::Failed,
                0,
                None,
                "the drill was no longer queued",
            )
            .await?;
        return Ok(());
    }
    tracing::info!(drill = d.id, %instance, %sandbox, backup = %b.id, target = %pg_timestamp(d.target), "drill dispatched");
    let sent = jobs::deliver(state, sandbox, job_id, pb::job::Spec::Drill(job)).await;
    if let Err(e) = sent {
        let why = format!("sandbox {sandbox} could not be given the drill: {e}");
        state
            .repo
            .catalog
            .update_job(job_id, JobState::Failed, 0, None, &why)
            .await?;
        state
            .repo
            .catalog
            .end_drill(d.id, DrillState::Aborted, &why)
            .await?;
    }
    Ok(())
}
