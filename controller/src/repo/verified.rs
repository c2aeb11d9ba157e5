//! Reading chunks with their digest checked, every time: from a pack (a ranged read, opened
//! with the data key when the store is encrypted), or from an object of its own (stores
//! written before packs). A chunk whose bytes no longer match its id is never served.

use tidemark_core::chunk;
use tidemark_core::ids::ChunkId;

use crate::keys::Keyring;
use crate::store::{ChunkStore, PackLoc, StoreError};

pub struct VerifiedChunk {
    /// Its encoded form (unsealed), as it travels to agents.
    pub encoded: Vec<u8>,
    pub plaintext: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("chunk {0} is missing from the store")]
    Missing(ChunkId),
    #[error("chunk {id} is corrupt ({reason}){}", if *.quarantined { "; it was moved to quarantine" } else { "" })]
    Corrupt {
        id: ChunkId,
        reason: String,
        /// Its object was moved aside (a chunk of its own; a pack stays where it is).
        quarantined: bool,
    },
    #[error(transparent)]
    Store(StoreError),
}

/// Read chunk `id`, stored at `pack` (None: an object of its own).
pub async fn get(
    store: &dyn ChunkStore,
    keys: Option<&Keyring>,
    id: &ChunkId,
    pack: Option<&PackLoc>,
) -> Result<VerifiedChunk, ReadError> {
    match pack {
        Some(loc) => get_packed(store, keys, id, loc).await,
        None => get_own(store, id).await,
    }
}

async fn get_packed(
    store: &dyn ChunkStore,
    keys: Option<&Keyring>,
    id: &ChunkId,
    loc: &PackLoc,
) -> Result<VerifiedChunk, ReadError> {
    let corrupt = |reason: String| ReadError::Corrupt {
        id: *id,
        reason: format!("in pack {}: {reason}", loc.pack),
        quarantined: false,
    };
    let stored = match store.get_pack_range(&loc.pack, loc.offset, loc.len).await {
        Ok(b) => b,
        Err(StoreError::PackNotFound(_)) => return Err(ReadError::Missing(*id)),
        Err(StoreError::Damaged { detail, .. }) => return Err(corrupt(detail)),
        Err(other) => return Err(ReadError::Store(other)),
    };
    let encoded = match keys {
        Some(k) => k.open_chunk(id, stored).map_err(corrupt)?,
        None => stored,
    };
    decode_stored(id, encoded).await?.map_err(corrupt)
}

async fn get_own(store: &dyn ChunkStore, id: &ChunkId) -> Result<VerifiedChunk, ReadError> {
    let reason = match store.get(id).await {
        Ok(encoded) => match decode_stored(id, encoded).await? {
            Ok(chunk) => return Ok(chunk),
            Err(e) => e,
        },
        Err(StoreError::NotFound(id)) => return Err(ReadError::Missing(id)),
        Err(StoreError::Damaged { detail, .. }) => detail,
        Err(other) => return Err(ReadError::Store(other)),
    };
    tracing::error!(chunk = %id, %reason, "corrupt chunk in store; quarantining");
    store.quarantine(id).await.map_err(ReadError::Store)?;
    Err(ReadError::Corrupt {
        id: *id,
        reason,
        quarantined: true,
    })
}

/// Decompress and check against the id, on a blocking thread (the outer error is that
/// thread's). Shared by reads and by uploads, which check what agents send the same way.
pub async fn decode(
    id: ChunkId,
    encoded: Vec<u8>,
) -> Result<Result<VerifiedChunk, chunk::ChunkError>, tokio::task::JoinError> {
    tokio::task::spawn_blocking(move || {
        chunk::decode(&id, &encoded).map(|plaintext| VerifiedChunk { encoded, plaintext })
    })
    .await
}

/// [`decode`] for a stored chunk: the reason it is bad, or a store error.
async fn decode_stored(
    id: &ChunkId,
    encoded: Vec<u8>,
) -> Result<Result<VerifiedChunk, String>, ReadError> {
    decode(*id, encoded)
        .await
        .map(|r| r.map_err(|e| e.to_string()))
        .map_err(|e| ReadError::Store(StoreError::io("decode task", std::io::Error::other(e))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::pack::PackBuilder;
    use crate::store::mem::MemStore;

    #[tokio::test]
    async fn a_tampered_chunk_is_refused_and_quarantined() {
        let store = MemStore::default();
        let plain = b"row data ".repeat(100);
        let id = ChunkId::of(&plain);
        store.put(&id, &chunk::encode(&plain)).await.unwrap();
        assert_eq!(get(&store, None, &id, None).await.unwrap().plaintext, plain);

        store.tamper(&id, chunk::encode(b"other bytes"));
        let err = get(&store, None, &id, None).await.err().unwrap();
        assert!(matches!(err, ReadError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(&id.to_hex()), "{err}");
        assert!(err.to_string().contains("quarantine"), "{err}");
        assert!(matches!(
            get(&store, None, &id, None).await,
            Err(ReadError::Missing(_))
        ));
    }

    /// Each chunk of a pack reads alone; a flipped bit in one spoils only that one, and a
    /// lost pack reads as missing.
    async fn packed(keys: Option<&Keyring>) {
        let store = MemStore::default();
        let plains: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 5000]).collect();
        let mut b = PackBuilder::default();
        for p in &plains {
            b.add(ChunkId::of(p), chunk::encode(p));
        }
        let pack = b.seal(keys);
        store
            .put_pack(&pack.name, pack.bytes.clone().into())
            .await
            .unwrap();
        for ((id, loc), p) in pack.chunks.iter().zip(&plains) {
            assert_eq!(
                &get(&store, keys, id, Some(loc)).await.unwrap().plaintext,
                p
            );
        }
        let (id1, loc1) = &pack.chunks[1];
        let mut bad = pack.bytes.clone();
        bad[loc1.offset as usize + loc1.len as usize / 2] ^= 0x20;
        let name = crate::repo::pack::new_name();
        store.put_pack(&name, bad.into()).await.unwrap();
        let at = |l: &PackLoc| PackLoc {
            pack: name.clone(),
            ..l.clone()
        };
        let err = get(&store, keys, id1, Some(&at(loc1))).await.err().unwrap();
        assert!(
            matches!(
                &err,
                ReadError::Corrupt {
                    quarantined: false,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains(&name), "{err}");
        let (id0, loc0) = &pack.chunks[0];
        assert!(get(&store, keys, id0, Some(&at(loc0))).await.is_ok());
        let gone = PackLoc {
            pack: crate::repo::pack::new_name(),
            ..loc0.clone()
        };
        assert!(matches!(
            get(&store, keys, id0, Some(&gone)).await,
            Err(ReadError::Missing(_))
        ));
        if let Some(k) = keys {
            assert!(
                matches!(
                    get(&store, None, id0, Some(loc0)).await,
                    Err(ReadError::Corrupt { .. })
                ),
                "sealed bytes read without the keys are refused"
            );
            let err = get(&store, Some(k), id1, Some(&at(loc1)))
                .await
                .err()
                .unwrap();
            assert!(err.to_string().contains("authentication"), "{err}");
        }
    }

    #[tokio::test]
    async fn packed_chunks_read_alone_and_damage_stays_local() {
        packed(None).await;
        let (cat, tmp) = crate::catalog::test_catalog().await;
        let keys = Keyring::open(&cat, true, &tmp.path().join("keys"))
            .await
            .unwrap()
            .unwrap();
        packed(Some(&keys)).await;
    }
}
