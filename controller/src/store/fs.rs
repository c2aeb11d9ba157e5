//! A content-addressed store on a local filesystem: packs in `packs/ab/abcdef…`, records
//! (what the store says about its backups) in `meta/…`, and chunks stored before packs
//! existed in `chunks/ab/abcdef…`.
//!
//! A chunk becomes visible only complete and durable: it is written to a temp file, fsynced,
//! renamed into place and the directory fsynced. A crash leaves at most a stray temp file,
//! never a short chunk under a real name.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use tidemark_core::ids::ChunkId;

use super::{ChunkStore, StoreError};

/// The identity object's name, at the store's root.
const IDENTITY: &str = "tidemark-store";

/// Cheap to clone: blocking file work runs on its own thread with a handle of its own.
#[derive(Clone)]
pub struct FsStore {
    root: Arc<PathBuf>,
    tmp_seq: Arc<AtomicU64>,
}

impl FsStore {
    /// Open the store at `root`. Nothing is created: a store is laid out only when it is
    /// initialised ([`ChunkStore::initialize`]), so an unmounted volume is never mistaken
    /// for an empty store.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        // Temp files left by a crash are never referenced; clear them.
        if let Ok(entries) = fs::read_dir(root.join("tmp")) {
            for e in entries.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(Self {
            root: Arc::new(root.to_path_buf()),
            tmp_seq: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Make the layout (idempotent): every fan-out directory exists and is durable from
    /// the start, so a put never depends on another put's directory creation having
    /// reached the disk.
    fn make_layout(root: &Path) -> Result<(), StoreError> {
        for dir in ["chunks", "packs", "meta", "tmp", "quarantine"] {
            let p = root.join(dir);
            fs::create_dir_all(&p).map_err(|e| StoreError::io(p.display(), e))?;
        }
        for top in ["chunks", "packs"] {
            let top = root.join(top);
            for b in 0..=255u8 {
                let d = top.join(format!("{b:02x}"));
                if !d.exists() {
                    fs::create_dir(&d).map_err(|e| StoreError::io(d.display(), e))?;
                }
            }
            sync_dir(&top)?;
        }
        sync_dir(root)
    }

    fn identity_path(&self) -> PathBuf {
        self.root.join(IDENTITY)
    }

    pub fn chunk_path(&self, id: &ChunkId) -> PathBuf {
        let hex = id.to_hex();
        self.root.join("chunks").join(&hex[..2]).join(hex)
    }

    fn put_blocking(&self, id: &ChunkId, encoded: &[u8]) -> Result<bool, StoreError> {
        let path = self.chunk_path(id);
        // A file can be here without the catalog knowing it (an upload that failed before
        // its manifest was committed). Adopt it only if it holds exactly these verified
        // bytes; otherwise replace it below, atomically.
        match fs::read(&path) {
            Ok(existing) if existing == encoded => {
                // Another put may have renamed it in without having synced yet; make sure
                // it is durable before our caller vouches for it.
                File::open(&path)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| StoreError::io(path.display(), e))?;
                sync_dir(path.parent().expect("chunk path has a parent"))?;
                return Ok(false);
            }
            Ok(_) => {
                tracing::warn!(chunk = %id, "stored chunk differs from a verified upload; replacing it")
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(path.display(), e)),
        }
        let dir = path.parent().expect("chunk path has a parent");
        let tmp = self.write_temp(&id.to_hex(), encoded)?;
        // rename replaces atomically; a racing put of the same id wrote the same bytes.
        fs::rename(&tmp, &path).map_err(|e| StoreError::io(path.display(), e))?;
        sync_dir(dir)?;
        Ok(true)
    }
}

impl FsStore {
    /// Where pack `name` lives. Names are the controller's own random hex; anything else
    /// is refused rather than joined into a path.
    pub fn pack_path(&self, name: &str) -> Result<PathBuf, StoreError> {
        if name.len() != 32 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::io(
                format!("pack {name:?}"),
                std::io::Error::new(ErrorKind::InvalidInput, "not a pack name"),
            ));
        }
        Ok(self.root.join("packs").join(&name[..2]).join(name))
    }

    /// `bytes` in a new, fsynced file under `tmp/`, named after `stem`, ready to be moved
    /// into place.
    fn write_temp(&self, stem: &str, bytes: &[u8]) -> Result<PathBuf, StoreError> {
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{stem}.{}.{seq}", std::process::id()));
        let io = |e| StoreError::io(tmp.display(), e);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        Ok(tmp)
    }

    fn put_pack_blocking(&self, path: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.create_blocking(path, &format!("pack-{name}"), bytes, || {
            StoreError::PackExists(name.to_string())
        })
    }

    /// Write `bytes` at `path` durably, only if nothing is there (`taken` otherwise). A hard
    /// link from a synced temp file, unlike a rename, never replaces: objects are written
    /// once.
    fn create_blocking(
        &self,
        path: &Path,
        stem: &str,
        bytes: &[u8],
        taken: impl FnOnce() -> StoreError,
    ) -> Result<(), StoreError> {
        let tmp = self.write_temp(stem, bytes)?;
        let linked = fs::hard_link(&tmp, path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(taken()),
            other => other.map_err(|e| StoreError::io(path.display(), e)),
        }?;
        sync_dir(path.parent().expect("an object path has a parent"))
    }

