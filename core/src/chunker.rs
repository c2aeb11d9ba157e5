//! Content-defined chunking of a tool's output as it streams.
//!
//! The chunker reads through a [`HashingReader`], so the digest of the whole stream is taken
//! from the bytes as they came out of the tool, independently of the chunk boundaries: the
//! controller rebuilds the stream from stored chunks and must arrive at the same digest.

use std::io::{self, Read};

use fastcdc::v2020::StreamCDC;
use sha2::{Digest, Sha256};

use crate::ids::ChunkId;

/// FastCDC sizes: about 1 MiB on average, which keeps per-chunk overhead (a catalog row, a
/// file, a round trip) small while still finding unchanged regions of a dump.
pub const MIN_CHUNK: usize = 256 * 1024;
pub const AVG_CHUNK: usize = 1024 * 1024;
pub const MAX_CHUNK: usize = 4 * 1024 * 1024;

/// A reader stage that hashes and counts every byte passing through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }
}

impl<R> HashingReader<R> {
    pub fn finish(self) -> ([u8; 32], u64) {
        (self.hasher.finalize().into(), self.bytes)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// One chunk cut from the stream, with its id.
pub struct Chunk {
    pub id: ChunkId,
    pub data: Vec<u8>,
}

/// What the whole stream was, once it has been read to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSummary {
    pub sha256: [u8; 32],
    pub bytes: u64,
    pub chunks: u64,
}

/// Cut `source` into chunks and hand each to `sink`, in stream order. Returns when the source
/// ends, or with the first error from the source or the sink (a sink error stops reading).
pub fn chunk_stream<R: Read>(
    source: R,
    mut sink: impl FnMut(Chunk) -> io::Result<()>,
) -> io::Result<StreamSummary> {
    let mut reader = HashingReader::new(source);
    let mut chunks = 0u64;
    let mut chunked_bytes = 0u64;
    {
        let cdc = StreamCDC::new(&mut reader, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK);
        for piece in cdc {
            let piece = piece.map_err(|e| match e {
                fastcdc::v2020::Error::IoError(io) => io,
                other => io::Error::other(other.to_string()),
            })?;
            chunks += 1;
            chunked_bytes += piece.data.len() as u64;
            sink(Chunk {
                id: ChunkId::of(&piece.data),
                data: piece.data,
            })?;
        }
    }
    let (sha256, bytes) = reader.finish();
    if bytes != chunked_bytes {
        return Err(io::Error::other(format!(
            "chunker lost bytes: read {bytes}, chunked {chunked_bytes}"
        )));
    }
    Ok(StreamSummary {
        sha256,
        bytes,
        chunks,
    })
}

/// Cut `source` into chunks of exactly `size` bytes (the last may be shorter), for streams
/// that do not repeat across versions (WAL), where finding boundaries by content would only
/// cost time and make more, smaller chunks.
pub fn chunk_fixed<R: Read>(
    source: R,
    size: usize,
    mut sink: impl FnMut(Chunk) -> io::Result<()>,
) -> io::Result<StreamSummary> {
    let mut reader = HashingReader::new(source);
    let mut chunks = 0u64;
    loop {
        let mut data = Vec::with_capacity(size);
        (&mut reader).take(size as u64).read_to_end(&mut data)?;
        if data.is_empty() {
            break;
        }
        chunks += 1;
        sink(Chunk {
            id: ChunkId::of(&data),
            data,
        })?;
    }
    let (sha256, bytes) = reader.finish();
    Ok(StreamSummary {
        sha256,
        bytes,
        chunks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn ids(data: &[u8]) -> (Vec<ChunkId>, StreamSummary) {
        let mut out = Vec::new();
        let summary = chunk_stream(data, |c| {
            assert!(c.data.len() <= MAX_CHUNK);
            out.push(c.id);
            Ok(())
        })
        .unwrap();
        (out, summary)
    }

    #[test]
    fn stream_digest_covers_every_byte_and_chunks_reassemble() {
        let data = pseudo_random(9 * 1024 * 1024 + 17, 7);
        let mut joined = Vec::new();
        let summary = chunk_stream(&data[..], |c| {
            joined.extend_from_slice(&c.data);
            Ok(())
        })
        .unwrap();
        assert_eq!(joined, data);
        assert_eq!(summary.bytes, data.len() as u64);
        assert_eq!(summary.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
        assert!(summary.chunks >= 3, "{} chunks", summary.chunks);
    }

    #[test]
    fn an_insertion_changes_only_nearby_chunks() {
        let data = pseudo_random(16 * 1024 * 1024, 3);
        let mut edited = data.clone();
        edited.splice(
            8 * 1024 * 1024..8 * 1024 * 1024,
            b"inserted row".iter().copied(),
        );
        let (a, _) = ids(&data);
        let (b, _) = ids(&edited);
        let shared = b.iter().filter(|id| a.contains(id)).count();
        assert!(
            shared + 2 >= b.len(),
            "only {shared} of {} chunks shared",
            b.len()
        );
    }

    #[test]
    fn sink_error_stops_the_stream() {
        let data = pseudo_random(4 * 1024 * 1024, 1);
        let err = chunk_stream(&data[..], |_| Err(io::Error::other("receiver gone"))).unwrap_err();
        assert_eq!(err.to_string(), "receiver gone");
    }

    #[test]
    fn fixed_chunks_cover_the_stream_exactly() {
        let data = pseudo_random(9 * 1024 * 1024 + 5, 9);
        let mut lens = Vec::new();
        let summary = chunk_fixed(&data[..], 4 << 20, |c| {
            assert_eq!(c.id, ChunkId::of(&c.data));
            lens.push(c.data.len());
            Ok(())
        })
        .unwrap();
        assert_eq!(lens, vec![4 << 20, 4 << 20, 1024 * 1024 + 5]);
        assert_eq!(summary.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
        assert_eq!(summary.chunks, 3);
    }

    #[test]
    fn empty_stream_has_no_chunks() {
        let (ids, summary) = ids(b"");
        assert!(ids.is_empty());
        assert_eq!(summary.bytes, 0);
    }
}
