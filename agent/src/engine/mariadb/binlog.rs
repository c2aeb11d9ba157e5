//! Continuous binlog archiving, done by the agent daemon.
//!
//! The agent ships **closed** binlog files only, never the active one: a closed file never
//! changes again, so what is archived is byte-identical to the server's file, a push can be
//! repeated safely (the controller answers "already archived" for an identical file and
//! refuses a different one under the same name), and a killed agent loses nothing: the
//! next one ships the same files again. Streaming with `mariadb-binlog --stop-never` would
//! cut the RPO to seconds, but leaves a growing partial file whose archived copy must be
//! replaced, which is exactly what an append-only, overwrite-guarded archive must not do.
//!
//! To bound the RPO anyway, the agent watches the active file. Once its oldest event that
//! is not yet archived (the first transaction after the file's header) is `archive-timeout`
//! old, the agent runs `FLUSH BINARY LOGS`, which closes it, and ships it. The worst-case
//! RPO is archive-timeout plus the poll interval plus one push: 30 s + 5 s + well under a
//! second by default. An idle server is never rotated.

use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tidemark_proto::agent_service_client::AgentServiceClient;
use tidemark_proto::{ArchiverStatus, WalHeader};
use tonic::transport::Channel;

use tidemark_core::binlog::sequence;

use super::Maria;
use super::logical::unix_now;
use crate::engine::ArchiverStatuses;
use crate::error::AgentError;
use crate::progress::Progress;
use crate::upload::push_wal;

const MAGIC: &[u8; 4] = b"\xfebin";
const HEADER: usize = 19;
const ROTATE_EVENT: u8 = 4;
const STOP_EVENT: u8 = 3;
const FORMAT_DESCRIPTION_EVENT: u8 = 15;
/// LOG_EVENT_BINLOG_IN_USE_F: set in the format description while the file is written.
const IN_USE: u16 = 0x1;
/// Events that every file has whether or not anything was written to the database.
const HOUSEKEEPING: &[u8] = &[
    FORMAT_DESCRIPTION_EVENT,
    ROTATE_EVENT,
    STOP_EVENT,
    27,  // HEARTBEAT_LOG_EVENT
    161, // BINLOG_CHECKPOINT_EVENT
    163, // GTID_LIST_EVENT
    164, // START_ENCRYPTION_EVENT
];

/// One binlog file as the agent read it.
#[derive(Debug, Clone, PartialEq)]
pub struct BinlogSummary {
    pub events: u64,
    /// Unix seconds of the first event (the file's format description: when it was opened)
    /// and of the last (the rotate that closed it).
    pub first_event_at: i64,
    pub last_event_at: i64,
    /// The file ended with a rotate or stop event and its in-use flag is clear.
    pub closed_cleanly: bool,
    /// Where the first event that is not housekeeping starts, and its time.
    pub first_data: Option<(u64, i64)>,
    /// Where parsing stopped: the end of the last whole event.
    pub end: u64,
}

/// One event header: where it starts, its time, type, size and flags.
struct Event {
    pos: u64,
    ts: i64,
    kind: u8,
    flags: u16,
}

