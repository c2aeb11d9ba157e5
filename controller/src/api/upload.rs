//! Receiving one part of a backup. Each chunk is decoded and checked against its id before it
//! is stored; chunks the agent says are already stored are read back and checked too. The
//! controller rebuilds the stream's digest from the verified plaintext, in order, and the
//! part counts as stored only when that digest, the byte count and the chunk count all match
//! the agent's trailer. The response is the agent's durable acknowledgement.

use sha2::{Digest, Sha256};
use tidemark_core::chunk;
use tidemark_core::ids::{BackupId, ChunkId};
use tidemark_proto::upload_part_message::Msg;
use tidemark_proto::{EncodedChunk, PartTrailer, UploadPartMessage, UploadPartResponse};
use tonic::Streaming;

use super::State;
use super::error::{ApiError, ApiResult};
use crate::catalog::{ManifestEntry, NewChunk, PartStats};

/// Manifest lines are committed to the catalog in batches of this many.
const MANIFEST_BATCH: usize = 64;

struct PartUpload<'a> {
    state: &'a State,
    backup: BackupId,
    part: String,
    hasher: Sha256,
    stats: PartStats,
    pending: Vec<ManifestEntry>,
    pending_new: Vec<NewChunk>,
}

/// Run an upload. Any failure after the header fails the backup with the reason, except a
/// stream the agent closed early on purpose (it reports its own reason through FinishBackup).
pub async fn receive(
    state: &State,
    agent: &str,
    mut stream: Streaming<UploadPartMessage>,
) -> ApiResult<UploadPartResponse> {
    let header = match stream.message().await {
        Ok(Some(UploadPartMessage {
            msg: Some(Msg::Header(h)),
        })) => h,
        Ok(_) => {
            return Err(ApiError::InvalidArgument(
                "a part upload must start with its header".into(),
            ));
        }
        Err(status) => {
            return Err(ApiError::InvalidArgument(format!(
                "part upload broke: {}",
                status.message()
            )));
        }
    };
    let backup = BackupId(header.backup_id);
    let row = state
        .catalog
        .backup(backup)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("backup {backup} does not exist")))?;
    if row.agent != agent {
        return Err(ApiError::PermissionDenied(format!(
            "backup {backup} belongs to agent {}; agent {agent} may not write to it",
            row.agent
        )));
    }
    if row.status != "running" {
        return Err(ApiError::FailedPrecondition(format!(
            "backup {backup} is {}, not running; it takes no more data",
            row.status
        )));
    }
    match row.part(&header.part) {
        None => {
            return Err(ApiError::InvalidArgument(format!(
                "backup {backup} has no part {:?}; parts are declared when the backup begins",
                header.part
            )));
        }
        Some(p) if p.stored => {
            return Err(ApiError::FailedPrecondition(format!(
                "part {} of backup {backup} is already stored",
                p.name
            )));
        }
        Some(_) => {}
    }
    state.catalog.clear_manifest(backup, &header.part).await?;
    let mut up = PartUpload {
        state,
        backup,
        part: header.part.clone(),
        hasher: Sha256::new(),
        stats: PartStats::default(),
        pending: Vec::new(),
        pending_new: Vec::new(),
    };
    let result = up.run(&mut stream, &header.format).await;
    match &result {
        Err(Failure::EndedEarly) => {}
        Err(Failure::Api(e)) => {
            let reason = format!("storing part {} failed: {e}", header.part);
            tracing::warn!(backup = %backup, %reason);
            state.catalog.finish_backup(backup, false, &reason).await?;
        }
        Ok(_) => {}
    }
    result.map_err(|f| match f {
        Failure::EndedEarly => ApiError::FailedPrecondition(format!(
            "upload of part {} ended without its trailer; the part is not stored",
            header.part
        )),
        Failure::Api(e) => e,
    })
}

enum Failure {
    /// The agent closed the stream without a trailer.
    EndedEarly,
    Api(ApiError),
}

impl<E: Into<ApiError>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Api(e.into())
    }
}

