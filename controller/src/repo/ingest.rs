//! Receiving one part of a backup. Each chunk is decoded and checked against its id before it
//! is stored; chunks the agent says are already stored are read back and checked too. The
//! controller rebuilds the stream's digest from the verified plaintext, in order, and the
//! part counts as stored only when that digest, the byte count and the chunk count all match
//! the agent's trailer. The response is the agent's durable acknowledgement.

use std::collections::{HashMap, HashSet, VecDeque};

use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tidemark_core::ids::{BackupId, ChunkId};
use tidemark_proto::upload_part_message::Msg;
use tidemark_proto::{EncodedChunk, PartTrailer, UploadPartMessage};
use tokio::task::JoinHandle;

use super::Repository;
use crate::catalog::{CatalogError, ManifestEntry, NewChunk, PartStats};
use crate::repo::pack::{PackBuilder, PackLoc};
use crate::repo::records::LogRecord;
use crate::repo::verified::{self, ReadError};
use crate::store::StoreError;

/// Manifest lines are committed to the catalog in batches of this many at most (a batch
/// ends sooner when its pack is full).
const MANIFEST_BATCH: usize = 1024;
/// Chunks being checked at once, per upload, and the most plaintext they may hold together
/// (each holds its encoded bytes and plaintext until it is taken in order): four 1 MiB
/// chunks of a dump, two 4 MiB chunks of a WAL file. Two cores' worth of decoding either way.
const IN_FLIGHT: usize = 4;
const IN_FLIGHT_BYTES: u64 = 8 << 20;

/// The most a discarded stream keeps of its chunks: a 16 MiB WAL segment whole.
const DISCARD_HELD: usize = 16 << 20;

/// Where a verified stream's manifest lines go.
pub enum Sink {
    /// A backup part: lines are committed in batches while the upload runs (a part can be
    /// any size), and count only once the part is marked stored.
    Part { backup: BackupId, part: String },
    /// Kept in memory and committed by the caller in one transaction (a WAL file: a few
    /// dozen lines).
    Memory {
        entries: Vec<ManifestEntry>,
        new: Vec<NewChunk>,
    },
    /// Checked and compared, never stored: a WAL file pushed again under a name already
    /// archived. Its chunks are kept only up to [`DISCARD_HELD`] bytes, for a reference to
    /// one of them later in the stream (the agent sends every chunk of a WAL file or binlog
    /// as bytes; agents before that sent a repeat as a reference): past that, a reference
    /// the archive cannot answer either is refused, with a hint to upgrade the agent.
    Discard,
}

/// Receives the chunks of one stream: verifies each, stores it, rebuilds the stream digest
/// in order, and checks the trailer.
pub struct ChunkReceiver {
    repo: Repository,
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
    /// Chunks whose bytes this upload sent that were stored before: the agent owns them
    /// once its batch commits.
    claimed: Vec<ChunkId>,
    /// The name of the last pack this upload wrote.
    last_pack: Option<String>,
    /// Packs written and not yet committed (see `Repository::in_flight`).
    uncommitted: Vec<String>,
    sink: Sink,
}

/// A pack being written while the next one fills, and the batch that waits for it.
struct Writing {
    put: Option<JoinHandle<Result<(), StoreError>>>,
    /// The chunks in it: a reference to one waits until it is durable.
    chunks: HashSet<ChunkId>,
    entries: Vec<ManifestEntry>,
    new: Vec<NewChunk>,
    claimed: Vec<ChunkId>,
}

impl Drop for ChunkReceiver {
    /// A failed upload stops writing its pack; what was written is unreferenced garbage,
    /// for collection once older than the grace period. A finished one's packs are
    /// committed by now (a WAL file's by the caller, before it drops the receiver).
    fn drop(&mut self) {
        if let Some(put) = self.writing.as_ref().and_then(|w| w.put.as_ref()) {
            put.abort();
        }
        let mut in_flight = self.repo.in_flight.lock().expect("in-flight lock");
        for p in &self.uncommitted {
            in_flight.remove(p);
        }
    }
}