    fn record_path(&self, name: &str) -> Result<PathBuf, StoreError> {
        super::check_record_name(name)?;
        Ok(self.root.join("meta").join(name))
    }

    /// Make `dir` and its parents below the store's root, each durable.
    fn make_dirs(&self, dir: &Path) -> Result<(), StoreError> {
        if dir.is_dir() {
            return Ok(());
        }
        let parent = dir.parent().expect("below the store's root");
        self.make_dirs(parent)?;
        match fs::create_dir(dir) {
            Err(e) if e.kind() != ErrorKind::AlreadyExists => {
                return Err(StoreError::io(dir.display(), e));
            }
            _ => {}
        }
        sync_dir(parent)
    }
}

fn read_range(path: &Path, name: &str, offset: u64, len: u32) -> Result<Vec<u8>, StoreError> {
    use std::io::{Read, Seek, SeekFrom};
    let io = |e| StoreError::io(path.display(), e);
    let mut f = match File::open(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(StoreError::PackNotFound(name.to_string()));
        }
        other => other.map_err(io)?,
    };
    let size = f.metadata().map_err(io)?.len();
    if offset + u64::from(len) > size {
        return Err(super::short_pack(name, size, offset, len));
    }
    f.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut out = vec![0; len as usize];
    f.read_exact(&mut out).map_err(io)?;
    Ok(out)
}

/// Every file below `dir`, as paths relative to `base` joined with `/`.
fn walk_files(base: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), StoreError> {
    let entries = match fs::read_dir(dir) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        other => other.map_err(|e| StoreError::io(dir.display(), e))?,
    };
    for e in entries {
        let e = e.map_err(|e| StoreError::io(dir.display(), e))?;
        let path = e.path();
        if e.file_type()
            .map_err(|e| StoreError::io(path.display(), e))?
            .is_dir()
        {
            walk_files(base, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(base) {
            let parts: Vec<_> = rel.iter().map(|p| p.to_string_lossy()).collect();
            out.push(parts.join("/"));
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir.display(), e))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StoreError::io("blocking task", std::io::Error::other(e))))
}

#[async_trait]
impl ChunkStore for FsStore {
    async fn put(&self, id: &ChunkId, encoded: &[u8]) -> Result<bool, StoreError> {
        let this = self.clone();
        let (id, encoded) = (*id, encoded.to_vec());
        blocking(move || this.put_blocking(&id, &encoded)).await
    }

    async fn get(&self, id: &ChunkId) -> Result<Vec<u8>, StoreError> {
        let (path, id) = (self.chunk_path(id), *id);
        blocking(move || match fs::read(&path) {
            Err(e) if e.kind() == ErrorKind::NotFound => Err(StoreError::NotFound(id)),
            other => other.map_err(|e| StoreError::io(path.display(), e)),
        })
        .await
    }

    async fn exists(&self, id: &ChunkId) -> Result<bool, StoreError> {
        let path = self.chunk_path(id);
        blocking(move || Ok(path.exists())).await
    }

    async fn quarantine(&self, id: &ChunkId) -> Result<(), StoreError> {
        let path = self.chunk_path(id);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let dest = self
            .root
            .join("quarantine")
            .join(format!("{}.{stamp}", id.to_hex()));
        blocking(move || match fs::rename(&path, &dest) {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            other => other.map_err(|e| StoreError::io(path.display(), e)),
        })
        .await
    }

