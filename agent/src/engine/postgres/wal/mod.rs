//! `tidemark-agent wal-push` and `wal-fetch`: PostgreSQL's archive_command and
//! restore_command. Each run is a short process that PostgreSQL starts in the data directory;
//! its exit status is the whole answer, so every status means exactly one thing.

pub mod fetch;
pub mod push;

use std::path::Path;
use std::time::Duration;

use tidemark_core::tls::TlsMaterial;
use tidemark_proto::agent_service_client::AgentServiceClient;
use tonic::transport::Channel;

use crate::config::AgentConfig;
use crate::error::AgentError;

/// The cluster's system identifier, from `global/pg_control` under `data_dir`: the first
/// eight bytes of the control file, in the machine's byte order.
pub fn system_identifier(data_dir: &Path) -> Result<String, AgentError> {
    let path = data_dir.join("global/pg_control");
    let bytes = std::fs::read(&path).map_err(|e| {
        AgentError::permanent(format!(
            "cannot read {}: {e}; PostgreSQL runs archive_command and restore_command in the data directory",
            path.display()
        ))
    })?;
    let head: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            AgentError::permanent(format!(
                "{} is too short to be a control file",
                path.display()
            ))
        })?;
    Ok(u64::from_ne_bytes(head).to_string())
}

/// Dial the first controller that answers. Any failure is transient: wal-push and wal-fetch
/// retry it until their deadline (an endpoint that cannot even be built included).
pub async fn connect(
    config: &AgentConfig,
    tls: &TlsMaterial,
    timeout: Duration,
) -> Result<AgentServiceClient<Channel>, AgentError> {
    // Controllers sharing a catalog are tried in order; the first that answers serves.
    let mut failures = Vec::new();
    for address in &config.controller {
        match tls
            .endpoint(address, Some(timeout))
            .map_err(|e| AgentError::transient(e.to_string()))?
            .connect()
            .await
        {
            Ok(channel) => {
                return Ok(AgentServiceClient::new(channel)
                    .max_decoding_message_size(tidemark_proto::MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(tidemark_proto::MAX_MESSAGE_BYTES));
            }
            Err(e) => failures.push(format!(
                "{address}: {}",
                tidemark_core::text::error_chain(&e)
            )),
        }
    }
    Err(AgentError::transient(format!(
        "cannot reach the controller at {}",
        failures.join("; ")
    )))
}
