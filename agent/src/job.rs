//! What every job gets to work with, and how its failure is phrased.

use std::path::PathBuf;

use tidemark_proto::agent_service_client::AgentServiceClient;
use tonic::transport::Channel;

use crate::progress::Progress;

pub struct JobContext {
    pub client: AgentServiceClient<Channel>,
    pub job_id: i64,
    pub progress: Progress,
    pub spool_dir: PathBuf,
}

/// Why a job failed, as the operator will read it.
#[derive(Debug)]
pub struct JobFailure(pub String);

impl<E: std::fmt::Display> From<E> for JobFailure {
    fn from(e: E) -> Self {
        JobFailure(e.to_string())
    }
}

/// The job's outcome message on success.
pub type JobResult = Result<String, JobFailure>;
