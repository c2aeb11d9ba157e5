//! The catalog: what the stored bytes mean. Agents and their instances, backups and their
//! parts, each part's manifest (its chunks in order), the chunks known to be durably stored,
//! and jobs. SQLite in the controller's data directory, created and upgraded by migrations.

mod agents;
mod audit;
mod backend;
mod backups;
mod base;
mod binlog;
mod controllers;
mod drills;
mod jobs;
mod keys;
mod migrations;
mod rebuild;
mod retention;
mod samples;
mod schedules;
mod states;
mod status;
mod store_identity;
mod verify;
pub use verify::Held;
mod wal;

use std::path::Path;
use std::sync::Arc;

use backend::Backend;
pub use backend::Leadership;

pub use agents::{AgentRow, InstanceFacts, InstanceRow, Registered, Registration};
pub use backups::{BackupRow, ManifestEntry, NewChunk, PartRow, PartStats};
pub use base::BaseBackupRow;
pub use binlog::BinlogCoordRow;
pub use controllers::{stopped_message, stopped_the_work};
pub use drills::{CheckResult, DrillEvidence, DrillRow};
pub use jobs::JobRow;
pub use keys::{DataKeyRow, KekRow, Rotation};
pub use retention::Expiry;
pub use schedules::RunRow;
pub use states::{BackupKind, BackupStatus, DrillState, Engine, JobState, RunState};
pub use status::ArchiverRow;
pub use wal::{WalFileRow, WalOutcome};

/// How long after a restore job ends its agent may still fetch WAL (the operator may start
/// the restored server later, or it was created with `--start` off), and so how long
/// retention keeps the backup it restored and the WAL after it.
const RESTORE_GRANT_SECS: i64 = 24 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog: {0}")]
    Db(#[from] sqlx::Error),
    #[error("catalog migration {version} failed: {source}")]
    Migration { version: i64, source: sqlx::Error },
    #[error("catalog: {0}")]
    Config(String),
    #[error("catalog holds malformed data: {0}")]
    Corrupt(String),
    /// A reference to a chunk that was forgotten (garbage-collected, or found damaged) while
    /// the upload that makes it ran.
    #[error(
        "chunk {0} is no longer stored: it was removed (garbage collection, or verify found it damaged) while this upload referred to it; nothing was recorded, retry the upload"
    )]
    ChunkGone(tidemark_core::ids::ChunkId),
}

pub type Result<T> = std::result::Result<T, CatalogError>;

/// The database the catalog's SQL runs on, named once so that the queries do not say which.
pub(crate) type Db = sqlx::Any;
pub(crate) type DbRow = <Db as sqlx::Database>::Row;
pub(crate) type DbConn = <Db as sqlx::Database>::Connection;

#[derive(Clone)]
pub struct Catalog {
    /// Reads: in WAL mode they run beside the writer and never wait for it.
    pool: sqlx::AnyPool,
    /// Writes, on one connection. SQLite runs one writer at a time anyway; queueing writers
    /// here, in order, replaces SQLite's busy handler, whose sleeps of up to 100 ms between
    /// retries left a few unlucky writers waiting seconds under load (1,000 agents' status
    /// reports). Nothing may wait for a second write while holding this connection.
    writer: sqlx::AnyPool,
    backend: Arc<dyn Backend>,
    /// This controller's id among those sharing the catalog.
    me: Arc<str>,
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Catalog {
    /// Open (creating if needed) the SQLite catalog at `path` and bring its schema up to date.
    #[cfg(test)]
    pub async fn open(path: &Path) -> Result<Self> {
        Self::connect(Box::new(backend::Sqlite {
            path: path.to_path_buf(),
        }))
        .await
    }

    /// Open the catalog the config names: `url` (PostgreSQL), or SQLite at `sqlite_path`.
    pub async fn open_configured(url: Option<&str>, sqlite_path: &Path) -> Result<Self> {
        Self::connect(backend::choose(url, sqlite_path.to_path_buf())?).await
    }

    async fn connect(backend: Box<dyn Backend>) -> Result<Self> {
        // Migrations run on a connection of their own, closed before the pools open: a pooled
        // connection that had read the old schema would describe a changed table's columns
        // by it (sqlx caches a statement's columns when it prepares it).
        backend.migrate().await?;
        sqlx::any::install_default_drivers();
        Self::with_pools(Arc::from(backend)).await
    }

    /// The pools on a migrated catalog, for a controller process of its own.
    async fn with_pools(backend: Arc<dyn Backend>) -> Result<Self> {
        Ok(Self {
            pool: backend.pool(4).await?,
            writer: backend.pool(1).await?,
            backend,
            me: controllers::new_controller_id().into(),
        })
    }

    /// The same catalog as seen by another controller process (a test's second controller).
    #[cfg(test)]
    pub async fn another_controller(&self) -> Result<Self> {
        Self::with_pools(self.backend.clone()).await
    }

    /// A transaction that writes; writing transactions run one at a time.
    pub(crate) async fn write_tx(&self) -> Result<sqlx::Transaction<'static, Db>> {
        self.backend.begin_write(&self.writer).await
    }

    /// "sqlite" or "postgres".
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Whether other controllers may share this catalog.
    pub fn shared(&self) -> bool {
        self.backend.shared()
    }

    /// Try to become the controller that runs schedules and drills.
    pub async fn try_lead(&self) -> Result<Option<Leadership>> {
        self.backend.try_lead().await
    }

