//! What verify reads and what it marks: every chunk a stored backup or archived WAL file
//! refers to, and, for a chunk found missing or corrupt, everything that used it.

use sqlx::Row;
use tidemark_core::ids::{BackupId, ChunkId};

use super::backups::chunk_id;
use super::{Catalog, Result, now};

/// What the catalog holds of a chunk something refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Held {
    Stored,
    /// A read found it missing, corrupt or unreadable.
    Faulty,
    /// Its row was deleted by a version that forgot chunks a read could not find.
    Forgotten,
}

/// Who refers to a chunk.
#[derive(Debug, Default, PartialEq)]
pub struct ChunkUsers {
    /// (backup, its instance)
    pub backups: Vec<(BackupId, String)>,
    /// (instance, WAL file name)
    pub wal: Vec<(String, String)>,
}

impl Catalog {
    /// Chunks that complete backups and archived WAL of `instance` (or of every instance)
    /// refer to, each with what the catalog knows of it. `known` is a number (2 stored,
    /// 1 found faulty, 0 forgotten by a version before faults were recorded): SQLite has
    /// no booleans, and the catalog's SQL runs on PostgreSQL too.
    pub async fn referenced_chunks(&self, instance: Option<&str>) -> Result<Vec<(ChunkId, Held)>> {
        let rows = sqlx::query(
            "SELECT DISTINCT pc.chunk_id AS id, CASE WHEN c.id IS NULL THEN 0 WHEN c.fault <> '' THEN 1 ELSE 2 END AS known
               FROM part_chunks pc
               JOIN backups b ON b.id = pc.backup_id LEFT JOIN chunks c ON c.id = pc.chunk_id
             WHERE b.status = 'complete' AND ($1 IS NULL OR b.instance = $2)
             UNION
             SELECT DISTINCT w.chunk_id AS id, CASE WHEN c.id IS NULL THEN 0 WHEN c.fault <> '' THEN 1 ELSE 2 END AS known
               FROM wal_chunks w
               LEFT JOIN chunks c ON c.id = w.chunk_id
             WHERE ($3 IS NULL OR w.instance = $4)",
        )
        .bind(instance)
        .bind(instance)
        .bind(instance)
        .bind(instance)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let held = match r.get::<i64, _>("known") {
                2 => Held::Stored,
                1 => Held::Faulty,
                _ => Held::Forgotten,
            };
            out.push((chunk_id(r, "id")?, held));
        }
        out.sort();
        out.dedup_by(|a, b| a.0 == b.0);
        Ok(out)
    }

    pub async fn chunk_users(&self, id: &ChunkId) -> Result<ChunkUsers> {
        let backups = sqlx::query(
            "SELECT DISTINCT b.id, b.instance FROM part_chunks pc JOIN backups b ON b.id = pc.backup_id
             WHERE pc.chunk_id = $1 AND b.status = 'complete' ORDER BY b.id",
        )
        .bind(id.0.as_slice())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| (BackupId(r.get(0)), r.get(1)))
        .collect();
        let wal = sqlx::query(
            "SELECT DISTINCT instance, name FROM wal_chunks WHERE chunk_id = $1 ORDER BY instance, name",
        )
        .bind(id.0.as_slice())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
        Ok(ChunkUsers { backups, wal })
    }

    /// Mark a complete backup corrupt (the first reason is kept). False when it was
    /// already marked.
    pub async fn mark_backup_corrupt(&self, id: BackupId, reason: &str) -> Result<bool> {
        let n = sqlx::query("UPDATE backups SET corrupt = $1 WHERE id = $2 AND corrupt = ''")
            .bind(reason)
            .bind(id.0)
            .execute(&self.writer)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Clear the corrupt mark of complete backups whose every chunk the catalog now holds
    /// as stored (a fault a later read cleared); their ids.
    pub async fn clear_healed_corruption(&self) -> Result<Vec<BackupId>> {
        let healed: Vec<BackupId> = sqlx::query(
            "SELECT b.id FROM backups b WHERE b.status = 'complete' AND b.corrupt <> ''
               AND NOT EXISTS (SELECT 1 FROM part_chunks pc LEFT JOIN chunks c ON c.id = pc.chunk_id
                               WHERE pc.backup_id = b.id AND (c.id IS NULL OR c.fault <> ''))
             ORDER BY b.id",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| BackupId(r.get(0)))
        .collect();
        for id in &healed {
            sqlx::query("UPDATE backups SET corrupt = '' WHERE id = $1")
                .bind(id.0)
                .execute(&self.writer)
                .await?;
        }
        Ok(healed)
    }

    /// Complete backups of `instance` that verify found damaged.
    pub async fn corrupt_backup_count(&self, instance: &str) -> Result<u64> {
        Ok(
            sqlx::query(
                "SELECT count(*) FROM backups WHERE instance = $1 AND status = 'complete' AND corrupt <> ''",
            )
                .bind(instance)
                .fetch_one(&self.pool)
                .await?
                .get::<i64, _>(0) as u64,
        )
    }

    pub async fn raise_alert(&self, instance: &str, kind: &str, message: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO alerts (instance, kind, message, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(instance)
        .bind(kind)
        .bind(message)
        .bind(now())
        .execute(&self.writer)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::BackupKind;
    use crate::catalog::{ManifestEntry, NewChunk, test_catalog};

    #[tokio::test]
    async fn referenced_chunks_say_which_are_still_held() {
        let (cat, _dir) = test_catalog().await;
        let (a, b, w) = (ChunkId::of(b"a"), ChunkId::of(b"b"), ChunkId::of(b"w"));
        let entry = |seq, id| ManifestEntry {
            seq,
            id,
            raw_len: 1,
        };
        let new = |id| NewChunk {
            id,
            raw_len: 1,
            stored_len: 1,
            pack: None,
        };
        let backup = cat
            .create_backup(
                "pg",
                "db1",
                BackupKind::Logical,
                None,
                &["db:app".into()],
                &[],
                "",
                "",
            )
            .await
            .unwrap();
        cat.add_manifest(
            backup,
            "db:app",
            &[entry(0, a), entry(1, b)],
            &[new(a), new(b)],
        )
        .await
        .unwrap();
        cat.finish_backup(backup, true, "").await.unwrap();
        let file = crate::catalog::wal::test_file("000000010000000000000001", "");
        cat.add_wal(&file, &[entry(0, w)], &[new(w)]).await.unwrap();
        cat.mark_chunk_fault(&b, "corrupt").await.unwrap();
        let mut want = vec![(a, Held::Stored), (b, Held::Faulty), (w, Held::Stored)];
        want.sort();
        assert_eq!(cat.referenced_chunks(None).await.unwrap(), want);
        assert_eq!(cat.referenced_chunks(Some("other")).await.unwrap(), vec![]);

        // A backup marked corrupt for the faulty chunk is complete again once it reads.
        assert!(
            cat.mark_backup_corrupt(backup, "chunk b is corrupt")
                .await
                .unwrap()
        );
        assert_eq!(cat.clear_healed_corruption().await.unwrap(), vec![]);
        cat.clear_chunk_fault(&b).await.unwrap();
        assert_eq!(cat.clear_healed_corruption().await.unwrap(), vec![backup]);
        assert_eq!(cat.corrupt_backup_count("pg").await.unwrap(), 0);
        // A chunk forgotten by an older version is gone for good: never healed.
        sqlx::query("DELETE FROM chunks WHERE id = $1")
            .bind(a.0.as_slice())
            .execute(&cat.writer)
            .await
            .unwrap();
        assert!(
            cat.mark_backup_corrupt(backup, "chunk a is missing")
                .await
                .unwrap()
        );
        assert_eq!(cat.clear_healed_corruption().await.unwrap(), vec![]);
        assert!(
            cat.referenced_chunks(None)
                .await
                .unwrap()
                .contains(&(a, Held::Forgotten))
        );
    }
}
