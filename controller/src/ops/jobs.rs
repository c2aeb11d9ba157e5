//! Starting jobs on agents, shared by the admin service and the scheduler.

use serde_json::json;
use tidemark_core::identity::Role;
use tidemark_core::ids::JobId;
use tidemark_proto as pb;

use super::State;
use super::error::{OpsError, OpsResult};
use crate::catalog::{BackupKind, JobRow, JobState};

/// Record a job and hand it to its agent; a job that cannot be delivered fails at once.
pub async fn dispatch(
    state: &State,
    kind: &str,
    agent: &str,
    instance: &str,
    params: serde_json::Value,
    bytes_total: u64,
    spec: pb::job::Spec,
) -> OpsResult<JobId> {
    let cat = &state.repo.catalog;
    // Sandboxes take drills only: a restore job would let one read any backup.
    if cat
        .agent(agent)
        .await?
        .is_some_and(|a| a.role == Role::Sandbox.as_str())
    {
        return Err(OpsError::FailedPrecondition(format!(
            "{agent} is a sandbox; it runs drills (tidemark drill run), not {kind} jobs"
        )));
    }
    let id = cat
        .create_job(kind, agent, instance, &params, bytes_total, &encode(&spec))
        .await?;
    if let Err(e) = deliver(state, agent, id, spec).await {
        cat.update_job(id, JobState::Failed, 0, None, &e.to_string())
            .await?;
        return Err(e);
    }
    tracing::info!(job = %id, kind, agent, instance, "job dispatched");
    Ok(id)
}

/// A job as stored for delivery: encoded without its id, which the catalog assigns.
pub fn encode(spec: &pb::job::Spec) -> Vec<u8> {
    prost::Message::encode_to_vec(&pb::Job {
        job_id: 0,
        spec: Some(spec.clone()),
    })
}

/// Hand recorded job `id` to `agent`: down its job stream when it is connected here, or,
/// on a shared catalog, left queued for the controller that holds its stream (which
/// delivers it within a second, see `cluster`). Err: no controller can deliver it.
pub async fn deliver(state: &State, agent: &str, id: JobId, spec: pb::job::Spec) -> OpsResult<()> {
    let cat = &state.repo.catalog;
    if state.sessions.is_connected(agent) {
        if cat.claim_job(id).await? {
            let job = pb::Job {
                job_id: id.0,
                spec: Some(spec),
            };
            state.sessions.send(agent, job).await?;
        }
        return Ok(());
    }
    if cat.shared()
        && let Some(other) = cat.agent_held_elsewhere(agent).await?
    {
        tracing::info!(job = %id, agent, controller = %other, "job queued for the controller holding the agent's job stream");
        return Ok(());
    }
    Err(OpsError::FailedPrecondition(format!(
        "agent {agent} is not connected; start tidemark-agent on that host (tidemark agents shows who is)"
    )))
}

/// Start a backup of `instance` on its agent: `kind` logical (the default) or base.
pub async fn start_backup(state: &State, instance: &str, kind: &str) -> OpsResult<JobId> {
    let kind = if kind.is_empty() {
        BackupKind::Logical
    } else {
        BackupKind::from_name(kind).ok_or_else(|| {
            OpsError::InvalidArgument(format!(
                "backup kind {kind:?} is not supported; use --kind logical or --kind base"
            ))
        })?
    };
    let inst = super::instance(state, instance).await?;
    let spec = pb::job::Spec::Backup(pb::BackupJob {
        instance: inst.name.clone(),
        kind: kind.to_string(),
    });
    let params = json!({ "instance": inst.name, "kind": kind.as_str() });
    dispatch(state, "backup", &inst.agent, &inst.name, params, 0, spec).await
}

/// Ask an agent to stop a job it is running; the job is already recorded as failed.
pub async fn cancel(state: &State, agent: &str, job: JobId, reason: &str) {
    let msg = pb::Job {
        job_id: job.0,
        spec: Some(pb::job::Spec::Cancel(pb::CancelJob {
            reason: reason.to_string(),
        })),
    };
    if let Err(e) = state.sessions.send(agent, msg).await {
        tracing::warn!(%job, agent, error = %e, "could not ask the agent to stop the job");
    }
}

/// An agent's report on a job of its own: progress, or how it ended. Returns the job as it
/// was before the report, and the reported state.
pub async fn report(
    state: &State,
    agent: &str,
    r: &pb::JobReport,
) -> OpsResult<(JobRow, JobState)> {
    let job = super::backups::own_job(state, agent, JobId(r.job_id)).await?;
    let reported = match pb::JobState::try_from(r.state) {
        Ok(pb::JobState::Running) => JobState::Running,
        Ok(pb::JobState::Succeeded) => JobState::Succeeded,
        Ok(pb::JobState::Failed) => JobState::Failed,
        _ => {
            return Err(OpsError::InvalidArgument(format!(
                "job state {} cannot be reported",
                r.state
            )));
        }
    };
    let total = (r.bytes_total > 0).then_some(r.bytes_total);
    state
        .repo
        .catalog
        .update_job(JobId(r.job_id), reported, r.bytes_done, total, &r.message)
        .await?;
    // The job ended in the catalog (it timed out, perhaps on another controller whose
    // cancel could not reach this agent's stream) while the agent still runs it: stop
    // it from here, where the stream is. Progress comes every second.
    if reported == JobState::Running && job.state.is_terminal() {
        cancel(state, agent, job.id, &job.message).await;
    }
    Ok((job, reported))
}
