//! Streaming bytes to the controller: a tool's stdout or a FIFO as one part of a backup, or
//! a WAL file for the archive.
//!
//! ```text
//! tool stdout ─► hash+count ─► FastCDC ─► [chunks, 2] ─► dedup query ─► zstd (≤3 at once)
//!            (blocking thread)                            ─► [messages, 2] ─► UploadPart
//! ```
//! Every queue is bounded, so a slow controller slows the tool down instead of filling
//! memory. Nothing touches the database host's disk. The part is acknowledged only when the
//! controller has stored every chunk and found the same stream digest the agent read.

use std::collections::HashSet;
use std::future::Future;
use std::io::{self, Read};
use std::process::{Command, Stdio};
use std::sync::Arc;

use tidemark_core::chunk;
use tidemark_core::chunker::{Chunk, MAX_CHUNK, StreamSummary, chunk_fixed, chunk_stream};
use tidemark_core::ids::{BackupId, ChunkId};
use tidemark_proto::agent_service_client::AgentServiceClient;
use tidemark_proto::upload_part_message::Msg;
use tidemark_proto::{
    EncodedChunk, HaveChunksRequest, PartHeader, PartTrailer, PushWalResponse, UploadPartMessage,
    UploadPartResponse, WalHeader,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::error::{AgentError, Kind};
use crate::progress::Progress;
use crate::tool::{self, ToolError};

/// Chunks cut but not yet taken for compression.
const CHUNK_QUEUE: usize = 2;
const ENCODE_AHEAD: usize = 3;
/// The plaintext, in KiB, of the chunks cut and not yet handed to the upload stream (queued,
/// waiting for a dedup answer, being compressed): the counts above bound chunks, this bounds
/// bytes, so a run of 4 MiB chunks (WAL, incompressible data) holds no more than a run of
/// 1 MiB ones. Two 4 MiB chunks fit, so two are still compressed at once.
const BUDGET_KIB: usize = 8 << 10;
/// Chunks asked about in one dedup query.
const DEDUP_BATCH: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("the controller refused part {part}: {}", .status.message())]
    Rpc { part: String, status: tonic::Status },
    #[error("part {part}: {what}")]
    Mismatch { part: String, what: String },
    /// Reading the stream failed (the tool's pipe, a file).
    #[error("reading the stream: {0}")]
    Read(io::Error),
}

pub struct Part<'a> {
    pub backup: BackupId,
    pub name: &'a str,
    pub format: &'a str,
}

/// What a stream is sent as: a part of a backup, or a WAL file (or binlog) for the archive.
/// Each has its own rpc and acknowledgement; see [`upload_part`] and [`push_wal`].
enum Target<'a> {
    Part(Part<'a>),
    Wal(WalHeader),
}

impl Target<'_> {
    fn label(&self) -> String {
        match self {
            Target::Part(p) => p.name.to_string(),
            Target::Wal(h) => h.name.clone(),
        }
    }

    fn header(&self) -> Msg {
        match self {
            Target::Part(p) => Msg::Header(PartHeader {
                backup_id: p.backup.0,
                part: p.name.into(),
                format: p.format.into(),
            }),
            Target::Wal(h) => Msg::Wal(h.clone()),
        }
    }
}

/// What an inspector found wrong with a stream, in words: why it must not be stored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

/// Reads a tool's stream as it goes by, to check its structure or pick facts out of it,
/// without holding it.
pub trait Inspector: Send + 'static {
    fn feed(&mut self, bytes: &[u8]);
    /// Called once the tool exited 0 and its whole stream was read, before the part is
    /// committed: an error means the stream is not what the tool should have written, and
    /// the part is not stored.
    fn verdict(&mut self) -> Result<(), Malformed>;
}

struct NoInspection;

impl Inspector for NoInspection {
    fn feed(&mut self, _: &[u8]) {}
    fn verdict(&mut self) -> Result<(), Malformed> {
        Ok(())
    }
}

