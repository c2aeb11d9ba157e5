//! Retention: which backups and which archived WAL an instance keeps, and why. Planning is a
//! pure function of the policy, the clock and the catalog's facts, so every invariant is
//! tested here without a fleet; applying a plan (deleting) is a separate step.
//!
//! Base backups are kept by any of: newest complete one; the `min-base` newest; the ones
//! the PITR window needs (the newest that ended at or before the window's start, and all
//! later ones); grandfather-father-son (the newest per UTC day, ISO week and month, for the
//! last N of each that have a backup); use by a running drill or restore. Logical dumps
//! have their own GFS counts; the newest is always kept. WAL is deleted only when it is
//! older than the start of the oldest base backup kept.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use tidemark_core::timefmt::civil_from_days;

/// Grandfather-father-son counts.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Gfs {
    #[serde(default)]
    pub keep_daily: u32,
    #[serde(default)]
    pub keep_weekly: u32,
    #[serde(default)]
    pub keep_monthly: u32,
}

/// An instance's `[instance.retention]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Policy {
    #[serde(flatten)]
    pub base: Gfs,
    /// Every point this far back stays restorable.
    #[serde(default, with = "tidemark_core::duration::serde_text_opt")]
    pub pitr_window: Option<std::time::Duration>,
    /// Complete base backups always kept, newest first.
    #[serde(default = "default_min_base")]
    pub min_base: u32,
    /// Counts for logical dumps.
    #[serde(default)]
    pub logical: Gfs,
}

impl Default for Policy {
    /// An empty `[instance.retention]` table: the two newest base backups and the newest
    /// logical dump.
    fn default() -> Self {
        Self {
            base: Gfs::default(),
            pitr_window: None,
            min_base: default_min_base(),
            logical: Gfs::default(),
        }
    }
}

fn default_min_base() -> u32 {
    2
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Base,
    Logical,
}

/// What planning needs to know of a complete backup.
#[derive(Debug, Clone)]
pub struct BackupFacts {
    pub id: i64,
    pub kind: Kind,
    /// When it ended (unix seconds): the earliest point it restores to.
    pub stop: i64,
    /// A base backup's first WAL segment (or binlog file); None when it replays none (a
    /// logical backup, a MariaDB backup taken with binary logging off). A name without a
    /// position is a first log that is not known: nothing goes while it is kept.
    pub start_log: Option<LogFile>,
    pub in_use: bool,
}

/// Where an archived file sits: its timeline (0 for a binlog) and its segment or binlog
/// sequence number. Compared as numbers, never as names: a binlog past 999999 has seven
/// digits, and sorts before `.999999` as a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogPos {
    pub timeline: u32,
    pub number: u64,
}

/// An archived WAL file or binlog; `pos` is None for a timeline history file.
#[derive(Debug, Clone, PartialEq)]
pub struct LogFile {
    pub name: String,
    pub pos: Option<LogPos>,
}

impl LogFile {
    /// An archived file as the catalog records it: its timeline, and its number when the
    /// catalog has one. A `.partial` or backup history file (`SEGMENT.OFFSET.backup`) is
    /// recorded without a number and sits where its name says; only a timeline history
    /// file has no place.
    pub fn placed(name: String, timeline: u32, number: Option<u64>, seg_size: u64) -> Self {
        use tidemark_core::wal::WalName;
        let number = number.or_else(|| match WalName::parse(&name, seg_size) {
            Ok(
                WalName::Segment { segno, .. }
                | WalName::Partial { segno, .. }
                | WalName::BackupHistory { segno, .. },
            ) => Some(segno),
            _ => None,
        });
        Self {
            pos: number.map(|number| LogPos { timeline, number }),
            name,
        }
    }
}

