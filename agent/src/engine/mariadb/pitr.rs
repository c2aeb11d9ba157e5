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
//! A failure removes the data directory this job created: nothing half-restored is left
//! looking like a good copy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tidemark_core::ids::BackupId;
use tidemark_core::text::bytes as human_bytes;
use tidemark_core::timefmt::{days_from_civil, utc};
use tidemark_proto::{BinlogReplay, PhysicalRestore};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::Maria;
use super::physical::PART;
use crate::config::InstanceConfig;
use crate::download::{Feed, run_fed};
use crate::engine::common::{prepare_dir, tail};
use crate::error::AgentError;
use crate::job::{JobContext, JobResult};
use crate::osuser;
use crate::tool::{self, ToolError};

const SOCKET: &str = "mysqld.sock";
/// The restored server's pid file, in its data directory.
pub const PID: &str = "mysqld.pid";
const SERVER_LOG: &str = "tidemark-restore.err";

/// What a replay did.
#[derive(Debug, Default, Clone)]
pub struct Replayed {
    pub files: usize,
    pub transactions: u64,
    /// Unix seconds of the last replayed event; 0 when none was.
    pub last_event_at: i64,
    /// domain -> "domain-server-seq" of the last transaction replayed in it.
    pub gtids: BTreeMap<u64, String>,
}

impl Replayed {
    pub fn gtid_position(&self) -> String {
        self.gtids.values().cloned().collect::<Vec<_>>().join(",")
    }
}

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

