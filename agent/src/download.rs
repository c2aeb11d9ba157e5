//! Reading a stored part back from the controller into a sink (a pipe to pg_restore, a
//! spool file). Every chunk is checked against its id, and the whole stream against the
//! digest recorded when it was stored: a restore never consumes bytes it has not verified.

use sha2::{Digest, Sha256};
use tidemark_core::chunk;
use tidemark_core::ids::{BackupId, ChunkId};
use tidemark_proto::ReadPartRequest;
use tidemark_proto::agent_service_client::AgentServiceClient;
use tidemark_proto::read_part_message::Msg;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tonic::transport::Channel;

use crate::progress::Progress;

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("reading backup {backup} part {part}: {}", .status.message())]
    Rpc {
        backup: BackupId,
        part: String,
        status: tonic::Status,
    },
    #[error("reading backup {backup} part {part}: {what}")]
    Corrupt {
        backup: BackupId,
        part: String,
        what: String,
    },
    #[error("writing backup {backup} part {part} out: {source}")]
    Sink {
        backup: BackupId,
        part: String,
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
    let rpc = |status| DownloadError::Rpc {
        backup,
        part: part.to_string(),
        status,
    };
    let corrupt = |what: String| DownloadError::Corrupt {
        backup,
        part: part.to_string(),
        what,
    };
    let req = ReadPartRequest {
        backup_id: backup.0,
        part: part.to_string(),
        job_id: job,
    };
    let mut stream = client
        .clone()
        .read_part(req)
        .await
        .map_err(rpc)?
        .into_inner();
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
                sink.write_all(&plain)
                    .await
                    .map_err(|source| DownloadError::Sink {
                        backup,
                        part: part.to_string(),
                        source,
                    })?;
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
                sink.flush().await.map_err(|source| DownloadError::Sink {
                    backup,
                    part: part.to_string(),
                    source,
                })?;
                return Ok(bytes);
            }
            None => return Err(corrupt("the stream ended before its trailer".into())),
        }
    }
}
