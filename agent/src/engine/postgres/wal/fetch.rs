//! restore_command: `tidemark-agent wal-fetch %f %p`.
//!
//! Exit 0: the file is at %p, verified chunk by chunk and against its recorded digest.
//! Exit 1: the archive has no such file, which is how recovery learns it reached the end.
//! Exit 200: anything else (the controller unreachable after retrying, a corrupt chunk, a
//! refusal). PostgreSQL treats a status above 125 as fatal and aborts recovery, instead of
//! taking a transient failure for the end of the WAL and stopping early at the wrong point.
//!
//! After delivering a segment it starts a detached prefetcher that fetches the next few into
//! `pg_wal/.tidemark-prefetch`, so replay does not wait a round trip per segment.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use tidemark_core::tls::TlsMaterial;
use tidemark_core::wal::{self, WalName};

use super::{connect, system_identifier};
use crate::config::AgentConfig;
use crate::engine::common::{archive_request, fetch_archived};
use crate::error::{AgentError, Kind};

pub const PREFETCH_DIR: &str = "pg_wal/.tidemark-prefetch";
/// A prefetch marker older than this belongs to a prefetcher that died.
const STALE_MARKER: Duration = Duration::from_secs(120);

pub enum Fetched {
    Found,
    NotFound,
}

pub struct Request<'a> {
    pub name: &'a str,
    pub dest: &'a Path,
    pub instance: Option<&'a str>,
}

pub async fn run(
    config: &AgentConfig,
    tls: &TlsMaterial,
    r: Request<'_>,
) -> Result<Fetched, AgentError> {
    let data_dir = std::env::current_dir()
        .map_err(|e| AgentError::permanent(format!("no working directory: {e}")))?;
    let sysid = match (system_identifier(&data_dir), r.instance) {
        (Ok(s), _) => s,
        (Err(_), Some(_)) => String::new(),
        (Err(e), None) => return Err(e),
    };
    let prefetched = data_dir.join(PREFETCH_DIR).join(r.name);
    if std::fs::rename(&prefetched, r.dest).is_ok() {
        tracing::debug!(wal = r.name, "delivered from prefetch");
        spawn_prefetcher(config, r.name, r.dest, r.instance);
        return Ok(Fetched::Found);
    }
    let deadline = Instant::now() + config.wal_retry_for;
    let mut delay = Duration::from_millis(250);
    loop {
        let attempt = match connect(config, tls, Duration::from_secs(60)).await {
            Ok(client) => {
                fetch_archived(&client, archive_request(&sysid, r.instance, r.name), r.dest).await
            }
            Err(e) => Err(e),
        };
        match attempt {
            Ok(Some(_)) => {
                spawn_prefetcher(config, r.name, r.dest, r.instance);
                return Ok(Fetched::Found);
            }
            Ok(None) => return Ok(Fetched::NotFound),
            Err(e) if e.kind() != Kind::Transient => {
                return Err(e.reworded(|e| format!("fetching {}: {e}", r.name)));
            }
            Err(e) if Instant::now() + delay < deadline => {
                tracing::warn!("fetching {}: {e}; retrying in {delay:?}", r.name);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                return Err(e.reworded(|e| {
                    format!(
                        "fetching {}: {e}; gave up after {:?} so that recovery stops instead of ending early",
                        r.name, config.wal_retry_for
                    )
                }));
            }
        }
    }
}

/// The segments after `name` worth fetching ahead, given the delivered file's size.
fn next_segments(name: &str, delivered: &Path, count: u32) -> Vec<String> {
    let Ok(meta) = std::fs::metadata(delivered) else {
        return Vec::new();
    };
    let seg = meta.len();
    if !seg.is_power_of_two() || seg < 1 << 20 {
        return Vec::new();
    }
    match WalName::parse(name, seg) {
        Ok(WalName::Segment { timeline, segno }) => (1..=count as u64)
            .map(|i| wal::segment_name(timeline, segno + i, seg))
            .collect(),
        _ => Vec::new(),
    }
}

/// Start a detached `wal-fetch --prefetch` for the segments after `name`. Best effort: a
/// prefetch that fails only means the next fetch goes to the controller itself.
fn spawn_prefetcher(config: &AgentConfig, name: &str, delivered: &Path, instance: Option<&str>) {
    if config.wal_prefetch == 0 || next_segments(name, delivered, 1).is_empty() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--config")
        .arg(&config.path)
        .args(["wal-fetch", "--prefetch", name])
        .arg(delivered);
    if let Some(i) = instance {
        cmd.args(["--instance", i]);
    }
    use std::os::unix::process::CommandExt;
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    if let Err(e) = cmd.spawn() {
        tracing::debug!("could not start the WAL prefetcher: {e}");
    }
}

/// The prefetcher: fetch up to `wal-prefetch` segments after `name` into the prefetch
/// directory, a few at a time, skipping any another prefetcher has or is fetching.
pub async fn prefetch(
    config: &AgentConfig,
    tls: &TlsMaterial,
    name: &str,
    delivered: &Path,
    instance: Option<&str>,
) {
    let data_dir = match std::env::current_dir() {
        Ok(d) => d,
        Err(_) => return,
    };
    let sysid = system_identifier(&data_dir).unwrap_or_default();
    let dir = data_dir.join(PREFETCH_DIR);
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let wanted = next_segments(name, delivered, config.wal_prefetch);
    clean_behind(&dir, name);
    let Ok(client) = connect(config, tls, Duration::from_secs(60)).await else {
        return;
    };
    let mut tasks = tokio::task::JoinSet::new();
    for next in wanted {
        let target = dir.join(&next);
        let marker = dir.join(format!("{next}.inflight"));
        if target.exists() || !claim(&marker) {
            continue;
        }
        let (client, req) = (client.clone(), archive_request(&sysid, instance, &next));
        tasks.spawn(async move {
            let r = fetch_archived(&client, req, &target).await;
            let _ = std::fs::remove_file(&marker);
            matches!(r, Ok(Some(_)))
        });
        while tasks.len() >= 4 {
            tasks.join_next().await;
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// Take the marker for a segment; false when a live prefetcher holds it.
fn claim(marker: &PathBuf) -> bool {
    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(marker)
    };
    if create().is_ok() {
        return true;
    }
    let stale = std::fs::metadata(marker)
        .and_then(|m| m.modified())
        .map(|t| SystemTime::now().duration_since(t).unwrap_or_default() > STALE_MARKER)
        .unwrap_or(false);
    stale && std::fs::remove_file(marker).is_ok() && create().is_ok()
}

/// Remove prefetched segments recovery has moved past (names sort in WAL order within a
/// timeline, and older timelines sort first).
fn clean_behind(dir: &Path, delivered: &str) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.len() == 24 && n.as_str() <= delivered {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
