//! Recovery windows: what the archive can deliver, computed from the catalog's facts alone.
//! `wal` for PostgreSQL (base backups and WAL segments), `binlog` for MariaDB (backups with
//! binlog coordinates and archived binlogs). Both answer [`RecoveryWindow`], which is all
//! that status, metrics and drill targets need; restore planning is each engine's own.

pub mod binlog;
pub mod wal;

/// One end of a window: a time and the position it corresponds to, written as the engine
/// writes positions (an LSN, a binlog file:offset).
#[derive(Debug, Clone, PartialEq)]
pub struct Bound {
    /// Unix seconds.
    pub time: i64,
    pub position: String,
}

/// What every engine's recovery window answers.
pub trait RecoveryWindow: Send + Sync {
    /// The oldest restorable point: where the oldest usable backup ends.
    fn oldest(&self) -> Option<Bound>;
    /// The newest restorable point.
    fn newest(&self) -> Option<Bound>;
    /// How many backups the window is computed from.
    fn backups(&self) -> usize;
    /// The newest archived log file (WAL segment or binlog).
    fn newest_log(&self) -> Option<String>;
    /// The first log file missing before newer ones: the window breaks there.
    fn gap(&self) -> Option<String>;
    /// One line for people: its ends, and the gap.
    fn describe(&self) -> String;
}

impl RecoveryWindow for wal::Window {
    fn oldest(&self) -> Option<Bound> {
        wal::Window::oldest(self).map(|o| Bound {
            time: o.base.stop_time,
            position: o.base.stop_lsn.to_string(),
        })
    }
    fn newest(&self) -> Option<Bound> {
        wal::Window::newest(self).map(|n| Bound {
            time: n.end_time,
            position: n.end_lsn.to_string(),
        })
    }
    fn backups(&self) -> usize {
        self.reaches.len()
    }
    fn newest_log(&self) -> Option<String> {
        self.newest_wal.clone()
    }
    fn gap(&self) -> Option<String> {
        self.gap.clone()
    }
    fn describe(&self) -> String {
        wal::Window::describe(self)
    }
}

impl RecoveryWindow for binlog::BinlogWindow {
    fn oldest(&self) -> Option<Bound> {
        binlog::BinlogWindow::oldest(self).map(|o| Bound {
            time: o.backup.stop_time,
            position: format!("{}:{}", o.backup.file, o.backup.position),
        })
    }
    fn newest(&self) -> Option<Bound> {
        binlog::BinlogWindow::newest(self).map(|n| Bound {
            time: n.end_time,
            position: n
                .files
                .last()
                .map(|f| f.0.clone())
                .unwrap_or_else(|| format!("{}:{}", n.backup.file, n.backup.position)),
        })
    }
    fn backups(&self) -> usize {
        self.reaches.len()
    }
    fn newest_log(&self) -> Option<String> {
        self.newest_file.clone()
    }
    fn gap(&self) -> Option<String> {
        self.gap.clone()
    }
    fn describe(&self) -> String {
        binlog::BinlogWindow::describe(self)
    }
}
