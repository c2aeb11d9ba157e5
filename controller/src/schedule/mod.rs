//! The scheduler: per instance, cron schedules for logical dumps, base backups and drills.
//!
//! Each tick it moves open runs on (a finished job or drill, a deadline passed, a retry
//! due) and fires schedules whose next slot has come. A schedule that missed slots while
//! the controller was down fires once, for the newest missed slot, and records how many it
//! skipped. A run whose attempt fails or times out is retried with doubling backoff; a
//! drill that ran and failed its checks is a verdict, not an accident, and is not retried.

pub mod policy;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tidemark_core::timefmt::utc;

use crate::catalog::{DrillState, JobState, RunRow, RunState, now};
use crate::cron::Cron;
use crate::drill::{self, target::TargetSpec};
use crate::ops::State;
use crate::ops::background::BackgroundResult;
use crate::ops::jobs;
use crate::ops::{OpsError, OpsResult};

/// Per-instance kinds that `tidemark policy` may set.
pub const KINDS: [&str; 3] = ["logical", "base", "drill"];

/// The instance name of fleet-wide schedules (verify, retention).
pub const FLEET: &str = "*";

/// The schedules in the config file, for the catalog.
pub fn from_config(c: &crate::config::ControllerConfig) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = c
        .instances
        .iter()
        .flat_map(|p| {
            p.schedules()
                .into_iter()
                .map(|(k, cron)| (p.name.clone(), k.to_string(), cron.to_string()))
        })
        .collect();
    if let Some(cron) = &c.verify.schedule {
        out.push((FLEET.into(), "verify".into(), cron.clone()));
    }
    if let Some(cron) = &c.retention.schedule {
        out.push((FLEET.into(), "retention".into(), cron.clone()));
    }
    out
}

/// How long an attempt of a run of `kind` may take before it is stopped and retried.
fn time_limit(state: &State, kind: &str) -> Duration {
    match kind {
        "drill" => state.settings.schedule.drill_timeout,
        "verify" => state.settings.verify_timeout,
        "retention" => state.settings.retention_timeout,
        _ => state.settings.schedule.backup_timeout,
    }
}

/// Kinds the controller runs itself rather than through an agent or a sandbox.
fn in_controller(kind: &str) -> bool {
    kind == "verify" || kind == "retention"
}

/// The next run of `cron` after `from`; None when off.
pub fn next_run(cron: &str, from: i64) -> Option<i64> {
    if cron == "off" {
        return None;
    }
    Cron::parse(cron).ok()?.next_after(from)
}

pub async fn run(state: Arc<State>) {
    loop {
        // Only the leading controller schedules (see cluster).
        if !state.leading() {
            tokio::time::sleep(state.settings.schedule.tick).await;
            continue;
        }
        if let Err(e) = tick(&state, now()).await {
            tracing::error!(error = %e, "scheduler");
        }
        tokio::time::sleep(state.settings.schedule.tick).await;
    }
}

/// The newest slot of `cron` due at `now` after `from`, and how many earlier ones it
/// stands for.
pub fn due(cron: &Cron, from: i64, now: i64) -> Option<(i64, u32)> {
    let mut slot = cron.next_after(from).filter(|s| *s <= now)?;
    let mut missed = 0u32;
    while let Some(n) = cron.next_after(slot).filter(|n| *n <= now) {
        slot = n;
        missed += 1;
        if missed >= 100_000 {
            break;
        }
    }
    Some((slot, missed))
}

async fn tick(state: &Arc<State>, now: i64) -> OpsResult<()> {
    let mut open = HashSet::new();
    for run in state.repo.catalog.open_runs().await? {
        let mut run = run;
        advance(state, &mut run, now).await?;
        if matches!(run.state, RunState::Running | RunState::Waiting) {
            open.insert((run.instance.clone(), run.kind.clone()));
        }
    }
    for s in state.repo.catalog.schedules().await? {
        if s.cron == "off" {
            continue;
        }
        let cron = match Cron::parse(&s.cron) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(instance = %s.instance, kind = %s.kind, error = %e, "bad schedule");
                continue;
            }
        };
        // A new schedule's first slot is the first after it was set.
        let from = s.last_slot.unwrap_or(s.updated_at);
        let Some((slot, missed)) = due(&cron, from, now) else {
            continue;
        };
        // Claimed once: a controller that lost the lead a moment ago cannot fire it again.
        if !state
            .repo
            .catalog
            .claim_slot(&s.instance, &s.kind, s.last_slot, slot)
            .await?
        {
            continue;
        }
        if open.contains(&(s.instance.clone(), s.kind.clone())) {
            tracing::warn!(instance = %s.instance, kind = %s.kind, slot = %utc(slot),
                "the previous scheduled run is still going; this slot is skipped");
            continue;
        }
        if missed > 0 {
            tracing::warn!(instance = %s.instance, kind = %s.kind, missed, slot = %utc(slot),
                "slots were missed while the controller was down; running once now");
        }
        let mut run = state
            .repo
            .catalog
            .create_run(&s.instance, &s.kind, slot, missed)
            .await?;
        advance(state, &mut run, now).await?;
    }
    Ok(())
}

