//! Encryption at rest around any store: chunks are sealed on the way in and opened on the way
//! out, so the store below (disk or S3) only ever holds ciphertext. An object that does not
//! open reads as damaged, which quarantines it like any other corruption.

use std::sync::Arc;

use async_trait::async_trait;
use tidemark_core::ids::ChunkId;

use super::{ChunkStore, StoreError};
use crate::keys::Keyring;

pub struct Sealed {
    inner: Arc<dyn ChunkStore>,
    keys: Arc<Keyring>,
}

impl Sealed {
    pub fn new(inner: Arc<dyn ChunkStore>, keys: Arc<Keyring>) -> Self {
        Self { inner, keys }
    }
}

#[async_trait]
impl ChunkStore for Sealed {
    async fn put(&self, id: &ChunkId, encoded: &[u8]) -> Result<bool, StoreError> {
        // Sealing is deterministic (see keys::seal_chunk), so a second put of a chunk
        // offers the store the very bytes it holds, and every store treats it as a repeat.
        let sealed = self.keys.seal_chunk(id, encoded);
        self.inner.put(id, &sealed).await
    }

    async fn get(&self, id: &ChunkId) -> Result<Vec<u8>, StoreError> {
        let sealed = self.inner.get(id).await?;
        self.keys
            .open_chunk(id, sealed)
            .map_err(|detail| StoreError::Damaged {
                key: id.to_hex(),
                detail,
            })
    }

    async fn exists(&self, id: &ChunkId) -> Result<bool, StoreError> {
        self.inner.exists(id).await
    }

    async fn quarantine(&self, id: &ChunkId) -> Result<(), StoreError> {
        self.inner.quarantine(id).await
    }

    async fn list(&self) -> Result<Vec<ChunkId>, StoreError> {
        self.inner.list().await
    }

    async fn delete(&self, id: &ChunkId) -> Result<(), StoreError> {
        self.inner.delete(id).await
    }

    fn requests(&self) -> Vec<(&'static str, u64)> {
        self.inner.requests()
    }
}

/// `inner` wrapped in sealing under a fresh key set, for the stores' conformance runs.
#[cfg(test)]
pub async fn sealing(inner: Arc<dyn ChunkStore>) -> Arc<dyn ChunkStore> {
    let (cat, tmp) = crate::catalog::test_catalog().await;
    let keys = Keyring::open(&cat, true, &tmp.path().join("keys"))
        .await
        .unwrap()
        .unwrap();
    Arc::new(Sealed::new(inner, keys))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::test_catalog;
    use crate::store::mem::MemStore;

    async fn sealed_mem() -> (Arc<MemStore>, Sealed, tempfile::TempDir) {
        let (cat, tmp) = test_catalog().await;
        let keys = Keyring::open(&cat, true, &tmp.path().join("keys"))
            .await
            .unwrap()
            .unwrap();
        let mem = Arc::new(MemStore::default());
        (mem.clone(), Sealed::new(mem, keys), tmp)
    }

    #[tokio::test]
    async fn conformance() {
        let (_, store, _tmp) = sealed_mem().await;
        super::super::conformance::run(Arc::new(store)).await;
        let dir = tempfile::tempdir().unwrap();
        let fs = Arc::new(crate::store::fs::FsStore::open(dir.path()).unwrap());
        super::super::conformance::run(sealing(fs).await).await;
    }

    #[tokio::test]
    async fn the_store_below_holds_only_ciphertext_and_a_flipped_bit_is_damage() {
        let (mem, store, _tmp) = sealed_mem().await;
        let plain = b"customer 4711 paid 12.50 EUR; ".repeat(200);
        let id = ChunkId::of(&plain);
        let encoded = tidemark_core::chunk::encode(&plain);
        store.put(&id, &encoded).await.unwrap();
        let below = mem.get(&id).await.unwrap();
        assert!(!below.windows(12).any(|w| w == b"customer 471"));
        assert_ne!(below, encoded);
        assert_eq!(store.get(&id).await.unwrap(), encoded);

        let mut bad = below.clone();
        bad[40] ^= 1;
        mem.tamper(&id, bad);
        let got = crate::store::verified::get(&store, &id).await;
        assert!(
            matches!(&got, Err(crate::store::verified::ReadError::Corrupt { reason, .. }) if reason.contains("authentication")),
            "{:?}",
            got.err()
        );
        assert!(!mem.exists(&id).await.unwrap(), "quarantined");
    }
}
