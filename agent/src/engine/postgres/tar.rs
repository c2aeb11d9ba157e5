//! Watching a tar stream go by: member names, the end-of-archive marker, and the contents of
//! a few small members (a base backup's `backup_label` and `tablespace_map`), without
//! buffering the stream or slowing it down.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};

const BLOCK: usize = 512;
/// Members captured are small text files; anything larger is only counted.
const CAPTURE_LIMIT: u64 = 1 << 20;

/// What was seen in the stream.
#[derive(Debug, Default, Clone)]
pub struct TarSummary {
    pub members: u64,
    /// Names of the members seen, when asked to remember them (see [`TarTap::new`]).
    pub seen: Vec<String>,
    pub captured: BTreeMap<String, Vec<u8>>,
    /// An all-zero block where a header was due: the archive was closed properly.
    pub ended: bool,
    /// The stream could not be parsed as tar at this offset.
    pub malformed: Option<String>,
}

enum State {
    Header,
    Body {
        remaining: u64,
        capture: Option<String>,
    },
    Padding {
        remaining: u64,
    },
    Ended,
}

/// A reader that passes bytes through while parsing them as tar.
pub struct TarTap<R> {
    inner: R,
    want: Vec<String>,
    remember: Vec<String>,
    state: State,
    header: Vec<u8>,
    offset: u64,
    summary: Arc<Mutex<TarSummary>>,
}

impl<R: Read> TarTap<R> {
    /// Capture members named in `want`; remember whether the names in `remember` occur.
    pub fn new(inner: R, want: &[&str], remember: &[&str]) -> (Self, Arc<Mutex<TarSummary>>) {
        let summary = Arc::new(Mutex::new(TarSummary::default()));
        (
            Self {
                inner,
                want: want.iter().map(|s| s.to_string()).collect(),
                remember: remember.iter().map(|s| s.to_string()).collect(),
                state: State::Header,
                header: Vec::with_capacity(BLOCK),
                offset: 0,
                summary: summary.clone(),
            },
            summary,
        )
    }

    fn observe(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() {
            match &mut self.state {
                State::Ended => return,
                State::Header => {
                    let take = (BLOCK - self.header.len()).min(buf.len());
                    self.header.extend_from_slice(&buf[..take]);
                    buf = &buf[take..];
                    self.offset += take as u64;
                    if self.header.len() == BLOCK {
                        let h = std::mem::take(&mut self.header);
                        self.state = self.parse_header(&h);
                    }
                }
                State::Body { remaining, capture } => {
                    let take = (*remaining).min(buf.len() as u64) as usize;
                    if let Some(name) = capture {
                        let mut s = self.summary.lock().unwrap();
                        s.captured
                            .entry(name.clone())
                            .or_default()
                            .extend_from_slice(&buf[..take]);
                    }
                    *remaining -= take as u64;
                    buf = &buf[take..];
                    self.offset += take as u64;
                    if *remaining == 0 {
                        self.state = State::Padding { remaining: 0 };
                        self.fix_padding();
                    }
                }
                State::Padding { remaining } => {
                    let take = (*remaining).min(buf.len() as u64) as usize;
                    *remaining -= take as u64;
                    buf = &buf[take..];
                    self.offset += take as u64;
                    if *remaining == 0 {
                        self.state = State::Header;
                    }
                }
            }
        }
    }

    /// After a body, skip to the next 512-byte boundary.
    fn fix_padding(&mut self) {
        let pad = (BLOCK as u64 - self.offset % BLOCK as u64) % BLOCK as u64;
        self.state = if pad == 0 {
            State::Header
        } else {
            State::Padding { remaining: pad }
        };
    }

    fn parse_header(&mut self, h: &[u8]) -> State {
        if h.iter().all(|b| *b == 0) {
            self.summary.lock().unwrap().ended = true;
            return State::Ended;
        }
        let mut s = self.summary.lock().unwrap();
        if !h[257..262].eq(b"ustar") {
            s.malformed = Some(format!(
                "no tar header at offset {}",
                self.offset - BLOCK as u64
            ));
            return State::Ended;
        }
        let name_end = h[..100].iter().position(|b| *b == 0).unwrap_or(100);
        let name = String::from_utf8_lossy(&h[..name_end]).into_owned();
        let Some(size) = tar_size(&h[124..136]) else {
            s.malformed = Some(format!("bad size field in the header of {name:?}"));
            return State::Ended;
        };
        s.members += 1;
        if self.remember.contains(&name) {
            s.seen.push(name.clone());
        }
        let capture = (self.want.contains(&name) && size <= CAPTURE_LIMIT).then(|| {
            s.captured.insert(name.clone(), Vec::new());
            name
        });
        drop(s);
        if size == 0 {
            State::Header
        } else {
            State::Body {
                remaining: size,
                capture,
            }
        }
    }
}

/// A header's size field: octal text, or base-256 (high bit set) for sizes of 8 GiB and up.
fn tar_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut v: u64 = (field[0] & 0x7f) as u64;
        for b in &field[1..] {
            v = v.checked_mul(256)? + *b as u64;
        }
        return Some(v);
    }
    let text: String = field
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| *b as char)
        .collect();
    let t = text.trim();
    if t.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(t, 8).ok()
}

impl<R: Read> Read for TarTap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.observe(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, size: u64) -> Vec<u8> {
        let mut h = vec![0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let sz = format!("{size:011o}");
        h[124..135].copy_from_slice(sz.as_bytes());
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h
    }

    fn member(name: &str, body: &[u8]) -> Vec<u8> {
        let mut out = header(name, body.len() as u64);
        out.extend_from_slice(body);
        out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
        out
    }

    #[test]
    fn captures_small_members_and_sees_the_end_through_odd_reads() {
        let mut tar = member("backup_label", b"START WAL LOCATION: 0/2000028\n");
        tar.extend(member("base/1/1259", &vec![7u8; 70_000]));
        tar.extend(member("global/pg_control", &[1u8; 8192]));
        tar.extend(vec![0u8; 2 * BLOCK]);
        let (mut tap, summary) = TarTap::new(&tar[..], &["backup_label"], &["global/pg_control"]);
        // Read in awkward sizes so headers and bodies straddle reads.
        let mut out = Vec::new();
        let mut buf = [0u8; 333];
        loop {
            let n = tap.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, tar);
        let s = summary.lock().unwrap().clone();
        assert_eq!(s.members, 3);
        assert!(s.ended);
        assert_eq!(s.seen, vec!["global/pg_control".to_string()]);
        assert_eq!(
            s.captured["backup_label"],
            b"START WAL LOCATION: 0/2000028\n"
        );
        assert!(s.malformed.is_none());
    }

    #[test]
    fn a_truncated_or_foreign_stream_is_noticed() {
        let tar = member("backup_label", b"x");
        let (mut tap, summary) = TarTap::new(&tar[..], &[], &[]);
        io::copy(&mut tap, &mut io::sink()).unwrap();
        assert!(!summary.lock().unwrap().ended, "no end marker, yet ended");
        let junk = vec![b'j'; 1024];
        let (mut tap, summary) = TarTap::new(&junk[..], &[], &[]);
        io::copy(&mut tap, &mut io::sink()).unwrap();
        assert!(summary.lock().unwrap().malformed.is_some());
        assert_eq!(
            tar_size(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0]),
            Some(512)
        );
    }
}
