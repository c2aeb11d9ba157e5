//! The end-to-end test harness: throwaway PostgreSQL clusters made with initdb, a fleet CA,
//! and the real tidemark binaries started as processes.
//!
//! Nothing is mocked and nothing is skipped: a missing PostgreSQL or binary fails the test
//! with a message saying what to install or build.

pub mod fleet;
pub mod maria;
pub mod netns;
pub mod pg;
pub mod process;
pub mod raw_agent;
pub mod s3;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where the tidemark binaries are: `TIDEMARK_BIN_DIR`, or the target directory these tests
/// were built into (`cargo build --workspace --bins` must have run).
pub fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("TIDEMARK_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().expect("current exe");
            // target/debug/deps/test-binary -> target/debug
            exe.parent()
                .and_then(Path::parent)
                .expect("target dir")
                .to_path_buf()
        }
    };
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing; build the binaries first: cargo build --workspace --bins (or set TIDEMARK_BIN_DIR)",
        p.display()
    );
    p
}

/// A test's own directory, traversable by the postgres user (initdb refuses root).
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new(label: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("tm-{label}-"))
            .tempdir_in("/tmp")
            .expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod test dir");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Keep the directory after the test (for post-mortems): set TIDEMARK_KEEP_TEST_DIRS=1.
    pub fn keep_if_asked(self) {
        if std::env::var_os("TIDEMARK_KEEP_TEST_DIRS").is_some() {
            let _ = self.dir.keep();
        }
    }
}

/// Now, in unix microseconds.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

pub fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// uid and gid of a local user, from /etc/passwd.
pub fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&name))
            .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
    })
}
