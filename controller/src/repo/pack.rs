//! Pack objects: the chunks one upload stores, written together as one immutable object of
//! up to [`PACK_TARGET`] bytes instead of one object per chunk. An object store bills per
//! request; a pack costs one PUT where its chunks would cost dozens (about one per MiB of
//! data), and restores still read single chunks with ranged GETs.
//!
//! Layout: the chunks' stored bytes back to back, then the index, then a 12-byte footer
//! (index length, entry count, both big-endian u32, and `TMP1`). The index lists each
//! chunk's id, offset and length (32 + 8 + 4 bytes), so a pack describes itself without
//! the catalog. With encryption on, every chunk is sealed on its own (a ranged read opens
//! it alone) and so is the index, which would otherwise show the chunk ids.
//!
//! Pack names are random (128 bits): a pack is never written twice, so the layout is
//! append-only and works under S3 Object Lock.

use tidemark_core::ids::ChunkId;

use crate::keys::Keyring;
pub use crate::store::{PackLoc, new_pack_name as new_name};

/// A pack is written once its chunks reach this many stored bytes. An upload holds at most
/// two packs' worth in memory: one filling, one being written.
pub const PACK_TARGET: usize = 16 * 1024 * 1024;
const FOOTER_MAGIC: &[u8; 4] = b"TMP1";
const FOOTER: usize = 12;
const ENTRY: usize = 32 + 8 + 4;

/// A pack being filled. Holds the chunks' encoded (unsealed) bytes until [`PackBuilder::seal`],
/// so that a reference to one of them in the same upload can be served from memory.
#[derive(Default)]
pub struct PackBuilder {
    chunks: Vec<(ChunkId, Vec<u8>)>,
    bytes: usize,
}

/// A pack ready to be stored, and where each of its chunks is.
pub struct SealedPack {
    pub name: String,
    pub bytes: Vec<u8>,
    pub chunks: Vec<(ChunkId, PackLoc)>,
}

impl PackBuilder {
    pub fn add(&mut self, id: ChunkId, encoded: Vec<u8>) {
        self.bytes += encoded.len();
        self.chunks.push((id, encoded));
    }

    pub fn get(&self, id: &ChunkId) -> Option<&[u8]> {
        self.chunks
            .iter()
            .find(|(c, _)| c == id)
            .map(|(_, b)| b.as_slice())
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.bytes >= PACK_TARGET
    }

    /// Lay the pack out (sealing each chunk and the index when `keys` is set) and empty the
    /// builder. CPU work: run it off the async threads.
    pub fn seal(&mut self, keys: Option<&Keyring>) -> SealedPack {
        let name = new_name();
        let chunks = std::mem::take(&mut self.chunks);
        self.bytes = 0;
        let mut out = Vec::with_capacity(chunks.iter().map(|c| c.1.len() + 64).sum());
        let mut locs = Vec::with_capacity(chunks.len());
        let mut index = Vec::with_capacity(chunks.len() * ENTRY);
        for (id, encoded) in chunks {
            let offset = out.len() as u64;
            match keys {
                Some(k) => out.extend_from_slice(&k.seal_chunk(&id, &encoded)),
                None => out.extend_from_slice(&encoded),
            }
            let len = (out.len() as u64 - offset) as u32;
            index.extend_from_slice(&id.0);
            index.extend_from_slice(&offset.to_be_bytes());
            index.extend_from_slice(&len.to_be_bytes());
            locs.push((
                id,
                PackLoc {
                    pack: name.clone(),
                    offset,
                    len,
                },
            ));
        }
        let index = match keys {
            Some(k) => k.seal_index(&name, &index),
            None => index,
        };
        out.extend_from_slice(&index);
        out.extend_from_slice(&(index.len() as u32).to_be_bytes());
        out.extend_from_slice(&(locs.len() as u32).to_be_bytes());
        out.extend_from_slice(FOOTER_MAGIC);
        SealedPack {
            name,
            bytes: out,
            chunks: locs,
        }
    }
}

