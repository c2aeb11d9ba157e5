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
