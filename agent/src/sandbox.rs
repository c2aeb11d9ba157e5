//! A sandbox host's drill directory. Everything in it is removed before and after every
//! drill, so it must be the agent's own: the agent marks it when it creates it and refuses
//! to empty a directory without the mark (a mistyped path must never wipe a real cluster).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tidemark_proto::DrillReport;

use crate::config::SandboxConfig;
use crate::error::AgentError;
use crate::job::{JobContext, JobResult};
use crate::osuser;

const MARK: &str = ".tidemark-sandbox";
/// Where a MariaDB drill's server writes its pid (see engine::mariadb::pitr).
const MARIADB_PID: &str = "mysqld.pid";

/// Where a drill puts things inside the sandbox directory.
pub fn pgdata(dir: &Path) -> PathBuf {
    dir.join("data")
}
pub fn socket_dir(dir: &Path) -> PathBuf {
    dir.join("run")
}
pub fn tablespace_dir(dir: &Path, oid: &str) -> PathBuf {
    dir.join("tblspc").join(oid)
}

/// PostgreSQL major version -> its bin directory, from `pg_ctl --version` in each.
pub fn engines(cfg: &SandboxConfig) -> BTreeMap<u32, PathBuf> {
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

/// Stop a server left running in the sandbox, then remove everything but the mark.
pub async fn wipe(cfg: &SandboxConfig) -> Result<(), AgentError> {
    prepare(cfg)?;
    let dir = &cfg.dir;
    let data = pgdata(dir);
    if data.join("postmaster.pid").exists() {
        stop_server(cfg, &data).await;
    }
    kill_by_pid_file(&data.join(MARIADB_PID)).await;
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

/// After a drill's procedure, whatever it reached: empty the sandbox, and report the
/// evidence (retrying through a blip). The job succeeds when the procedure ran to the end.
pub async fn finish_drill(
    ctx: &JobContext,
    sb: &SandboxConfig,
    mut report: DrillReport,
) -> JobResult {
    if let Err(e) = wipe(sb).await {
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
async fn kill_by_pid_file(path: &Path) {
    let pid = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
    if let Some(pid) = pid.and_then(rustix::process::Pid::from_raw) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// `pg_ctl stop -m immediate` (the files are about to go); if that fails, kill the
/// postmaster, whose children exit when it dies.
pub async fn stop_server(cfg: &SandboxConfig, data: &Path) {
    let ids = osuser::target(&cfg.os_user).ok().flatten();
    for bin in engines(cfg).values() {
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
    kill_by_pid_file(&data.join("postmaster.pid")).await;
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
        let e = wipe(&cfg(&theirs)).await.unwrap_err();
        assert!(e.message().contains("did not put there"), "{e}");
        assert!(theirs.join("PG_VERSION").exists());
        // A new one is made and marked; what a drill leaves in it goes.
        let ours = tmp.path().join("ours");
        wipe(&cfg(&ours)).await.unwrap();
        std::fs::create_dir_all(pgdata(&ours).join("base")).unwrap();
        std::fs::write(ours.join("stray"), "x").unwrap();
        wipe(&cfg(&ours)).await.unwrap();
        let left: Vec<_> = std::fs::read_dir(&ours)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from(MARK)]);
    }
}
