//! The WAL archive: one row per archived file per instance, with its chunk manifest, written
//! in one transaction once every chunk is durable. Rows are never updated, so a file, once
//! archived, cannot be replaced by a different one under the same name.

use sqlx::Row;
use tidemark_core::ids::ChunkId;

use super::backups::{chunk_id, record_new_chunks, require_stored};
use super::{Catalog, DbRow, ManifestEntry, NewChunk, Result, now};

/// An archived WAL file.
#[derive(Debug, Clone, PartialEq)]
pub struct WalFileRow {
    pub instance: String,
    pub name: String,
    pub timeline: u32,
    /// None for a timeline history file.
    pub segno: Option<u64>,
    pub size: u64,
    pub sha256: String,
    pub chunks: u64,
    pub modified_at: i64,
    pub stored_at: i64,
    pub agent: String,
    /// A binlog's first event (unix seconds); None for WAL.
    pub first_event_at: Option<i64>,
    /// The pack that describes it in the store (None: archived before descriptions).
    pub description_pack: Option<String>,
}

/// What happened to a pushed file.
#[derive(Debug, PartialEq)]
pub enum WalOutcome {
    Stored,
    /// The same bytes were archived before under this name.
    Identical,
    /// Different bytes are archived under this name; nothing was changed.
    Conflict {
        archived_sha256: String,
    },
}

fn wal_from_row(r: &DbRow) -> WalFileRow {
    WalFileRow {
        instance: r.get("instance"),
        name: r.get("name"),
        timeline: r.get::<i64, _>("timeline") as u32,
        segno: r.get::<Option<i64>, _>("segno").map(|s| s as u64),
        size: r.get::<i64, _>("size") as u64,
        sha256: r.get("sha256"),
        chunks: r.get::<i64, _>("chunks") as u64,
        modified_at: r.get("modified_at"),
        stored_at: r.get("stored_at"),
        agent: r.get("agent"),
        first_event_at: r.get("first_event_at"),
        description_pack: r.get("description_pack"),
    }
}

impl Catalog {
    /// Record an archived file whose chunks are all durably stored. A file already archived
    /// under the name is compared by digest and size, never replaced; a conflict raises an
    /// alert on the instance.
    pub async fn add_wal(
        &self,
        file: &WalFileRow,
        entries: &[ManifestEntry],
        new_chunks: &[NewChunk],
    ) -> Result<WalOutcome> {
        let mut tx = self.write_tx().await?;
        let existing =
            sqlx::query("SELECT sha256, size FROM wal_files WHERE instance = $1 AND name = $2")
                .bind(&file.instance)
                .bind(&file.name)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(r) = existing {
            let (sha, size): (String, i64) = (r.get(0), r.get(1));
            if sha == file.sha256 && size as u64 == file.size {
                return Ok(WalOutcome::Identical);
            }
            sqlx::query(
                "INSERT INTO alerts (instance, kind, message, created_at) VALUES ($1, 'wal-conflict', $2, $3)",
            )
            .bind(&file.instance)
            .bind(format!(
                "agent {} pushed a different {} (sha256 {}, {} bytes) than the one archived (sha256 {sha}, {size} bytes); the archived file was kept",
                file.agent, file.name, file.sha256, file.size
            ))
            .bind(now())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(WalOutcome::Conflict {
                archived_sha256: sha,
            });
        }
        // The time the file's description in the store carries, when the caller set one.
        let t = if file.stored_at > 0 {
            file.stored_at
        } else {
            now()
        };
        record_new_chunks(&mut tx, new_chunks, Some(&file.agent)).await?;
        require_stored(&mut tx, entries).await?;
        insert_wal(&mut tx, file, t, entries).await?;
        tx.commit().await?;
        Ok(WalOutcome::Stored)
    }

    pub async fn wal_file(&self, instance: &str, name: &str) -> Result<Option<WalFileRow>> {
        Ok(
            sqlx::query("SELECT * FROM wal_files WHERE instance = $1 AND name = $2")
                .bind(instance)
                .bind(name)
                .fetch_optional(&self.pool)
                .await?
                .as_ref()
                .map(wal_from_row),
        )
    }

