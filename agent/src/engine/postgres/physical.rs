//! Restoring a base backup into a new data directory, set up to recover to a target from
//! the WAL archive (`recovery.signal` and settings in postgresql.auto.conf; PostgreSQL 12
//! and later have no recovery.conf).
//!
//! Order matters: unpack every tablespace, check the files against the backup's manifest
//! with pg_verifybackup, and only then write the recovery settings (which the manifest does
//! not know). `backup_label` is kept: without it, recovery would start from the wrong
//! checkpoint and the restore would be silently corrupt. A failure before the server starts
//! removes everything the job created.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tidemark_core::ids::BackupId;
use tidemark_core::text::bytes as human_bytes;
use tidemark_proto::PhysicalRestore;

use super::Pg;
use super::manifest::{BASE, MANIFEST};
use crate::config::InstanceConfig;
use crate::download::{Feed, download_part, run_fed};
use crate::engine::common::{prepare_dir, tail};
use crate::error::AgentError;
use crate::job::{JobContext, JobResult};
use crate::osuser;
use crate::tool::{self, ToolError};

/// Settings a restored cluster must not inherit from its source's configuration: an old
/// recovery target or standby setup would send recovery somewhere else.
const STALE: &[&str] = &[
    "restore_command",
    "recovery_target",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_xid",
    "recovery_target_lsn",
    "recovery_target_inclusive",
    "recovery_target_timeline",
    "recovery_target_action",
    "recovery_end_command",
    "archive_cleanup_command",
    "primary_conninfo",
    "primary_slot_name",
];

/// Where the restore puts things, and whether it made them (and so may remove them).
pub(super) struct Layout {
    pub pgdata: PathBuf,
    /// OID -> directory.
    pub tablespaces: BTreeMap<String, PathBuf>,
    pub created: Vec<PathBuf>,
}

/// `'text'` as a postgresql.conf string.
fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

pub async fn run(
    ctx: &JobContext,
    config: &Path,
    inst: &InstanceConfig,
    r: &PhysicalRestore,
) -> JobResult {
    let ids = osuser::target(&inst.os_user)?;
    let backup = BackupId(r.backup_id);
    let mut layout = Layout {
        pgdata: PathBuf::from(&r.pgdata),
        tablespaces: r
            .tablespaces
            .iter()
            .map(|(o, d)| (o.clone(), PathBuf::from(d)))
            .collect(),
        created: Vec::new(),
    };
    let prepared = (|| {
        prepare_dir(&layout.pgdata, ids, &mut layout.created)?;
        for dir in layout.tablespaces.values() {
            prepare_dir(dir, ids, &mut layout.created)?;
        }
        Ok::<(), AgentError>(())
    })();
    let result = match prepared {
        Ok(()) => restore_files(ctx, config, inst, r, backup, &layout, ids).await,
        Err(e) => Err(e),
    };
    let bytes = match result {
        Ok(b) => b,
        Err(f) => {
            let mut msg = format!(
                "restore of backup {backup} into {} failed: {}",
                r.pgdata,
                f.message()
            );
            for dir in layout.created.iter().rev() {
                if std::fs::remove_dir_all(dir).is_ok() {
                    msg.push_str(&format!("; removed {}", dir.display()));
                }
            }
            return Err(AgentError::new(f.kind(), msg));
        }
    };
    let target = describe_target(r);
    if !r.start {
        return Ok(format!(
            "restored backup {backup} of {} into {} ({}), set to recover to {target}; start it with: pg_ctl -D {} start",
            r.source_instance,
            r.pgdata,
            human_bytes(bytes),
            r.pgdata
        ));
    }
    let reached = start_and_wait(inst, r, ids).await?;
    Ok(format!(
        "restored backup {backup} of {} into {} ({}) and recovered to {target}: {reached}",
        r.source_instance,
        r.pgdata,
        human_bytes(bytes)
    ))
}

fn describe_target(r: &PhysicalRestore) -> String {
    match r.target_kind.as_str() {
        "time" => format!("time {}", r.target),
        "lsn" => format!("LSN {}", r.target),
        "xid" => format!("transaction {}", r.target),
        "name" => format!("restore point {:?}", r.target),
        "immediate" => "the backup's consistent point".into(),
        _ => "the end of the archived WAL".into(),
    }
}