/// Call `f` for each whole event of a binlog up to `limit` bytes, reading only headers.
/// Returns where the last whole event ends: an event cut off by `limit` ends the walk (the
/// active file may be mid-write).
fn walk(path: &Path, limit: u64, mut f: impl FnMut(&Event)) -> Result<u64, AgentError> {
    let what =
        |e: std::io::Error| AgentError::permanent(format!("reading {}: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(what)?;
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic).map_err(what)?;
    if &magic != MAGIC {
        return Err(AgentError::permanent(format!(
            "{} is not a binlog file",
            path.display()
        )));
    }
    let mut pos = 4u64;
    let mut h = [0u8; HEADER];
    while pos + HEADER as u64 <= limit {
        file.seek(SeekFrom::Start(pos)).map_err(what)?;
        file.read_exact(&mut h).map_err(what)?;
        let size = u32::from_le_bytes(h[9..13].try_into().unwrap()) as u64;
        if size < HEADER as u64 {
            return Err(AgentError::permanent(format!(
                "{}: an event at {pos} claims {size} bytes; the file is damaged",
                path.display()
            )));
        }
        if pos + size > limit {
            break;
        }
        f(&Event {
            pos,
            ts: u32::from_le_bytes(h[0..4].try_into().unwrap()) as i64,
            kind: h[4],
            flags: u16::from_le_bytes(h[17..19].try_into().unwrap()),
        });
        pos += size;
    }
    Ok(pos)
}

/// Summarise a binlog up to `limit` bytes. With `whole` set, bytes after the last whole
/// event are an error (a closed file must end on an event).
pub fn scan(path: &Path, limit: u64, whole: bool) -> Result<BinlogSummary, AgentError> {
    let mut s = BinlogSummary {
        events: 0,
        first_event_at: 0,
        last_event_at: 0,
        closed_cleanly: false,
        first_data: None,
        end: 4,
    };
    let (mut last_type, mut in_use, mut bad_start) = (0u8, false, false);
    s.end = walk(path, limit, |e| {
        if s.events == 0 {
            bad_start = e.kind != FORMAT_DESCRIPTION_EVENT;
            s.first_event_at = e.ts;
            in_use = e.flags & IN_USE != 0;
        }
        if s.first_data.is_none() && !HOUSEKEEPING.contains(&e.kind) {
            s.first_data = Some((e.pos, e.ts));
        }
        s.events += 1;
        s.last_event_at = e.ts;
        last_type = e.kind;
    })?;
    if bad_start {
        return Err(AgentError::permanent(format!(
            "{}: the first event is not a format description",
            path.display()
        )));
    }
    if whole && s.end != limit {
        return Err(AgentError::permanent(format!(
            "{}: {} bytes after the last whole event at {}; the file is truncated",
            path.display(),
            limit - s.end,
            s.end
        )));
    }
    s.closed_cleanly = !in_use && matches!(last_type, ROTATE_EVENT | STOP_EVENT);
    Ok(s)
}

/// The time of the first transaction stamped at or after `from` (unix seconds) in the
/// files, in order: where a replay that stops before `from` stopped.
pub fn next_transaction_at(files: &[PathBuf], from: i64) -> Result<Option<i64>, AgentError> {
    for path in files {
        let len = std::fs::metadata(path)
            .map_err(|e| AgentError::permanent(format!("{}: {e}", path.display())))?
            .len();
        let mut found = None;
        walk(path, len, |e| {
            if found.is_none() && e.ts >= from && !HOUSEKEEPING.contains(&e.kind) {
                found = Some(e.ts);
            }
        })?;
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// The archiver of one instance: runs for the whole session.
pub async fn archive(client: AgentServiceClient<Channel>, db: Maria, statuses: ArchiverStatuses) {
    let poll =
        (db.settings.archive_timeout / 3).clamp(Duration::from_millis(500), Duration::from_secs(5));
    let mut a = Archiver {
        client,
        db,
        statuses,
        archived: BTreeSet::new(),
        active: None,
        failed_count: 0,
    };
    loop {
        if let Err(e) = a.round().await {
            tracing::warn!(instance = %a.db.cfg.name, error = %e, "binlog archiving");
            a.update(|s| s.error = e.to_string());
        }
        tokio::time::sleep(poll).await;
    }
}

struct Archiver {
    client: AgentServiceClient<Channel>,
    db: Maria,
    statuses: ArchiverStatuses,
    /// Files this session has archived (or found already archived).
    archived: BTreeSet<String>,
    /// The active file, how far it has been read, and its first event not yet archived.
    active: Option<(String, u64, Option<i64>)>,
    failed_count: u64,
}

impl Archiver {
    fn update(&self, f: impl FnOnce(&mut ArchiverStatus)) {
        let mut all = self.statuses.lock().expect("status lock");
        let s = all
            .entry(self.db.cfg.name.clone())
            .or_insert_with(|| ArchiverStatus {
                instance: self.db.cfg.name.clone(),
                ..Default::default()
            });
        f(s);
    }

    async fn round(&mut self) -> Result<(), AgentError> {
        let facts = self.db.facts().await?;
        if facts.log_bin_basename.is_empty() {
            return Err(AgentError::permanent(
                "binary logging is off (log_bin); there is nothing to archive and no point-in-time recovery",
            ));
        }
        let base_path = PathBuf::from(&facts.log_bin_basename);
        let dir = base_path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let base = base_path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let logs = self.db.query(None, "SHOW BINARY LOGS").await?;
        let logs: Vec<(String, u64)> = logs
            .lines()
            .filter_map(|l| {
                let mut f = l.split('\t');
                Some((f.next()?.to_string(), f.next()?.parse().ok()?))
            })
            .collect();
        // The last one listed is the one the server writes to; every earlier one is closed.
        let Some(((active, active_size), closed)) = logs.split_last() else {
            return Ok(());
        };
        let waiting: Vec<&(String, u64)> = closed
            .iter()
            .filter(|(n, _)| !self.archived.contains(n))
            .collect();
        self.update(|s| {
            s.log_bin_basename = facts.log_bin_basename.clone();
            s.ready = waiting.len() as u64;
            s.archive_timeout_secs = self.db.settings.archive_timeout.as_secs() as i64;
            s.error.clear();
        });
        for (name, size) in waiting {
            if sequence(name, &base).is_none() {
                return Err(AgentError::permanent(format!(
                    "binlog {name} does not match log_bin_basename {}",
                    facts.log_bin_basename
                )));
            }
            let path = dir.join(name);
            match self.push(&path, name, *size).await {
                Ok(()) => {
                    self.archived.insert(name.clone());
                    let now = unix_now();
                    self.update(|s| {
                        s.last_archived_at = now;
                        s.last_archived_wal = name.clone();
                        s.ready = s.ready.saturating_sub(1);
                    });
                }
                Err(e) => {
                    self.failed_count += 1;
                    let (now, n) = (unix_now(), self.failed_count);
                    self.update(|s| {
                        s.failed_count = n;
                        s.last_failed_at = now;
                        s.last_failed_wal = name.clone();
                    });
                    return Err(e.reworded(|e| format!("archiving {name}: {e}")));
                }
            }
        }
        self.maybe_rotate(&dir.join(active), active, *active_size)
            .await
    }

    async fn push(&self, path: &Path, name: &str, size: u64) -> Result<(), AgentError> {
        let summary = scan(path, size, true)?;
        if !summary.closed_cleanly {
            tracing::warn!(instance = %self.db.cfg.name, binlog = %name,
                "binlog was not closed cleanly (the server stopped without rotating it); archiving it as it is");
        }
        let header = WalHeader {
            system_identifier: String::new(),
            data_directory: path
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            name: name.to_string(),
            modified_at: summary.last_event_at,
            instance: self.db.cfg.name.clone(),
            first_event_at: summary.first_event_at,
            engine: tidemark_proto::Engine::Mariadb.into(),
        };
        let file = std::fs::File::open(path)
            .map_err(|e| AgentError::permanent(format!("{}: {e}", path.display())))?;
        // Exactly the bytes SHOW BINARY LOGS counted, which a closed file never outgrows.
        let reader = file.take(size);
        match push_wal(&self.client, header, reader, &Progress::default()).await {
            Ok(r) => {
                if r.already_archived {
                    tracing::info!(instance = %self.db.cfg.name, binlog = %name, "binlog already archived (identical)");
                } else {
                    tracing::info!(instance = %self.db.cfg.name, binlog = %name, "binlog archived");
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Close the active file once its oldest unarchived transaction is archive-timeout
    /// old. Only its new bytes are read each round.
    async fn maybe_rotate(&mut self, path: &Path, name: &str, size: u64) -> Result<(), AgentError> {
        // A file not seen before (the server rotated it) is read from its start.
        let active = match self.active.take() {
            Some(a) if a.0 == name => a,
            _ => (name.to_string(), 0, None),
        };
        let (_, read_to, first_data) = self.active.insert(active);
        if first_data.is_none() && size > *read_to {
            let s = scan(path, size, false)?;
            *read_to = s.end;
            *first_data = s.first_data.map(|(_, ts)| ts);
        }
        let Some(oldest) = *first_data else {
            return Ok(());
        };
        let age = unix_now() - oldest;
        if age < self.db.settings.archive_timeout.as_secs() as i64 {
            return Ok(());
        }
        tracing::info!(instance = %self.db.cfg.name, binlog = %name, age_secs = age, "rotating the binlog so it can be archived");
        let started = Instant::now();
        self.db
            .query(None, "FLUSH BINARY LOGS")
            .await
            .map_err(|e| {
                AgentError::permanent(format!(
                    "FLUSH BINARY LOGS (needs the RELOAD privilege): {e}"
                ))
            })?;
        tracing::debug!(elapsed = ?started.elapsed(), "binlog rotated");
        self.active = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ts: u32, kind: u8, body: usize, flags: u16) -> Vec<u8> {
        let size = (HEADER + body) as u32;
        let mut v = Vec::new();
        v.extend(ts.to_le_bytes());
        v.push(kind);
        v.extend(1u32.to_le_bytes());
        v.extend(size.to_le_bytes());
        v.extend(0u32.to_le_bytes());
        v.extend(flags.to_le_bytes());
        v.extend(vec![0u8; body]);
        v
    }

    fn file(events: &[Vec<u8>]) -> (tempfile::NamedTempFile, u64) {
        let mut bytes = MAGIC.to_vec();
        for e in events {
            bytes.extend(e);
        }
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), &bytes).unwrap();
        (f, bytes.len() as u64)
    }

    #[test]
    fn a_closed_file_is_read_to_its_rotate() {
        let (f, len) = file(&[
            event(100, FORMAT_DESCRIPTION_EVENT, 233, 0),
            event(100, 163, 10, 0),
            event(100, 161, 20, 0),
            event(105, 162, 23, 0), // GTID: a transaction starts
            event(105, 2, 50, 0),
            event(130, ROTATE_EVENT, 28, 0),
        ]);
        let s = scan(f.path(), len, true).unwrap();
        assert_eq!((s.first_event_at, s.last_event_at, s.events), (100, 130, 6));
        assert!(s.closed_cleanly);
        assert_eq!(s.first_data.map(|d| d.1), Some(105));
    }

    #[test]
    fn the_active_file_is_not_closed_and_a_torn_event_ends_the_scan() {
        let (f, len) = file(&[
            event(100, FORMAT_DESCRIPTION_EVENT, 233, IN_USE),
            event(100, 161, 20, 0),
            event(101, 162, 23, 0),
        ]);
        let s = scan(f.path(), len, true).unwrap();
        assert!(!s.closed_cleanly);
        let torn = scan(f.path(), len - 5, false).unwrap();
        assert_eq!(torn.events, 2);
        assert!(torn.first_data.is_none());
        assert!(
            scan(f.path(), len - 5, true)
                .unwrap_err()
                .message()
                .contains("truncated")
        );
    }
}
