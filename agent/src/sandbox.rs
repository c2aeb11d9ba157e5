//! A sandbox host's drill directory. Everything in it is removed before and after every
//! drill, so it must be the agent's own: the agent marks it when it creates it and refuses
//! to empty a directory without the mark (a mistyped path must never wipe a real cluster).

use std::path::{Path, PathBuf};

use tidemark_proto::DrillReport;

use crate::config::SandboxConfig;
use crate::error::AgentError;
use crate::job::{JobContext, JobResult};
use crate::osuser;

const MARK: &str = ".tidemark-sandbox";

/// Where a drill puts things inside the sandbox directory: the restored data directory,
/// the restored server's socket, a PostgreSQL tablespace.
pub fn data_dir(dir: &Path) -> PathBuf {
    dir.join("data")
}
pub fn socket_dir(dir: &Path) -> PathBuf {
    dir.join("run")
}
pub fn tablespace_dir(dir: &Path, oid: &str) -> PathBuf {
    dir.join("tblspc").join(oid)
}

/// Make the directory (marked, owned by the server's user, mode 0700), or check that an
/// existing one is ours.
pub fn prepare(cfg: &SandboxConfig) -> Result<(), AgentError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = &cfg.dir;
    let ids = osuser::target(&cfg.os_user)?;
    match std::fs::read_dir(dir) {
        Ok(mut rd) => {
            if !dir.join(MARK).exists() && rd.next().is_some() {
                return Err(AgentError::permanent(format!(
                    "sandbox dir {} holds files tidemark did not put there, so it will not empty it; point [sandbox] dir at a new or empty directory",
                    dir.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| {
                AgentError::permanent(format!("cannot create sandbox dir {}: {e}", dir.display()))
            })?;
        }
        Err(e) => {
            return Err(AgentError::permanent(format!(
                "cannot read sandbox dir {}: {e}",
                dir.display()
            )));
        }
    }
    std::fs::write(
        dir.join(MARK),
        "tidemark drill sandbox: emptied before and after every drill\n",
    )
    .and_then(|_| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
    .and_then(|_| osuser::chown(dir, ids))
    .map_err(|e| AgentError::permanent(format!("cannot set up sandbox dir {}: {e}", dir.display())))
}

/// Remove everything in the sandbox but the mark. A server a drill left running must be
/// stopped first: a drill stops its own engine's, and the daemon, after a crash or an
/// interrupted drill, every engine's ([`crate::engine::wipe_sandbox`]).
pub fn remove_all(cfg: &SandboxConfig) -> Result<(), AgentError> {
    prepare(cfg)?;
    let dir = &cfg.dir;
    let entries = std::fs::read_dir(dir).map_err(|e| {
        AgentError::permanent(format!("cannot read sandbox dir {}: {e}", dir.display()))
    })?;
    for e in entries.flatten() {
        if e.file_name() == MARK {
            continue;
        }
        let p = e.path();
        let r = if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        r.map_err(|e| {
            AgentError::permanent(format!(
                "cannot remove {} from the sandbox: {e}",
                p.display()
            ))
        })?;
    }
    Ok(())
}

/// After a drill's procedure, whatever it reached: stop its server (`stop_server`, the
/// drill's engine's), empty the sandbox, and report the evidence (retrying through a
/// blip). The job succeeds when the procedure ran to the end.
pub async fn finish_drill(
    ctx: &JobContext,
    sb: &SandboxConfig,
    stop_server: impl std::future::Future<Output = ()>,
    mut report: DrillReport,
) -> JobResult {
    // Never stop a server in a directory that is not the sandbox (a mistyped dir).
    let emptied = match prepare(sb) {
        Ok(()) => {
            stop_server.await;
            remove_all(sb)
        }
        Err(e) => Err(e),
    };
    if let Err(e) = emptied {
        tracing::error!(error = %e, "could not empty the sandbox after the drill");
        if report.error.is_empty() {
            report.error = format!("the sandbox could not be emptied afterwards: {e}");
        }
    }
    let mut sent = Ok(());
    for attempt in 0..5 {
        sent = ctx
            .client
            .clone()
            .report_drill(report.clone())
            .await
            .map(|_| ());
        if sent.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1 << attempt)).await;
    }
    if let Err(s) = sent {
        return Err(AgentError::from(s)
            .reworded(|e| format!("the drill's evidence could not be reported: {e}")));
    }
    if report.error.is_empty() {
        Ok(format!(
            "drill {}: restored {} in {:.1}s, recovered to {} in {:.1}s; sandbox emptied",
            report.drill_id,
            tidemark_core::text::bytes(report.bytes_restored),
            report.restore_ms as f64 / 1000.0,
            report.replay_lsn,
            report.replay_ms as f64 / 1000.0
        ))
    } else {
        Err(AgentError::permanent(format!(
            "drill {}: {}",
            report.drill_id, report.error
        )))
    }
}

/// Kill the process named in a pid file, if any (the files are about to go).
pub async fn kill_by_pid_file(path: &Path) {
    let pid = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
    if let Some(pid) = pid.and_then(rustix::process::Pid::from_raw) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path) -> SandboxConfig {
        SandboxConfig {
            dir: dir.to_path_buf(),
            os_user: "root".into(),
            bin_dirs: Vec::new(),
            mariadb_bin_dir: None,
        }
    }

    #[tokio::test]
    async fn only_a_marked_directory_is_emptied() {
        let tmp = tempfile::tempdir().unwrap();
        // A directory with someone else's files is never emptied.
        let theirs = tmp.path().join("theirs");
        std::fs::create_dir_all(theirs.join("base")).unwrap();
        std::fs::write(theirs.join("PG_VERSION"), "15\n").unwrap();
        let e = crate::engine::wipe_sandbox(&cfg(&theirs))
            .await
            .unwrap_err();
        assert!(e.message().contains("did not put there"), "{e}");
        assert!(theirs.join("PG_VERSION").exists());
        // A new one is made and marked; what a drill leaves in it goes.
        let ours = tmp.path().join("ours");
        crate::engine::wipe_sandbox(&cfg(&ours)).await.unwrap();
        std::fs::create_dir_all(data_dir(&ours).join("base")).unwrap();
        std::fs::write(ours.join("stray"), "x").unwrap();
        crate::engine::wipe_sandbox(&cfg(&ours)).await.unwrap();
        let left: Vec<_> = std::fs::read_dir(&ours)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from(MARK)]);
    }

    /// A mistyped sandbox dir holding a real server: the server is left running, not only
    /// its files. A MariaDB sandbox server is stopped by the pid in data/mysqld.pid, so a
    /// process of our own stands in for it.
    #[tokio::test]
    async fn a_server_in_a_directory_that_is_not_the_sandbox_is_never_stopped() {
        let tmp = tempfile::tempdir().unwrap();
        let theirs = tmp.path().join("var-lib-mysql");
        std::fs::create_dir_all(data_dir(&theirs)).unwrap();
        let mut server = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        std::fs::write(
            data_dir(&theirs).join("mysqld.pid"),
            format!("{}\n", server.id()),
        )
        .unwrap();
        let e = crate::engine::wipe_sandbox(&cfg(&theirs))
            .await
            .unwrap_err();
        assert!(e.message().contains("did not put there"), "{e}");
        assert!(
            server.try_wait().unwrap().is_none(),
            "the server in a directory that is not the sandbox was stopped"
        );
        server.kill().unwrap();
        server.wait().unwrap();
    }
}
