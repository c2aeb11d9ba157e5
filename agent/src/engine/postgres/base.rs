//! Physical base backup of a PostgreSQL cluster with `pg_basebackup -Ft -X none`: each
//! tablespace's tar streams through a named pipe into its own part, then the backup
//! manifest. WAL is not included: the backup is complete only once the controller holds
//! every segment from its start to its stop LSN in the archive, so a base backup is always
//! restored together with archived WAL, to any point after its stop.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidemark_core::ids::BackupId;
use tidemark_core::text::bytes as human_bytes;
use tidemark_core::timefmt::now;
use tidemark_proto::{BaseBackupInfo, BeginBackupRequest, FinishBackupRequest, PartCheck};

use super::Pg;
use super::fifo::{FifoSpool, PlantError};
use super::manifest::{BASE, MANIFEST, parse_label, parse_manifest, tar_check};
use super::tar::{TarSummary, TarTap};
use crate::config::Checkpoint;
use crate::error::AgentError;
use crate::job::{JobContext, JobResult};
use crate::tool::{self, ToolError};
use crate::upload::{Part, UploadError, upload_part};

pub const FORMAT_TAR: &str = "tar";
const FORMAT_MANIFEST: &str = "pg-backup-manifest";

/// The part a pg_basebackup tar file goes to: base.tar -> base, 16385.tar -> tablespace:16385.
pub fn part_of(tar_name: &str) -> String {
    match tar_name.strip_suffix(".tar") {
        Some("base") => BASE.into(),
        Some(oid) => format!("tablespace:{oid}"),
        None => tar_name.into(),
    }
}

pub async fn run(ctx: &JobContext, pg: &Pg) -> JobResult {
    let tablespaces = pg.tablespaces().await?;
    let mut parts = vec![BASE.to_string()];
    parts.extend(tablespaces.keys().map(|oid| format!("tablespace:{oid}")));
    parts.push(MANIFEST.into());
    let begin = BeginBackupRequest {
        instance: pg.cfg.name.clone(),
        kind: "base".into(),
        job_id: ctx.job_id,
        parts: parts.clone(),
        warnings: Vec::new(),
        server_version: pg.server_version().await.unwrap_or_default(),
        tool_version: pg.tool_version("pg_basebackup").await.unwrap_or_default(),
        databases: Vec::new(),
    };
    let backup = ctx.begin_backup(begin).await?;
    tracing::info!(%backup, instance = %pg.cfg.name, tablespaces = tablespaces.len(), "base backup started");
    let outcome = match stream_backup(ctx, pg, backup, &tablespaces).await {
        Ok(done) => wait_for_wal(ctx, pg, backup, done).await,
        Err(f) => Err(f),
    };
    match outcome {
        Ok(msg) => Ok(msg),
        Err(f) => Err(ctx.fail_backup(backup, f).await),
    }
}

/// What a streamed backup hands to the WAL wait.
struct Streamed {
    info: BaseBackupInfo,
    checks: Vec<PartCheck>,
    stored: u64,
    new: u64,
}

async fn stream_backup(
    ctx: &JobContext,
    pg: &Pg,
    backup: BackupId,
    tablespaces: &BTreeMap<String, String>,
) -> Result<Streamed, AgentError> {
    // pg_basebackup may, in principle, open a file before its pipe exists; that is
    // detected and the run repeated once.
    let mut retried = false;
    loop {
        match run_pg_basebackup(ctx, pg, backup, tablespaces).await {
            Err(Attempt::LostRace(name)) if !retried => {
                tracing::warn!(%backup, file = %name, "pg_basebackup opened {name} before its pipe existed; running it again");
                retried = true;
            }
            Err(Attempt::LostRace(name)) => {
                break Err(AgentError::permanent(format!(
                    "pg_basebackup twice opened {name} before its pipe was in place"
                )));
            }
            Err(Attempt::Failed(f)) => break Err(f),
            Ok(s) => break Ok(s),
        }
    }
}

enum Attempt {
    LostRace(String),
    Failed(AgentError),
}

impl From<AgentError> for Attempt {
    fn from(e: AgentError) -> Self {
        Attempt::Failed(e)
    }
}

