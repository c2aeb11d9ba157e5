//! What every job gets to work with, and how its outcome is phrased.

use std::path::PathBuf;

use tidemark_core::ids::BackupId;
use tidemark_proto::agent_service_client::AgentServiceClient;
use tidemark_proto::{BeginBackupRequest, FinishBackupRequest};
use tonic::transport::Channel;

use crate::error::AgentError;
use crate::progress::Progress;

pub struct JobContext {
    pub client: AgentServiceClient<Channel>,
    pub job_id: i64,
    pub progress: Progress,
    pub spool_dir: PathBuf,
    /// The agent's config file: a restored PostgreSQL server's restore_command names it.
    pub config_path: PathBuf,
}

impl JobContext {
    /// Record a new backup with the controller; returns its id.
    pub async fn begin_backup(&self, req: BeginBackupRequest) -> Result<BackupId, AgentError> {
        let resp = self.client.clone().begin_backup(req).await?;
        Ok(BackupId(resp.into_inner().backup_id))
    }

    /// Tell the controller a backup failed, and why; returns the job's failure (of the same
    /// kind). Best effort: if the controller cannot be told now, it fails the backup when
    /// the agent's session ends.
    pub async fn fail_backup(&self, backup: BackupId, error: AgentError) -> AgentError {
        let finish = FinishBackupRequest {
            backup_id: backup.0,
            error: error.message().to_string(),
            ..Default::default()
        };
        if let Err(s) = self.client.clone().finish_backup(finish).await {
            tracing::warn!(%backup, error = %s, "could not record the backup's failure");
        }
        error.reworded(|e| format!("backup {backup} failed: {e}"))
    }

    /// Finish a backup whose parts are all stored and checked: the job fails unless the
    /// controller then calls it complete.
    pub async fn finish_complete(&self, finish: FinishBackupRequest) -> Result<(), AgentError> {
        let backup = finish.backup_id;
        let r = self
            .client
            .clone()
            .finish_backup(finish)
            .await?
            .into_inner();
        if r.status != "complete" {
            return Err(AgentError::permanent(format!(
                "backup {backup} {}: {}",
                r.status, r.reason
            )));
        }
        Ok(())
    }
}

/// The job's outcome: its message on success, or why it failed.
pub type JobResult = Result<String, AgentError>;
