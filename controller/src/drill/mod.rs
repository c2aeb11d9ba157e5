//! Drills: prove, for each instance, that a base backup plus its archived WAL restores to a
//! past second and that the data there is right.
//!
//! A drill is queued with its target fixed, then dispatched to an idle sandbox of the same
//! major version as soon as one is free. The sandbox restores, recovers, runs the smoke
//! checks and reports raw evidence; the controller judges it (`judge`) against the checks
//! and the production samples, which never leave the controller.

mod dispatch;
pub mod judge;
pub mod target;

use std::collections::HashMap;

use tidemark_core::identity::Role;
use tidemark_core::ids::JobId;
use tidemark_core::timefmt::pg_timestamp;
use tidemark_proto as pb;

use crate::catalog::{AgentRow, DrillRow, DrillState, Engine, InstanceRow};
use crate::config::Expect;
use crate::ops::State;
pub use crate::ops::drills::Drills;
use crate::ops::{OpsError, OpsResult};
pub use dispatch::run_dispatcher;
use target::{Span, TargetSpec};

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn sandboxes_for(agents: &[AgentRow], engine: Engine, major: u32) -> Vec<&AgentRow> {
    agents
        .iter()
        .filter(|a| a.role == Role::Sandbox.as_str())
        .filter(|a| {
            a.sandbox_engines
                .iter()
                .any(|(e, m)| *e == engine && *m == major)
        })
        .collect()
}

/// `tidemark drill run`: one instance's drill, or every instance's (`--all`), where one that
/// cannot be drilled is recorded as a failed drill with the reason, so that it shows in the
/// history and the alerts.
pub async fn request_run(
    state: &State,
    r: &pb::StartDrillRequest,
) -> OpsResult<pb::StartDrillResponse> {
    let spec = TargetSpec::parse(&r.target).map_err(OpsError::InvalidArgument)?;
    let mut drills = Vec::new();
    if r.all {
        if !r.instance.is_empty() {
            return Err(OpsError::InvalidArgument(
                "give --instance NAME or --all, not both".into(),
            ));
        }
        // Every instance is tried; one that cannot be drilled is recorded as a failed
        // drill with the reason, so it shows in the history and the alerts.
        for agent in state.repo.catalog.agents().await? {
            for inst in &agent.instances {
                match request(state, inst, &spec, &r.sandbox).await {
                    Ok(d) => drills.push(crate::ops::status::drill_info(&d)),
                    Err(e) => {
                        let cat = &state.repo.catalog;
                        let id = cat.create_drill(&inst.name, 0, "", &r.sandbox).await?;
                        cat.end_drill(id, DrillState::Failed, &e.to_string())
                            .await?;
                        if let Some(d) = cat.drill(id).await? {
                            drills.push(crate::ops::status::drill_info(&d));
                        }
                    }
                }
            }
        }
    } else {
        let inst = crate::ops::instance(state, &r.instance).await?;
        let d = request(state, &inst, &spec, &r.sandbox).await?;
        drills.push(crate::ops::status::drill_info(&d));
    }
    Ok(pb::StartDrillResponse { drills })
}

