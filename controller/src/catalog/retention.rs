//! Retention in the catalog: what planning reads (what is in use, the archived logs), applying
//! a plan, and garbage collection of the store objects nothing refers to any more.
//!
//! Deleting happens in two phases. Applying a plan expires backups and deletes archived logs
//! in one transaction per instance: their manifests go, nothing in the store is touched yet.
//! Collection then forgets, in one transaction, the chunks of every pack none of whose chunks
//! is referenced, and queues the pack for deletion; the store objects are deleted after that
//! commit. An upload re-checks, in the transaction that commits its manifest, that every
//! chunk it refers to is still held ([`super::backups::require_stored`]), so an upload that
//! deduplicated against a chunk collection took fails instead of pointing at deleted bytes.

use sqlx::Row;

use super::{Catalog, Result, now};

/// One instance's plan, as applied.
#[derive(Debug, Clone, Default)]
pub struct Expiry {
    pub instance: String,
    /// Backups to expire, each with why (complete ones) or its reason kept (failed ones).
    pub backups: Vec<(i64, String)>,
    /// Archived WAL files or binlogs to delete.
    pub logs: Vec<String>,
    /// Base backups the plan keeps: if one of them stopped being a sound complete backup
    /// since the plan was made, the plan's reasoning no longer holds and nothing is applied.
    pub kept_bases: Vec<i64>,
}

/// A store object waiting to be deleted.
#[derive(Debug, Clone, PartialEq)]
pub struct Garbage {
    /// A pack's name, or a loose chunk's id in hex.
    pub object: String,
    /// "pack" or "chunk".
    pub kind: String,
    pub chunks: u64,
    pub bytes: u64,
}

/// Backups a drill or restore reads: a queued or running drill; a restore that is queued or
/// running, or ended less than [`super::RESTORE_GRANT_SECS`] ago (`$1` is the time that
/// far back): a restore created with `--start` off, or whose server the operator starts
/// again, replays WAL from its base backup after the job ended, for as long as its grant
/// to read the archive lasts.
const IN_USE: &str =
    "SELECT backup_id FROM drills WHERE state IN ('queued', 'running') AND backup_id IS NOT NULL
     UNION
     SELECT backup_id FROM jobs
      WHERE kind = 'restore' AND backup_id IS NOT NULL
        AND (state IN ('queued', 'running') OR finished_at >= $1)";

