//! The catalog: what the stored bytes mean. Agents and their instances, backups and their
//! parts, each part's manifest (its chunks in order), the chunks known to be durably stored,
//! and jobs. SQLite in the controller's data directory, created and upgraded by migrations.

mod agents;
mod audit;
mod backups;
mod base;
mod binlog;
mod drills;
mod jobs;
mod keys;
mod migrations;
mod retention;
mod samples;
mod schedules;
mod status;
mod verify;
mod wal;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

pub use agents::{AgentRow, InstanceFacts, InstanceRow, Registered, Registration};
pub use backups::{BackupRow, ManifestEntry, NewChunk, PartRow, PartStats};
pub use base::BaseBackupRow;
pub use binlog::BinlogCoordRow;
pub use drills::{CheckResult, DrillEvidence, DrillRow, DrillState};
pub use jobs::{JobRow, JobState};
pub use keys::{DataKeyRow, KekRow, Rotation};
pub use retention::Expiry;
pub use schedules::RunRow;
pub use status::ArchiverRow;
pub use wal::{WalFileRow, WalOutcome};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog: {0}")]
    Db(#[from] sqlx::Error),
    #[error("catalog migration {version} failed: {source}")]
    Migration { version: i64, source: sqlx::Error },
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
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Pooled connections to a SQLite catalog, each set up as the catalog needs.
fn pool_options(max: u32) -> sqlx::any::AnyPoolOptions {
    sqlx::any::AnyPoolOptions::new()
        .max_connections(max)
        .after_connect(|conn, _| {
            Box::pin(async move {
                // FULL: a commit is on disk when it returns; the catalog's word is the product.
                sqlx::raw_sql(
                    "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 30000;",
                )
                .execute(conn)
                .await?;
                Ok(())
            })
        })
}

impl Catalog {
    /// Open (creating if needed) the catalog at `path` and bring its schema up to date.
    pub async fn open(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk when it returns; the catalog's word is the product.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        // Migrations run on a connection of their own, closed before the pool opens: a pooled
        // connection that had read the old schema would describe a changed table's columns
        // by it (sqlx caches a statement's columns when it prepares it).
        {
            use sqlx::Connection;
            let mut conn = sqlx::SqliteConnection::connect_with(&opts).await?;
            migrations::run(&mut conn).await?;
            conn.close().await?;
        }
        sqlx::any::install_default_drivers();
        let url = sqlx::ConnectOptions::to_url_lossy(&opts);
        let pool = pool_options(4).connect(url.as_str()).await?;
        let writer = pool_options(1).connect(url.as_str()).await?;
        Ok(Self { pool, writer })
    }

    /// A transaction that writes. It takes SQLite's write lock at BEGIN (IMMEDIATE): a
    /// deferred transaction that reads first and then writes fails at once with "database
    /// is locked" when another connection wrote in between, instead of waiting its turn.
    pub(crate) async fn write_tx(&self) -> Result<sqlx::Transaction<'static, Db>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// After a restart nothing is in flight: whatever was running was interrupted.
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
        Ok((b, j))
    }
}

#[cfg(test)]
pub(crate) async fn test_catalog() -> (Catalog, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cat = Catalog::open(&dir.path().join("catalog.db")).await.unwrap();
    (cat, dir)
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    /// Every pooled connection commits durably, enforces foreign keys and waits for locks.
    #[tokio::test]
    async fn pooled_connections_are_set_up_for_durability() {
        let (cat, _dir) = super::test_catalog().await;
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