/// Queue a drill of `inst`, its target fixed now. Refused with the reason when it could
/// not run: no restorable window, a target outside it, no sandbox of its version.
pub async fn request(
    state: &State,
    inst: &InstanceRow,
    spec: &TargetSpec,
    sandbox: &str,
) -> OpsResult<DrillRow> {
    let major = inst.engine.series(&inst.server_version).ok_or_else(|| {
        OpsError::FailedPrecondition(format!(
            "instance {}'s server version is unknown (its agent could not reach it); a drill needs a sandbox of the same major version",
            inst.name
        ))
    })?;
    let agents = state.repo.catalog.agents().await?;
    let fit = sandboxes_for(&agents, inst.engine, major);
    if !sandbox.is_empty() {
        let name = sandbox.strip_prefix("sandbox:").unwrap_or(sandbox);
        match agents.iter().find(|a| a.name == name) {
            Some(a) if a.role != Role::Sandbox.as_str() => {
                return Err(OpsError::InvalidArgument(format!(
                    "{name} is an agent, not a sandbox; drills run only on hosts with a sandbox certificate"
                )));
            }
            Some(a) if !fit.iter().any(|f| f.name == a.name) => {
                return Err(OpsError::FailedPrecondition(format!(
                    "sandbox {name} cannot run {} {} (it offers {})",
                    inst.engine,
                    inst.engine.show_series(major),
                    a.sandbox_engines
                        .iter()
                        .map(|(e, m)| format!("{e} {}", e.show_series(*m)))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            None => {
                return Err(OpsError::NotFound(format!(
                    "no sandbox {name:?} has registered; tidemark agents lists them"
                )));
            }
            Some(_) => {}
        }
    } else if fit.is_empty() {
        return Err(OpsError::FailedPrecondition(format!(
            "no sandbox for {} {} has registered; start tidemark-agent with a sandbox certificate and a [sandbox] section on a host with that version",
            inst.engine,
            inst.engine.show_series(major)
        )));
    }
    let w = crate::ops::window::recovery_window(state, inst).await?;
    let (bounds, describe) = (
        w.oldest().zip(w.newest()).map(|(o, n)| (o.time, n.time)),
        w.describe(),
    );
    let Some((oldest, newest)) = bounds else {
        return Err(OpsError::FailedPrecondition(format!(
            "instance {} cannot be drilled: {describe}",
            inst.name
        )));
    };
    let span = Span {
        oldest: target::micros(oldest),
        newest: target::micros(newest),
    };
    let now = now_micros();
    let (at, why) = target::choose(spec, span, now, now as u64 ^ inst.name.len() as u64)
        .map_err(|e| OpsError::FailedPrecondition(format!("instance {}: {e}", inst.name)))?;
    let sandbox = sandbox.strip_prefix("sandbox:").unwrap_or(sandbox);
    let id = state
        .repo
        .catalog
        .create_drill(&inst.name, at, &why, sandbox)
        .await?;
    tracing::info!(drill = id, instance = %inst.name, target = %pg_timestamp(at), reason = %why, "drill queued");
    state.drills.wake();
    Ok(state.repo.catalog.drill(id).await?.expect("just created"))
}

/// The sandbox's evidence has arrived: judge it and record the outcome.
pub async fn report(state: &State, sandbox: &str, r: &pb::DrillReport) -> OpsResult<()> {
    let d = state
        .repo
        .catalog
        .drill(r.drill_id)
        .await?
        .ok_or_else(|| OpsError::NotFound(format!("drill {} does not exist", r.drill_id)))?;
    if d.sandbox != sandbox || d.state != DrillState::Running {
        return Err(OpsError::PermissionDenied(format!(
            "drill {} is not running on sandbox {sandbox}",
            d.id
        )));
    }
    let inst = crate::ops::instance(state, &d.instance).await?;
    let backup = d.backup_id.ok_or_else(|| {
        OpsError::Catalog(crate::catalog::CatalogError::Corrupt(format!(
            "running drill {} has no backup",
            d.id
        )))
    })?;
    let corrupt = |what: &str| {
        OpsError::Catalog(crate::catalog::CatalogError::Corrupt(format!(
            "drill {}'s backup {backup} has no {what}",
            d.id
        )))
    };
    // Where recovery started, to judge where it stopped: held here, lent to the judge.
    let base;
    let coords;
    let start = match inst.engine {
        Engine::Postgresql => {
            base = state.repo.catalog.base_backup(backup).await?;
            judge::Start::Wal {
                base: base.as_ref().ok_or_else(|| corrupt("WAL positions"))?,
                seg_size: inst.segment_size(),
            }
        }
        Engine::Mariadb => {
            coords = state.repo.catalog.binlog_coordinates(backup).await?;
            judge::Start::Binlog {
                coords: coords.as_ref().ok_or_else(|| corrupt("binlog position"))?,
                base_name: inst.binlog_base(),
            }
        }
    };
    let checks = state.drills.checks(&d.instance);
    let mut samples = HashMap::new();
    for c in checks {
        if matches!(c.expect, Expect::WithinPct(_))
            && let Some(s) = state
                .repo
                .catalog
                .sample_before(&d.instance, &c.name, d.target)
                .await?
        {
            samples.insert(c.name.clone(), s);
        }
    }
    let target_secs = d.target / 1_000_000;
    let archived_before_target = state
        .repo
        .catalog
        .wal_segments(&d.instance)
        .await?
        .iter()
        .map(|s| s.modified_at)
        .filter(|t| *t <= target_secs)
        .max();
    let switch = if inst.archive_timeout > 0 {
        std::time::Duration::from_secs(inst.archive_timeout)
    } else {
        state.drills.settings.switch_interval
    };
    let judged = judge::judge(
        &judge::Context {
            target: d.target,
            start,
            switch_interval: switch,
            checks,
            samples: &samples,
            archived_before_target,
            notes: &d.notes,
        },
        r,
    );
    state
        .repo
        .catalog
        .finish_drill(d.id, judged.state, &judged.evidence, &judged.reason)
        .await?;
    tracing::info!(drill = d.id, instance = %d.instance, state = judged.state.as_str(), reason = %judged.reason, rto_ms = r.rto_ms, "drill finished");
    state.drills.wake();
    Ok(())
}

/// A drill job ended. A drill still running has no verdict: the sandbox failed before it
/// could report, so the job's message is the reason.
pub async fn job_ended(state: &State, job: JobId, ok: bool, message: &str) -> OpsResult<()> {
    if let Some(d) = state.repo.catalog.drill_of_job(job).await?
        && d.state == DrillState::Running
    {
        let reason = if ok {
            "the sandbox finished without reporting evidence".to_string()
        } else {
            message.to_string()
        };
        state
            .repo
            .catalog
            .end_drill(d.id, DrillState::Failed, &reason)
            .await?;
    }
    state.drills.wake();
    Ok(())
}
