//! An instance's recovery window, computed from the catalog: PostgreSQL's from base backups
//! and archived WAL, MariaDB's from backups with binlog coordinates and archived binlogs.

use tidemark_proto as pb;

use super::{OpsResult, State};
use crate::catalog::{BackupKind, InstanceRow};
use crate::window::binlog::BinlogWindow;
use crate::window::wal::Window;

pub async fn window(state: &State, inst: &InstanceRow) -> OpsResult<Window> {
    let bases = state.repo.catalog.complete_base_backups(&inst.name).await?;
    let segments = state.repo.catalog.wal_segments(&inst.name).await?;
    Ok(Window::compute(&bases, &segments, inst.segment_size()))
}

pub async fn binlog_window(state: &State, inst: &InstanceRow) -> OpsResult<BinlogWindow> {
    let backups = state
        .repo
        .catalog
        .binlog_backups(&inst.name, BackupKind::Base)
        .await?;
    let files = state.repo.catalog.wal_segments(&inst.name).await?;
    Ok(BinlogWindow::compute(&backups, &files, inst.binlog_base()))
}

/// A MariaDB instance's window: positions are shown as binlog file:offset.
async fn binlog_window_info(state: &State, inst: &InstanceRow) -> OpsResult<pb::PitrWindowInfo> {
    let w = binlog_window(state, inst).await?;
    let mut info = pb::PitrWindowInfo {
        instance: inst.name.clone(),
        base_backups: w.reaches.len() as i64,
        wal_files: state.repo.catalog.wal_file_count(&inst.name).await?,
        newest_wal: w.newest_file.clone().unwrap_or_default(),
        gap: w.gap.clone().unwrap_or_default(),
        detail: w.describe(),
        ..Default::default()
    };
    if let (Some(o), Some(n)) = (w.oldest(), w.newest()) {
        info.restorable = true;
        info.oldest_time = o.backup.stop_time;
        info.oldest_lsn = format!("{}:{}", o.backup.file, o.backup.position);
        info.newest_time = n.end_time;
        info.newest_lsn = n
            .files
            .last()
            .map(|f| f.0.clone())
            .unwrap_or_else(|| format!("{}:{}", n.backup.file, n.backup.position));
    }
    Ok(info)
}

pub async fn window_info(state: &State, inst: &InstanceRow) -> OpsResult<pb::PitrWindowInfo> {
    if inst.is_mariadb() {
        return binlog_window_info(state, inst).await;
    }
    let w = window(state, inst).await?;
    let mut info = pb::PitrWindowInfo {
        instance: inst.name.clone(),
        base_backups: w.reaches.len() as i64,
        wal_files: state.repo.catalog.wal_file_count(&inst.name).await?,
        newest_wal: w.newest_wal.clone().unwrap_or_default(),
        gap: w.gap.clone().unwrap_or_default(),
        detail: w.describe(),
        ..Default::default()
    };
    if let (Some(o), Some(n)) = (w.oldest(), w.newest()) {
        info.restorable = true;
        info.oldest_time = o.base.stop_time;
        info.oldest_lsn = o.base.stop_lsn.to_string();
        info.newest_time = n.end_time;
        info.newest_lsn = n.end_lsn.to_string();
    }
    Ok(info)
}
