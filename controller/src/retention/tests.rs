use super::*;
use std::time::Duration;

const DAY: i64 = 86_400;
/// 2026-11-26 12:00 UTC, a Thursday.
const NOW: i64 = 1_795_694_400;

fn base(id: i64, days_ago: f64, start_log: &str) -> BackupFacts {
    BackupFacts {
        id,
        kind: Kind::Base,
        stop: NOW - (days_ago * DAY as f64) as i64,
        start_log: Some(wal(start_log)),
        in_use: false,
    }
}

/// A WAL file of 16 MiB segments, placed as the catalog places it.
fn wal(name: &str) -> LogFile {
    use tidemark_core::wal::WalName;
    let pos = match WalName::parse(name, 16 << 20).unwrap() {
        WalName::Segment { timeline, segno } | WalName::Partial { timeline, segno } => {
            Some(LogPos {
                timeline,
                number: segno,
            })
        }
        WalName::History { .. } => None,
        other => panic!("{other:?}"),
    };
    LogFile {
        name: name.into(),
        pos,
    }
}

/// The names `plan_logs` deletes.
fn deleted(plan: &[(String, Decision)]) -> Vec<&str> {
    plan.iter()
        .filter(|(_, d)| !d.kept())
        .map(|(n, _)| n.as_str())
        .collect()
}

fn logical(id: i64, days_ago: f64) -> BackupFacts {
    BackupFacts {
        id,
        kind: Kind::Logical,
        stop: NOW - (days_ago * DAY as f64) as i64,
        start_log: None,
        in_use: false,
    }
}

fn policy() -> Policy {
    Policy {
        base: Gfs::default(),
        pitr_window: None,
        min_base: 2,
        logical: Gfs::default(),
    }
}

fn kept(plan: &BTreeMap<i64, Decision>) -> Vec<i64> {
    plan.iter()
        .filter(|(_, d)| d.kept())
        .map(|(i, _)| *i)
        .collect()
}

/// One base backup a day for 60 days, ids 1 (oldest) to 60, each starting at its own segment.
fn daily_bases() -> Vec<BackupFacts> {
    (1..=60)
        .map(|i| {
            base(
                i,
                (60 - i) as f64 + 0.25,
                &format!("0000000100000000000000{i:02X}"),
            )
        })
        .collect()
}

#[test]
fn the_newest_complete_base_backup_is_never_deleted() {
    let mut p = policy();
    p.min_base = 0;
    let plan = plan_backups(&p, NOW, &daily_bases());
    assert_eq!(kept(&plan), vec![60]);
    assert!(plan[&60].keep[0].contains("newest"));
    assert_eq!(plan[&59].delete_reason, "no rule keeps it");
}

#[test]
fn at_least_min_base_backups_are_kept_even_outside_every_other_rule() {
    let plan = plan_backups(&policy(), NOW, &daily_bases());
    assert_eq!(kept(&plan), vec![59, 60]);
    let mut p = policy();
    p.min_base = 5;
    assert_eq!(
        kept(&plan_backups(&p, NOW, &daily_bases())),
        vec![56, 57, 58, 59, 60]
    );
}

#[test]
fn every_point_of_the_pitr_window_keeps_its_base_backup() {
    let mut p = policy();
    p.min_base = 0;
    p.pitr_window = Some(Duration::from_secs(7 * 86_400));
    let bases = daily_bases();
    let plan = plan_backups(&p, NOW, &bases);
    // Backups end at 06:00 each day; the window starts 7 days ago at 12:00, so the one that
    // ended 7.25 days ago restores its start, and the seven after it are inside.
    assert_eq!(kept(&plan), (53..=60).collect::<Vec<_>>());
    assert!(
        plan[&53]
            .keep
            .iter()
            .any(|r| r.contains("start of the PITR window"))
    );
    // For every point t in the window, some kept base backup ended at or before t.
    for t in (NOW - 7 * DAY..=NOW).step_by(3600) {
        assert!(
            bases.iter().any(|b| b.stop <= t && plan[&b.id].kept()),
            "nothing restores {t}"
        );
    }
    // With fewer base backups than the window spans, all of them are kept.
    let young: Vec<_> = bases[57..].to_vec();
    assert_eq!(kept(&plan_backups(&p, NOW, &young)), vec![58, 59, 60]);
}

