//! The agent's error: the message an operator reads (in a job's result, a log line, or
//! wal-push's stderr), and a [`Kind`] that says whether trying again may help.
//!
//! Layers below keep their own error enums (`ToolError`, `UploadError`, `DownloadError`);
//! each converts into [`AgentError`] explicitly, keeping its message and choosing its kind.
//! A gRPC status is judged in one place, [`Kind::of`]. A failure the agent only describes
//! is made with [`AgentError::permanent`] (or another kind's constructor) where it happens.

use crate::tool::ToolError;

/// Whether a failure may go away by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The controller or its storage may come back: wal-push, wal-fetch and the binlog
    /// fetch retry it for a while; the daemon reconnects.
    Transient,
    /// Trying again fails the same way: a tool failed, a stream is damaged, a directory is
    /// in the way.
    Permanent,
    /// The controller refused the agent (its identity, its rights, a precondition): a
    /// configuration an operator must fix. The daemon retries registration slowly.
    Refused,
}

impl Kind {
    /// The kind of a gRPC status code: the one place the agent judges one.
    pub fn of(code: tonic::Code) -> Kind {
        use tonic::Code::*;
        match code {
            Unavailable | DeadlineExceeded | Unknown | Internal | ResourceExhausted | Aborted
            | Cancelled => Kind::Transient,
            PermissionDenied | InvalidArgument | Unauthenticated | FailedPrecondition => {
                Kind::Refused
            }
            _ => Kind::Permanent,
        }
    }
}

/// A failure, as the operator will read it, and its kind.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct AgentError {
    kind: Kind,
    message: String,
}

impl AgentError {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(Kind::Permanent, message)
    }

    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(Kind::Transient, message)
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same failure, reworded (usually: what was being done, in front); its kind stays.
    pub fn reworded(self, f: impl FnOnce(&str) -> String) -> Self {
        Self {
            message: f(&self.message),
            kind: self.kind,
        }
    }
}

/// A status from the controller: its message, judged by its code.
impl From<tonic::Status> for AgentError {
    fn from(s: tonic::Status) -> Self {
        Self::new(Kind::of(s.code()), s.message())
    }
}

/// A native tool that could not run or failed: running it again would fail the same way.
impl From<ToolError> for AgentError {
    fn from(e: ToolError) -> Self {
        Self::permanent(e.to_string())
    }
}

/// A local file or pipe that could not be used.
impl From<std::io::Error> for AgentError {
    fn from(e: std::io::Error) -> Self {
        Self::permanent(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_have_one_kind_each() {
        use tonic::Code;
        for c in [Code::Unavailable, Code::Internal, Code::Cancelled] {
            assert_eq!(Kind::of(c), Kind::Transient, "{c:?}");
        }
        for c in [Code::PermissionDenied, Code::FailedPrecondition] {
            assert_eq!(Kind::of(c), Kind::Refused, "{c:?}");
        }
        for c in [Code::NotFound, Code::AlreadyExists, Code::DataLoss] {
            assert_eq!(Kind::of(c), Kind::Permanent, "{c:?}");
        }
        let e = AgentError::from(tonic::Status::unavailable("controller restarting"));
        assert_eq!(
            (e.kind(), e.to_string().as_str()),
            (Kind::Transient, "controller restarting")
        );
        let e = e.reworded(|m| format!("fetching x: {m}"));
        assert_eq!(
            (e.kind(), e.message()),
            (Kind::Transient, "fetching x: controller restarting")
        );
    }
}
