//! Where each base backup sits in the WAL: its start and stop LSN, timeline and times. A
//! point-in-time restore picks a base backup by these, and the recovery window starts at
//! the oldest complete one's stop.

use std::collections::BTreeMap;

use sqlx::Row;
use tidemark_core::ids::BackupId;
use tidemark_core::wal::Lsn;

use super::{Catalog, CatalogError, DbRow, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct BaseBackupRow {
    pub backup_id: BackupId,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    pub timeline: u32,
    pub system_identifier: String,
    pub backup_label: String,
    pub start_time: i64,
    pub stop_time: i64,
    /// Tablespace OID -> its location on the source host.
    pub tablespaces: BTreeMap<String, String>,
}

fn base_from_row(r: &DbRow) -> Result<BaseBackupRow> {
    Ok(BaseBackupRow {
        backup_id: BackupId(r.get("backup_id")),
        start_lsn: Lsn(r.get::<i64, _>("start_lsn_num") as u64),
        stop_lsn: Lsn(r.get::<i64, _>("stop_lsn_num") as u64),
        timeline: r.get::<i64, _>("timeline") as u32,
        system_identifier: r.get("system_identifier"),
        backup_label: r.get("backup_label"),
        start_time: r.get("start_time"),
        stop_time: r.get("stop_time"),
        tablespaces: serde_json::from_str(r.get::<&str, _>("tablespaces"))
            .map_err(|e| CatalogError::Corrupt(e.to_string()))?,
    })
}

impl Catalog {
    pub async fn record_base_backup(&self, b: &BaseBackupRow) -> Result<()> {
        let mut tx = self.write_tx().await?;
        insert_base(&mut tx, b).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn base_backup(&self, id: BackupId) -> Result<Option<BaseBackupRow>> {
        sqlx::query("SELECT * FROM base_backups WHERE backup_id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(base_from_row)
            .transpose()
    }

    /// The complete base backups of an instance, oldest first.
    pub async fn complete_base_backups(&self, instance: &str) -> Result<Vec<BaseBackupRow>> {
        sqlx::query(
            "SELECT bb.* FROM base_backups bb JOIN backups b ON b.id = bb.backup_id
             WHERE b.instance = $1 AND b.kind = 'base' AND b.status = 'complete' AND b.corrupt = ''
             ORDER BY bb.stop_lsn_num, b.id",
        )
        .bind(instance)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(base_from_row)
        .collect()
    }
}

/// Record where a base backup sits in the WAL (replacing what was recorded), in `conn`.
pub(super) async fn insert_base(conn: &mut super::DbConn, b: &BaseBackupRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO base_backups (backup_id, start_lsn, stop_lsn, start_lsn_num, stop_lsn_num, timeline,
           system_identifier, backup_label, start_time, stop_time, tablespaces)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (backup_id) DO UPDATE SET start_lsn = excluded.start_lsn, stop_lsn = excluded.stop_lsn,
           start_lsn_num = excluded.start_lsn_num, stop_lsn_num = excluded.stop_lsn_num,
           timeline = excluded.timeline, system_identifier = excluded.system_identifier,
           backup_label = excluded.backup_label, start_time = excluded.start_time,
           stop_time = excluded.stop_time, tablespaces = excluded.tablespaces",
    )
    .bind(b.backup_id.0)
    .bind(b.start_lsn.to_string())
    .bind(b.stop_lsn.to_string())
    .bind(b.start_lsn.0 as i64)
    .bind(b.stop_lsn.0 as i64)
    .bind(b.timeline as i64)
    .bind(&b.system_identifier)
    .bind(&b.backup_label)
    .bind(b.start_time)
    .bind(b.stop_time)
    .bind(serde_json::to_string(&b.tablespaces).map_err(|e| CatalogError::Corrupt(e.to_string()))?)
    .execute(conn)
    .await?;
    Ok(())
}
