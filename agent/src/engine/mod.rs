//! Database engines. Each engine runs its own native tools behind one [`Engine`] trait, in
//! its own folder (`postgres/`, `mariadb/`); what both need is in [`common`], and one
//! engine's folder never imports from another's. The daemon, the sampler and the sandbox
//! know engines only through [`of`], the registry, which maps the engine a config or a
//! job names to its implementation.
//!
//! Vocabulary: an *instance* is one configured database server on this host; a *logical*
//! backup is a dump (pg_dump, mariadb-dump), a *base* backup a physical copy
//! (pg_basebackup, mariabackup); the *log archiver* ships the write-ahead log (PostgreSQL
//! WAL, MariaDB binlogs) that point-in-time recovery replays; a *drill* restores a backup
//! on a sandbox host and reports evidence of what it recovered.
//!
//! # Adding an engine
//!
//! Three places in the agent, and the compiler points at every match to extend:
//!
//! 1. `config/instance.rs`: a variant of [`EngineKind`] (its arm in `EngineKind::defaults`:
//!    name, default port and users; an entry in `EngineKind::ALL`), its settings type with
//!    its [`EngineSettings`] variant, and its keys in the flat `InstanceTable` (and in
//!    `engine_keys`, so another engine's instance refuses them, and the `TryFrom` arm that
//!    reads them).
//! 2. A folder `engine/<name>/`: a type implementing [`Engine`], with one file per use case
//!    (backup kinds, restores, drill), reusing [`common`] and crate-level helpers (`tool`,
//!    `upload`, `download`, `osuser`, `sandbox`).
//! 3. This file: `pub mod <name>;` and one line in [`of`], the registry.
//!
//! Nothing else changes: the daemon (registration, jobs, status reports, the log
//! archivers), the sampler and the sandbox go through the trait. The controller, which
//! parses the engine's name at its catalog boundary, needs to know the name too.
//!
//! [`EngineKind`]: crate::config::EngineKind
//! [`EngineSettings`]: crate::config::EngineSettings

pub mod common;
pub mod mariadb;
pub mod postgres;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tidemark_proto::agent_service_client::AgentServiceClient;
use tidemark_proto::{
    ArchiverStatus, DrillJob, InstanceInfo, PhysicalRestore, RestoreJob, ToolVersion,
};
use tonic::transport::Channel;

use crate::config::{EngineKind, InstanceConfig, SandboxConfig};
use crate::error::AgentError;
use crate::job::{JobContext, JobResult};

/// The registry: the implementation of each engine the config can name. A job's engine is
/// its instance's, or for a physical restore or a drill, [`recovery_engine`]'s.
pub fn of(kind: EngineKind) -> &'static dyn Engine {
    match kind {
        EngineKind::Postgresql => &postgres::PostgresEngine,
        EngineKind::Mariadb => &mariadb::MariadbEngine,
    }
}

/// Every engine, in [`EngineKind::ALL`]'s order.
pub fn all() -> impl Iterator<Item = &'static dyn Engine> {
    EngineKind::ALL.into_iter().map(of)
}

/// The engine a physical restore or a drill is for: the one the controller names. A
/// controller of the version before `PhysicalRestore.engine` leaves it unspecified; then,
/// here and nowhere else, it is inferred as that version meant it: only a MariaDB restore
/// has binlogs to replay, and a job with no restore at all goes to PostgreSQL, which
/// reports what is missing.
/// An engine number this agent does not know (a newer controller's) is refused, never
/// taken for one it knows.
pub fn recovery_engine(restore: Option<&PhysicalRestore>) -> Result<EngineKind, AgentError> {
    let named = restore.map(|r| tidemark_proto::Engine::try_from(r.engine));
    Ok(match named {
        Some(Ok(tidemark_proto::Engine::Postgresql)) => EngineKind::Postgresql,
        Some(Ok(tidemark_proto::Engine::Mariadb)) => EngineKind::Mariadb,
        Some(Ok(tidemark_proto::Engine::Unspecified)) | None => {
            if restore.is_some_and(|r| r.binlog.is_some()) {
                EngineKind::Mariadb
            } else {
                EngineKind::Postgresql
            }
        }
        Some(Err(_)) => {
            return Err(AgentError::permanent(format!(
                "the controller asks for engine number {}, which this agent does not know; upgrade the agent",
                restore.map(|r| r.engine).unwrap_or_default()
            )));
        }
    })
}

/// Stop any server a drill left running in the sandbox, whichever its engine, then empty
/// the sandbox.
pub async fn wipe_sandbox(cfg: &SandboxConfig) -> Result<(), AgentError> {
    // Never stop a server in a directory that is not the sandbox (a mistyped dir).
    crate::sandbox::prepare(cfg)?;
    for engine in all() {
        engine.stop_sandbox_server(cfg).await;
    }
    crate::sandbox::remove_all(cfg)
}

/// What a backup job asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupKind {
    /// A dump of the databases (pg_dump, mariadb-dump).
    Logical,
    /// A physical copy of the whole instance (pg_basebackup, mariabackup).
    Base,
}

impl BackupKind {
    /// The protocol's `"logical"` or `"base"`.
    pub fn parse(kind: &str) -> Option<Self> {
        match kind {
            "logical" => Some(BackupKind::Logical),
            "base" => Some(BackupKind::Base),
            _ => None,
        }
    }
}

