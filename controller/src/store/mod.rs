//! The chunk store moves encoded chunk bytes and knows nothing of what they mean (that is the
//! catalog's job). One trait, several implementations; digest checks on read live in
//! [`verified`], around the trait, so every implementation gets them.

pub mod fs;
#[cfg(test)]
pub mod mem;
pub mod retry;
pub mod s3;
pub mod sealed;
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
    /// An object store's request failed. `transient` ones (timeouts, throttling, 5xx,
    /// connection trouble) are worth retrying; the rest (access denied, no such bucket)
    /// are configuration problems.
    #[error("chunk store {op} of {key}: {message}")]
    Remote {
        op: &'static str,
        key: String,
        message: String,
        transient: bool,
    },
    /// The store itself says the stored bytes changed (an object checksum mismatch).
    #[error("chunk store object {key} is damaged: {detail}")]
    Damaged { key: String, detail: String },
    #[error("chunk store {op} {key}: no answer within {after:?}")]
    Timeout {
        op: &'static str,
        key: String,
        after: std::time::Duration,
    },
}

impl StoreError {
    pub fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.to_string(),
            source,
        }
    }

    /// Worth trying again: the store may answer next time.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Remote { transient, .. } => *transient,
            StoreError::Timeout { .. } => true,
            StoreError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut
            ),
            StoreError::NotFound(_) | StoreError::Damaged { .. } => false,
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
    /// Every stored chunk. Used by the conformance suite now, and by verify and garbage
    /// collection (later issues).
    #[allow(dead_code)]
    async fn list(&self) -> Result<Vec<ChunkId>, StoreError>;
    /// Remove a chunk; removing an absent one is not an error. Only garbage collection of
    /// chunks the catalog no longer references may call this (a later issue).
    #[allow(dead_code)]
    async fn delete(&self, id: &ChunkId) -> Result<(), StoreError>;
    /// Requests made to a remote store so far, by kind (PUT, GET, HEAD, LIST, DELETE,
    /// COPY): what an object store bills. Empty for local stores.
    fn requests(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
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

        let mut listed = store.list().await.unwrap();
        listed.sort();
        let mut want = vec![id, id2];
        want.sort();
        assert_eq!(listed, want, "list holds exactly what was put");

        // A missing object reads as not found; a damaged one is refused on read.
        let absent = ChunkId::of(b"never stored");
        assert!(matches!(
            crate::store::verified::get(store.as_ref(), &absent).await,
            Err(crate::store::verified::ReadError::Missing(_))
        ));
        let plain3 = b"damaged chunk ".repeat(300);
        let id3 = ChunkId::of(&plain3);
        let mut bad = chunk::encode(&plain3);
        let last = bad.len() - 1;
        bad[last] ^= 0x55;
        store.put(&id3, &bad).await.unwrap();
        assert!(matches!(
            crate::store::verified::get(store.as_ref(), &id3).await,
            Err(crate::store::verified::ReadError::Corrupt { .. })
        ));
        assert!(
            !store.exists(&id3).await.unwrap(),
            "the damaged chunk went to quarantine"
        );

        store.delete(&id2).await.unwrap();
        store.delete(&id2).await.unwrap();
        assert!(!store.exists(&id2).await.unwrap());

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
