//! A streaming reader of mariabackup's xbstream format, for checking a backup as it is
//! uploaded and for reading the binlog position out of it.
//!
//! An xbstream is a sequence of chunks, each `XBSTCK01`, a flags byte, a type byte, a u32
//! path length and the path; then, except for the end-of-file type `E`, a u64 payload
//! length, a u64 offset, a CRC32 of the payload and the payload (a sparse chunk `S` also
//! has a map of holes before its payload). All integers are little-endian.

use std::collections::HashSet;

use crate::upload::Malformed;

const MAGIC: &[u8; 8] = b"XBSTCK01";
const FIXED: usize = 14; // magic, flags, type, path length
const MAX_PATH: usize = 4096;
/// The file mariabackup writes the binlog position it copied at into.
pub const BINLOG_INFO: &str = "xtrabackup_binlog_info";
const CHECKPOINTS: &str = "xtrabackup_checkpoints";

#[derive(Default)]
pub struct XbstreamCheck {
    header: Vec<u8>,
    /// Payload bytes still to come in the current chunk.
    remaining: u64,
    crc: Option<(crc32fast::Hasher, u32)>,
    keep: bool,
    current: String,
    open: HashSet<String>,
    seen: HashSet<String>,
    pub chunks: u64,
    pub sparse_chunks: u64,
    pub binlog_info: Vec<u8>,
    error: Option<Malformed>,
}

impl XbstreamCheck {
    /// The whole header's length, once enough of it is known to tell.
    fn header_len(&self) -> Option<Result<usize, Malformed>> {
        let h = &self.header;
        if h.len() < FIXED {
            return None;
        }
        if &h[..8] != MAGIC {
            return Some(Err(Malformed(format!(
                "not an xbstream chunk at a chunk boundary (found {:?})",
                String::from_utf8_lossy(&h[..8])
            ))));
        }
        let path_len = u32::from_le_bytes(h[10..14].try_into().unwrap()) as usize;
        if path_len > MAX_PATH {
            return Some(Err(Malformed(format!(
                "a chunk names a path of {path_len} bytes"
            ))));
        }
        let base = FIXED + path_len;
        Some(Ok(match h[9] {
            b'E' => base,
            b'P' => base + 20,
            b'S' => {
                if h.len() < base + 4 {
                    return None;
                }
                let holes = u32::from_le_bytes(h[base..base + 4].try_into().unwrap()) as usize;
                base + 4 + 20 + holes * 8
            }
            t => {
                return Some(Err(Malformed(format!(
                    "unknown xbstream chunk type {:?}",
                    t as char
                ))));
            }
        }))
    }

    fn start_chunk(&mut self) -> Result<(), Malformed> {
        let h = std::mem::take(&mut self.header);
        let path_len = u32::from_le_bytes(h[10..14].try_into().unwrap()) as usize;
        let path = String::from_utf8_lossy(&h[FIXED..FIXED + path_len]).into_owned();
        self.chunks += 1;
        let kind = h[9];
        if kind == b'E' {
            // An empty file has only its end chunk.
            self.open.remove(&path);
            self.seen.insert(path);
            return Ok(());
        }
        let mut at = FIXED + path_len;
        if kind == b'S' {
            at += 4;
            self.sparse_chunks += 1;
        }
        let len = u64::from_le_bytes(h[at..at + 8].try_into().unwrap());
        let crc = u32::from_le_bytes(h[at + 16..at + 20].try_into().unwrap());
        self.remaining = len;
        // A sparse chunk's checksum layout differs between versions: its structure is
        // checked, its payload is not.
        self.crc = (kind == b'P').then(|| (crc32fast::Hasher::new(), crc));
        self.keep = path == BINLOG_INFO;
        self.open.insert(path.clone());
        self.seen.insert(path.clone());
        self.current = path;
        self.end_payload_if_done()
    }

    fn end_payload_if_done(&mut self) -> Result<(), Malformed> {
        if self.remaining == 0
            && let Some((h, want)) = self.crc.take()
        {
            let got = h.finalize();
            if got != want {
                return Err(Malformed(format!(
                    "a chunk of {} fails its CRC32 (stored {want:08x}, computed {got:08x})",
                    self.current
                )));
            }
        }
        Ok(())
    }

