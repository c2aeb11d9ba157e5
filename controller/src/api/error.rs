//! The one place where controller errors become gRPC status codes.

use tonic::{Code, Status};

use crate::ops::OpsError;

impl From<OpsError> for Status {
    fn from(e: OpsError) -> Status {
        let code = match &e {
            OpsError::Unauthenticated(_) => Code::Unauthenticated,
            OpsError::PermissionDenied(_) => Code::PermissionDenied,
            OpsError::NotFound(_) => Code::NotFound,
            OpsError::InvalidArgument(_) => Code::InvalidArgument,
            OpsError::FailedPrecondition(_) => Code::FailedPrecondition,
            OpsError::AlreadyExists(_) => Code::AlreadyExists,
            OpsError::DataLoss(_) => Code::DataLoss,
            // Retryable, and worth waiting for longer than a failure.
            OpsError::Busy(_) => Code::ResourceExhausted,
            // The controller's own trouble, and the catalog's and storage's, may pass:
            // retryable.
            OpsError::Internal(_) | OpsError::Catalog(_) | OpsError::Store(_) => {
                tracing::error!(error = %e, "internal error");
                Code::Unavailable
            }
        };
        Status::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::ingest::IngestError;

    /// The agent retries UNAVAILABLE and gives up on INVALID_ARGUMENT: the controller's own
    /// failures must never read as the agent's mistake.
    #[test]
    fn internal_failures_are_retryable_and_bad_input_is_not() {
        let code = |e: OpsError| Status::from(e).code();
        assert_eq!(
            code(IngestError::Internal("sealing a pack: task panicked".into()).into()),
            Code::Unavailable
        );
        assert_eq!(code(OpsError::Internal("x".into())), Code::Unavailable);
        assert_eq!(code(OpsError::Busy("x".into())), Code::ResourceExhausted);
        assert!(OpsError::Busy("x".into()).transient());
        assert_eq!(
            code(IngestError::Rejected("chunk does not match its id".into()).into()),
            Code::InvalidArgument
        );
        assert_eq!(
            code(IngestError::NotOwned("never uploaded".into()).into()),
            Code::PermissionDenied
        );
        assert!(OpsError::Internal("x".into()).transient());
        assert!(!OpsError::InvalidArgument("x".into()).transient());
    }
}
