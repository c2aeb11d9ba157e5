//! A drill on a sandbox host: restore a base backup into the sandbox directory, recover to
//! a past target from the archive with the server on a private socket, run the smoke checks
//! and pg_amcheck, then stop the server and empty the directory.
//!
//! The sandbox reports raw evidence and the controller judges it, so the procedure never
//! decides "passed": it only says what happened, and where it broke.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tidemark_core::ids::BackupId;
use tidemark_proto::{CheckValue, DrillJob, DrillReport};

use super::physical::{self, Layout, Server};
use super::{Pg, quote_literal};
use crate::config::{EngineKind, InstanceConfig, SandboxConfig};
use crate::engine::Engine;
use crate::engine::common::{prepare_dir, tail};
use crate::error::AgentError;
use crate::job::{JobContext, JobResult};
use crate::{osuser, sandbox, tool};

/// Settings from pg_control that a hot standby needs at least as high as its primary had.
const STANDBY_MINIMUMS: &[(&str, &str)] = &[
    ("max_connections setting:", "max_connections"),
    ("max_worker_processes setting:", "max_worker_processes"),
    ("max_wal_senders setting:", "max_wal_senders"),
    ("max_prepared_xacts setting:", "max_prepared_transactions"),
    ("max_locks_per_xact setting:", "max_locks_per_transaction"),
];

pub async fn run(ctx: &JobContext, config: &Path, sb: &SandboxConfig, job: &DrillJob) -> JobResult {
    let started = Instant::now();
    let mut report = DrillReport {
        drill_id: job.drill_id,
        ..Default::default()
    };
    if let Err(e) = procedure(ctx, config, sb, job, started, &mut report).await {
        report.error = e.to_string();
    }
    let stop = super::PostgresEngine.stop_sandbox_server(sb);
    sandbox::finish_drill(ctx, sb, stop, report).await
}

async fn procedure(
    ctx: &JobContext,
    config: &Path,
    sb: &SandboxConfig,
    job: &DrillJob,
    started: Instant,
    report: &mut DrillReport,
) -> Result<(), AgentError> {
    let dir = &sb.dir;
    // A server of this engine left by an earlier drill is stopped first (the daemon stops
    // any engine's when a drill is interrupted), once the directory is known to be ours.
    sandbox::prepare(sb)?;
    super::PostgresEngine.stop_sandbox_server(sb).await;
    sandbox::remove_all(sb)?;
    let bin = sandbox_binaries(sb).remove(&job.major).ok_or_else(|| {
        AgentError::permanent(format!(
            "this sandbox has no PostgreSQL {} binaries; install them or list their bin directory in [sandbox] bin-dirs",
            job.major
        ))
    })?;
    let ids = osuser::target(&sb.os_user)?;
    let mut r = job
        .restore
        .clone()
        .ok_or_else(|| AgentError::permanent("the drill job names no backup to restore"))?;
    let pgdata = sandbox::data_dir(dir);
    r.pgdata = pgdata.display().to_string();
    r.tablespaces = r
        .tablespaces
        .keys()
        .map(|oid| {
            (
                oid.clone(),
                sandbox::tablespace_dir(dir, oid).display().to_string(),
            )
        })
        .collect();
    let mut inst = InstanceConfig::fallback(EngineKind::Postgresql, &r.source_instance);
    inst.bin_dir = Some(bin);
    inst.os_user = sb.os_user.clone();
    inst.user = job.user.clone();
    let mut layout = Layout {
        pgdata: pgdata.clone(),
        tablespaces: r
            .tablespaces
            .iter()
            .map(|(o, d)| (o.clone(), PathBuf::from(d)))
            .collect(),
        created: Vec::new(),
    };
    prepare_dir(&layout.pgdata, ids, &mut layout.created)?;
    for d in layout.tablespaces.values() {
        prepare_dir(d, ids, &mut layout.created)?;
    }
    report.bytes_restored =
        physical::restore_files(ctx, config, &inst, &r, BackupId(r.backup_id), &layout, ids)
            .await
            .map_err(|f| f.reworded(|m| format!("restoring backup {}: {m}", r.backup_id)))?;
    isolate(&inst, dir, &pgdata, ids).await?;
    report.restore_ms = started.elapsed().as_millis() as u64;

    let replay_started = Instant::now();
    let server = match Server::start(&inst, &pgdata, ids).await {
        Ok(s) => s,
        // pg_ctl -w also fails when recovery dies before the server is up.
        Err(e) => {
            let log =
                std::fs::read_to_string(pgdata.join(physical::SERVER_LOG)).unwrap_or_default();
            report.log_tail = tail(&log, 20);
            return Err(match recovery_failure(&log) {
                Some(why) => AgentError::permanent(format!("recovery failed: {why}")),
                None => e,
            });
        }
    };
    let waited = server.wait_for_target(Duration::from_secs(24 * 3600)).await;
    let log = server.log_text();
    report.stop_record = log
        .lines()
        .find_map(|l| {
            l.split_once("recovery stopping ")
                .map(|(_, rest)| format!("recovery stopping {rest}"))
        })
        .unwrap_or_default();
    let result = match waited {
        Ok(at) if at.paused => {
            report.reached_target = true;
            report.replay_lsn = at.lsn;
            report.last_commit_at = at.last_commit_micros;
            report.replay_ms = replay_started.elapsed().as_millis() as u64;
            report.rto_ms = started.elapsed().as_millis() as u64;
            checks(&server.pg, job, report).await;
            if job.amcheck {
                amcheck(&server, report).await;
            }
            Ok(())
        }
        Ok(at) => Err(AgentError::permanent(format!(
            "recovery ended at {} without pausing at the target",
            at.lsn
        ))),
        Err(e) => Err(match recovery_failure(&log) {
            Some(why) => AgentError::permanent(format!("recovery failed: {why}")),
            None => e,
        }),
    };
    report.log_tail = server.log_tail(20);
    result
}

