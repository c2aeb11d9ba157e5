//! Schedules (a cron expression per instance and kind) and the runs they fire.

use sqlx::Row;
use tidemark_core::ids::JobId;

use super::{Catalog, DbRow, Result, RunState, now};

#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRow {
    pub instance: String,
    /// "logical", "base" or "drill".
    pub kind: String,
    /// A cron expression, or "off".
    pub cron: String,
    /// "config" or "cli".
    pub origin: String,
    pub last_slot: Option<i64>,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub id: i64,
    pub instance: String,
    pub kind: String,
    pub slot: i64,
    pub missed: u32,
    pub attempt: u32,
    pub state: RunState,
    pub job_id: Option<JobId>,
    pub drill_id: Option<i64>,
    pub deadline: Option<i64>,
    pub next_attempt_at: Option<i64>,
    pub message: String,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

fn schedule_from_row(r: &DbRow) -> ScheduleRow {
    ScheduleRow {
        instance: r.get("instance"),
        kind: r.get("kind"),
        cron: r.get("cron"),
        origin: r.get("origin"),
        last_slot: r.get("last_slot"),
        updated_at: r.get("updated_at"),
    }
}

fn run_from_row(r: &DbRow) -> Result<RunRow> {
    Ok(RunRow {
        id: r.get("id"),
        instance: r.get("instance"),
        kind: r.get("kind"),
        slot: r.get("slot"),
        missed: r.get::<i64, _>("missed") as u32,
        attempt: r.get::<i64, _>("attempt") as u32,
        state: RunState::parse(r.get("state"))?,
        job_id: r.get::<Option<i64>, _>("job_id").map(JobId),
        drill_id: r.get("drill_id"),
        deadline: r.get("deadline"),
        next_attempt_at: r.get("next_attempt_at"),
        message: r.get("message"),
        created_at: r.get("created_at"),
        finished_at: r.get("finished_at"),
    })
}

