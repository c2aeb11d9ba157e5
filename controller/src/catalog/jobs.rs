//! Jobs: work the controller hands to an agent (a backup, a restore) and what became of it.

use sqlx::Row;
use tidemark_core::ids::{BackupId, JobId};

use super::{Catalog, CatalogError, JobState, Result, now};

#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: JobId,
    pub kind: String,
    pub agent: String,
    pub instance: String,
    pub params: serde_json::Value,
    pub state: JobState,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub message: String,
    pub backup_id: Option<BackupId>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

impl Catalog {
    pub async fn create_job(
        &self,
        kind: &str,
        agent: &str,
        instance: &str,
        params: &serde_json::Value,
        bytes_total: u64,
        spec: &[u8],
    ) -> Result<JobId> {
        let id = sqlx::query(
            "INSERT INTO jobs (kind, agent, instance, params, state, bytes_total, created_at, backup_id,
               source_instance, spec)
             VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8, $9) RETURNING id",
        )
        .bind(kind)
        .bind(agent)
        .bind(instance)
        .bind(params.to_string())
        .bind(bytes_total as i64)
        .bind(now())
        // The backup a restore reads, where retention sees it (a backup job's is linked once
        // the agent begins it).
        .bind(if kind == "restore" {
            params.get("backup_id").and_then(serde_json::Value::as_i64)
        } else {
            None
        })
        // The instance whose log archive a restore or drill may read.
        .bind(
            params
                .get("source_instance")
                .and_then(serde_json::Value::as_str),
        )
        .bind(spec)
        .fetch_one(&self.writer)
        .await?
        .get::<i64, _>(0);
        Ok(JobId(id))
    }

    pub async fn job(&self, id: JobId) -> Result<Option<JobRow>> {
        let Some(r) = sqlx::query("SELECT * FROM jobs WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(JobRow {
            id,
            kind: r.get("kind"),
            agent: r.get("agent"),
            instance: r.get("instance"),
            params: serde_json::from_str(r.get::<&str, _>("params"))
                .map_err(|e| CatalogError::Corrupt(e.to_string()))?,
            state: JobState::parse(r.get::<&str, _>("state"))?,
            bytes_done: r.get::<i64, _>("bytes_done") as u64,
            bytes_total: r.get::<i64, _>("bytes_total") as u64,
            message: r.get("message"),
            backup_id: r.get::<Option<i64>, _>("backup_id").map(BackupId),
            created_at: r.get("created_at"),
            finished_at: r.get("finished_at"),
        }))
    }

    /// Move a job on. A finished job stays finished: a late report cannot revive it.
    /// Returns false when the job was already finished.
    pub async fn update_job(
        &self,
        id: JobId,
        state: JobState,
        bytes_done: u64,
        bytes_total: Option<u64>,
        message: &str,
    ) -> Result<bool> {
        let finished = state.is_terminal().then(now);
        let n = sqlx::query(
            "UPDATE jobs SET state = $1, bytes_done = $2, bytes_total = COALESCE($3, bytes_total),
               message = $4, finished_at = $5
             WHERE id = $6 AND state IN ('queued', 'running')",
        )
        .bind(state.as_str())
        .bind(bytes_done as i64)
        .bind(bytes_total.map(|b| b as i64))
        .bind(message)
        .bind(finished)
        .bind(id.0)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    pub async fn link_job_backup(&self, job: JobId, backup: BackupId) -> Result<()> {
        sqlx::query("UPDATE jobs SET backup_id = $1 WHERE id = $2")
            .bind(backup.0)
            .bind(job.0)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Does `agent` hold a physical restore of `instance` that is unfinished, or ended less
    /// than [`super::RESTORE_GRANT_SECS`] ago? Such a restore may read the instance's WAL
    /// archive: recovery runs during the job with --start, and after it when the operator
    /// starts the server. (Retention holds the restore's backup by the same rule.)
    pub async fn has_wal_grant(&self, agent: &str, instance: &str) -> Result<bool> {
        Ok(sqlx::query(
            "SELECT 1 FROM jobs WHERE agent = $1 AND kind = 'restore'
               AND source_instance = $2
               AND (state IN ('queued', 'running') OR finished_at >= $3) LIMIT 1",
        )
        .bind(agent)
        .bind(instance)
        .bind(now() - super::RESTORE_GRANT_SECS)
        .fetch_optional(&self.pool)
        .await?
        .is_some())
    }

    /// What a sandbox's unfinished drill job of `instance` may read from the log archive:
    /// None when it has no such job.
    pub async fn drill_wal_grant(
        &self,
        sandbox: &str,
        instance: &str,
    ) -> Result<Option<DrillLogGrant>> {
        let row = sqlx::query(
            "SELECT params FROM jobs
             WHERE agent = $1 AND kind = 'drill' AND source_instance = $2
               AND state IN ('queued', 'running')
             ORDER BY id DESC LIMIT 1",
        )
        .bind(sandbox)
        .bind(instance)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        #[derive(serde::Deserialize)]
        struct Params {
            start_segno: u64,
            binlogs: Option<Vec<String>>,
        }
        let p: Params = serde_json::from_str(r.get::<&str, _>(0))
            .map_err(|e| CatalogError::Corrupt(format!("drill job's params: {e}")))?;
        Ok(Some(DrillLogGrant {
            first: p.start_segno,
            files: p.binlogs,
        }))
    }

    /// Fail jobs of an agent that it was sent but never started (they went down a job
    /// stream that has since been replaced). Jobs not yet delivered stay queued for it.
    pub async fn fail_queued_jobs_of_agent(&self, agent: &str, reason: &str) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE jobs SET state = 'failed', message = $1, finished_at = $2
             WHERE agent = $3 AND state = 'queued' AND controller IS NOT NULL",
        )
        .bind(reason)
        .bind(now())
        .bind(agent)
        .execute(&self.writer)
        .await?
        .rows_affected())
    }

    /// Fail every unfinished job of an agent (it disconnected).
    pub async fn fail_jobs_of_agent(&self, agent: &str, reason: &str) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE jobs SET state = 'failed', message = $1, finished_at = $2
             WHERE agent = $3 AND state IN ('queued', 'running')",
        )
        .bind(reason)
        .bind(now())
        .bind(agent)
        .execute(&self.writer)
        .await?
        .rows_affected())
    }
}

