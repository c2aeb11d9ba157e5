//! Writing a catalog back from the store's records (`repo::rebuild`): rows inserted with the
//! ids and times the records carry, so that a rebuilt catalog answers as the lost one did.
//! Each insert leaves a row that exists alone, so a rebuild into a catalog that holds some
//! of it (`--force`) adds what is missing and changes nothing else.

use sqlx::Row;
use tidemark_core::ids::ChunkId;

use super::backups::record_new_chunks;
use super::retention::expire;
use super::{
    BackupRow, BaseBackupRow, BinlogCoordRow, Catalog, DataKeyRow, Expiry, InstanceRow, KekRow,
    ManifestEntry, NewChunk, Result, WalFileRow,
};

/// Chunk rows written per transaction.
const CHUNK_BATCH: usize = 2000;

impl Catalog {
    /// What the catalog holds that a rebuild would write over, as "3 backups, 12 archived
    /// files", or None when it holds none of it.
    pub async fn rebuild_target_contents(&self) -> Result<Option<String>> {
        let mut held = Vec::new();
        for (sql, what) in [
            ("SELECT COUNT(*) FROM backups", "backups"),
            ("SELECT COUNT(*) FROM wal_files", "archived files"),
            ("SELECT COUNT(*) FROM chunks", "chunks"),
            ("SELECT COUNT(*) FROM instances", "instances"),
            ("SELECT COUNT(*) FROM keks", "key-encryption keys"),
        ] {
            let n: i64 = sqlx::query(sql).fetch_one(&self.pool).await?.get(0);
            if n > 0 {
                held.push(format!("{n} {what}"));
            }
        }
        Ok((!held.is_empty()).then(|| held.join(", ")))
    }