/// Fetch archived binlogs of `instance` into `dir`; returns their paths in order.
pub async fn fetch_binlogs(
    ctx: &JobContext,
    instance: &str,
    files: &[String],
    dir: &Path,
) -> Result<Vec<PathBuf>, AgentError> {
    let mut paths = Vec::new();
    for name in files {
        let dest = dir.join(name);
        crate::engine::common::fetch_named(
            &ctx.client,
            instance,
            name,
            &dest,
            Duration::from_secs(30),
        )
        .await?;
        paths.push(dest);
    }
    Ok(paths)
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

#[derive(Clone, Copy)]
pub enum ServerMode {
    /// Private socket, no binlog, no grant checks for the replaying session.
    Replay,
    /// For use after the restore: grants in force; networking only with a port.
    Serve { port: u32 },
}

pub struct Server {
    pub socket: PathBuf,
    pub datadir: PathBuf,
}

/// mariadbd from the instance's bin-dir, else Debian's /usr/sbin, else the PATH.
pub fn mariadbd(db: &Maria) -> PathBuf {
    if db.cfg.bin_dir.is_some() {
        return db.program("mariadbd");
    }
    let sbin = PathBuf::from("/usr/sbin/mariadbd");
    if sbin.exists() {
        sbin
    } else {
        PathBuf::from("mariadbd")
    }
}

pub async fn start_server(
    db: &Maria,
    program: &Path,
    datadir: &Path,
    os_user: &str,
    mode: ServerMode,
) -> Result<Server, AgentError> {
    let socket = datadir.join(SOCKET);
    let mut cmd = std::process::Command::new(program);
    cmd.arg("--no-defaults")
        .arg(format!("--datadir={}", datadir.display()))
        .arg(format!("--socket={}", socket.display()))
        .arg(format!("--pid-file={}", datadir.join(PID).display()))
        .arg(format!(
            "--log-error={}",
            datadir.join(SERVER_LOG).display()
        ))
        .args([
            "--skip-log-bin",
            "--skip-slave-start",
            "--event-scheduler=OFF",
        ]);
    if rustix::process::geteuid().is_root() {
        cmd.arg(format!("--user={os_user}"));
    }
    match mode {
        ServerMode::Replay => {
            cmd.args(["--skip-networking", "--skip-grant-tables"]);
        }
        ServerMode::Serve { port: 0 } => {
            cmd.arg("--skip-networking");
        }
        ServerMode::Serve { port } => {
            cmd.arg(format!("--port={port}"));
        }
    }
    // Detached: with --start the server outlives this job (and the agent).
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = tokio::process::Command::from(cmd)
        .spawn()
        .map_err(|source| ToolError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
    let server = Server {
        socket,
        datadir: datadir.to_path_buf(),
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(AgentError::permanent(format!(
                "mariadbd {} while starting: {}",
                tool::describe(status),
                server.log_tail(12)
            )));
        }
        if ping(db, &server.socket).await {
            break;
        }
        if Instant::now() > deadline {
            return Err(AgentError::permanent(format!(
                "mariadbd did not accept connections within 300 s: {}",
                server.log_tail(12)
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Reap it when it exits, or a stopped server stays a zombie that still "runs" for
    // anyone checking its pid. If the agent goes first, init adopts and reaps it.
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    Ok(server)
}

/// A client command on the restored server's socket (root: no password while grant tables
/// are skipped; the source's root afterwards).
pub fn local_client(db: &Maria, tool: &str, socket: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(db.program(tool));
    c.env_remove("MYSQL_PWD")
        .arg("--no-defaults")
        .arg(format!("--socket={}", socket.display()))
        .arg("--user=root");
    c
}

async fn ping(db: &Maria, socket: &Path) -> bool {
    let mut c = local_client(db, "mariadb", socket);
    c.args(["--batch", "--execute", "SELECT 1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    tokio::process::Command::from(c)
        .status()
        .await
        .map(|s| s.success())
        .unwrap_or(false)
}

impl Server {
    pub fn log_tail(&self, n: usize) -> String {
        tail(
            &std::fs::read_to_string(self.datadir.join(SERVER_LOG)).unwrap_or_default(),
            n,
        )
    }

    /// A clean shutdown by SIGTERM, which needs no login (the restored accounts may not
    /// let this job in any more).
    pub async fn shut_down(&mut self) -> Result<(), AgentError> {
        let pid = std::fs::read_to_string(self.datadir.join(PID))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .and_then(rustix::process::Pid::from_raw)
            .ok_or_else(|| {
                AgentError::permanent(format!("no pid file in {}", self.datadir.display()))
            })?;
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)
            .map_err(|e| AgentError::permanent(format!("stopping mariadbd (pid {pid:?}): {e}")))?;
        wait_gone(&self.datadir).await
    }
}

/// Wait until the server whose pid file is in `datadir` has exited.
async fn wait_gone(datadir: &Path) -> Result<(), AgentError> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while datadir.join(PID).exists() {
        if Instant::now() > deadline {
            return Err(AgentError::permanent(
                "mariadbd did not stop within 120 s of shutdown",
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Stop a server this job may have left running (after a failure): kill by its pid file.
pub async fn stop_server(_db: &Maria, datadir: &Path) {
    let Ok(pid) = std::fs::read_to_string(datadir.join(PID)) else {
        return;
    };
    if let Some(pid) = pid
        .trim()
        .parse()
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Replay `files` from `replay.start_position` in one `mariadb` session, following the
/// GTIDs and event times that go by.
pub async fn replay_binlogs(
    db: &Maria,
    socket: &Path,
    replay: &BinlogReplay,
    files: &[PathBuf],
) -> Result<Replayed, AgentError> {
    let decoder = db.program("mariadb-binlog");
    let mut dec = std::process::Command::new(&decoder);
    // Binlog times are UTC here, and so is --stop-datetime.
    dec.env("TZ", "UTC")
        .arg("--no-defaults")
        .arg(format!("--start-position={}", replay.start_position));
    if replay.stop_before > 0 {
        dec.arg(format!(
            "--stop-datetime={}",
            utc(replay.stop_before).trim_end_matches('Z')
        ));
    }
    dec.args(files)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut dec = tokio::process::Command::from(dec)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ToolError::Spawn {
            program: decoder.display().to_string(),
            source,
        })?;
    let mut client = local_client(db, "mariadb", socket);
    client
        .args(["--binary-mode", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut client = tokio::process::Command::from(client)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| AgentError::permanent(format!("starting mariadb for the replay: {e}")))?;
    let decoded = dec.stdout.take().expect("piped");
    let mut dec_err = dec.stderr.take().expect("piped");
    let mut sql = client.stdin.take().expect("piped");
    let mut client_err = client.stderr.take().expect("piped");
    let mut seen = Replayed {
        files: files.len(),
        ..Default::default()
    };
    for g in replay
        .gtid
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
    {
        if let Some(domain) = g.split('-').next().and_then(|d| d.parse().ok()) {
            seen.gtids.insert(domain, g.to_string());
        }
    }
    let pump = async {
        // Account statements in the binlog need the grant tables loaded.
        sql.write_all(b"FLUSH PRIVILEGES;\n").await?;
        let mut lines = BufReader::new(decoded);
        let mut line = Vec::new();
        loop {
            line.clear();
            if lines.read_until(b'\n', &mut line).await? == 0 {
                break;
            }
            if line.first() == Some(&b'#') {
                follow(&String::from_utf8_lossy(&line), &mut seen);
            }
            sql.write_all(&line).await?;
        }
        let position = seen.gtid_position();
        if !position.is_empty() {
            sql.write_all(format!("\nSET GLOBAL gtid_slave_pos = '{position}';\n").as_bytes())
                .await?;
        }
        sql.shutdown().await?;
        drop(sql);
        Ok::<(), std::io::Error>(())
    };
    let (mut e1, mut e2) = (String::new(), String::new());
    let (pumped, _, _) = tokio::join!(
        pump,
        dec_err.read_to_string(&mut e1),
        client_err.read_to_string(&mut e2)
    );
    let dec_status = dec.wait().await?;
    let client_status = client.wait().await?;
    if !dec_status.success() {
        return Err(AgentError::permanent(format!(
            "mariadb-binlog {}: {}",
            tool::describe(dec_status),
            e1.trim()
        )));
    }
    if !client_status.success() {
        return Err(AgentError::permanent(format!(
            "replaying the binlogs failed: mariadb {}: {}",
            tool::describe(client_status),
            e2.trim()
        )));
    }
    pumped.map_err(|e| AgentError::permanent(format!("feeding the replay: {e}")))?;
    Ok(seen)
}

/// Take the event time and GTID from one of mariadb-binlog's comment lines:
/// `#261126  4:42:16 server id 1  end_log_pos 427 CRC32 0xac93fb79 <TAB>GTID 0-1-5 trans`.
fn follow(line: &str, seen: &mut Replayed) {
    let Some(rest) = line.strip_prefix('#') else {
        return;
    };
    if !rest.contains(" server id ") {
        return;
    }
    if let Some(t) = event_time(rest) {
        seen.last_event_at = t;
    }
    if let Some(g) = rest.split("GTID ").nth(1) {
        let gtid = g.split_whitespace().next().unwrap_or("");
        let mut parts = gtid.split('-');
        if let (Some(Ok(domain)), Some(_), Some(_)) = (
            parts.next().map(str::parse::<u64>),
            parts.next(),
            parts.next(),
        ) {
            seen.gtids.insert(domain, gtid.to_string());
            seen.transactions += 1;
        }
    }
}

/// `261126  4:42:16 server id ...` -> unix seconds (the decoder ran with TZ=UTC).
fn event_time(s: &str) -> Option<i64> {
    let date = s.get(0..6)?;
    let (yy, mm, dd): (i64, u32, u32) = (
        date.get(0..2)?.parse().ok()?,
        date.get(2..4)?.parse().ok()?,
        date.get(4..6)?.parse().ok()?,
    );
    let clock = s.get(6..)?.split_whitespace().next()?;
    let mut hms = clock.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    Some(days_from_civil(2000 + yy, mm, dd) * 86400 + h * 3600 + m * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_comments_give_event_times_and_gtids() {
        let mut seen = Replayed::default();
        follow(
            "#261126  4:42:16 server id 1  end_log_pos 427 CRC32 0xac93fb79 \tGTID 0-1-5 trans\n",
            &mut seen,
        );
        follow(
            "#261126 14:02:09 server id 1  end_log_pos 500 CRC32 0x1 \tGTID 2-1-9 trans\n",
            &mut seen,
        );
        follow(
            "#261126 14:02:10 server id 1  end_log_pos 600 CRC32 0x1 \tXid = 12\n",
            &mut seen,
        );
        follow("# at 427\n", &mut seen);
        assert_eq!(seen.transactions, 2);
        assert_eq!(seen.gtid_position(), "0-1-5,2-1-9");
        assert_eq!(utc(seen.last_event_at), "2026-11-26 14:02:10Z");
    }
}
