//! Job progress: stages count bytes into a shared counter, and a reporter sends it to the
//! controller once a second while the job runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tidemark_proto::agent_service_client::AgentServiceClient;
use tidemark_proto::{JobReport, JobState};
use tonic::transport::Channel;

#[derive(Clone, Default)]
pub struct Progress {
    done: Arc<AtomicU64>,
}

impl Progress {
    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Report progress of `job` every second until the returned handle is dropped.
    pub fn report_every_second(
        &self,
        mut client: AgentServiceClient<Channel>,
        job: i64,
    ) -> ReporterGuard {
        let me = self.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let report = JobReport {
                    job_id: job,
                    state: JobState::Running as i32,
                    bytes_done: me.done(),
                    // 0: the controller keeps the total it knows (the part's size).
                    bytes_total: 0,
                    message: String::new(),
                };
                if let Err(e) = client.report_job(report).await {
                    tracing::debug!(job, error = %e, "progress report failed");
                }
            }
        });
        ReporterGuard(task)
    }
}

pub struct ReporterGuard(tokio::task::JoinHandle<()>);

impl Drop for ReporterGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}