#[test]
fn gfs_keeps_the_newest_per_day_week_and_month() {
    let mut p = policy();
    p.min_base = 0;
    p.base = Gfs {
        keep_daily: 3,
        keep_weekly: 2,
        keep_monthly: 2,
    };
    // Two backups on the newest day: only the newer counts for that day.
    let mut bases = daily_bases();
    bases.push(base(61, 0.1, "00000001000000000000003D"));
    let plan = plan_backups(&p, NOW, &bases);
    let k = kept(&plan);
    // Backup i ended at 06:00 UTC, 60 - i days before 2026-11-26. daily: 61 (today), 59,
    // 58; weekly: 61 (this week), 56 (Sunday 2026-11-22, last week's newest); monthly: 61
    // (November), 34 (2026-10-31, October's newest).
    assert_eq!(k, vec![34, 56, 58, 59, 61], "{plan:#?}");
    assert!(
        plan[&56]
            .keep
            .iter()
            .any(|r| r.starts_with("weekly 2026-W47")),
        "{plan:#?}"
    );
    assert!(
        plan[&34]
            .keep
            .iter()
            .any(|r| r.starts_with("monthly 2026-10")),
        "{plan:#?}"
    );
    assert!(!plan[&60].kept(), "61 is newer the same day");
}

#[test]
fn logical_dumps_have_their_own_counts() {
    let mut p = policy();
    p.logical = Gfs {
        keep_daily: 2,
        ..Gfs::default()
    };
    let backups = vec![
        base(1, 1.0, "000000010000000000000001"),
        logical(2, 3.0),
        logical(3, 2.0),
        logical(4, 1.0),
    ];
    let plan = plan_backups(&p, NOW, &backups);
    assert_eq!(kept(&plan), vec![1, 3, 4]);
    assert!(plan[&3].keep[0].starts_with("logical daily"));
    // With no counts, the newest dump alone.
    p.logical = Gfs::default();
    assert_eq!(kept(&plan_backups(&p, NOW, &backups)), vec![1, 4]);
}

#[test]
fn a_backup_in_use_by_a_drill_or_restore_is_kept() {
    let mut bases = daily_bases();
    bases[10].in_use = true;
    let plan = plan_backups(&policy(), NOW, &bases);
    assert_eq!(kept(&plan), vec![11, 59, 60]);
    assert!(plan[&11].keep[0].contains("in use by a drill or restore"));
}

#[test]
fn wal_goes_only_when_older_than_the_oldest_base_backup_kept() {
    let bases = daily_bases();
    let plan = plan_backups(&policy(), NOW, &bases);
    let logs: Vec<LogFile> = (0x30..=0x40)
        .map(|n| wal(&format!("0000000100000000000000{n:02X}")))
        .chain([wal("00000002.history")])
        .collect();
    let plan_wal = plan_logs(&bases, &plan, &logs);
    let wal = plan_wal;
    // Base 59 (the oldest kept) starts at segment 0x3B.
    assert_eq!(
        deleted(&wal),
        (0x30..0x3B)
            .map(|n| format!("0000000100000000000000{n:02X}"))
            .collect::<Vec<_>>()
    );
    assert!(wal[0].1.delete_reason.contains("(59)"));
    // Every base backup kept has all its WAL.
    for b in bases.iter().filter(|b| plan[&b.id].kept()) {
        let start = b.start_log.as_ref().unwrap();
        assert!(
            wal.iter()
                .filter(|(n, _)| *n >= start.name)
                .all(|(_, d)| d.kept())
        );
    }
    // No base backup kept: no WAL goes.
    let none = plan_logs(&[], &BTreeMap::new(), &logs);
    assert!(none.iter().all(|(_, d)| d.kept()));
}

#[test]
fn iso_weeks_follow_thursdays() {
    let day = |y, m, d| tidemark_core::timefmt::days_from_civil(y, m, d) * DAY;
    assert_eq!(iso_week(day(2026, 11, 26)), "2026-W48");
    assert_eq!(iso_week(day(2027, 1, 1)), "2026-W53");
    assert_eq!(iso_week(day(2024, 12, 30)), "2025-W01");
}

