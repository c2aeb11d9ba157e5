//! Where each MariaDB/MySQL backup sits in the binlog: the file and position it is
//! consistent with, and its GTID position. Point-in-time recovery replays archived binlogs
//! from exactly there; the binlog files themselves are rows of `wal_files`, numbered by
//! their sequence number.

use sqlx::Row;
use tidemark_core::ids::BackupId;

use super::{BackupKind, Catalog, CatalogError, DbRow, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct BinlogCoordRow {
    pub backup_id: BackupId,
    /// "" when binary logging was off.
    pub file: String,
    pub seq: Option<u64>,
    pub position: u64,
    pub gtid: String,
    pub start_time: i64,
    pub stop_time: i64,
}

fn coord_from_row(r: &DbRow) -> BinlogCoordRow {
    BinlogCoordRow {
        backup_id: BackupId(r.get("backup_id")),
        file: r.get("file"),
        seq: r.get::<Option<i64>, _>("seq").map(|s| s as u64),
        position: r.get::<i64, _>("position") as u64,
        gtid: r.get("gtid"),
        start_time: r.get("start_time"),
        stop_time: r.get("stop_time"),
    }
}

impl Catalog {
    pub async fn set_backup_databases(&self, id: BackupId, databases: &[String]) -> Result<()> {
        sqlx::query("UPDATE backups SET databases = $1 WHERE id = $2")
            .bind(
                serde_json::to_string(databases)
                    .map_err(|e| CatalogError::Corrupt(e.to_string()))?,
            )
            .bind(id.0)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    pub async fn record_binlog_coordinates(&self, c: &BinlogCoordRow) -> Result<()> {
        let mut tx = self.write_tx().await?;
        insert_binlog(&mut tx, c).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn binlog_coordinates(&self, id: BackupId) -> Result<Option<BinlogCoordRow>> {
        Ok(
            sqlx::query("SELECT * FROM binlog_coordinates WHERE backup_id = $1")
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await?
                .as_ref()
                .map(coord_from_row),
        )
    }

    /// The complete, uncorrupted backups of `kind` of an instance that have a binlog
    /// position, oldest position first.
    pub async fn binlog_backups(
        &self,
        instance: &str,
        kind: BackupKind,
    ) -> Result<Vec<BinlogCoordRow>> {
        Ok(sqlx::query(
            "SELECT bc.* FROM binlog_coordinates bc JOIN backups b ON b.id = bc.backup_id
             WHERE b.instance = $1 AND b.kind = $2 AND b.status = 'complete' AND b.corrupt = ''
               AND bc.file <> ''
             ORDER BY bc.seq, bc.position, b.id",
        )
        .bind(instance)
        .bind(kind.as_str())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(coord_from_row)
        .collect())
    }
}

/// Record a backup's binlog coordinates (replacing what was recorded), in `conn`.
pub(super) async fn insert_binlog(conn: &mut super::DbConn, c: &BinlogCoordRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO binlog_coordinates (backup_id, file, seq, position, gtid, start_time, stop_time)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (backup_id) DO UPDATE SET file = excluded.file, seq = excluded.seq,
           position = excluded.position, gtid = excluded.gtid,
           start_time = excluded.start_time, stop_time = excluded.stop_time",
    )
    .bind(c.backup_id.0)
    .bind(&c.file)
    .bind(c.seq.map(|s| s as i64))
    .bind(c.position as i64)
    .bind(&c.gtid)
    .bind(c.start_time)
    .bind(c.stop_time)
    .execute(conn)
    .await?;
    Ok(())
}
