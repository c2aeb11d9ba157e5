//! The controllers using this catalog (several, on PostgreSQL), and which of them carries
//! what: the agents whose job streams it holds, the jobs it delivered, the uploads it
//! receives. A controller that stops leaves its row to go stale; the leader then fails its
//! work, as a restart fails a lone controller's.

use sqlx::Row;
use tidemark_core::ids::JobId;

use super::{Catalog, Result, now};

/// A job waiting for the controller that holds its agent's job stream.
#[derive(Debug, Clone)]
pub struct UndeliveredJob {
    pub id: JobId,
    pub agent: String,
    /// The job as encoded when it was created (its id not yet filled in).
    pub spec: Vec<u8>,
}

/// Why work failed when the controller carrying it stopped: `controller` names it, None
/// for a lone controller that restarted. Not the work's fault, so a scheduled run retries
/// it at once rather than after its backoff ([`stopped_the_work`]).
pub fn stopped_message(controller: Option<&str>) -> String {
    match controller {
        Some(id) => format!("controller {id} stopped {STOPPED}"),
        None => format!("the controller restarted {STOPPED}"),
    }
}

const STOPPED: &str = "while this was running";

/// Did this failure message come from [`stopped_message`]?
pub fn stopped_the_work(message: &str) -> bool {
    message.ends_with(STOPPED)
        && (message.starts_with("controller ") || message.starts_with("the controller restarted"))
}

/// A controller seen within this many seconds is alive.
pub const ALIVE_SECS: i64 = 30;

impl Catalog {
    /// This controller process's id in the catalog, new each time it starts.
    pub fn controller_id(&self) -> &str {
        &self.me
    }

