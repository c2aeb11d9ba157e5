//! The recovery window of a PostgreSQL instance, and which base backup a point-in-time
//! restore starts from. Pure functions over catalog rows, so every rule is tested without a
//! server.
//!
//! A base backup can reach any point from its stop up to the end of the unbroken run of
//! archived segments that starts at its start segment. The window runs from the oldest
//! backup's stop to the newest reachable point; a missing segment ends a run (a gap).

use std::collections::BTreeMap;

use tidemark_core::timefmt::{pg_timestamp, utc};
use tidemark_core::wal::{self, Lsn};

use crate::catalog::{BaseBackupRow, WalFileRow};

/// A recovery target, as the operator gave it.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Unix microseconds.
    Time(i64),
    Lsn(Lsn),
    Xid(String),
    Name(String),
    Immediate,
    Latest,
}

impl Target {
    pub fn parse(kind: &str, value: &str) -> Result<Self, String> {
        Ok(match kind {
            "time" => Target::Time(
                value
                    .parse()
                    .map_err(|_| format!("time target {value:?} is not unix microseconds"))?,
            ),
            "lsn" => Target::Lsn(Lsn::parse(value)?),
            "xid" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                Target::Xid(value.into())
            }
            "xid" => return Err(format!("--xid {value:?} is not a transaction id")),
            "name" if !value.is_empty() => Target::Name(value.into()),
            "name" => return Err("--name needs the restore point's name".into()),
            "immediate" => Target::Immediate,
            "latest" => Target::Latest,
            other => return Err(format!("unknown recovery target kind {other:?}")),
        })
    }
}

/// How far one base backup can recover.
#[derive(Debug, Clone, PartialEq)]
pub struct Reach {
    pub base: BaseBackupRow,
    /// The last segment of the unbroken run from the backup's start, if the run covers the
    /// backup's own WAL (otherwise the backup cannot be restored at all).
    pub last_segno: Option<u64>,
    /// Unix seconds: WAL up to here is archived (the last segment's modification time).
    pub end_time: i64,
    /// End of the last archived segment of the run.
    pub end_lsn: Lsn,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Window {
    /// Per complete base backup, oldest first.
    pub reaches: Vec<Reach>,
    /// The first missing segment after the oldest restorable backup's start, when segments
    /// after it are archived: the window is broken there.
    pub gap: Option<String>,
    pub newest_wal: Option<String>,
}

impl Window {
    pub fn compute(bases: &[BaseBackupRow], segments: &[WalFileRow], seg_size: u64) -> Window {
        // segno -> the newest modification time among the timelines that hold it.
        let mut segs: BTreeMap<u64, (i64, u32)> = BTreeMap::new();
        for s in segments {
            if let Some(n) = s.segno {
                let e = segs.entry(n).or_insert((s.modified_at, s.timeline));
                if s.timeline >= e.1 {
                    *e = (s.modified_at.max(e.0), s.timeline);
                }
            }
        }
        let run_end = |from: u64| -> Option<u64> {
            let mut n = from;
            if !segs.contains_key(&n) {
                return None;
            }
            while segs.contains_key(&(n + 1)) {
                n += 1;
            }
            Some(n)
        };
        let reaches: Vec<Reach> = bases
            .iter()
            .map(|b| {
                let start = b.start_lsn.segno(seg_size);
                let stop = Lsn(b.stop_lsn.0.saturating_sub(1))
                    .segno(seg_size)
                    .max(start);
                let last = run_end(start).filter(|last| *last >= stop);
                Reach {
                    base: b.clone(),
                    last_segno: last,
                    end_time: last.map(|n| segs[&n].0).unwrap_or(0),
                    end_lsn: Lsn(last.map(|n| (n + 1) * seg_size).unwrap_or(0)),
                }
            })
            .collect();
        let newest_wal = segs
            .iter()
            .next_back()
            .map(|(n, (_, tli))| wal::segment_name(*tli, *n, seg_size));
        let gap = reaches.iter().find_map(|r| r.last_segno).and_then(|last| {
            let next = last + 1;
            let beyond = segs.range(next..).next().is_some();
            beyond.then(|| wal::segment_name(segs[&last].1, next, seg_size))
        });
        Window {
            reaches,
            gap,
            newest_wal,
        }
    }

    fn usable(&self) -> impl DoubleEndedIterator<Item = &Reach> {
        self.reaches.iter().filter(|r| r.last_segno.is_some())
    }

    pub fn oldest(&self) -> Option<&Reach> {
        self.usable().next()
    }

    /// The reach that gets furthest (normally the newest backup's).
    pub fn newest(&self) -> Option<&Reach> {
        self.usable().max_by_key(|r| r.end_lsn)
    }

    /// "2026-11-25 09:00:01Z (0/3000100) .. 2026-11-25 10:00:00Z (0/9000000)", and the gap.
    pub fn describe(&self) -> String {
        match (self.oldest(), self.newest()) {
            (Some(o), Some(n)) => format!(
                "{} ({}) .. {} ({}){}",
                utc(o.base.stop_time),
                o.base.stop_lsn,
                utc(n.end_time),
                n.end_lsn,
                match &self.gap {
                    Some(g) =>
                        format!("; WAL segment {g} is missing, so the window before it ends there"),
                    None => String::new(),
                }
            ),
            _ => "empty: no complete base backup with its WAL archived".into(),
        }
    }

