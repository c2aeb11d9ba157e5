//! Encryption at rest, as an envelope: every chunk is sealed (AES-256-GCM) under a data key
//! before it reaches the store; data keys live in the catalog wrapped by a key-encryption key
//! (KEK) that exists only as a file on the controller ([`kek`]). Rotating the KEK rewraps the
//! data keys in one catalog transaction and starts a new data key; no stored chunk changes,
//! so old backups stay readable and nothing is uploaded again.
//!
//! A sealed chunk is `"TMX1" ‖ data key id (u32, big-endian) ‖ nonce ‖ ciphertext ‖ tag`,
//! authenticated together with the chunk's id: damage anywhere, or bytes moved to another
//! chunk's place, fail authentication before anything is decompressed. Pack indexes are
//! sealed the same way, bound to their pack's name.

pub mod kek;
pub mod seal;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use aws_lc_rs::aead::LessSafeKey;
use tidemark_core::ids::ChunkId;

use crate::catalog::{Catalog, CatalogError, DataKeyRow, KekRow, Rotation, now};
use seal::{OVERHEAD, RawKey};

const CHUNK_MAGIC: &[u8; 4] = b"TMX1";
const CHUNK_HEADER: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error(transparent)]
    Kek(#[from] kek::KekError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("{0}")]
    Refused(String),
}

struct DataKey {
    raw: RawKey,
    aead: LessSafeKey,
}

/// The unwrapped data keys, and which one seals new chunks.
struct Ring {
    active: u32,
    keys: BTreeMap<u32, DataKey>,
}

impl Ring {
    fn add(&mut self, id: u32, raw: RawKey) {
        let aead = raw.aead();
        self.keys.insert(id, DataKey { raw, aead });
        self.active = self.active.max(id);
    }
}

pub struct Keyring {
    dir: PathBuf,
    ring: RwLock<Ring>,
    rotating: tokio::sync::Mutex<()>,
}

/// What a rotation did.
pub struct Rotated {
    pub kek: u32,
    pub rewrapped: usize,
    pub data_key: u32,
}