impl From<ToolError> for Attempt {
    fn from(e: ToolError) -> Self {
        Attempt::Failed(e.into())
    }
}

impl From<UploadError> for Attempt {
    fn from(e: UploadError) -> Self {
        Attempt::Failed(e.into())
    }
}

async fn run_pg_basebackup(
    ctx: &JobContext,
    pg: &Pg,
    backup: BackupId,
    tablespaces: &BTreeMap<String, String>,
) -> Result<Streamed, Attempt> {
    let mut spool = FifoSpool::new(&ctx.spool_dir).map_err(|e| {
        AgentError::permanent(format!(
            "cannot make a spool directory in {}: {e}",
            ctx.spool_dir.display()
        ))
    })?;
    let app = format!("tidemark-base-{backup}");
    let mut cmd: Command = pg.command("pg_basebackup");
    cmd.env("PGAPPNAME", &app)
        .arg("-D")
        .arg(spool.dir())
        .args([
            "--format=tar",
            "--wal-method=none",
            "--no-sync",
            "--no-password",
            "--verbose",
        ])
        .arg(format!(
            "--checkpoint={}",
            match pg.settings.checkpoint {
                Checkpoint::Fast => "fast",
                Checkpoint::Spread => "spread",
            }
        ))
        .arg(format!("--label=tidemark backup {backup}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let program = pg.program("pg_basebackup");
    let start_time = now();
    let mut child = cmd.spawn().map_err(|source| ToolError::Spawn {
        program: program.display().to_string(),
        source,
    })?;
    let pid = child.id();
    let kill = move || {
        if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    };
    let stderr = child.stderr.take().expect("piped");
    let stderr_tail = tokio::task::spawn_blocking(move || tool::read_tail(stderr));
    let child = Arc::new(Mutex::new(child));
    let _stop_if_abandoned = KillOnDrop(child.clone());

    let mut names: Vec<String> = tablespaces.keys().map(|oid| format!("{oid}.tar")).collect();
    names.push("base.tar".into());
    let alive = {
        let child = child.clone();
        move || matches!(child.lock().unwrap().try_wait(), Ok(None))
    };
    let planted = tokio::task::spawn_blocking(move || {
        let r = spool.plant(&names, alive, Duration::from_secs(120));
        (spool, r)
    })
    .await
    .expect("plant task");
    let spool = planted.0;
    if let Err(e) = planted.1 {
        kill();
        let exit = reap(&child).await;
        let stderr = stderr_tail.await.unwrap_or_default();
        return Err(match e {
            PlantError::LostRace(name) => Attempt::LostRace(name),
            PlantError::NoDirectory => Attempt::Failed(
                ToolError::Failed {
                    tool: "pg_basebackup".into(),
                    status: exit
                        .map(tool::describe)
                        .unwrap_or_else(|| "did not start the backup".into()),
                    stderr,
                }
                .into(),
            ),
            PlantError::Io(m) => Attempt::Failed(AgentError::permanent(m)),
        });
    }

    let watchdog = tokio::spawn(watch_archive_wait(
        pg.clone(),
        app,
        pg.settings.wal_wait_timeout,
        kill,
    ));
    let mut opened = spool.open_all();
    let mut summaries: BTreeMap<String, Arc<Mutex<TarSummary>>> = BTreeMap::new();
    let (mut stored, mut new) = (0u64, 0u64);
    let mut failure: Option<UploadError> = None;
    loop {
        let next = tokio::select! {
            biased;
            f = opened.recv() => f,
            _ = wait_exit(&child) => None,
        };
        let Some((file_name, file, released)) = next else {
            break;
        };
        if released {
            continue;
        }
        let part = part_of(&file_name);
        let (tap, summary) = TarTap::new(
            file,
            &["backup_label", "tablespace_map"],
            &["backup_label", "global/pg_control"],
        );
        summaries.insert(part.clone(), summary.clone());
        let target = Part {
            backup,
            name: &part,
            format: FORMAT_TAR,
        };
        // A tar stream cut short (pg_basebackup died) lacks its end-of-archive marker: it
        // must not be stored as a part.
        let complete = move || {
            let s = summary.lock().unwrap();
            match (&s.malformed, s.ended) {
                (Some(m), _) => Err(UploadError::Read(std::io::Error::other(m.clone()))),
                (None, false) => Err(UploadError::Read(std::io::Error::other(
                    "the tar stream ended without its end-of-archive marker",
                ))),
                (None, true) => Ok(()),
            }
        };
        match upload_part(&ctx.client, target, tap, &ctx.progress, kill, complete).await {
            Ok(ack) => {
                stored += ack.raw_bytes;
                new += ack.new_bytes;
            }
            Err(e) => {
                failure = Some(e);
                kill();
                break;
            }
        }
    }
    let exit = reap(&child).await;
    spool.release();
    // The watchdog ends only when it stopped pg_basebackup.
    let waited_out = if watchdog.is_finished() {
        watchdog.await.unwrap_or(false)
    } else {
        watchdog.abort();
        false
    };
    let stderr = stderr_tail.await.unwrap_or_default();
    let stop_time = now();
    if waited_out {
        return Err(Attempt::Failed(AgentError::permanent(format!(
            "PostgreSQL waited longer than {} for the backup's WAL to be archived, so pg_basebackup was stopped; check that archive_command is 'tidemark-agent wal-push %p' and working (tidemark status, pg_stat_archiver)",
            tidemark_core::duration::human(pg.settings.wal_wait_timeout)
        ))));
    }
    // An upload the controller refused is the cause, and stopped pg_basebackup; a stream
    // that merely ended early is a consequence of pg_basebackup failing, whose own words
    // (its stderr) say why.
    match (failure, exit) {
        (Some(f @ UploadError::Read(_)), Some(s)) if !s.success() => {
            tracing::debug!("stream cut short: {f}");
        }
        (Some(f), _) => return Err(f.into()),
        _ => {}
    }
    match exit {
        Some(s) if s.success() => {}
        other => {
            return Err(ToolError::Failed {
                tool: "pg_basebackup".into(),
                status: other
                    .map(tool::describe)
                    .unwrap_or_else(|| "could not be waited for".into()),
                stderr,
            }
            .into());
        }
    }
    let extra = spool.unexpected_files();
    if !extra.is_empty() {
        return Err(AgentError::permanent(format!(
            "pg_basebackup wrote {} that the backup did not expect (a tablespace created while it ran); run the backup again",
            extra.join(", ")
        ))
        .into());
    }
    for oid in tablespaces.keys() {
        if !summaries.contains_key(&format!("tablespace:{oid}")) {
            return Err(AgentError::permanent(format!(
                "pg_basebackup sent nothing for tablespace {oid} (dropped while the backup ran?); run the backup again"
            ))
            .into());
        }
    }
    // The manifest is small (a line per file) and written only at the end, as a file.
    let manifest_path = spool.dir().join("backup_manifest");
    let manifest = std::fs::read(&manifest_path).map_err(|e| {
        AgentError::permanent(format!(
            "pg_basebackup left no readable {}: {e}",
            manifest_path.display()
        ))
    })?;
    let target = Part {
        backup,
        name: MANIFEST,
        format: FORMAT_MANIFEST,
    };
    let ack = upload_part(
        &ctx.client,
        target,
        std::io::Cursor::new(manifest.clone()),
        &ctx.progress,
        || {},
        || Ok(()),
    )
    .await?;
    stored += ack.raw_bytes;
    new += ack.new_bytes;

    let base = summaries
        .get(BASE)
        .map(|s| s.lock().unwrap().clone())
        .ok_or_else(|| AgentError::permanent("pg_basebackup sent no base.tar"))?;
    let label_text = base
        .captured
        .get("backup_label")
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .ok_or_else(|| AgentError::permanent("base.tar holds no backup_label"))?;
    let label = parse_label(&label_text)?;
    let range = parse_manifest(&manifest)?;
    let mut map = tablespaces.clone();
    if let Some(tm) = base.captured.get("tablespace_map") {
        for line in String::from_utf8_lossy(tm).lines() {
            if let Some((oid, path)) = line.split_once(' ') {
                map.insert(oid.to_string(), path.to_string());
            }
        }
    }
    let mut checks: Vec<PartCheck> = summaries
        .iter()
        .map(|(part, s)| tar_check(part, &s.lock().unwrap()))
        .collect();
    checks.push(PartCheck {
        part: MANIFEST.into(),
        ok: true,
        detail: format!(
            "backup manifest parsed: WAL {} .. {} on timeline {}",
            range.start, range.stop, range.timeline
        ),
    });
    Ok(Streamed {
        info: BaseBackupInfo {
            start_lsn: label.start.to_string(),
            stop_lsn: range.stop.to_string(),
            timeline: range.timeline,
            system_identifier: pg.system_identifier().await,
            backup_label: label_text,
            start_time,
            stop_time,
            tablespaces: map.into_iter().collect(),
        },
        checks,
        stored,
        new,
    })
}

async fn wait_exit(child: &Arc<Mutex<std::process::Child>>) {
    loop {
        if !matches!(child.lock().unwrap().try_wait(), Ok(None)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn reap(child: &Arc<Mutex<std::process::Child>>) -> Option<std::process::ExitStatus> {
    wait_exit(child).await;
    child.lock().unwrap().wait().ok()
}

/// While pg_basebackup runs, watch whether PostgreSQL is waiting for the backup's WAL to be
/// archived (its walsender's wait event). Waiting longer than `limit` means archiving is
/// broken: stop pg_basebackup, which would otherwise wait forever. Returns true if it did.
async fn watch_archive_wait(pg: Pg, app: String, limit: Duration, kill: impl FnOnce()) -> bool {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'BackupWaitWalArchive' AND application_name = '{app}'"
    );
    let mut since: Option<Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let waiting = pg
            .query("postgres", &sql)
            .await
            .map(|n| n.trim() != "0")
            .unwrap_or(false);
        match (waiting, since) {
            (false, _) => since = None,
            (true, None) => since = Some(Instant::now()),
            (true, Some(t)) if t.elapsed() >= limit => {
                kill();
                return true;
            }
            (true, Some(_)) => {}
        }
    }
}

/// Finish the backup; while the controller still lacks some of its WAL, wait (forcing a
/// segment switch once, in case the last segment is still being filled).
async fn wait_for_wal(ctx: &JobContext, pg: &Pg, backup: BackupId, s: Streamed) -> JobResult {
    let mut client = ctx.client.clone();
    let deadline = Instant::now() + pg.settings.wal_wait_timeout;
    let mut switched = false;
    let started = Instant::now();
    loop {
        let finish = FinishBackupRequest {
            backup_id: backup.0,
            error: String::new(),
            checks: s.checks.clone(),
            base: Some(s.info.clone()),
            binlog: None,
        };
        let r = client.finish_backup(finish).await?.into_inner();
        match r.status.as_str() {
            "complete" => {
                return Ok(format!(
                    "backup {backup} complete: {} stored ({} new), WAL {} .. {}",
                    human_bytes(s.stored),
                    human_bytes(s.new),
                    s.info.start_lsn,
                    s.info.stop_lsn
                ));
            }
            "running" if Instant::now() < deadline => {
                if !switched && started.elapsed() > Duration::from_secs(3) {
                    // The stop segment may still be the current one on an idle server.
                    let _ = pg.query("postgres", "SELECT pg_switch_wal()").await;
                    switched = true;
                }
                tracing::info!(%backup, reason = %r.reason, "waiting for WAL");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            "running" => {
                return Err(AgentError::permanent(format!(
                    "{} after {}; check that archive_command is 'tidemark-agent wal-push %p' and working (tidemark status, pg_stat_archiver)",
                    r.reason,
                    tidemark_core::duration::human(pg.settings.wal_wait_timeout)
                )));
            }
            other => {
                return Err(AgentError::permanent(format!(
                    "backup {backup} {other}: {}",
                    r.reason
                )));
            }
        }
    }
}

/// Kills pg_basebackup if the job is dropped (cancelled) while it still runs.
struct KillOnDrop(Arc<Mutex<std::process::Child>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let mut child = self.0.lock().unwrap();
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tar_goes_to_its_part() {
        assert_eq!(part_of("base.tar"), "base");
        assert_eq!(part_of("16385.tar"), "tablespace:16385");
    }
}