/// A chunk checked against its id: new bytes from the agent, or a stored copy found intact.
struct Checked {
    id: ChunkId,
    plaintext: Vec<u8>,
    /// The encoded bytes the agent sent (None for a dedup reference): they go into a pack.
    encoded: Option<Vec<u8>>,
    /// The bytes were sent, but the store holds the chunk already (another host stored
    /// it): it is not stored again, and the sender now owns it too.
    stored_before: bool,
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
async fn check(repo: Repository, c: EncodedChunk, original: Original) -> IngestResult<Checked> {
    let id = ChunkId::from_slice(&c.id).map_err(|e| IngestError::Rejected(e.to_string()))?;
    let checked = if c.data.is_empty() {
        // A dedup hit: the agent trusts our copy, so check it is really there and intact.
        let plaintext = match original {
            Original::Pending(encoded) => decode(id, encoded).await?.1,
            Original::Packed(loc) => {
                verified::get(repo.store.as_ref(), repo.keys.as_deref(), &id, Some(&loc))
                    .await?
                    .plaintext
            }
            Original::Catalog => repo.read_chunk(&id).await?.plaintext,
        };
        Checked {
            id,
            plaintext,
            encoded: None,
            stored_before: false,
        }
    } else {
        let (encoded, plaintext) = decode(id, c.data).await?;
        // Held intact already (not found faulty): by another host, since an agent's own
        // chunks are offered to it as references.
        let stored_before = matches!(repo.catalog.chunk_place(&id).await?, Some((_, false)));
        Checked {
            id,
            plaintext,
            encoded: Some(encoded),
            stored_before,
        }
    };
    if checked.plaintext.len() != c.raw_len as usize {
        return Err(IngestError::Rejected(format!(
            "chunk {id} is {} bytes but was announced as {}",
            checked.plaintext.len(),
            c.raw_len
        )));
    }
    Ok(checked)
}

/// Check an encoded chunk the agent sent against its id; returns (encoded, plaintext).
async fn decode(id: ChunkId, encoded: Vec<u8>) -> IngestResult<(Vec<u8>, Vec<u8>)> {
    let c = verified::decode(id, encoded)
        .await
        .map_err(|e| IngestError::Internal(format!("decoding chunk {id}: {e}")))?
        .map_err(|e| {
            IngestError::Rejected(format!(
                "{e}; the chunk was rejected, nothing was stored for it"
            ))
        })?;
    Ok((c.encoded, c.plaintext))
}

async fn joined(task: JoinHandle<IngestResult<Checked>>) -> IngestResult<Checked> {
    task.await
        .map_err(|e| IngestError::Internal(format!("chunk task failed: {e}")))?
}

/// Why a stream was not stored. Nothing of it counts: its chunks may be in the store, but
/// no manifest line refers to them until the stream is whole.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The agent closed the stream without a trailer (on purpose: it reports its own reason).
    #[error("the stream ended without its trailer")]
    EndedEarly,
    /// What the agent sent is wrong: a chunk that does not match its id, a trailer that
    /// does not add up. Sending the same again cannot help.
    #[error("{0}")]
    Rejected(String),
    /// A reference to a chunk the agent never uploaded.
    #[error("{0}")]
    NotOwned(String),
    /// The stream broke while it was read.
    #[error("{0}")]
    Interrupted(String),
    /// The controller's own failure (a task that died, sealing that failed): may pass.
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Read(#[from] ReadError),
}

impl From<super::RepoReadError> for IngestError {
    fn from(e: super::RepoReadError) -> Self {
        match e {
            super::RepoReadError::Catalog(c) => IngestError::Catalog(c),
            super::RepoReadError::Read(r) => IngestError::Read(r),
        }
    }
}

pub type IngestResult<T> = Result<T, IngestError>;

impl ChunkReceiver {
    pub fn new(repo: &Repository, agent: &str, label: String, sink: Sink) -> Self {
        Self {
            repo: repo.clone(),
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
            claimed: Vec::new(),
            last_pack: None,
            uncommitted: Vec::new(),
            sink,
        }
    }

    /// The manifest lines and new chunks of a stream received into [`Sink::Memory`], for
    /// the caller to commit; empty for a part, whose lines were committed as it ran.
    pub fn take_collected(&mut self) -> (Vec<ManifestEntry>, Vec<NewChunk>) {
        match &mut self.sink {
            Sink::Memory { entries, new } => (std::mem::take(entries), std::mem::take(new)),
            Sink::Part { .. } | Sink::Discard => (Vec::new(), Vec::new()),
        }
    }

