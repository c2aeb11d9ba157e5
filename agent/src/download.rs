//! Reading a stored stream back from the controller into a sink (a pipe to pg_restore or
//! tar, a spool file, a WAL file). Every chunk is checked against its id, and the whole
//! stream against the digest recorded when it was stored: a restore never consumes bytes
//! it has not verified.

use sha2::{Digest, Sha256};
use tidemark_core::chunk;
use tidemark_core::ids::{BackupId, ChunkId};
use tidemark_proto::agent_service_client::AgentServiceClient;
use tidemark_proto::read_part_message::Msg;
use tidemark_proto::{ReadPartMessage, ReadPartRequest};
use tokio::io::{AsyncWrite, AsyncWriteExt};
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
    let sink_err = |source| DownloadError::Sink {
        what: what.to_string(),
        source,
    };
    let mut hasher = Sha256::new();
    let (mut bytes, mut chunks) = (0u64, 0u64);
    loop {
        let msg = stream.message().await.map_err(rpc)?;
        match msg.and_then(|m| m.msg) {
            Some(Msg::Chunk(c)) => {
                let id = ChunkId::from_slice(&c.id).map_err(|e| corrupt(e.to_string()))?;
                let (plain, h) = tokio::task::spawn_blocking(move || {
                    let mut hasher = hasher;
                    let plain = chunk::decode(&id, &c.data);
                    if let Ok(p) = &plain {
                        hasher.update(p);
                    }
                    (plain, hasher)
                })
                .await
                .expect("decode task");
                hasher = h;
                let plain = plain.map_err(|e| corrupt(e.to_string()))?;
                sink.write_all(&plain).await.map_err(sink_err)?;
                bytes += plain.len() as u64;
                chunks += 1;
                progress.add(plain.len() as u64);
            }
            Some(Msg::Trailer(t)) => {
                let digest: [u8; 32] = hasher.finalize().into();
                if t.chunk_count != chunks || t.raw_bytes != bytes || t.stream_sha256 != digest {
                    return Err(corrupt(format!(
                        "received {chunks} chunks / {bytes} bytes with digest {}, the catalog records {} / {} with {}",
                        hex::encode(digest),
                        t.chunk_count,
                        t.raw_bytes,
                        hex::encode(&t.stream_sha256)
                    )));
                }
                sink.flush().await.map_err(sink_err)?;
                return Ok(bytes);
            }
            None => return Err(corrupt("the stream ended before its trailer".into())),
        }
    }
}
