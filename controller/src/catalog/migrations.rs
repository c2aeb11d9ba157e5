//! Schema migrations, embedded in the binary and applied in order, each in its own
//! transaction. A catalog newer than this binary is refused rather than guessed at.

use sqlx::{Row, SqlitePool};

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
];

pub async fn run(pool: &SqlitePool) -> Result<()> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )
    .execute(pool)
    .await?;
    let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        .fetch_one(pool)
        .await?
        .get(0);
    let newest = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if current > newest {
        return Err(CatalogError::Corrupt(format!(
            "catalog schema is version {current}, newer than this controller's {newest}; upgrade the controller"
        )));
    }
    for &(version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        let fail = |source| CatalogError::Migration { version, source };
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(fail)?;
        sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(fail)?;
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)")
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
}
