//! Drills: a restore of an instance onto a sandbox, to a past point, with its evidence.
//! A drill is queued until a sandbox is free, then running; passed, failed and aborted are
//! final, and a late report cannot change a final drill.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use tidemark_core::ids::{BackupId, JobId};

use super::{Catalog, CatalogError, DbRow, DrillState, Result, now};

/// One check of a drill and how it came out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub expect: String,
    pub value: String,
    pub ok: bool,
    pub detail: String,
}

/// What a finished drill proved.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DrillEvidence {
    pub recovered_at: i64,
    pub recovered_lsn: String,
    pub stop_record: String,
    pub bytes_restored: u64,
    pub wal_segments: u64,
    pub rto_ms: u64,
    pub restore_ms: u64,
    pub replay_ms: u64,
    pub rpo_secs: i64,
    pub checks: Vec<CheckResult>,
    pub log_tail: String,
}

#[derive(Debug, Clone)]
pub struct DrillRow {
    pub id: i64,
    pub instance: String,
    pub state: DrillState,
    pub target: i64,
    pub target_reason: String,
    pub sandbox_wanted: String,
    pub sandbox: String,
    pub backup_id: Option<BackupId>,
    pub job_id: Option<JobId>,
    pub evidence: DrillEvidence,
    pub reason: String,
    pub notes: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

fn drill_from_row(r: &DbRow) -> Result<DrillRow> {
    Ok(DrillRow {
        id: r.get("id"),
        instance: r.get("instance"),
        state: DrillState::parse(r.get::<&str, _>("state"))?,
        target: r.get("target"),
        target_reason: r.get("target_reason"),
        sandbox_wanted: r.get("sandbox_wanted"),
        sandbox: r.get("sandbox"),
        backup_id: r.get::<Option<i64>, _>("backup_id").map(BackupId),
        job_id: r.get::<Option<i64>, _>("job_id").map(JobId),
        evidence: DrillEvidence {
            recovered_at: r.get("recovered_at"),
            recovered_lsn: r.get("recovered_lsn"),
            stop_record: r.get("stop_record"),
            bytes_restored: r.get::<i64, _>("bytes_restored") as u64,
            wal_segments: r.get::<i64, _>("wal_segments") as u64,
            rto_ms: r.get::<i64, _>("rto_ms") as u64,
            restore_ms: r.get::<i64, _>("restore_ms") as u64,
            replay_ms: r.get::<i64, _>("replay_ms") as u64,
            rpo_secs: r.get("rpo_secs"),
            checks: serde_json::from_str(r.get::<&str, _>("checks"))
                .map_err(|e| CatalogError::Corrupt(e.to_string()))?,
            log_tail: r.get("log_tail"),
        },
        reason: r.get("reason"),
        notes: r.get("notes"),
        created_at: r.get("created_at"),
        started_at: r.get("started_at"),
        finished_at: r.get("finished_at"),
    })
}

impl Catalog {
    pub async fn create_drill(
        &self,
        instance: &str,
        target: i64,
        target_reason: &str,
        sandbox_wanted: &str,
    ) -> Result<i64> {
        Ok(sqlx::query(
            "INSERT INTO drills (instance, state, target, target_reason, sandbox_wanted, created_at)
             VALUES ($1, 'queued', $2, $3, $4, $5) RETURNING id",
        )
        .bind(instance)
        .bind(target)
        .bind(target_reason)
        .bind(sandbox_wanted)
        .bind(now())
        .fetch_one(&self.writer)
        .await?
        .get::<i64, _>(0))
    }