/// Move one open run on, and save it.
async fn advance(state: &Arc<State>, run: &mut RunRow, now: i64) -> OpsResult<()> {
    match run.state {
        RunState::Waiting if run.next_attempt_at.is_none_or(|t| t <= now) => {
            // One controller starts each attempt, and only once.
            if !state
                .repo
                .catalog
                .claim_attempt(run.id, run.attempt)
                .await?
            {
                return Ok(());
            }
            run.attempt += 1;
            let started = start_attempt(state, run).await;
            match started {
                Ok(()) => {
                    run.state = RunState::Running;
                    run.deadline = Some(now + time_limit(state, &run.kind).as_secs() as i64);
                    run.message = format!("attempt {} started", run.attempt);
                }
                Err(e) => retry_or_fail(state, run, now, &e.to_string()),
            }
        }
        RunState::Running => match outcome(state, run, now).await? {
            Outcome::Going => return Ok(()),
            Outcome::Done(msg) => {
                run.state = RunState::Succeeded;
                run.message = msg;
                run.finished_at = Some(now);
            }
            Outcome::Verdict(msg) => {
                run.state = RunState::Failed;
                run.message = msg;
                run.finished_at = Some(now);
            }
            Outcome::Retry(msg) => retry_or_fail(state, run, now, &msg),
            Outcome::Interrupted(msg) => {
                run.state = RunState::Waiting;
                run.next_attempt_at = Some(now);
                run.message = format!("attempt {}: {msg}; retrying now", run.attempt);
            }
        },
        _ => return Ok(()),
    }
    tracing::info!(run = run.id, instance = %run.instance, kind = %run.kind, state = %run.state, message = %run.message, "scheduled run");
    state.repo.catalog.save_run(run).await?;
    Ok(())
}

async fn start_attempt(state: &Arc<State>, run: &mut RunRow) -> OpsResult<()> {
    run.job_id = None;
    run.drill_id = None;
    if run.kind == "verify" {
        let req = tidemark_proto::VerifyRequest {
            instance: String::new(),
            sample_pct: state.settings.verify_sample,
        };
        let st = state.clone();
        spawn_background(state, run.id, async move {
            let r = crate::ops::verify::run(&st, &req)
                .await
                .map_err(|e| e.to_string())?;
            let summary = format!(
                "checked {} of {} chunks: {}",
                r.chunks_checked,
                r.chunks_total,
                if r.bad.is_empty() {
                    "all intact".to_string()
                } else {
                    format!(
                        "{} missing or corrupt, {} backups marked corrupt",
                        r.bad.len(),
                        r.backups_marked
                    )
                }
            );
            Ok((summary, r.bad.is_empty()))
        });
    } else if run.kind == "retention" {
        let st = state.clone();
        spawn_background(state, run.id, async move {
            let r = crate::ops::retention::apply(&st, "")
                .await
                .map_err(|e| e.to_string())?;
            Ok((retention_summary(&r), r.objects_failed.is_empty()))
        });
    } else if run.kind == "drill" {
        let inst = crate::ops::instance(state, &run.instance).await?;
        let d = drill::request(state, &inst, &TargetSpec::Default, "").await?;
        run.drill_id = Some(d.id);
    } else {
        run.job_id = Some(jobs::start_backup(state, &run.instance, &run.kind).await?);
    }
    Ok(())
}

/// Run `task` in the controller for scheduled run `id`; [`outcome`] collects its result.
fn spawn_background(
    state: &Arc<State>,
    id: i64,
    task: impl Future<Output = BackgroundResult> + Send + 'static,
) {
    state.background.runs.lock().unwrap().insert(id, None);
    let st = state.clone();
    let handle = tokio::spawn(async move {
        let result = task.await;
        st.background.runs.lock().unwrap().insert(id, Some(result));
        st.background.tasks.lock().unwrap().remove(&id);
    });
    state
        .background
        .tasks
        .lock()
        .unwrap()
        .insert(id, handle.abort_handle());
}

/// One line for a retention run: what went, what was freed, and what was not done.
fn retention_summary(r: &tidemark_proto::RetentionApplyResponse) -> String {
    let backups = r.deleted.iter().filter(|i| i.backup_id != 0).count();
    let logs = r.deleted.len() - backups;
    let mut s = format!(
        "{backups} backups expired, {logs} archived log files deleted; {} store objects deleted ({} chunks, {} bytes)",
        r.objects_deleted, r.chunks_freed, r.bytes_freed
    );
    for why in &r.skipped {
        s.push_str(&format!("; skipped {why}"));
    }
    if !r.objects_failed.is_empty() {
        s.push_str(&format!(
            "; {} objects could not be deleted and stay queued: {}",
            r.objects_failed.len(),
            r.objects_failed.join(", ")
        ));
    }
    s
}

enum Outcome {
    Going,
    Done(String),
    /// Finished, and failed on its merits: not retried.
    Verdict(String),
    Retry(String),
    /// The controller carrying the attempt stopped: not the attempt's fault, so it is
    /// retried at once instead of after the backoff.
    Interrupted(String),
}

