//! Logical backup of a PostgreSQL instance: `pg_dumpall --globals-only`, then `pg_dump -Fc`
//! of each database, each streamed as one part. After storing, each part is read back from
//! the controller and checked for structure (`pg_restore --list` on the stored stream).

use std::process::Stdio;
use std::time::Duration;

use tidemark_core::duration;
use tidemark_core::ids::BackupId;
use tidemark_proto::{BeginBackupRequest, FinishBackupRequest, PartCheck};
use tokio::io::AsyncReadExt;

use super::{Pg, dbname_conninfo};
use crate::download::download_part;
use tidemark_core::text::bytes as human_bytes;

use crate::error::AgentError;
use crate::job::{JobContext, JobResult};
use crate::tool;
use crate::upload::{Part, upload_tool_output};

pub const GLOBALS: &str = "globals";
const FORMAT_CUSTOM: &str = "pg_dump-custom";
const FORMAT_SQL: &str = "sql";

pub async fn run(ctx: &JobContext, pg: &Pg) -> JobResult {
    let databases = pg.databases().await?;
    if databases.is_empty() {
        return Err(AgentError::permanent(format!(
            "instance {} has no database to dump",
            pg.cfg.name
        )));
    }
    let warnings = long_transactions(pg).await;
    let mut parts = vec![GLOBALS.to_string()];
    parts.extend(databases.iter().map(|d| format!("db:{d}")));
    let server_version = pg.server_version().await.unwrap_or_default();
    let tool_version = pg.tool_version("pg_dump").await.unwrap_or_default();
    let begin = BeginBackupRequest {
        instance: pg.cfg.name.clone(),
        kind: "logical".into(),
        job_id: ctx.job_id,
        parts: parts.clone(),
        warnings: warnings.clone(),
        server_version,
        tool_version,
        databases: Vec::new(),
    };
    let backup = ctx.begin_backup(begin).await?;
    tracing::info!(%backup, instance = %pg.cfg.name, parts = parts.len(), warnings = warnings.len(), "logical backup started");

    match dump_and_check(ctx, pg, backup, &databases).await {
        Ok((checks, stored, new)) => {
            let finish = FinishBackupRequest {
                backup_id: backup.0,
                error: String::new(),
                checks,
                base: None,
                binlog: None,
            };
            ctx.finish_complete(finish).await?;
            Ok(format!(
                "backup {backup} complete: {} parts, {} dumped, {} new in the store{}",
                parts.len(),
                human_bytes(stored),
                human_bytes(new),
                if warnings.is_empty() {
                    String::new()
                } else {
                    format!(", {} warning(s)", warnings.len())
                }
            ))
        }
        Err(f) => Err(ctx.fail_backup(backup, f).await),
    }
}

/// Dump every part, then check each stored part. Returns the checks and byte counts.
async fn dump_and_check(
    ctx: &JobContext,
    pg: &Pg,
    backup: BackupId,
    databases: &[String],
) -> Result<(Vec<PartCheck>, u64, u64), AgentError> {
    let (mut stored, mut new) = (0, 0);
    let mut globals = pg.command("pg_dumpall");
    globals.args(["--globals-only", "--no-password", "-l", "postgres"]);
    let part = Part {
        backup,
        name: GLOBALS,
        format: FORMAT_SQL,
    };
    let ack = upload_tool_output(&ctx.client, part, globals, &ctx.progress).await?;
    stored += ack.raw_bytes;
    new += ack.new_bytes;
    for db in databases {
        let mut dump = pg.command("pg_dump");
        // -Z0: chunking can only deduplicate an uncompressed stream; zstd compresses after.
        dump.args(["--format=custom", "--compress=0", "--no-password", "-d"])
            .arg(dbname_conninfo(db));
        if let Some(t) = pg.settings.lock_wait_timeout {
            dump.arg(format!("--lock-wait-timeout={}", t.as_millis()));
        }
        let name = format!("db:{db}");
        let part = Part {
            backup,
            name: &name,
            format: FORMAT_CUSTOM,
        };
        let ack = upload_tool_output(&ctx.client, part, dump, &ctx.progress).await?;
        stored += ack.raw_bytes;
        new += ack.new_bytes;
    }
    let mut checks = vec![check_globals(ctx, backup).await];
    for db in databases {
        checks.push(check_custom_dump(ctx, pg, backup, &format!("db:{db}")).await);
    }
    Ok((checks, stored, new))
}

