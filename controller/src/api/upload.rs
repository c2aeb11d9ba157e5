//! Receiving one part of a backup. Each chunk is decoded and checked against its id before it
//! is stored; chunks the agent says are already stored are read back and checked too. The
//! controller rebuilds the stream's digest from the verified plaintext, in order, and the
//! part counts as stored only when that digest, the byte count and the chunk count all match
//! the agent's trailer. The response is the agent's durable acknowledgement.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tidemark_core::ids::{BackupId, ChunkId};
use tidemark_proto::upload_part_message::Msg;
use tidemark_proto::{EncodedChunk, PartTrailer, UploadPartMessage, UploadPartResponse};
use tokio::task::JoinHandle;
use tonic::Streaming;

use super::State;
use super::error::{ApiError, ApiResult};
use crate::catalog::{ManifestEntry, NewChunk, PartStats};
use crate::pack::{PackBuilder, PackLoc};
use crate::store::StoreError;
use crate::store::verified;

/// Manifest lines are committed to the catalog in batches of this many at most (a batch
/// ends sooner when its pack is full).
const MANIFEST_BATCH: usize = 1024;
/// Chunks being checked and stored at once, per upload (each holds up to 8 MiB).
const IN_FLIGHT: usize = 4;

/// Where a verified stream's manifest lines go.
pub(super) enum Sink {
    /// A backup part: lines are committed in batches while the upload runs (a part can be
    /// any size), and count only once the part is marked stored.
    Part { backup: BackupId, part: String },
    /// Kept in memory and committed by the caller in one transaction (a WAL file: a few
    /// dozen lines).
    Memory {
        entries: Vec<ManifestEntry>,
        new: Vec<NewChunk>,
    },
}

/// Receives the chunks of one stream: verifies each, stores it, rebuilds the stream digest
/// in order, and checks the trailer.
pub(super) struct ChunkReceiver {
    state: Arc<State>,
    agent: String,
    /// Ids whose bytes arrived in this upload: references to them need no ownership check.
    uploaded_here: HashSet<Vec<u8>>,
    /// What is being received, for messages ("part db:app", "WAL file 0000...").
    label: String,
    hasher: Sha256,
    stats: PartStats,
    pending: Vec<ManifestEntry>,
    pending_new: Vec<NewChunk>,
    /// New chunks waiting to be stored together.
    pack: PackBuilder,
    /// Chunks this upload stored, and where (the catalog learns of them at the next flush,
    /// or, for a WAL file, when the caller commits).
    packed: HashMap<ChunkId, PackLoc>,
    /// The previous batch: its pack being written, and its manifest lines.
    writing: Option<Writing>,
    pub(super) sink: Sink,
}

/// A pack being written while the next one fills, and the batch that waits for it.
struct Writing {
    put: Option<JoinHandle<Result<(), StoreError>>>,
    /// The chunks in it: a reference to one waits until it is durable.
    chunks: HashSet<ChunkId>,
    entries: Vec<ManifestEntry>,
    new: Vec<NewChunk>,
}

impl Drop for ChunkReceiver {
    /// A failed upload stops writing its pack; what was written is unreferenced garbage.
    fn drop(&mut self) {
        if let Some(put) = self.writing.as_ref().and_then(|w| w.put.as_ref()) {
            put.abort();
        }
    }
}

