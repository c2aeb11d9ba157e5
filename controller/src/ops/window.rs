//! An instance's recovery window, computed from the catalog: PostgreSQL's from base backups
//! and archived WAL, MariaDB's from backups with binlog coordinates and archived binlogs.

use tidemark_proto as pb;

use super::{OpsResult, State};
use crate::catalog::{BackupKind, Engine, InstanceRow};
use crate::window::RecoveryWindow;
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

/// The instance's window, whichever its engine: the one place that picks by engine.
pub async fn recovery_window(
    state: &State,
    inst: &InstanceRow,
) -> OpsResult<Box<dyn RecoveryWindow>> {
    Ok(match inst.engine {
        Engine::Postgresql => Box::new(window(state, inst).await?),
        Engine::Mariadb => Box::new(binlog_window(state, inst).await?),
    })
}

/// The window as `tidemark pitr-window` and `status` show it.
pub async fn window_info(state: &State, inst: &InstanceRow) -> OpsResult<pb::PitrWindowInfo> {
    let w = recovery_window(state, inst).await?;
    let mut info = pb::PitrWindowInfo {
        instance: inst.name.clone(),
        base_backups: w.backups() as i64,
        wal_files: state.repo.catalog.wal_file_count(&inst.name).await?,
        newest_wal: w.newest_log().unwrap_or_default(),
        gap: w.gap().unwrap_or_default(),
        detail: w.describe(),
        ..Default::default()
    };
    if let (Some(o), Some(n)) = (w.oldest(), w.newest()) {
        info.restorable = true;
        info.oldest_time = o.time;
        info.oldest_lsn = o.position;
        info.newest_time = n.time;
        info.newest_lsn = n.position;
    }
    Ok(info)
}
