//! Schema migrations, embedded in the binary and applied in order, each in its own
//! transaction. A catalog newer than this binary is refused rather than guessed at.
//!
//! SQLite's catalog grew one migration at a time. PostgreSQL's starts at version 14, whose
//! file creates the whole schema as it stood then; later versions come in pairs.

use sqlx::{PgConnection, Row, SqliteConnection};

use super::{CatalogError, Result, now};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_initial.sql")),
    (2, include_str!("migrations/0002_chunk_owners.sql")),
    (3, include_str!("migrations/0003_wal_archive.sql")),
    (4, include_str!("migrations/0004_drills.sql")),
    (5, include_str!("migrations/0005_schedules.sql")),
    (6, include_str!("migrations/0006_verify.sql")),
    (7, include_str!("migrations/0007_verify_schedule.sql")),
    (8, include_str!("migrations/0008_mariadb.sql")),
    (9, include_str!("migrations/0009_keys.sql")),
    (10, include_str!("migrations/0010_packs.sql")),
    (11, include_str!("migrations/0011_audit.sql")),
    (12, include_str!("migrations/0012_retention.sql")),
    (13, include_str!("migrations/0013_portable.sql")),
    (14, include_str!("migrations/0014_controllers.sql")),
    (15, include_str!("migrations/0015_store_identity.sql")),
    (16, include_str!("migrations/0016_chunk_faults.sql")),
    (17, include_str!("migrations/0017_description_packs.sql")),
];

const POSTGRES: &[(i64, &str)] = &[
    (14, include_str!("migrations/postgres/0014_schema.sql")),
    (
        15,
        include_str!("migrations/postgres/0015_store_identity.sql"),
    ),
    (
        16,
        include_str!("migrations/postgres/0016_chunk_faults.sql"),
    ),
    (
        17,
        include_str!("migrations/postgres/0017_description_packs.sql"),
    ),
];

const CURRENT: &str = "SELECT COALESCE(MAX(version), 0) FROM schema_migrations";
const RECORD: &str = "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)";

/// The migrations of `all` a catalog at version `current` still needs. A catalog newer
/// than this controller is refused, not guessed at.
fn pending(
    all: &'static [(i64, &'static str)],
    current: i64,
) -> Result<&'static [(i64, &'static str)]> {
    let newest = all.last().map(|m| m.0).unwrap_or(0);
    if current > newest {
        return Err(CatalogError::Corrupt(format!(
            "catalog schema is version {current}, newer than this controller's {newest}; upgrade the controller"
        )));
    }
    Ok(&all[all.partition_point(|m| m.0 <= current)..])
}

/// Bring a PostgreSQL catalog up to date, inside the caller's transaction (which holds the
/// migration lock): DDL is transactional there, so a failed migration leaves nothing.
pub async fn run_postgres(conn: &mut PgConnection) -> Result<()> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *conn)
    .await?;
    let current: i64 = sqlx::query(CURRENT).fetch_one(&mut *conn).await?.get(0);
    for &(version, sql) in pending(POSTGRES, current)? {
        let fail = |source| CatalogError::Migration { version, source };
        sqlx::raw_sql(sql).execute(&mut *conn).await.map_err(fail)?;
        sqlx::query(RECORD)
            .bind(version)
            .bind(now())
            .execute(&mut *conn)
            .await
            .map_err(fail)?;
        tracing::info!(version, "applied catalog migration");
    }
    Ok(())
}

pub async fn run_sqlite(conn: &mut SqliteConnection) -> Result<()> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )
    .execute(&mut *conn)
    .await?;
    let current: i64 = sqlx::query(CURRENT).fetch_one(&mut *conn).await?.get(0);
    let pending = pending(MIGRATIONS, current)?;
    // SQLite changes a table's constraints only by rebuilding it, and dropping a table
    // other tables refer to needs foreign keys off: they are off while migrations run (on
    // this connection, outside any transaction, as SQLite requires) and checked before each
    // migration commits.
    sqlx::query("PRAGMA foreign_keys = OFF")
        .execute(&mut *conn)
        .await?;
    let applied = apply(conn, pending).await;
    sqlx::query("PRAGMA foreign_keys = ON")
        .execute(&mut *conn)
        .await?;
    applied
}