/// Why recovery failed, from the server log: its FATAL and PANIC lines, and what wal-fetch
/// said (restore_command's stderr goes to the same log).
fn recovery_failure(log: &str) -> Option<String> {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("FATAL:") || l.contains("PANIC:") || l.contains("tidemark-agent wal-fetch:")
        })
        .map(|l| l.trim())
        .collect();
    (!lines.is_empty()).then(|| {
        let mut seen = Vec::new();
        for l in lines {
            // Drop the log line prefix (time, pid) up to the severity.
            let text = ["FATAL:", "PANIC:", "tidemark-agent wal-fetch:"]
                .iter()
                .find_map(|k| l.find(k).map(|i| &l[i..]))
                .unwrap_or(l);
            if !seen.iter().any(|s: &String| s == text) {
                seen.push(text.to_string());
            }
        }
        seen.join("; ")
    })
}

/// What production's configuration may load or pull in, disabled in a drill's copy: a
/// compromised database host must not get code running on the sandbox through the backup
/// (a preloaded library, or a file an include names).
const INHERITED_CODE: &[&str] = &[
    "shared_preload_libraries",
    "session_preload_libraries",
    "local_preload_libraries",
    "include",
    "include_if_exists",
    "include_dir",
];

/// Settings that keep the restored server to itself: no TCP listener, a socket in the
/// sandbox, no archiving or replication, no library or included file from production
/// (see [`INHERITED_CODE`]), and local trust authentication (the socket directory is the
/// sandbox's, mode 0700). Configuration the backup did not carry (a Debian cluster keeps it
/// in /etc) is created, and the standby minimums from pg_control are met so that hot
/// standby can answer queries while paused.
async fn isolate(
    inst: &InstanceConfig,
    dir: &Path,
    pgdata: &Path,
    ids: Option<(u32, u32)>,
) -> Result<(), AgentError> {
    let run = sandbox::socket_dir(dir);
    std::fs::create_dir_all(&run)
        .and_then(|_| osuser::chown(&run, ids))
        .map_err(|e| AgentError::permanent(format!("cannot create {}: {e}", run.display())))?;
    let write = |name: &str, text: &str| {
        let p = pgdata.join(name);
        std::fs::write(&p, text)
            .and_then(|_| osuser::chown(&p, ids))
            .map_err(|e| AgentError::permanent(format!("cannot write {}: {e}", p.display())))
    };
    if !pgdata.join("postgresql.conf").exists() {
        write("postgresql.conf", "# created by tidemark for a drill\n")?;
    }
    write(
        "pg_hba.conf",
        "# tidemark drill sandbox: local socket only\nlocal all all trust\n",
    )?;
    if !pgdata.join("pg_ident.conf").exists() {
        write("pg_ident.conf", "")?;
    }
    physical::disable_settings(pgdata, INHERITED_CODE, "the tidemark drill sandbox")?;
    let minimums = standby_minimums(inst, pgdata).await?;
    let q = |p: &Path| quote_literal(&p.display().to_string());
    let mut lines = vec![
        String::new(),
        "# Drill sandbox: private socket, nothing leaves this host.".to_string(),
        "listen_addresses = ''".into(),
        format!("unix_socket_directories = {}", q(&run)),
        format!("hba_file = {}", q(&pgdata.join("pg_hba.conf"))),
        format!("ident_file = {}", q(&pgdata.join("pg_ident.conf"))),
        "archive_mode = off".into(),
        "archive_command = ''".into(),
        "hot_standby = on".into(),
        "ssl = off".into(),
        "logging_collector = off".into(),
        "synchronous_standby_names = ''".into(),
        "primary_conninfo = ''".into(),
        "shared_preload_libraries = ''".into(),
        "session_preload_libraries = ''".into(),
        "local_preload_libraries = ''".into(),
        // The verdict reads "recovery stopping before ..." from the log: keep it English.
        "lc_messages = 'C'".into(),
    ];
    for (name, value) in minimums {
        lines.push(format!("{name} = {value}"));
    }
    let auto = pgdata.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&auto).unwrap_or_default();
    text.push_str(&(lines.join("\n") + "\n"));
    write("postgresql.auto.conf", &text)
}

