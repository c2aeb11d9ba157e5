//! Agents connected right now, each with its job stream. When a job stream closes (the
//! agent stopped, crashed or lost its network), the work it was doing cannot finish: its
//! running jobs and backups are failed at once rather than left looking alive.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use super::{OpsError, OpsResult};
use crate::catalog::Catalog;
use futures::Stream;
use tidemark_proto::Job;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Why the controller closed an agent's job stream (its certificate was revoked, say): the
/// stream's last item.
#[derive(Debug)]
pub struct Closed(pub String);

struct Session {
    id: u64,
    tx: mpsc::Sender<Result<Job, Closed>>,
}

#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Session>>,
    next_id: AtomicU64,
}

impl Sessions {
    pub fn new_session_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn is_connected(&self, agent: &str) -> bool {
        self.live
            .lock()
            .unwrap()
            .get(agent)
            .is_some_and(|s| !s.tx.is_closed())
    }

    /// The agents connected to this controller.
    pub fn connected(&self) -> Vec<String> {
        self.live
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| !s.tx.is_closed())
            .map(|(a, _)| a.clone())
            .collect()
    }

    /// End `agent`'s job stream now, telling it why.
    pub fn close(&self, agent: &str, why: &str) {
        if let Some(s) = self.live.lock().unwrap().remove(agent) {
            let _ = s.tx.try_send(Err(Closed(why.to_string())));
        }
    }

    /// Open the job stream of `agent`, replacing an older one.
    pub fn attach(self: &Arc<Self>, agent: &str, id: u64, catalog: Catalog) -> JobStream {
        let (tx, rx) = mpsc::channel(16);
        self.live
            .lock()
            .unwrap()
            .insert(agent.to_string(), Session { id, tx });
        JobStream {
            rx: ReceiverStream::new(rx),
            _guard: DetachGuard {
                sessions: self.clone(),
                agent: agent.to_string(),
                id,
                catalog,
            },
        }
    }

    /// Send `job` down `agent`'s job stream on this controller.
    pub async fn send(&self, agent: &str, job: Job) -> OpsResult<()> {
        let tx = self.live.lock().unwrap().get(agent).map(|s| s.tx.clone());
        let not_connected = || {
            OpsError::FailedPrecondition(format!(
                "agent {agent} is not connected; start tidemark-agent on that host (tidemark agents shows who is)"
            ))
        };
        tx.ok_or_else(not_connected)?
            .send(Ok(job))
            .await
            .map_err(|_| not_connected())
    }
}

struct DetachGuard {
    sessions: Arc<Sessions>,
    agent: String,
    id: u64,
    catalog: Catalog,
}

impl Drop for DetachGuard {
    fn drop(&mut self) {
        let current = {
            let mut live = self.sessions.live.lock().unwrap();
            match live.get(&self.agent) {
                Some(s) if s.id == self.id => live.remove(&self.agent).is_some(),
                _ => false,
            }
        };
        if !current {
            return; // replaced by a newer connection of the same agent
        }
        let (agent, catalog) = (self.agent.clone(), self.catalog.clone());
        tracing::warn!(agent = %agent, "agent disconnected");
        tokio::spawn(async move {
            if let Err(e) = catalog.hold_agent(&agent, false).await {
                tracing::error!(error = %e, "recording a disconnected agent");
            }
            let reason = format!("agent {agent} disconnected while this was running");
            if let Err(e) = catalog.fail_jobs_of_agent(&agent, &reason).await {
                tracing::error!(error = %e, "failing jobs of a disconnected agent");
            }
            if let Err(e) = catalog.fail_backups_of_agent(&agent, &reason).await {
                tracing::error!(error = %e, "failing backups of a disconnected agent");
            }
            let why = format!("sandbox {agent} disconnected during the drill");
            if let Err(e) = catalog.abort_running_drills(Some(&agent), &why).await {
                tracing::error!(error = %e, "aborting drills of a disconnected sandbox");
            }
        });
    }
}

/// The server side of an agent's job stream; dropping it detaches the session.
pub struct JobStream {
    rx: ReceiverStream<Result<Job, Closed>>,
    _guard: DetachGuard,
}

impl Stream for JobStream {
    type Item = Result<Job, Closed>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.rx).poll_next(cx)
    }
}
