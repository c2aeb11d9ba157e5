//! Running native tools (pg_dump, pg_restore, psql, mariadb-dump, mariabackup, ...): a
//! missing binary is named with a hint, and a failure carries the tool's exit status and the
//! tail of its stderr.

use std::io::Read;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

/// How much of a tool's stderr is kept for the record.
pub const STDERR_TAIL: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("cannot run {program}: {source}{}", hint(.program, .source))]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{tool} {status}{}", tail(.stderr))]
    Failed {
        tool: String,
        status: String,
        stderr: String,
    },
    #[error("{tool}: {source}")]
    Io {
        tool: String,
        source: std::io::Error,
    },
}

/// What to install when a tool is missing: its package, by the tool's name.
fn hint(program: &str, e: &std::io::Error) -> &'static str {
    if e.kind() != std::io::ErrorKind::NotFound {
        return "";
    }
    let name = program.rsplit('/').next().unwrap_or(program);
    if name.starts_with("mariabackup") || name.starts_with("mbstream") {
        "; is mariadb-backup installed? set bin-dir for the instance in the agent config"
    } else if name.starts_with("maria") || name.starts_with("mysql") {
        "; is the MariaDB client installed? set bin-dir for the instance in the agent config"
    } else {
        "; is the PostgreSQL client installed? set bin-dir for the instance in the agent config"
    }
}

/// Run `cmd` to the end, within `limit`, and return its stdout (trailing whitespace
/// trimmed). A timeout (the process is killed), a missing program or a non-zero exit is an
/// error naming `tool`.
pub async fn stdout_within(
    mut cmd: std::process::Command,
    tool: &str,
    limit: Duration,
) -> Result<String, ToolError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(Stdio::null());
    let out = tokio::time::timeout(
        limit,
        tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| ToolError::Failed {
        tool: tool.into(),
        status: format!("timed out after {}s", limit.as_secs()),
        stderr: String::new(),
    })?
    .map_err(|source| ToolError::Spawn { program, source })?;
    if !out.status.success() {
        return Err(ToolError::Failed {
            tool: tool.into(),
            status: describe(out.status),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
}

fn tail(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", stderr.trim())
    }
}

/// "exited with status 1", "was killed by signal 9".
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "ended abnormally".into(),
    }
}

/// The last `STDERR_TAIL` bytes a reader produces (lossily decoded).
pub fn read_tail(mut r: impl Read) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * STDERR_TAIL {
            kept.drain(..kept.len() - STDERR_TAIL);
        }
    }
    if kept.len() > STDERR_TAIL {
        kept.drain(..kept.len() - STDERR_TAIL);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// The program's file name, for messages.
pub fn name_of(program: &Path) -> String {
    program
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| program.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end() {
        let text = format!("{}THE END", "x".repeat(20_000));
        let t = read_tail(text.as_bytes());
        assert_eq!(t.len(), STDERR_TAIL);
        assert!(t.ends_with("THE END"));
        let e = ToolError::Spawn {
            program: "pg_dump".into(),
            source: std::io::ErrorKind::NotFound.into(),
        };
        assert!(e.to_string().contains("PostgreSQL client"), "{e}");
        let e = ToolError::Spawn {
            program: "/usr/bin/mariabackup".into(),
            source: std::io::ErrorKind::NotFound.into(),
        };
        assert!(e.to_string().contains("mariadb-backup installed"), "{e}");
        let e = ToolError::Spawn {
            program: "mariadb-dump".into(),
            source: std::io::ErrorKind::NotFound.into(),
        };
        assert!(e.to_string().contains("MariaDB client"), "{e}");
    }
}