struct Inspected<R, I> {
    inner: R,
    inspector: std::sync::Arc<std::sync::Mutex<I>>,
}

impl<R: Read, I: Inspector> Read for Inspected<R, I> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.inspector
            .lock()
            .expect("inspector lock")
            .feed(&buf[..n]);
        Ok(n)
    }
}

/// Run `cmd` and upload its stdout as `part`. The part is stored only if the tool exits 0:
/// its trailer is sent after the exit status is known. Returns the controller's ack.
pub async fn upload_tool_output(
    client: &AgentServiceClient<Channel>,
    part: Part<'_>,
    cmd: Command,
    progress: &Progress,
) -> Result<UploadPartResponse, UploadError> {
    upload_inspected(client, part, cmd, progress, NoInspection)
        .await
        .map(|(ack, _)| ack)
}

/// [`upload_tool_output`], with `inspector` reading the stream on its way; it is handed
/// back with what it found.
pub async fn upload_inspected<I: Inspector>(
    client: &AgentServiceClient<Channel>,
    part: Part<'_>,
    mut cmd: Command,
    progress: &Progress,
    inspector: I,
) -> Result<(UploadPartResponse, I), UploadError> {
    let part_name = part.name.to_string();
    let program = cmd.get_program().to_owned();
    let tool_name = tool::name_of(program.as_ref());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| ToolError::Spawn {
        program: program.to_string_lossy().into_owned(),
        source,
    })?;
    let stdout = child.stdout.take().expect("piped stdout");
    // A 1 MiB pipe instead of 64 KiB: fewer wake-ups of the tool and of the chunker. Best
    // effort; the kernel may cap it (/proc/sys/fs/pipe-max-size).
    let _ = rustix::pipe::fcntl_setpipe_size(&stdout, 1 << 20);
    let stderr = child.stderr.take().expect("piped stderr");
    let stderr_tail = std::thread::spawn(move || tool::read_tail(stderr));
    let inspector = std::sync::Arc::new(std::sync::Mutex::new(inspector));
    let stdout = Inspected {
        inner: stdout,
        inspector: inspector.clone(),
    };
    let judge = inspector.clone();
    // Stop the tool when the upload fails, or when the job is cancelled and this future is
    // dropped: a tool that is not writing (a pg_dump waiting for a lock) would otherwise
    // never notice, and would hold its lock request or snapshot. The child stays here,
    // unreaped, until `exited` takes it, so the pid it is killed by is still its own.
    let child = std::sync::Arc::new(std::sync::Mutex::new(Some(child)));
    let stop = StopTool(child.clone());
    let kill = {
        let child = child.clone();
        move || {
            if let Some(c) = child.lock().expect("tool lock").as_mut() {
                let _ = c.kill();
            }
        }
    };
    let name = tool_name.clone();
    let exited = move || {
        // Gone only when the upload was dropped (its job cancelled) and the tool stopped.
        let Some(mut child) = child.lock().expect("tool lock").take() else {
            return Err(ToolError::Failed {
                tool: name,
                status: "was stopped: its job was cancelled".into(),
                stderr: String::new(),
            }
            .into());
        };
        let status = child.wait().map_err(|source| ToolError::Io {
            tool: name.clone(),
            source,
        })?;
        let stderr = stderr_tail.join().unwrap_or_default();
        if status.success() {
            judge
                .lock()
                .expect("inspector lock")
                .verdict()
                .map_err(|m| UploadError::Mismatch {
                    part: part_name,
                    what: m.0,
                })
        } else {
            Err(ToolError::Failed {
                tool: name,
                status: tool::describe(status),
                stderr,
            }
            .into())
        }
    };
    let uploaded = upload_part(client, part, stdout, progress, kill, exited).await;
    drop(stop);
    match uploaded {
        Err(UploadError::Read(source)) => Err(ToolError::Io {
            tool: tool_name,
            source,
        }
        .into()),
        Err(e) => Err(e),
        Ok(resp) => {
            let inspector = std::sync::Arc::try_unwrap(inspector)
                .ok()
                .expect("the upload is done with the inspector")
                .into_inner()
                .expect("inspector lock");
            Ok((resp, inspector))
        }
    }
}

