//! The encoded form of a chunk, as it travels and as it is stored: a 4-byte format tag
//! followed by a zstd frame of the plaintext. The tag leaves room for other encodings
//! (encryption at rest) without guessing from the bytes.
//!
//! Decoding always verifies the plaintext against the chunk id: a chunk is never handed on
//! unchecked.

use crate::ids::ChunkId;

const TAG_ZSTD: &[u8; 4] = b"TMZ1";

/// zstd level 3: several times faster than pg_dump's gzip at a similar ratio.
pub const ZSTD_LEVEL: i32 = 3;

/// Largest plaintext chunk the chunker produces, and so the largest accepted anywhere.
pub const MAX_CHUNK_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk {id} has an unknown encoding tag")]
    UnknownEncoding { id: ChunkId },
    #[error("chunk {id} does not decompress: {reason}")]
    Undecodable { id: ChunkId, reason: String },
    #[error("chunk {id} decodes to {actual} bytes, its header says {expected}")]
    WrongLength {
        id: ChunkId,
        expected: usize,
        actual: usize,
    },
    #[error("chunk {id} does not match its id: its content hashes to {actual}")]
    DigestMismatch { id: ChunkId, actual: ChunkId },
}

pub fn encode(plaintext: &[u8]) -> Vec<u8> {
    // Compressed in place after the tag, into room for the worst case, then cut to size:
    // one buffer, where compressing apart and prepending the tag took two and a copy. The
    // frame records the content size in its header (the one-shot API knows it), which
    // decode relies on to size its buffer without trusting anything else.
    let mut out = vec![0u8; TAG_ZSTD.len() + zstd::zstd_safe::compress_bound(plaintext.len())];
    out[..TAG_ZSTD.len()].copy_from_slice(TAG_ZSTD);
    // Fails only when the room is too small, and compress_bound is the worst case.
    let n = zstd::bulk::compress_to_buffer(plaintext, &mut out[TAG_ZSTD.len()..], ZSTD_LEVEL)
        .expect("zstd into a buffer of compress_bound bytes");
    out.truncate(TAG_ZSTD.len() + n);
    // The unused room goes back (a large allocation shrinks in place).
    out.shrink_to_fit();
    out
}

/// Decode `encoded` and check that its plaintext hashes to `id`.
pub fn decode(id: &ChunkId, encoded: &[u8]) -> Result<Vec<u8>, ChunkError> {
    let body = encoded
        .strip_prefix(TAG_ZSTD.as_slice())
        .ok_or(ChunkError::UnknownEncoding { id: *id })?;
    let undecodable = |reason: String| ChunkError::Undecodable { id: *id, reason };
    let size = zstd::zstd_safe::get_frame_content_size(body)
        .map_err(|_| undecodable("no valid zstd frame header".into()))?
        .ok_or_else(|| undecodable("zstd frame does not record its size".into()))?;
    if size > MAX_CHUNK_BYTES as u64 {
        return Err(undecodable(format!(
            "claims {size} bytes, above the {MAX_CHUNK_BYTES} limit"
        )));
    }
    let plaintext =
        zstd::bulk::decompress(body, size as usize).map_err(|e| undecodable(e.to_string()))?;
    if plaintext.len() as u64 != size {
        return Err(ChunkError::WrongLength {
            id: *id,
            expected: size as usize,
            actual: plaintext.len(),
        });
    }
    let actual = ChunkId::of(&plaintext);
    if actual != *id {
        return Err(ChunkError::DigestMismatch { id: *id, actual });
    }
    Ok(plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_corruption_is_caught() {
        let plain = b"some table data ".repeat(1000);
        let id = ChunkId::of(&plain);
        let enc = encode(&plain);
        assert!(enc.len() < plain.len());
        assert_eq!(decode(&id, &enc).unwrap(), plain);

        let other = ChunkId::of(b"other");
        assert!(matches!(
            decode(&other, &enc),
            Err(ChunkError::DigestMismatch { .. })
        ));
        for i in [4, 10, enc.len() / 2, enc.len() - 1] {
            let mut flipped = enc.clone();
            flipped[i] ^= 0x40;
            assert!(decode(&id, &flipped).is_err(), "flip at {i} went unnoticed");
        }
        assert!(decode(&id, &enc[..enc.len() - 3]).is_err());
        assert!(matches!(
            decode(&id, &enc[4..]),
            Err(ChunkError::UnknownEncoding { .. })
        ));
    }

    #[test]
    fn incompressible_and_empty_chunks_round_trip_and_hold_no_spare_room() {
        // A chunk waits in queues after it is encoded: room left over from compression
        // would be held with it (4 MiB of capacity for a chunk that shrank to 1 MiB).
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..4 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let text = b"0123456789abcdef".repeat(1 << 16);
        for plain in [noise, text, Vec::new()] {
            let enc = encode(&plain);
            assert_eq!(enc.capacity(), enc.len());
            assert_eq!(decode(&ChunkId::of(&plain), &enc).unwrap(), plain);
        }
    }
}
