//! Reading a stored stream back from the controller into a sink (a pipe to pg_restore or
//! tar, a spool file, a WAL file). Every chunk is checked against its id, and the whole
//! stream against the digest recorded when it was stored: a restore never consumes bytes
//! it has not verified.

use std::collections::VecDeque;

use sha2::{Digest, Sha256};
use tidemark_core::chunk::{self, ChunkError};
use tidemark_core::ids::{BackupId, ChunkId};
use tidemark_proto::agent_service_client::AgentServiceClient;
use tidemark_proto::read_part_message::Msg;
use tidemark_proto::{ReadPartMessage, ReadPartRequest};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;
use tonic::Streaming;
use tonic::transport::Channel;

use crate::error::{AgentError, Kind};
use crate::progress::Progress;

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("reading {what}: {}", .status.message())]
    Rpc { what: String, status: tonic::Status },
    #[error("reading {what}: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("writing {what} out: {source}")]
    Sink {
        what: String,
        source: std::io::Error,
    },
}

/// Stream `part` of `backup` into `sink`; returns the bytes written.
pub async fn download_part<W: AsyncWrite + Unpin>(
    client: &AgentServiceClient<Channel>,
    backup: BackupId,
    part: &str,
    job: i64,
    sink: &mut W,
    progress: &Progress,
) -> Result<u64, DownloadError> {
    let what = format!("backup {backup} part {part}");
    let req = ReadPartRequest {
        backup_id: backup.0,
        part: part.to_string(),
        job_id: job,
    };
    let stream = client
        .clone()
        .read_part(req)
        .await
        .map_err(|status| DownloadError::Rpc {
            what: what.clone(),
            status,
        })?
        .into_inner();
    receive(stream, &what, sink, progress).await
}

/// Chunks decoded and checked ahead of the one being written, on other cores.
const DECODE_AHEAD: usize = 2;

/// Verify and write out a stream of chunks ending in its trailer; returns the bytes written.
pub async fn receive<W: AsyncWrite + Unpin>(
    mut stream: Streaming<ReadPartMessage>,
    what: &str,
    sink: &mut W,
    progress: &Progress,
) -> Result<u64, DownloadError> {
    let rpc = |status| DownloadError::Rpc {
        what: what.to_string(),
        status,
    };
    let corrupt = |detail: String| DownloadError::Corrupt {
        what: what.to_string(),
        detail,
    };
    let mut out = Writer {
        hasher: Some(Sha256::new()),
        bytes: 0,
        chunks: 0,
        what,
    };
    let mut decoding: VecDeque<JoinHandle<Result<Vec<u8>, ChunkError>>> = VecDeque::new();
    loop {
        let msg = stream.message().await.map_err(rpc)?;
        match msg.and_then(|m| m.msg) {
            Some(Msg::Chunk(c)) => {
                let id = ChunkId::from_slice(&c.id).map_err(|e| corrupt(e.to_string()))?;
                decoding.push_back(tokio::task::spawn_blocking(move || {
                    chunk::decode(&id, &c.data)
                }));
                if decoding.len() >= DECODE_AHEAD {
                    out.write(decoding.pop_front().expect("non-empty"), sink, progress)
                        .await?;
                }
            }
            Some(Msg::Trailer(t)) => {
                while let Some(d) = decoding.pop_front() {
                    out.write(d, sink, progress).await?;
                }
                let digest: [u8; 32] = out.hasher.take().expect("hasher").finalize().into();
                let (bytes, chunks) = (out.bytes, out.chunks);
                if t.chunk_count != chunks || t.raw_bytes != bytes || t.stream_sha256 != digest {
                    return Err(corrupt(format!(
                        "received {chunks} chunks / {bytes} bytes with digest {}, the catalog records {} / {} with {}",
                        hex::encode(digest),
                        t.chunk_count,
                        t.raw_bytes,
                        hex::encode(&t.stream_sha256)
                    )));
                }
                sink.flush().await.map_err(|source| DownloadError::Sink {
                    what: what.to_string(),
                    source,
                })?;
                return Ok(bytes);
            }
            None => return Err(corrupt("the stream ended before its trailer".into())),
        }
    }
}

/// Takes decoded chunks in stream order: adds them to the stream digest and writes them.
struct Writer<'a> {
    hasher: Option<Sha256>,
    bytes: u64,
    chunks: u64,
    what: &'a str,
}

