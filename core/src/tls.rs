//! TLS for every gRPC connection: the fleet CA verifies both ends, and each side presents its
//! own certificate. Files are checked when loaded, so a wrong path or a key that others can
//! read is reported at start-up with the file's name, not at the first handshake.

use std::path::Path;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity as TlsIdentity, ServerTlsConfig,
};

use crate::config::{ConfigError, TlsFiles, check_secret_file};
use crate::identity::{Identity, IdentityError};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{what} {path} holds no usable PEM: {reason}")]
    Pem {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("certificate {path}: {source}")]
    Identity { path: String, source: IdentityError },
    #[error("controller address {0:?} is not a URL like https://controller.example:7420")]
    BadAddress(String),
    #[error("tls setup: {0}")]
    Transport(String),
}

/// HTTP/2 flow-control windows for both ends: room for a few chunks in flight per stream.
/// The 64 KiB default makes every chunk wait for window updates.
/// Install the process-wide TLS crypto provider: aws-lc-rs, with classical key exchange
/// first. The post-quantum hybrid group costs ~30 ms of set-up on the first handshake of a
/// process, which every short-lived `wal-push` and `wal-fetch` would pay; mTLS inside a
/// fleet's private network does not need it today.
pub fn install_crypto_provider() {
    use rustls::crypto::aws_lc_rs::{default_provider, kx_group};
    let provider = rustls::crypto::CryptoProvider {
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1],
        ..default_provider()
    };
    let _ = provider.install_default();
}

pub const STREAM_WINDOW: u32 = 8 * 1024 * 1024;
pub const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

/// The loaded, checked PEM files of one process.
pub struct TlsMaterial {
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    /// Who our own certificate says we are.
    pub identity: Identity,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| {
        ConfigError::File {
            what,
            path: path.into(),
            source,
        }
        .into()
    })
}

fn first_cert(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<CertificateDer<'static>, TlsError> {
    let pem_err = |reason: String| TlsError::Pem {
        what,
        path: path.display().to_string(),
        reason,
    };
    CertificateDer::pem_slice_iter(pem)
        .next()
        .ok_or_else(|| pem_err("no CERTIFICATE block".into()))?
        .map_err(|e| pem_err(e.to_string()))
}

impl TlsMaterial {
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        let ca_pem = read("CA certificate", &files.ca)?;
        first_cert("CA certificate", &files.ca, &ca_pem)?;
        let cert_pem = read("certificate", &files.cert)?;
        let leaf = first_cert("certificate", &files.cert, &cert_pem)?;
        check_secret_file("private key", &files.key)?;
        let key_pem = read("private key", &files.key)?;
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
            what: "private key",
            path: files.key.display().to_string(),
            reason: e.to_string(),
        })?;
        let identity = Identity::from_certificate(&leaf).map_err(|source| TlsError::Identity {
            path: files.cert.display().to_string(),
            source,
        })?;
        Ok(Self {
            ca_pem,
            cert_pem,
            key_pem,
            identity,
        })
    }

    /// Server side: require a client certificate signed by the fleet CA.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(TlsIdentity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
    }

    pub fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(TlsIdentity::from_pem(&self.cert_pem, &self.key_pem))
    }

    /// An endpoint for `address` (`https://host:port`) with timeouts on connecting and on
    /// every request, so a cut link cannot hang a caller forever.
    pub fn endpoint(
        &self,
        address: &str,
        request_timeout: Option<Duration>,
    ) -> Result<Endpoint, TlsError> {
        if !address.starts_with("https://") {
            return Err(TlsError::BadAddress(address.into()));
        }
        let mut ep = Channel::from_shared(address.to_string())
            .map_err(|_| TlsError::BadAddress(address.into()))?
            .tls_config(self.client_config())
            .map_err(|e| TlsError::Transport(e.to_string()))?
            .connect_timeout(Duration::from_secs(10))
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        if let Some(t) = request_timeout {
            ep = ep.timeout(t);
        }
        Ok(ep)
    }
}