/// Kills and reaps a tool whose output is still being uploaded when this is dropped (the
/// upload failed, or its job was cancelled).
struct StopTool(std::sync::Arc<std::sync::Mutex<Option<std::process::Child>>>);

impl Drop for StopTool {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.lock().expect("tool lock").take() {
            let _ = child.kill();
            std::thread::spawn(move || child.wait());
        }
    }
}

/// Upload everything `reader` yields as part `part`; returns the controller's ack, which
/// must count the same chunks and bytes the agent sent. `abort` runs when the upload fails
/// while the reader may still be producing (to stop the tool that writes it). `settle` runs
/// once the reader is exhausted, before the trailer goes out: if it fails (the tool that
/// wrote the stream exited non-zero, say), the trailer is never sent and nothing is stored.
pub async fn upload_part<R: Read + Send + 'static>(
    client: &AgentServiceClient<Channel>,
    part: Part<'_>,
    reader: R,
    progress: &Progress,
    abort: impl FnOnce() + Send + 'static,
    settle: impl FnOnce() -> Result<(), UploadError> + Send + 'static,
) -> Result<UploadPartResponse, UploadError> {
    let label = part.name.to_string();
    let rpc = |mut c: AgentServiceClient<Channel>, stream| async move {
        c.upload_part(stream).await.map(tonic::Response::into_inner)
    };
    let (ack, summary) = send(
        client,
        Target::Part(part),
        reader,
        progress,
        abort,
        settle,
        rpc,
    )
    .await?;
    if ack.chunks != summary.chunks || ack.raw_bytes != summary.bytes {
        return Err(UploadError::Mismatch {
            part: label,
            what: format!(
                "controller acknowledged {} chunks / {} bytes, the agent sent {} / {}",
                ack.chunks, ack.raw_bytes, summary.chunks, summary.bytes
            ),
        });
    }
    Ok(ack)
}

/// Push everything `reader` yields to the archive as the file `header` names (a WAL
/// segment, or a MariaDB binlog); returns the controller's ack.
pub async fn push_wal<R: Read + Send + 'static>(
    client: &AgentServiceClient<Channel>,
    header: WalHeader,
    reader: R,
    progress: &Progress,
) -> Result<PushWalResponse, UploadError> {
    let rpc = |mut c: AgentServiceClient<Channel>, stream| async move {
        c.push_wal(stream).await.map(tonic::Response::into_inner)
    };
    let (ack, _) = send(
        client,
        Target::Wal(header),
        reader,
        progress,
        || {},
        || Ok(()),
        rpc,
    )
    .await?;
    Ok(ack)
}

