//! The recovery window of a MariaDB/MySQL instance, and what a point-in-time restore
//! replays. Pure functions over catalog rows, as for PostgreSQL (`wal`).
//!
//! A backup is consistent with a binlog position (file and offset). It can reach any point
//! from its own end up to the last event of the unbroken run of archived binlog files that
//! starts at its file; a missing file ends the run. Binlog events carry whole-second
//! timestamps, so a time target is resolved to the second: every event stamped in the
//! target's second or before is replayed, and nothing stamped later.

use tidemark_core::binlog;
use tidemark_core::timefmt::{pg_timestamp, utc};

use crate::catalog::{BinlogCoordRow, WalFileRow};
use crate::window::wal::Target;

#[derive(Debug, Clone, PartialEq)]
pub struct BinlogReach {
    pub backup: BinlogCoordRow,
    /// The archived files from the backup's own file on, unbroken, with their last event
    /// (unix seconds).
    pub files: Vec<(String, i64)>,
    /// Unix seconds: the newest point this backup reaches (its own end when none of its
    /// binlog is archived yet).
    pub end_time: i64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct BinlogWindow {
    /// Per backup, oldest first.
    pub reaches: Vec<BinlogReach>,
    /// The first missing file after the newest backup's run, when later files are archived.
    pub gap: Option<String>,
    pub newest_file: Option<String>,
}

/// What to replay for a target: files in order, from the backup's position, stopping before
/// the first event stamped at `stop_before` (unix seconds; None: replay everything).
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    pub files: Vec<String>,
    pub start_position: u64,
    pub stop_before: Option<i64>,
}

impl Replay {
    /// The replay as an agent runs it, after restoring `reach`'s backup.
    pub fn job(&self, reach: &BinlogReach) -> tidemark_proto::BinlogReplay {
        tidemark_proto::BinlogReplay {
            files: self.files.clone(),
            start_position: self.start_position,
            stop_before: self.stop_before.unwrap_or(0),
            gtid: reach.backup.gtid.clone(),
        }
    }
}

impl BinlogWindow {
    /// `files`: the instance's archived binlogs (any order); `base`: its binlog base name.
    pub fn compute(backups: &[BinlogCoordRow], files: &[WalFileRow], base: &str) -> Self {
        let mut by_seq: Vec<(u64, &WalFileRow)> =
            files.iter().filter_map(|f| Some((f.segno?, f))).collect();
        by_seq.sort_by_key(|(n, _)| *n);
        let find = |n: u64| {
            by_seq
                .binary_search_by_key(&n, |(s, _)| *s)
                .ok()
                .map(|i| by_seq[i].1)
        };
        let reaches: Vec<BinlogReach> = backups
            .iter()
            .filter_map(|b| {
                let mut n = b.seq?;
                let mut run = Vec::new();
                while let Some(f) = find(n) {
                    run.push((f.name.clone(), f.modified_at));
                    n += 1;
                }
                let end_time = run.last().map(|r| r.1).unwrap_or(0).max(b.stop_time);
                Some(BinlogReach {
                    backup: b.clone(),
                    files: run,
                    end_time,
                })
            })
            .collect();
        let newest_file = by_seq.last().map(|(_, f)| f.name.clone());
        let newest_seq = by_seq.last().map(|(n, _)| *n);
        let gap = reaches.iter().max_by_key(|r| r.end_time).and_then(|r| {
            let next = r.backup.seq? + r.files.len() as u64;
            (newest_seq? >= next).then(|| binlog::file_name(base, next))
        });
        BinlogWindow {
            reaches,
            gap,
            newest_file,
        }
    }

    pub fn oldest(&self) -> Option<&BinlogReach> {
        self.reaches.first()
    }

    pub fn newest(&self) -> Option<&BinlogReach> {
        self.reaches.iter().max_by_key(|r| r.end_time)
    }

    pub fn describe(&self) -> String {
        match (self.oldest(), self.newest()) {
            (Some(o), Some(n)) => format!(
                "{} ({}:{}) .. {}{}",
                utc(o.backup.stop_time),
                o.backup.file,
                o.backup.position,
                utc(n.end_time),
                match &self.gap {
                    Some(g) =>
                        format!("; binlog {g} is missing, so the window before it ends there"),
                    None => String::new(),
                }
            ),
            _ => "empty: no complete backup with a binlog position".into(),
        }
    }

