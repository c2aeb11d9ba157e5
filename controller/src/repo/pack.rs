//! Pack objects: the chunks one upload stores, written together as one immutable object of
//! up to [`PACK_TARGET`] bytes instead of one object per chunk. An object store bills per
//! request; a pack costs one PUT where its chunks would cost dozens (about one per MiB of
//! data), and restores still read single chunks with ranged GETs.
//!
//! Layout: the chunks' stored bytes back to back, then the index, then the description (a
//! record, see `repo::records`: the WAL file or binlog whose last chunks the pack carries;
//! absent for backup packs), then a 16-byte footer (index length, entry count, description
//! length, each a big-endian u32, and `TMP2`). Packs written before descriptions end in a
//! 12-byte footer with `TMP1` and no description length. The index lists each chunk's id,
//! offset and length (32 + 8 + 4 bytes), so a pack describes itself without the catalog.
//! With encryption on, every chunk is sealed on its own (a ranged read opens it alone), and
//! so are the index, which would otherwise show the chunk ids, and the description.
//!
//! Pack names are random (128 bits): a pack is never written twice, so the layout is
//! append-only and works under S3 Object Lock.

use tidemark_core::ids::ChunkId;

use super::records::{self, LogRecord};
use crate::keys::Keyring;
pub use crate::store::{PackLoc, new_pack_name as new_name};

/// A pack is written once its chunks reach this many stored bytes. An upload holds at most
/// two packs' worth in memory: one filling, one being written.
pub const PACK_TARGET: usize = 16 * 1024 * 1024;
const FOOTER_MAGIC_V1: &[u8; 4] = b"TMP1";
const FOOTER_V1: usize = 12;
const FOOTER_MAGIC: &[u8; 4] = b"TMP2";
const FOOTER: usize = 16;
const ENTRY: usize = 32 + 8 + 4;
/// How much of a pack's end to read first when reading its index: enough for the index and
/// description of every pack the controller writes but the largest.
pub const TAIL_GUESS: u64 = 64 * 1024;

/// A pack being filled. Holds the chunks' encoded (unsealed) bytes until [`PackBuilder::seal`],
/// so that a reference to one of them in the same upload can be served from memory.
#[derive(Default)]
pub struct PackBuilder {
    chunks: Vec<(ChunkId, Vec<u8>)>,
    bytes: usize,
    description: Option<LogRecord>,
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

    /// Nothing to write: no chunk and no description.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.description.is_none()
    }

    /// Describe in this pack the archived file whose last chunks it carries.
    pub fn describe(&mut self, log: LogRecord) {
        self.description = Some(log);
    }

    pub fn is_full(&self) -> bool {
        self.bytes >= PACK_TARGET
    }

    /// The encoded bytes of the chunks added so far.
    pub fn bytes(&self) -> usize {
        self.bytes
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
        let description = match self.description.take() {
            Some(d) => records::encode(&description_name(&name), &d, keys),
            None => Vec::new(),
        };
        out.extend_from_slice(&index);
        out.extend_from_slice(&description);
        out.extend_from_slice(&(index.len() as u32).to_be_bytes());
        out.extend_from_slice(&(locs.len() as u32).to_be_bytes());
        out.extend_from_slice(&(description.len() as u32).to_be_bytes());
        out.extend_from_slice(FOOTER_MAGIC);
        SealedPack {
            name,
            bytes: out,
            chunks: locs,
        }
    }
}

/// The name a pack's description is sealed under: bound to its pack.
fn description_name(pack: &str) -> String {
    format!("packs/{pack}")
}

/// What a pack says about itself.
#[derive(Debug)]
pub struct PackContents {
    pub chunks: Vec<(ChunkId, PackLoc)>,
    pub description: Option<LogRecord>,
}

/// Why a pack's tail could not be read.
#[derive(Debug, PartialEq)]
pub enum TailError {
    /// The tail given is too short: read this many bytes from the end and try again.
    Short(u64),
    Bad(String),
}

fn be32(b: &[u8]) -> u64 {
    u64::from(u32::from_be_bytes(b.try_into().expect("4 bytes")))
}

