//! `tidemark restore --backup ID --host AGENT --into-database NEW [--database SRC]`.

use std::path::Path;

use serde_json::json;
use tidemark_proto::StartRestoreRequest;

use crate::client::{self, CliError, Exit};
use crate::output::{Format, print_json};
use crate::wait;

#[derive(clap::Args)]
pub struct Args {
    /// The backup to restore (see tidemark backups).
    #[arg(long)]
    backup: i64,
    /// The agent to restore onto, e.g. db2 or agent:db2.
    #[arg(long)]
    host: String,
    /// The database to create and restore into.
    #[arg(long)]
    into_database: String,
    /// The source database, when the backup holds several.
    #[arg(long)]
    database: Option<String>,
    /// The instance on that agent (default: the backup's own, or the agent's only one).
    #[arg(long)]
    target_instance: Option<String>,
    /// Replace the contents of an existing non-empty database.
    #[arg(long)]
    clean: bool,
    /// Parallel pg_restore jobs (the dump is spooled to a file on the agent first).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    jobs: u32,
    /// Do not set object ownership to match the original database.
    #[arg(long)]
    no_owner: bool,
    /// Start the restore and return without waiting for it.
    #[arg(long)]
    no_wait: bool,
}

pub async fn run(config: Option<&Path>, format: Format, args: Args) -> Result<Exit, CliError> {
    let mut c = client::connect(config).await?;
    let req = StartRestoreRequest {
        backup_id: args.backup,
        host: args.host.clone(),
        into_database: args.into_database.clone(),
        database: args.database.unwrap_or_default(),
        clean: args.clean,
        jobs: args.jobs,
        target_instance: args.target_instance.unwrap_or_default(),
        no_owner: args.no_owner,
    };
    let job = c.start_restore(req).await?.into_inner();
    let job = if args.no_wait {
        job
    } else {
        wait::until_done(&mut c, job, &format!("restore {}", args.into_database)).await?
    };
    if format == Format::Json {
        print_json(&json!({
            "job_id": job.id, "state": job.state, "agent": job.agent, "instance": job.instance,
            "backup_id": args.backup, "into_database": args.into_database,
            "bytes": job.bytes_done, "message": job.message,
        }));
    } else if args.no_wait {
        println!(
            "job {} started: restore of backup {} on agent {}",
            job.id, args.backup, job.agent
        );
    } else if job.state == "succeeded" {
        println!("{}", job.message);
    }
    match job.state.as_str() {
        "failed" => Err(CliError::new(Exit::Failed, job.message)),
        _ => Ok(Exit::Ok),
    }
}
