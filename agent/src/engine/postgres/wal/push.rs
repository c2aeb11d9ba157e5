//! archive_command: `tidemark-agent wal-push %p`. Exits 0 only once the controller has the
//! file durably stored (or already had the identical file); anything else is non-zero and
//! PostgreSQL keeps the file and tries again.

use std::path::Path;
use std::time::{Duration, Instant, UNIX_EPOCH};

use tidemark_core::tls::TlsMaterial;
use tidemark_proto::WalHeader;

use super::{connect, system_identifier};
use crate::config::AgentConfig;
use crate::error::{AgentError, Kind};
use crate::progress::Progress;
use crate::upload::{UploadError, push_wal};

const PUSH_RETRY_LIMIT: Duration = Duration::from_secs(5);

pub async fn run(
    config: &AgentConfig,
    tls: &TlsMaterial,
    path: &Path,
) -> Result<String, AgentError> {
    let data_dir = std::env::current_dir()
        .and_then(std::fs::canonicalize)
        .map_err(|e| AgentError::permanent(format!("cannot resolve the working directory: {e}")))?;
    let sysid = system_identifier(&data_dir)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| AgentError::permanent(format!("{} has no file name", path.display())))?
        .to_string();
    let meta = std::fs::metadata(path)
        .map_err(|e| AgentError::permanent(format!("cannot read {}: {e}", path.display())))?;
    let modified_at = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let header = WalHeader {
        system_identifier: sysid,
        data_directory: data_dir.display().to_string(),
        name: name.clone(),
        modified_at,
        engine: tidemark_proto::Engine::Postgresql.into(),
        ..Default::default()
    };
    // PostgreSQL retries a failed archive_command itself, and its archiver (and a shutdown)
    // waits while this runs: ride out a blip, not an outage.
    let deadline = Instant::now() + config.wal_retry_for.min(PUSH_RETRY_LIMIT);
    let mut delay = Duration::from_millis(250);
    loop {
        let attempt = push_once(config, tls, path, header.clone()).await;
        match attempt {
            Ok(already) => {
                return Ok(if already {
                    format!("{name} was already archived (identical)")
                } else {
                    format!("archived {name}")
                });
            }
            Err(e) if e.kind() == Kind::Transient && Instant::now() + delay < deadline => {
                tracing::warn!("pushing {name}: {e}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.reworded(|e| format!("{name} was not archived: {e}"))),
        }
    }
}

/// One attempt; its error's kind says whether trying again may help.
async fn push_once(
    config: &AgentConfig,
    tls: &TlsMaterial,
    path: &Path,
    header: WalHeader,
) -> Result<bool, AgentError> {
    let client = connect(config, tls, Duration::from_secs(60)).await?;
    let file = std::fs::File::open(path)
        .map_err(|e| AgentError::permanent(format!("cannot open {}: {e}", path.display())))?;
    match push_wal(&client, header, file, &Progress::default()).await {
        Ok(r) => Ok(r.already_archived),
        // The controller's own words, judged by its status.
        Err(UploadError::Rpc { status, .. }) => Err(status.into()),
        Err(e) => Err(AgentError::permanent(e.to_string())),
    }
}