    /// The backup to restore for `target` and what to replay after it: the newest backup
    /// that ended before the target (whole seconds) and whose binlog run reaches it.
    pub fn plan(&self, instance: &str, target: &Target) -> Result<(&BinlogReach, Replay), String> {
        let outside = |what: String| {
            format!(
                "{what} is outside instance {instance}'s recovery window {}",
                self.describe()
            )
        };
        let newest = self.newest().ok_or_else(|| {
            format!(
                "instance {instance} cannot be restored: {}",
                self.describe()
            )
        })?;
        match target {
            Target::Time(micros) => {
                let shown = pg_timestamp(*micros);
                let second = micros.div_euclid(1_000_000);
                let r = self
                    .reaches
                    .iter()
                    .rev()
                    .find(|r| r.backup.stop_time <= second)
                    .ok_or_else(|| outside(format!("target {shown}")))?;
                if r.end_time < second {
                    return Err(outside(format!("target {shown}")));
                }
                // Files up to the first whose last event is past the target's second: that
                // one holds the first event not to replay.
                let upto = r
                    .files
                    .iter()
                    .position(|(_, last)| *last > second)
                    .map(|i| i + 1)
                    .unwrap_or(r.files.len());
                Ok((
                    r,
                    Replay {
                        files: r.files[..upto].iter().map(|f| f.0.clone()).collect(),
                        start_position: r.backup.position,
                        stop_before: Some(second + 1),
                    },
                ))
            }
            Target::Immediate => Ok((
                newest,
                Replay {
                    files: Vec::new(),
                    start_position: newest.backup.position,
                    stop_before: None,
                },
            )),
            Target::Latest if self.gap.is_some() => Err(format!(
                "--latest cannot be reached: {}; give a target before the gap",
                self.describe()
            )),
            Target::Latest => Ok((
                newest,
                Replay {
                    files: newest.files.iter().map(|f| f.0.clone()).collect(),
                    start_position: newest.backup.position,
                    stop_before: None,
                },
            )),
            Target::Lsn(_) | Target::Xid(_) | Target::Name(_) => Err(
                "MariaDB recovers to a time (--to), --latest or --immediate; LSN, xid and restore-point targets are PostgreSQL's".into(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_core::ids::BackupId;

    fn backup(id: i64, seq: u64, stop_time: i64) -> BinlogCoordRow {
        BinlogCoordRow {
            backup_id: BackupId(id),
            file: binlog::file_name("b", seq),
            seq: Some(seq),
            position: 400,
            gtid: "0-1-5".into(),
            start_time: stop_time - 5,
            stop_time,
        }
    }

    fn files(seqs: &[(u64, i64)]) -> Vec<WalFileRow> {
        seqs.iter()
            .map(|(n, last)| WalFileRow {
                instance: "m".into(),
                name: binlog::file_name("b", *n),
                timeline: 0,
                segno: Some(*n),
                size: 1000,
                sha256: String::new(),
                chunks: 1,
                modified_at: *last,
                stored_at: 0,
                agent: "db1".into(),
                first_event_at: Some(last - 10),
                description_pack: None,
            })
            .collect()
    }

    #[test]
    fn a_time_target_replays_from_the_backup_through_the_file_that_passes_it() {
        let w = BinlogWindow::compute(
            &[backup(1, 2, 1000), backup(2, 4, 2000)],
            &files(&[(2, 1100), (3, 1500), (4, 2100), (5, 2500), (6, 2900)]),
            "b",
        );
        assert_eq!(w.gap, None);
        assert_eq!(w.newest().unwrap().end_time, 2900);
        // Before the second backup: the first one, files 2..3 (3 holds events past 1200).
        let (r, plan) = w.plan("m", &Target::Time(1_200_500_000)).unwrap();
        assert_eq!(r.backup.backup_id, BackupId(1));
        assert_eq!(plan.files, vec!["b.000002", "b.000003"]);
        assert_eq!(plan.stop_before, Some(1201));
        assert_eq!(plan.start_position, 400);
        // After it: the second backup.
        let (r, plan) = w.plan("m", &Target::Time(2_600_000_000)).unwrap();
        assert_eq!(r.backup.backup_id, BackupId(2));
        assert_eq!(plan.files, vec!["b.000004", "b.000005", "b.000006"]);
        // Outside: before every backup, or past the newest event.
        assert!(w.plan("m", &Target::Time(900_000_000)).is_err());
        assert!(
            w.plan("m", &Target::Time(3_000_000_000))
                .unwrap_err()
                .contains("outside")
        );
    }

    #[test]
    fn a_missing_file_is_a_gap_that_ends_the_window() {
        let w = BinlogWindow::compute(
            &[backup(1, 2, 1000)],
            &files(&[(2, 1100), (3, 1500), (5, 2500)]),
            "b",
        );
        assert_eq!(w.gap.as_deref(), Some("b.000004"));
        assert_eq!(w.newest().unwrap().end_time, 1500);
        assert!(w.plan("m", &Target::Time(2_000_000_000)).is_err());
        assert!(
            w.plan("m", &Target::Latest)
                .unwrap_err()
                .contains("missing")
        );
        assert_eq!(w.newest_file.as_deref(), Some("b.000005"));
    }

    #[test]
    fn a_backup_whose_binlog_is_not_archived_yet_reaches_its_own_end() {
        let w = BinlogWindow::compute(&[backup(1, 7, 1000)], &[], "b");
        let r = w.newest().unwrap();
        assert_eq!((r.end_time, r.files.len()), (1000, 0));
        let (_, plan) = w.plan("m", &Target::Immediate).unwrap();
        assert!(plan.files.is_empty());
    }
}