    fn step(&mut self, mut bytes: &[u8]) -> Result<(), Malformed> {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let n = bytes.len().min(self.remaining as usize);
                let (payload, rest) = bytes.split_at(n);
                if let Some((h, _)) = &mut self.crc {
                    h.update(payload);
                }
                if self.keep && self.binlog_info.len() < 4096 {
                    self.binlog_info.extend_from_slice(payload);
                }
                self.remaining -= n as u64;
                bytes = rest;
                self.end_payload_if_done()?;
                continue;
            }
            // Header bytes: take only what this header still needs.
            let need = match self.header_len() {
                None => FIXED.max(self.header.len() + 1),
                Some(Err(e)) => return Err(e),
                Some(Ok(n)) => n,
            };
            let n = (need - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if let Some(Ok(total)) = self.header_len()
                && self.header.len() == total
            {
                self.start_chunk()?;
            }
        }
        Ok(())
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        if self.error.is_none()
            && let Err(e) = self.step(bytes)
        {
            self.error = Some(e);
        }
    }

    /// The stream ended: was it whole?
    pub fn finish(&self) -> Result<String, Malformed> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.remaining > 0 || !self.header.is_empty() {
            return Err(Malformed(
                "the stream ends inside a chunk; it is truncated".into(),
            ));
        }
        if let Some(open) = self.open.iter().next() {
            return Err(Malformed(format!(
                "{} file(s) were never closed, {open} among them; the stream is truncated",
                self.open.len()
            )));
        }
        if !self.seen.contains(CHECKPOINTS) {
            return Err(Malformed(format!(
                "the stream has no {CHECKPOINTS}; it is not a complete mariabackup backup"
            )));
        }
        Ok(format!(
            "xbstream of {} files in {} chunks, every chunk's CRC32 matched{}",
            self.seen.len(),
            self.chunks,
            if self.sparse_chunks > 0 {
                format!(
                    " ({} sparse chunks checked for structure only)",
                    self.sparse_chunks
                )
            } else {
                String::new()
            }
        ))
    }

    /// `file<TAB>position<TAB>gtid` from xtrabackup_binlog_info.
    pub fn binlog_position(&self) -> Option<(String, u64, String)> {
        let text = String::from_utf8_lossy(&self.binlog_info);
        let mut f = text.trim().split('\t');
        let file = f.next()?.to_string();
        let pos = f.next()?.trim().parse().ok()?;
        let gtid = f.next().unwrap_or("").trim().to_string();
        (!file.is_empty()).then_some((file, pos, gtid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(kind: u8, path: &str, payload: &[u8]) -> Vec<u8> {
        let mut v = MAGIC.to_vec();
        v.push(0);
        v.push(kind);
        v.extend((path.len() as u32).to_le_bytes());
        v.extend(path.as_bytes());
        if kind != b'E' {
            v.extend((payload.len() as u64).to_le_bytes());
            v.extend(0u64.to_le_bytes());
            v.extend(crc32fast::hash(payload).to_le_bytes());
            v.extend(payload);
        }
        v
    }

    fn stream() -> Vec<u8> {
        let mut s = Vec::new();
        s.extend(chunk(b'P', "ibdata1", &[7u8; 10000]));
        s.extend(chunk(b'P', BINLOG_INFO, b"mysql-bin.000002\t601\t0-1-5\n"));
        s.extend(chunk(b'P', "ibdata1", &[8u8; 300]));
        s.extend(chunk(b'E', BINLOG_INFO, b""));
        s.extend(chunk(b'P', CHECKPOINTS, b"backup_type = full-backuped\n"));
        s.extend(chunk(b'E', CHECKPOINTS, b""));
        s.extend(chunk(b'E', "ibdata1", b""));
        s
    }

    fn check(bytes: &[u8], step: usize) -> XbstreamCheck {
        let mut c = XbstreamCheck::default();
        for piece in bytes.chunks(step) {
            c.feed(piece);
        }
        c
    }

    #[test]
    fn a_whole_stream_passes_in_any_slicing() {
        let s = stream();
        for step in [1, 3, 14, 17, 4096, s.len()] {
            let c = check(&s, step);
            assert!(c.finish().is_ok(), "step {step}: {:?}", c.finish());
            assert_eq!(
                c.binlog_position(),
                Some(("mysql-bin.000002".into(), 601, "0-1-5".into()))
            );
        }
    }

    #[test]
    fn truncation_and_damage_are_found() {
        let s = stream();
        let cut = check(&s[..s.len() - 30], 64);
        assert!(
            cut.finish().unwrap_err().0.contains("truncated"),
            "{:?}",
            cut.finish()
        );
        let mut flipped = s.clone();
        flipped[100] ^= 1;
        assert!(
            check(&flipped, 64)
                .finish()
                .unwrap_err()
                .0
                .contains("CRC32")
        );
        let garbage = check(b"this is not an xbstream at all", 8);
        assert!(garbage.finish().unwrap_err().0.contains("not an xbstream"));
    }
}