async fn outcome(state: &Arc<State>, run: &RunRow, now: i64) -> OpsResult<Outcome> {
    let late = run.deadline.is_some_and(|d| now > d);
    if in_controller(&run.kind) {
        let mut runs = state.background.runs.lock().unwrap();
        return Ok(match runs.get(&run.id) {
            None => Outcome::Interrupted(format!(
                "the controller running the {} stopped or restarted",
                run.kind
            )),
            Some(None) if late => {
                // Stop it: a store that hangs must not hold the schedule forever.
                if let Some(task) = state.background.tasks.lock().unwrap().remove(&run.id) {
                    task.abort();
                }
                runs.remove(&run.id);
                Outcome::Retry(format!(
                    "timed out after {}",
                    tidemark_core::duration::human(time_limit(state, &run.kind))
                ))
            }
            Some(None) => Outcome::Going,
            Some(Some(_)) => match runs.remove(&run.id).flatten() {
                Some(Ok((summary, true))) => Outcome::Done(summary),
                // Damage found, or objects the store would not delete, is a finding, not an
                // accident: not retried.
                Some(Ok((summary, false))) => Outcome::Verdict(summary),
                Some(Err(e)) => Outcome::Retry(e),
                None => Outcome::Going,
            },
        });
    }
    let limit = tidemark_core::duration::human(time_limit(state, &run.kind));
    if let Some(id) = run.drill_id {
        let d = state
            .repo
            .catalog
            .drill(id)
            .await?
            .ok_or_else(|| OpsError::NotFound(format!("drill {id} is gone")))?;
        return Ok(match d.state {
            DrillState::Passed => Outcome::Done(format!("drill {id} passed")),
            DrillState::Failed => Outcome::Verdict(format!("drill {id} failed: {}", d.reason)),
            DrillState::Aborted => Outcome::Retry(format!("drill {id} was aborted: {}", d.reason)),
            DrillState::Queued | DrillState::Running if late => {
                let why = format!("timed out after {limit}");
                state
                    .repo
                    .catalog
                    .end_drill(id, DrillState::Aborted, &why)
                    .await?;
                if let Some(job) = d.job_id {
                    state
                        .repo
                        .catalog
                        .update_job(job, JobState::Failed, 0, None, &why)
                        .await?;
                    jobs::cancel(state, &d.sandbox, job, &why).await;
                }
                state.drills.wake();
                Outcome::Retry(format!("drill {id} {why}"))
            }
            _ => Outcome::Going,
        });
    }
    let Some(id) = run.job_id else {
        return Ok(Outcome::Retry("the attempt has no job".into()));
    };
    let j = state.job(id).await?;
    Ok(match j.state {
        JobState::Succeeded => Outcome::Done(format!("job {id}: {}", j.message)),
        JobState::Failed if crate::catalog::stopped_the_work(&j.message) => {
            Outcome::Interrupted(format!("job {id} failed: {}", j.message))
        }
        JobState::Failed => Outcome::Retry(format!("job {id} failed: {}", j.message)),
        _ if late => {
            let why = format!("timed out after {limit}");
            state
                .repo
                .catalog
                .update_job(id, JobState::Failed, j.bytes_done, None, &why)
                .await?;
            state.repo.catalog.fail_backup_of_job(id, &why).await?;
            jobs::cancel(state, &j.agent, id, &why).await;
            Outcome::Retry(format!("job {id} {why}"))
        }
        _ => Outcome::Going,
    })
}

/// Backoff before attempt `n + 1`: `base`, doubling, at most a day.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    (base * factor).min(Duration::from_secs(86400))
}

fn retry_or_fail(state: &State, run: &mut RunRow, now: i64, why: &str) {
    let s = &state.settings.schedule;
    if run.attempt <= s.retries {
        let wait = backoff(s.retry_backoff, run.attempt);
        let at = now + wait.as_secs() as i64;
        run.state = RunState::Waiting;
        run.next_attempt_at = Some(at);
        run.message = format!("attempt {}: {why}; retrying at {}", run.attempt, utc(at));
    } else {
        run.state = RunState::Failed;
        run.finished_at = Some(now);
        run.message = format!("failed after {} attempts; the last: {why}", run.attempt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missed_slots_collapse_into_one_run() {
        let every_minute = Cron::parse("* * * * *").unwrap();
        let t0 = 1_800_000_000; // a whole minute
        // Nothing due yet.
        assert_eq!(due(&every_minute, t0, t0 + 59), None);
        // On time: the slot, nothing missed.
        assert_eq!(due(&every_minute, t0, t0 + 61), Some((t0 + 60, 0)));
        // After an hour down: the newest slot, standing for 59 missed ones.
        assert_eq!(due(&every_minute, t0, t0 + 3600 + 5), Some((t0 + 3600, 59)));
    }

    #[test]
    fn backoff_doubles() {
        let b = Duration::from_secs(60);
        assert_eq!(backoff(b, 1), Duration::from_secs(60));
        assert_eq!(backoff(b, 2), Duration::from_secs(120));
        assert_eq!(backoff(b, 4), Duration::from_secs(480));
        assert_eq!(backoff(b, 40), Duration::from_secs(86400));
    }
}
