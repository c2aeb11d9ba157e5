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
    /// A base backup's first WAL segment (or binlog file), in archive order.
    pub start_log: Option<String>,
    pub in_use: bool,
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

/// Decide archived log files (WAL segment or binlog names, which sort in archive order):
/// delete only those before the first log of the oldest base backup kept. With no base
/// backup kept (none yet), all are kept.
pub fn plan_logs(
    backups: &[BackupFacts],
    decisions: &BTreeMap<i64, Decision>,
    logs: &[String],
) -> Vec<(String, Decision)> {
    let oldest = backups
        .iter()
        .filter(|b| b.kind == Kind::Base && decisions.get(&b.id).is_some_and(Decision::kept))
        .filter_map(|b| b.start_log.as_ref().map(|s| (s.clone(), b.id)))
        .min();
    logs.iter()
        .map(|name| {
            let d = match &oldest {
                // A timeline's history is small and every later restore may need it.
                _ if name.ends_with(".history") => Decision {
                    keep: vec!["timeline history is always kept".into()],
                    delete_reason: String::new(),
                },
                Some((first, id)) if name < first => Decision {
                    keep: vec![],
                    delete_reason: format!(
                        "older than {first}, where the oldest base backup kept ({id}) starts"
                    ),
                },
                Some((_, id)) => Decision {
                    keep: vec![format!("needed from base backup {id} on")],
                    delete_reason: String::new(),
                },
                None => Decision {
                    keep: vec!["no base backup is kept yet".into()],
                    delete_reason: String::new(),
                },
            };
            (name.clone(), d)
        })
        .collect()
}

#[cfg(test)]
mod tests;