    /// Say that this controller runs, listening at `address`.
    pub async fn register_controller(&self, address: &str) -> Result<()> {
        let t = now();
        sqlx::query(
            "INSERT INTO controllers (id, address, started_at, last_seen) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen",
        )
        .bind(&*self.me)
        .bind(address)
        .bind(t)
        .bind(t)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Still here. False when this controller's row is gone: another controller took it
    /// for dead and failed its work (a long stall, a network split); the caller registers
    /// again.
    pub async fn controller_heartbeat(&self) -> Result<bool> {
        let n = sqlx::query("UPDATE controllers SET last_seen = $1 WHERE id = $2")
            .bind(now())
            .bind(&*self.me)
            .execute(&self.writer)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Fail the work of controllers not seen for [`ALIVE_SECS`] and forget them; also fail
    /// jobs no controller delivered within `undelivered_secs`. Returns the controllers
    /// declared dead.
    pub async fn reap_stopped_controllers(&self, undelivered_secs: i64) -> Result<Vec<String>> {
        let t = now();
        let mut tx = self.write_tx().await?;
        let dead: Vec<String> = sqlx::query("SELECT id FROM controllers WHERE last_seen < $1")
            .bind(t - ALIVE_SECS)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        // Each takes (why, when, controller). Drills before jobs: a drill is picked by its
        // job still being open.
        const FAIL: [&str; 3] = [
            "UPDATE backups SET status = 'failed', reason = $1, finished_at = $2
             WHERE controller = $3 AND status = 'running'",
            // A drill whose job that controller delivered cannot finish either.
            "UPDATE drills SET state = 'aborted', reason = $1, finished_at = $2
             WHERE state = 'running'
               AND job_id IN (SELECT id FROM jobs WHERE controller = $3 AND state IN ('queued', 'running'))",
            "UPDATE jobs SET state = 'failed', message = $1, finished_at = $2
             WHERE controller = $3 AND state IN ('queued', 'running')",
        ];
        for id in &dead {
            let why = stopped_message(Some(id));
            for sql in FAIL {
                sqlx::query(sql)
                    .bind(&why)
                    .bind(t)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("UPDATE agents SET controller = NULL WHERE controller = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM controllers WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "UPDATE jobs SET state = 'failed', finished_at = $1,
               message = 'no controller holding the agent''s job stream delivered it in time; the agent is not connected'
             WHERE state = 'queued' AND controller IS NULL AND created_at < $2",
        )
        .bind(t)
        .bind(t - undelivered_secs)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(dead)
    }

    /// This controller holds `agent`'s job stream (`held`), or no longer does. Only other
    /// controllers ask, so a catalog of one controller's own is not written to: 1,000
    /// agents connecting at once would otherwise mean 1,000 commits.
    pub async fn hold_agent(&self, agent: &str, held: bool) -> Result<()> {
        if !self.shared() {
            return Ok(());
        }
        let q = if held {
            sqlx::query(
                "UPDATE agents SET controller = $1 WHERE name = $2 AND controller IS DISTINCT FROM $1",
            )
        } else {
            sqlx::query("UPDATE agents SET controller = NULL WHERE controller = $1 AND name = $2")
        };
        q.bind(&*self.me).bind(agent).execute(&self.writer).await?;
        Ok(())
    }

    /// The live controller other than this one that holds `agent`'s job stream.
    pub async fn agent_held_elsewhere(&self, agent: &str) -> Result<Option<String>> {
        Ok(sqlx::query(
            "SELECT c.address FROM agents a JOIN controllers c ON c.id = a.controller
             WHERE a.name = $1 AND c.id <> $2 AND c.last_seen >= $3",
        )
        .bind(agent)
        .bind(&*self.me)
        .bind(now() - ALIVE_SECS)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| r.get(0)))
    }

    /// Agents whose job streams other live controllers hold.
    pub async fn agents_held_elsewhere(&self) -> Result<std::collections::HashSet<String>> {
        Ok(sqlx::query(
            "SELECT a.name FROM agents a JOIN controllers c ON c.id = a.controller
             WHERE c.id <> $1 AND c.last_seen >= $2",
        )
        .bind(&*self.me)
        .bind(now() - ALIVE_SECS)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
    }

    /// Jobs created (by any controller) that no controller has delivered yet.
    pub async fn undelivered_jobs(&self) -> Result<Vec<UndeliveredJob>> {
        Ok(sqlx::query(
            "SELECT id, agent, spec FROM jobs
             WHERE state = 'queued' AND controller IS NULL AND spec IS NOT NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| UndeliveredJob {
            id: JobId(r.get(0)),
            agent: r.get(1),
            spec: r.get(2),
        })
        .collect())
    }

    /// Take job `id` for delivery by this controller; false when another took it first.
    pub async fn claim_job(&self, id: JobId) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE jobs SET controller = $1 WHERE id = $2 AND controller IS NULL AND state = 'queued'",
        )
        .bind(&*self.me)
        .bind(id.0)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(n == 1)
    }
}

/// A new controller id: 16 random hex digits.
pub(super) fn new_controller_id() -> String {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).expect("random bytes");
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use crate::catalog::BackupKind;
    use crate::catalog::{Catalog, DrillState, JobState, Registration, test_catalog};

    async fn stop(live: &Catalog, stopped: &Catalog) {
        sqlx::query("UPDATE controllers SET last_seen = last_seen - 100 WHERE id = $1")
            .bind(stopped.controller_id())
            .execute(&live.writer)
            .await
            .unwrap();
    }

    #[test]
    fn a_stopped_controller_is_told_apart_from_other_failures() {
        for m in [
            super::stopped_message(Some("ab12")),
            super::stopped_message(None),
        ] {
            assert!(super::stopped_the_work(&m), "{m}");
        }
        assert!(!super::stopped_the_work(
            "pg_dump: error: connection refused"
        ));
        assert!(!super::stopped_the_work(
            "agent db1 disconnected while this was running"
        ));
    }

    /// A stopped controller's uploads and delivered jobs fail; another's are untouched.
    #[tokio::test]
    async fn the_work_of_a_stopped_controller_is_failed_and_only_its() {
        let (a, _dir) = test_catalog().await;
        let b = a.another_controller().await.unwrap();
        a.register_controller("a:7420").await.unwrap();
        b.register_controller("b:7420").await.unwrap();
        let on_a = a
            .create_backup("pg", "db1", BackupKind::Logical, None, &[], &[], "", "")
            .await
            .unwrap();
        let on_b = b
            .create_backup("pg", "db2", BackupKind::Logical, None, &[], &[], "", "")
            .await
            .unwrap();
        let job = a
            .create_job("backup", "db1", "pg", &serde_json::json!({}), 0, b"x")
            .await
            .unwrap();
        assert!(a.claim_job(job).await.unwrap());
        // A drill whose job A delivered to its sandbox.
        let drill = a.create_drill("pg", 1, "test", "").await.unwrap();
        let drill_job = a
            .create_job("drill", "sb", "pg", &serde_json::json!({}), 0, b"x")
            .await
            .unwrap();
        assert!(a.claim_job(drill_job).await.unwrap());
        assert!(a.start_drill(drill, "sb", on_a, drill_job).await.unwrap());
        assert!(b.reap_stopped_controllers(120).await.unwrap().is_empty());

        stop(&b, &a).await;
        assert_eq!(
            b.reap_stopped_controllers(120).await.unwrap(),
            vec![a.controller_id().to_string()]
        );
        let failed = b.backup(on_a).await.unwrap().unwrap();
        assert_eq!(failed.status.as_str(), "failed");
        assert!(
            failed.reason.contains(a.controller_id()),
            "{}",
            failed.reason
        );
        assert_eq!(
            b.backup(on_b).await.unwrap().unwrap().status.as_str(),
            "running"
        );
        assert_eq!(b.job(job).await.unwrap().unwrap().state, JobState::Failed);
        let d = b.drill(drill).await.unwrap().unwrap();
        assert_eq!(d.state, DrillState::Aborted, "{}", d.reason);
        // The stopped one, back after a stall, learns it was taken for dead.
        assert!(!a.controller_heartbeat().await.unwrap());
        assert!(b.controller_heartbeat().await.unwrap());
    }

    /// A job for an agent connected to another controller waits for that controller, which
    /// alone delivers it; a job nobody can deliver is failed in time.
    #[tokio::test]
    async fn a_job_waits_for_the_controller_holding_its_agent() {
        let (a, _dir) = test_catalog().await;
        let b = a.another_controller().await.unwrap();
        a.register_controller("a:7420").await.unwrap();
        b.register_controller("b:7420").await.unwrap();
        let reg = Registration {
            role: "agent".into(),
            ..Default::default()
        };
        a.register_agent("db1", &reg, &[]).await.unwrap();
        assert_eq!(a.agent_held_elsewhere("db1").await.unwrap(), None);
        b.hold_agent("db1", true).await.unwrap();
        // Only a shared catalog records who holds an agent; SQLite has one controller.
        let held = a.shared().then_some("b:7420");
        assert_eq!(
            a.agent_held_elsewhere("db1").await.unwrap().as_deref(),
            held
        );
        assert_eq!(
            a.agents_held_elsewhere().await.unwrap().contains("db1"),
            a.shared()
        );
        assert!(
            b.agent_held_elsewhere("db1").await.unwrap().is_none(),
            "its own"
        );

        let job = a
            .create_job("backup", "db1", "pg", &serde_json::json!({}), 0, b"spec")
            .await
            .unwrap();
        let waiting = b.undelivered_jobs().await.unwrap();
        assert_eq!(waiting.len(), 1);
        assert_eq!(
            (waiting[0].id, waiting[0].spec.as_slice()),
            (job, &b"spec"[..])
        );
        assert!(b.claim_job(job).await.unwrap());
        assert!(!a.claim_job(job).await.unwrap(), "delivered once");
        assert!(b.undelivered_jobs().await.unwrap().is_empty());

        // An agent whose controller stopped is held by nobody.
        stop(&a, &b).await;
        assert_eq!(a.agent_held_elsewhere("db1").await.unwrap(), None);
        b.hold_agent("db1", false).await.unwrap();

        let stuck = a
            .create_job("backup", "db1", "pg", &serde_json::json!({}), 0, b"spec")
            .await
            .unwrap();
        a.reap_stopped_controllers(120).await.unwrap();
        assert_eq!(a.job(stuck).await.unwrap().unwrap().state, JobState::Queued);
        a.reap_stopped_controllers(-1).await.unwrap();
        let j = a.job(stuck).await.unwrap().unwrap();
        assert_eq!(j.state, JobState::Failed);
        assert!(j.message.contains("not connected"), "{}", j.message);
    }
}