impl PartUpload<'_> {
    async fn run(
        &mut self,
        stream: &mut Streaming<UploadPartMessage>,
        format: &str,
    ) -> Result<UploadPartResponse, Failure> {
        loop {
            let msg = match stream.message().await {
                Ok(Some(m)) => m.msg,
                Ok(None) => return Err(Failure::EndedEarly),
                Err(status) => {
                    return Err(ApiError::FailedPrecondition(format!(
                        "upload interrupted: {}",
                        status.message()
                    ))
                    .into());
                }
            };
            match msg {
                Some(Msg::Chunk(c)) => self.chunk(c).await?,
                Some(Msg::Trailer(t)) => return self.finish(t, format).await,
                Some(Msg::Header(_)) | None => {
                    return Err(ApiError::InvalidArgument(
                        "unexpected message in a part upload".into(),
                    )
                    .into());
                }
            }
        }
    }

    async fn chunk(&mut self, c: EncodedChunk) -> Result<(), Failure> {
        let id =
            ChunkId::from_slice(&c.id).map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
        let plain_len = if c.data.is_empty() {
            // A dedup hit: the agent trusts our copy, so check it is really there and intact.
            let stored = self.state.read_chunk(&id).await?;
            self.hasher.update(&stored.plaintext);
            stored.plaintext.len()
        } else {
            let (data, hasher) = (c.data, std::mem::take(&mut self.hasher));
            let (data, hasher, decoded) = tokio::task::spawn_blocking(move || {
                let mut hasher = hasher;
                let decoded = chunk::decode(&id, &data).map(|p| {
                    hasher.update(&p);
                    p.len()
                });
                (data, hasher, decoded)
            })
            .await
            .map_err(|e| ApiError::InvalidArgument(format!("decoding chunk {id}: {e}")))?;
            self.hasher = hasher;
            let len = decoded.map_err(|e| {
                ApiError::InvalidArgument(format!(
                    "{e}; the chunk was rejected, nothing was stored for it"
                ))
            })?;
            if self.state.store.put(&id, &data).await? {
                self.stats.new_chunks += 1;
                self.stats.new_bytes += data.len() as u64;
            }
            // Recorded even when another backup stored it first: the row is idempotent.
            self.pending_new.push(NewChunk {
                id,
                raw_len: len as u32,
                stored_len: data.len() as u64,
            });
            len
        };
        if plain_len != c.raw_len as usize {
            return Err(ApiError::InvalidArgument(format!(
                "chunk {id} is {plain_len} bytes but was announced as {}",
                c.raw_len
            ))
            .into());
        }
        self.pending.push(ManifestEntry {
            seq: self.stats.chunks,
            id,
            raw_len: c.raw_len,
        });
        self.stats.chunks += 1;
        self.stats.raw_bytes += plain_len as u64;
        if self.pending.len() >= MANIFEST_BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Failure> {
        self.state
            .catalog
            .add_manifest(self.backup, &self.part, &self.pending, &self.pending_new)
            .await?;
        self.pending.clear();
        self.pending_new.clear();
        Ok(())
    }

    async fn finish(
        &mut self,
        t: PartTrailer,
        format: &str,
    ) -> Result<UploadPartResponse, Failure> {
        let digest: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
        let mismatch = |what: String| {
            Failure::Api(ApiError::InvalidArgument(format!(
                "part {} does not add up: {what}; it is not stored",
                self.part
            )))
        };
        if t.chunk_count != self.stats.chunks {
            return Err(mismatch(format!(
                "agent sent {} chunks, trailer says {}",
                self.stats.chunks, t.chunk_count
            )));
        }
        if t.raw_bytes != self.stats.raw_bytes {
            return Err(mismatch(format!(
                "received {} bytes, trailer says {}",
                self.stats.raw_bytes, t.raw_bytes
            )));
        }
        if t.stream_sha256.as_slice() != digest.as_slice() {
            return Err(mismatch(format!(
                "stream digest of the stored chunks is {}, the agent read {}",
                hex::encode(digest),
                hex::encode(&t.stream_sha256)
            )));
        }
        self.flush().await?;
        self.stats.stream_sha256 = hex::encode(digest);
        self.state
            .catalog
            .mark_part_stored(self.backup, &self.part, format, &self.stats)
            .await?;
        tracing::info!(backup = %self.backup, part = %self.part, bytes = self.stats.raw_bytes,
            chunks = self.stats.chunks, new_bytes = self.stats.new_bytes, "part stored");
        Ok(UploadPartResponse {
            chunks: self.stats.chunks,
            new_chunks: self.stats.new_chunks,
            new_bytes: self.stats.new_bytes,
            raw_bytes: self.stats.raw_bytes,
        })
    }
}
