//! Backups, their parts and manifests, and the chunks known to be stored.
//!
//! A backup is `running` until the controller has seen every part stored and verified and the
//! agent's checks pass; only then `complete`. Any failure makes it `failed` with a reason, and
//! a finished backup never changes state again.

use sqlx::Row;
use tidemark_core::ids::{BackupId, ChunkId, JobId};

use super::{BackupKind, BackupStatus, Catalog, CatalogError, DbConn, DbRow, Result, now};

#[derive(Debug, Clone, Default)]
pub struct PartRow {
    pub name: String,
    pub format: String,
    pub stored: bool,
    pub stats: PartStats,
    pub check_status: String,
    pub check_detail: String,
}

/// What was learnt while a part was uploaded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartStats {
    pub raw_bytes: u64,
    pub chunks: u64,
    pub new_chunks: u64,
    pub new_bytes: u64,
    pub stream_sha256: String,
}

#[derive(Debug, Clone)]
pub struct BackupRow {
    pub id: BackupId,
    pub instance: String,
    pub agent: String,
    pub kind: BackupKind,
    pub status: BackupStatus,
    pub job_id: Option<JobId>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub reason: String,
    pub server_version: String,
    pub tool_version: String,
    pub warnings: Vec<String>,
    pub parts: Vec<PartRow>,
    /// The databases in a part that holds several (a MariaDB dump).
    pub databases: Vec<String>,
    /// When retention removed its data (its row stays as history).
    pub expired_at: Option<i64>,
}

impl BackupRow {
    pub fn part(&self, name: &str) -> Option<&PartRow> {
        self.parts.iter().find(|p| p.name == name)
    }
}

/// One line of a part's manifest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ManifestEntry {
    pub seq: u64,
    pub id: ChunkId,
    pub raw_len: u32,
}

/// A chunk that was newly written to the store.
#[derive(Debug, Clone)]
pub struct NewChunk {
    pub id: ChunkId,
    pub raw_len: u32,
    pub stored_len: u64,
    /// Where it is stored: a pack, or (None) an object of its own.
    pub pack: Option<crate::store::PackLoc>,
}