/// Expire `e`'s backups (their rows stay as history, their manifests go) and delete its
/// archived logs, at time `t`, in `tx`. No premise is checked here.
pub(super) async fn expire(tx: &mut super::DbConn, e: &Expiry, t: i64) -> Result<()> {
    for (id, reason) in &e.backups {
        sqlx::query(
            "UPDATE backups SET expired_at = $1,
               reason = CASE status WHEN 'complete' THEN $2 ELSE reason END,
               status = CASE status WHEN 'complete' THEN 'expired' ELSE status END
             WHERE id = $3",
        )
        .bind(t)
        .bind(format!("expired by retention: {reason}"))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM part_chunks WHERE backup_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    for name in &e.logs {
        // The pack describing the file goes with it when nothing else keeps it: it holds
        // no chunk of its own (every chunk of the file was stored before), so collection
        // by chunks would never find it.
        sqlx::query(
            "INSERT INTO gc_pending (object, kind, chunks, bytes, queued_at)
             SELECT w.description_pack, 'pack', 0, 0, $3 FROM wal_files w
              WHERE w.instance = $1 AND w.name = $2 AND w.description_pack IS NOT NULL
                AND w.description_pack <> ''
                AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.pack = w.description_pack)
                AND NOT EXISTS (SELECT 1 FROM wal_files o WHERE o.description_pack = w.description_pack
                                  AND NOT (o.instance = $1 AND o.name = $2))
             ON CONFLICT (object) DO NOTHING",
        )
        .bind(&e.instance)
        .bind(name)
        .bind(t)
        .execute(&mut *tx)
        .await?;
        for sql in [
            "DELETE FROM wal_chunks WHERE instance = $1 AND name = $2",
            "DELETE FROM wal_files WHERE instance = $1 AND name = $2",
        ] {
            sqlx::query(sql)
                .bind(&e.instance)
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
    }
    Ok(())
}

impl Catalog {
    /// Backups a drill or restore reads (see [`IN_USE`]).
    pub async fn backups_in_use(&self) -> Result<Vec<i64>> {
        Ok(sqlx::query(IN_USE)
            .bind(now() - super::RESTORE_GRANT_SECS)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// Every archived WAL file or binlog of an instance, by name: its name, timeline (0 for
    /// a binlog) and segment or binlog number as recorded (None for a timeline history,
    /// `.partial` or backup history file; see `retention::LogFile::placed`).
    pub async fn archived_log_positions(
        &self,
        instance: &str,
    ) -> Result<Vec<(String, u32, Option<u64>)>> {
        Ok(sqlx::query(
            "SELECT name, timeline, segno FROM wal_files WHERE instance = $1 ORDER BY name",
        )
        .bind(instance)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get::<i64, _>(1) as u32,
                r.get::<Option<i64>, _>(2).map(|n| n as u64),
            )
        })
        .collect())
    }

    /// Apply one instance's plan in one transaction. What could have changed since the plan
    /// was made is checked first, inside the transaction: a backup to expire that a drill or
    /// restore started using, or that is no longer there to expire, or a kept base backup
    /// that is no longer sound. Then nothing is changed and the reason is returned (Ok(Err)):
    /// the next run plans again.
    #[cfg(test)]
    pub async fn apply_retention(&self, e: &Expiry) -> Result<std::result::Result<(), String>> {
        self.apply_retention_at(e, now()).await
    }

    /// [`Catalog::apply_retention`] at time `at` (the time its record in the store carries).
    pub async fn apply_retention_at(
        &self,
        e: &Expiry,
        at: i64,
    ) -> Result<std::result::Result<(), String>> {
        let mut tx = self.write_tx().await?;
        let in_use: Vec<i64> = sqlx::query(IN_USE)
            .bind(at - super::RESTORE_GRANT_SECS)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for (id, _) in &e.backups {
            if in_use.contains(id) {
                return Ok(Err(format!(
                    "backup {id} is now used by a drill or restore"
                )));
            }
            let r = sqlx::query(
                "SELECT status, expired_at FROM backups WHERE id = $1 AND instance = $2",
            )
            .bind(id)
            .bind(&e.instance)
            .fetch_optional(&mut *tx)
            .await?;
            let expirable = r.is_some_and(|r| {
                r.get::<Option<i64>, _>(1).is_none()
                    && matches!(r.get::<&str, _>(0), "complete" | "failed")
            });
            if !expirable {
                return Ok(Err(format!(
                    "backup {id} is no longer a complete or failed backup of {}",
                    e.instance
                )));
            }
        }
        for id in &e.kept_bases {
            let sound = sqlx::query(
                "SELECT 1 FROM backups WHERE id = $1 AND status = 'complete' AND corrupt = ''",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
            if !sound {
                return Ok(Err(format!(
                    "base backup {id}, which the plan keeps, is no longer a sound complete backup"
                )));
            }
        }
        expire(&mut tx, e, at).await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Forget every chunk nothing refers to whose whole pack (or own object) is garbage, and
    /// queue those objects for deletion, in one transaction. A pack some of whose chunks are
    /// still referenced is kept whole: packs are never rewritten. Returns what is now
    /// pending, including what an interrupted collection left.
    pub async fn collect_garbage(&self) -> Result<Vec<Garbage>> {
        let mut tx = self.write_tx().await?;
        const UNREFERENCED: &str =
            "NOT EXISTS (SELECT 1 FROM part_chunks p WHERE p.chunk_id = c.id)
             AND NOT EXISTS (SELECT 1 FROM wal_chunks w WHERE w.chunk_id = c.id)";
        let t = now();
        // Built from constants only.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO gc_pending (object, kind, chunks, bytes, queued_at)
             SELECT c.pack, 'pack', COUNT(*), CAST(SUM(c.stored_len) AS BIGINT), $1 FROM chunks c
              WHERE c.pack IS NOT NULL GROUP BY c.pack
             HAVING SUM(CASE WHEN {UNREFERENCED} THEN 0 ELSE 1 END) = 0
             ON CONFLICT (object) DO NOTHING"
        )))
        .bind(t)
        .execute(&mut *tx)
        .await?;
        for sql in [
            "DELETE FROM chunk_owners WHERE chunk_id IN (SELECT c.id FROM chunks c
               JOIN gc_pending g ON g.kind = 'pack' AND g.object = c.pack)",
            "DELETE FROM chunks WHERE pack IN (SELECT object FROM gc_pending WHERE kind = 'pack')",
        ] {
            sqlx::query(sql).execute(&mut *tx).await?;
        }
        // Chunks stored as objects of their own (before packs), one by one. Built from
        // constants only.
        let loose = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT c.id, c.stored_len FROM chunks c WHERE c.pack IS NULL AND {UNREFERENCED}"
        )))
        .fetch_all(&mut *tx)
        .await?;
        for r in &loose {
            let id: &[u8] = r.get(0);
            sqlx::query(
                "INSERT INTO gc_pending (object, kind, chunks, bytes, queued_at)
                 VALUES ($1, 'chunk', 1, $2, $3) ON CONFLICT (object) DO NOTHING",
            )
            .bind(hex::encode(id))
            .bind(r.get::<i64, _>(1))
            .bind(t)
            .execute(&mut *tx)
            .await?;
            for sql in [
                "DELETE FROM chunk_owners WHERE chunk_id = $1",
                "DELETE FROM chunks WHERE id = $1",
            ] {
                sqlx::query(sql).bind(id).execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        self.pending_garbage().await
    }

    /// What the catalog knows of the store's packs: every pack a chunk is placed in, every
    /// pack describing an archived file, and every pack queued for deletion. A pack outside
    /// this set was written by an upload that never committed (or by a catalog's future).
    pub async fn known_packs(&self) -> Result<std::collections::HashSet<String>> {
        Ok(sqlx::query(
            "SELECT DISTINCT pack FROM chunks WHERE pack IS NOT NULL
             UNION SELECT description_pack FROM wal_files WHERE description_pack IS NOT NULL AND description_pack <> ''
             UNION SELECT object FROM gc_pending WHERE kind = 'pack'",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
    }

    /// Every backup the catalog holds: id and start time.
    pub async fn backup_starts(&self) -> Result<std::collections::HashMap<i64, i64>> {
        Ok(sqlx::query("SELECT id, started_at FROM backups")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    pub async fn pending_garbage(&self) -> Result<Vec<Garbage>> {
        Ok(sqlx::query(
            "SELECT object, kind, chunks, bytes FROM gc_pending ORDER BY queued_at, object",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Garbage {
            object: r.get(0),
            kind: r.get(1),
            chunks: r.get::<i64, _>(2) as u64,
            bytes: r.get::<i64, _>(3) as u64,
        })
        .collect())
    }

    /// The store deleted an object.
    pub async fn garbage_deleted(&self, object: &str) -> Result<()> {
        sqlx::query("DELETE FROM gc_pending WHERE object = $1")
            .bind(object)
            .execute(&self.writer)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
