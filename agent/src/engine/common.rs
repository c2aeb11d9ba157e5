//! Helpers both engines use: tool versions, restore directories, log tails, and fetching a
//! file from the controller's log archive (PostgreSQL WAL for wal-fetch, MariaDB binlogs for a replay).
//! Nothing here knows an engine; an engine's folder imports from here, never from another
//! engine's folder.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tidemark_proto::agent_service_client::AgentServiceClient;
use tidemark_proto::{FetchWalRequest, ToolVersion};
use tonic::transport::Channel;

use crate::download::{self, DownloadError};
use crate::error::{AgentError, Kind};
use crate::osuser;
use crate::progress::Progress;
use crate::tool::ToolError;

/// The versions of `tools` as registration reports them: "unavailable: ..." for one that
/// cannot run, so `tidemark agents` shows what is missing.
pub async fn tool_versions<F, Fut>(tools: &[&'static str], version: F) -> Vec<ToolVersion>
where
    F: Fn(&'static str) -> Fut,
    Fut: Future<Output = Result<String, ToolError>>,
{
    let mut out = Vec::with_capacity(tools.len());
    for &t in tools {
        let version = version(t)
            .await
            .unwrap_or_else(|e| format!("unavailable: {e}"));
        out.push(ToolVersion {
            name: t.into(),
            version,
        });
    }
    out
}

/// Make `dir` (or accept it empty), owned by the server's user with mode 0700.
pub fn prepare_dir(
    dir: &Path,
    ids: Option<(u32, u32)>,
    created: &mut Vec<PathBuf>,
) -> Result<(), AgentError> {
    use std::os::unix::fs::PermissionsExt;
    if !dir.is_absolute() {
        return Err(AgentError::permanent(format!(
            "{} is not an absolute path",
            dir.display()
        )));
    }
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(AgentError::permanent(format!(
                    "{} exists and is not empty; restore into a new or empty directory",
                    dir.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| {
                AgentError::permanent(format!("cannot create {}: {e}", dir.display()))
            })?;
            created.push(dir.to_path_buf());
        }
        Err(e) => {
            return Err(AgentError::permanent(format!(
                "cannot read {}: {e}",
                dir.display()
            )));
        }
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .and_then(|_| osuser::chown(dir, ids))
        .map_err(|e| AgentError::permanent(format!("cannot set up {}: {e}", dir.display())))
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// What wal-fetch, the prefetcher and a binlog replay ask the archive for: file `name` of
/// `instance`, or of the instance with system identifier `sysid` when none is named.
pub fn archive_request(sysid: &str, instance: Option<&str>, name: &str) -> FetchWalRequest {
    FetchWalRequest {
        instance: instance.unwrap_or_default().to_string(),
        system_identifier: sysid.to_string(),
        name: name.to_string(),
    }
}

/// Fetch one file into `dest` through a temporary file beside it, synced before the rename
/// so that a crash never leaves a torn file under a WAL name. Returns its size, or None when
/// the archive has no such file.
pub async fn fetch_archived(
    client: &AgentServiceClient<Channel>,
    req: FetchWalRequest,
    dest: &Path,
) -> Result<Option<u64>, AgentError> {
    let stream = match client.clone().fetch_wal(req.clone()).await {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
        Err(s) => return Err(s.into()),
    };
    let tmp = dest.with_file_name(format!(
        ".{}.tidemark-{}",
        dest.file_name().and_then(|n| n.to_str()).unwrap_or("wal"),
        std::process::id()
    ));
    let io = |e: std::io::Error| AgentError::permanent(format!("writing {}: {e}", tmp.display()));
    let mut file = tokio::fs::File::create(&tmp).await.map_err(io)?;
    let got = download::receive(stream, &req.name, &mut file, &Progress::default()).await;
    let result = match got {
        Ok(n) => async {
            file.sync_all().await?;
            tokio::fs::rename(&tmp, dest).await?;
            Ok(Some(n))
        }
        .await
        .map_err(io),
        // Worth retrying, and said as the controller said it.
        Err(DownloadError::Rpc { status, .. }) if Kind::of(status.code()) == Kind::Transient => {
            Err(AgentError::transient(status.message()))
        }
        Err(e) => Err(e.into()),
    };
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

/// Fetch archived file `name` of `instance` (a MariaDB binlog) into `dest` over an open
/// connection, riding out a blip of the controller for up to `retry_for`.
pub async fn fetch_named(
    client: &AgentServiceClient<Channel>,
    instance: &str,
    name: &str,
    dest: &Path,
    retry_for: Duration,
) -> Result<u64, AgentError> {
    let deadline = Instant::now() + retry_for;
    let mut delay = Duration::from_millis(250);
    loop {
        match fetch_archived(client, archive_request("", Some(instance), name), dest).await {
            Ok(Some(n)) => return Ok(n),
            Ok(None) => {
                return Err(AgentError::permanent(format!(
                    "{name} is not in instance {instance}'s archive"
                )));
            }
            Err(e) if e.kind() == Kind::Transient && Instant::now() + delay < deadline => {
                tracing::warn!("fetching {name}: {e}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.reworded(|e| format!("fetching {name}: {e}"))),
        }
    }
}