    /// The base backup to restore for `target`: the newest one that ended before it and
    /// whose unbroken WAL reaches it. Xid and restore-point targets cannot be placed in time,
    /// so they start from the oldest restorable backup, which precedes any point in the
    /// window.
    pub fn choose(&self, instance: &str, target: &Target) -> Result<&Reach, String> {
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
            Target::Time(t) => {
                let shown = pg_timestamp(*t);
                let r = self
                    .usable()
                    .rev()
                    .find(|r| r.base.stop_time * 1_000_000 < *t)
                    .ok_or_else(|| outside(format!("target {shown}")))?;
                if r.end_time * 1_000_000 < *t {
                    return Err(outside(format!("target {shown}")));
                }
                Ok(r)
            }
            Target::Lsn(l) => {
                let r = self
                    .usable()
                    .rev()
                    .find(|r| r.base.stop_lsn <= *l)
                    .ok_or_else(|| outside(format!("target LSN {l}")))?;
                if r.end_lsn < *l {
                    return Err(outside(format!("target LSN {l}")));
                }
                Ok(r)
            }
            Target::Xid(_) | Target::Name(_) => Ok(self.oldest().expect("newest implies oldest")),
            // Recovery would run into the gap and stop there with an error; say so now.
            Target::Latest if self.gap.is_some() => Err(format!(
                "--latest cannot be reached: {}; give a target before the gap",
                self.describe()
            )),
            Target::Immediate | Target::Latest => Ok(newest),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_core::ids::BackupId;

    const SEG: u64 = 16 << 20;

    fn base(id: i64, start_seg: u64, stop_seg: u64, stop_time: i64) -> BaseBackupRow {
        BaseBackupRow {
            backup_id: BackupId(id),
            start_lsn: Lsn(start_seg * SEG + 40),
            stop_lsn: Lsn(stop_seg * SEG + 200),
            timeline: 1,
            system_identifier: "1".into(),
            backup_label: String::new(),
            start_time: stop_time - 5,
            stop_time,
            tablespaces: Default::default(),
        }
    }

    fn segs(range: impl Iterator<Item = u64>) -> Vec<WalFileRow> {
        range
            .map(|n| WalFileRow {
                instance: "pg".into(),
                name: wal::segment_name(1, n, SEG),
                timeline: 1,
                segno: Some(n),
                size: SEG,
                sha256: String::new(),
                chunks: 1,
                modified_at: 1000 + n as i64 * 60,
                stored_at: 0,
                agent: "db1".into(),
                first_event_at: None,
                description_pack: None,
            })
            .collect()
    }

    #[test]
    fn picks_the_newest_backup_that_ended_before_the_target() {
        let bases = [base(1, 2, 2, 1100), base(2, 5, 6, 1400)];
        let w = Window::compute(&bases, &segs(2..=9), SEG);
        assert_eq!(w.gap, None);
        let at = |secs: i64| Target::Time(secs * 1_000_000);
        assert_eq!(
            w.choose("pg", &at(1300)).unwrap().base.backup_id,
            BackupId(1)
        );
        // Inside the second backup (it stopped at 1400): the first one must be used.
        assert_eq!(
            w.choose("pg", &at(1400)).unwrap().base.backup_id,
            BackupId(1)
        );
        assert_eq!(
            w.choose("pg", &at(1401)).unwrap().base.backup_id,
            BackupId(2)
        );
        // Before the oldest backup ended, or after the newest archived WAL: refused, with
        // the window in the message.
        let e = w.choose("pg", &at(1100)).unwrap_err();
        assert!(e.contains("outside instance pg's recovery window"), "{e}");
        assert!(w.choose("pg", &at(1000 + 9 * 60 + 1)).is_err());
        assert!(w.choose("pg", &at(1000 + 9 * 60)).is_ok());
        let l = Target::Lsn(Lsn(6 * SEG + 199));
        assert_eq!(w.choose("pg", &l).unwrap().base.backup_id, BackupId(1));
        let l = Target::Lsn(Lsn(6 * SEG + 200));
        assert_eq!(w.choose("pg", &l).unwrap().base.backup_id, BackupId(2));
        assert!(w.choose("pg", &Target::Lsn(Lsn(10 * SEG + 1))).is_err());
        assert_eq!(
            w.choose("pg", &Target::Latest).unwrap().base.backup_id,
            BackupId(2)
        );
        assert_eq!(
            w.choose("pg", &Target::Xid("9".into()))
                .unwrap()
                .base
                .backup_id,
            BackupId(1)
        );
    }

    #[test]
    fn a_missing_segment_ends_the_window() {
        let bases = [base(1, 2, 2, 1100)];
        let all: Vec<WalFileRow> = segs(2..=9)
            .into_iter()
            .filter(|s| s.segno != Some(6))
            .collect();
        let w = Window::compute(&bases, &all, SEG);
        assert_eq!(w.gap.as_deref(), Some("000000010000000000000006"));
        assert_eq!(w.newest().unwrap().end_lsn, Lsn(6 * SEG));
        assert!(
            w.choose("pg", &Target::Time((1000 + 5 * 60) * 1_000_000))
                .is_ok()
        );
        let e = w
            .choose("pg", &Target::Time((1000 + 7 * 60) * 1_000_000))
            .unwrap_err();
        assert!(e.contains("000000010000000000000006 is missing"), "{e}");
        assert_eq!(w.newest_wal.as_deref(), Some("000000010000000000000009"));
    }

    #[test]
    fn a_backup_without_its_own_wal_is_not_restorable() {
        let w = Window::compute(&[base(1, 2, 3, 1100)], &segs(2..=2), SEG);
        assert!(w.oldest().is_none());
        let e = w.choose("pg", &Target::Latest).unwrap_err();
        assert!(e.contains("cannot be restored"), "{e}");
        assert!(Window::compute(&[], &segs(1..=3), SEG).newest().is_none());
    }
}
