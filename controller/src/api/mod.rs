//! The controller's gRPC services and the state they share.

mod admin_service;
mod agent_service;
pub mod auth;
mod convert;
pub(crate) mod error;
pub(crate) mod jobs;
mod keys;
mod read;
pub(crate) mod recovery;
mod retention;
mod sessions;
pub mod status_buffer;
mod upload;
mod verify;
mod wal;

use std::sync::Arc;

use tidemark_core::ids::{BackupId, ChunkId, JobId};
use tidemark_core::tls::TlsMaterial;
use tidemark_proto::MAX_MESSAGE_BYTES;
use tidemark_proto::admin_service_server::AdminServiceServer;
use tidemark_proto::agent_service_server::AgentServiceServer;
use tokio::net::TcpListener;

use crate::catalog::{BackupRow, Catalog, JobRow};
use crate::store::ChunkStore;
use crate::store::verified::{self, ReadError, VerifiedChunk};
use error::ApiResult;
pub use recovery::fleet_status;
pub use retention::apply as apply_retention;
use sessions::Sessions;

pub struct State {
    pub catalog: Catalog,
    pub store: Arc<dyn ChunkStore>,
    /// The encryption keys, when the store is encrypted at rest.
    pub keys: Option<Arc<crate::keys::Keyring>>,
    /// Certificates refused whatever they ask.
    pub revoked: Arc<auth::Revoked>,
    pub sessions: Arc<Sessions>,
    /// Archiver status reports waiting to be written.
    pub status: Arc<status_buffer::StatusBuffer>,
    /// Parts and WAL files being uploaded right now: one upload of each at a time.
    pub uploading: upload::ActiveUploads,
    pub drills: Arc<crate::drill::Drills>,
    /// Each instance's retention policy, from the config.
    pub retention: std::collections::HashMap<String, crate::retention::Policy>,
    /// Held while retention is applied: one run at a time (the CLI's or the schedule's).
    pub retention_running: tokio::sync::Mutex<()>,
    pub schedule: crate::config::ScheduleSettings,
    /// Percent of the chunks a scheduled verification reads.
    pub verify_sample: u32,
    pub verify_timeout: std::time::Duration,
    pub retention_timeout: std::time::Duration,
    pub background: crate::schedule::Background,
    /// Whether this controller runs schedules and drills (see `cluster`).
    pub leading: std::sync::atomic::AtomicBool,
}

/// Verify the store (shared by `tidemark verify` and the scheduler).
pub async fn verify_store(
    state: &State,
    r: &tidemark_proto::VerifyRequest,
) -> ApiResult<tidemark_proto::VerifyReport> {
    verify::run(state, r).await
}

impl State {
    /// Agents connected to some controller: this one, or another live one sharing the
    /// catalog.
    pub async fn connected_agents(&self) -> ApiResult<std::collections::HashSet<String>> {
        let mut all = if self.catalog.shared() {
            self.catalog.agents_held_elsewhere().await?
        } else {
            Default::default()
        };
        all.extend(self.sessions.connected());
        Ok(all)
    }

    /// Does this controller run schedules and drills now? Always, on a catalog of its own.
    pub fn leading(&self) -> bool {
        self.leading.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A backup from the catalog, or NotFound.
    pub async fn backup(&self, id: BackupId) -> ApiResult<BackupRow> {
        self.catalog
            .backup(id)
            .await?
            .ok_or_else(|| error::ApiError::NotFound(format!("backup {id} does not exist")))
    }

    /// A job from the catalog, or NotFound.
    pub async fn job(&self, id: JobId) -> ApiResult<JobRow> {
        self.catalog
            .job(id)
            .await?
            .ok_or_else(|| error::ApiError::NotFound(format!("job {id} does not exist")))
    }

    /// Read a chunk with its digest checked. A chunk found missing or corrupt is also dropped
    /// from the catalog, so that it is no longer offered for dedup and a later upload of the
    /// same content heals it.
    pub async fn read_chunk(&self, id: &ChunkId) -> ApiResult<VerifiedChunk> {
        let pack = self.catalog.chunk_location(id).await?.flatten();
        match verified::get(self.store.as_ref(), self.keys.as_deref(), id, pack.as_ref()).await {
            Ok(c) => Ok(c),
            Err(e @ (ReadError::Missing(_) | ReadError::Corrupt { .. })) => {
                self.catalog.forget_chunk(id).await?;
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Serve both services on `listener` until `shutdown` resolves.
pub async fn serve(
    state: Arc<State>,
    tls: &TlsMaterial,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let agent = AgentServiceServer::new(agent_service::AgentApi {
        state: state.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let revoked = state.revoked.clone();
    let admin = AdminServiceServer::new(admin_service::AdminApi { state })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // A revoked certificate is refused before either service sees what it asks.
    let (r1, r2) = (revoked.clone(), revoked);
    let agent =
        tonic::service::interceptor::InterceptedService::new(agent, move |req| r1.check(req));
    let admin =
        tonic::service::interceptor::InterceptedService::new(admin, move |req| r2.check(req));
    tonic::transport::Server::builder()
        .tls_config(tls.server_config())?
        // Room for a few chunks in flight per stream; the 64 KiB default stalls uploads.
        .initial_stream_window_size(Some(tidemark_core::tls::STREAM_WINDOW))
        .initial_connection_window_size(Some(tidemark_core::tls::CONNECTION_WINDOW))
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
        .add_service(agent)
        .add_service(admin)
        // TCP_NODELAY: without it, Nagle's algorithm meets the client's delayed ACK and
        // stalls the TLS handshake and small replies by ~40 ms each.
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await?;
    Ok(())
}
