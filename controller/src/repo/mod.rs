//! The repository: what it takes to put bytes in and get them back trustworthy, over the
//! catalog (what the bytes mean), the store (the bytes) and the keys (sealing). Uploads are
//! checked, packed, sealed and recorded here (`ingest`); every read is checked against its
//! chunk id (`verified`). Nothing here knows about gRPC, jobs or operators.

pub mod backfill;
pub mod identity;
pub mod ingest;
pub mod pack;
pub mod publish;
pub mod rebuild;
pub mod records;
pub mod snapshot;
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
    /// What this controller has written to the store's records.
    pub published: Arc<publish::Published>,
    /// Packs this controller's uploads have written and not yet committed: garbage
    /// collection never takes them for orphans, however long the upload takes.
    pub in_flight: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tidemark_core::chunk;

    use super::*;
    use crate::catalog::test_catalog;
    use crate::keys::Keyring;
    use crate::repo::pack::PackBuilder;
    use crate::store::mem::MemStore;

    /// Two controllers share a catalog and a store. One rotates the keys and stores a
    /// chunk under the new data key before the other has the new KEK file: the other cannot
    /// read it yet. That must record a fault, never erase the chunk, and a read once the
    /// key is loaded must clear it.
    #[tokio::test]
    async fn a_key_not_loaded_yet_on_a_second_controller_records_a_fault_that_a_later_read_clears()
    {
        let (cat, tmp) = test_catalog().await;
        let store: Arc<dyn ChunkStore> = Arc::new(MemStore::default());
        let (dir_a, dir_b) = (tmp.path().join("keys-a"), tmp.path().join("keys-b"));
        let a = Keyring::open(&cat, true, &dir_a).await.unwrap().unwrap();
        std::fs::create_dir_all(&dir_b).unwrap();
        std::fs::copy(dir_a.join("kek-1.key"), dir_b.join("kek-1.key")).unwrap();
        let b = Keyring::open(&cat, true, &dir_b).await.unwrap().unwrap();
        a.rotate(&cat).await.unwrap();

        // Controller A stores a chunk sealed with data key 2 and records it.
        let plain = b"sealed under the new data key ".repeat(100);
        let id = ChunkId::of(&plain);
        let mut pack = PackBuilder::default();
        pack.add(id, chunk::encode(&plain));
        let sealed = pack.seal(Some(&a));
        store
            .put_pack(&sealed.name, sealed.bytes.into())
            .await
            .unwrap();
        let loc = sealed.chunks[0].1.clone();
        let backup =
            crate::catalog::test_backup(&cat, &[(id, plain.len() as u32, Some(loc))]).await;

        // Controller B reads it before it has KEK 2: refused, and recorded as a fault.
        let on_b = Repository {
            catalog: cat.clone(),
            store: store.clone(),
            keys: Some(b.clone()),
            published: Default::default(),
            in_flight: Default::default(),
        };
        assert!(on_b.read_chunk(&id).await.is_err());
        let (kept, faulty) = cat.chunk_place(&id).await.unwrap().expect("the row stays");
        assert!(faulty && kept.is_some());
        assert_eq!(
            cat.unavailable_chunks(backup, "db:a", 5).await.unwrap(),
            vec![id]
        );

        // The KEK file arrives on B, which takes up the rotation: the read succeeds and
        // clears the fault.
        std::fs::copy(dir_a.join("kek-2.key"), dir_b.join("kek-2.key")).unwrap();
        assert!(b.refresh(&cat).await.unwrap());
        assert_eq!(on_b.read_chunk(&id).await.unwrap().plaintext, plain);
        assert_eq!(
            cat.chunk_place(&id).await.unwrap().map(|p| p.1),
            Some(false)
        );
        assert!(
            cat.unavailable_chunks(backup, "db:a", 5)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
