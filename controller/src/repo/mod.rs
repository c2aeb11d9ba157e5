//! The repository: what it takes to put bytes in and get them back trustworthy, over the
//! catalog (what the bytes mean), the store (the bytes) and the keys (sealing). Uploads are
//! checked, packed, sealed and recorded here (`ingest`); every read is checked against its
//! chunk id (`verified`). Nothing here knows about gRPC, jobs or operators.

pub mod identity;
pub mod ingest;
pub mod pack;
pub mod verified;

use std::sync::Arc;

use tidemark_core::ids::ChunkId;

use crate::catalog::{Catalog, CatalogError};
use crate::keys::Keyring;
use crate::store::ChunkStore;
use verified::{ReadError, VerifiedChunk};

#[derive(Clone)]
pub struct Repository {
    pub catalog: Catalog,
    pub store: Arc<dyn ChunkStore>,
    /// The encryption keys, when the store is encrypted at rest.
    pub keys: Option<Arc<Keyring>>,
}

/// A read that failed in the catalog or in the store.
#[derive(Debug, thiserror::Error)]
pub enum RepoReadError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Read(#[from] ReadError),
}

impl Repository {
    /// Read a chunk with its digest checked. A chunk found missing or corrupt is recorded
    /// as faulty, never forgotten: its row stays, it is no longer offered for dedup (so a
    /// later upload of the same content stores it again), and what needs it is refused
    /// until a good read clears the fault (the volume was remounted, a lagging replica
    /// caught up). Nothing a read fails on is deleted.
    pub async fn read_chunk(&self, id: &ChunkId) -> Result<VerifiedChunk, RepoReadError> {
        let (pack, faulty) = self.catalog.chunk_place(id).await?.unwrap_or((None, false));
        match verified::get(self.store.as_ref(), self.keys.as_deref(), id, pack.as_ref()).await {
            Ok(c) => {
                if faulty && self.catalog.clear_chunk_fault(id).await? {
                    tracing::info!(chunk = %id, "a chunk found faulty before reads intact again");
                }
                Ok(c)
            }
            Err(e @ (ReadError::Missing(_) | ReadError::Corrupt { .. })) => {
                self.catalog.mark_chunk_fault(id, &e.to_string()).await?;
                Err(e.into())
            }
            Err(e) => Err(e.into()),
        }
    }
}