    async fn list(&self) -> Result<Vec<ChunkId>, StoreError> {
        let chunks = self.root.join("chunks");
        blocking(move || {
            let mut out = Vec::new();
            let fans = match fs::read_dir(&chunks) {
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(out),
                other => other.map_err(|e| StoreError::io(chunks.display(), e))?,
            };
            for fan in fans {
                let fan = fan.map_err(|e| StoreError::io(chunks.display(), e))?;
                let dir = fan.path();
                for f in fs::read_dir(&dir).map_err(|e| StoreError::io(dir.display(), e))? {
                    let f = f.map_err(|e| StoreError::io(dir.display(), e))?;
                    if let Some(id) = f
                        .file_name()
                        .to_str()
                        .and_then(|n| n.parse::<ChunkId>().ok())
                    {
                        out.push(id);
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn delete(&self, id: &ChunkId) -> Result<(), StoreError> {
        remove_durably(self.chunk_path(id)).await
    }

    async fn put_pack(&self, name: &str, bytes: Bytes) -> Result<(), StoreError> {
        let path = self.pack_path(name)?;
        let (this, name) = (self.clone(), name.to_string());
        blocking(move || this.put_pack_blocking(&path, &name, &bytes)).await
    }

    async fn get_pack_range(
        &self,
        name: &str,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, StoreError> {
        let path = self.pack_path(name)?;
        let name = name.to_string();
        blocking(move || read_range(&path, &name, offset, len)).await
    }

    async fn list_packs(&self) -> Result<Vec<super::PackInfo>, StoreError> {
        let packs = self.root.join("packs");
        blocking(move || {
            let mut out = Vec::new();
            let fans = match fs::read_dir(&packs) {
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(out),
                other => other.map_err(|e| StoreError::io(packs.display(), e))?,
            };
            for fan in fans {
                let dir = fan.map_err(|e| StoreError::io(packs.display(), e))?.path();
                for f in fs::read_dir(&dir).map_err(|e| StoreError::io(dir.display(), e))? {
                    let f = f.map_err(|e| StoreError::io(dir.display(), e))?;
                    let meta = f.metadata().map_err(|e| StoreError::io(dir.display(), e))?;
                    let modified = meta
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_secs() as i64);
                    out.push(super::PackInfo {
                        name: f.file_name().to_string_lossy().into_owned(),
                        size: meta.len(),
                        modified,
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn delete_pack(&self, name: &str) -> Result<(), StoreError> {
        remove_durably(self.pack_path(name)?).await
    }

    async fn put_record(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.record_path(name)?;
        let (this, name, bytes) = (self.clone(), name.to_string(), bytes.to_vec());
        blocking(move || {
            this.make_dirs(path.parent().expect("a record path has a parent"))?;
            let stem = format!("record-{}", name.replace('/', "_"));
            this.create_blocking(&path, &stem, &bytes, || StoreError::RecordExists(name))
        })
        .await
    }

    async fn get_record(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.record_path(name)?;
        let name = name.to_string();
        blocking(move || match fs::read(&path) {
            Err(e) if e.kind() == ErrorKind::NotFound => Err(StoreError::RecordNotFound(name)),
            other => other.map_err(|e| StoreError::io(path.display(), e)),
        })
        .await
    }

    async fn list_records(&self, under: &str) -> Result<Vec<String>, StoreError> {
        let base = self.root.join("meta");
        let dir = match under.trim_end_matches('/') {
            "" => base.clone(),
            u => self.record_path(u)?,
        };
        blocking(move || {
            let mut out = Vec::new();
            walk_files(&base, &dir, &mut out)?;
            Ok(out)
        })
        .await
    }

    async fn delete_record(&self, name: &str) -> Result<(), StoreError> {
        remove_durably(self.record_path(name)?).await
    }

    async fn identity(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.identity_path();
        blocking(move || match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(path.display(), e)),
        })
        .await
    }

    async fn initialize(&self, identity: &[u8]) -> Result<(), StoreError> {
        let (this, path) = (self.clone(), self.identity_path());
        let identity = identity.to_vec();
        blocking(move || {
            if path.exists() {
                return Err(StoreError::IdentityExists);
            }
            Self::make_layout(&this.root)?;
            let tmp = this.write_temp(IDENTITY, &identity)?;
            // A hard link, unlike a rename, never replaces: the first identity stays.
            let linked = fs::hard_link(&tmp, &path);
            let _ = fs::remove_file(&tmp);
            match linked {
                Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(StoreError::IdentityExists),
                other => other.map_err(|e| StoreError::io(path.display(), e)),
            }?;
            sync_dir(&this.root)
        })
        .await
    }
}

/// Remove a file (absent is fine) and make the removal durable.
async fn remove_durably(path: PathBuf) -> Result<(), StoreError> {
    blocking(move || {
        match fs::remove_file(&path) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            other => other.map_err(|e| StoreError::io(path.display(), e))?,
        }
        sync_dir(path.parent().expect("store path has a parent"))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        super::super::conformance::run(Arc::new(FsStore::open(dir.path()).unwrap())).await;
    }

    #[tokio::test]
    async fn a_damaged_file_is_replaced_by_a_verified_upload() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        store.initialize(b"test").await.unwrap();
        let id = ChunkId::of(b"x");
        store.put(&id, b"good bytes").await.unwrap();
        fs::write(store.chunk_path(&id), b"rotten").unwrap();
        assert!(
            store.put(&id, b"good bytes").await.unwrap(),
            "the damaged copy is replaced"
        );
        assert_eq!(store.get(&id).await.unwrap(), b"good bytes");
        assert!(!store.put(&id, b"good bytes").await.unwrap());
    }

    #[tokio::test]
    async fn leaves_no_temp_files_and_clears_stale_ones_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        store.initialize(b"test").await.unwrap();
        let id = ChunkId::of(b"x");
        store.put(&id, b"TMZ1...").await.unwrap();
        assert!(store.chunk_path(&id).exists());
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        fs::write(dir.path().join("tmp").join("stale"), b"half").unwrap();
        FsStore::open(dir.path()).unwrap();
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    /// An unmounted volume: opening the store creates nothing there.
    #[tokio::test]
    async fn opening_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(&dir.path().join("store")).unwrap();
        assert_eq!(store.identity().await.unwrap(), None);
        assert!(!store.holds_data().await.unwrap());
        assert!(!dir.path().join("store").exists());
    }
}
