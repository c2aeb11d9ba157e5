//! Operations: what the controller does, whoever asks (an operator through the gRPC layer,
//! the scheduler, a drill). Each file is one use case: backups arriving (`upload`), the WAL
//! and binlog archive (`archive`), restore planning (`restore`), recovery windows
//! (`window`), the fleet's status (`status`), retention and collection (`retention`),
//! verifying the store (`verify`), jobs on agents (`jobs`) and the encryption keys (`keys`).
//! They speak the protocol's message types as plain data but know nothing of gRPC itself;
//! their errors carry a kind (`OpsError`), which the gRPC layer maps to a status code.

pub mod agents;
pub mod archive;
pub mod background;
pub mod backups;
pub mod drills;
mod error;
pub mod jobs;
pub mod keys;
pub mod restore;
pub mod retention;
pub mod revoked;
pub mod sessions;
pub mod status;
pub mod status_buffer;
pub mod upload;
pub mod verify;
pub mod window;

use std::sync::Arc;

use tidemark_core::ids::{BackupId, ChunkId, JobId};

use crate::catalog::{BackupRow, Engine, InstanceRow, JobRow};
use crate::repo::Repository;
use crate::repo::verified::VerifiedChunk;
pub use error::{OpsError, OpsResult};
use sessions::Sessions;

/// What the operations share: the repository, the agents connected here, settings from the
/// config, and the work running in the background.
pub struct State {
    /// The catalog, the store and the keys: where every byte goes in and comes out.
    pub repo: Repository,
    /// Certificates refused whatever they ask.
    pub revoked: Arc<revoked::Revoked>,
    pub sessions: Arc<Sessions>,
    /// Archiver status reports waiting to be written.
    pub status: Arc<status_buffer::StatusBuffer>,
    /// Parts and WAL files being uploaded right now: one upload of each at a time.
    pub uploading: upload::ActiveUploads,
    pub drills: Arc<drills::Drills>,
    pub settings: Settings,
    /// Held while retention is applied: one run at a time (the CLI's or the schedule's).
    pub retention_running: tokio::sync::Mutex<()>,
    pub background: background::Background,
    /// Whether this controller runs schedules and drills (see `cluster`).
    pub leading: std::sync::atomic::AtomicBool,
}

/// What the config says that operations and the scheduler read.
pub struct Settings {
    pub schedule: crate::config::ScheduleSettings,
    /// Each instance's retention policy.
    pub retention: std::collections::HashMap<String, crate::retention::Policy>,
    /// Percent of the chunks a scheduled verification reads.
    pub verify_sample: u32,
    pub verify_timeout: std::time::Duration,
    pub retention_timeout: std::time::Duration,
    /// How old a pack nothing in the catalog refers to must be before collection deletes
    /// it: an upload in flight writes packs before it commits them.
    pub orphan_grace: std::time::Duration,
}

impl State {
    /// Agents connected to some controller: this one, or another live one sharing the
    /// catalog.
    pub async fn connected_agents(&self) -> OpsResult<std::collections::HashSet<String>> {
        let mut all = if self.repo.catalog.shared() {
            self.repo.catalog.agents_held_elsewhere().await?
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
    pub async fn backup(&self, id: BackupId) -> OpsResult<BackupRow> {
        self.repo
            .catalog
            .backup(id)
            .await?
            .ok_or_else(|| error::OpsError::NotFound(format!("backup {id} does not exist")))
    }

    /// A job from the catalog, or NotFound.
    pub async fn job(&self, id: JobId) -> OpsResult<JobRow> {
        self.repo
            .catalog
            .job(id)
            .await?
            .ok_or_else(|| error::OpsError::NotFound(format!("job {id} does not exist")))
    }

    /// Read a chunk with its digest checked (see [`Repository::read_chunk`]).
    pub async fn read_chunk(&self, id: &ChunkId) -> OpsResult<VerifiedChunk> {
        Ok(self.repo.read_chunk(id).await?)
    }
}

impl From<Engine> for tidemark_proto::Engine {
    fn from(e: Engine) -> Self {
        match e {
            Engine::Postgresql => tidemark_proto::Engine::Postgresql,
            Engine::Mariadb => tidemark_proto::Engine::Mariadb,
        }
    }
}

/// A registered instance, or NotFound.
pub async fn instance(state: &State, name: &str) -> OpsResult<InstanceRow> {
    state.repo.catalog.instance(name).await?.ok_or_else(|| {
        OpsError::NotFound(format!(
            "no instance {name:?} is registered; tidemark agents lists them"
        ))
    })
}