impl Keyring {
    /// The keys for a store, or None with encryption off. Turning encryption on for a store
    /// that already holds plaintext chunks, or off for one whose chunks are sealed, is
    /// refused: either would leave the store half one thing and half the other.
    pub async fn open(
        catalog: &Catalog,
        enabled: bool,
        dir: &Path,
    ) -> Result<Option<Arc<Keyring>>, KeysError> {
        let keks = catalog.keks().await?;
        if !enabled {
            if keks.is_empty() {
                return Ok(None);
            }
            return Err(KeysError::Refused(format!(
                "the catalog holds encryption keys, so the stored chunks are encrypted; set [encryption] enabled = true with key-dir = {:?} (it holds the kek-N.key files)",
                dir
            )));
        }
        let ring = if keks.is_empty() {
            first_keys(catalog, dir).await?
        } else {
            load(catalog, dir, &keks).await?
        };
        tracing::info!(key_dir = %dir.display(), data_key = ring.active, "chunk store: encrypted at rest");
        Ok(Some(Arc::new(Keyring {
            dir: dir.into(),
            ring: RwLock::new(ring),
            rotating: Default::default(),
        })))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn active_data_key(&self) -> u32 {
        self.ring.read().expect("keyring lock").active
    }

    /// Seal an encoded chunk under the active data key, bound to its id.
    pub fn seal_chunk(&self, id: &ChunkId, encoded: &[u8]) -> Vec<u8> {
        self.seal(encoded, |header| chunk_aad(header, id))
    }

    /// The encoded chunk inside a sealed object, or why it cannot be had.
    pub fn open_chunk(&self, id: &ChunkId, sealed: Vec<u8>) -> Result<Vec<u8>, String> {
        self.open_sealed(sealed, |header| chunk_aad(header, id))
    }

    /// Seal a pack's index, bound to the pack's name.
    pub fn seal_index(&self, pack: &str, index: &[u8]) -> Vec<u8> {
        self.seal(index, |header| index_aad(header, pack))
    }

    /// Seal a store record (`repo::records`), bound to its name.
    pub fn seal_record(&self, name: &str, bytes: &[u8]) -> Vec<u8> {
        self.seal(bytes, |header| record_aad(header, name))
    }

    pub fn open_record(&self, name: &str, sealed: Vec<u8>) -> Result<Vec<u8>, String> {
        self.open_sealed(sealed, |header| record_aad(header, name))
    }

    /// `"TMX1" ‖ data key id ‖ nonce ‖ ciphertext ‖ tag` under the active data key, with a
    /// random nonce (2^32 seals per key keep the chance of a repeat negligible; a data key
    /// seals one chunk per MiB stored, and rotation starts a new one).
    fn seal(&self, plaintext: &[u8], aad: impl FnOnce(&[u8]) -> Vec<u8>) -> Vec<u8> {
        let ring = self.ring.read().expect("keyring lock");
        let key = &ring.keys[&ring.active];
        let mut out = Vec::with_capacity(CHUNK_HEADER + OVERHEAD + plaintext.len());
        out.extend_from_slice(CHUNK_MAGIC);
        out.extend_from_slice(&ring.active.to_be_bytes());
        let aad = aad(&out);
        seal::seal_into(&key.aead, seal::random(), &aad, plaintext, &mut out);
        out
    }

    /// Open a pack's index, which is bound to the pack's name.
    pub fn open_index(&self, pack: &str, sealed: Vec<u8>) -> Result<Vec<u8>, String> {
        self.open_sealed(sealed, |header| index_aad(header, pack))
    }

    fn open_sealed(
        &self,
        mut sealed: Vec<u8>,
        aad: impl FnOnce(&[u8]) -> Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        if sealed.len() < CHUNK_HEADER || &sealed[..4] != CHUNK_MAGIC {
            return Err("the object is not sealed (plaintext in an encrypted store)".into());
        }
        let key_id = u32::from_be_bytes(sealed[4..8].try_into().expect("4 bytes"));
        let ring = self.ring.read().expect("keyring lock");
        let key = ring.keys.get(&key_id).ok_or_else(|| {
            format!("the object names data key {key_id}, which the catalog does not hold")
        })?;
        let aad = aad(&sealed[..CHUNK_HEADER]);
        let body = seal::open_in_place(&key.aead, &aad, &mut sealed[CHUNK_HEADER..])
            .ok_or("the object fails authentication (AES-GCM tag mismatch)")?;
        sealed.truncate(CHUNK_HEADER + body.end);
        sealed.drain(..CHUNK_HEADER + body.start);
        Ok(sealed)
    }

    /// Take up a rotation another controller sharing the catalog made: when the catalog
    /// holds a data key newer than ours, unwrap them all again. That needs the new KEK's
    /// file in this controller's key-dir too; until it is there this controller keeps
    /// sealing with its last data key (still valid) and cannot read chunks sealed with the
    /// new one, and the error names the file. Returns whether anything changed.
    pub async fn refresh(&self, catalog: &Catalog) -> Result<bool, KeysError> {
        let newest = catalog.data_keys().await?.iter().map(|d| d.id).max();
        if newest.is_none_or(|n| n <= self.active_data_key()) {
            return Ok(false);
        }
        let ring = load(catalog, &self.dir, &catalog.keks().await?).await?;
        *self.ring.write().expect("keyring lock") = ring;
        Ok(true)
    }

    /// Add a new KEK, rewrap every data key under it and start a new data key. The new
    /// KEK's file is durable before the catalog refers to it.
    pub async fn rotate(&self, catalog: &Catalog) -> Result<Rotated, KeysError> {
        let _one_at_a_time = self.rotating.lock().await;
        let next = catalog
            .keks()
            .await?
            .iter()
            .map(|k| k.id)
            .max()
            .unwrap_or(0)
            + 1;
        let kek = RawKey::random();
        let path = kek::create(&self.dir, next, &kek)?;
        let wrapper = kek.aead();
        let new_key = RawKey::random();
        let rotation = {
            let ring = self.ring.read().expect("keyring lock");
            let new_id = ring.keys.keys().max().copied().unwrap_or(0) + 1;
            Rotation {
                kek: KekRow {
                    id: next,
                    fingerprint: kek::fingerprint(&kek),
                    created_at: now(),
                    retired_at: None,
                },
                rewrapped: ring
                    .keys
                    .iter()
                    .map(|(&id, k)| DataKeyRow {
                        id,
                        kek_id: next,
                        wrapped: wrap(&wrapper, id, &k.raw),
                    })
                    .collect(),
                new_data_key: DataKeyRow {
                    id: new_id,
                    kek_id: next,
                    wrapped: wrap(&wrapper, new_id, &new_key),
                },
            }
        };
        if let Err(e) = catalog.rotate_keys(&rotation).await {
            // The file is unused unless the catalog took it after all.
            if !catalog.keks().await?.iter().any(|k| k.id == next) {
                let _ = std::fs::remove_file(&path);
            }
            return Err(e.into());
        }
        let data_key = rotation.new_data_key.id;
        self.ring
            .write()
            .expect("keyring lock")
            .add(data_key, new_key);
        tracing::warn!(kek = next, path = %path.display(), data_key, "rotated the key-encryption key; keep a copy of the new file off this host");
        Ok(Rotated {
            kek: next,
            rewrapped: rotation.rewrapped.len(),
            data_key,
        })
    }
}

/// A new store: KEK 1 (an operator-provided `kek-1.key` is adopted) and data key 1.
async fn first_keys(catalog: &Catalog, dir: &Path) -> Result<Ring, KeysError> {
    let n = catalog.stored_chunk_count().await?;
    if n > 0 {
        return Err(KeysError::Refused(format!(
            "encryption is on, but this store already holds {n} unencrypted chunks; encryption starts with a store's first backup: use a new store and data-dir, or set [encryption] enabled = false"
        )));
    }
    let path = kek::path(dir, 1);
    let kek = if path.exists() {
        tracing::info!(path = %path.display(), "using the key-encryption key provided");
        kek::read(&path)?
    } else {
        let k = RawKey::random();
        kek::create(dir, 1, &k)?;
        tracing::warn!(path = %path.display(), "created a key-encryption key: keep a copy off this host, without it no backup can be read");
        k
    };
    let data_key = RawKey::random();
    catalog
        .start_encryption(
            &KekRow {
                id: 1,
                fingerprint: kek::fingerprint(&kek),
                created_at: now(),
                retired_at: None,
            },
            &DataKeyRow {
                id: 1,
                kek_id: 1,
                wrapped: wrap(&kek.aead(), 1, &data_key),
            },
        )
        .await?;
    let mut ring = Ring {
        active: 0,
        keys: BTreeMap::new(),
    };
    ring.add(1, data_key);
    Ok(ring)
}

/// Unwrap every data key with the KEK file the catalog says wraps it.
async fn load(catalog: &Catalog, dir: &Path, keks: &[KekRow]) -> Result<Ring, KeysError> {
    let mut wrappers: BTreeMap<u32, (PathBuf, LessSafeKey)> = BTreeMap::new();
    let mut ring = Ring {
        active: 0,
        keys: BTreeMap::new(),
    };
    for dk in catalog.data_keys().await? {
        if !wrappers.contains_key(&dk.kek_id) {
            let row = keks.iter().find(|k| k.id == dk.kek_id).ok_or_else(|| {
                KeysError::Refused(format!(
                    "data key {} names key-encryption key {}, which the catalog does not hold",
                    dk.id, dk.kek_id
                ))
            })?;
            let path = kek::path(dir, row.id);
            let key = kek::read(&path)?;
            let found = kek::fingerprint(&key);
            if found != row.fingerprint {
                return Err(KeysError::Refused(format!(
                    "{} is not key-encryption key {}: its fingerprint is {found}, the catalog's is {}",
                    path.display(),
                    row.id,
                    row.fingerprint
                )));
            }
            wrappers.insert(row.id, (path, key.aead()));
        }
        let (path, wrapper) = &wrappers[&dk.kek_id];
        let raw = unwrap(wrapper, dk.id, &dk.wrapped).ok_or_else(|| {
            KeysError::Refused(format!(
                "data key {} does not unwrap with {}: its catalog row is damaged",
                dk.id,
                path.display()
            ))
        })?;
        ring.add(dk.id, raw);
    }
    if ring.keys.is_empty() {
        return Err(KeysError::Refused(
            "the catalog has key-encryption keys but no data key".into(),
        ));
    }
    Ok(ring)
}

fn chunk_aad(header: &[u8], id: &ChunkId) -> Vec<u8> {
    [b"tidemark chunk\0".as_slice(), header, &id.0].concat()
}

fn index_aad(header: &[u8], pack: &str) -> Vec<u8> {
    [b"tidemark pack index\0".as_slice(), header, pack.as_bytes()].concat()
}

fn record_aad(header: &[u8], name: &str) -> Vec<u8> {
    [b"tidemark record\0".as_slice(), header, name.as_bytes()].concat()
}

fn data_key_aad(id: u32) -> Vec<u8> {
    [b"tidemark data key\0".as_slice(), &id.to_be_bytes()].concat()
}

fn wrap(kek: &LessSafeKey, id: u32, key: &RawKey) -> Vec<u8> {
    let mut out = Vec::new();
    seal::seal_into(kek, seal::random(), &data_key_aad(id), &key.0, &mut out);
    out
}

fn unwrap(kek: &LessSafeKey, id: u32, wrapped: &[u8]) -> Option<RawKey> {
    let mut buf = wrapped.to_vec();
    let r = seal::open_in_place(kek, &data_key_aad(id), &mut buf)?;
    Some(RawKey(buf[r].try_into().ok()?))
}

#[cfg(test)]
mod tests;