/// Record chunks newly durable in the store, and that `owner` uploaded them (an agent may
/// later refer only to chunks it owns). Idempotent: a chunk stored before keeps its row,
/// unless a read found it faulty: then these verified bytes, just stored, heal it.
pub(super) async fn record_new_chunks(
    conn: &mut DbConn,
    new_chunks: &[NewChunk],
    owner: Option<&str>,
) -> Result<()> {
    let t = now();
    for c in new_chunks {
        sqlx::query(
            "INSERT INTO chunks (id, raw_len, stored_len, created_at, pack, pack_offset, pack_len)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (id) DO UPDATE SET stored_len = excluded.stored_len, pack = excluded.pack,
               pack_offset = excluded.pack_offset, pack_len = excluded.pack_len, fault = ''
             WHERE chunks.fault <> ''",
        )
        .bind(c.id.0.as_slice())
        .bind(c.raw_len as i64)
        .bind(c.stored_len as i64)
        .bind(t)
        .bind(c.pack.as_ref().map(|p| p.pack.as_str()))
        .bind(c.pack.as_ref().map(|p| p.offset as i64))
        .bind(c.pack.as_ref().map(|p| p.len as i64))
        .execute(&mut *conn)
        .await?;
        if let Some(agent) = owner {
            sqlx::query(
                "INSERT INTO chunk_owners (chunk_id, agent) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(c.id.0.as_slice())
            .bind(agent)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

/// Refuse manifest lines whose chunk the catalog no longer holds. Checked in the transaction
/// that commits them: garbage collection forgets chunks nothing refers to in a transaction of
/// its own, so either it ran first and the reference is refused here, or the reference is
/// committed first and collection sees it.
pub(super) async fn require_stored(conn: &mut DbConn, entries: &[ManifestEntry]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for e in entries.iter().filter(|e| seen.insert(e.id)) {
        let stored = sqlx::query("SELECT 1 FROM chunks WHERE id = $1")
            .bind(e.id.0.as_slice())
            .fetch_optional(&mut *conn)
            .await?
            .is_some();
        if !stored {
            return Err(CatalogError::ChunkGone(e.id));
        }
    }
    Ok(())
}

pub(super) fn chunk_id(r: &DbRow, col: &str) -> Result<ChunkId> {
    ChunkId::from_slice(r.get::<&[u8], _>(col)).map_err(|e| CatalogError::Corrupt(e.to_string()))
}

impl Catalog {
    #[allow(clippy::too_many_arguments)]
    pub async fn create_backup(
        &self,
        instance: &str,
        agent: &str,
        kind: BackupKind,
        job: Option<JobId>,
        parts: &[String],
        warnings: &[String],
        server_version: &str,
        tool_version: &str,
    ) -> Result<BackupId> {
        let mut tx = self.write_tx().await?;
        let id = sqlx::query(
            "INSERT INTO backups (instance, agent, kind, status, job_id, started_at, server_version,
               tool_version, controller)
             VALUES ($1, $2, $3, 'running', $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(instance)
        .bind(agent)
        .bind(kind.as_str())
        .bind(job.map(|j| j.0))
        .bind(now())
        .bind(server_version)
        .bind(tool_version)
        .bind(&*self.me)
        .fetch_one(&mut *tx)
        .await?
        .get::<i64, _>(0);
        for (seq, part) in parts.iter().enumerate() {
            sqlx::query(
                "INSERT INTO backup_parts (backup_id, name, status, seq) VALUES ($1, $2, 'expected', $3)",
            )
            .bind(id)
            .bind(part)
            .bind(seq as i64)
            .execute(&mut *tx)
            .await?;
        }
        for (seq, w) in warnings.iter().enumerate() {
            sqlx::query(
                "INSERT INTO backup_warnings (backup_id, seq, message) VALUES ($1, $2, $3)",
            )
            .bind(id)
            .bind(seq as i64)
            .bind(w)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(BackupId(id))
    }

    pub async fn backup(&self, id: BackupId) -> Result<Option<BackupRow>> {
        let Some(r) = sqlx::query("SELECT * FROM backups WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let mut b = self.backup_from_row(&r).await?;
        b.warnings =
            sqlx::query("SELECT message FROM backup_warnings WHERE backup_id = $1 ORDER BY seq")
                .bind(id.0)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
        Ok(Some(b))
    }

    /// Backups, newest first; warnings are counted, not loaded.
    pub async fn list_backups(&self, instance: Option<&str>) -> Result<Vec<BackupRow>> {
        let rows = sqlx::query(
            "SELECT b.*, (SELECT COUNT(*) FROM backup_warnings w WHERE w.backup_id = b.id) AS n_warnings
             FROM backups b WHERE ($1 IS NULL OR b.instance = $1) ORDER BY b.id DESC",
        )
        .bind(instance)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut b = self.backup_from_row(r).await?;
            let n: i64 = r.get("n_warnings");
            b.warnings = vec![String::new(); n as usize];
            out.push(b);
        }
        Ok(out)
    }

    async fn backup_from_row(&self, r: &DbRow) -> Result<BackupRow> {
        let id = BackupId(r.get("id"));
        let parts = sqlx::query("SELECT * FROM backup_parts WHERE backup_id = $1 ORDER BY seq")
            .bind(id.0)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|p| PartRow {
                name: p.get("name"),
                format: p.get("format"),
                stored: p.get::<&str, _>("status") == "stored",
                stats: PartStats {
                    raw_bytes: p.get::<i64, _>("raw_bytes") as u64,
                    chunks: p.get::<i64, _>("chunks") as u64,
                    new_chunks: p.get::<i64, _>("new_chunks") as u64,
                    new_bytes: p.get::<i64, _>("new_bytes") as u64,
                    stream_sha256: p.get("stream_sha256"),
                },
                check_status: p.get("check_status"),
                check_detail: p.get("check_detail"),
            })
            .collect();
        // A complete backup that verify found damaged reads as corrupt, with why: nothing
        // that asks for a complete backup (restores, drills, the window) takes it.
        let corrupt: String = r.get("corrupt");
        let stored = BackupStatus::parse(r.get("status"))?;
        let (status, reason) = if corrupt.is_empty() || stored == BackupStatus::Expired {
            (stored, r.get("reason"))
        } else {
            (BackupStatus::Corrupt, corrupt)
        };
        Ok(BackupRow {
            id,
            instance: r.get("instance"),
            agent: r.get("agent"),
            kind: BackupKind::parse(r.get("kind"))?,
            status,
            job_id: r.get::<Option<i64>, _>("job_id").map(JobId),
            started_at: r.get("started_at"),
            finished_at: r.get("finished_at"),
            reason,
            server_version: r.get("server_version"),
            tool_version: r.get("tool_version"),
            warnings: Vec::new(),
            parts,
            databases: serde_json::from_str(r.get::<&str, _>("databases"))
                .map_err(|e| CatalogError::Corrupt(e.to_string()))?,
            expired_at: r.get("expired_at"),
        })
    }

    /// Append manifest lines of a part being uploaded, with the chunks they newly stored, in
    /// one transaction. The chunks are already durable in the store when this is called.
    pub async fn add_manifest(
        &self,
        backup: BackupId,
        part: &str,
        entries: &[ManifestEntry],
        new_chunks: &[NewChunk],
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let owner: Option<String> = sqlx::query("SELECT agent FROM backups WHERE id = $1")
            .bind(backup.0)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.get(0));
        record_new_chunks(&mut tx, new_chunks, owner.as_deref()).await?;
        require_stored(&mut tx, entries).await?;
        for e in entries {
            sqlx::query(
                "INSERT INTO part_chunks (backup_id, part, seq, chunk_id, raw_len) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(backup.0)
            .bind(part)
            .bind(e.seq as i64)
            .bind(e.id.0.as_slice())
            .bind(e.raw_len as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Forget a part's manifest lines (its upload is being retried from the start).
    pub async fn clear_manifest(&self, backup: BackupId, part: &str) -> Result<()> {
        sqlx::query("DELETE FROM part_chunks WHERE backup_id = $1 AND part = $2")
            .bind(backup.0)
            .bind(part)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Mark a part stored; false if it already was, or its backup is no longer running.
    pub async fn mark_part_stored(
        &self,
        backup: BackupId,
        part: &str,
        format: &str,
        stats: &PartStats,
    ) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE backup_parts SET status = 'stored', format = $1, raw_bytes = $2, chunks = $3,
               new_chunks = $4, new_bytes = $5, stream_sha256 = $6
             WHERE backup_id = $7 AND name = $8 AND status = 'expected'
               AND (SELECT status FROM backups WHERE id = backup_id) = 'running'",
        )
        .bind(format)
        .bind(stats.raw_bytes as i64)
        .bind(stats.chunks as i64)
        .bind(stats.new_chunks as i64)
        .bind(stats.new_bytes as i64)
        .bind(&stats.stream_sha256)
        .bind(backup.0)
        .bind(part)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    pub async fn set_part_check(
        &self,
        backup: BackupId,
        part: &str,
        ok: bool,
        detail: &str,
    ) -> Result<()> {
        sqlx::query("UPDATE backup_parts SET check_status = $1, check_detail = $2 WHERE backup_id = $3 AND name = $4")
            .bind(if ok { "ok" } else { "failed" })
            .bind(detail)
            .bind(backup.0)
            .bind(part)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// `agent` sent the bytes of these chunks, which were stored already: it owns them too
    /// (it may refer to them later), and nothing is stored again.
    pub async fn claim_chunks(&self, agent: &str, ids: &[ChunkId]) -> Result<()> {
        let mut tx = self.write_tx().await?;
        for id in ids {
            sqlx::query(
                "INSERT INTO chunk_owners (chunk_id, agent) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(id.0.as_slice())
            .bind(agent)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Finish a running backup as complete or failed. Returns false if it had already
    /// finished, in which case nothing changes.
    pub async fn finish_backup(&self, id: BackupId, complete: bool, reason: &str) -> Result<bool> {
        self.finish_backup_at(id, complete, reason, now()).await
    }

    /// [`Catalog::finish_backup`] at time `at` (the time its manifest record carries).
    pub async fn finish_backup_at(
        &self,
        id: BackupId,
        complete: bool,
        reason: &str,
        at: i64,
    ) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE backups SET status = $1, reason = $2, finished_at = $3 WHERE id = $4 AND status = 'running'",
        )
        .bind(if complete { "complete" } else { "failed" })
        .bind(reason)
        .bind(at)
        .bind(id.0)
        .execute(&self.writer)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    pub async fn fail_backups_of_agent(&self, agent: &str, reason: &str) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE backups SET status = 'failed', reason = $1, finished_at = $2 WHERE agent = $3 AND status = 'running'",
        )
        .bind(reason)
        .bind(now())
        .bind(agent)
        .execute(&self.writer)
        .await?
        .rows_affected())
    }

    /// The dedup query: which of these chunks are durably stored, not found faulty, and were
    /// uploaded by `agent` itself?
    pub async fn have_chunks(&self, agent: &str, ids: &[ChunkId]) -> Result<Vec<bool>> {
        let mut conn = self.pool.acquire().await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let found = sqlx::query(
                "SELECT 1 FROM chunks c JOIN chunk_owners o ON o.chunk_id = c.id
                 WHERE c.id = $1 AND o.agent = $2 AND c.fault = ''",
            )
            .bind(id.0.as_slice())
            .bind(agent)
            .fetch_optional(&mut *conn)
            .await?
            .is_some();
            out.push(found);
        }
        Ok(out)
    }

    /// Has `agent` ever uploaded this chunk's bytes?
    pub async fn chunk_owned_by(&self, id: &ChunkId, agent: &str) -> Result<bool> {
        Ok(
            sqlx::query("SELECT 1 FROM chunk_owners WHERE chunk_id = $1 AND agent = $2")
                .bind(id.0.as_slice())
                .bind(agent)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// Where a chunk the catalog holds as stored is (None: it does not hold it; Some(None):
    /// an object of its own), and whether a read found it faulty.
    pub async fn chunk_place(
        &self,
        id: &ChunkId,
    ) -> Result<Option<(Option<crate::store::PackLoc>, bool)>> {
        let row =
            sqlx::query("SELECT pack, pack_offset, pack_len, fault FROM chunks WHERE id = $1")
                .bind(id.0.as_slice())
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| {
            let loc = r
                .get::<Option<String>, _>(0)
                .map(|pack| crate::store::PackLoc {
                    pack,
                    offset: r.get::<i64, _>(1) as u64,
                    len: r.get::<i64, _>(2) as u32,
                });
            (loc, !r.get::<&str, _>(3).is_empty())
        }))
    }

    /// A read found the chunk missing, corrupt or unreadable: record why. The row stays, so
    /// nothing that refers to it is lost; until a good read or a new upload clears the
    /// fault, the chunk is not offered for dedup and what needs it is refused.
    pub async fn mark_chunk_fault(&self, id: &ChunkId, why: &str) -> Result<()> {
        sqlx::query("UPDATE chunks SET fault = $1 WHERE id = $2")
            .bind(if why.is_empty() { "unreadable" } else { why })
            .bind(id.0.as_slice())
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// A read found the chunk intact again (a volume remounted, a lagging replica caught
    /// up, a key loaded): clear its fault. True when it had one.
    pub async fn clear_chunk_fault(&self, id: &ChunkId) -> Result<bool> {
        let n = sqlx::query("UPDATE chunks SET fault = '' WHERE id = $1 AND fault <> ''")
            .bind(id.0.as_slice())
            .execute(&self.writer)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    /// Up to `limit` manifest lines of a part with `seq >= from`.
    pub async fn manifest_page(
        &self,
        backup: BackupId,
        part: &str,
        from: u64,
        limit: u32,
    ) -> Result<Vec<ManifestEntry>> {
        sqlx::query(
            "SELECT seq, chunk_id, raw_len FROM part_chunks WHERE backup_id = $1 AND part = $2 AND seq >= $3
             ORDER BY seq LIMIT $4",
        )
        .bind(backup.0)
        .bind(part)
        .bind(from as i64)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(ManifestEntry {
                seq: r.get::<i64, _>("seq") as u64,
                id: chunk_id(r, "chunk_id")?,
                raw_len: r.get::<i64, _>("raw_len") as u32,
            })
        })
        .collect()
    }

    /// Chunks a part needs that the catalog cannot vouch for: found faulty by a read, or
    /// forgotten (by a version before faults were recorded).
    pub async fn unavailable_chunks(
        &self,
        backup: BackupId,
        part: &str,
        limit: u32,
    ) -> Result<Vec<ChunkId>> {
        sqlx::query(
            "SELECT DISTINCT p.chunk_id FROM part_chunks p LEFT JOIN chunks c ON c.id = p.chunk_id
             WHERE p.backup_id = $1 AND p.part = $2 AND (c.id IS NULL OR c.fault <> '') LIMIT $3",
        )
        .bind(backup.0)
        .bind(part)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| chunk_id(r, "chunk_id"))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::test_catalog;

    #[tokio::test]
    async fn manifest_pages_in_order_and_unavailable_chunks_are_named() {
        let (cat, _dir) = test_catalog().await;
        let b = cat
            .create_backup(
                "orders",
                "db1",
                BackupKind::Logical,
                None,
                &["db:app".into()],
                &["w".into()],
                "15",
                "15",
            )
            .await
            .unwrap();
        let ids: Vec<ChunkId> = (0..5u8).map(|i| ChunkId::of(&[i])).collect();
        let entries: Vec<ManifestEntry> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| ManifestEntry {
                seq: i as u64,
                id: *id,
                raw_len: 1,
            })
            .collect();
        let new: Vec<NewChunk> = ids
            .iter()
            .map(|id| NewChunk {
                id: *id,
                raw_len: 1,
                stored_len: 9,
                pack: None,
            })
            .collect();
        cat.add_manifest(b, "db:app", &entries[..3], &new[..3])
            .await
            .unwrap();
        cat.add_manifest(b, "db:app", &entries[3..], &new[3..])
            .await
            .unwrap();
        assert_eq!(
            cat.manifest_page(b, "db:app", 0, 2).await.unwrap(),
            entries[..2]
        );
        assert_eq!(
            cat.manifest_page(b, "db:app", 2, 10).await.unwrap(),
            entries[2..]
        );
        assert_eq!(
            cat.have_chunks("db1", &[ids[0], ChunkId::of(b"x")])
                .await
                .unwrap(),
            vec![true, false]
        );

        assert!(
            cat.unavailable_chunks(b, "db:app", 10)
                .await
                .unwrap()
                .is_empty()
        );
        // A read found it missing: it is refused and not offered for dedup, but its row
        // stays, with where it is stored.
        cat.mark_chunk_fault(&ids[3], "chunk is missing from the store")
            .await
            .unwrap();
        assert_eq!(
            cat.unavailable_chunks(b, "db:app", 10).await.unwrap(),
            vec![ids[3]]
        );
        assert_eq!(
            cat.have_chunks("db1", &[ids[3]]).await.unwrap(),
            vec![false]
        );
        assert_eq!(
            cat.chunk_place(&ids[3]).await.unwrap().map(|p| p.1),
            Some(true)
        );
        // A later good read clears it.
        assert!(cat.clear_chunk_fault(&ids[3]).await.unwrap());
        assert!(!cat.clear_chunk_fault(&ids[3]).await.unwrap());
        assert!(
            cat.unavailable_chunks(b, "db:app", 10)
                .await
                .unwrap()
                .is_empty()
        );
        // So does a new upload of the same content, which also records where it now is.
        cat.mark_chunk_fault(&ids[3], "corrupt").await.unwrap();
        let moved = crate::store::PackLoc {
            pack: "newpack".into(),
            offset: 7,
            len: 3,
        };
        let again = NewChunk {
            id: ids[3],
            raw_len: 1,
            stored_len: 3,
            pack: Some(moved.clone()),
        };
        cat.add_manifest(b, "db:app", &[], &[again]).await.unwrap();
        assert_eq!(
            cat.chunk_place(&ids[3]).await.unwrap(),
            Some((Some(moved), false))
        );
        cat.mark_chunk_fault(&ids[3], "chunk is missing from the store")
            .await
            .unwrap();

        assert!(cat.finish_backup(b, false, "pg_dump failed").await.unwrap());
        assert!(
            !cat.finish_backup(b, true, "").await.unwrap(),
            "a failed backup stays failed"
        );
        let row = cat.backup(b).await.unwrap().unwrap();
        assert_eq!(
            (row.status.as_str(), row.reason.as_str()),
            ("failed", "pg_dump failed")
        );
        assert_eq!(row.warnings, vec!["w".to_string()]);
    }
}
