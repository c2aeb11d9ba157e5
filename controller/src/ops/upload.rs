//! Receiving one part of a backup: the backup must be running and the part declared and not
//! yet stored; the repository checks and stores the chunks (see `repo::ingest`), and the
//! part counts as stored only once the catalog marks it so. Any failure after the header
//! fails the backup with the reason.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures::Stream;
use tidemark_core::ids::BackupId;
use tidemark_proto::{PartHeader, UploadPartMessage, UploadPartResponse};

use super::State;
use super::{OpsError, OpsResult};
use crate::catalog::{BackupStatus, PartStats};
use crate::repo::ingest::{ChunkReceiver, IngestError, Sink};

/// Run an upload. Any failure after the header fails the backup with the reason, except a
/// stream the agent closed early on purpose (it reports its own reason through FinishBackup).
pub async fn receive(
    state: &Arc<State>,
    agent: &str,
    header: PartHeader,
    stream: &mut (impl Stream<Item = Result<UploadPartMessage, String>> + Unpin),
) -> OpsResult<UploadPartResponse> {
    let backup = BackupId(header.backup_id);
    let row = state.backup(backup).await?;
    if row.agent != agent {
        return Err(OpsError::PermissionDenied(format!(
            "backup {backup} belongs to agent {}; agent {agent} may not write to it",
            row.agent
        )));
    }
    if row.status != BackupStatus::Running {
        return Err(OpsError::FailedPrecondition(format!(
            "backup {backup} is {}, not running; it takes no more data",
            row.status
        )));
    }
    match row.part(&header.part) {
        None => {
            return Err(OpsError::InvalidArgument(format!(
                "backup {backup} has no part {:?}; parts are declared when the backup begins",
                header.part
            )));
        }
        Some(p) if p.stored => {
            return Err(OpsError::FailedPrecondition(format!(
                "part {} of backup {backup} is already stored",
                p.name
            )));
        }
        Some(_) => {}
    }
    let _claim = state.uploading.claim(
        format!("backup {backup} part {}", header.part),
        StreamKind::Part,
    )?;
    state
        .repo
        .catalog
        .clear_manifest(backup, &header.part)
        .await?;
    let mut up = ChunkReceiver::new(
        &state.repo,
        agent,
        format!("part {}", header.part),
        Sink::Part {
            backup,
            part: header.part.clone(),
        },
    );
    let received = match up.run(stream).await {
        Ok(_) => up.commit(None).await,
        Err(e) => Err(e),
    };
    let result = match received {
        Ok(stats) => mark_stored(state, backup, &header.part, &header.format, stats).await,
        Err(IngestError::EndedEarly) => {
            return Err(OpsError::FailedPrecondition(format!(
                "upload of part {} ended without its trailer; the part is not stored",
                header.part
            )));
        }
        Err(e) => Err(e.into()),
    };
    if let Err(e) = &result {
        let reason = format!("storing part {} failed: {e}", header.part);
        tracing::warn!(backup = %backup, %reason);
        state
            .repo
            .catalog
            .finish_backup(backup, false, &reason)
            .await?;
    }
    result
}

async fn mark_stored(
    state: &State,
    backup: BackupId,
    part: &str,
    format: &str,
    stats: PartStats,
) -> OpsResult<UploadPartResponse> {
    if !state
        .repo
        .catalog
        .mark_part_stored(backup, part, format, &stats)
        .await?
    {
        return Err(OpsError::FailedPrecondition(format!(
            "backup {backup} finished, or its part {part} was stored, while this upload ran"
        )));
    }
    tracing::info!(backup = %backup, part = %part, bytes = stats.raw_bytes,
        chunks = stats.chunks, new_bytes = stats.new_bytes, "part stored");
    Ok(UploadPartResponse {
        chunks: stats.chunks,
        new_chunks: stats.new_chunks,
        new_bytes: stats.new_bytes,
        raw_bytes: stats.raw_bytes,
    })
}

/// The streams being received, by what they write ("backup 3 part db:app", a WAL file), and
/// the slots for archived files. A second upload of a part while the first runs would clear
/// the first one's manifest lines under it; two pushes of one WAL file would race to record
/// it. Each stream holds up to two packs and 8 MiB of chunks in memory (about 50 MiB): the
/// number of archived files received at once is bounded, so memory does not grow with the
/// number of hosts pushing. A push past the limit is refused at once as unavailable (the
/// agent tries again, and PostgreSQL after it), never parked: a parked stream would still
/// fill its connection's HTTP/2 window and could stall the streams that hold the slots.
/// Backup parts, as many as backups run, are not limited here.
pub struct ActiveUploads {
    claims: Mutex<HashSet<String>>,
    logs: tokio::sync::Semaphore,
    log_slots: usize,
}

/// What a stream writes: a backup part, or an archived WAL file or binlog.
#[derive(Debug, Clone, Copy)]
pub enum StreamKind {
    Part,
    Log,
}

pub struct UploadClaim<'a> {
    uploads: &'a ActiveUploads,
    key: String,
    _slot: Option<tokio::sync::SemaphorePermit<'a>>,
}

impl ActiveUploads {
    pub fn new(logs: usize) -> Self {
        Self {
            claims: Mutex::default(),
            logs: tokio::sync::Semaphore::new(logs.max(1)),
            log_slots: logs.max(1),
        }
    }

    /// Claim `key`: refused at once when it is being uploaded, or, for an archived file,
    /// when every slot is taken.
    pub fn claim(&self, key: String, kind: StreamKind) -> OpsResult<UploadClaim<'_>> {
        let slot = match kind {
            StreamKind::Part => None,
            StreamKind::Log => Some(self.logs.try_acquire().map_err(|_| {
                tracing::info!(upload = %key, slots = self.log_slots, "busy: a push was refused for now");
                OpsError::Busy(format!(
                    "the controller is receiving {} archived files already; {key} is refused for now, try again",
                    self.log_slots
                ))
            })?),
        };
        if !self.claims.lock().unwrap().insert(key.clone()) {
            return Err(OpsError::FailedPrecondition(format!(
                "{key} is already being uploaded"
            )));
        }
        Ok(UploadClaim {
            uploads: self,
            key,
            _slot: slot,
        })
    }
}

impl Drop for UploadClaim<'_> {
    fn drop(&mut self) {
        self.uploads.claims.lock().unwrap().remove(&self.key);
    }
}