/// Read what pack `name`, `size` bytes long, says about itself from `tail`, its last bytes
/// (the whole pack will do).
pub fn read_tail(
    name: &str,
    size: u64,
    tail: &[u8],
    keys: Option<&Keyring>,
) -> Result<PackContents, TailError> {
    let bad = |s: String| TailError::Bad(s);
    if (tail.len() as u64) > size || tail.len() < FOOTER_V1 {
        return Err(bad("shorter than its footer".into()));
    }
    let end = tail.len();
    let (footer, index_len, count, desc_len) = if &tail[end - 4..] == FOOTER_MAGIC {
        if end < FOOTER {
            return Err(bad("shorter than its footer".into()));
        }
        let f = &tail[end - FOOTER..];
        (
            FOOTER as u64,
            be32(&f[..4]),
            be32(&f[4..8]),
            be32(&f[8..12]),
        )
    } else if &tail[end - 4..] == FOOTER_MAGIC_V1 {
        let f = &tail[end - FOOTER_V1..];
        (FOOTER_V1 as u64, be32(&f[..4]), be32(&f[4..8]), 0)
    } else {
        return Err(bad("no pack footer".into()));
    };
    let meta = footer + index_len + desc_len;
    if meta > size {
        return Err(bad("index longer than the pack".into()));
    }
    if meta > tail.len() as u64 {
        return Err(TailError::Short(meta));
    }
    let data_end = size - meta;
    let at = tail.len() - meta as usize;
    let raw = &tail[at..at + index_len as usize];
    let desc = &tail[at + index_len as usize..tail.len() - footer as usize];
    let index = match keys {
        Some(k) => k.open_index(name, raw.to_vec()).map_err(bad)?,
        None => raw.to_vec(),
    };
    if index.len() as u64 != count * ENTRY as u64 {
        return Err(bad(format!(
            "index of {} bytes for {count} entries",
            index.len()
        )));
    }
    let chunks = index
        .chunks_exact(ENTRY)
        .map(|e| {
            let id = ChunkId::from_slice(&e[..32]).map_err(|e| e.to_string())?;
            let offset = u64::from_be_bytes(e[32..40].try_into().expect("8 bytes"));
            let len = u32::from_be_bytes(e[40..].try_into().expect("4 bytes"));
            if offset + u64::from(len) > data_end {
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
        .collect::<Result<Vec<_>, String>>()
        .map_err(bad)?;
    let description = if desc.is_empty() {
        None
    } else {
        Some(records::decode(&description_name(name), desc, keys, false).map_err(bad)?)
    };
    Ok(PackContents {
        chunks,
        description,
    })
}

/// Read a whole pack's index: every chunk in it and where.
#[cfg(test)]
pub fn read_index(
    name: &str,
    pack: &[u8],
    keys: Option<&Keyring>,
) -> Result<Vec<(ChunkId, PackLoc)>, String> {
    match read_tail(name, pack.len() as u64, pack, keys) {
        Ok(c) => Ok(c.chunks),
        Err(TailError::Short(_)) => Err("short".into()),
        Err(TailError::Bad(s)) => Err(s),
    }
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

    fn log() -> LogRecord {
        LogRecord {
            format: 1,
            instance: "db-a".into(),
            name: "000000010000000000000007".into(),
            timeline: 1,
            segno: Some(7),
            size: 16 << 20,
            sha256: "ab".repeat(32),
            modified_at: 5,
            stored_at: 6,
            agent: "db1".into(),
            first_event_at: None,
            chunks: vec![records::ChunkRef(ChunkId::of(b"x").to_hex(), 1)],
        }
    }

    #[test]
    fn a_pack_carries_a_description_read_from_its_tail_alone() {
        let mut b = PackBuilder::default();
        for (id, enc) in chunks() {
            b.add(id, enc);
        }
        b.describe(log());
        let p = b.seal(None);
        let size = p.bytes.len() as u64;
        // A tail too short for the index asks for exactly what it needs.
        let need = match read_tail(&p.name, size, &p.bytes[p.bytes.len() - 20..], None) {
            Err(TailError::Short(n)) => n,
            other => panic!("{other:?}"),
        };
        let tail = &p.bytes[p.bytes.len() - need as usize..];
        let got = read_tail(&p.name, size, tail, None).unwrap();
        assert_eq!(got.chunks, p.chunks);
        assert_eq!(got.description, Some(log()));

        // A description alone (every chunk of the file was stored before) is a pack too.
        let mut only = PackBuilder::default();
        assert!(only.is_empty());
        only.describe(log());
        assert!(!only.is_empty());
        let p = only.seal(None);
        let got = read_tail(&p.name, p.bytes.len() as u64, &p.bytes, None).unwrap();
        assert!(got.chunks.is_empty());
        assert_eq!(got.description, Some(log()));
    }

    #[tokio::test]
    async fn a_sealed_description_is_bound_to_its_pack() {
        let (cat, tmp) = crate::catalog::test_catalog().await;
        let keys = Keyring::open(&cat, true, &tmp.path().join("keys"))
            .await
            .unwrap()
            .unwrap();
        let mut b = PackBuilder::default();
        b.describe(log());
        let p = b.seal(Some(&keys));
        assert!(!p.bytes.windows(4).any(|w| w == b"db-a"));
        let size = p.bytes.len() as u64;
        let got = read_tail(&p.name, size, &p.bytes, Some(&keys)).unwrap();
        assert_eq!(got.description, Some(log()));
        assert!(read_tail(&new_name(), size, &p.bytes, Some(&keys)).is_err());
    }

    #[test]
    fn packs_from_before_descriptions_still_read() {
        // TMP1: chunks, index, then index length, entry count and the magic.
        let plain = vec![7u8; 3000];
        let (id, enc) = (ChunkId::of(&plain), chunk::encode(&plain));
        let mut bytes = enc.clone();
        let mut index = id.0.to_vec();
        index.extend_from_slice(&0u64.to_be_bytes());
        index.extend_from_slice(&(enc.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&index);
        bytes.extend_from_slice(&(index.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&1u32.to_be_bytes());
        bytes.extend_from_slice(b"TMP1");
        let got = read_tail("old", bytes.len() as u64, &bytes, None).unwrap();
        assert_eq!(got.chunks.len(), 1);
        assert_eq!(got.chunks[0].0, id);
        assert_eq!(got.chunks[0].1.len as usize, enc.len());
        assert!(got.description.is_none());
    }
}