impl LogPos {
    /// Does a restore from a base backup starting at `start` read this file? It replays
    /// its own timeline and those that branched from it later (recovery_target_timeline
    /// 'latest' follows them, which have higher numbers), from its first segment on.
    fn needed_from(self, start: LogPos) -> bool {
        self.timeline >= start.timeline && self.number >= start.number
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Why it is kept; empty: it is deleted.
    pub keep: Vec<String>,
    pub delete_reason: String,
}

impl Decision {
    pub fn kept(&self) -> bool {
        !self.keep.is_empty()
    }
}

/// Decide every backup. `backups` are an instance's complete backups, any order.
pub fn plan_backups(policy: &Policy, now: i64, backups: &[BackupFacts]) -> BTreeMap<i64, Decision> {
    let mut keep: BTreeMap<i64, Vec<String>> = backups.iter().map(|b| (b.id, vec![])).collect();
    let by_age = |kind: Kind| {
        let mut v: Vec<&BackupFacts> = backups.iter().filter(|b| b.kind == kind).collect();
        v.sort_by_key(|b| std::cmp::Reverse((b.stop, b.id)));
        v
    };
    let bases = by_age(Kind::Base);
    let logicals = by_age(Kind::Logical);

    if let Some(b) = bases.first() {
        keep.get_mut(&b.id)
            .unwrap()
            .push("newest complete base backup".into());
    }
    for b in bases.iter().take(policy.min_base as usize) {
        keep.get_mut(&b.id).unwrap().push(format!(
            "one of the {} newest base backups (min-base)",
            policy.min_base
        ));
    }
    if let Some(w) = policy.pitr_window {
        let start = now - w.as_secs() as i64;
        for b in bases.iter().filter(|b| b.stop > start) {
            keep.get_mut(&b.id)
                .unwrap()
                .push("ended inside the PITR window".into());
        }
        if let Some(b) = bases.iter().find(|b| b.stop <= start) {
            keep.get_mut(&b.id)
                .unwrap()
                .push("restores the start of the PITR window".into());
        }
    }
    gfs(&policy.base, &bases, "", &mut keep);
    if let Some(l) = logicals.first() {
        keep.get_mut(&l.id)
            .unwrap()
            .push("newest logical backup".into());
    }
    gfs(&policy.logical, &logicals, "logical ", &mut keep);
    for b in backups.iter().filter(|b| b.in_use) {
        keep.get_mut(&b.id)
            .unwrap()
            .push("in use by a drill or restore (a restore for a day after it ends, while its server may still replay WAL)".into());
    }
    keep.into_iter()
        .map(|(id, keep)| {
            (
                id,
                Decision {
                    delete_reason: if keep.is_empty() {
                        "no rule keeps it".into()
                    } else {
                        String::new()
                    },
                    keep,
                },
            )
        })
        .collect()
}

/// The period (day, ISO week, month) a time falls in, as text.
type Period = fn(i64) -> String;

/// Newest backup per period, for the last `n` periods that have one.
fn gfs(g: &Gfs, newest_first: &[&BackupFacts], what: &str, keep: &mut BTreeMap<i64, Vec<String>>) {
    let periods: [(u32, &str, Period); 3] = [
        (g.keep_daily, "daily", |t| {
            let (y, m, d) = civil_from_days(t.div_euclid(86_400));
            format!("{y:04}-{m:02}-{d:02}")
        }),
        (g.keep_weekly, "weekly", iso_week),
        (g.keep_monthly, "monthly", |t| {
            let (y, m, _) = civil_from_days(t.div_euclid(86_400));
            format!("{y:04}-{m:02}")
        }),
    ];
    for (n, label, period) in periods {
        let mut seen = BTreeSet::new();
        for b in newest_first {
            if seen.len() >= n as usize {
                break;
            }
            let p = period(b.stop);
            if seen.insert(p.clone()) {
                keep.get_mut(&b.id)
                    .unwrap()
                    .push(format!("{what}{label} {p} (keep-{label} {n})"));
            }
        }
    }
}

/// ISO 8601 week of a time, e.g. 2026-W48.
fn iso_week(t: i64) -> String {
    let days = t.div_euclid(86_400);
    // 1970-01-01 was a Thursday; ISO weeks start on Monday, and a week belongs to the year
    // of its Thursday.
    let weekday = (days + 3).rem_euclid(7); // 0 = Monday
    let thursday = days - weekday + 3;
    let (y, _, _) = civil_from_days(thursday);
    let jan1 = tidemark_core::timefmt::days_from_civil(y, 1, 1);
    format!("{y:04}-W{:02}", (thursday - jan1) / 7 + 1)
}

/// Decide archived log files: one goes only when no base backup kept needs it (see
/// [`LogPos::needed_from`]). A timeline history file is always kept. With no base backup
/// kept (none yet), or one whose first log is not known, all are kept.
pub fn plan_logs(
    backups: &[BackupFacts],
    decisions: &BTreeMap<i64, Decision>,
    logs: &[LogFile],
) -> Vec<(String, Decision)> {
    let kept: Vec<&BackupFacts> = backups
        .iter()
        .filter(|b| b.kind == Kind::Base && decisions.get(&b.id).is_some_and(Decision::kept))
        .collect();
    let unknown = kept
        .iter()
        .find(|b| b.start_log.as_ref().is_some_and(|l| l.pos.is_none()));
    // Each kept base backup's start, oldest first.
    let mut starts: Vec<(LogPos, &str, i64)> = kept
        .iter()
        .filter_map(|b| {
            let l = b.start_log.as_ref()?;
            Some((l.pos?, l.name.as_str(), b.id))
        })
        .collect();
    starts.sort();
    let keep = |why: String| Decision {
        keep: vec![why],
        delete_reason: String::new(),
    };
    logs.iter()
        .map(|log| {
            let d = match (log.pos, unknown, starts.first()) {
                // A timeline's history is small and every later restore may need it.
                (None, _, _) => keep("timeline history is always kept".into()),
                (Some(_), Some(b), _) => keep(format!(
                    "base backup {} is kept and where its WAL starts is not known",
                    b.id
                )),
                (Some(_), None, None) => keep("no base backup is kept yet".into()),
                (Some(pos), None, Some((_, first, oldest))) => {
                    let delete = |why: String| Decision {
                        keep: vec![],
                        delete_reason: why,
                    };
                    // Kept base backups on its timeline or an earlier one: it is older than
                    // each of them; name the earliest.
                    let earliest = starts
                        .iter()
                        .filter(|(s, _, _)| pos.timeline >= s.timeline)
                        .min_by_key(|(s, _, id)| (s.number, *id));
                    match (starts.iter().find(|(s, _, _)| pos.needed_from(*s)), earliest) {
                        (Some((_, _, id)), _) => keep(format!("needed from base backup {id} on")),
                        (None, Some((_, name, id))) => delete(format!(
                            "older than {name}, where the oldest base backup kept ({id}) starts"
                        )),
                        (None, None) => delete(format!(
                            "on timeline {}, which no base backup kept restores through (the oldest, {oldest}, starts at {first})",
                            pos.timeline
                        )),
                    }
                }
            };
            (log.name.clone(), d)
        })
        .collect()
}

#[cfg(test)]
mod tests;