/// Read a whole pack's index: every chunk in it and where. What rebuilding a catalog from
/// the store alone would use (not built yet); the tests check every pack written can be.
#[cfg_attr(not(test), allow(dead_code))]
pub fn read_index(
    name: &str,
    pack: &[u8],
    keys: Option<&Keyring>,
) -> Result<Vec<(ChunkId, PackLoc)>, String> {
    let footer = pack
        .len()
        .checked_sub(FOOTER)
        .map(|at| &pack[at..])
        .ok_or("shorter than its footer")?;
    if &footer[8..] != FOOTER_MAGIC {
        return Err("no pack footer".into());
    }
    let index_len = u32::from_be_bytes(footer[..4].try_into().expect("4 bytes")) as usize;
    let count = u32::from_be_bytes(footer[4..8].try_into().expect("4 bytes")) as usize;
    let start = pack
        .len()
        .checked_sub(FOOTER + index_len)
        .ok_or("index longer than the pack")?;
    let raw = &pack[start..pack.len() - FOOTER];
    let index = match keys {
        Some(k) => k.open_index(name, raw.to_vec())?,
        None => raw.to_vec(),
    };
    if index.len() != count * ENTRY {
        return Err(format!(
            "index of {} bytes for {count} entries",
            index.len()
        ));
    }
    index
        .chunks_exact(ENTRY)
        .map(|e| {
            let id = ChunkId::from_slice(&e[..32]).map_err(|e| e.to_string())?;
            let offset = u64::from_be_bytes(e[32..40].try_into().expect("8 bytes"));
            let len = u32::from_be_bytes(e[40..].try_into().expect("4 bytes"));
            if offset + u64::from(len) > start as u64 {
                return Err(format!("entry {id} lies outside the pack's data"));
            }
            Ok((
                id,
                PackLoc {
                    pack: name.to_string(),
                    offset,
                    len,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_core::chunk;

    fn chunks() -> Vec<(ChunkId, Vec<u8>)> {
        (0..5u8)
            .map(|i| {
                let plain = vec![i; 10_000 + i as usize];
                (ChunkId::of(&plain), chunk::encode(&plain))
            })
            .collect()
    }

    fn round_trip(keys: Option<&Keyring>) {
        let mut b = PackBuilder::default();
        for (id, enc) in chunks() {
            b.add(id, enc);
        }
        let (first, _) = &chunks()[0];
        assert!(b.get(first).is_some());
        let p = b.seal(keys);
        assert!(b.is_empty());
        assert_eq!(p.name.len(), 32);
        assert_eq!(read_index(&p.name, &p.bytes, keys).unwrap(), p.chunks);
        for ((id, enc), (lid, loc)) in chunks().iter().zip(&p.chunks) {
            assert_eq!(id, lid);
            let stored =
                p.bytes[loc.offset as usize..loc.offset as usize + loc.len as usize].to_vec();
            let got = match keys {
                Some(k) => k.open_chunk(id, stored).unwrap(),
                None => stored,
            };
            assert_eq!(&got, enc);
        }
        // A damaged or truncated pack's index is refused, never misread.
        let mut cut = p.bytes.clone();
        cut.truncate(cut.len() - 1);
        assert!(read_index(&p.name, &cut, keys).is_err());
        let mut bad = p.bytes.clone();
        let at = bad.len() - FOOTER - 5;
        bad[at] ^= 1;
        if keys.is_some() {
            assert!(read_index(&p.name, &bad, keys).is_err());
            assert!(
                read_index("another-pack", &p.bytes, keys).is_err(),
                "an index is bound to its pack's name"
            );
        } else {
            assert_ne!(read_index(&p.name, &bad, keys).ok(), Some(p.chunks.clone()));
        }
    }

    #[test]
    fn packs_round_trip_plain() {
        round_trip(None);
    }

    #[tokio::test]
    async fn packs_round_trip_sealed_and_hide_chunk_ids() {
        let (cat, tmp) = crate::catalog::test_catalog().await;
        let keys = Keyring::open(&cat, true, &tmp.path().join("keys"))
            .await
            .unwrap()
            .unwrap();
        round_trip(Some(&keys));
        let mut b = PackBuilder::default();
        for (id, enc) in chunks() {
            b.add(id, enc);
        }
        let p = b.seal(Some(&keys));
        for (id, _) in chunks() {
            assert!(
                !p.bytes.windows(32).any(|w| w == id.0),
                "chunk id {id} is readable in a sealed pack"
            );
        }
    }
}
