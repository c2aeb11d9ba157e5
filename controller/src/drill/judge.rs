//! Judging a drill from the sandbox's evidence. The sandbox reports raw facts (where
//! recovery stopped, the smoke checks' values); the rules live here, where the samples and
//! the catalog are, so a sandbox never sees production data beyond what it restored.

use std::collections::HashMap;
use std::time::Duration;

use tidemark_core::timefmt::{parse_timestamp, pg_timestamp};
use tidemark_core::wal::Lsn;
use tidemark_proto as pb;

use tidemark_core::binlog;

use crate::catalog::{BaseBackupRow, BinlogCoordRow, CheckResult, DrillEvidence, DrillState};
use crate::config::{CheckConfig, Expect};

/// Where the restored backup sits in the log the drill replays.
pub enum Start<'a> {
    Wal {
        base: &'a BaseBackupRow,
        seg_size: u64,
    },
    Binlog {
        coords: &'a BinlogCoordRow,
        /// The binlog base name, to count the files replayed.
        base_name: &'a str,
    },
}

pub struct Context<'a> {
    /// Unix microseconds.
    pub target: i64,
    pub start: Start<'a>,
    /// The longest a commit waits to be archived on a quiet server.
    pub switch_interval: Duration,
    pub checks: &'a [CheckConfig],
    /// Per within-pct check: the production sample nearest before the target.
    pub samples: &'a HashMap<String, (i64, String)>,
    /// Unix seconds: the newest archived point at or before the target.
    pub archived_before_target: Option<i64>,
    /// Problems the controller saw while serving the drill.
    pub notes: &'a str,
}

pub struct Judged {
    pub state: DrillState,
    pub evidence: DrillEvidence,
    pub reason: String,
}

fn result(name: &str, expect: &str, value: String, ok: bool, detail: String) -> CheckResult {
    CheckResult {
        name: name.into(),
        expect: expect.into(),
        value,
        ok,
        detail,
    }
}

pub fn judge(ctx: &Context, r: &pb::DrillReport) -> Judged {
    let replay = Lsn::parse(&r.replay_lsn).ok();
    let mut checks = Vec::new();
    if !r.error.is_empty() {
        checks.push(result(
            "procedure",
            "runs to the end",
            String::new(),
            false,
            r.error.clone(),
        ));
    }
    checks.push(result(
        "recovery-target",
        "paused at the target",
        r.replay_lsn.clone(),
        r.reached_target,
        if r.reached_target {
            "recovery paused at the target".into()
        } else {
            "recovery did not pause at the target".into()
        },
    ));
    if r.reached_target {
        checks.push(match &ctx.start {
            Start::Wal { base, .. } => wal_replayed(base, replay),
            Start::Binlog { coords, .. } => binlog_replayed(coords, r),
        });
        checks.push(recovered_point(ctx, r));
    }
    let values: HashMap<&str, &pb::CheckValue> =
        r.values.iter().map(|v| (v.name.as_str(), v)).collect();
    if r.reached_target {
        for c in ctx.checks {
            checks.push(smoke(ctx, c, values.get(c.name.as_str()).copied()));
        }
    }
    if r.amcheck_ran {
        checks.push(result(
            "amcheck",
            match ctx.start {
                Start::Wal { .. } => "pg_amcheck finds no corruption",
                Start::Binlog { .. } => "mariadb-check finds no corrupt table",
            },
            String::new(),
            r.amcheck_ok,
            r.amcheck_detail.clone(),
        ));
    }
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    let mut reason = failed.join("; ");
    if !ctx.notes.is_empty() && !failed.is_empty() {
        reason = format!("{}; {reason}", ctx.notes.replace('\n', "; "));
    }
    let log_files = match &ctx.start {
        Start::Wal { base, seg_size } => {
            let start_segno = base.start_lsn.segno(*seg_size);
            replay
                .map(|l| (l.segno(*seg_size) + 1).saturating_sub(start_segno))
                .unwrap_or(0)
        }
        Start::Binlog { coords, base_name } => {
            match (coords.seq, binlog::sequence(&r.replay_lsn, base_name)) {
                (Some(first), Some(last)) => (last + 1).saturating_sub(first),
                _ => 0,
            }
        }
    };
    let evidence = DrillEvidence {
        recovered_at: r.last_commit_at,
        recovered_lsn: r.replay_lsn.clone(),
        stop_record: r.stop_record.clone(),
        bytes_restored: r.bytes_restored,
        wal_segments: log_files,
        rto_ms: r.rto_ms,
        restore_ms: r.restore_ms,
        replay_ms: r.replay_ms,
        rpo_secs: ctx
            .archived_before_target
            .map(|t| (ctx.target / 1_000_000 - t).max(0))
            .unwrap_or(-1),
        checks,
        log_tail: r.log_tail.clone(),
    };
    Judged {
        state: if failed.is_empty() {
            DrillState::Passed
        } else {
            DrillState::Failed
        },
        evidence,
        reason,
    }
}

