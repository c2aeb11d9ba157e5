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
    // waits while this runs: ride out a blip, not an outage. A controller that is busy
    // (receiving as many files as it takes at once) is waited for longer, at a random pace
    // so that a burst of pushes spreads out: it will take the file in a moment, where
    // PostgreSQL, once three tries failed, waits a minute. The pace slows as the refusals
    // go on (to a random 0.1 to 8 s apart): each try costs a TLS handshake and the first
    // chunks, and 200 hosts trying twice a second kept two cores busy with little else (a
    // burst of 200 pushes took 343 s; 57 s at this pace).
    let started = Instant::now();
    let deadline = started + config.wal_retry_for.min(PUSH_RETRY_LIMIT);
    let busy_deadline = started + config.wal_retry_for;
    let mut delay = Duration::from_millis(250);
    let mut busy_pace = 1000u64;
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
            Err(Failure::Busy(e)) if Instant::now() < busy_deadline => {
                let wait = Duration::from_millis(100 + jitter_millis(busy_pace - 100))
                    .min(busy_deadline.saturating_duration_since(Instant::now()));
                busy_pace = (busy_pace * 3 / 2).min(8000);
                tracing::debug!("pushing {name}: {e}; trying again in {wait:?}");
                tokio::time::sleep(wait).await;
            }
            Err(Failure::Other(e))
                if e.kind() == Kind::Transient && Instant::now() + delay < deadline =>
            {
                tracing::warn!("pushing {name}: {e}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(Failure::Busy(e) | Failure::Other(e)) => {
                return Err(e.reworded(|e| format!("{name} was not archived: {e}")));
            }
        }
    }
}

/// Why one attempt failed: the controller was busy, or anything else.
enum Failure {
    Busy(AgentError),
    Other(AgentError),
}

/// A number in 0..max from the clock's nanoseconds: enough to spread retries apart.
fn jitter_millis(max: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    (nanos ^ u64::from(std::process::id()).wrapping_mul(2_654_435_761)) % max.max(1)
}

/// One attempt; its error's kind says whether trying again may help.
async fn push_once(
    config: &AgentConfig,
    tls: &TlsMaterial,
    path: &Path,
    header: WalHeader,
) -> Result<bool, Failure> {
    let client = connect(config, tls, Duration::from_secs(60))
        .await
        .map_err(Failure::Other)?;
    let file = std::fs::File::open(path).map_err(|e| {
        Failure::Other(AgentError::permanent(format!(
            "cannot open {}: {e}",
            path.display()
        )))
    })?;
    match push_wal(&client, header, file, &Progress::default()).await {
        Ok(r) => Ok(r.already_archived),
        Err(UploadError::Rpc { status, .. }) if status.code() == tonic::Code::ResourceExhausted => {
            Err(Failure::Busy(status.into()))
        }
        // The controller's own words, judged by its status.
        Err(UploadError::Rpc { status, .. }) => Err(Failure::Other(status.into())),
        Err(e) => Err(Failure::Other(AgentError::permanent(e.to_string()))),
    }
}
