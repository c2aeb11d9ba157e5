//! The chunk store moves encoded chunk bytes and knows nothing of what they mean (that is the
//! catalog's job). One trait, several implementations; digest checks on read live in
//! [`verified`], around the trait, so every implementation gets them.

pub mod fs;
#[cfg(test)]
pub mod mem;
pub mod retry;
pub mod s3;

use async_trait::async_trait;
use bytes::Bytes;
use tidemark_core::ids::ChunkId;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("chunk {0} is not in the store")]
    NotFound(ChunkId),
    #[error("the store already has an identity object; it was initialised before")]
    IdentityExists,
    #[error("pack {0} is not in the store")]
    PackNotFound(String),
    #[error("pack {0} is already stored; packs are never replaced")]
    PackExists(String),
    #[error("record {0} is already stored; records are never replaced")]
    RecordExists(String),
    #[error("record {0} is not in the store")]
    RecordNotFound(String),
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
            StoreError::NotFound(_)
            | StoreError::PackNotFound(_)
            | StoreError::PackExists(_)
            | StoreError::RecordExists(_)
            | StoreError::RecordNotFound(_)
            | StoreError::IdentityExists
            | StoreError::Damaged { .. } => false,
        }
    }
}

pub fn short_pack(name: &str, size: u64, offset: u64, len: u32) -> StoreError {
    StoreError::Damaged {
        key: format!("pack {name}"),
        detail: format!("it holds {size} bytes, too few for {len} bytes at offset {offset}"),
    }
}

/// Where a chunk is inside a pack (the pack format is `repo::pack`'s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackLoc {
    pub pack: String,
    pub offset: u64,
    pub len: u32,
}

/// Refuse a record name that is not `segment/segment/...` of `[A-Za-z0-9._-]`: names are
/// the controller's own, and nothing else may be joined into a path or a key.
pub fn check_record_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        });
    if ok {
        Ok(())
    } else {
        Err(StoreError::io(
            format!("record {name:?}"),
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a record name"),
        ))
    }
}

/// A stored pack as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PackInfo {
    pub name: String,
    pub size: u64,
    /// When it was written (unix seconds).
    pub modified: i64,
}

/// A new pack's name: random (128 bits), so a pack is never written twice.
pub fn new_pack_name() -> String {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).expect("the system's random number generator");
    hex::encode(b)
}