    /// The chunks of an archived file, in order (a segment has a few dozen at most).
    /// Archived files no pack or record describes (archived before descriptions), up to
    /// `limit`, by instance.
    pub async fn undescribed_logs(&self, limit: u32) -> Result<Vec<WalFileRow>> {
        Ok(sqlx::query(
            "SELECT * FROM wal_files WHERE description_pack IS NULL ORDER BY instance, name LIMIT $1",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(wal_from_row)
        .collect())
    }

    /// These files are described in a record (not a pack): `description_pack` is ''.
    pub async fn mark_described(&self, files: &[(String, String)]) -> Result<()> {
        let mut tx = self.write_tx().await?;
        for (instance, name) in files {
            sqlx::query(
                "UPDATE wal_files SET description_pack = '' WHERE instance = $1 AND name = $2 AND description_pack IS NULL",
            )
            .bind(instance)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn wal_manifest(&self, instance: &str, name: &str) -> Result<Vec<ManifestEntry>> {
        sqlx::query(
            "SELECT seq, chunk_id, raw_len FROM wal_chunks WHERE instance = $1 AND name = $2 ORDER BY seq",
        )
        .bind(instance)
        .bind(name)
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

    /// Chunks an archived file needs that the catalog no longer vouches for.
    pub async fn unavailable_wal_chunks(&self, instance: &str, name: &str) -> Result<Vec<ChunkId>> {
        sqlx::query(
            "SELECT DISTINCT w.chunk_id FROM wal_chunks w LEFT JOIN chunks c ON c.id = w.chunk_id
             WHERE w.instance = $1 AND w.name = $2 AND (c.id IS NULL OR c.fault <> '') LIMIT 3",
        )
        .bind(instance)
        .bind(name)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| chunk_id(r, "chunk_id"))
        .collect()
    }

    /// Every readable archived segment of an instance (not history files), by segment
    /// number. A segment with a chunk found missing or corrupt is left out: recovery cannot
    /// use it, so the recovery window must show the gap.
    pub async fn wal_segments(&self, instance: &str) -> Result<Vec<WalFileRow>> {
        Ok(sqlx::query(
            "SELECT * FROM wal_files f WHERE instance = $1 AND segno IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM wal_chunks w LEFT JOIN chunks c ON c.id = w.chunk_id
                               WHERE w.instance = f.instance AND w.name = f.name
                                 AND (c.id IS NULL OR c.fault <> ''))
             ORDER BY segno, timeline",
        )
        .bind(instance)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(wal_from_row)
        .collect())
    }

    /// When the newest WAL file of an instance was archived; 0 when none was.
    pub async fn newest_wal_stored_at(&self, instance: &str) -> Result<i64> {
        Ok(
            sqlx::query("SELECT COALESCE(MAX(stored_at), 0) FROM wal_files WHERE instance = $1")
                .bind(instance)
                .fetch_one(&self.pool)
                .await?
                .get::<i64, _>(0),
        )
    }

    pub async fn wal_file_count(&self, instance: &str) -> Result<u64> {
        Ok(
            sqlx::query("SELECT COUNT(*) FROM wal_files WHERE instance = $1")
                .bind(instance)
                .fetch_one(&self.pool)
                .await?
                .get::<i64, _>(0) as u64,
        )
    }

    /// An instance's alerts, oldest first: (time, kind, message).
    pub async fn alerts(&self, instance: &str) -> Result<Vec<(i64, String, String)>> {
        Ok(sqlx::query(
            "SELECT created_at, kind, message FROM alerts WHERE instance = $1 ORDER BY id",
        )
        .bind(instance)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
    }
}

/// Insert an archived file's row, stored at `stored_at`, and its manifest, in `conn`;
/// false (and nothing written) when the catalog has the file already.
pub(super) async fn insert_wal(
    conn: &mut super::DbConn,
    file: &WalFileRow,
    stored_at: i64,
    entries: &[ManifestEntry],
) -> Result<bool> {
    let n = sqlx::query(
        "INSERT INTO wal_files (instance, name, timeline, segno, size, sha256, chunks, modified_at, stored_at, agent,
           first_event_at, description_pack)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (instance, name) DO NOTHING",
    )
    .bind(&file.instance)
    .bind(&file.name)
    .bind(file.timeline as i64)
    .bind(file.segno.map(|s| s as i64))
    .bind(file.size as i64)
    .bind(&file.sha256)
    .bind(entries.len() as i64)
    .bind(file.modified_at)
    .bind(stored_at)
    .bind(&file.agent)
    .bind(file.first_event_at)
    .bind(&file.description_pack)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if n == 0 {
        return Ok(false);
    }
    for e in entries {
        sqlx::query(
            "INSERT INTO wal_chunks (instance, name, seq, chunk_id, raw_len) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&file.instance)
        .bind(&file.name)
        .bind(e.seq as i64)
        .bind(e.id.0.as_slice())
        .bind(e.raw_len as i64)
        .execute(&mut *conn)
        .await?;
    }
    Ok(true)
}

/// An archived segment of instance "pg" from agent "db1", for tests.
#[cfg(test)]
pub(super) fn test_file(name: &str, sha: &str) -> WalFileRow {
    WalFileRow {
        instance: "pg".into(),
        name: name.into(),
        timeline: 1,
        segno: Some(3),
        size: 16,
        sha256: sha.into(),
        chunks: 1,
        modified_at: 10,
        stored_at: 0,
        agent: "db1".into(),
        first_event_at: None,
        description_pack: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::test_catalog;

    #[tokio::test]
    async fn a_name_is_archived_once_and_never_replaced() {
        let (cat, _dir) = test_catalog().await;
        let id = ChunkId([7; 32]);
        let entries = [ManifestEntry {
            seq: 0,
            id,
            raw_len: 16,
        }];
        let new = [NewChunk {
            id,
            raw_len: 16,
            stored_len: 9,
            pack: None,
        }];
        let f = test_file("000000010000000000000003", "aa");
        assert_eq!(
            cat.add_wal(&f, &entries, &new).await.unwrap(),
            WalOutcome::Stored
        );
        assert_eq!(
            cat.add_wal(&f, &entries, &new).await.unwrap(),
            WalOutcome::Identical
        );
        let other = test_file("000000010000000000000003", "bb");
        assert_eq!(
            cat.add_wal(&other, &entries, &new).await.unwrap(),
            WalOutcome::Conflict {
                archived_sha256: "aa".into()
            }
        );
        let kept = cat.wal_file("pg", &f.name).await.unwrap().unwrap();
        assert_eq!(kept.sha256, "aa");
        assert_eq!(cat.wal_manifest("pg", &f.name).await.unwrap(), entries);
        let alerts = cat.alerts("pg").await.unwrap();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].1, "wal-conflict");
        assert!(alerts[0].2.contains("bb"), "{}", alerts[0].2);
        assert!(cat.chunk_owned_by(&id, "db1").await.unwrap());
    }
}
