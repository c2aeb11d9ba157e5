//! The archiver status agents report for their instances, kept as the last report.

use sqlx::Row;

use super::{Catalog, Result};

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
    /// Record status reports, in one transaction (see [`crate::ops::status_buffer`]). An
    /// unchanged report only refreshes `reported_at`, at most once a minute: it is the
    /// report's content that matters, and rewriting equal rows costs pages in every commit.
    pub async fn set_archiver_statuses(&self, rows: &[ArchiverRow]) -> Result<()> {
        let mut tx = self.write_tx().await?;
        for s in rows {
            sqlx::query(
                "INSERT INTO archiver_status (instance, last_archived_at, last_archived_wal, failed_count,
                   last_failed_at, last_failed_wal, ready, error, reported_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (instance) DO UPDATE SET last_archived_at = excluded.last_archived_at,
                   last_archived_wal = excluded.last_archived_wal, failed_count = excluded.failed_count,
                   last_failed_at = excluded.last_failed_at, last_failed_wal = excluded.last_failed_wal,
                   ready = excluded.ready, error = excluded.error, reported_at = excluded.reported_at
                 WHERE archiver_status.last_archived_at IS DISTINCT FROM excluded.last_archived_at
                    OR archiver_status.last_archived_wal IS DISTINCT FROM excluded.last_archived_wal
                    OR archiver_status.failed_count IS DISTINCT FROM excluded.failed_count
                    OR archiver_status.last_failed_at IS DISTINCT FROM excluded.last_failed_at
                    OR archiver_status.last_failed_wal IS DISTINCT FROM excluded.last_failed_wal
                    OR archiver_status.ready IS DISTINCT FROM excluded.ready
                    OR archiver_status.error IS DISTINCT FROM excluded.error
                    OR archiver_status.reported_at < excluded.reported_at - 60",
            )
            .bind(&s.instance)
            .bind(s.last_archived_at)
            .bind(&s.last_archived_wal)
            .bind(s.failed_count as i64)
            .bind(s.last_failed_at)
            .bind(&s.last_failed_wal)
            .bind(s.ready as i64)
            .bind(&s.error)
            .bind(s.reported_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn archiver_status(&self, instance: &str) -> Result<Option<ArchiverRow>> {
        Ok(
            sqlx::query("SELECT * FROM archiver_status WHERE instance = $1")
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
