//! Reading a stored stream back from the controller into a sink (a pipe to pg_restore or
//! tar, a spool file, a WAL file). Every chunk is checked against its id, and the whole
//! stream against the digest recorded when it was stored: a restore never consumes bytes
//! it has not verified.

use std::collections::VecDeque;

use sha2::{Digest, Sha256};
use tidemark_core::chunk;
use tidemark_core::ids::{BackupId, ChunkId};
use tidemark_proto::agent_service_client::AgentServiceClient;
use tidemark_proto::read_part_message::Msg;
use tidemark_proto::{ReadPartMessage, ReadPartRequest};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;
use tonic::Streaming;
use tonic::transport::Channel;

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
    let mut decoding: VecDeque<JoinHandle<Result<Vec<u8>, String>>> = VecDeque::new();
    loop {
        let msg = stream.message().await.map_err(rpc)?;
        match msg.and_then(|m| m.msg) {
            Some(Msg::Chunk(c)) => {
                let id = ChunkId::from_slice(&c.id).map_err(|e| corrupt(e.to_string()))?;
                decoding.push_back(tokio::task::spawn_blocking(move || {
                    chunk::decode(&id, &c.data).map_err(|e| e.to_string())
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
        decoded: JoinHandle<Result<Vec<u8>, String>>,
        sink: &mut W,
        progress: &Progress,
    ) -> Result<(), DownloadError> {
        let plain =
            decoded
                .await
                .expect("decode task")
                .map_err(|detail| DownloadError::Corrupt {
                    what: self.what.to_string(),
                    detail,
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