/// After failovers: timelines 1, 2 and 3 (promotions at segments 0x20 and 0x30). Files are
/// compared by timeline and segment, never by name: what a kept base backup replays stays
/// (its timeline and the later ones, from its first segment), history files always stay.
#[test]
fn wal_across_timelines_goes_only_when_no_base_backup_kept_replays_it() {
    let mut bases = vec![
        base(1, 20.0, "000000010000000000000010"),
        base(2, 1.0, "000000030000000000000031"),
    ];
    let logs: Vec<LogFile> = [
        "00000001000000000000000F",
        "000000010000000000000010",
        "00000001000000000000001F",
        "000000010000000000000020.partial",
        "000000010000000000000035",
        "00000002.history",
        "000000020000000000000020",
        "00000002000000000000002F",
        "00000003.history",
        "000000030000000000000030",
        "000000030000000000000031",
        "000000030000000000000040",
    ]
    .iter()
    .map(|n| wal(n))
    .collect();
    let keep_all = |bases: &[BackupFacts]| -> BTreeMap<i64, Decision> {
        bases
            .iter()
            .map(|b| {
                (
                    b.id,
                    Decision {
                        keep: vec!["kept".into()],
                        delete_reason: String::new(),
                    },
                )
            })
            .collect()
    };
    // The timeline 1 base reaches timelines 2 and 3 by replaying through the promotions:
    // only what precedes it goes.
    let plan = plan_logs(&bases, &keep_all(&bases), &logs);
    assert_eq!(deleted(&plan), vec!["00000001000000000000000F"]);

    // Only the timeline 3 base kept: a timeline 1 segment numbered past its start (the old
    // primary's tail) and everything before its start go; the histories stay.
    bases.remove(0);
    let plan = plan_logs(&bases, &keep_all(&bases), &logs);
    assert_eq!(
        deleted(&plan),
        vec![
            "00000001000000000000000F",
            "000000010000000000000010",
            "00000001000000000000001F",
            "000000010000000000000020.partial",
            "000000010000000000000035",
            "000000020000000000000020",
            "00000002000000000000002F",
            "000000030000000000000030",
        ]
    );
    let reason = |name: &str| {
        plan.iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
            .delete_reason
            .clone()
    };
    assert!(reason("000000030000000000000030").contains("older than 000000030000000000000031"));
    assert!(reason("000000010000000000000035").contains("on timeline 1"));
    for kept in [
        "00000002.history",
        "00000003.history",
        "000000030000000000000040",
    ] {
        assert!(plan.iter().any(|(n, d)| n == kept && d.kept()), "{kept}");
    }

    // A base backup kept whose first segment is not known: nothing goes.
    let mut unknown = base(3, 0.5, "000000030000000000000041");
    unknown.start_log.as_mut().unwrap().pos = None;
    bases.push(unknown);
    let plan = plan_logs(&bases, &keep_all(&bases), &logs);
    assert!(deleted(&plan).is_empty());
    assert!(plan[0].1.keep[0].contains("base backup 3"));
}

/// Binlog numbers past 999999 have seven digits, and sort before `.999999` as names: the
/// newest binlogs must not look oldest.
#[test]
fn binlogs_past_999999_are_compared_by_number() {
    let binlog = |n: u64| LogFile {
        name: tidemark_core::binlog::file_name("mysql-bin", n),
        pos: Some(LogPos {
            timeline: 0,
            number: n,
        }),
    };
    let mut b = base(1, 1.0, "000000010000000000000001");
    b.start_log = Some(binlog(999_998));
    let decisions: BTreeMap<i64, Decision> = [(
        1,
        Decision {
            keep: vec!["kept".into()],
            delete_reason: String::new(),
        },
    )]
    .into();
    let logs: Vec<LogFile> = [999_997, 999_998, 999_999, 1_000_000, 1_000_001]
        .into_iter()
        .map(binlog)
        .collect();
    assert!(logs[3].name < logs[0].name, "the names do sort wrongly");
    let plan = plan_logs(&[b], &decisions, &logs);
    assert_eq!(deleted(&plan), vec!["mysql-bin.999997"]);
}

/// What the catalog records without a number is placed by its name: a .partial file, a
/// backup history file; a timeline history file has no place (it is always kept).
#[test]
fn files_recorded_without_a_number_are_placed_by_their_name() {
    let seg = 16 << 20;
    let placed = |name: &str, number| LogFile::placed(name.into(), 1, number, seg).pos;
    let at = |number| {
        Some(LogPos {
            timeline: 1,
            number,
        })
    };
    assert_eq!(placed("000000010000000000000020.partial", None), at(0x20));
    assert_eq!(
        placed("000000010000000000000003.00000028.backup", None),
        at(3)
    );
    assert_eq!(placed("00000002.history", None), None);
    assert_eq!(placed("mysql-bin.000007", Some(7)), at(7));
    assert_eq!(placed("mysql-bin.000007", None), None);
}
