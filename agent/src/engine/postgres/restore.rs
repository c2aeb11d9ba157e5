//! Restoring a logical backup into a new database with pg_restore.
//!
//! The database must not exist, or be empty, unless the operator passed --clean. If the
//! restore fails and this job created the database, it is dropped again, so a half-restored
//! database is never left looking like a good one.

use std::process::Stdio;

use tidemark_core::ids::BackupId;
use tidemark_proto::RestoreJob;
use tokio::io::AsyncReadExt;

use super::{Pg, dbname_conninfo, quote_ident, quote_literal};
use crate::download::{DownloadError, download_part};
use tidemark_core::text::bytes as human_bytes;

use crate::job::{JobContext, JobFailure, JobResult};
use crate::tool::{self, ToolError};

pub async fn run(ctx: &JobContext, pg: &Pg, job: &RestoreJob) -> JobResult {
    let db = &job.into_database;
    let exists = pg
        .query(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_database WHERE datname = {}",
                quote_literal(db)
            ),
        )
        .await?
        == "1";
    if exists {
        let objects: u64 = pg
            .query(
                db,
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
                   AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'",
            )
            .await?
            .parse()
            .unwrap_or(0);
        if objects > 0 && !job.clean {
            return Err(JobFailure(format!(
                "database {db} already exists on instance {} and is not empty ({objects} relations); pass --clean to replace its contents, or pick a new name",
                pg.cfg.name
            )));
        }
    } else {
        pg.query(
            "postgres",
            &format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(db)),
        )
        .await?;
    }
    let backup = BackupId(job.backup_id);
    match restore_into(ctx, pg, job, backup).await {
        Ok(bytes) => Ok(format!(
            "restored backup {backup} part {} into database {db} on instance {} ({})",
            job.part,
            pg.cfg.name,
            human_bytes(bytes)
        )),
        Err(f) => {
            let mut msg = format!("restore of backup {backup} into {db} failed: {}", f.0);
            if !exists {
                match pg
                    .query(
                        "postgres",
                        &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(db)),
                    )
                    .await
                {
                    Ok(_) => {
                        msg.push_str(&format!("; the partly restored database {db} was dropped"))
                    }
                    Err(e) => msg.push_str(&format!(
                        "; dropping the partly restored database {db} failed too: {e}"
                    )),
                }
            }
            Err(JobFailure(msg))
        }
    }
}

fn pg_restore_command(pg: &Pg, job: &RestoreJob) -> std::process::Command {
    let mut cmd = pg.command("pg_restore");
    cmd.args(["--exit-on-error", "--no-password", "-d"])
        .arg(dbname_conninfo(&job.into_database));
    if job.clean {
        cmd.args(["--clean", "--if-exists"]);
    }
    if job.no_owner {
        cmd.arg("--no-owner");
    }
    if job.jobs <= 1 {
        // All or nothing: the stream's digest is checked only at its end, and with --clean
        // an error halfway must not leave an existing database half replaced.
        cmd.arg("--single-transaction");
    }
    cmd
}

/// Stream into pg_restore's stdin, or, for parallel restore (which needs a seekable file),
/// spool to a temp file first.
async fn restore_into(
    ctx: &JobContext,
    pg: &Pg,
    job: &RestoreJob,
    backup: BackupId,
) -> Result<u64, JobFailure> {
    let mut cmd = pg_restore_command(pg, job);
    let spool = if job.jobs > 1 {
        let file = tempfile::Builder::new()
            .prefix("tidemark-restore-")
            .tempfile_in(&ctx.spool_dir)
            .map_err(|e| format!("creating a spool file in {}: {e}", ctx.spool_dir.display()))?;
        let mut out = tokio::fs::File::create(file.path()).await?;
        download_part(
            &ctx.client,
            backup,
            &job.part,
            ctx.job_id,
            &mut out,
            &ctx.progress,
        )
        .await?;
        out.sync_all().await?;
        cmd.arg(format!("--jobs={}", job.jobs)).arg(file.path());
        Some(file)
    } else {
        None
    };
    cmd.stdin(if spool.is_some() {
        Stdio::null()
    } else {
        Stdio::piped()
    })
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let program = pg.program("pg_restore").display().to_string();
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ToolError::Spawn { program, source })?;
    let mut stderr = child.stderr.take().expect("piped");
    let collect_err = async {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    };
    // Not reaped until child.wait() below, so the pid stays this child's.
    let pid = child.id();
    let feed = async {
        match child.stdin.take() {
            None => Ok(0),
            Some(mut stdin) => {
                let r = download_part(
                    &ctx.client,
                    backup,
                    &job.part,
                    ctx.job_id,
                    &mut stdin,
                    &ctx.progress,
                )
                .await;
                if r.is_err() {
                    // Kill pg_restore before it sees the end of its input: at EOF it would
                    // commit whatever it had, though the stream failed its checks.
                    if let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
                        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    }
                }
                drop(stdin);
                r
            }
        }
    };
    let (fed, err) = tokio::join!(feed, collect_err);
    let status = child.wait().await?;
    let err_tail: String = err
        .chars()
        .rev()
        .take(tool::STDERR_TAIL)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    // A failed download is the cause even if pg_restore then failed on the short input;
    // a sink error only means pg_restore died first, and its stderr says why.
    let bytes = match fed {
        Err(e) if !matches!(e, DownloadError::Sink { .. }) => return Err(e.into()),
        _ if !status.success() => {
            let (status, stderr) = (tool::describe(status), err_tail);
            return Err(ToolError::Failed {
                tool: "pg_restore".into(),
                status,
                stderr,
            }
            .into());
        }
        Err(e) => return Err(e.into()),
        Ok(b) => b,
    };
    drop(spool);
    Ok(if bytes > 0 {
        bytes
    } else {
        ctx.progress.done()
    })
}
