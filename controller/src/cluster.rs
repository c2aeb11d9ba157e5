//! Several controllers sharing one catalog (PostgreSQL) and one store.
//!
//! Every controller serves agents and operators. One of them, the leader, also runs the
//! scheduler and the drill dispatcher: it holds a session-level advisory lock, which the
//! database releases when the holder's session ends, so another controller takes over
//! within [`LEAD_POLL`] of the leader dying. On SQLite there is one controller, which
//! always leads.
//!
//! Besides leading, each controller keeps its row in the catalog fresh, delivers jobs that
//! other controllers created for agents connected to it, and picks up certificates revoked
//! through another controller.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tidemark_core::identity::{Identity, Role};
use tidemark_proto as pb;

use crate::catalog::JobState;
use crate::ops::OpsResult;
use crate::ops::State;

/// How often a controller not leading tries to take the lead, and the leader checks it
/// still holds it.
pub const LEAD_POLL: Duration = Duration::from_secs(2);
/// How often jobs waiting for delivery are looked for.
const DELIVERY_POLL: Duration = Duration::from_secs(1);
/// How often the controller's row is refreshed and revocations are read.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// A job no controller delivered within this long is failed.
const UNDELIVERED_SECS: i64 = 120;

/// Run the controller's part in the cluster until the process ends.
pub async fn run(state: Arc<State>, address: String) {
    if let Err(e) = state.repo.catalog.register_controller(&address).await {
        tracing::error!(error = %e, "registering this controller in the catalog");
    }
    tokio::spawn(lead(state.clone()));
    if !state.repo.catalog.shared() {
        return;
    }
    let mut beat = tokio::time::interval(HEARTBEAT);
    let mut deliver = tokio::time::interval(DELIVERY_POLL);
    loop {
        tokio::select! {
            _ = beat.tick() => {
                if let Err(e) = heartbeat(&state, &address).await {
                    tracing::error!(error = %e, "controller heartbeat");
                }
            }
            _ = deliver.tick() => {
                if let Err(e) = deliver_queued(&state).await {
                    tracing::error!(error = %e, "delivering queued jobs");
                }
            }
        }
    }
}

/// Take the lead when it is free, and give it up when the lock is lost.
async fn lead(state: Arc<State>) {
    loop {
        match state.repo.catalog.try_lead().await {
            Ok(Some(mut held)) => {
                state.leading.store(true, Ordering::Relaxed);
                if state.repo.catalog.shared() {
                    tracing::warn!(controller = %state.repo.catalog.controller_id(), "this controller now leads: it runs schedules and drills");
                }
                while held.holds().await {
                    tokio::time::sleep(LEAD_POLL).await;
                }
                state.leading.store(false, Ordering::Relaxed);
                tracing::error!(
                    "lost the lead (the catalog session ended); schedules and drills stop here until it is taken again"
                );
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "trying to take the lead"),
        }
        tokio::time::sleep(LEAD_POLL).await;
    }
}

async fn heartbeat(state: &State, address: &str) -> OpsResult<()> {
    let cat = &state.repo.catalog;
    if !cat.controller_heartbeat().await? {
        tracing::error!(
            "another controller took this one for stopped and failed its work; registering again"
        );
        cat.register_controller(address).await?;
    }
    // A certificate revoked through another controller is refused here too.
    for (fingerprint, identity) in cat.revocations().await? {
        if state.revoked.add(&fingerprint)
            && let Ok(id) = identity.parse::<Identity>()
            && matches!(id.role, Role::Agent | Role::Sandbox)
        {
            state
                .sessions
                .close(&id.name, "its certificate was revoked");
        }
    }
    if let Some(keys) = &state.repo.keys {
        match keys.refresh(cat).await {
            Ok(true) => tracing::warn!(
                data_key = keys.active_data_key(),
                "took up a key rotation made by another controller"
            ),
            Ok(false) => {}
            Err(e) => tracing::error!(
                "another controller rotated the encryption keys and this one cannot take them up (copy the new kek-N.key into its key-dir): {e}"
            ),
        }
    }
    if state.leading() {
        for id in cat.reap_stopped_controllers(UNDELIVERED_SECS).await? {
            tracing::warn!(controller = %id, "a controller stopped; its unfinished work is marked failed");
        }
    }
    Ok(())
}

/// Send jobs other controllers created for agents connected here.
async fn deliver_queued(state: &State) -> OpsResult<()> {
    let cat = &state.repo.catalog;
    let waiting = cat.undelivered_jobs().await?;
    if waiting.is_empty() {
        return Ok(());
    }
    let here = state.sessions.connected();
    for job in waiting.into_iter().filter(|j| here.contains(&j.agent)) {
        if !cat.claim_job(job.id).await? {
            continue;
        }
        let sent = match <pb::Job as prost::Message>::decode(job.spec.as_slice()) {
            Ok(mut j) => {
                j.job_id = job.id.0;
                state
                    .sessions
                    .send(&job.agent, j)
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(format!("the stored job does not decode: {e}")),
        };
        match sent {
            Ok(()) => {
                tracing::info!(job = %job.id, agent = %job.agent, "job delivered for another controller")
            }
            Err(why) => {
                cat.update_job(job.id, JobState::Failed, 0, None, &why)
                    .await?;
            }
        }
    }
    Ok(())
}
