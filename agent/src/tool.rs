//! Running native tools (pg_dump, pg_restore, psql): a missing binary is named with a hint,
//! and a failure carries the tool's exit status and the tail of its stderr.

use std::io::Read;
use std::path::Path;
use std::process::ExitStatus;

/// How much of a tool's stderr is kept for the record.
pub const STDERR_TAIL: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("cannot run {program}: {source}{}", hint(.source))]
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

fn hint(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::NotFound {
        "; is the PostgreSQL client installed? set bin-dir for the instance in the agent config"
    } else {
        ""
    }
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
        assert!(e.to_string().contains("set bin-dir"), "{e}");
    }
}
