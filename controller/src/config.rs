//! The controller's config file.
//!
//! ```toml
//! version = 1
//! listen = "0.0.0.0:7420"
//! data-dir = "/var/lib/tidemark"
//! metrics-listen = "127.0.0.1:9187"   # Prometheus text at /metrics (plain HTTP); optional
//!
//! [tls]
//! ca = "/etc/tidemark/pki/ca.crt"
//! cert = "/etc/tidemark/pki/controller-backup1.crt"
//! key = "/etc/tidemark/pki/controller-backup1.key"
//!
//! [store]
//! kind = "fs"
//! path = "/var/lib/tidemark/store"   # default: DATA-DIR/store
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tidemark_core::config::{self, ConfigError, TlsFiles};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ControllerConfig {
    #[allow(dead_code)]
    pub version: u32,
    /// Address for the gRPC listener; port 0 picks a free port, written to
    /// DATA-DIR/controller.addr once bound.
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Address for the Prometheus metrics (plain HTTP, GET /metrics); unset: none. Port 0
    /// picks a free port, written to DATA-DIR/metrics.addr once bound.
    pub metrics_listen: Option<SocketAddr>,
    pub tls: TlsFiles,
    #[serde(default)]
    pub store: StoreConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StoreConfig {
    #[serde(default)]
    pub kind: StoreKind,
    pub path: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    #[default]
    Fs,
}

impl ControllerConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut c: ControllerConfig = config::load(path)?;
        let base = config::base_dir(path);
        c.data_dir = config::resolve(&base, &c.data_dir);
        c.tls = c.tls.resolved(&base);
        c.store.path = Some(match &c.store.path {
            Some(p) => config::resolve(&base, p),
            None => c.data_dir.join("store"),
        });
        Ok(c)
    }

    pub fn store_path(&self) -> &Path {
        self.store.path.as_deref().expect("resolved in load")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_in_deploy_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/controller.example.toml");
        let c = ControllerConfig::load(&path).unwrap();
        assert_eq!(c.store.kind, StoreKind::Fs);
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9187".parse().unwrap()));
        assert!(c.data_dir.is_absolute());
        assert!(c.tls.key.is_absolute());
    }

    #[test]
    fn unknown_store_kind_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "version = 1\nlisten = \"127.0.0.1:0\"\ndata-dir = \"d\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n[store]\nkind = \"tape\"\n",
        )
        .unwrap();
        let e = ControllerConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("tape"), "{e}");
    }
}
