//! The MariaDB server a restore or a drill runs on the restored files: `mariadbd` on a
//! private socket in the data directory, started for the replay (no networking, no binlog
//! of its own, grant tables skipped) or for use afterwards, and stopped by signal (the
//! restored accounts may not let the agent log in any more).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::Maria;
use crate::engine::common::tail;
use crate::error::AgentError;
use crate::tool::{self, ToolError};

const SOCKET: &str = "mysqld.sock";
/// The restored server's pid file, in its data directory.
pub const PID: &str = "mysqld.pid";
const SERVER_LOG: &str = "tidemark-restore.err";

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
