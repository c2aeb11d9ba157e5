//! A real S3-compatible server for tests: `tidemark-test-s3` (s3s-fs) on loopback, storing
//! objects as files under the test directory, so it survives being stopped and started.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::bin;
use crate::process::{Daemon, wait_for};

pub const ACCESS_KEY: &str = "tidemark-test";
pub const SECRET_KEY: &str = "tidemark-test-secret";
pub const BUCKET: &str = "tidemark";

pub struct S3Server {
    pub daemon: Daemon,
    pub root: PathBuf,
    pub endpoint: String,
    log: PathBuf,
    port: u16,
}

/// The store's identity object, at the root of its prefix.
const IDENTITY: &str = "tidemark-store";

impl S3Server {
    /// Start on a free port with bucket [`BUCKET`], storing under `dir/s3`.
    pub fn start(dir: &Path) -> Self {
        let root = dir.join("s3");
        std::fs::create_dir_all(root.join(BUCKET)).unwrap();
        Self::spawn(dir, &root, "127.0.0.1:0", dir.join("s3.log"))
    }

    fn spawn(dir: &Path, root: &Path, listen: &str, log: PathBuf) -> Self {
        let addr_file = dir.join("s3.addr");
        let _ = std::fs::remove_file(&addr_file);
        let mut cmd = Command::new(bin("tidemark-test-s3"));
        cmd.arg("--root")
            .arg(root)
            .args([
                "--listen",
                listen,
                "--access-key",
                ACCESS_KEY,
                "--secret-key",
                SECRET_KEY,
            ])
            .arg("--addr-file")
            .arg(&addr_file);
        let mut daemon = Daemon::spawn("s3 server", cmd, &log);
        let addr = wait_for("the S3 server to listen", Duration::from_secs(20), || {
            if let Some(status) = daemon.has_exited() {
                panic!("the S3 server exited with {status}: {}", daemon.log_text());
            }
            std::fs::read_to_string(&addr_file).ok()
        });
        let addr = addr.trim().to_string();
        let port = addr.rsplit(':').next().unwrap().parse().unwrap();
        Self {
            daemon,
            root: root.into(),
            endpoint: format!("http://{addr}"),
            log,
            port,
        }
    }

    /// Kill it (as a crash would).
    pub fn stop(&mut self) {
        self.daemon.kill9();
    }

    /// Start it again on the same port and data.
    pub fn restart(&mut self, dir: &Path) {
        self.daemon.kill9();
        let listen = format!("127.0.0.1:{}", self.port);
        *self = Self::spawn(
            dir,
            &self.root.clone(),
            &listen,
            self.log.with_extension("restarted.log"),
        );
    }

    /// The controller's `[store]` table for this server, with a credentials file in `dir`.
    pub fn store_toml(&self, dir: &Path) -> String {
        let creds = dir.join("s3-credentials");
        std::fs::write(
            &creds,
            format!("[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
        format!(
            "[store]\nkind = \"s3\"\nbucket = \"{BUCKET}\"\nprefix = \"fleet\"\nendpoint = \"{}\"\npath-style = true\ncredentials-file = \"{}\"\n",
            self.endpoint,
            creds.display()
        )
    }

    /// Every data object's file under the bucket (packs, chunks and quarantine): all but
    /// the store's identity object, which holds only its random id (see
    /// [`identity_files`](Self::identity_files)), and its records (see
    /// [`record_files`](Self::record_files)).
    pub fn object_files(&self) -> Vec<PathBuf> {
        self.all_files()
            .into_iter()
            .filter(|p| p.file_name().is_none_or(|n| n != IDENTITY))
            .filter(|p| !is_record(p))
            .collect()
    }

    /// The store's records: what it says about its backups, archive, instances and keys.
    pub fn record_files(&self) -> Vec<PathBuf> {
        self.all_files()
            .into_iter()
            .filter(|p| is_record(p))
            .collect()
    }

    /// The store identity objects in the bucket (one per store prefix).
    pub fn identity_files(&self) -> Vec<PathBuf> {
        self.all_files()
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|n| n == IDENTITY))
            .collect()
    }

    fn all_files(&self) -> Vec<PathBuf> {
        fn walk(d: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root.join(BUCKET), &mut out);
        out
    }

    /// Stored objects from which `marker` can be read: in the bytes as stored, or in a
    /// chunk of a pack whose index and chunks are in plaintext.
    pub fn objects_revealing(&self, marker: &[u8]) -> Vec<PathBuf> {
        let found = |b: &[u8]| b.windows(marker.len()).any(|w| w == marker);
        self.object_files()
            .into_iter()
            .chain(self.record_files())
            .filter(|p| {
                let bytes = std::fs::read(p).unwrap();
                found(&bytes)
                    || readable_chunks(&bytes).iter().any(|c| found(c))
                    || readable_record(&bytes).is_some_and(|r| found(&r))
            })
            .collect()
    }
}

fn is_record(p: &Path) -> bool {
    p.components().any(|c| c.as_os_str() == "meta")
}

/// The JSON of a plaintext record (`TMR1`, kind 0: SHA-256, then zstd JSON), or of a
/// pack's plaintext description; None for a sealed one.
pub fn readable_record(bytes: &[u8]) -> Option<Vec<u8>> {
    let rec = match bytes.get(..4) {
        Some(b"TMR1") => bytes,
        // A pack: its description sits before the 16-byte TMP2 footer.
        _ if bytes.ends_with(b"TMP2") && bytes.len() >= 16 => {
            let n = bytes.len();
            let desc = u32::from_be_bytes(bytes[n - 8..n - 4].try_into().unwrap()) as usize;
            bytes.get(n - 16 - desc..n - 16)?
        }
        _ => return None,
    };
    if rec.len() < 37 || &rec[..4] != b"TMR1" || rec[4] != 0 {
        return None;
    }
    zstd::decode_all(&rec[37..]).ok()
}

/// The plaintext of every chunk in a pack whose index is readable (an unencrypted store);
/// none for a sealed pack. Reads the documented layout on its own: chunks, the index of
/// (id, offset u64, length u32) entries, the description, then index length, entry count,
/// description length and `TMP2` (or, before descriptions, index length, entry count and
/// `TMP1`).
pub fn readable_chunks(pack: &[u8]) -> Vec<Vec<u8>> {
    let n = pack.len();
    let be = |at: usize| u32::from_be_bytes(pack[at..at + 4].try_into().unwrap()) as usize;
    let (index_len, count, end) = if n >= 16 && &pack[n - 4..] == b"TMP2" {
        (be(n - 16), be(n - 12), n - 16 - be(n - 8).min(n - 16))
    } else if n >= 12 && &pack[n - 4..] == b"TMP1" {
        (be(n - 12), be(n - 8), n - 12)
    } else {
        return Vec::new();
    };
    if index_len != count * 44 || index_len > end {
        return Vec::new();
    }
    pack[end - index_len..end]
        .chunks_exact(44)
        .filter_map(|e| {
            let id = tidemark_core::ids::ChunkId::from_slice(&e[..32]).ok()?;
            let offset = u64::from_be_bytes(e[32..40].try_into().unwrap()) as usize;
            let len = u32::from_be_bytes(e[40..44].try_into().unwrap()) as usize;
            tidemark_core::chunk::decode(&id, pack.get(offset..offset + len)?).ok()
        })
        .collect()
}
