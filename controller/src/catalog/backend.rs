//! Where the catalog lives. Both backends run the same SQL through sqlx's `Any` driver;
//! what differs is here: how the schema is created and upgraded, how a connection is set
//! up, how writing transactions are kept from interleaving, and how one controller of
//! several becomes the scheduler.
//!
//! - [`Sqlite`], the default: a file in the controller's data directory, for one controller.
//! - [`Postgres`]: a database several controllers share.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

use super::{CatalogError, Db, Result, migrations};

/// Advisory lock keys (PostgreSQL), per database: "tide" followed by a number.
const LOCK_MIGRATE: i64 = 0x7469_6465_0001;
const LOCK_WRITE: i64 = 0x7469_6465_0002;
const LOCK_SCHEDULER: i64 = 0x7469_6465_0003;

#[async_trait]
pub(crate) trait Backend: Send + Sync {
    /// "sqlite" or "postgres", for logs and status.
    fn name(&self) -> &'static str;
    /// Whether other controllers may be using the same catalog.
    fn shared(&self) -> bool;
    /// Create or upgrade the schema, on a connection of its own.
    async fn migrate(&self) -> Result<()>;
    /// A pool of `max` connections, each set up for the catalog.
    async fn pool(&self, max: u32) -> Result<sqlx::AnyPool>;
    /// Begin a transaction that writes. Writing transactions run one at a time, on every
    /// backend: the catalog's read-check-write transactions (retention's premises, an
    /// upload's chunks still stored) rely on it.
    async fn begin_write(&self, writer: &sqlx::AnyPool) -> Result<sqlx::Transaction<'static, Db>>;
    /// Try to become the one controller that runs schedules and drills. None: another
    /// controller holds it.
    async fn try_lead(&self) -> Result<Option<Leadership>>;
}

/// The right to run the scheduler, held while [`Leadership::holds`] says so.
pub struct Leadership {
    /// PostgreSQL: the session that holds the advisory lock. The server releases it when
    /// the session ends, so a controller that dies hands leadership on.
    session: Option<sqlx::PgConnection>,
}

impl Leadership {
    /// Is it still held? A lost session (a network split, a restarted server) lost the lock.
    pub async fn holds(&mut self) -> bool {
        match &mut self.session {
            None => true,
            Some(conn) => {
                let check = sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
                    .bind(LOCK_SCHEDULER);
                // Taking a session lock we hold stacks it; release the extra one at once.
                match tokio::time::timeout(Duration::from_secs(10), check.fetch_one(&mut *conn))
                    .await
                {
                    Ok(Ok(true)) => {
                        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                            .bind(LOCK_SCHEDULER)
                            .execute(&mut *conn)
                            .await;
                        true
                    }
                    _ => false,
                }
            }
        }
    }
}

/// The catalog named by the config: a PostgreSQL URL, or else SQLite at `sqlite_path`.
pub(crate) fn choose(url: Option<&str>, sqlite_path: PathBuf) -> Result<Box<dyn Backend>> {
    match url {
        None => Ok(Box::new(Sqlite { path: sqlite_path })),
        Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
            Ok(Box::new(Postgres { url: u.to_string() }))
        }
        Some(u) => Err(CatalogError::Config(format!(
            "catalog url {u:?} is not postgres://USER@HOST/DB"
        ))),
    }
}

pub(crate) struct Sqlite {
    pub path: PathBuf,
}

impl Sqlite {
    fn options(&self) -> Result<SqliteConnectOptions> {
        Ok(SqliteConnectOptions::from_str("sqlite://")?
            .filename(&self.path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk when it returns; the catalog's word is the product.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30)))
    }
}

#[async_trait]
impl Backend for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn shared(&self) -> bool {
        false
    }

    async fn migrate(&self) -> Result<()> {
        let mut conn = sqlx::SqliteConnection::connect_with(&self.options()?).await?;
        migrations::run_sqlite(&mut conn).await?;
        conn.close().await?;
        Ok(())
    }

    async fn pool(&self, max: u32) -> Result<sqlx::AnyPool> {
        let url = sqlx::ConnectOptions::to_url_lossy(&self.options()?);
        let pool = sqlx::any::AnyPoolOptions::new()
            .max_connections(max)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // The URL does not carry these; every pooled connection needs them.
                    sqlx::raw_sql(
                        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 30000;",
                    )
                    .execute(conn)
                    .await?;
                    Ok(())
                })
            })
            .connect(url.as_str())
            .await?;
        Ok(pool)
    }

    async fn begin_write(&self, writer: &sqlx::AnyPool) -> Result<sqlx::Transaction<'static, Db>> {
        // IMMEDIATE takes the write lock at BEGIN: a deferred transaction that reads first
        // and then writes fails with "database is locked" when another connection wrote in
        // between, instead of waiting its turn.
        Ok(writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    async fn try_lead(&self) -> Result<Option<Leadership>> {
        Ok(Some(Leadership { session: None }))
    }
}

pub(crate) struct Postgres {
    pub url: String,
}

#[async_trait]
impl Backend for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn shared(&self) -> bool {
        true
    }

    async fn migrate(&self) -> Result<()> {
        let mut conn = sqlx::PgConnection::connect(&self.url).await?;
        // Two controllers starting together: one migrates, the other then finds it done.
        let mut tx = conn.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK_MIGRATE)
            .execute(&mut *tx)
            .await?;
        migrations::run_postgres(&mut tx).await?;
        tx.commit().await?;
        conn.close().await?;
        Ok(())
    }

    async fn pool(&self, max: u32) -> Result<sqlx::AnyPool> {
        Ok(sqlx::any::AnyPoolOptions::new()
            .max_connections(max)
            .connect(&self.url)
            .await?)
    }

    async fn begin_write(&self, writer: &sqlx::AnyPool) -> Result<sqlx::Transaction<'static, Db>> {
        // One lock for all writing transactions of every controller sharing the catalog:
        // the same one-writer-at-a-time SQLite gives, so that a transaction's checks still
        // hold at its commit under READ COMMITTED. Released at commit or rollback.
        let mut tx = writer.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK_WRITE)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    async fn try_lead(&self) -> Result<Option<Leadership>> {
        let mut conn = sqlx::PgConnection::connect(&self.url).await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK_SCHEDULER)
            .fetch_one(&mut conn)
            .await?;
        if got {
            Ok(Some(Leadership {
                session: Some(conn),
            }))
        } else {
            conn.close().await?;
            Ok(None)
        }
    }
}