impl Writer<'_> {
    async fn write<W: AsyncWrite + Unpin>(
        &mut self,
        decoded: JoinHandle<Result<Vec<u8>, ChunkError>>,
        sink: &mut W,
        progress: &Progress,
    ) -> Result<(), DownloadError> {
        let plain = decoded
            .await
            .expect("decode task")
            .map_err(|e| DownloadError::Corrupt {
                what: self.what.to_string(),
                detail: e.to_string(),
            })?;
        let mut hasher = self.hasher.take().expect("hasher");
        let (plain, hasher) = tokio::task::spawn_blocking(move || {
            hasher.update(&plain);
            (plain, hasher)
        })
        .await
        .expect("hash task");
        self.hasher = Some(hasher);
        sink.write_all(&plain)
            .await
            .map_err(|source| DownloadError::Sink {
                what: self.what.to_string(),
                source,
            })?;
        self.bytes += plain.len() as u64;
        self.chunks += 1;
        progress.add(plain.len() as u64);
        Ok(())
    }
}

/// What to stream into a tool's stdin: a stored part, then `trailer` bytes.
pub struct Feed<'a> {
    pub backup: BackupId,
    pub part: &'a str,
    pub trailer: &'a [u8],
}

/// Run `cmd` to the end, streaming `feed` into its stdin (a 1 MiB pipe) when given; returns
/// the bytes fed. If the download fails, the tool is killed before it reaches the end of
/// its input (at EOF it would take a short input for a whole one), and the download's error
/// is the cause. A sink error only means the tool stopped reading first: its exit status and
/// stderr then say why.
pub async fn run_fed(
    ctx: &crate::job::JobContext,
    mut cmd: std::process::Command,
    feed: Option<Feed<'_>>,
) -> Result<u64, AgentError> {
    use std::process::Stdio;
    use tokio::io::AsyncReadExt;

    use crate::tool::{self, ToolError};

    let program = cmd.get_program().to_string_lossy().into_owned();
    let name = tool::name_of(cmd.get_program().as_ref());
    cmd.stdin(if feed.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ToolError::Spawn { program, source })?;
    let mut stderr = child.stderr.take().expect("piped");
    let collect_err = async {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    };
    // Not reaped until child.wait() below, so the pid stays this child's.
    let pid = child.id();
    let stdin = child.stdin.take();
    let fed = async {
        let (Some(mut stdin), Some(f)) = (stdin, feed) else {
            return Ok(0);
        };
        // Fewer wake-ups on both sides of the pipe; best effort.
        let _ = rustix::pipe::fcntl_setpipe_size(&stdin, 1 << 20);
        let mut r = download_part(
            &ctx.client,
            f.backup,
            f.part,
            ctx.job_id,
            &mut stdin,
            &ctx.progress,
        )
        .await;
        if r.is_ok()
            && !f.trailer.is_empty()
            && let Err(source) = stdin.write_all(f.trailer).await
        {
            r = Err(DownloadError::Sink {
                what: format!("part {}", f.part),
                source,
            });
        }
        if let Err(e) = &r
            && !matches!(e, DownloadError::Sink { .. })
            && let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        drop(stdin);
        r
    };
    let (fed, err) = tokio::join!(fed, collect_err);
    let status = child.wait().await.map_err(|source| ToolError::Io {
        tool: name.clone(),
        source,
    })?;
    let err_tail: String = {
        let chars: Vec<char> = err.chars().collect();
        chars[chars.len().saturating_sub(tool::STDERR_TAIL)..]
            .iter()
            .collect()
    };
    match fed {
        Err(e) if !matches!(e, DownloadError::Sink { .. }) => Err(e.into()),
        _ if !status.success() => Err(ToolError::Failed {
            tool: name,
            status: tool::describe(status),
            stderr: err_tail,
        }
        .into()),
        Err(e) => Err(e.into()),
        Ok(n) => Ok(n),
    }
}

/// A download: cut off by the controller (judged by its status), or corrupt, or its sink
/// failed.
impl From<DownloadError> for AgentError {
    fn from(e: DownloadError) -> Self {
        let kind = match &e {
            DownloadError::Rpc { status, .. } => Kind::of(status.code()),
            DownloadError::Corrupt { .. } | DownloadError::Sink { .. } => Kind::Permanent,
        };
        Self::new(kind, e.to_string())
    }
}