#[async_trait]
pub trait ChunkStore: Send + Sync + 'static {
    /// Store `encoded` under `id` durably before returning. Returns false when the chunk was
    /// already there (content-addressed: same id, same content). This is the layout before
    /// packs, which stores still hold and read; new chunks are written in packs.
    #[allow(dead_code)]
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
    /// Store a pack (see `repo::pack`) durably before returning. Pack names are random
    /// and a pack is never replaced: a name already taken is an error. The bytes are
    /// shared, not copied: a pack is up to 16 MiB, and a retry sends the same buffer again.
    async fn put_pack(&self, name: &str, bytes: Bytes) -> Result<(), StoreError>;
    /// `len` bytes of pack `name` from `offset`; a pack too short for them is damaged.
    async fn get_pack_range(
        &self,
        name: &str,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, StoreError>;
    /// Every stored pack's name. For the conformance suite now, and for verify and garbage
    /// collection (a later issue).
    #[allow(dead_code)]
    async fn list_packs(&self) -> Result<Vec<PackInfo>, StoreError>;
    /// Remove a pack; removing an absent one is not an error. Only garbage collection may
    /// call this (a later issue).
    #[allow(dead_code)]
    async fn delete_pack(&self, name: &str) -> Result<(), StoreError>;
    /// Store a record (see `repo::records`: what the store says about backups, archived
    /// logs, instances and keys) under `meta/NAME`, durably, only if the name is free:
    /// records are never replaced, so the store stays append-only.
    async fn put_record(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError>;
    /// A record's bytes, unverified (`repo::records` checks them).
    async fn get_record(&self, name: &str) -> Result<Vec<u8>, StoreError>;
    /// The names of every record under `meta/UNDER` (`under` ends with `/`, or is empty).
    async fn list_records(&self, under: &str) -> Result<Vec<String>, StoreError>;
    /// Remove a record; removing an absent one is not an error. Only for records a newer
    /// one replaces (old catalog snapshots); under Object Lock it fails until the lock ends.
    async fn delete_record(&self, name: &str) -> Result<(), StoreError>;
    /// The store's identity object (see `crate::store_identity`), or None when it has none:
    /// a store never initialised, or not the store at all (an unmounted volume, another
    /// bucket or prefix). Reading creates nothing.
    async fn identity(&self) -> Result<Option<Vec<u8>>, StoreError>;
    /// Initialise the store: make its layout and write its identity object, once. A store
    /// that has one refuses with [`StoreError::IdentityExists`]; nothing is overwritten.
    async fn initialize(&self, identity: &[u8]) -> Result<(), StoreError>;
    /// Does the store hold any chunk or pack? Used once, when a catalog that knows stored
    /// chunks meets a store without an identity (a catalog from before identities).
    async fn holds_data(&self) -> Result<bool, StoreError> {
        Ok(!self.list_packs().await?.is_empty() || !self.list().await?.is_empty())
    }
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
        // A new store has no identity and no data until it is initialised, once.
        assert_eq!(store.identity().await.unwrap(), None);
        assert!(!store.holds_data().await.unwrap());
        store.initialize(b"{\"store_id\":\"a\"}").await.unwrap();
        assert_eq!(
            store.identity().await.unwrap().as_deref(),
            Some(&b"{\"store_id\":\"a\"}"[..])
        );
        assert!(matches!(
            store.initialize(b"{\"store_id\":\"b\"}").await,
            Err(StoreError::IdentityExists)
        ));
        assert_eq!(
            store.identity().await.unwrap().as_deref(),
            Some(&b"{\"store_id\":\"a\"}"[..]),
            "a second initialisation changes nothing"
        );

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
            crate::repo::verified::get(store.as_ref(), None, &absent, None).await,
            Err(crate::repo::verified::ReadError::Missing(_))
        ));
        let plain3 = b"damaged chunk ".repeat(300);
        let id3 = ChunkId::of(&plain3);
        let mut bad = chunk::encode(&plain3);
        let last = bad.len() - 1;
        bad[last] ^= 0x55;
        store.put(&id3, &bad).await.unwrap();
        assert!(matches!(
            crate::repo::verified::get(store.as_ref(), None, &id3, None).await,
            Err(crate::repo::verified::ReadError::Corrupt { .. })
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

        run_packs(store.as_ref()).await;
        run_records(store.as_ref()).await;
    }

    async fn run_records(store: &dyn ChunkStore) {
        assert!(store.list_records("").await.unwrap().is_empty());
        assert!(matches!(
            store.get_record("backups/1").await,
            Err(StoreError::RecordNotFound(_))
        ));
        store
            .put_record("backups/000001-ab", b"first")
            .await
            .unwrap();
        store
            .put_record("backups/000002-cd", b"second")
            .await
            .unwrap();
        store.put_record("keys/000001-ef", b"keys").await.unwrap();
        assert_eq!(
            store.get_record("backups/000001-ab").await.unwrap(),
            b"first"
        );
        // Append-only: a record is never replaced, even by the same bytes.
        assert!(matches!(
            store.put_record("backups/000001-ab", b"other").await,
            Err(StoreError::RecordExists(_))
        ));
        assert_eq!(
            store.get_record("backups/000001-ab").await.unwrap(),
            b"first"
        );
        let mut listed = store.list_records("backups/").await.unwrap();
        listed.sort();
        assert_eq!(listed, ["backups/000001-ab", "backups/000002-cd"]);
        assert_eq!(store.list_records("").await.unwrap().len(), 3);
        store.delete_record("keys/000001-ef").await.unwrap();
        store.delete_record("keys/000001-ef").await.unwrap();
        assert_eq!(store.list_records("").await.unwrap().len(), 2);
        assert!(matches!(
            store.get_record("keys/000001-ef").await,
            Err(StoreError::RecordNotFound(_))
        ));
        for bad in ["", "../x", "a//b", "a/./b", "a b", "/abs"] {
            assert!(
                store.put_record(bad, b"x").await.is_err(),
                "{bad:?} refused"
            );
        }
        assert!(
            store.list_packs().await.unwrap().len() == 1,
            "records do not show up as packs"
        );
    }

    async fn run_packs(store: &dyn ChunkStore) {
        let chunks_before = store.list().await.unwrap().len();
        let name = new_pack_name();
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        assert!(matches!(
            store.get_pack_range(&name, 0, 10).await,
            Err(StoreError::PackNotFound(_))
        ));
        store.put_pack(&name, bytes.clone().into()).await.unwrap();
        assert_eq!(
            store.get_pack_range(&name, 1000, 5000).await.unwrap(),
            &bytes[1000..6000]
        );
        assert_eq!(
            store.get_pack_range(&name, 0, 200_000).await.unwrap(),
            bytes
        );
        // Append-only: a pack is never replaced, even by the same bytes.
        assert!(
            store
                .put_pack(&name, Bytes::from_static(b"other bytes"))
                .await
                .is_err()
        );
        assert_eq!(
            store.get_pack_range(&name, 0, 3).await.unwrap(),
            &bytes[..3]
        );
        // A range past the end reads as damage, never as a short answer.
        assert!(matches!(
            store.get_pack_range(&name, 199_990, 20).await,
            Err(StoreError::Damaged { .. })
        ));
        let other = new_pack_name();
        store
            .put_pack(&other, Bytes::from_static(b"second"))
            .await
            .unwrap();
        let mut listed: Vec<(String, u64)> = store
            .list_packs()
            .await
            .unwrap()
            .into_iter()
            .map(|p| {
                let age = tidemark_core::timefmt::now() - p.modified;
                assert!((-5..600).contains(&age), "{p:?} was written just now");
                (p.name, p.size)
            })
            .collect();
        listed.sort();
        let mut want = vec![(name.clone(), 200_000), (other.clone(), 6)];
        want.sort();
        assert_eq!(listed, want, "every pack with its size");
        assert_eq!(
            store.list().await.unwrap().len(),
            chunks_before,
            "packs do not show up as chunks"
        );
        store.delete_pack(&other).await.unwrap();
        store.delete_pack(&other).await.unwrap();
        let left = store.list_packs().await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(
            (left[0].name.as_str(), left[0].size),
            (name.as_str(), 200_000)
        );
    }
}