/// The log a running drill may read: WAL segments from `first` on, or for MariaDB exactly
/// the binlog `files` the controller planned (all from `first` on).
#[derive(Debug, PartialEq)]
pub struct DrillLogGrant {
    pub first: u64,
    pub files: Option<Vec<String>>,
}

impl DrillLogGrant {
    /// May the drill read file `name`, numbered `segno` (None: a timeline history file)?
    pub fn allows(&self, name: &str, segno: Option<u64>) -> bool {
        match (&self.files, segno) {
            (Some(files), _) => files.iter().any(|f| f == name),
            (None, None) => true,
            (None, Some(n)) => n >= self.first,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::test_catalog;

    #[tokio::test]
    async fn a_mariadb_drill_may_read_exactly_its_planned_binlogs() {
        let (cat, _dir) = test_catalog().await;
        assert_eq!(cat.drill_wal_grant("sb", "m").await.unwrap(), None);
        let params = serde_json::json!({
            "source_instance": "m", "start_segno": 3, "binlogs": ["b.000003", "b.000004"],
        });
        cat.create_job("drill", "sb", "m", &params, 0, &[])
            .await
            .unwrap();
        let g = cat.drill_wal_grant("sb", "m").await.unwrap().unwrap();
        assert!(g.allows("b.000003", Some(3)) && g.allows("b.000004", Some(4)));
        assert!(!g.allows("b.000005", Some(5)), "past the target's file");
        assert!(!g.allows("b.000002", Some(2)));
        // PostgreSQL: every segment from the backup's start on.
        let pg = serde_json::json!({ "source_instance": "pg", "start_segno": 7 });
        cat.create_job("drill", "sb", "pg", &pg, 0, &[])
            .await
            .unwrap();
        let g = cat.drill_wal_grant("sb", "pg").await.unwrap().unwrap();
        assert!(g.allows("x", Some(7)) && g.allows("x.history", None) && !g.allows("x", Some(6)));
        assert!(
            cat.drill_wal_grant("other-sb", "pg")
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_finished_job_cannot_be_revived() {
        let (cat, _dir) = test_catalog().await;
        let id = cat
            .create_job("backup", "db1", "orders", &serde_json::json!({}), 0, &[])
            .await
            .unwrap();
        assert!(
            cat.update_job(id, JobState::Running, 10, None, "")
                .await
                .unwrap()
        );
        assert!(
            cat.update_job(id, JobState::Failed, 10, None, "boom")
                .await
                .unwrap()
        );
        assert!(
            !cat.update_job(id, JobState::Succeeded, 20, None, "")
                .await
                .unwrap()
        );
        let j = cat.job(id).await.unwrap().unwrap();
        assert_eq!(j.state, JobState::Failed);
        assert_eq!(j.message, "boom");
        assert!(j.finished_at.is_some());
    }
}
