//! An agent driven message by message: logical backups of demo-pg and WAL pushes made of
//! chosen chunks, sent with their bytes or as references, for tests that need a chunk in a
//! precise place (a pack boundary, a reference racing garbage collection) or a stream an
//! older agent would send.

use std::future::Future;

use tidemark_core::chunk;
use tidemark_core::ids::ChunkId;
use tidemark_proto::agent_service_client::AgentServiceClient;
use tidemark_proto::upload_part_message::Msg;
use tidemark_proto::{
    BeginBackupRequest, EncodedChunk, FinishBackupRequest, InstanceInfo, PartCheck, PartHeader,
    PartTrailer, PushWalResponse, RegisterRequest, UploadPartMessage, UploadPartResponse,
    WalHeader,
};
use tokio_stream::wrappers::ReceiverStream;
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
        let header = Msg::Header(PartHeader {
            backup_id: backup,
            part: "db:app".into(),
            format: "sql".into(),
        });
        self.stream(header, chunks, between, |mut c, s| async move {
            c.upload_part(s).await
        })
    }

    /// Push `chunks` (with their bytes, or as references) as the archived file `header`
    /// names.
    pub fn push_wal(
        &mut self,
        header: WalHeader,
        chunks: &[(&[u8], bool)],
    ) -> Result<PushWalResponse, tonic::Status> {
        self.stream(
            Msg::Wal(header),
            chunks,
            || {},
            |mut c, s| async move { c.push_wal(s).await },
        )
    }

    /// Send `first`, then `chunks`, then (after `between`) the trailer over `rpc`.
    fn stream<R, F, Fut>(
        &mut self,
        first: Msg,
        chunks: &[(&[u8], bool)],
        between: impl FnOnce(),
        rpc: F,
    ) -> Result<R, tonic::Status>
    where
        R: Send + 'static,
        F: FnOnce(AgentServiceClient<Channel>, ReceiverStream<UploadPartMessage>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let call = self
            .rt
            .spawn(rpc(self.client.clone(), ReceiverStream::new(rx)));
        // A stream the controller refused partway stops taking messages; its reason comes
        // back from the call.
        let send = |m| {
            let _ = self.rt.block_on(tx.send(msg(m)));
        };
        send(first);
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
        Ok(self.rt.block_on(call).unwrap()?.into_inner())
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
