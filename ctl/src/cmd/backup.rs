//! `tidemark backup --instance NAME --kind logical|base [--wait]`.

use std::path::Path;

use serde_json::json;
use tidemark_proto::{GetBackupRequest, StartBackupRequest};

use crate::client::{self, CliError, Exit};
use crate::cmd::backups::{detail_json, print_detail};
use crate::output::{Format, print_json};
use crate::wait;

#[derive(clap::Args)]
pub struct Args {
    /// The instance to back up.
    #[arg(long)]
    instance: String,
    /// What kind of backup: logical (pg_dump of each database) or base (pg_basebackup of
    /// the cluster; complete once its WAL is archived).
    #[arg(long, default_value = "logical", value_parser = ["logical", "base"])]
    kind: String,
    /// Wait until the backup is complete or failed; exit 1 if it failed.
    #[arg(long)]
    wait: bool,
}

pub async fn run(config: Option<&Path>, format: Format, args: Args) -> Result<Exit, CliError> {
    let mut c = client::connect(config).await?;
    let job = c
        .start_backup(StartBackupRequest {
            instance: args.instance.clone(),
            kind: args.kind,
        })
        .await?
        .into_inner();
    if !args.wait {
        if format == Format::Json {
            print_json(
                &json!({"job_id": job.id, "agent": job.agent, "instance": job.instance, "state": job.state}),
            );
        } else {
            println!(
                "job {} started: {} backup of {} on agent {}",
                job.id, job.kind, job.instance, job.agent
            );
        }
        return Ok(Exit::Ok);
    }
    let label = format!("backup {}", args.instance);
    let job = wait::until_done(&mut c, job, &label).await?;
    if job.backup_id == 0 {
        // The agent failed before the backup was even recorded.
        if format == Format::Json {
            print_json(&json!({"job_id": job.id, "state": job.state, "message": job.message}));
        }
        return Err(CliError::new(
            Exit::Failed,
            format!("backup of {} failed: {}", args.instance, job.message),
        ));
    }
    let b = c
        .get_backup(GetBackupRequest { id: job.backup_id })
        .await?
        .into_inner();
    if format == Format::Json {
        print_json(&detail_json(&b));
    } else {
        print_detail(&b, format);
    }
    let status = b.summary.as_ref().map(|s| s.status.as_str()).unwrap_or("");
    Ok(if status == "complete" {
        Exit::Ok
    } else {
        Exit::Failed
    })
}
