//! The one place where controller errors become gRPC status codes. Messages are written for
//! the operator who will read them in the CLI.

use tonic::{Code, Status};

use crate::catalog::CatalogError;
use crate::store::StoreError;
use crate::store::verified::ReadError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// Stored bytes are missing or do not match their id.
    #[error("{0}")]
    DataLoss(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Store(s) => ApiError::Store(s),
            other => ApiError::DataLoss(other.to_string()),
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let code = match &e {
            ApiError::Unauthenticated(_) => Code::Unauthenticated,
            ApiError::PermissionDenied(_) => Code::PermissionDenied,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::InvalidArgument(_) => Code::InvalidArgument,
            ApiError::FailedPrecondition(_) => Code::FailedPrecondition,
            ApiError::AlreadyExists(_) => Code::AlreadyExists,
            ApiError::DataLoss(_) => Code::DataLoss,
            // Storage and catalog trouble is the controller's, and may pass: retryable.
            ApiError::Catalog(_) | ApiError::Store(_) => {
                tracing::error!(error = %e, "internal error");
                Code::Unavailable
            }
        };
        Status::new(code, e.to_string())
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