/// The stream both uploads share: chunk `reader`, send `target`'s header, the chunks and the
/// trailer over the client-streaming `rpc`, and return its ack with what was sent.
async fn send<R, A, F, Fut>(
    client: &AgentServiceClient<Channel>,
    target: Target<'_>,
    reader: R,
    progress: &Progress,
    abort: impl FnOnce() + Send + 'static,
    settle: impl FnOnce() -> Result<(), UploadError> + Send + 'static,
    rpc: F,
) -> Result<(A, StreamSummary), UploadError>
where
    R: Read + Send + 'static,
    A: Send + 'static,
    F: FnOnce(AgentServiceClient<Channel>, ReceiverStream<UploadPartMessage>) -> Fut,
    Fut: Future<Output = Result<A, tonic::Status>> + Send + 'static,
{
    let label = target.label();
    let (chunk_tx, chunk_rx) = mpsc::channel::<Budgeted>(CHUNK_QUEUE);
    let counter = progress.clone();
    let is_wal = matches!(target, Target::Wal(_));
    let budget = Arc::new(Semaphore::new(BUDGET_KIB));
    let runtime = tokio::runtime::Handle::current();
    let chunker = tokio::task::spawn_blocking(move || {
        let send = |c: Chunk| {
            counter.add(c.data.len() as u64);
            let kib = c.data.len().div_ceil(1024).clamp(1, BUDGET_KIB) as u32;
            let permit = runtime
                .block_on(budget.clone().acquire_many_owned(kib))
                .expect("the budget is never closed");
            chunk_tx
                .blocking_send((c, permit))
                .map_err(|_| io::Error::other("upload stopped"))
        };
        // WAL never repeats across files: fixed 4 MiB chunks (four per 16 MiB segment, so
        // a push waits on few fsyncs), and no dedup query to wait for.
        if is_wal {
            chunk_fixed(reader, MAX_CHUNK, send)
        } else {
            chunk_stream(reader, send)
        }
    });

    // One message queued for the stream: the transport holds one or two more in its buffers.
    let (msg_tx, msg_rx) = mpsc::channel::<UploadPartMessage>(1);
    msg_tx
        .send(UploadPartMessage {
            msg: Some(target.header()),
        })
        .await
        .expect("receiver alive");
    let rpc = tokio::spawn(rpc(client.clone(), ReceiverStream::new(msg_rx)));

    let pumped = pump(client.clone(), chunk_rx, &msg_tx, !is_wal).await;
    let mut abort = Some(abort);
    if pumped.is_err() && !chunker.is_finished() {
        (abort.take().expect("first use"))();
    }
    let chunked = chunker.await.expect("chunker task");
    // The source's verdict, once it is done (for a tool: its exit status). It comes before
    // a read error, which may only be a consequence of the tool dying.
    let settled = tokio::task::spawn_blocking(settle)
        .await
        .expect("settle task");
    let rpc_err = |status| UploadError::Rpc {
        part: label.clone(),
        status,
    };
    let failure: Option<UploadError> = match (pumped, &chunked) {
        (Err(e), _) => Some(e),
        (Ok(()), _) if settled.is_err() => settled.err(),
        (Ok(()), Err(e)) => {
            if let Some(a) = abort.take() {
                a();
            }
            Some(UploadError::Read(io::Error::new(e.kind(), e.to_string())))
        }
        (Ok(()), Ok(_)) => None,
    };
    if let Some(f) = failure {
        // Ending the stream without a trailer tells the controller the part is not stored.
        // Which failure to report is not a question of kind (nothing is retried here): the
        // controller's status is the cause unless the failure is local (the tool, the
        // stream), or the status only echoes this agent ending the stream early (the
        // controller's "ended without its trailer" is FailedPrecondition).
        drop(msg_tx);
        if let Ok(Err(status)) = rpc.await
            && !matches!(f, UploadError::Read(_) | UploadError::Tool(_))
            && status.code() != tonic::Code::FailedPrecondition
        {
            return Err(rpc_err(status));
        }
        return Err(f);
    }
    let summary: StreamSummary = chunked.expect("checked above");
    let trailer = PartTrailer {
        stream_sha256: summary.sha256.to_vec(),
        raw_bytes: summary.bytes,
        chunk_count: summary.chunks,
    };
    // If the controller already gave up, the send fails and its reason comes from the rpc.
    let _ = msg_tx
        .send(UploadPartMessage {
            msg: Some(Msg::Trailer(trailer)),
        })
        .await;
    drop(msg_tx);
    let ack = rpc
        .await
        .map_err(|e| rpc_err(tonic::Status::internal(e.to_string())))?
        .map_err(rpc_err)?;
    Ok((ack, summary))
}

/// A chunk and its share of the pipeline's byte budget, given back once it is sent.
type Budgeted = (Chunk, OwnedSemaphorePermit);

/// Chunk ids an upload remembers having sent (about 3 MiB of them), however large the part.
const SENT_REMEMBERED: usize = 1 << 16;