/// An instance as registration reports it.
pub struct Description {
    /// The versions of the tools the engine runs ("unavailable: ..." for a missing one).
    pub tools: Vec<ToolVersion>,
    /// The instance's facts; `error` is set when it could not be reached.
    pub instance: InstanceInfo,
}

/// What the daemon's log archivers last did, by instance name, for the status reports.
pub type ArchiverStatuses = Arc<Mutex<HashMap<String, ArchiverStatus>>>;

/// A task the daemon runs for as long as its session lasts.
pub type SessionTask = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// One database engine: everything the agent does with an instance of it, or with its
/// backups on a restore target or a sandbox.
#[async_trait]
pub trait Engine: Send + Sync {
    /// Which engine this is.
    fn kind(&self) -> EngineKind;

    /// The tool versions and instance facts registration reports. An instance that cannot
    /// be reached is still described, with the error, so `tidemark agents` shows it.
    async fn describe(&self, inst: &InstanceConfig) -> Description;

    /// Back up `inst`: run the engine's tool for `kind`, stream its output to the
    /// controller, check what was stored, and finish the backup.
    async fn backup(&self, ctx: &JobContext, inst: &InstanceConfig, kind: BackupKind) -> JobResult;

    /// Restore one part of a logical backup into a database of `inst`.
    async fn restore_logical(
        &self,
        ctx: &JobContext,
        inst: &InstanceConfig,
        job: &RestoreJob,
    ) -> JobResult;

    /// Restore a base backup into a new data directory on this host, set to recover to the
    /// job's target from the archived log. `inst` lends its tools and OS user: the host may
    /// not run the backup's instance.
    async fn restore_physical(
        &self,
        ctx: &JobContext,
        inst: &InstanceConfig,
        job: &PhysicalRestore,
    ) -> JobResult;

    /// On a sandbox host: restore and recover the job's backup in the sandbox, run its
    /// checks, empty the sandbox, and report the evidence.
    async fn drill(&self, ctx: &JobContext, sandbox: &SandboxConfig, job: &DrillJob) -> JobResult;

    /// The log archiver the daemon runs for `inst` while its session lasts, if this engine
    /// ships its log itself (MariaDB's binlogs); None when the server pushes it (PostgreSQL
    /// calls `wal-push` as its archive_command).
    fn log_archiver(
        &self,
        client: AgentServiceClient<Channel>,
        inst: &InstanceConfig,
        statuses: ArchiverStatuses,
    ) -> Option<SessionTask>;

    /// How archiving of `inst`'s log stands, for `tidemark status` and the metrics.
    /// `statuses` holds what the daemon's archivers last did.
    async fn archiver_status(
        &self,
        inst: &InstanceConfig,
        statuses: &ArchiverStatuses,
    ) -> ArchiverStatus;

    /// Run a probe query in `database` of `inst`; its raw tab-separated output.
    async fn probe(
        &self,
        inst: &InstanceConfig,
        database: &str,
        sql: &str,
    ) -> Result<String, AgentError>;

    /// The versions this sandbox can drill (PostgreSQL majors, MariaDB series), as the
    /// drill jobs name them.
    fn sandbox_versions(&self, sandbox: &SandboxConfig) -> Vec<u32>;

    /// Stop a server of this engine that a drill left running in the sandbox (the agent
    /// crashed or the session ended), before its files are removed.
    async fn stop_sandbox_server(&self, sandbox: &SandboxConfig);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_engine_is_registered_under_its_own_kind() {
        for kind in EngineKind::ALL {
            assert_eq!(of(kind).kind(), kind);
        }
        let kinds: Vec<EngineKind> = all().map(|e| e.kind()).collect();
        assert_eq!(kinds, EngineKind::ALL);
    }

    #[test]
    fn from_an_older_controller_a_restore_with_binlogs_is_mariadb_and_any_other_postgresql() {
        let mut p = PhysicalRestore::default();
        assert_eq!(recovery_engine(Some(&p)).unwrap(), EngineKind::Postgresql);
        assert_eq!(recovery_engine(None).unwrap(), EngineKind::Postgresql);
        p.binlog = Some(Default::default());
        assert_eq!(recovery_engine(Some(&p)).unwrap(), EngineKind::Mariadb);
        assert_eq!(BackupKind::parse("base"), Some(BackupKind::Base));
        assert_eq!(BackupKind::parse("snapshot"), None);
    }

    #[test]
    fn the_engine_the_controller_names_wins_over_the_inference() {
        let mut p = PhysicalRestore {
            engine: tidemark_proto::Engine::Mariadb.into(),
            ..Default::default()
        };
        assert_eq!(recovery_engine(Some(&p)).unwrap(), EngineKind::Mariadb);
        p.engine = tidemark_proto::Engine::Postgresql.into();
        p.binlog = Some(Default::default());
        assert_eq!(recovery_engine(Some(&p)).unwrap(), EngineKind::Postgresql);
        // A newer controller's engine is refused, not taken for one of ours.
        p.engine = 99;
        let e = recovery_engine(Some(&p)).unwrap_err();
        assert!(e.message().contains("engine number 99"), "{e}");
    }
}
