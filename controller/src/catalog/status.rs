//! The archiver status agents report for their instances, kept as the last report.

use sqlx::Row;

use super::{Catalog, Result, now};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArchiverRow {
    pub instance: String,
    pub last_archived_at: i64,
    pub last_archived_wal: String,
    pub failed_count: u64,
    pub last_failed_at: i64,
    pub last_failed_wal: String,
    pub ready: u64,
    pub error: String,
    pub reported_at: i64,
}

impl Catalog {
    pub async fn set_archiver_status(&self, s: &ArchiverRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO archiver_status (instance, last_archived_at, last_archived_wal, failed_count,
               last_failed_at, last_failed_wal, ready, error, reported_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (instance) DO UPDATE SET last_archived_at = excluded.last_archived_at,
               last_archived_wal = excluded.last_archived_wal, failed_count = excluded.failed_count,
               last_failed_at = excluded.last_failed_at, last_failed_wal = excluded.last_failed_wal,
               ready = excluded.ready, error = excluded.error, reported_at = excluded.reported_at",
        )
        .bind(&s.instance)
        .bind(s.last_archived_at)
        .bind(&s.last_archived_wal)
        .bind(s.failed_count as i64)
        .bind(s.last_failed_at)
        .bind(&s.last_failed_wal)
        .bind(s.ready as i64)
        .bind(&s.error)
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn archiver_status(&self, instance: &str) -> Result<Option<ArchiverRow>> {
        Ok(
            sqlx::query("SELECT * FROM archiver_status WHERE instance = ?")
                .bind(instance)
                .fetch_optional(&self.pool)
                .await?
                .map(|r| ArchiverRow {
                    instance: r.get("instance"),
                    last_archived_at: r.get("last_archived_at"),
                    last_archived_wal: r.get("last_archived_wal"),
                    failed_count: r.get::<i64, _>("failed_count") as u64,
                    last_failed_at: r.get("last_failed_at"),
                    last_failed_wal: r.get("last_failed_wal"),
                    ready: r.get::<i64, _>("ready") as u64,
                    error: r.get("error"),
                    reported_at: r.get("reported_at"),
                }),
        )
    }
}