/// Move chunks from the chunker to the upload stream: ask which the controller lacks,
/// compress those (a few at once, in order), and send. A chunk repeated within the stream
/// is sent once. With `dedup` off (a WAL file or binlog) every chunk goes as bytes: the
/// controller compares a file pushed again under its archived name without holding it
/// whole, and a repeat in WAL is a zero-filled tail that compresses to almost nothing.
/// Returns when the chunker is done.
async fn pump(
    mut client: AgentServiceClient<Channel>,
    mut chunks: mpsc::Receiver<Budgeted>,
    out: &mpsc::Sender<UploadPartMessage>,
    dedup: bool,
) -> Result<(), UploadError> {
    let (enc_tx, mut enc_rx) =
        mpsc::channel::<JoinHandle<(EncodedChunk, OwnedSemaphorePermit)>>(ENCODE_AHEAD);
    let rpc_err = |status| UploadError::Rpc {
        part: String::new(),
        status,
    };
    let feeder = async move {
        let mut sent: HashSet<ChunkId> = HashSet::new();
        while let Some(first) = chunks.recv().await {
            let mut batch = vec![first];
            while batch.len() < DEDUP_BATCH {
                match chunks.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            let ask: Vec<Vec<u8>> = batch
                .iter()
                .map(|(c, _)| c)
                .filter(|c| !sent.contains(&c.id))
                .map(|c| c.id.0.to_vec())
                .collect();
            let present = if ask.is_empty() || !dedup {
                Vec::new()
            } else {
                client
                    .have_chunks(HaveChunksRequest { ids: ask.clone() })
                    .await
                    .map_err(rpc_err)?
                    .into_inner()
                    .present
            };
            let stored: HashSet<&[u8]> = ask
                .iter()
                .zip(&present)
                .filter(|(_, p)| **p)
                .map(|(id, _)| id.as_slice())
                .collect();
            // What this upload sent is remembered up to a bound (a few MiB), so memory does
            // not grow with the part: past it, the controller's answer (the chunk is stored
            // once its batch commits) does the remembering.
            if sent.len() > SENT_REMEMBERED {
                sent.clear();
            }
            for (c, permit) in batch {
                let skip = dedup && (sent.contains(&c.id) || stored.contains(c.id.0.as_slice()));
                sent.insert(c.id);
                let job = tokio::task::spawn_blocking(move || {
                    let encoded = EncodedChunk {
                        id: c.id.0.to_vec(),
                        raw_len: c.data.len() as u32,
                        data: if skip {
                            Vec::new()
                        } else {
                            chunk::encode(&c.data)
                        },
                    };
                    (encoded, permit)
                });
                if enc_tx.send(job).await.is_err() {
                    return Ok(()); // the sender below stopped; it reports why
                }
            }
        }
        Ok::<(), UploadError>(())
    };
    // `move`: when the sender stops, enc_rx must go with it, so the feeder's next send fails
    // instead of waiting forever on a full queue.
    let sender = async move {
        while let Some(job) = enc_rx.recv().await {
            // The permit goes once the chunk is in the stream's queue.
            let (encoded, _permit) = job.await.expect("encode task");
            if out
                .send(UploadPartMessage {
                    msg: Some(Msg::Chunk(encoded)),
                })
                .await
                .is_err()
            {
                return Err(UploadError::Rpc {
                    part: String::new(),
                    status: tonic::Status::unavailable("upload stream closed by the controller"),
                });
            }
        }
        Ok(())
    };
    let (fed, sent) = tokio::join!(feeder, sender);
    fed.and(sent)
}

/// An upload: refused or dropped by the controller (judged by its status), or failed here.
impl From<UploadError> for AgentError {
    fn from(e: UploadError) -> Self {
        let kind = match &e {
            UploadError::Rpc { status, .. } => Kind::of(status.code()),
            UploadError::Tool(_) | UploadError::Mismatch { .. } | UploadError::Read(_) => {
                Kind::Permanent
            }
        };
        Self::new(kind, e.to_string())
    }
}
