//! An in-memory store for unit tests.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use tidemark_core::ids::ChunkId;

use super::{ChunkStore, StoreError};

#[derive(Default)]
pub struct MemStore {
    chunks: Mutex<HashMap<ChunkId, Vec<u8>>>,
    packs: Mutex<HashMap<String, (Vec<u8>, i64)>>,
    identity: Mutex<Option<Vec<u8>>>,
    records: Mutex<HashMap<String, Vec<u8>>>,
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

    async fn put_pack(&self, name: &str, bytes: Bytes) -> Result<(), StoreError> {
        let mut packs = self.packs.lock().unwrap();
        if packs.contains_key(name) {
            return Err(StoreError::PackExists(name.to_string()));
        }
        packs.insert(
            name.to_string(),
            (bytes.to_vec(), tidemark_core::timefmt::now()),
        );
        Ok(())
    }

    async fn get_pack_range(
        &self,
        name: &str,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, StoreError> {
        let packs = self.packs.lock().unwrap();
        let (pack, _) = packs
            .get(name)
            .ok_or_else(|| StoreError::PackNotFound(name.to_string()))?;
        slice_range(name, pack, offset, len).map(<[u8]>::to_vec)
    }

    async fn list_packs(&self) -> Result<Vec<super::PackInfo>, StoreError> {
        Ok(self
            .packs
            .lock()
            .unwrap()
            .iter()
            .map(|(k, (v, at))| super::PackInfo {
                name: k.clone(),
                size: v.len() as u64,
                modified: *at,
            })
            .collect())
    }

    async fn delete_pack(&self, name: &str) -> Result<(), StoreError> {
        self.packs.lock().unwrap().remove(name);
        Ok(())
    }

    async fn put_record(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        super::check_record_name(name)?;
        let mut records = self.records.lock().unwrap();
        if records.contains_key(name) {
            return Err(StoreError::RecordExists(name.to_string()));
        }
        records.insert(name.to_string(), bytes.to_vec());
        Ok(())
    }

    async fn get_record(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        self.records
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::RecordNotFound(name.to_string()))
    }

    async fn list_records(&self, under: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .records
            .lock()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with(under))
            .cloned()
            .collect())
    }

    async fn delete_record(&self, name: &str) -> Result<(), StoreError> {
        self.records.lock().unwrap().remove(name);
        Ok(())
    }

    async fn identity(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.identity.lock().unwrap().clone())
    }

    async fn initialize(&self, identity: &[u8]) -> Result<(), StoreError> {
        let mut held = self.identity.lock().unwrap();
        if held.is_some() {
            return Err(StoreError::IdentityExists);
        }
        *held = Some(identity.to_vec());
        Ok(())
    }
}

/// `len` bytes at `offset` of a pack held whole, or damage when it is too short.
fn slice_range<'a>(
    name: &str,
    pack: &'a [u8],
    offset: u64,
    len: u32,
) -> Result<&'a [u8], StoreError> {
    let end = offset + u64::from(len);
    if end > pack.len() as u64 {
        return Err(super::short_pack(name, pack.len() as u64, offset, len));
    }
    Ok(&pack[offset as usize..end as usize])
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
