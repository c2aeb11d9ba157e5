//! The chunk store moves encoded chunk bytes and knows nothing of what they mean (that is the
//! catalog's job). One trait, several implementations; digest checks on read live in
//! [`verified`], around the trait, so every implementation gets them.

pub mod fs;
#[cfg(test)]
pub mod mem;
pub mod verified;

use async_trait::async_trait;
use tidemark_core::ids::ChunkId;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("chunk {0} is not in the store")]
    NotFound(ChunkId),
    #[error("chunk store i/o on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl StoreError {
    pub fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.to_string(),
            source,
        }
    }
}

#[async_trait]
pub trait ChunkStore: Send + Sync + 'static {
    /// Store `encoded` under `id` durably before returning. Returns false when the chunk was
    /// already there (content-addressed: same id, same content).
    async fn put(&self, id: &ChunkId, encoded: &[u8]) -> Result<bool, StoreError>;
    /// The stored bytes, unverified; use [`verified::get`] to read chunks.
    async fn get(&self, id: &ChunkId) -> Result<Vec<u8>, StoreError>;
    /// Used by the conformance suite now, and by verify (a later issue).
    #[allow(dead_code)]
    async fn exists(&self, id: &ChunkId) -> Result<bool, StoreError>;
    /// Move a chunk that failed verification out of the way, keeping its bytes for
    /// inspection; afterwards the chunk reads as not found, and a new upload can heal it.
    async fn quarantine(&self, id: &ChunkId) -> Result<(), StoreError>;
}

#[cfg(test)]
pub mod conformance {
    //! The behaviour every store must have; each implementation runs this suite.
    use super::*;
    use std::sync::Arc;
    use tidemark_core::chunk;

    pub async fn run(store: Arc<dyn ChunkStore>) {
        let plain = b"conformance chunk ".repeat(500);
        let id = ChunkId::of(&plain);
        let enc = chunk::encode(&plain);

        assert!(!store.exists(&id).await.unwrap());
        assert!(matches!(store.get(&id).await, Err(StoreError::NotFound(_))));
        assert!(store.put(&id, &enc).await.unwrap(), "first put stores");
        assert!(
            !store.put(&id, &enc).await.unwrap(),
            "second put is a no-op"
        );
        assert!(store.exists(&id).await.unwrap());
        assert_eq!(store.get(&id).await.unwrap(), enc);

        // Concurrent puts of one chunk all succeed and leave one intact copy.
        let plain2 = b"raced chunk ".repeat(700);
        let id2 = ChunkId::of(&plain2);
        let enc2 = chunk::encode(&plain2);
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (s, e) = (store.clone(), enc2.clone());
            tasks.push(tokio::spawn(async move { s.put(&id2, &e).await.unwrap() }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(store.get(&id2).await.unwrap(), enc2);

        store.quarantine(&id).await.unwrap();
        assert!(!store.exists(&id).await.unwrap());
        assert!(matches!(store.get(&id).await, Err(StoreError::NotFound(_))));
        assert!(
            store.put(&id, &enc).await.unwrap(),
            "a quarantined chunk can be re-uploaded"
        );
        assert_eq!(store.get(&id).await.unwrap(), enc);
    }
}