impl Catalog {
    /// Make the config's schedules current: (instance, kind, cron). A schedule set with
    /// `tidemark policy` wins over the config until it is reset; config schedules that left
    /// the config are dropped.
    pub async fn sync_config_schedules(&self, wanted: &[(String, String, String)]) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let existing = sqlx::query("SELECT * FROM schedules WHERE origin = 'config'")
            .fetch_all(&mut *tx)
            .await?;
        for r in &existing {
            let s = schedule_from_row(r);
            if !wanted
                .iter()
                .any(|(i, k, _)| *i == s.instance && *k == s.kind)
            {
                sqlx::query(
                    "DELETE FROM schedules WHERE instance = $1 AND kind = $2 AND origin = 'config'",
                )
                .bind(&s.instance)
                .bind(&s.kind)
                .execute(&mut *tx)
                .await?;
            }
        }
        for (instance, kind, cron) in wanted {
            sqlx::query(
                "INSERT INTO schedules (instance, kind, cron, origin, updated_at) VALUES ($1, $2, $3, 'config', $4)
                 ON CONFLICT (instance, kind) DO UPDATE SET cron = excluded.cron, updated_at = excluded.updated_at
                 WHERE schedules.origin = 'config' AND schedules.cron <> excluded.cron",
            )
            .bind(instance)
            .bind(kind)
            .bind(cron)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Set a schedule from the CLI; it keeps its last fired slot.
    pub async fn set_schedule(&self, instance: &str, kind: &str, cron: &str) -> Result<()> {
        self.upsert_schedule(instance, kind, cron, "cli").await
    }

    /// Back to the config's schedule (`config_cron`), or none.
    pub async fn reset_schedule(
        &self,
        instance: &str,
        kind: &str,
        config_cron: Option<&str>,
    ) -> Result<()> {
        match config_cron {
            Some(cron) => self.upsert_schedule(instance, kind, cron, "config").await,
            None => {
                sqlx::query("DELETE FROM schedules WHERE instance = $1 AND kind = $2")
                    .bind(instance)
                    .bind(kind)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }
        }
    }

    /// Write a schedule with its origin, keeping its last fired slot.
    async fn upsert_schedule(
        &self,
        instance: &str,
        kind: &str,
        cron: &str,
        origin: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO schedules (instance, kind, cron, origin, updated_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (instance, kind) DO UPDATE SET cron = excluded.cron, origin = excluded.origin,
               updated_at = excluded.updated_at",
        )
        .bind(instance)
        .bind(kind)
        .bind(cron)
        .bind(origin)
        .bind(now())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub async fn schedules(&self) -> Result<Vec<ScheduleRow>> {
        Ok(
            sqlx::query("SELECT * FROM schedules ORDER BY instance, kind")
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(schedule_from_row)
                .collect(),
        )
    }

    /// Move a schedule's last fired slot from `previous` to `slot`; false when it is no
    /// longer at `previous` (another controller fired it).
    pub async fn claim_slot(
        &self,
        instance: &str,
        kind: &str,
        previous: Option<i64>,
        slot: i64,
    ) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE schedules SET last_slot = $1
             WHERE instance = $2 AND kind = $3 AND last_slot IS NOT DISTINCT FROM $4",
        )
        .bind(slot)
        .bind(instance)
        .bind(kind)
        .bind(previous)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Take the next attempt of a waiting run whose last attempt was `attempt`; false when
    /// another controller took it.
    pub async fn claim_attempt(&self, run: i64, attempt: u32) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE scheduled_runs SET state = 'running', attempt = attempt + 1
             WHERE id = $1 AND attempt = $2 AND state = 'waiting'",
        )
        .bind(run)
        .bind(attempt as i64)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    pub async fn create_run(
        &self,
        instance: &str,
        kind: &str,
        slot: i64,
        missed: u32,
    ) -> Result<RunRow> {
        let id = sqlx::query(
            "INSERT INTO scheduled_runs (instance, kind, slot, missed, state, next_attempt_at, created_at)
             VALUES ($1, $2, $3, $4, 'waiting', $5, $6) RETURNING id",
        )
        .bind(instance)
        .bind(kind)
        .bind(slot)
        .bind(missed as i64)
        .bind(now())
        .bind(now())
        .fetch_one(&self.writer)
        .await?
        .get::<i64, _>(0);
        let row = sqlx::query("SELECT * FROM scheduled_runs WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        run_from_row(&row)
    }

    /// Runs not yet finished, oldest first.
    pub async fn open_runs(&self) -> Result<Vec<RunRow>> {
        sqlx::query(
            "SELECT * FROM scheduled_runs WHERE state IN ('running', 'waiting') ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(run_from_row)
        .collect()
    }

    pub async fn save_run(&self, r: &RunRow) -> Result<()> {
        sqlx::query(
            "UPDATE scheduled_runs SET attempt = $1, state = $2, job_id = $3, drill_id = $4, deadline = $5,
               next_attempt_at = $6, message = $7, finished_at = $8 WHERE id = $9",
        )
        .bind(r.attempt as i64)
        .bind(r.state.as_str())
        .bind(r.job_id.map(|j| j.0))
        .bind(r.drill_id)
        .bind(r.deadline)
        .bind(r.next_attempt_at)
        .bind(&r.message)
        .bind(r.finished_at)
        .bind(r.id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Newest first.
    pub async fn runs(&self, instance: Option<&str>, limit: u32) -> Result<Vec<RunRow>> {
        sqlx::query(
            "SELECT * FROM scheduled_runs WHERE ($1 IS NULL OR instance = $2) ORDER BY id DESC LIMIT $3",
        )
        .bind(instance)
        .bind(instance)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(run_from_row)
        .collect()
    }

    /// Fail the running backup a job made (it timed out).
    pub async fn fail_backup_of_job(&self, job: JobId, reason: &str) -> Result<()> {
        sqlx::query(
            "UPDATE backups SET status = 'failed', reason = $1, finished_at = $2 WHERE job_id = $3 AND status = 'running'",
        )
        .bind(reason)
        .bind(now())
        .bind(job.0)
        .execute(&self.writer)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::catalog::RunState;
    use crate::catalog::test_catalog;

    #[tokio::test]
    async fn the_cli_wins_over_the_config_until_reset() {
        let (cat, _dir) = test_catalog().await;
        let w = |c: &str| vec![("orders".to_string(), "base".to_string(), c.to_string())];
        cat.sync_config_schedules(&w("0 2 * * *")).await.unwrap();
        assert!(cat.claim_slot("orders", "base", None, 100).await.unwrap());
        cat.set_schedule("orders", "base", "0 3 * * *")
            .await
            .unwrap();
        cat.sync_config_schedules(&w("0 4 * * *")).await.unwrap();
        let s = &cat.schedules().await.unwrap()[0];
        assert_eq!(
            (s.cron.as_str(), s.origin.as_str(), s.last_slot),
            ("0 3 * * *", "cli", Some(100))
        );
        cat.reset_schedule("orders", "base", Some("0 4 * * *"))
            .await
            .unwrap();
        let s = &cat.schedules().await.unwrap()[0];
        assert_eq!(
            (s.cron.as_str(), s.origin.as_str()),
            ("0 4 * * *", "config")
        );
        // Gone from the config: gone.
        cat.sync_config_schedules(&[]).await.unwrap();
        assert!(cat.schedules().await.unwrap().is_empty());
    }

    /// Two controllers at the same slot (one just lost the lead): one fires it.
    #[tokio::test]
    async fn a_slot_and_an_attempt_are_claimed_once() {
        let (cat, _dir) = test_catalog().await;
        let w = vec![("orders".into(), "base".into(), "0 2 * * *".into())];
        cat.sync_config_schedules(&w).await.unwrap();
        assert!(cat.claim_slot("orders", "base", None, 100).await.unwrap());
        assert!(!cat.claim_slot("orders", "base", None, 100).await.unwrap());
        assert!(
            !cat.claim_slot("orders", "base", Some(50), 200)
                .await
                .unwrap()
        );
        assert!(
            cat.claim_slot("orders", "base", Some(100), 200)
                .await
                .unwrap()
        );
        assert_eq!(cat.schedules().await.unwrap()[0].last_slot, Some(200));

        let run = cat.create_run("orders", "base", 200, 0).await.unwrap();
        assert_eq!((run.state, run.attempt), (RunState::Waiting, 0));
        assert!(cat.claim_attempt(run.id, 0).await.unwrap());
        assert!(!cat.claim_attempt(run.id, 0).await.unwrap(), "taken");
        let r = &cat.runs(None, 10).await.unwrap()[0];
        assert_eq!((r.state, r.attempt), (RunState::Running, 1));
        // A running attempt is not taken again, whatever attempt it names.
        assert!(!cat.claim_attempt(run.id, 1).await.unwrap());
    }
}
