//! Physical backup of a MariaDB instance: `mariabackup --backup --stream=xbstream`, streamed
//! as the part `xbstream` (MySQL: `xtrabackup`, the same format). The stream is parsed as it
//! goes by: every chunk's CRC32 is checked, every file must be closed, and the binlog
//! position the backup is consistent with is read from its `xtrabackup_binlog_info`.
//!
//! The backup is stored as mariabackup wrote it, unprepared. `--prepare` runs only on a
//! restored copy, never on the only one.

use tidemark_core::text::bytes as human_bytes;
use tidemark_proto::{BeginBackupRequest, BinlogCoordinates, FinishBackupRequest, PartCheck};

use super::Maria;
use super::logical::unix_now;
use super::xbstream::XbstreamCheck;
use crate::error::AgentError;
use crate::job::{JobContext, JobResult};
use crate::upload::{Inspector, Malformed, Part, upload_inspected};

pub const PART: &str = "xbstream";
pub const FORMAT: &str = "xbstream";

impl Inspector for XbstreamCheck {
    fn feed(&mut self, bytes: &[u8]) {
        XbstreamCheck::feed(self, bytes)
    }
    fn verdict(&mut self) -> Result<(), Malformed> {
        self.finish().map(|_| ())
    }
}

pub async fn run(ctx: &JobContext, db: &Maria) -> JobResult {
    let facts = db.facts().await?;
    let tool = Maria::backup_tool(&facts);
    let warnings = facts.binlog_warnings();
    let begin = BeginBackupRequest {
        instance: db.cfg.name.clone(),
        kind: "base".into(),
        job_id: ctx.job_id,
        parts: vec![PART.into()],
        warnings: warnings.clone(),
        server_version: facts.version.clone(),
        tool_version: db.tool_version(tool).await.unwrap_or_default(),
        databases: Vec::new(),
    };
    let backup = ctx.begin_backup(begin).await?;
    tracing::info!(%backup, instance = %db.cfg.name, "physical backup started");
    // mariabackup wants a target directory even when it streams; it keeps nothing there.
    let scratch = tempfile::Builder::new()
        .prefix("tidemark-mariabackup.")
        .tempdir_in(&ctx.spool_dir)
        .map_err(|e| {
            AgentError::permanent(format!(
                "cannot make a scratch directory in {}: {e}",
                ctx.spool_dir.display()
            ))
        })?;
    let start_time = unix_now();
    let mut cmd = db.command(tool);
    cmd.args(["--backup", "--stream=xbstream"])
        .arg(format!("--target-dir={}", scratch.path().display()));
    let part = Part {
        backup,
        name: PART,
        format: FORMAT,
    };
    let uploaded = upload_inspected(
        &ctx.client,
        part,
        cmd,
        &ctx.progress,
        XbstreamCheck::default(),
    )
    .await;
    let (ack, check) = match uploaded {
        Ok(r) => r,
        Err(e) => {
            return Err(ctx.fail_backup(backup, e.into()).await);
        }
    };
    let stop_time = unix_now();
    let binlog = check
        .binlog_position()
        .map(|(file, position, gtid)| BinlogCoordinates {
            file,
            position,
            gtid,
            start_time,
            stop_time,
        });
    let detail = check.finish().unwrap_or_else(|e| e.0);
    let finish = FinishBackupRequest {
        backup_id: backup.0,
        error: String::new(),
        checks: vec![PartCheck {
            part: PART.into(),
            ok: true,
            detail,
        }],
        base: None,
        binlog: binlog.clone().or(Some(BinlogCoordinates {
            start_time,
            stop_time,
            ..Default::default()
        })),
    };
    ctx.finish_complete(finish).await?;
    Ok(format!(
        "backup {backup} complete: {} streamed, {} new in the store{}",
        human_bytes(ack.raw_bytes),
        human_bytes(ack.new_bytes),
        match &binlog {
            Some(b) => format!(", binlog position {}:{}", b.file, b.position),
            None => String::new(),
        }
    ))
}