    /// Receive chunks up to and including the trailer. Returns the stream's statistics, its
    /// digest included, once the trailer matched what was received; the caller then
    /// commits (or drops the receiver, and nothing of the last batch is stored).
    /// `stream` yields the upload's messages after its header, or why it broke.
    pub async fn run(
        &mut self,
        stream: &mut (impl Stream<Item = Result<UploadPartMessage, String>> + Unpin),
    ) -> IngestResult<PartStats> {
        // Each task with the id and size of the chunk it checks.
        let mut in_flight: VecDeque<(Vec<u8>, u64, JoinHandle<IngestResult<Checked>>)> =
            VecDeque::new();
        let mut held = 0u64;
        loop {
            let msg = match stream.next().await {
                Some(Ok(m)) => m.msg,
                None => {
                    // A chunk already received may still prove bad; that is the failure then.
                    while let Some((_, _, done)) = in_flight.pop_front() {
                        joined(done).await?;
                    }
                    return Err(IngestError::EndedEarly);
                }
                Some(Err(why)) => {
                    return Err(IngestError::Interrupted(format!(
                        "upload interrupted: {why}"
                    )));
                }
            };
            match msg {
                Some(Msg::Chunk(c)) => {
                    // A reference to a chunk whose first copy is still being stored must
                    // wait for it (repetitive data repeats chunks back to back).
                    let waits_for_copy =
                        c.data.is_empty() && in_flight.iter().any(|(id, _, _)| *id == c.id);
                    let size = u64::from(c.raw_len).max(c.data.len() as u64);
                    while !in_flight.is_empty()
                        && (in_flight.len() >= IN_FLIGHT
                            || held + size > IN_FLIGHT_BYTES
                            || waits_for_copy)
                    {
                        let (_, done_size, done) = in_flight.pop_front().expect("non-empty");
                        held -= done_size;
                        self.absorb(joined(done).await?).await?;
                    }
                    self.check_reference(&c).await?;
                    self.check_comparable(&c).await?;
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
                    held += size;
                    in_flight.push_back((
                        id,
                        size,
                        tokio::spawn(check(self.repo.clone(), c, original)),
                    ));
                }
                Some(Msg::Trailer(t)) => {
                    while let Some((_, _, done)) = in_flight.pop_front() {
                        self.absorb(joined(done).await?).await?;
                    }
                    return self.finish(t).await;
                }
                Some(Msg::Header(_)) | Some(Msg::Wal(_)) | None => {
                    return Err(IngestError::Rejected(
                        "unexpected message in a part upload".into(),
                    ));
                }
            }
        }
    }

    /// In a discarded stream, a reference must be answerable: by a chunk still held, or by
    /// the archive. The file cannot be compared otherwise (it is never taken for different).
    async fn check_comparable(&self, c: &EncodedChunk) -> IngestResult<()> {
        if !matches!(self.sink, Sink::Discard) || !c.data.is_empty() {
            return Ok(());
        }
        let id = ChunkId::from_slice(&c.id).map_err(|e| IngestError::Rejected(e.to_string()))?;
        if self.pack.get(&id).is_some() || self.repo.catalog.chunk_place(&id).await?.is_some() {
            return Ok(());
        }
        Err(IngestError::Rejected(format!(
            "{} was pushed again under its archived name and cannot be compared: it refers to its own chunk {id}, which is past what is held for the comparison; upgrade the agent (it now sends every chunk of an archived file)",
            self.label
        )))
    }