/// A drill that replayed nothing past the backup's end proved only the backup, not the
/// archive.
fn wal_replayed(base: &BaseBackupRow, replay: Option<Lsn>) -> CheckResult {
    let stop = base.stop_lsn;
    let expect = format!("replay past the backup's end {stop}");
    match replay {
        Some(l) if l > stop => result(
            "wal-replayed",
            &expect,
            l.to_string(),
            true,
            format!("replayed WAL from {} to {l}", base.start_lsn),
        ),
        _ => result(
            "wal-replayed",
            &expect,
            replay.map(|l| l.to_string()).unwrap_or_default(),
            false,
            format!(
                "recovery replayed no WAL past the base backup's end ({stop}), so the drill exercised no WAL replay; pick a later target"
            ),
        ),
    }
}

/// Likewise for MariaDB, judged on what the replay reports it applied: at least one
/// transaction from archived binlogs after the backup's position. A sandbox that does not
/// report it (too old) cannot be judged on evidence, and fails.
fn binlog_replayed(coords: &BinlogCoordRow, r: &pb::DrillReport) -> CheckResult {
    let expect = format!(
        "replay transactions from binlogs after the backup's position {}:{}",
        coords.file, coords.position
    );
    let fail = |detail: String| result("binlog-replayed", &expect, String::new(), false, detail);
    match r.transactions_replayed {
        None => fail(
            "the sandbox did not report what its replay applied, so the drill cannot be judged on evidence; upgrade the sandbox's agent".into(),
        ),
        Some(0) => fail(
            "the replay applied no transaction after the backup, so the drill exercised no binlog replay; pick a later target".into(),
        ),
        Some(_) if r.replay_lsn.is_empty() => fail(
            "the replay reports transactions but no binlog it read them from".into(),
        ),
        Some(n) => result(
            "binlog-replayed",
            &expect,
            n.to_string(),
            true,
            format!(
                "replayed {n} transaction(s) from {}:{} through {}, the last {}",
                coords.file,
                coords.position,
                r.replay_lsn,
                if r.last_event.is_empty() {
                    "without a GTID"
                } else {
                    r.last_event.as_str()
                }
            ),
        ),
    }
}

/// The time in PostgreSQL's "recovery stopping before commit of transaction 745, time
/// 2026-11-26 02:50:00.123456+00" line.
pub fn stop_record_time(line: &str) -> Option<i64> {
    let at = line.rfind(", time ")?;
    parse_timestamp(&line[at + 7..]).ok()
}

/// The recovered point (the last transaction replayed) must not be after the target, and
/// must be close to it: within one WAL switch interval, or, when the server committed
/// nothing for longer, with the log showing the next commit falls after the target.
fn recovered_point(ctx: &Context, r: &pb::DrillReport) -> CheckResult {
    let expect = format!(
        "at or before the target, within {} of it",
        tidemark_core::duration::human(ctx.switch_interval)
    );
    let target = ctx.target;
    let shown = |t: i64| {
        if t == 0 {
            "no transaction".to_string()
        } else {
            pg_timestamp(t)
        }
    };
    let at = r.last_commit_at;
    let fail = |detail: String| result("recovered-point", &expect, shown(at), false, detail);
    if at > target {
        return fail(format!(
            "the last transaction replayed committed at {}, after the target {}",
            shown(at),
            pg_timestamp(target)
        ));
    }
    let lag = Duration::from_micros((target - at).max(0) as u64);
    let next = stop_record_time(&r.stop_record);
    if at != 0 && lag <= ctx.switch_interval {
        return result(
            "recovered-point",
            &expect,
            shown(at),
            true,
            format!(
                "last transaction replayed committed {:.3}s before the target",
                lag.as_secs_f64()
            ),
        );
    }
    match next {
        Some(n) if n > target => result(
            "recovered-point",
            &expect,
            shown(at),
            true,
            format!(
                "no transaction committed between {} and the target: the next one committed at {}",
                shown(at),
                pg_timestamp(n)
            ),
        ),
        _ => fail(format!(
            "the last transaction replayed committed at {}, {} before the target, and the log does not show that nothing committed in between",
            shown(at),
            tidemark_core::duration::human(lag)
        )),
    }
}

fn number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|f| f.is_finite())
}

