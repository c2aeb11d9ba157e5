//! An agent driven message by message: logical backups of demo-pg made of chosen chunks,
//! sent with their bytes or as references, for tests that need a chunk in a precise place
//! (a pack boundary, a reference racing garbage collection).

use tidemark_core::chunk;
use tidemark_core::ids::ChunkId;
use tidemark_proto::agent_service_client::AgentServiceClient;
use tidemark_proto::upload_part_message::Msg;
use tidemark_proto::{
    BeginBackupRequest, EncodedChunk, FinishBackupRequest, InstanceInfo, PartCheck, PartHeader,
    PartTrailer, RegisterRequest, UploadPartMessage, UploadPartResponse,
};
use tonic::transport::Channel;

use crate::fleet::Fleet;

/// `len` bytes that do not compress (xorshift), different per seed, so packs fill at a
/// known pace.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn msg(m: Msg) -> UploadPartMessage {
    UploadPartMessage { msg: Some(m) }
}

/// An agent of a fleet (agent:db1, whose instance is demo-pg, unless made with
/// [`RawAgent::connect_as`]), on a connection of its own.
pub struct RawAgent {
    pub rt: tokio::runtime::Runtime,
    pub client: AgentServiceClient<Channel>,
    instance: String,
}

impl RawAgent {
    pub fn connect(f: &Fleet) -> Self {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let client = crate::fleet::raw_agent_client(&f.pki, &f.controller.url, "agent:db1", &rt);
        Self {
            rt,
            client,
            instance: "demo-pg".into(),
        }
    }

    /// agent:HOST, registered with a PostgreSQL instance of its own, `instance`.
    pub fn connect_as(f: &Fleet, host: &str, instance: &str) -> Self {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut client = crate::fleet::raw_agent_client(
            &f.pki,
            &f.controller.url,
            &format!("agent:{host}"),
            &rt,
        );
        rt.block_on(client.register(RegisterRequest {
            host: host.into(),
            agent_version: "test".into(),
            instances: vec![InstanceInfo {
                name: instance.into(),
                engine: "postgresql".into(),
                ..Default::default()
            }],
            ..Default::default()
        }))
        .unwrap();
        Self {
            rt,
            client,
            instance: instance.into(),
        }
    }

    /// Begin a logical backup of the agent's instance with one part, db:app.
    pub fn begin(&mut self) -> i64 {
        self.rt
            .block_on(self.client.begin_backup(BeginBackupRequest {
                instance: self.instance.clone(),
                kind: "logical".into(),
                parts: vec!["db:app".into()],
                ..Default::default()
            }))
            .unwrap()
            .into_inner()
            .backup_id
    }

    /// Upload `chunks` (with their bytes, or as references) as the backup's part; `between`
    /// runs after every chunk was sent and before the trailer is.
    pub fn upload(
        &mut self,
        backup: i64,
        chunks: &[(&[u8], bool)],
        between: impl FnOnce(),
    ) -> Result<UploadPartResponse, tonic::Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let mut client = self.client.clone();
        let upload = self.rt.spawn(async move {
            client
                .upload_part(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
        });
        let send = |m| self.rt.block_on(tx.send(msg(m))).unwrap();
        send(Msg::Header(PartHeader {
            backup_id: backup,
            part: "db:app".into(),
            format: "sql".into(),
        }));
        let mut stream = Vec::new();
        for (plain, with_data) in chunks {
            stream.extend_from_slice(plain);
            send(Msg::Chunk(EncodedChunk {
                id: ChunkId::of(plain).0.to_vec(),
                raw_len: plain.len() as u32,
                data: if *with_data {
                    chunk::encode(plain)
                } else {
                    Vec::new()
                },
            }));
        }
        between();
        send(Msg::Trailer(PartTrailer {
            stream_sha256: ChunkId::of(&stream).0.to_vec(),
            raw_bytes: stream.len() as u64,
            chunk_count: chunks.len() as u64,
        }));
        drop(tx);
        Ok(self.rt.block_on(upload).unwrap()?.into_inner())
    }

    /// Finish a backup whose part is stored, its check passed.
    pub fn finish(&mut self, backup: i64) -> Result<(), tonic::Status> {
        self.rt
            .block_on(self.client.finish_backup(FinishBackupRequest {
                backup_id: backup,
                checks: vec![PartCheck {
                    part: "db:app".into(),
                    ok: true,
                    detail: "raw upload".into(),
                }],
                ..Default::default()
            }))
            .map(|_| ())
    }

    /// A complete backup of `chunks`; its id.
    pub fn backup(&mut self, chunks: &[(&[u8], bool)]) -> i64 {
        let id = self.begin();
        self.upload(id, chunks, || {}).unwrap();
        self.finish(id).unwrap();
        id
    }
}