/// Transactions open longer than the configured limit. They pin old row versions (vacuum
/// cannot remove them), which is worth a DBA's attention while a dump holds its snapshot.
async fn long_transactions(pg: &Pg) -> Vec<String> {
    let limit = pg.settings.long_transaction_warning.as_secs();
    let sql = format!(
        "SELECT pid, coalesce(usename, ''), coalesce(datname, ''), extract(epoch FROM now() - xact_start)::bigint, coalesce(state, '')
         FROM pg_stat_activity
         WHERE xact_start IS NOT NULL AND now() - xact_start > interval '{limit} seconds'
           AND pid <> pg_backend_pid() AND backend_type = 'client backend'
         ORDER BY xact_start"
    );
    match pg.query("postgres", &sql).await {
        Err(e) => vec![format!("could not check pg_stat_activity for long transactions: {e}")],
        Ok(out) => out
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split('\t').collect();
                let [pid, user, db, secs, state] = f.as_slice() else { return None };
                let age = duration::human(Duration::from_secs(secs.parse().unwrap_or(0)));
                Some(format!(
                    "transaction open for {age} (pid {pid}, user {user}, database {db}, {state}), longer than the {} limit: it pins old row versions, so vacuum cannot remove them while it lasts",
                    duration::human(pg.settings.long_transaction_warning)
                ))
            })
            .collect(),
    }
}

/// The globals are SQL text; a complete dump ends with pg_dumpall's closing banner.
async fn check_globals(ctx: &JobContext, backup: BackupId) -> PartCheck {
    let mut buf: Vec<u8> = Vec::new();
    match download_part(
        &ctx.client,
        backup,
        GLOBALS,
        0,
        &mut buf,
        &Default::default(),
    )
    .await
    {
        Err(e) => failed(GLOBALS, e.to_string()),
        Ok(n) => {
            let text = String::from_utf8_lossy(&buf);
            if text.contains("PostgreSQL database cluster dump complete") {
                passed(
                    GLOBALS,
                    format!("pg_dumpall globals, {n} bytes, ends with its completion banner"),
                )
            } else {
                failed(
                    GLOBALS,
                    "the globals dump lacks pg_dumpall's completion banner; it is truncated"
                        .to_string(),
                )
            }
        }
    }
}

/// Feed the stored stream to `pg_restore --list`, which parses the archive's header and table
/// of contents. pg_restore may stop reading once it has the TOC; that is fine if it exits 0.
async fn check_custom_dump(ctx: &JobContext, pg: &Pg, backup: BackupId, part: &str) -> PartCheck {
    let mut cmd = pg.command("pg_restore");
    cmd.arg("--list")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let program = pg.program("pg_restore").display().to_string();
    let mut child = match tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(source) => {
            return failed(part, tool::ToolError::Spawn { program, source }.to_string());
        }
    };
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let feed = async {
        let r = download_part(
            &ctx.client,
            backup,
            part,
            0,
            &mut stdin,
            &Default::default(),
        )
        .await;
        drop(stdin);
        r
    };
    let read_out = async {
        let (mut out, mut err) = (String::new(), String::new());
        let _ = tokio::join!(
            stdout.read_to_string(&mut out),
            stderr.read_to_string(&mut err)
        );
        (out, err)
    };
    let (fed, (out, err)) = tokio::join!(feed, read_out);
    let status = child.wait().await;
    match (status, fed) {
        (Err(e), _) => failed(part, format!("pg_restore --list: {e}")),
        (Ok(s), _) if !s.success() => failed(
            part,
            format!("pg_restore --list {}: {}", tool::describe(s), err.trim()),
        ),
        // A sink error only means pg_restore stopped reading after the TOC.
        (Ok(_), Err(e)) if !matches!(e, crate::download::DownloadError::Sink { .. }) => {
            failed(part, e.to_string())
        }
        (Ok(_), _) => {
            let entries = out
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with(';'))
                .count();
            passed(
                part,
                format!("pg_restore --list read the archive: {entries} TOC entries"),
            )
        }
    }
}

/// A check the stored part passed, and what it found.
fn passed(part: &str, detail: String) -> PartCheck {
    PartCheck {
        part: part.into(),
        ok: true,
        detail,
    }
}

/// A check the stored part failed, and why.
fn failed(part: &str, detail: String) -> PartCheck {
    PartCheck {
        part: part.into(),
        ok: false,
        detail,
    }
}