fn smoke(ctx: &Context, c: &CheckConfig, got: Option<&pb::CheckValue>) -> CheckResult {
    let expect = c.expect.to_string();
    let Some(v) = got else {
        return result(
            &c.name,
            &expect,
            String::new(),
            false,
            "the check did not run".into(),
        );
    };
    if !v.error.is_empty() {
        return result(
            &c.name,
            &expect,
            String::new(),
            false,
            format!("the query failed: {}", v.error),
        );
    }
    let value = v.value.clone();
    let (ok, detail) = match &c.expect {
        Expect::Nonzero => match number(&value) {
            Some(n) if n != 0.0 => (true, "nonzero".to_string()),
            Some(_) => (false, "the value is zero".to_string()),
            None => (false, format!("{value:?} is not a number")),
        },
        Expect::Equals(want) => {
            let same = match (number(&value), number(want)) {
                (Some(a), Some(b)) => a == b,
                _ => value.trim() == want.trim(),
            };
            if same {
                (true, format!("equals {want}"))
            } else {
                (false, format!("expected {want}, got {value}"))
            }
        }
        Expect::WithinPct(pct) => match ctx.samples.get(&c.name) {
            None => (
                false,
                format!(
                    "no sample of this probe was taken before the target {}; the instance's agent takes one every sample-interval",
                    pg_timestamp(ctx.target)
                ),
            ),
            Some((at, sample)) => match (number(&value), number(sample)) {
                (Some(a), Some(b)) => {
                    let diff = (a - b).abs();
                    let allowed = b.abs() * pct / 100.0;
                    let off = if b == 0.0 {
                        if a == 0.0 { 0.0 } else { f64::INFINITY }
                    } else {
                        diff / b.abs() * 100.0
                    };
                    let detail = format!(
                        "restored {value}, sample {sample} taken {} on production: {off:.3}% apart (allowed {pct}%)",
                        pg_timestamp(*at)
                    );
                    (diff <= allowed, detail)
                }
                _ => (
                    false,
                    format!("restored {value:?} and sample {sample:?} are not both numbers"),
                ),
            },
        },
    };
    result(&c.name, &expect, value, ok, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_800_000_000_000_000;

    fn base() -> BaseBackupRow {
        BaseBackupRow {
            backup_id: tidemark_core::ids::BackupId(1),
            start_lsn: Lsn::parse("0/2000028").unwrap(),
            stop_lsn: Lsn::parse("0/2000100").unwrap(),
            timeline: 1,
            system_identifier: "1".into(),
            backup_label: String::new(),
            start_time: 0,
            stop_time: 0,
            tablespaces: Default::default(),
        }
    }

    fn check(name: &str, expect: &str) -> CheckConfig {
        CheckConfig {
            name: name.into(),
            database: "postgres".into(),
            sql: "SELECT 1".into(),
            expect: expect.parse().unwrap(),
        }
    }

    fn report(lsn: &str, at: i64, values: &[(&str, &str)]) -> pb::DrillReport {
        pb::DrillReport {
            reached_target: true,
            replay_lsn: lsn.into(),
            last_commit_at: at,
            values: values
                .iter()
                .map(|(n, v)| pb::CheckValue {
                    name: n.to_string(),
                    value: v.to_string(),
                    error: String::new(),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn run(r: &pb::DrillReport, checks: &[CheckConfig], samples: &[(&str, &str)]) -> Judged {
        let b = base();
        let samples: HashMap<String, (i64, String)> = samples
            .iter()
            .map(|(n, v)| (n.to_string(), (T - 5_000_000, v.to_string())))
            .collect();
        judge(
            &Context {
                target: T,
                start: Start::Wal {
                    base: &b,
                    seg_size: 16 << 20,
                },
                switch_interval: Duration::from_secs(60),
                checks,
                samples: &samples,
                archived_before_target: Some(T / 1_000_000 - 20),
                notes: "",
            },
            r,
        )
    }

    #[test]
    fn a_healthy_drill_passes_with_its_evidence() {
        let checks = [
            check("rows", "within-pct:1"),
            check("markers", "equals:50"),
            check("any", "nonzero"),
        ];
        let r = report(
            "0/5000060",
            T - 2_000_000,
            &[("rows", "1005"), ("markers", "50.0"), ("any", "3")],
        );
        let j = run(&r, &checks, &[("rows", "1000")]);
        assert_eq!(j.state, DrillState::Passed, "{}", j.reason);
        assert_eq!(j.evidence.wal_segments, 4);
        assert_eq!(j.evidence.rpo_secs, 20);
    }

    #[test]
    fn each_rule_fails_with_its_reason() {
        let checks = [check("rows", "within-pct:1"), check("markers", "equals:50")];
        let r = report(
            "0/5000060",
            T - 2_000_000,
            &[("rows", "1020"), ("markers", "49")],
        );
        let j = run(&r, &checks, &[("rows", "1000")]);
        assert_eq!(j.state, DrillState::Failed);
        assert!(
            j.reason.contains("rows: restored 1020, sample 1000"),
            "{}",
            j.reason
        );
        assert!(
            j.reason.contains("markers: expected 50, got 49"),
            "{}",
            j.reason
        );
        // No sample before the target.
        let j = run(
            &report("0/5000060", T - 1, &[("rows", "1000")]),
            &checks[..1],
            &[],
        );
        assert!(j.reason.contains("no sample"), "{}", j.reason);
        // Nothing replayed past the backup's end.
        let j = run(&report("0/2000100", T - 1, &[]), &[], &[]);
        assert!(j.reason.contains("exercised no WAL replay"), "{}", j.reason);
        // Overshoot.
        let j = run(&report("0/5000060", T + 1, &[]), &[], &[]);
        assert!(j.reason.contains("after the target"), "{}", j.reason);
        // Stopped far before the target, with no proof that nothing committed between.
        let j = run(&report("0/5000060", T - 600_000_000, &[]), &[], &[]);
        assert!(j.reason.contains("does not show"), "{}", j.reason);
        // Recovery never reached its target.
        let mut r = report("", 0, &[]);
        r.reached_target = false;
        r.error = "the restored server stopped during recovery".into();
        let j = run(&r, &checks, &[]);
        assert_eq!(j.state, DrillState::Failed);
        assert!(
            j.reason
                .starts_with("procedure: the restored server stopped"),
            "{}",
            j.reason
        );
    }

    fn coords() -> BinlogCoordRow {
        BinlogCoordRow {
            backup_id: tidemark_core::ids::BackupId(1),
            file: "mysql-bin.000003".into(),
            seq: Some(3),
            position: 385,
            gtid: "0-1-40".into(),
            start_time: 0,
            stop_time: 0,
        }
    }

    /// Judge a MariaDB drill's report: `transactions` applied, the last committed at `at`.
    fn run_binlog(transactions: Option<u64>, at: i64, stop_record: &str) -> Judged {
        let c = coords();
        let samples = HashMap::new();
        let r = pb::DrillReport {
            reached_target: true,
            replay_lsn: "mysql-bin.000004".into(),
            last_commit_at: at,
            stop_record: stop_record.into(),
            transactions_replayed: transactions,
            last_event: "0-1-52".into(),
            ..Default::default()
        };
        judge(
            &Context {
                target: T,
                start: Start::Binlog {
                    coords: &c,
                    base_name: "mysql-bin",
                },
                switch_interval: Duration::from_secs(60),
                checks: &[],
                samples: &samples,
                archived_before_target: Some(T / 1_000_000 - 20),
                notes: "",
            },
            &r,
        )
    }

    #[test]
    fn a_binlog_replay_is_judged_on_what_it_applied() {
        let j = run_binlog(Some(12), T - 2_000_000, "");
        assert_eq!(j.state, DrillState::Passed, "{}", j.reason);
        assert_eq!(j.evidence.wal_segments, 2);
        let replayed = j
            .evidence
            .checks
            .iter()
            .find(|c| c.name == "binlog-replayed")
            .unwrap();
        assert!(
            replayed.detail.contains("12 transaction(s)"),
            "{replayed:?}"
        );
        assert!(replayed.detail.contains("0-1-52"), "{replayed:?}");

        // Fabricated: nothing applied, though the log vouches that nothing came before the
        // target.
        let next = format!(
            "replay stopped before the transaction of x, time {}",
            pg_timestamp(T + 30_000_000)
        );
        let j = run_binlog(Some(0), 0, &next);
        assert_eq!(j.state, DrillState::Failed);
        assert!(j.reason.contains("applied no transaction"), "{}", j.reason);
        // Fabricated: the last commit an hour before the target, nothing to show that none
        // came between.
        let j = run_binlog(Some(5), T - 3_600_000_000, "");
        assert_eq!(j.state, DrillState::Failed);
        assert!(j.reason.contains("does not show"), "{}", j.reason);
        // A sandbox that does not say what it applied.
        let j = run_binlog(None, T - 2_000_000, "");
        assert_eq!(j.state, DrillState::Failed);
        assert!(
            j.reason.contains("cannot be judged on evidence"),
            "{}",
            j.reason
        );
    }

    #[test]
    fn a_quiet_server_passes_when_the_log_shows_the_next_commit_after_the_target() {
        let mut r = report("0/5000060", T - 600_000_000, &[]);
        r.stop_record = format!(
            "recovery stopping before commit of transaction 812, time {}",
            pg_timestamp(T + 30_000_000)
        );
        let j = run(&r, &[], &[]);
        assert_eq!(j.state, DrillState::Passed, "{}", j.reason);
        assert_eq!(stop_record_time(&r.stop_record), Some(T + 30_000_000));
    }
}
