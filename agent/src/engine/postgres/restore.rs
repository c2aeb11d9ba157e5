//! Restoring a logical backup into a new database with pg_restore.
//!
//! The database must not exist, or be empty, unless the operator passed --clean. If the
//! restore fails and this job created the database, it is dropped again, so a half-restored
//! database is never left looking like a good one.

use tidemark_core::ids::BackupId;
use tidemark_proto::RestoreJob;

use super::{Pg, dbname_conninfo, quote_ident, quote_literal};
use crate::download::{Feed, download_part, run_fed};
use tidemark_core::text::bytes as human_bytes;

use crate::error::AgentError;
use crate::job::{JobContext, JobResult};

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
            return Err(AgentError::permanent(format!(
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
            let mut msg = format!(
                "restore of backup {backup} into {db} failed: {}",
                f.message()
            );
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
            Err(AgentError::new(f.kind(), msg))
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
) -> Result<u64, AgentError> {
    let mut cmd = pg_restore_command(pg, job);
    let spool = if job.jobs > 1 {
        let file = tempfile::Builder::new()
            .prefix("tidemark-restore-")
            .tempfile_in(&ctx.spool_dir)
            .map_err(|e| {
                AgentError::permanent(format!(
                    "creating a spool file in {}: {e}",
                    ctx.spool_dir.display()
                ))
            })?;
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
    // Parallel restore reads the spool file; otherwise the part streams into stdin.
    let feed = spool.is_none().then_some(Feed {
        backup,
        part: &job.part,
        trailer: b"",
    });
    let bytes = run_fed(ctx, cmd, feed).await?;
    drop(spool);
    Ok(if bytes > 0 {
        bytes
    } else {
        ctx.progress.done()
    })
}