    /// An agent may refer only to chunks it uploaded itself. A chunk id is a content hash;
    /// knowing one must not let an agent read what another host stored.
    async fn check_reference(&mut self, c: &EncodedChunk) -> IngestResult<()> {
        if !c.data.is_empty() {
            self.uploaded_here.insert(c.id.clone());
            return Ok(());
        }
        if self.uploaded_here.contains(&c.id) {
            return Ok(());
        }
        let id = ChunkId::from_slice(&c.id).map_err(|e| IngestError::Rejected(e.to_string()))?;
        if self.repo.catalog.chunk_owned_by(&id, &self.agent).await? {
            Ok(())
        } else {
            Err(IngestError::NotOwned(format!(
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
    async fn absorb(&mut self, checked: Checked) -> IngestResult<()> {
        self.hasher.update(&checked.plaintext);
        if let (Some(encoded), true) = (&checked.encoded, checked.stored_before) {
            // Counted as new, as if stored: what another host holds is not for this agent
            // to learn from the figures it is told.
            self.stats.new_chunks += 1;
            self.stats.new_bytes += encoded.len() as u64;
            self.claimed.push(checked.id);
        } else if let Some(encoded) = checked.encoded
            && !(matches!(self.sink, Sink::Discard) && self.pack.bytes() >= DISCARD_HELD)
        {
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
        let discard = matches!(self.sink, Sink::Discard);
        if !discard && (self.pack.is_full() || self.pending.len() >= MANIFEST_BATCH) {
            self.flush().await?;
        }
        Ok(())
    }

    /// Close the batch: start writing the pack being filled, and commit the previous
    /// batch once its pack is durable. One pack is written while the next fills, so the
    /// stream keeps flowing; a manifest line is committed only once every chunk it needs is
    /// durable, and batches are committed in order.
    async fn flush(&mut self) -> IngestResult<()> {
        let entries = std::mem::take(&mut self.pending);
        let mut new = std::mem::take(&mut self.pending_new);
        let mut chunks = HashSet::new();
        let put = if self.pack.is_empty() {
            None
        } else {
            let mut builder = std::mem::take(&mut self.pack);
            let keys = self.repo.keys.clone();
            let pack = tokio::task::spawn_blocking(move || builder.seal(keys.as_deref()))
                .await
                .map_err(|e| IngestError::Internal(format!("sealing a pack: {e}")))?;
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
            self.last_pack = Some(pack.name.clone());
            self.repo
                .in_flight
                .lock()
                .expect("in-flight lock")
                .insert(pack.name.clone());
            self.uncommitted.push(pack.name.clone());
            let store = self.repo.store.clone();
            Some(tokio::spawn(async move {
                store.put_pack(&pack.name, pack.bytes.into()).await
            }))
        };
        self.settle().await?;
        self.writing = Some(Writing {
            put,
            chunks,
            entries,
            new,
            claimed: std::mem::take(&mut self.claimed),
        });
        Ok(())
    }

    /// Wait for the pack being written and commit its batch.
    async fn settle(&mut self) -> IngestResult<()> {
        let Some(mut w) = self.writing.take() else {
            return Ok(());
        };
        if let Some(put) = w.put.take() {
            put.await
                .map_err(|e| IngestError::Internal(format!("writing a pack: {e}")))??;
        }
        if !w.claimed.is_empty() {
            self.repo
                .catalog
                .claim_chunks(&self.agent, &w.claimed)
                .await?;
        }
        match &mut self.sink {
            Sink::Part { backup, part } => {
                self.repo
                    .catalog
                    .add_manifest(*backup, part, &w.entries, &w.new)
                    .await?;
                // Committed: the catalog places these chunks and says the agent owns them,
                // so this upload forgets them and its bookkeeping stays as small as a
                // batch, however large the part.
                for id in w.chunks.iter().chain(&w.claimed) {
                    self.packed.remove(id);
                    self.uploaded_here.remove(id.0.as_slice());
                }
                let mut in_flight = self.repo.in_flight.lock().expect("in-flight lock");
                for p in self.uncommitted.drain(..) {
                    if Some(&p) != self.last_pack.as_ref() {
                        in_flight.remove(&p);
                    }
                }
                if let Some(p) = &self.last_pack {
                    self.uncommitted.push(p.clone());
                }
            }
            Sink::Memory { entries, new } => {
                entries.append(&mut w.entries);
                new.append(&mut w.new);
            }
            Sink::Discard => unreachable!("a discarded stream writes no pack"),
        }
        Ok(())
    }

    /// The last pack this upload wrote: after [`ChunkReceiver::commit`] with a description,
    /// the pack holding it.
    pub fn last_pack(&self) -> Option<String> {
        self.last_pack.clone()
    }

    /// Every manifest line of a stream received into [`Sink::Memory`], in order, before it
    /// is committed: what its description lists.
    pub fn manifest(&self) -> Vec<ManifestEntry> {
        let mut all = match &self.sink {
            Sink::Memory { entries, .. } => entries.clone(),
            Sink::Part { .. } | Sink::Discard => Vec::new(),
        };
        if let Some(w) = &self.writing {
            all.extend_from_slice(&w.entries);
        }
        all.extend_from_slice(&self.pending);
        all
    }

    /// Store what [`ChunkReceiver::run`] received and checked: the last pack, with
    /// `description` in it (a WAL file's, which then costs no request of its own), and the
    /// last manifest lines. Returns the stream's final statistics. A discarded stream
    /// stores nothing.
    pub async fn commit(&mut self, description: Option<LogRecord>) -> IngestResult<PartStats> {
        if matches!(self.sink, Sink::Discard) {
            return Ok(self.stats.clone());
        }
        if let Some(d) = description {
            self.pack.describe(d);
        }
        self.flush().await?;
        self.settle().await?;
        Ok(self.stats.clone())
    }

    /// Check the trailer against what was received. Nothing of the last batch is stored
    /// yet: [`ChunkReceiver::commit`] does that.
    async fn finish(&mut self, t: PartTrailer) -> IngestResult<PartStats> {
        let digest: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
        let mismatch = |what: String| {
            IngestError::Rejected(format!(
                "{} does not add up: {what}; it is not stored",
                self.label
            ))
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
        self.stats.stream_sha256 = hex::encode(digest);
        Ok(self.stats.clone())
    }
}
