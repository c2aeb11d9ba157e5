//! Finding and calling the controller: the CLI config (`--config` or `TIDEMARK_CONFIG`),
//! the mTLS connection, and the mapping of every failure to a stable exit code.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tidemark_core::config::{self, TlsFiles};
use tidemark_core::tls::TlsMaterial;
use tidemark_proto::admin_service_client::AdminServiceClient;
use tonic::transport::Channel;

/// Exit codes scripts can rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// The operation ran and failed (a backup failed, a restore was refused).
    Failed = 1,
    /// Bad usage or configuration.
    Usage = 2,
    /// The controller is unreachable, or refused who we are.
    Unreachable = 3,
}

#[derive(Debug)]
pub struct CliError {
    pub exit: Exit,
    pub message: String,
    pub hint: Option<String>,
}

impl CliError {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
            hint: None,
        }
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code::*;
        let message = s.message().to_string();
        match s.code() {
            InvalidArgument => CliError::new(Exit::Usage, message),
            Unauthenticated | PermissionDenied => CliError::new(Exit::Unreachable, message),
            Unavailable | DeadlineExceeded | Unknown | Cancelled => {
                let detail = tidemark_core::text::error_chain(&s);
                // A status with a source came from our side of the connection (hyper, h2,
                // rustls), not from the controller: the connection itself failed.
                let dropped = std::error::Error::source(&s).is_some() || looks_like_tls(&detail);
                let err = CliError::new(
                    Exit::Unreachable,
                    format!("cannot talk to the controller: {detail}"),
                );
                if dropped { err.hint(CERT_HINT) } else { err }
            }
            _ => CliError::new(Exit::Failed, message),
        }
    }
}

/// With TLS 1.3 the server checks the client certificate after the client thinks the
/// handshake is done, so a refused certificate shows up only as an alert, a closed
/// connection or a broken pipe, depending on timing.
const CERT_HINT: &str = "the controller dropped the connection, as it does when it refuses a client certificate: check that `cert` in the config was issued by this fleet's CA (tidemark pki issue)";

fn looks_like_tls(detail: &str) -> bool {
    let lower = detail.to_lowercase();
    [
        "certificate",
        "alert",
        "connection closed",
        "broken pipe",
        "handshake",
        "tls",
    ]
    .iter()
    .any(|w| lower.contains(w))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CliConfig {
    #[allow(dead_code)]
    pub version: u32,
    pub controller: String,
    pub tls: TlsFiles,
}

pub fn load_config(path: Option<&Path>) -> Result<(PathBuf, CliConfig), CliError> {
    let path = path.map(Path::to_path_buf).ok_or_else(|| {
        CliError::new(Exit::Usage, "no config: pass --config FILE or set TIDEMARK_CONFIG")
            .hint("the config names the controller and this operator's certificate; see deploy/tidemark.example.toml")
    })?;
    let mut c: CliConfig =
        config::load(&path).map_err(|e| CliError::new(Exit::Usage, e.to_string()))?;
    c.tls = c.tls.resolved(&config::base_dir(&path));
    Ok((path, c))
}

pub async fn connect(config_path: Option<&Path>) -> Result<AdminServiceClient<Channel>, CliError> {
    let (_, cfg) = load_config(config_path)?;
    let tls = TlsMaterial::load(&cfg.tls).map_err(|e| CliError::new(Exit::Usage, e.to_string()))?;
    let endpoint = tls
        .endpoint(&cfg.controller, Some(Duration::from_secs(60)))
        .map_err(|e| CliError::new(Exit::Usage, e.to_string()))?;
    let channel = endpoint.connect().await.map_err(|e| {
        let msg = tidemark_core::text::error_chain(&e);
        let err = CliError::new(
            Exit::Unreachable,
            format!("cannot reach the controller at {}: {msg}", cfg.controller),
        );
        if looks_like_tls(&msg) {
            err.hint(CERT_HINT)
        } else {
            err.hint("is tidemark-controller running, and is `controller` in the config right?")
        }
    })?;
    Ok(AdminServiceClient::new(channel)
        .max_decoding_message_size(tidemark_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(tidemark_proto::MAX_MESSAGE_BYTES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_in_deploy_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/tidemark.example.toml");
        let (_, c) = load_config(Some(&p)).unwrap();
        assert!(c.controller.starts_with("https://"));
        assert!(c.tls.key.ends_with("admin-alice.key"));
    }

    #[test]
    fn a_dropped_connection_hints_at_the_certificate_and_a_busy_server_does_not() {
        let mut dropped = tonic::Status::unknown("transport error");
        dropped.set_source(std::sync::Arc::new(std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            "stream closed because of a broken pipe",
        )));
        let e = CliError::from(dropped);
        assert_eq!(e.exit, Exit::Unreachable);
        assert!(e.hint.unwrap().contains("fleet's CA"));
        let busy = CliError::from(tonic::Status::unavailable("catalog: database is locked"));
        assert_eq!(busy.exit, Exit::Unreachable);
        assert!(busy.hint.is_none());
    }

    #[test]
    fn status_codes_map_to_stable_exit_codes() {
        use tonic::Status;
        assert_eq!(
            CliError::from(Status::invalid_argument("x")).exit,
            Exit::Usage
        );
        assert_eq!(
            CliError::from(Status::permission_denied("x")).exit,
            Exit::Unreachable
        );
        assert_eq!(
            CliError::from(Status::unavailable("x")).exit,
            Exit::Unreachable
        );
        assert_eq!(
            CliError::from(Status::failed_precondition("x")).exit,
            Exit::Failed
        );
        assert_eq!(CliError::from(Status::data_loss("x")).exit, Exit::Failed);
        assert_eq!(CliError::from(Status::not_found("x")).exit, Exit::Failed);
    }
}
