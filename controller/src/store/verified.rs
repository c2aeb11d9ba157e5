//! Reading chunks with their digest checked, every time. A chunk whose bytes no longer match
//! its id is quarantined, never served.

use tidemark_core::chunk;
use tidemark_core::ids::ChunkId;

use super::{ChunkStore, StoreError};

pub struct VerifiedChunk {
    pub encoded: Vec<u8>,
    pub plaintext: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("chunk {0} is missing from the store")]
    Missing(ChunkId),
    #[error("chunk {id} is corrupt ({reason}); it was moved to quarantine")]
    Corrupt { id: ChunkId, reason: String },
    #[error(transparent)]
    Store(StoreError),
}

pub async fn get(store: &dyn ChunkStore, id: &ChunkId) -> Result<VerifiedChunk, ReadError> {
    let encoded = match store.get(id).await {
        Ok(e) => e,
        Err(StoreError::NotFound(id)) => return Err(ReadError::Missing(id)),
        Err(StoreError::Damaged { detail, .. }) => {
            tracing::error!(chunk = %id, %detail, "the store reports a damaged chunk; quarantining");
            store.quarantine(id).await.map_err(ReadError::Store)?;
            return Err(ReadError::Corrupt {
                id: *id,
                reason: detail,
            });
        }
        Err(other) => return Err(ReadError::Store(other)),
    };
    let owned_id = *id;
    let (encoded, decoded) = tokio::task::spawn_blocking(move || {
        let decoded = chunk::decode(&owned_id, &encoded);
        (encoded, decoded)
    })
    .await
    .map_err(|e| ReadError::Store(StoreError::io("decode task", std::io::Error::other(e))))?;
    match decoded {
        Ok(plaintext) => Ok(VerifiedChunk { encoded, plaintext }),
        Err(e) => {
            tracing::error!(chunk = %id, error = %e, "corrupt chunk in store; quarantining");
            store.quarantine(id).await.map_err(ReadError::Store)?;
            Err(ReadError::Corrupt {
                id: *id,
                reason: e.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::mem::MemStore;

    #[tokio::test]
    async fn a_tampered_chunk_is_refused_and_quarantined() {
        let store = MemStore::default();
        let plain = b"row data ".repeat(100);
        let id = ChunkId::of(&plain);
        store.put(&id, &chunk::encode(&plain)).await.unwrap();
        assert_eq!(get(&store, &id).await.unwrap().plaintext, plain);

        store.tamper(&id, chunk::encode(b"other bytes"));
        let err = get(&store, &id).await.err().unwrap();
        assert!(matches!(err, ReadError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(&id.to_hex()), "{err}");
        assert!(matches!(get(&store, &id).await, Err(ReadError::Missing(_))));
    }
}
