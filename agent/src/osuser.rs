//! Acting as the database's OS user. PostgreSQL refuses to run as root, and a restored data
//! directory must belong to the user that runs the server, so an agent running as root
//! creates those files and starts that server as the configured `os-user`.

use std::os::unix::process::CommandExt;
use std::path::Path;

use crate::error::AgentError;

/// uid and gid of a local user, from /etc/passwd.
pub fn lookup(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&name))
            .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
    })
}

/// The user to act as: `Some(ids)` when the agent is root, `None` when it already is the
/// user that will own the files.
pub fn target(name: &str) -> Result<Option<(u32, u32)>, AgentError> {
    if !rustix::process::geteuid().is_root() {
        return Ok(None);
    }
    lookup(name).map(Some).ok_or_else(|| {
        AgentError::permanent(format!("os-user {name:?} does not exist on this host; set os-user for the instance in the agent config"))
    })
}

/// Run `cmd` as that user.
pub fn run_as(cmd: &mut std::process::Command, ids: Option<(u32, u32)>) {
    if let Some((uid, gid)) = ids {
        cmd.uid(uid).gid(gid);
    }
}

/// Give `path` to that user.
pub fn chown(path: &Path, ids: Option<(u32, u32)>) -> std::io::Result<()> {
    if let Some((uid, gid)) = ids {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    Ok(())
}