/// Run an upload. Any failure after the header fails the backup with the reason, except a
/// stream the agent closed early on purpose (it reports its own reason through FinishBackup).
pub async fn receive(
    state: &Arc<State>,
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
    let row = state.backup(backup).await?;
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
    let _claim = state
        .uploading
        .claim(format!("backup {backup} part {}", header.part))?;
    state.catalog.clear_manifest(backup, &header.part).await?;
    let mut up = ChunkReceiver::new(
        state,
        agent,
        format!("part {}", header.part),
        Sink::Part {
            backup,
            part: header.part.clone(),
        },
    );
    let result = match up.run(&mut stream).await {
        Ok(stats) => mark_stored(state, backup, &header.part, &header.format, stats)
            .await
            .map_err(Failure::Api),
        Err(f) => Err(f),
    };
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

async fn mark_stored(
    state: &State,
    backup: BackupId,
    part: &str,
    format: &str,
    stats: PartStats,
) -> ApiResult<UploadPartResponse> {
    if !state
        .catalog
        .mark_part_stored(backup, part, format, &stats)
        .await?
    {
        return Err(ApiError::FailedPrecondition(format!(
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

/// The streams being received, by what they write ("backup 3 part db:app", a WAL file). A
/// second upload of a part while the first runs would clear the first one's manifest lines
/// under it; two pushes of one WAL file would race to record it.
#[derive(Default)]
pub struct ActiveUploads(Mutex<HashSet<String>>);

pub struct UploadClaim<'a> {
    uploads: &'a ActiveUploads,
    key: String,
}

impl ActiveUploads {
    pub fn claim(&self, key: String) -> ApiResult<UploadClaim<'_>> {
        if !self.0.lock().unwrap().insert(key.clone()) {
            return Err(ApiError::FailedPrecondition(format!(
                "{key} is already being uploaded"
            )));
        }
        Ok(UploadClaim { uploads: self, key })
    }
}

impl Drop for UploadClaim<'_> {
    fn drop(&mut self) {
        self.uploads.0.lock().unwrap().remove(&self.key);
    }
}

/// A chunk checked against its id: new bytes from the agent, or a stored copy found intact.
struct Checked {
    id: ChunkId,
    plaintext: Vec<u8>,
    /// The encoded bytes the agent sent (None for a dedup reference): they go into a pack.
    encoded: Option<Vec<u8>>,
}

/// Where the copy a dedup reference points at is.
enum Original {
    /// In this upload's pack, not yet stored: its encoded bytes.
    Pending(Vec<u8>),
    /// Stored by this upload, not yet in the catalog.
    Packed(PackLoc),
    /// Wherever the catalog says.
    Catalog,
}

/// Verify one uploaded chunk. Runs concurrently with its neighbours, so that decoding,
/// hashing and store reads overlap; results are taken back in stream order.
async fn check(state: Arc<State>, c: EncodedChunk, original: Original) -> ApiResult<Checked> {
    let id = ChunkId::from_slice(&c.id).map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
    let checked = if c.data.is_empty() {
        // A dedup hit: the agent trusts our copy, so check it is really there and intact.
        let plaintext = match original {
            Original::Pending(encoded) => decode(id, encoded).await?.1,
            Original::Packed(loc) => {
                verified::get(state.store.as_ref(), state.keys.as_deref(), &id, Some(&loc))
                    .await?
                    .plaintext
            }
            Original::Catalog => state.read_chunk(&id).await?.plaintext,
        };
        Checked {
            id,
            plaintext,
            encoded: None,
        }
    } else {
        let (encoded, plaintext) = decode(id, c.data).await?;
        Checked {
            id,
            plaintext,
            encoded: Some(encoded),
        }
    };
    if checked.plaintext.len() != c.raw_len as usize {
        return Err(ApiError::InvalidArgument(format!(
            "chunk {id} is {} bytes but was announced as {}",
            checked.plaintext.len(),
            c.raw_len
        )));
    }
    Ok(checked)
}

/// Check an encoded chunk the agent sent against its id; returns (encoded, plaintext).
async fn decode(id: ChunkId, encoded: Vec<u8>) -> ApiResult<(Vec<u8>, Vec<u8>)> {
    let c = verified::decode(id, encoded)
        .await
        .map_err(|e| ApiError::InvalidArgument(format!("decoding chunk {id}: {e}")))?
        .map_err(|e| {
            ApiError::InvalidArgument(format!(
                "{e}; the chunk was rejected, nothing was stored for it"
            ))
        })?;
    Ok((c.encoded, c.plaintext))
}

async fn joined(task: JoinHandle<ApiResult<Checked>>) -> ApiResult<Checked> {
    task.await
        .map_err(|e| ApiError::InvalidArgument(format!("chunk task failed: {e}")))?
}

pub(super) enum Failure {
    /// The agent closed the stream without a trailer.
    EndedEarly,
    Api(ApiError),
}

impl<E: Into<ApiError>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Api(e.into())
    }
}

impl ChunkReceiver {
    pub(super) fn new(state: &Arc<State>, agent: &str, label: String, sink: Sink) -> Self {
        Self {
            state: state.clone(),
            agent: agent.to_string(),
            uploaded_here: HashSet::new(),
            label,
            hasher: Sha256::new(),
            stats: PartStats::default(),
            pending: Vec::new(),
            pending_new: Vec::new(),
            pack: PackBuilder::default(),
            packed: HashMap::new(),
            writing: None,
            sink,
        }
    }

    /// Receive chunks up to and including the trailer. Returns the stream's statistics, its
    /// digest included, once the trailer matched what was received.
    pub(super) async fn run(
        &mut self,
        stream: &mut Streaming<UploadPartMessage>,
    ) -> Result<PartStats, Failure> {
        // Each task with the id of the chunk it checks.
        let mut in_flight: VecDeque<(Vec<u8>, JoinHandle<ApiResult<Checked>>)> = VecDeque::new();
        loop {
            let msg = match stream.message().await {
                Ok(Some(m)) => m.msg,
                Ok(None) => {
                    // A chunk already received may still prove bad; that is the failure then.
                    while let Some((_, done)) = in_flight.pop_front() {
                        joined(done).await?;
                    }
                    return Err(Failure::EndedEarly);
                }
                Err(status) => {
                    return Err(ApiError::FailedPrecondition(format!(
                        "upload interrupted: {}",
                        status.message()
                    ))
                    .into());
                }
            };
            match msg {
                Some(Msg::Chunk(c)) => {
                    // A reference to a chunk whose first copy is still being stored must
                    // wait for it (repetitive data repeats chunks back to back).
                    let waits_for_copy =
                        c.data.is_empty() && in_flight.iter().any(|(id, _)| *id == c.id);
                    while in_flight.len() >= IN_FLIGHT || (waits_for_copy && !in_flight.is_empty())
                    {
                        let (_, done) = in_flight.pop_front().expect("non-empty");
                        self.absorb(joined(done).await?).await?;
                    }
                    self.check_reference(&c).await?;
                    if c.data.is_empty()
                        && let Ok(id) = ChunkId::from_slice(&c.id)
                        && self
                            .writing
                            .as_ref()
                            .is_some_and(|w| w.chunks.contains(&id))
                    {
                        self.settle().await?;
                    }
                    let original = self.original_of(&c);
                    let id = c.id.clone();
                    in_flight.push_back((id, tokio::spawn(check(self.state.clone(), c, original))));
                }
                Some(Msg::Trailer(t)) => {
                    while let Some((_, done)) = in_flight.pop_front() {
                        self.absorb(joined(done).await?).await?;
                    }
                    return self.finish(t).await;
                }
                Some(Msg::Header(_)) | Some(Msg::Wal(_)) | None => {
                    return Err(ApiError::InvalidArgument(
                        "unexpected message in a part upload".into(),
                    )
                    .into());
                }
            }
        }
    }

    /// An agent may refer only to chunks it uploaded itself. A chunk id is a content hash;
    /// knowing one must not let an agent read what another host stored.
    async fn check_reference(&mut self, c: &EncodedChunk) -> ApiResult<()> {
        if !c.data.is_empty() {
            self.uploaded_here.insert(c.id.clone());
            return Ok(());
        }
        if self.uploaded_here.contains(&c.id) {
            return Ok(());
        }
        let id =
            ChunkId::from_slice(&c.id).map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
        if self.state.catalog.chunk_owned_by(&id, &self.agent).await? {
            Ok(())
        } else {
            Err(ApiError::PermissionDenied(format!(
                "agent {} refers to chunk {id}, which it never uploaded; send the chunk's bytes",
                self.agent
            )))
        }
    }

    /// Where the copy a dedup reference in this upload points at is.
    fn original_of(&self, c: &EncodedChunk) -> Original {
        if !c.data.is_empty() {
            return Original::Catalog;
        }
        let Ok(id) = ChunkId::from_slice(&c.id) else {
            return Original::Catalog;
        };
        if let Some(encoded) = self.pack.get(&id) {
            Original::Pending(encoded.to_vec())
        } else if let Some(loc) = self.packed.get(&id) {
            Original::Packed(loc.clone())
        } else {
            Original::Catalog
        }
    }

    /// Take a checked chunk into the part, in stream order.
    async fn absorb(&mut self, checked: Checked) -> Result<(), Failure> {
        self.hasher.update(&checked.plaintext);
        if let Some(encoded) = checked.encoded {
            // The same bytes sent twice in one upload are packed once.
            if self.pack.get(&checked.id).is_none() && !self.packed.contains_key(&checked.id) {
                self.stats.new_chunks += 1;
                self.pending_new.push(NewChunk {
                    id: checked.id,
                    raw_len: checked.plaintext.len() as u32,
                    stored_len: 0,
                    pack: None,
                });
                self.pack.add(checked.id, encoded);
            }
        }
        self.pending.push(ManifestEntry {
            seq: self.stats.chunks,
            id: checked.id,
            raw_len: checked.plaintext.len() as u32,
        });
        self.stats.chunks += 1;
        self.stats.raw_bytes += checked.plaintext.len() as u64;
        if self.pack.is_full() || self.pending.len() >= MANIFEST_BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    /// Close the batch: start writing the pack being filled, and commit the previous
    /// batch once its pack is durable. One pack is written while the next fills, so the
    /// stream keeps flowing; a manifest line is committed only once every chunk it needs is
    /// durable, and batches are committed in order.
    async fn flush(&mut self) -> Result<(), Failure> {
        let entries = std::mem::take(&mut self.pending);
        let mut new = std::mem::take(&mut self.pending_new);
        let mut chunks = HashSet::new();
        let put = if self.pack.is_empty() {
            None
        } else {
            let mut builder = std::mem::take(&mut self.pack);
            let keys = self.state.keys.clone();
            let pack = tokio::task::spawn_blocking(move || builder.seal(keys.as_deref()))
                .await
                .map_err(|e| ApiError::InvalidArgument(format!("sealing a pack: {e}")))?;
            self.stats.new_bytes += pack.bytes.len() as u64;
            let mut at: HashMap<ChunkId, usize> =
                new.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
            for (id, loc) in &pack.chunks {
                if let Some(n) = at.remove(id).map(|i| &mut new[i]) {
                    n.stored_len = u64::from(loc.len);
                    n.pack = Some(loc.clone());
                }
                self.packed.insert(*id, loc.clone());
                chunks.insert(*id);
            }
            let store = self.state.store.clone();
            Some(tokio::spawn(async move {
                store.put_pack(&pack.name, &pack.bytes).await
            }))
        };
        self.settle().await?;
        self.writing = Some(Writing {
            put,
            chunks,
            entries,
            new,
        });
        Ok(())
    }

    /// Wait for the pack being written and commit its batch.
    async fn settle(&mut self) -> Result<(), Failure> {
        let Some(mut w) = self.writing.take() else {
            return Ok(());
        };
        if let Some(put) = w.put.take() {
            put.await
                .map_err(|e| ApiError::InvalidArgument(format!("writing a pack: {e}")))??;
        }
        match &mut self.sink {
            Sink::Part { backup, part } => {
                self.state
                    .catalog
                    .add_manifest(*backup, part, &w.entries, &w.new)
                    .await?;
            }
            Sink::Memory { entries, new } => {
                entries.append(&mut w.entries);
                new.append(&mut w.new);
            }
        }
        Ok(())
    }

    async fn finish(&mut self, t: PartTrailer) -> Result<PartStats, Failure> {
        let digest: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
        let mismatch = |what: String| {
            Failure::Api(ApiError::InvalidArgument(format!(
                "{} does not add up: {what}; it is not stored",
                self.label
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
        self.settle().await?;
        self.stats.stream_sha256 = hex::encode(digest);
        Ok(self.stats.clone())
    }
}
