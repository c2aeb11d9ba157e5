//! Loading TOML config files: one place for the version check, relative paths and the
//! permission check on secret files, so the three binaries report mistakes the same way.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The config format version every file must declare (`version = 1`).
pub const CONFIG_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "config file {path} has version = {found}; this tidemark reads version {CONFIG_VERSION}"
    )]
    Version { path: PathBuf, found: u32 },
    #[error("{what} {path} cannot be read: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{what} {path} is readable by group or others (mode {mode:04o}); run: chmod 600 {path}"
    )]
    Permissions {
        what: &'static str,
        path: PathBuf,
        mode: u32,
    },
}

#[derive(Deserialize)]
struct VersionOnly {
    version: Option<u32>,
}

/// Parse `path` as `T`, after checking its `version`. Relative paths inside are the caller's
/// to resolve with [`resolve`] against [`base_dir`].
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    let invalid = |e: toml::de::Error| ConfigError::Invalid {
        path: path.into(),
        message: e.to_string().trim_end().replace('\n', " "),
    };
    // Check the version first: an unknown field in a newer file should say "version", not
    // "unknown field".
    let v: VersionOnly = toml::from_str::<toml::Table>(&text)
        .map_err(invalid)
        .and_then(|t| t.try_into().map_err(invalid))?;
    match v.version {
        Some(CONFIG_VERSION) => {}
        Some(found) => {
            return Err(ConfigError::Version {
                path: path.into(),
                found,
            });
        }
        None => {
            return Err(ConfigError::Invalid {
                path: path.into(),
                message: format!("missing `version = {CONFIG_VERSION}` at the top"),
            });
        }
    }
    toml::from_str(&text).map_err(invalid)
}

/// The directory relative paths in a config file are taken from.
pub fn base_dir(config_path: &Path) -> PathBuf {
    config_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Refuse a secret file that others can read.
pub fn check_secret_file(what: &'static str, path: &Path) -> Result<(), ConfigError> {
    let meta = fs::metadata(path).map_err(|source| ConfigError::File {
        what,
        path: path.into(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::Permissions {
            what,
            path: path.into(),
            mode,
        });
    }
    Ok(())
}

/// The `[tls]` table every config has: the fleet CA, this process's certificate and key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    pub fn resolved(&self, base: &Path) -> TlsFiles {
        TlsFiles {
            ca: resolve(base, &self.ca),
            cert: resolve(base, &self.cert),
            key: resolve(base, &self.key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[allow(dead_code)]
        version: u32,
        name: String,
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("c.toml");
        fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn version_unknown_fields_and_syntax_are_reported_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let ok: Sample = load(&write(dir.path(), "version = 1\nname = \"x\"\n")).unwrap();
        assert_eq!(ok.name, "x");

        let e = load::<Sample>(&write(dir.path(), "version = 2\nname = \"x\"\n")).unwrap_err();
        assert!(e.to_string().contains("version = 2"), "{e}");
        let e = load::<Sample>(&write(dir.path(), "name = \"x\"\n")).unwrap_err();
        assert!(e.to_string().contains("missing `version = 1`"), "{e}");
        let e = load::<Sample>(&write(dir.path(), "version = 1\nname = \"x\"\nnmae = 1\n"))
            .unwrap_err();
        assert!(e.to_string().contains("unknown field `nmae`"), "{e}");
        assert!(e.to_string().contains("c.toml"), "{e}");
        let e = load::<Sample>(&write(dir.path(), "version = = 1")).unwrap_err();
        assert!(matches!(e, ConfigError::Invalid { .. }), "{e}");
        let e = load::<Sample>(&dir.path().join("missing.toml")).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
    }

    #[test]
    fn secret_files_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.key");
        fs::write(&key, "secret").unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let e = check_secret_file("private key", &key).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        check_secret_file("private key", &key).unwrap();
    }
}