    /// After a restart of the only controller (SQLite) nothing is in flight: whatever was
    /// running was interrupted. Several controllers (PostgreSQL) use
    /// `reap_stopped_controllers` instead, which fails only a stopped controller's work.
    /// Write an online, transactionally consistent copy of a SQLite catalog to `path`
    /// (`VACUUM INTO`: a reader's snapshot, never a copy of a file being written). False
    /// for a PostgreSQL catalog, which is backed up as that database is.
    pub async fn snapshot_into(&self, path: &Path) -> Result<bool> {
        if self.backend.shared() {
            return Ok(false);
        }
        let path = path
            .to_str()
            .ok_or_else(|| CatalogError::Config(format!("{} is not UTF-8", path.display())))?;
        sqlx::query("VACUUM INTO $1")
            .bind(path)
            .execute(&self.pool)
            .await?;
        Ok(true)
    }

    /// Close every connection (before the catalog's file is replaced).
    pub async fn close(self) {
        self.pool.close().await;
        self.writer.close().await;
    }

    pub async fn fail_interrupted(&self, reason: &str) -> Result<(u64, u64)> {
        let b = sqlx::query(
            "UPDATE backups SET status = 'failed', reason = $1, finished_at = $2 WHERE status = 'running'",
        )
        .bind(reason)
        .bind(now())
        .execute(&self.writer)
        .await?
        .rows_affected();
        let j = sqlx::query(
            "UPDATE jobs SET state = 'failed', message = $1, finished_at = $2 WHERE state IN ('queued', 'running')",
        )
        .bind(reason)
        .bind(now())
        .execute(&self.writer)
        .await?
        .rows_affected();
        // Only one controller uses a SQLite catalog: no other is alive to hold anything.
        sqlx::raw_sql("DELETE FROM controllers; UPDATE agents SET controller = NULL")
            .execute(&self.writer)
            .await?;
        Ok((b, j))
    }
}

/// A new, empty catalog for a test: SQLite in a temporary directory, or, when
/// `TIDEMARK_TEST_POSTGRES` names a PostgreSQL server (as `with-postgres` sets it), a new
/// database there. The catalog's tests run on both: that is the backends' conformance suite.
#[cfg(test)]
pub(crate) async fn test_catalog() -> (Catalog, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cat = match std::env::var("TIDEMARK_TEST_POSTGRES") {
        Ok(server) => {
            let url = test_database(&server).await;
            Catalog::connect(Box::new(backend::Postgres { url }))
                .await
                .unwrap()
        }
        Err(_) => Catalog::open(&dir.path().join("catalog.db")).await.unwrap(),
    };
    (cat, dir)
}

/// A running logical backup of instance `pg` (agent `db1`) whose one part, `db:a`, is
/// `chunks` in order, each newly stored (raw length, and where: a pack, or None for an
/// object of its own). For tests that need the catalog to know stored chunks.
#[cfg(test)]
pub(crate) async fn test_backup(
    cat: &Catalog,
    chunks: &[(
        tidemark_core::ids::ChunkId,
        u32,
        Option<crate::store::PackLoc>,
    )],
) -> tidemark_core::ids::BackupId {
    let b = cat
        .create_backup(
            "pg",
            "db1",
            BackupKind::Logical,
            None,
            &["db:a".into()],
            &[],
            "",
            "",
        )
        .await
        .unwrap();
    let entries: Vec<ManifestEntry> = chunks
        .iter()
        .enumerate()
        .map(|(seq, (id, raw_len, _))| ManifestEntry {
            seq: seq as u64,
            id: *id,
            raw_len: *raw_len,
        })
        .collect();
    let new: Vec<NewChunk> = chunks
        .iter()
        .map(|(id, raw_len, pack)| NewChunk {
            id: *id,
            raw_len: *raw_len,
            stored_len: pack
                .as_ref()
                .map_or(u64::from(*raw_len), |p| u64::from(p.len)),
            pack: pack.clone(),
        })
        .collect();
    cat.add_manifest(b, "db:a", &entries, &new).await.unwrap();
    b
}

/// Create a database of its own for one test on the server at `server`; its URL.
#[cfg(test)]
async fn test_database(server: &str) -> String {
    use sqlx::{ConnectOptions, Connection, Executor};
    use std::str::FromStr;
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("catalog_{}_{n}", std::process::id());
    let opts = sqlx::postgres::PgConnectOptions::from_str(server)
        .expect("TIDEMARK_TEST_POSTGRES is a postgres:// URL");
    let mut conn = sqlx::PgConnection::connect_with(&opts)
        .await
        .expect("connecting to TIDEMARK_TEST_POSTGRES");
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap();
    conn.close().await.unwrap();
    opts.database(&name).to_url_lossy().to_string()
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    /// Every pooled connection commits durably, enforces foreign keys and waits for locks.
    #[tokio::test]
    async fn pooled_connections_are_set_up_for_durability() {
        let dir = tempfile::tempdir().unwrap();
        let cat = super::Catalog::open(&dir.path().join("c.db"))
            .await
            .unwrap();
        for pool in [&cat.pool, &cat.writer] {
            let get = |sql: &'static str| async move {
                sqlx::query(sql)
                    .fetch_one(pool)
                    .await
                    .unwrap()
                    .get::<i64, _>(0)
            };
            assert_eq!(get("PRAGMA synchronous").await, 2, "FULL");
            assert_eq!(get("PRAGMA foreign_keys").await, 1);
            assert_eq!(get("PRAGMA busy_timeout").await, 30_000);
            let mode: String = sqlx::query("PRAGMA journal_mode")
                .fetch_one(pool)
                .await
                .unwrap()
                .get(0);
            assert_eq!(mode, "wal");
        }
    }
}