async fn apply(conn: &mut SqliteConnection, pending: &'static [(i64, &'static str)]) -> Result<()> {
    use sqlx::Connection;
    for &(version, sql) in pending {
        let fail = |source| CatalogError::Migration { version, source };
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(fail)?;
        sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(fail)?;
        let broken = sqlx::query("PRAGMA foreign_key_check")
            .fetch_all(&mut *tx)
            .await
            .map_err(fail)?;
        if !broken.is_empty() {
            return Err(CatalogError::Corrupt(format!(
                "catalog migration {version} left {} rows whose foreign keys point nowhere",
                broken.len()
            )));
        }
        sqlx::query(RECORD)
            .bind(version)
            .bind(now())
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        tracing::info!(version, "applied catalog migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::catalog::BackupKind;
    /// `pending` finds its place by version: each list must be in order.
    #[test]
    fn migrations_are_in_order_and_a_newer_catalog_is_refused() {
        for all in [super::MIGRATIONS, super::POSTGRES] {
            assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
        }
        assert_eq!(super::pending(super::MIGRATIONS, 12).unwrap()[0].0, 13);
        let newest = super::POSTGRES.last().unwrap().0;
        assert!(super::pending(super::POSTGRES, newest).unwrap().is_empty());
        assert_eq!(super::pending(super::POSTGRES, 0).unwrap(), super::POSTGRES);
        let e = super::pending(super::POSTGRES, newest + 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("newer than this controller's {newest}")),
            "{e}"
        );
    }

    #[tokio::test]
    async fn migrations_apply_once_and_reopen_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        super::super::Catalog::open(&path).await.unwrap();
        let cat = super::super::Catalog::open(&path).await.unwrap();
        let n: i64 = sqlx::Row::get(
            &sqlx::query("SELECT COUNT(*) FROM schema_migrations")
                .fetch_one(&cat.pool)
                .await
                .unwrap(),
            0,
        );
        assert_eq!(n, super::MIGRATIONS.len() as i64);
    }

    /// Version 12 rebuilds `backups`, which other tables refer to: every row and reference
    /// must survive, and foreign keys must still be enforced afterwards. Version 13 moves
    /// facts out of SQLite-only places.
    #[tokio::test]
    async fn rebuilding_backups_keeps_every_row_and_reference() {
        use std::str::FromStr;
        use tidemark_core::ids::BackupId;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        {
            let opts = sqlx::sqlite::SqliteConnectOptions::from_str("sqlite://")
                .unwrap()
                .filename(&path)
                .create_if_missing(true)
                .foreign_keys(true);
            let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
            sqlx::raw_sql(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
            )
                .execute(&pool)
                .await
                .unwrap();
            for &(v, sql) in super::MIGRATIONS.iter().filter(|m| m.0 <= 11) {
                sqlx::raw_sql(sql).execute(&pool).await.unwrap();
                sqlx::query("INSERT INTO schema_migrations VALUES ($1, 0)")
                    .bind(v)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            sqlx::raw_sql(
                "INSERT INTO backups (id, instance, agent, kind, status, started_at, finished_at, corrupt, databases)
                   VALUES (7, 'pg', 'db1', 'logical', 'complete', 1, 2, '', '[\"app\"]');
                 INSERT INTO backup_warnings VALUES (7, 0, 'careful');
                 INSERT INTO backup_parts (backup_id, name, status, chunks) VALUES (7, 'db:app', 'stored', 1);
                 INSERT INTO backup_parts (backup_id, name, status) VALUES (7, 'globals', 'stored');
                 INSERT INTO part_chunks VALUES (7, 'db:app', 0, x'00', 1);
                 INSERT INTO jobs (kind, agent, instance, params, state, created_at)
                   VALUES ('restore', 'db1', 'pg', '{\"backup_id\": 7}', 'queued', 1);",
            )
            .execute(&pool)
            .await
            .unwrap();
        }
        let cat = super::super::Catalog::open(&path).await.unwrap();
        let b = cat.backup(BackupId(7)).await.unwrap().unwrap();
        assert_eq!(b.status.as_str(), "complete");
        assert_eq!(b.warnings, vec!["careful".to_string()]);
        assert_eq!(b.databases, vec!["app".to_string()]);
        let parts: Vec<&str> = b.parts.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(parts, vec!["db:app", "globals"], "in the order declared");
        // Version 13: the queued restore's backup is where retention looks for it.
        assert_eq!(cat.backups_in_use().await.unwrap(), vec![7]);
        assert_eq!(b.expired_at, None);
        let refused = sqlx::query("INSERT INTO backup_warnings VALUES (999, 0, 'orphan')")
            .execute(&cat.pool)
            .await;
        assert!(refused.is_err(), "foreign keys are enforced again");
        let next = cat
            .create_backup("pg", "db1", BackupKind::Logical, None, &[], &[], "", "")
            .await
            .unwrap();
        assert!(next.0 > 7, "ids keep counting up: {next}");
    }
}