    /// The keys as the store describes them, unless the catalog's are as new (a snapshot
    /// taken before a rotation holds older ones: they are replaced).
    pub async fn rebuild_keys(&self, keks: &[KekRow], data_keys: &[DataKeyRow]) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let held: (i64, i64) = {
            let r = sqlx::query(
                "SELECT COALESCE((SELECT MAX(id) FROM keks), 0), COALESCE((SELECT MAX(id) FROM data_keys), 0)",
            )
            .fetch_one(&mut *tx)
            .await?;
            (r.get(0), r.get(1))
        };
        let newest = (
            keks.iter().map(|k| i64::from(k.id)).max().unwrap_or(0),
            data_keys.iter().map(|d| i64::from(d.id)).max().unwrap_or(0),
        );
        if held >= newest {
            return Ok(false);
        }
        sqlx::raw_sql("DELETE FROM data_keys; DELETE FROM keks")
            .execute(&mut *tx)
            .await?;
        for k in keks {
            sqlx::query(
                "INSERT INTO keks (id, fingerprint, created_at, retired_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(k.id as i64)
            .bind(&k.fingerprint)
            .bind(k.created_at)
            .bind(k.retired_at)
            .execute(&mut *tx)
            .await?;
        }
        for d in data_keys {
            sqlx::query(
                "INSERT INTO data_keys (id, kek_id, wrapped, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(d.id as i64)
            .bind(d.kek_id as i64)
            .bind(&d.wrapped)
            .bind(super::now())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// An instance as last registered at `at`, and its agent (which fills in its version
    /// and tools when it next registers). An instance the catalog holds stays as it is.
    pub async fn rebuild_instance(&self, i: &InstanceRow, at: i64) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO agents (name, agent_version, tools, registered_at, last_seen, role, sandbox_engines)
             VALUES ($1, '', '[]', $2, $2, 'agent', '[]') ON CONFLICT (name) DO NOTHING",
        )
        .bind(&i.agent)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        let n = sqlx::query(
            "INSERT INTO instances (name, agent, engine, server_version, system_identifier, databases, error,
               updated_at, data_directory, wal_segment_size, archive_timeout, log_bin_basename)
             VALUES ($1, $2, $3, $4, $5, $6, '', $7, $8, $9, $10, $11) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&i.name)
        .bind(&i.agent)
        .bind(i.engine.as_str())
        .bind(&i.server_version)
        .bind(&i.system_identifier)
        .bind(serde_json::to_string(&i.databases).expect("strings serialise"))
        .bind(at)
        .bind(&i.data_directory)
        .bind(i.wal_segment_size as i64)
        .bind(i.archive_timeout as i64)
        .bind(&i.log_bin_basename)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Every pack the catalog places a chunk in.
    pub async fn chunk_packs(&self) -> Result<Vec<String>> {
        Ok(
            sqlx::query("SELECT DISTINCT pack FROM chunks WHERE pack IS NOT NULL")
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect(),
        )
    }

    /// Record a fault on every chunk of `pack` (its rows stay).
    pub async fn mark_pack_fault(&self, pack: &str, why: &str) -> Result<()> {
        sqlx::query("UPDATE chunks SET fault = $1 WHERE pack = $2")
            .bind(why)
            .bind(pack)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Chunks found in the store's packs (and loose chunk objects), in batches.
    pub async fn rebuild_chunks(&self, chunks: &[NewChunk]) -> Result<()> {
        for batch in chunks.chunks(CHUNK_BATCH) {
            let mut tx = self.write_tx().await?;
            record_new_chunks(&mut tx, batch, None).await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// A complete backup with its parts' manifests, under its own id; false when the
    /// catalog has a backup with that id already (nothing is written then). Its agent owns
    /// the chunks it lists, as it did when it uploaded them.
    pub async fn rebuild_backup(
        &self,
        b: &BackupRow,
        manifests: &[Vec<ManifestEntry>],
        base: Option<&BaseBackupRow>,
        binlog: Option<&BinlogCoordRow>,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        // A backup a snapshot caught running, which completed after it: the record wins.
        let held: Option<String> = sqlx::query("SELECT status FROM backups WHERE id = $1")
            .bind(b.id.0)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.get(0));
        if held
            .as_deref()
            .is_some_and(|s| s != "complete" && s != "expired")
        {
            for sql in [
                "DELETE FROM part_chunks WHERE backup_id = $1",
                "DELETE FROM backup_parts WHERE backup_id = $1",
                "DELETE FROM backup_warnings WHERE backup_id = $1",
                "DELETE FROM base_backups WHERE backup_id = $1",
                "DELETE FROM binlog_coordinates WHERE backup_id = $1",
                "DELETE FROM backups WHERE id = $1",
            ] {
                sqlx::query(sql).bind(b.id.0).execute(&mut *tx).await?;
            }
        }
        let n = sqlx::query(
            "INSERT INTO backups (id, instance, agent, kind, status, started_at, finished_at, reason,
               server_version, tool_version, databases)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (id) DO NOTHING",
        )
        .bind(b.id.0)
        .bind(&b.instance)
        .bind(&b.agent)
        .bind(b.kind.as_str())
        .bind(b.status.as_str())
        .bind(b.started_at)
        .bind(b.finished_at)
        .bind(&b.reason)
        .bind(&b.server_version)
        .bind(&b.tool_version)
        .bind(serde_json::to_string(&b.databases).expect("strings serialise"))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        for (seq, (p, lines)) in b.parts.iter().zip(manifests).enumerate() {
            sqlx::query(
                "INSERT INTO backup_parts (backup_id, name, format, status, raw_bytes, chunks, new_chunks,
                   new_bytes, stream_sha256, check_status, check_detail, seq)
                 VALUES ($1, $2, $3, 'stored', $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(b.id.0)
            .bind(&p.name)
            .bind(&p.format)
            .bind(p.stats.raw_bytes as i64)
            .bind(p.stats.chunks as i64)
            .bind(p.stats.new_chunks as i64)
            .bind(p.stats.new_bytes as i64)
            .bind(&p.stats.stream_sha256)
            .bind(&p.check_status)
            .bind(&p.check_detail)
            .bind(seq as i64)
            .execute(&mut *tx)
            .await?;
            for e in lines {
                sqlx::query(
                    "INSERT INTO part_chunks (backup_id, part, seq, chunk_id, raw_len) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(b.id.0)
                .bind(&p.name)
                .bind(e.seq as i64)
                .bind(e.id.0.as_slice())
                .bind(e.raw_len as i64)
                .execute(&mut *tx)
                .await?;
            }
            own(&mut tx, lines.iter().map(|e| &e.id), &b.agent).await?;
        }
        for (seq, w) in b.warnings.iter().enumerate() {
            sqlx::query(
                "INSERT INTO backup_warnings (backup_id, seq, message) VALUES ($1, $2, $3)",
            )
            .bind(b.id.0)
            .bind(seq as i64)
            .bind(w)
            .execute(&mut *tx)
            .await?;
        }
        // In the same transaction: a rebuild stopped half-way leaves the backup whole or
        // absent, never without its position.
        if let Some(base) = base {
            super::base::insert_base(&mut tx, base).await?;
        }
        if let Some(c) = binlog {
            super::binlog::insert_binlog(&mut tx, c).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Archived files with their manifests, each under its stored time; a file the catalog
    /// holds already is left as it is. Returns how many were added.
    pub async fn rebuild_logs(&self, files: &[(WalFileRow, Vec<ManifestEntry>)]) -> Result<u64> {
        let mut added = 0;
        for batch in files.chunks(500) {
            let mut tx = self.write_tx().await?;
            for (f, lines) in batch {
                if !super::wal::insert_wal(&mut tx, f, f.stored_at, lines).await? {
                    continue;
                }
                added += 1;
                own(&mut tx, lines.iter().map(|e| &e.id), &f.agent).await?;
            }
            tx.commit().await?;
        }
        Ok(added)
    }

    /// A revoked certificate, as the store records it.
    pub async fn rebuild_revocation(
        &self,
        fingerprint: &str,
        identity: &str,
        revoked_at: i64,
        by: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO revoked_certificates (fingerprint, identity, revoked_at, revoked_by)
             VALUES ($1, $2, $3, $4) ON CONFLICT (fingerprint) DO NOTHING",
        )
        .bind(fingerprint)
        .bind(identity)
        .bind(revoked_at)
        .bind(by)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// An expiry the store records, as it was applied at `at`.
    pub async fn rebuild_expiry(&self, e: &Expiry, at: i64) -> Result<()> {
        let mut tx = self.write_tx().await?;
        expire(&mut tx, e, at).await?;
        tx.commit().await?;
        Ok(())
    }

    /// After backups were written under their own ids: new ones continue after the
    /// highest (PostgreSQL's identity column does not follow explicit ids by itself;
    /// SQLite's AUTOINCREMENT does).
    pub async fn rebuild_done(&self) -> Result<()> {
        if self.backend_name() == "postgres" {
            sqlx::query(
                "SELECT setval(pg_get_serial_sequence('backups', 'id'), GREATEST((SELECT MAX(id) FROM backups), 1))",
            )
            .execute(&self.writer)
            .await?;
        }
        Ok(())
    }
}

/// `agent` uploaded these chunks: it may refer to them in later uploads.
async fn own<'a>(
    tx: &mut super::DbConn,
    ids: impl Iterator<Item = &'a ChunkId>,
    agent: &str,
) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for id in ids.filter(|id| seen.insert(**id)) {
        sqlx::query(
            "INSERT INTO chunk_owners (chunk_id, agent) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(id.0.as_slice())
        .bind(agent)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}