pub(super) async fn restore_files(
    ctx: &JobContext,
    config: &Path,
    inst: &InstanceConfig,
    r: &PhysicalRestore,
    backup: BackupId,
    layout: &Layout,
    ids: Option<(u32, u32)>,
) -> Result<u64, AgentError> {
    let mut bytes = 0;
    for part in &r.parts {
        let dir = if part == BASE {
            layout.pgdata.clone()
        } else if let Some(oid) = part.strip_prefix("tablespace:") {
            layout.tablespaces.get(oid).cloned().ok_or_else(|| {
                AgentError::permanent(format!("the job gives no directory for tablespace {oid}"))
            })?
        } else {
            continue;
        };
        bytes += untar_part(ctx, backup, part, &dir, ids).await?;
    }
    // The manifest goes beside the files, as pg_basebackup leaves it.
    let manifest = layout.pgdata.join(MANIFEST);
    let mut file = tokio::fs::File::create(&manifest).await?;
    bytes += download_part(
        &ctx.client,
        backup,
        MANIFEST,
        ctx.job_id,
        &mut file,
        &ctx.progress,
    )
    .await?;
    drop(file);
    osuser::chown(&manifest, ids)?;
    let remapped = link_tablespaces(layout, ids)?;
    if r.verify {
        verify(inst, layout, remapped).await?;
    }
    write_recovery_settings(r, config, layout, ids)?;
    Ok(bytes)
}

/// Stream a tar part into `tar -x` in `dir`, run as the server's user.
async fn untar_part(
    ctx: &JobContext,
    backup: BackupId,
    part: &str,
    dir: &Path,
    ids: Option<(u32, u32)>,
) -> Result<u64, AgentError> {
    let mut cmd = std::process::Command::new("tar");
    // 256 KiB records, read in full from the pipe: tar's default 10 KiB reads cost a
    // system call and a wake-up per 10 KiB of a multi-gigabyte stream.
    cmd.args([
        "-x",
        "--blocking-factor=512",
        "--read-full-records",
        "-f",
        "-",
        "-C",
    ])
    .arg(dir);
    osuser::run_as(&mut cmd, ids);
    let feed = Feed {
        backup,
        part,
        trailer: b"",
    };
    run_fed(ctx, cmd, Some(feed)).await
}

/// Point pg_tblspc/OID at each tablespace's new home, and rewrite tablespace_map to match
/// (PostgreSQL recreates the links from it at startup). Returns whether any moved.
fn link_tablespaces(layout: &Layout, ids: Option<(u32, u32)>) -> Result<bool, AgentError> {
    if layout.tablespaces.is_empty() {
        return Ok(false);
    }
    let map_path = layout.pgdata.join("tablespace_map");
    let old = std::fs::read_to_string(&map_path).unwrap_or_default();
    let mut new_map = String::new();
    for (oid, dir) in &layout.tablespaces {
        let link = layout.pgdata.join("pg_tblspc").join(oid);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(dir, &link).map_err(|e| {
            AgentError::permanent(format!(
                "cannot link {} to {}: {e}",
                link.display(),
                dir.display()
            ))
        })?;
        rustix::fs::chownat(
            rustix::fs::CWD,
            &link,
            ids.map(|i| rustix::fs::Uid::from_raw(i.0)),
            ids.map(|i| rustix::fs::Gid::from_raw(i.1)),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| AgentError::permanent(format!("cannot chown {}: {e}", link.display())))?;
        new_map.push_str(&format!("{oid} {}\n", dir.display()));
    }
    let moved = new_map != old;
    if moved {
        std::fs::write(&map_path, &new_map)
            .and_then(|_| osuser::chown(&map_path, ids))
            .map_err(|e| {
                AgentError::permanent(format!("cannot write {}: {e}", map_path.display()))
            })?;
    }
    Ok(moved)
}

