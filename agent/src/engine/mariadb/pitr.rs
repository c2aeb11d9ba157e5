//! Point-in-time restore of a MariaDB instance into a new data directory:
//!
//! 1. download the physical backup's xbstream, checked chunk by chunk, into `mbstream -x`;
//! 2. `mariabackup --prepare` the copy (never the stored backup, which stays as it was);
//! 3. start `mariadbd` on a private socket: no networking, binary logging off (the replay
//!    must not write binlogs of its own), grant tables skipped (the restoring session needs
//!    no password; `FLUSH PRIVILEGES` turns them back on for any other session), event
//!    scheduler and replication off;
//! 4. fetch the archived binlogs the controller named and replay them in **one** session:
//!    `mariadb-binlog --start-position=POS --stop-datetime=T f1 f2 ... | mariadb`, starting
//!    exactly at the backup's recorded position. One session, because a transaction's
//!    temporary tables and session settings may span files;
//! 5. set `gtid_slave_pos` to the last replayed GTID of each domain, so the restored server
//!    can follow the original with `MASTER_USE_GTID = slave_pos`;
//! 6. shut down, or with --start, start again for use (socket only, unless a port is given).
//!
//! The server is `server.rs`'s, the replay (steps 4 and 5) `replay.rs`'s; a drill runs both
//! the same way in its sandbox.
//!
//! A failure removes the data directory this job created: nothing half-restored is left
//! looking like a good copy.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use tidemark_core::ids::BackupId;
use tidemark_core::text::bytes as human_bytes;
use tidemark_core::timefmt::utc;
use tidemark_proto::{BinlogReplay, PhysicalRestore};

use super::Maria;
use super::physical::PART;
use super::replay::{Replayed, fetch_binlogs, replay_binlogs};
use super::server::{ServerMode, local_client, mariadbd, start_server, stop_server};
use crate::config::InstanceConfig;
use crate::download::{Feed, run_fed};
use crate::engine::common::{prepare_dir, tail};
use crate::error::AgentError;
use crate::job::{JobContext, JobResult};
use crate::osuser;
use crate::tool;

pub async fn run(ctx: &JobContext, inst: &InstanceConfig, r: &PhysicalRestore) -> JobResult {
    let datadir = PathBuf::from(&r.pgdata);
    let ids = osuser::target(&inst.os_user)?;
    let mut created = Vec::new();
    prepare_dir(&datadir, ids, &mut created)?;
    match restore(ctx, inst, r, &datadir, ids).await {
        Ok(msg) => Ok(msg),
        Err(f) => {
            stop_server(&Maria::new(inst.clone()), &datadir).await;
            let mut removed = String::new();
            for d in created.iter().rev() {
                if std::fs::remove_dir_all(d).is_ok() {
                    removed.push_str(&format!("; removed {}", d.display()));
                }
            }
            Err(f.reworded(|m| format!("{m}{removed}")))
        }
    }
}

async fn restore(
    ctx: &JobContext,
    inst: &InstanceConfig,
    r: &PhysicalRestore,
    datadir: &Path,
    ids: Option<(u32, u32)>,
) -> JobResult {
    let db = Maria::new(inst.clone());
    let backup = BackupId(r.backup_id);
    let started = Instant::now();
    // A logical dump is loaded into a new, empty server; a physical backup is unpacked
    // and prepared.
    let logical = r.parts.iter().any(|p| p == super::logical::DUMP_PART);
    let mut bytes = 0;
    if logical {
        initialize(&db, datadir, &inst.os_user).await?;
    } else {
        bytes = unpack(ctx, &db, backup, datadir, ids).await?;
        prepare(&db, datadir, ids).await?;
    }
    let replay = r.binlog.clone().unwrap_or_default();
    let program = mariadbd(&db);
    // A prepared physical backup with nothing to replay is done: no server to run.
    let replayed = if replay.files.is_empty() && !logical {
        Replayed::default()
    } else {
        let mut server =
            start_server(&db, &program, datadir, &inst.os_user, ServerMode::Replay).await?;
        if logical {
            bytes = load_dump(ctx, &db, backup, super::logical::DUMP_PART, &server.socket).await?;
        }
        let replayed = if replay.files.is_empty() {
            Replayed::default()
        } else {
            let staging = tempfile::Builder::new()
                .prefix("tidemark-binlogs.")
                .tempdir_in(&ctx.spool_dir)
                .map_err(|e| {
                    AgentError::permanent(format!(
                        "cannot stage binlogs in {}: {e}",
                        ctx.spool_dir.display()
                    ))
                })?;
            let paths =
                fetch_binlogs(ctx, &r.source_instance, &replay.files, staging.path()).await?;
            replay_binlogs(&db, &server.socket, &replay, &paths).await?
        };
        // The accounts last: they replace the new server's root with the original's, after
        // which this job could no longer log in.
        if logical && r.parts.iter().any(|p| p == super::logical::USERS_PART) {
            bytes +=
                load_dump(ctx, &db, backup, super::logical::USERS_PART, &server.socket).await?;
        }
        server.shut_down().await?;
        replayed
    };
    tracing::info!(%backup, bytes, elapsed = ?started.elapsed(), logical, "backup restored");
    let reached = describe(&replay, &replayed);
    if r.start {
        let mode = ServerMode::Serve { port: r.port };
        let s = start_server(&db, &program, datadir, &inst.os_user, mode).await?;
        Ok(format!(
            "restored backup {backup} ({}) into {}; {reached}. The server is running on socket {}{}",
            human_bytes(bytes),
            datadir.display(),
            s.socket.display(),
            if r.port != 0 {
                format!(" and port {}", r.port)
            } else {
                String::new()
            }
        ))
    } else {
        Ok(format!(
            "restored backup {backup} ({}) into {}; {reached}. Start it with: mariadbd --datadir={}",
            human_bytes(bytes),
            datadir.display(),
            datadir.display()
        ))
    }
}

