//! The fleet's status table: each instance's window, archiver, newest backups and drill.

use tidemark_proto as pb;

use super::window::window_info;
use super::{OpsResult, State};
use crate::catalog::{BackupKind, BackupRow, BackupStatus, DrillRow, DrillState};

/// The newest finish time of a complete backup of `kind`, 0 when none.
fn last_complete(backups: &[BackupRow], kind: BackupKind) -> i64 {
    backups
        .iter()
        .filter(|b| b.kind == kind && b.status == BackupStatus::Complete)
        .filter_map(|b| b.finished_at)
        .max()
        .unwrap_or(0)
}

pub async fn fleet_status(state: &State) -> OpsResult<Vec<pb::InstanceStatus>> {
    let mut out = Vec::new();
    let connected_agents = state.connected_agents().await?;
    for agent in state.repo.catalog.agents().await? {
        let connected = connected_agents.contains(&agent.name);
        for inst in &agent.instances {
            let backups = state.repo.catalog.list_backups(Some(&inst.name)).await?;
            let archiver = state.repo.catalog.archiver_status(&inst.name).await?;
            out.push(pb::InstanceStatus {
                instance: inst.name.clone(),
                agent: agent.name.clone(),
                engine: inst.engine.to_string(),
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
                last_base_backup: last_complete(&backups, BackupKind::Base),
                newest_wal_stored_at: state.repo.catalog.newest_wal_stored_at(&inst.name).await?,
                last_drill: last_drill(state, &inst.name).await?.map(|d| drill_info(&d)),
                last_logical_backup: last_complete(&backups, BackupKind::Logical),
                alerts: state
                    .repo
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

pub fn drill_info(d: &DrillRow) -> pb::DrillInfo {
    let e = &d.evidence;
    pb::DrillInfo {
        id: d.id,
        instance: d.instance.clone(),
        sandbox: d.sandbox.clone(),
        backup_id: d.backup_id.map(|b| b.0).unwrap_or(0),
        state: d.state.as_str().into(),
        target: d.target,
        target_reason: d.target_reason.clone(),
        recovered_at: e.recovered_at,
        recovered_lsn: e.recovered_lsn.clone(),
        bytes_restored: e.bytes_restored,
        wal_segments: e.wal_segments,
        rto_ms: e.rto_ms,
        restore_ms: e.restore_ms,
        replay_ms: e.replay_ms,
        rpo_secs: e.rpo_secs,
        checks: e
            .checks
            .iter()
            .map(|c| pb::CheckResult {
                name: c.name.clone(),
                expect: c.expect.clone(),
                value: c.value.clone(),
                ok: c.ok,
                detail: c.detail.clone(),
            })
            .collect(),
        log_tail: e.log_tail.clone(),
        reason: d.reason.clone(),
        created_at: d.created_at,
        started_at: d.started_at.unwrap_or(0),
        finished_at: d.finished_at.unwrap_or(0),
        job_id: d.job_id.map(|j| j.0).unwrap_or(0),
        stop_record: e.stop_record.clone(),
    }
}

/// Used by `tidemark status` and the metrics.
pub async fn last_drill(state: &State, instance: &str) -> OpsResult<Option<DrillRow>> {
    Ok(state
        .repo
        .catalog
        .last_drill(
            instance,
            &[
                DrillState::Queued,
                DrillState::Running,
                DrillState::Passed,
                DrillState::Failed,
                DrillState::Aborted,
            ],
        )
        .await?)
}
