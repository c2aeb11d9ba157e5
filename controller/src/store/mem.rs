//! An in-memory store for unit tests.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use tidemark_core::ids::ChunkId;

use super::{ChunkStore, StoreError};

#[derive(Default)]
pub struct MemStore {
    chunks: Mutex<HashMap<ChunkId, Vec<u8>>>,
}

#[async_trait]
impl ChunkStore for MemStore {
    async fn put(&self, id: &ChunkId, encoded: &[u8]) -> Result<bool, StoreError> {
        let mut map = self.chunks.lock().unwrap();
        if map.contains_key(id) {
            return Ok(false);
        }
        map.insert(*id, encoded.to_vec());
        Ok(true)
    }

    async fn get(&self, id: &ChunkId) -> Result<Vec<u8>, StoreError> {
        self.chunks
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or(StoreError::NotFound(*id))
    }

    async fn exists(&self, id: &ChunkId) -> Result<bool, StoreError> {
        Ok(self.chunks.lock().unwrap().contains_key(id))
    }

    async fn quarantine(&self, id: &ChunkId) -> Result<(), StoreError> {
        self.chunks.lock().unwrap().remove(id);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ChunkId>, StoreError> {
        Ok(self.chunks.lock().unwrap().keys().copied().collect())
    }

    async fn delete(&self, id: &ChunkId) -> Result<(), StoreError> {
        self.chunks.lock().unwrap().remove(id);
        Ok(())
    }
}

impl MemStore {
    /// Overwrite a stored chunk, for tests that need corruption.
    #[cfg(test)]
    pub fn tamper(&self, id: &ChunkId, bytes: Vec<u8>) {
        self.chunks.lock().unwrap().insert(*id, bytes);
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn conformance() {
        super::super::conformance::run(std::sync::Arc::new(super::MemStore::default())).await;
    }
}