async fn standby_minimums(
    inst: &InstanceConfig,
    pgdata: &Path,
) -> Result<BTreeMap<&'static str, String>, AgentError> {
    let pg = Pg::new(inst.clone());
    let program = pg.program("pg_controldata");
    let out = tokio::process::Command::new(&program)
        .arg(pgdata)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| AgentError::permanent(format!("cannot run {}: {e}", program.display())))?;
    if !out.status.success() {
        return Err(AgentError::permanent(format!(
            "pg_controldata failed on the restored files ({}): {}",
            tool::describe(out.status),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut found = BTreeMap::new();
    for line in text.lines() {
        for (label, setting) in STANDBY_MINIMUMS {
            if let Some(v) = line.strip_prefix(label) {
                found.insert(*setting, v.trim().to_string());
            }
        }
    }
    Ok(found)
}

/// Run each smoke check and keep its raw value (first column of the first row).
async fn checks(pg: &Pg, job: &DrillJob, report: &mut DrillReport) {
    for c in &job.checks {
        let v = match pg.query(&c.database, &c.sql).await {
            Ok(out) => CheckValue {
                name: c.name.clone(),
                value: out
                    .lines()
                    .next()
                    .and_then(|l| l.split('\t').next())
                    .unwrap_or("")
                    .to_string(),
                error: String::new(),
            },
            Err(e) => CheckValue {
                name: c.name.clone(),
                value: String::new(),
                error: e.to_string(),
            },
        };
        report.values.push(v);
    }
}

/// End recovery (at the target: it is paused there) so that pg_amcheck can install its
/// extension, then check every database's tables and B-tree indexes.
async fn amcheck(server: &Server, report: &mut DrillReport) {
    report.amcheck_ran = true;
    let promote = async {
        server
            .pg
            .query("postgres", "SELECT pg_wal_replay_resume()")
            .await?;
        let at = server.wait_for_target(Duration::from_secs(600)).await?;
        if at.paused {
            return Err(AgentError::permanent(
                "the server stayed paused after pg_wal_replay_resume()",
            ));
        }
        Ok(())
    };
    if let Err(e) = promote.await {
        report.amcheck_detail = format!("could not end recovery to run pg_amcheck: {e}");
        return;
    }
    let mut cmd = server.pg.command("pg_amcheck");
    cmd.args(["--all", "--install-missing", "--jobs=2", "--no-password"])
        .stdin(Stdio::null());
    let program = server.pg.program("pg_amcheck");
    match tokio::process::Command::from(cmd).output().await {
        Err(e) => report.amcheck_detail = format!("cannot run {}: {e}", program.display()),
        Ok(out) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(10)..].join("\n");
            report.amcheck_ok = out.status.success();
            report.amcheck_detail = if out.status.success() {
                "pg_amcheck found no corruption in any database".into()
            } else {
                format!("pg_amcheck {}: {tail}", tool::describe(out.status))
            };
        }
    }
}

/// PostgreSQL major version -> its bin directory, from `pg_ctl --version` in each.
pub fn sandbox_binaries(cfg: &SandboxConfig) -> BTreeMap<u32, PathBuf> {
    let dirs: Vec<PathBuf> = if cfg.bin_dirs.is_empty() {
        std::fs::read_dir("/usr/lib/postgresql")
            .map(|rd| rd.flatten().map(|e| e.path().join("bin")).collect())
            .unwrap_or_default()
    } else {
        cfg.bin_dirs.clone()
    };
    let mut out = BTreeMap::new();
    for dir in dirs {
        let Ok(o) = std::process::Command::new(dir.join("pg_ctl"))
            .arg("--version")
            .stdin(Stdio::null())
            .output()
        else {
            tracing::warn!(dir = %dir.display(), "no pg_ctl here; this version cannot run drills");
            continue;
        };
        // "pg_ctl (PostgreSQL) 15.10 (Debian 15.10-0+deb12u1)"
        let text = String::from_utf8_lossy(&o.stdout);
        let major = text
            .split(") ")
            .nth(1)
            .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|m| m.parse().ok());
        if let Some(m) = major {
            out.insert(m, dir);
        }
    }
    out
}

