//! A MariaDB drill on a sandbox host: unpack and prepare the physical backup in the sandbox
//! directory, replay the archived binlogs to the past target with mariadbd on a private
//! socket (no networking, no binlog of its own, grants skipped, events off), run the smoke
//! checks and `mariadb-check`, then kill the server and empty the directory.
//!
//! As for PostgreSQL, the sandbox reports raw evidence and the controller judges it: where
//! the replay stopped, the last transaction it replayed, the first one it left out, the
//! checks' values.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use tidemark_core::ids::BackupId;
use tidemark_core::timefmt::utc;
use tidemark_proto::{CheckValue, DrillJob, DrillReport};

use super::Maria;
use super::binlog::next_transaction_at;
use super::pitr;
use super::replay::{fetch_binlogs, replay_binlogs};
use super::server::{ServerMode, local_client, start_server};
use crate::config::{EngineKind, InstanceConfig, SandboxConfig};
use crate::engine::Engine;
use crate::engine::common::{prepare_dir, tail};
use crate::error::AgentError;
use crate::job::{JobContext, JobResult};
use crate::{osuser, sandbox, tool};

pub async fn run(ctx: &JobContext, sb: &SandboxConfig, job: &DrillJob) -> JobResult {
    let started = Instant::now();
    let mut report = DrillReport {
        drill_id: job.drill_id,
        ..Default::default()
    };
    if let Err(e) = procedure(ctx, sb, job, started, &mut report).await {
        report.error = e.to_string();
    }
    let stop = super::MariadbEngine.stop_sandbox_server(sb);
    sandbox::finish_drill(ctx, sb, stop, report).await
}

async fn procedure(
    ctx: &JobContext,
    sb: &SandboxConfig,
    job: &DrillJob,
    started: Instant,
    report: &mut DrillReport,
) -> Result<(), AgentError> {
    let dir = &sb.dir;
    // A server of this engine left by an earlier drill is stopped first (the daemon stops
    // any engine's when a drill is interrupted), once the directory is known to be ours.
    sandbox::prepare(sb)?;
    super::MariadbEngine.stop_sandbox_server(sb).await;
    sandbox::remove_all(sb)?;
    let (series, bin) = mariadb_series(sb)
        .filter(|(s, _)| *s == job.major)
        .ok_or_else(|| {
            AgentError::permanent(format!(
                "this sandbox has no mariadbd {}.{}; install that series or set [sandbox] mariadb-bin-dir",
                job.major / 100,
                job.major % 100
            ))
        })?;
    let ids = osuser::target(&sb.os_user)?;
    let r = job
        .restore
        .clone()
        .ok_or_else(|| AgentError::permanent("the drill job names no backup to restore"))?;
    let replay = r
        .binlog
        .clone()
        .ok_or_else(|| AgentError::permanent("the drill job names no binlogs"))?;
    let mut inst = InstanceConfig::fallback(EngineKind::Mariadb, &r.source_instance);
    inst.os_user = sb.os_user.clone();
    let db = Maria::new(inst);
    let datadir = sandbox::data_dir(dir);
    prepare_dir(&datadir, ids, &mut Vec::new())?;
    let backup = BackupId(r.backup_id);
    report.bytes_restored = pitr::unpack(ctx, &db, backup, &datadir, ids)
        .await
        .map_err(|f| f.reworded(|m| format!("restoring backup {backup}: {m}")))?;
    pitr::prepare(&db, &datadir, ids)
        .await
        .map_err(|f| f.reworded(|m| format!("preparing backup {backup}: {m}")))?;
    report.restore_ms = started.elapsed().as_millis() as u64;

    let replay_started = Instant::now();
    let server = start_server(
        &db,
        &bin.join("mariadbd"),
        &datadir,
        &sb.os_user,
        ServerMode::Replay,
    )
    .await?;
    tracing::info!(
        drill = job.drill_id,
        series,
        "sandbox server up; replaying binlogs"
    );
    let staging = dir.join("binlogs");
    std::fs::create_dir_all(&staging)
        .map_err(|e| AgentError::permanent(format!("cannot create {}: {e}", staging.display())))?;
    let files = fetch_binlogs(ctx, &r.source_instance, &replay.files, &staging)
        .await
        .map_err(|e| e.reworded(|m| format!("recovery failed: {m}")))?;
    let done = replay_binlogs(&db, &server.socket, &replay, &files)
        .await
        .map_err(|f| f.reworded(|m| format!("recovery failed: {m}")))?;
    report.replay_ms = replay_started.elapsed().as_millis() as u64;
    report.rto_ms = started.elapsed().as_millis() as u64;
    report.reached_target = true;
    report.replay_lsn = replay.files.last().cloned().unwrap_or_default();
    // What the replay really applied, for the controller to judge.
    report.last_commit_at = done.last_transaction_at * 1_000_000;
    report.transactions_replayed = Some(done.transactions);
    report.last_event = done.last_gtid.clone();
    // The first transaction the replay left out, in the form the controller reads.
    if replay.stop_before > 0
        && let Some(next) = next_transaction_at(&files, replay.stop_before)?
    {
        report.stop_record = format!(
            "replay stopped before the transaction of {}, time {}",
            utc(next),
            tidemark_core::timefmt::pg_timestamp(next * 1_000_000)
        );
    }
    for c in &job.checks {
        report.values.push(check(&db, &server.socket, c).await);
    }
    if job.amcheck {
        let (ok, detail) = check_tables(&db, &server.socket).await;
        report.amcheck_ran = true;
        report.amcheck_ok = ok;
        report.amcheck_detail = detail;
    }
    report.log_tail = server.log_tail(20);
    Ok(())
}

