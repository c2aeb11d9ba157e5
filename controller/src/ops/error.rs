//! What can go wrong in an operation, by kind. The kind is what a caller acts on: the gRPC
//! layer maps each to one status code (`api::error`), and an agent retries only what is
//! worth retrying. Messages are written for the operator who will read them in the CLI.

use crate::catalog::CatalogError;
use crate::repo::RepoReadError;
use crate::repo::ingest::IngestError;
use crate::repo::publish::PublishError;
use crate::repo::verified::ReadError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    /// The request itself is wrong; sending it again cannot help.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// Stored bytes are missing or do not match their id.
    #[error("{0}")]
    DataLoss(String),
    /// The controller is receiving as much as it takes at once: try again shortly.
    #[error("{0}")]
    Busy(String),
    /// The controller's own trouble (a task that died, sealing that failed): nothing the
    /// caller did wrong, and it may pass.
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl OpsError {
    /// May the same request succeed later? Storage, catalog and internal trouble may pass;
    /// everything else is an answer.
    pub fn transient(&self) -> bool {
        matches!(
            self,
            OpsError::Internal(_) | OpsError::Catalog(_) | OpsError::Store(_) | OpsError::Busy(_)
        )
    }
}

impl From<ReadError> for OpsError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Store(s) => OpsError::Store(s),
            other => OpsError::DataLoss(other.to_string()),
        }
    }
}

impl From<PublishError> for OpsError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Catalog(c) => OpsError::Catalog(c),
            PublishError::Store { name, source } => OpsError::Internal(format!(
                "writing record {name} to the store: {source}; nothing was changed"
            )),
            PublishError::Missing(m) => OpsError::NotFound(m),
        }
    }
}

impl From<RepoReadError> for OpsError {
    fn from(e: RepoReadError) -> Self {
        match e {
            RepoReadError::Catalog(c) => OpsError::Catalog(c),
            RepoReadError::Read(r) => r.into(),
        }
    }
}

impl From<IngestError> for OpsError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::EndedEarly => {
                OpsError::FailedPrecondition("the stream ended without its trailer".into())
            }
            IngestError::Rejected(m) => OpsError::InvalidArgument(m),
            IngestError::NotOwned(m) => OpsError::PermissionDenied(m),
            IngestError::Interrupted(m) => OpsError::FailedPrecondition(m),
            IngestError::Internal(m) => OpsError::Internal(m),
            IngestError::Catalog(c) => OpsError::Catalog(c),
            IngestError::Store(s) => OpsError::Store(s),
            IngestError::Read(r) => r.into(),
        }
    }
}

pub type OpsResult<T> = Result<T, OpsError>;
