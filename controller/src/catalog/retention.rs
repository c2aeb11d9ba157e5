//! What retention planning reads beyond backups: what is in use, and the archived logs.

use sqlx::Row;

use super::{Catalog, Result};

impl Catalog {
    /// Backups a queued or running drill or restore reads.
    pub async fn backups_in_use(&self) -> Result<Vec<i64>> {
        Ok(sqlx::query(
            "SELECT backup_id FROM drills WHERE state IN ('queued', 'running') AND backup_id IS NOT NULL
             UNION
             SELECT json_extract(params, '$.backup_id') FROM jobs
              WHERE kind = 'restore' AND state IN ('queued', 'running')
                AND json_extract(params, '$.backup_id') IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
    }

    /// Every archived WAL file or binlog of an instance, by name.
    pub async fn archived_log_names(&self, instance: &str) -> Result<Vec<String>> {
        Ok(
            sqlx::query("SELECT name FROM wal_files WHERE instance = ? ORDER BY name")
                .bind(instance)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect(),
        )
    }
}