/// The MariaDB series this sandbox can run drills on, encoded as major * 100 + minor
/// (10.11 -> 1011: mariabackup prepares only its own series' backups), with the directory
/// holding mariadbd. From `mariadbd --version` in `[sandbox] mariadb-bin-dir`, else
/// Debian's /usr/sbin.
pub fn mariadb_series(cfg: &SandboxConfig) -> Option<(u32, PathBuf)> {
    let dir = cfg
        .mariadb_bin_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/usr/sbin"));
    let out = std::process::Command::new(dir.join("mariadbd"))
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    // "/usr/sbin/mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64"
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split(" Ver ").nth(1)?;
    Some((series(version)?, dir))
}

/// "10.11.19-MariaDB..." -> 1011.
pub fn series(version: &str) -> Option<u32> {
    let mut it = version.split(|c: char| !c.is_ascii_digit());
    let major: u32 = it.next()?.parse().ok()?;
    let minor: u32 = it.next()?.parse().ok()?;
    Some(major * 100 + minor)
}

async fn check(db: &Maria, socket: &Path, c: &tidemark_proto::SmokeCheck) -> CheckValue {
    let mut cmd = local_client(db, "mariadb", socket);
    cmd.args(["--batch", "--skip-column-names"]);
    if !c.database.is_empty() {
        cmd.arg(format!("--database={}", c.database));
    }
    cmd.arg("--execute").arg(&c.sql).stdin(Stdio::null());
    let mut v = CheckValue {
        name: c.name.clone(),
        ..Default::default()
    };
    match tokio::process::Command::from(cmd).output().await {
        Ok(out) if out.status.success() => {
            v.value = String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .and_then(|l| l.split('\t').next())
                .unwrap_or("")
                .to_string();
        }
        Ok(out) => v.error = String::from_utf8_lossy(&out.stderr).trim().to_string(),
        Err(e) => v.error = e.to_string(),
    }
    v
}

/// `mariadb-check --all-databases --check`: every table's structure and data are read.
async fn check_tables(db: &Maria, socket: &Path) -> (bool, String) {
    let mut cmd = local_client(db, "mariadb-check", socket);
    cmd.args(["--all-databases", "--check"])
        .stdin(Stdio::null());
    match tokio::process::Command::from(cmd).output().await {
        Err(e) => (false, format!("mariadb-check: {e}")),
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            let tables = text
                .lines()
                .filter(|l| l.trim_end().ends_with("OK"))
                .count();
            // "db.table   OK", or "db.table" then "error    : Corrupt".
            let mut bad = Vec::new();
            let mut table = "";
            for l in text.lines() {
                if l.starts_with("error") || l.starts_with("Error") {
                    bad.push(format!("{table} {}", l.trim()));
                } else if !l.starts_with(' ') && !l.contains(" : ") {
                    table = l.split_whitespace().next().unwrap_or("");
                }
            }
            if out.status.success() && bad.is_empty() {
                (true, format!("mariadb-check: {tables} tables OK"))
            } else {
                (
                    false,
                    format!(
                        "mariadb-check {}: {}{}",
                        tool::describe(out.status),
                        tail(&bad.join("\n"), 10),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                )
            }
        }
    }
}