    pub async fn drill(&self, id: i64) -> Result<Option<DrillRow>> {
        sqlx::query("SELECT * FROM drills WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(drill_from_row)
            .transpose()
    }

    /// Newest first.
    pub async fn list_drills(&self, instance: Option<&str>, limit: u32) -> Result<Vec<DrillRow>> {
        sqlx::query(
            "SELECT * FROM drills WHERE ($1 IS NULL OR instance = $2) ORDER BY id DESC LIMIT $3",
        )
        .bind(instance)
        .bind(instance)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(drill_from_row)
        .collect()
    }

    /// Drills in `state`, oldest first.
    pub async fn drills_in_state(&self, state: DrillState) -> Result<Vec<DrillRow>> {
        sqlx::query("SELECT * FROM drills WHERE state = $1 ORDER BY id")
            .bind(state.as_str())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(drill_from_row)
            .collect()
    }

    /// The newest drill of `instance` in one of `states`.
    pub async fn last_drill(
        &self,
        instance: &str,
        states: &[DrillState],
    ) -> Result<Option<DrillRow>> {
        let marks = (0..states.len())
            .map(|i| format!("${}", i + 2))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT * FROM drills WHERE instance = $1 AND state IN ({marks}) ORDER BY id DESC LIMIT 1"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(instance);
        for st in states {
            q = q.bind(st.as_str());
        }
        q.fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(drill_from_row)
            .transpose()
    }

    /// Queued -> running on `sandbox`. False when the drill was no longer queued.
    pub async fn start_drill(
        &self,
        id: i64,
        sandbox: &str,
        backup: BackupId,
        job: JobId,
    ) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE drills SET state = 'running', sandbox = $1, backup_id = $2, job_id = $3, started_at = $4
             WHERE id = $5 AND state = 'queued'",
        )
        .bind(sandbox)
        .bind(backup.0)
        .bind(job.0)
        .bind(now())
        .bind(id)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Record a drill's outcome and evidence. False when it was already final.
    pub async fn finish_drill(
        &self,
        id: i64,
        state: DrillState,
        e: &DrillEvidence,
        reason: &str,
    ) -> Result<bool> {
        let checks =
            serde_json::to_string(&e.checks).map_err(|e| CatalogError::Corrupt(e.to_string()))?;
        let n = sqlx::query(
            "UPDATE drills SET state = $1, recovered_at = $2, recovered_lsn = $3, stop_record = $4,
               bytes_restored = $5, wal_segments = $6, rto_ms = $7, restore_ms = $8, replay_ms = $9,
               rpo_secs = $10, checks = $11, log_tail = $12, reason = $13, finished_at = $14
             WHERE id = $15 AND state IN ('queued', 'running')",
        )
        .bind(state.as_str())
        .bind(e.recovered_at)
        .bind(&e.recovered_lsn)
        .bind(&e.stop_record)
        .bind(e.bytes_restored as i64)
        .bind(e.wal_segments as i64)
        .bind(e.rto_ms as i64)
        .bind(e.restore_ms as i64)
        .bind(e.replay_ms as i64)
        .bind(e.rpo_secs)
        .bind(checks)
        .bind(&e.log_tail)
        .bind(reason)
        .bind(now())
        .bind(id)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// End an unfinished drill without evidence (failed or aborted).
    pub async fn end_drill(&self, id: i64, state: DrillState, reason: &str) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE drills SET state = $1, reason = $2, finished_at = $3
             WHERE id = $4 AND state IN ('queued', 'running')",
        )
        .bind(state.as_str())
        .bind(reason)
        .bind(now())
        .bind(id)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Abort every running drill (the controller restarted; a sandbox went away).
    pub async fn abort_running_drills(&self, sandbox: Option<&str>, reason: &str) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE drills SET state = 'aborted', reason = $1, finished_at = $2
             WHERE state = 'running' AND ($3 IS NULL OR sandbox = $4)",
        )
        .bind(reason)
        .bind(now())
        .bind(sandbox)
        .bind(sandbox)
        .execute(&self.writer)
        .await?
        .rows_affected())
    }

    /// Remember a problem seen while serving `sandbox`'s running drill of `instance`.
    pub async fn note_drill(&self, sandbox: &str, instance: &str, note: &str) -> Result<()> {
        sqlx::query(
            "UPDATE drills SET notes = CASE WHEN notes = '' THEN $1 ELSE notes || $2 END
             WHERE sandbox = $3 AND instance = $4 AND state = 'running'",
        )
        .bind(note)
        .bind(format!("\n{note}"))
        .bind(sandbox)
        .bind(instance)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// The running drill whose job is `job`.
    pub async fn drill_of_job(&self, job: JobId) -> Result<Option<DrillRow>> {
        sqlx::query("SELECT * FROM drills WHERE job_id = $1")
            .bind(job.0)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(drill_from_row)
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::test_catalog;

    #[tokio::test]
    async fn a_final_drill_stays_final() {
        let (cat, _dir) = test_catalog().await;
        let id = cat
            .create_drill("orders", 1_000_000, "given", "")
            .await
            .unwrap();
        assert_eq!(
            cat.drills_in_state(DrillState::Queued).await.unwrap().len(),
            1
        );
        assert!(
            cat.start_drill(id, "sb1", BackupId(3), JobId(7))
                .await
                .unwrap()
        );
        assert!(
            !cat.start_drill(id, "sb2", BackupId(3), JobId(8))
                .await
                .unwrap()
        );
        assert_eq!(
            cat.drills_in_state(DrillState::Running).await.unwrap()[0].sandbox,
            "sb1"
        );
        cat.note_drill("sb1", "orders", "segment X unreadable")
            .await
            .unwrap();
        assert_eq!(
            cat.abort_running_drills(None, "restarted").await.unwrap(),
            1
        );
        let ev = DrillEvidence {
            rto_ms: 5,
            ..Default::default()
        };
        assert!(
            !cat.finish_drill(id, DrillState::Passed, &ev, "")
                .await
                .unwrap()
        );
        let d = cat.drill(id).await.unwrap().unwrap();
        assert_eq!(d.state, DrillState::Aborted);
        assert_eq!(d.reason, "restarted");
        assert_eq!(d.notes, "segment X unreadable");
        assert_eq!(d.evidence.rto_ms, 0);
        assert!(
            cat.drills_in_state(DrillState::Running)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            cat.last_drill("orders", &[DrillState::Aborted])
                .await
                .unwrap()
                .unwrap()
                .id,
            id
        );
        assert!(
            cat.last_drill("orders", &[DrillState::Passed])
                .await
                .unwrap()
                .is_none()
        );
    }
}