/// `pg_ctl stop -m immediate` (the files are about to go); if that fails, kill the
/// postmaster, whose children exit when it dies.
pub async fn stop_sandbox_server(cfg: &SandboxConfig, data: &Path) {
    let ids = osuser::target(&cfg.os_user).ok().flatten();
    for bin in sandbox_binaries(cfg).values() {
        let mut cmd = std::process::Command::new(bin.join("pg_ctl"));
        cmd.arg("-D")
            .arg(data)
            .args(["-m", "immediate", "-w", "-t", "60", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        osuser::run_as(&mut cmd, ids);
        if let Ok(s) = tokio::process::Command::from(cmd).status().await
            && s.success()
        {
            return;
        }
    }
    sandbox::kill_by_pid_file(&data.join("postmaster.pid")).await;
}

#[cfg(test)]
mod tests {
    #[test]
    fn recovery_failure_names_the_fatal_line_and_wal_fetch() {
        let log = "2026-11-26 02:40:00.1 UTC [9] LOG:  starting PostgreSQL 15\n\
                   tidemark-agent wal-fetch: archived 000000010000000000000005 of instance demo-pg cannot be read\n\
                   2026-11-26 02:40:01.2 UTC [9] FATAL:  could not restore file \"000000010000000000000005\" from archive: child process exited with exit code 200\n\
                   2026-11-26 02:40:01.3 UTC [8] LOG:  startup process (PID 9) exited with exit code 1\n";
        let why = super::recovery_failure(log).unwrap();
        assert!(
            why.starts_with("tidemark-agent wal-fetch: archived 000000010000000000000005"),
            "{why}"
        );
        assert!(why.contains("; FATAL:  could not restore file"), "{why}");
        assert_eq!(super::recovery_failure("LOG: fine\n"), None);
    }
}
