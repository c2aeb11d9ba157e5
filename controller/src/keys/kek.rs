//! Key-encryption keys: files `kek-N.key` in the key directory, each 64 hex digits, readable
//! by the controller's user only. A KEK never enters the catalog; the catalog records its
//! fingerprint, so a wrong file is named as such instead of failing as "corrupt data keys".

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::seal::{KEY_LEN, RawKey};

#[derive(Debug, thiserror::Error)]
pub enum KekError {
    #[error("key-encryption key {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Missing, unreadable, or readable by others.
    #[error(transparent)]
    Secret(#[from] tidemark_core::config::ConfigError),
    #[error("key-encryption key {path} is not {n} hex digits", n = KEY_LEN * 2)]
    Malformed { path: PathBuf },
    #[error(
        "key-encryption key {path} already exists but the catalog does not know it (left by an interrupted rotation?); move it away and try again"
    )]
    Exists { path: PathBuf },
}

pub fn path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("kek-{id}.key"))
}

/// A short, stable name for a key that reveals nothing usable about it.
pub fn fingerprint(key: &RawKey) -> String {
    let mut h = Sha256::new();
    h.update(b"tidemark key-encryption key fingerprint\0");
    h.update(key.0);
    hex::encode(&h.finalize()[..8])
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KekError + '_ {
    move |source| KekError::Io {
        path: path.into(),
        source,
    }
}

/// Read a KEK file, refusing one that group or others could read.
pub fn read(path: &Path) -> Result<RawKey, KekError> {
    tidemark_core::config::check_secret_file("key-encryption key", path)?;
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let mut key = RawKey([0; KEY_LEN]);
    hex::decode_to_slice(text.trim(), &mut key.0)
        .map_err(|_| KekError::Malformed { path: path.into() })?;
    Ok(key)
}

/// Write a new KEK file durably (mode 0600, fsynced, then the directory), never replacing one.
pub fn create(dir: &Path, id: u32, key: &RawKey) -> Result<PathBuf, KekError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
    let path = path(dir, id);
    if path.exists() {
        return Err(KekError::Exists { path });
    }
    let tmp = dir.join(format!(".kek-{id}.key.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    writeln!(f, "{}", hex::encode(key.0)).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_keys_read_back_and_loose_permissions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let key = RawKey::random();
        let p = create(&keys, 1, &key).unwrap();
        assert_eq!(p, keys.join("kek-1.key"));
        assert_eq!(read(&p).unwrap().0, key.0);
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(matches!(
            create(&keys, 1, &RawKey::random()),
            Err(KekError::Exists { .. })
        ));

        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = read(&p).err().unwrap().to_string();
        assert!(e.contains("mode 0640") && e.contains("chmod 600"), "{e}");

        let bad = keys.join("kek-2.key");
        std::fs::write(&bad, "not hex\n").unwrap();
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(matches!(read(&bad), Err(KekError::Malformed { .. })));
        let e = read(&keys.join("kek-9.key")).err().unwrap().to_string();
        assert!(e.contains("kek-9.key"), "{e}");

        assert_eq!(fingerprint(&key), fingerprint(&RawKey(key.0)));
        assert_ne!(fingerprint(&key), fingerprint(&RawKey::random()));
    }
}
