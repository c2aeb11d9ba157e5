//! `tidemark policy` and `tidemark schedule`: each instance's schedules (the config's, or an
//! operator's until reset) and the recent scheduled runs.

use tidemark_proto as pb;

use super::KINDS;
use crate::cron::Cron;
use crate::ops::{OpsError, OpsResult, State};

/// Change one schedule of an instance (`cron`, "off", or back to the config's with `reset`).
pub async fn set(state: &State, r: &pb::SetPolicyRequest) -> OpsResult<pb::ScheduleInfo> {
    crate::ops::instance(state, &r.instance).await?;
    if !KINDS.contains(&r.kind.as_str()) {
        return Err(OpsError::InvalidArgument(format!(
            "schedule kind {:?} is not one of {}",
            r.kind,
            KINDS.join(", ")
        )));
    }
    let cat = &state.repo.catalog;
    if r.reset {
        let configured = state
            .drills
            .policies
            .iter()
            .find(|p| p.name == r.instance)
            .and_then(|p| {
                p.schedules()
                    .into_iter()
                    .find(|(k, _)| *k == r.kind)
                    .map(|(_, c)| c.to_string())
            });
        cat.reset_schedule(&r.instance, &r.kind, configured.as_deref())
            .await?;
    } else {
        let cron = r.cron.trim();
        if cron != "off" {
            Cron::parse(cron).map_err(OpsError::InvalidArgument)?;
        }
        cat.set_schedule(&r.instance, &r.kind, cron).await?;
    }
    tracing::info!(instance = %r.instance, kind = %r.kind, cron = %r.cron, reset = r.reset, "policy changed");
    info(state, &r.instance).await
}

/// The schedules of `instance` (all when empty), soonest first, and the newest runs.
pub async fn info(state: &State, instance: &str) -> OpsResult<pb::ScheduleInfo> {
    let now = crate::catalog::now();
    let mut policies: Vec<pb::PolicyEntry> = state
        .repo
        .catalog
        .schedules()
        .await?
        .into_iter()
        .filter(|s| instance.is_empty() || s.instance == instance)
        .map(|s| {
            // The next slot after the last one that fired, or now if that one is overdue.
            let from = s.last_slot.unwrap_or(s.updated_at);
            let next = super::next_run(&s.cron, from)
                .map(|n| if n < now { now } else { n })
                .unwrap_or(0);
            pb::PolicyEntry {
                instance: s.instance,
                kind: s.kind,
                cron: s.cron,
                origin: s.origin,
                next_run: next,
                last_slot: s.last_slot.unwrap_or(0),
            }
        })
        .collect();
    policies.sort_by_key(|p| (p.next_run == 0, p.next_run));
    let filter = (!instance.is_empty()).then_some(instance);
    let runs = state
        .repo
        .catalog
        .runs(filter, 50)
        .await?
        .into_iter()
        .map(|r| pb::ScheduledRun {
            id: r.id,
            instance: r.instance,
            kind: r.kind,
            slot: r.slot,
            missed: r.missed,
            attempt: r.attempt,
            state: r.state.to_string(),
            job_id: r.job_id.map(|j| j.0).unwrap_or(0),
            drill_id: r.drill_id.unwrap_or(0),
            message: r.message,
            created_at: r.created_at,
            finished_at: r.finished_at.unwrap_or(0),
            next_attempt_at: r.next_attempt_at.unwrap_or(0),
        })
        .collect();
    Ok(pb::ScheduleInfo { policies, runs })
}