fn describe(replay: &BinlogReplay, done: &Replayed) -> String {
    if replay.files.is_empty() {
        return "no binlog to replay: recovered to the backup's own end".into();
    }
    format!(
        "replayed {} binlog file(s) from {}:{} ({} transactions{}{}){}",
        done.files,
        replay.files[0],
        replay.start_position,
        done.transactions,
        if done.last_event_at > 0 {
            format!(", the last at {}", utc(done.last_event_at))
        } else {
            String::new()
        },
        if done.gtids.is_empty() {
            String::new()
        } else {
            format!(", GTID position {}", done.gtid_position())
        },
        if replay.stop_before > 0 {
            format!(", stopping before {}", utc(replay.stop_before))
        } else {
            ", to the end of the archive".into()
        }
    )
}

/// A new, empty data directory for a dump to load into.
async fn initialize(db: &Maria, datadir: &Path, os_user: &str) -> Result<(), AgentError> {
    let mut cmd = std::process::Command::new(db.program("mariadb-install-db"));
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", datadir.display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
    if rustix::process::geteuid().is_root() {
        cmd.arg(format!("--user={os_user}"));
    }
    run_tool(cmd, "mariadb-install-db").await
}

/// A temporary account that loads the accounts part: the part replaces root (with no
/// privileges until its own GRANT comes), so a session logged in as root would lose the
/// right to run the rest of it.
const LOADER: &str = "tidemark_restore";

/// Feed a stored dump part (every database of the instance, or the accounts) to the new
/// server in one session.
async fn load_dump(
    ctx: &JobContext,
    db: &Maria,
    backup: BackupId,
    part: &str,
    socket: &Path,
) -> Result<u64, AgentError> {
    let accounts = part == super::logical::USERS_PART;
    let mut cmd = local_client(db, "mariadb", socket);
    if accounts {
        // Account statements need the grant tables, which the server skipped at start.
        let mut setup = local_client(db, "mariadb", socket);
        setup.arg("--execute").arg(format!(
            "FLUSH PRIVILEGES; CREATE OR REPLACE USER {LOADER}@localhost; GRANT ALL ON *.* TO {LOADER}@localhost WITH GRANT OPTION; GRANT PROXY ON ''@'%' TO {LOADER}@localhost WITH GRANT OPTION"
        ));
        run_tool(setup, "creating the account that loads the accounts").await?;
        cmd.arg(format!("--user={LOADER}"));
    }
    cmd.args(["--binary-mode", "--batch"]);
    let drop_loader = format!("\nDROP USER {LOADER}@localhost;\n");
    let feed = Feed {
        backup,
        part,
        trailer: if accounts {
            drop_loader.as_bytes()
        } else {
            b""
        },
    };
    run_fed(ctx, cmd, Some(feed))
        .await
        .map_err(|f| f.reworded(|m| format!("loading part {part}: {m}")))
}

/// `mariabackup --prepare` the unpacked copy: apply its redo log so it is consistent.
pub async fn prepare(
    db: &Maria,
    datadir: &Path,
    ids: Option<(u32, u32)>,
) -> Result<(), AgentError> {
    let mut cmd = std::process::Command::new(db.program("mariabackup"));
    cmd.arg("--no-defaults")
        .arg("--prepare")
        .arg(format!("--target-dir={}", datadir.display()));
    osuser::run_as(&mut cmd, ids);
    run_tool(cmd, "mariabackup --prepare").await
}

/// Download the xbstream into `mbstream -x`; returns the bytes read.
pub async fn unpack(
    ctx: &JobContext,
    db: &Maria,
    backup: BackupId,
    datadir: &Path,
    ids: Option<(u32, u32)>,
) -> Result<u64, AgentError> {
    let mut cmd = std::process::Command::new(db.program("mbstream"));
    cmd.arg("-x").arg("-C").arg(datadir);
    osuser::run_as(&mut cmd, ids);
    let feed = Feed {
        backup,
        part: PART,
        trailer: b"",
    };
    run_fed(ctx, cmd, Some(feed)).await
}

async fn run_tool(cmd: std::process::Command, what: &str) -> Result<(), AgentError> {
    let out = tokio::process::Command::from(cmd)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| AgentError::permanent(format!("{what}: {e}")))?;
    if !out.status.success() {
        return Err(AgentError::permanent(format!(
            "{what} {}: {}",
            tool::describe(out.status),
            tail(&String::from_utf8_lossy(&out.stderr), 8)
        )));
    }
    Ok(())
}