/// pg_verifybackup: every file the manifest lists is present with its checksum. WAL is not
/// in the backup (it comes from the archive), so WAL parsing is skipped.
async fn verify(inst: &InstanceConfig, layout: &Layout, remapped: bool) -> Result<(), AgentError> {
    let pg = Pg::new(inst.clone());
    let mut cmd = pg.command("pg_verifybackup");
    cmd.arg("--no-parse-wal").arg("--quiet");
    if remapped {
        // Rewritten above for the new locations; the manifest has the original.
        cmd.args(["--ignore", "tablespace_map"]);
    }
    cmd.arg(&layout.pgdata).stdin(Stdio::null());
    let program = pg.program("pg_verifybackup").display().to_string();
    let out = tokio::process::Command::from(cmd)
        .output()
        .await
        .map_err(|source| ToolError::Spawn { program, source })?;
    if !out.status.success() {
        return Err(ToolError::Failed {
            tool: "pg_verifybackup".into(),
            status: tool::describe(out.status),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
        .into());
    }
    Ok(())
}

/// Comment out every line of the restored postgresql.conf and postgresql.auto.conf that sets
/// one of `keys` (or is one of these directives, for `include`), saying `by` did it.
/// Setting names are matched as PostgreSQL matches them, without regard to case.
pub(super) fn disable_settings(pgdata: &Path, keys: &[&str], by: &str) -> Result<(), AgentError> {
    for name in ["postgresql.conf", "postgresql.auto.conf"] {
        let path = pgdata.join(name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let cleaned: Vec<String> = text
            .lines()
            .map(|l| {
                // A name ends where its characters do: PostgreSQL reads `include'/x'` and
                // `name=value` with no space as well.
                let line = l.trim_start();
                let end = line
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
                    .unwrap_or(line.len());
                let key = &line[..end];
                if keys.iter().any(|k| k.eq_ignore_ascii_case(key)) {
                    format!("# {l}    # disabled by {by}")
                } else {
                    l.to_string()
                }
            })
            .collect();
        std::fs::write(&path, cleaned.join("\n") + "\n")
            .map_err(|e| AgentError::permanent(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}

/// Comment out stale recovery settings, then append ours to postgresql.auto.conf (which
/// PostgreSQL reads last), and create recovery.signal.
fn write_recovery_settings(
    r: &PhysicalRestore,
    config: &Path,
    layout: &Layout,
    ids: Option<(u32, u32)>,
) -> Result<(), AgentError> {
    let pgdata = &layout.pgdata;
    disable_settings(pgdata, STALE, "tidemark restore")?;
    let exe = std::env::current_exe()
        .map_err(|e| AgentError::permanent(format!("cannot find this agent's binary: {e}")))?;
    let restore_command = format!(
        "{} --config {} wal-fetch --instance {} %f %p",
        exe.display(),
        config.display(),
        r.source_instance
    );
    let mut lines = vec![
        String::new(),
        format!(
            "# Written by tidemark restore of backup {} of instance {}.",
            r.backup_id, r.source_instance
        ),
        format!("restore_command = {}", conf_quote(&restore_command)),
        "recovery_target_timeline = 'latest'".to_string(),
    ];
    match r.target_kind.as_str() {
        "time" => lines.push(format!("recovery_target_time = {}", conf_quote(&r.target))),
        "lsn" => lines.push(format!("recovery_target_lsn = {}", conf_quote(&r.target))),
        "xid" => lines.push(format!("recovery_target_xid = {}", conf_quote(&r.target))),
        "name" => lines.push(format!("recovery_target_name = {}", conf_quote(&r.target))),
        "immediate" => lines.push("recovery_target = 'immediate'".into()),
        _ => {}
    }
    if r.target_kind != "latest" {
        lines.push(format!(
            "recovery_target_action = {}",
            conf_quote(&r.action)
        ));
    }
    if !r.archive {
        lines.push("archive_mode = off".into());
    }
    if r.port != 0 {
        lines.push(format!("port = {}", r.port));
    }
    let auto = pgdata.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&auto).unwrap_or_default();
    text.push_str(&(lines.join("\n") + "\n"));
    let signal = pgdata.join("recovery.signal");
    let _ = std::fs::remove_file(pgdata.join("standby.signal"));
    std::fs::write(&auto, text)
        .and_then(|_| std::fs::write(&signal, ""))
        .and_then(|_| osuser::chown(&auto, ids))
        .and_then(|_| osuser::chown(&signal, ids))
        .map_err(|e| {
            AgentError::permanent(format!(
                "cannot write the recovery settings in {}: {e}",
                pgdata.display()
            ))
        })
}

/// Start the restored server and wait until recovery reaches its target: paused there, or
/// promoted. Returns where it stopped.
async fn start_and_wait(
    inst: &InstanceConfig,
    r: &PhysicalRestore,
    ids: Option<(u32, u32)>,
) -> Result<String, AgentError> {
    let pgdata = PathBuf::from(&r.pgdata);
    let left = |e: AgentError| {
        e.reworded(|e| format!("{e}; the files are left in {} for inspection", r.pgdata))
    };
    let server = Server::start(inst, &pgdata, ids).await.map_err(left)?;
    let at = server
        .wait_for_target(Duration::from_secs(24 * 3600))
        .await
        .map_err(left)?;
    let reached = format!(
        "replayed to LSN {}, last transaction committed {}",
        at.lsn,
        if at.last_commit == "-" {
            "before the backup"
        } else {
            &at.last_commit
        }
    );
    Ok(if at.paused {
        format!(
            "{reached}; the server is paused at the target (promote it with SELECT pg_wal_replay_resume())"
        )
    } else {
        format!("{reached}; the server is promoted and running")
    })
}

/// The restored server's log, in its data directory.
pub(super) const SERVER_LOG: &str = "tidemark-restore.log";

/// A restored server started with pg_ctl, logging to a file in its data directory.
pub(super) struct Server {
    pub pgdata: PathBuf,
    pub log: PathBuf,
    /// Connected through the socket directory and port in postmaster.pid.
    pub pg: Pg,
}

/// Where recovery stopped.
pub(super) struct Reached {
    /// Paused at the target (false: promoted).
    pub paused: bool,
    pub lsn: String,
    /// The last replayed transaction's commit time as PostgreSQL prints it, or "-".
    pub last_commit: String,
    /// The same in unix microseconds; 0 when none was replayed.
    pub last_commit_micros: i64,
}

impl Server {
    /// pg_ctl start -w, as the server's user.
    pub async fn start(
        inst: &InstanceConfig,
        pgdata: &Path,
        ids: Option<(u32, u32)>,
    ) -> Result<Server, AgentError> {
        let log = pgdata.join(SERVER_LOG);
        let pg = Pg::new(inst.clone());
        let mut cmd = std::process::Command::new(pg.program("pg_ctl"));
        cmd.arg("-D")
            .arg(pgdata)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "3600", "start"]);
        osuser::run_as(&mut cmd, ids);
        cmd.stdin(Stdio::null());
        let program = pg.program("pg_ctl").display().to_string();
        let out = tokio::process::Command::from(cmd)
            .output()
            .await
            .map_err(|source| ToolError::Spawn { program, source })?;
        let mut server = Server {
            pgdata: pgdata.to_path_buf(),
            log,
            pg,
        };
        if !out.status.success() {
            return Err(AgentError::permanent(format!(
                "the restored server did not start ({}). Log:\n{}",
                tool::describe(out.status),
                server.log_tail(8)
            )));
        }
        // postmaster.pid: line 4 is the port, line 5 the socket directory.
        let pid_file = std::fs::read_to_string(pgdata.join("postmaster.pid")).unwrap_or_default();
        let fields: Vec<&str> = pid_file.lines().collect();
        server.pg.cfg.port = fields
            .get(3)
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(5432);
        server.pg.cfg.host = fields
            .get(4)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "/var/run/postgresql".into());
        Ok(server)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log_text(), n)
    }

    /// Poll until recovery pauses at its target or the server is promoted.
    pub async fn wait_for_target(&self, limit: Duration) -> Result<Reached, AgentError> {
        let deadline = Instant::now() + limit;
        loop {
            let state = self
                .pg
                .query(
                    "postgres",
                    // No field may be empty: the output's trailing whitespace is trimmed.
                    "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE '-' END,
                       coalesce(pg_last_wal_replay_lsn()::text, '-'), coalesce(pg_last_xact_replay_timestamp()::text, '-'),
                       coalesce((extract(epoch FROM pg_last_xact_replay_timestamp()) * 1000000)::bigint, 0)",
                )
                .await;
            match state {
                Ok(s) => {
                    let f: Vec<&str> = s.split('\t').collect();
                    let [in_recovery, pause, lsn, ts, micros] = f.as_slice() else {
                        return Err(AgentError::permanent(format!(
                            "unexpected answer from the restored server while waiting for recovery: {s:?}"
                        )));
                    };
                    let reached = |paused| Reached {
                        paused,
                        lsn: lsn.to_string(),
                        last_commit: ts.to_string(),
                        last_commit_micros: micros.parse().unwrap_or(0),
                    };
                    if *in_recovery == "f" {
                        return Ok(reached(false));
                    }
                    if *pause == "paused" {
                        return Ok(reached(true));
                    }
                }
                Err(e) => {
                    if !self.pgdata.join("postmaster.pid").exists() {
                        return Err(AgentError::permanent(format!(
                            "the restored server stopped during recovery. Log:\n{}",
                            self.log_tail(8)
                        )));
                    }
                    tracing::debug!("restored server not answering yet: {e}");
                }
            }
            if Instant::now() > deadline {
                return Err(AgentError::permanent(format!(
                    "recovery did not reach its target within {}",
                    tidemark_core::duration::human(limit)
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
