//! `tidemark restore`, two ways:
//! - logical: `--backup ID --host AGENT --into-database NEW [--database SRC]`;
//! - point in time: `--instance NAME --host AGENT --pgdata DIR` and one of `--to`, `--lsn`,
//!   `--xid`, `--name`, `--immediate`, `--latest`.

use std::collections::HashMap;
use std::path::Path;

use serde_json::json;
use tidemark_proto::{JobInfo, StartPitrRestoreRequest, StartRestoreRequest};

use crate::client::{self, CliError, Exit};
use crate::output::{Format, print_json};
use crate::wait;

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("target").args(["to", "lsn", "xid", "name", "immediate", "latest"])))]
pub struct Args {
    /// The agent to restore onto, e.g. db2 or agent:db2.
    #[arg(long)]
    host: String,

    /// Logical: the backup to restore (see tidemark backups).
    #[arg(long, conflicts_with = "pgdata")]
    backup: Option<i64>,
    /// Logical: the database to create and restore into.
    #[arg(long, requires = "backup")]
    into_database: Option<String>,
    /// Logical: the source database, when the backup holds several.
    #[arg(long, requires = "backup")]
    database: Option<String>,
    /// Logical: the instance on that agent (default: the backup's own, or the agent's only one).
    #[arg(long, requires = "backup")]
    target_instance: Option<String>,
    /// Logical: replace the contents of an existing non-empty database.
    #[arg(long, requires = "backup")]
    clean: bool,
    /// Logical: parallel pg_restore jobs (the dump is spooled to a file on the agent first).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    jobs: u32,
    /// Logical: do not set object ownership to match the original database.
    #[arg(long, requires = "backup")]
    no_owner: bool,

    /// Point in time: the instance whose base backups and WAL archive to restore from.
    #[arg(long, requires = "pgdata")]
    instance: Option<String>,
    /// Point in time: the new data directory on the target host (must not exist, or be
    /// empty). `--datadir` is the same option, as MariaDB users call it.
    #[arg(long, visible_alias = "datadir", requires = "instance")]
    pgdata: Option<String>,
    /// Recover to this time: 2026-11-25 20:11:02[.ffffff][+zone], UTC when no zone is given.
    #[arg(long)]
    to: Option<String>,
    /// Recover to this WAL position (16/B374D848).
    #[arg(long)]
    lsn: Option<String>,
    /// Recover to the commit of this transaction id.
    #[arg(long)]
    xid: Option<String>,
    /// Recover to this named restore point (pg_create_restore_point).
    #[arg(long)]
    name: Option<String>,
    /// Recover only to the base backup's consistent point.
    #[arg(long)]
    immediate: bool,
    /// Recover to the end of the archived WAL.
    #[arg(long)]
    latest: bool,
    /// What the server does at the target: pause (inspect, then promote) or promote.
    #[arg(long, default_value = "pause", value_parser = ["pause", "promote"])]
    action: String,
    /// Whether the restored server archives WAL. Off by default: a clone must never add to
    /// the primary's archive (the controller refuses it anyway).
    #[arg(long, default_value = "off", value_parser = ["off", "on"])]
    archive: String,
    /// Port for the restored server (needed when it runs beside the original).
    #[arg(long)]
    port: Option<u16>,
    /// Start the server, wait until recovery reaches the target, and report where it stopped.
    #[arg(long)]
    start: bool,
    /// Restore this base backup instead of the one picked for the target.
    #[arg(long = "from-backup")]
    from_backup: Option<i64>,
    /// Put a tablespace elsewhere: OID=DIR or OLD-DIR=NEW-DIR (repeatable).
    #[arg(long = "tablespace-map", value_name = "FROM=TO")]
    tablespace_map: Vec<String>,
    /// Skip pg_verifybackup on the restored files.
    #[arg(long)]
    skip_verify: bool,

    /// Start the restore and return without waiting for it.
    #[arg(long)]
    no_wait: bool,
}

pub async fn run(config: Option<&Path>, format: Format, args: Args) -> Result<Exit, CliError> {
    if args.pgdata.is_some() {
        return point_in_time(config, format, args).await;
    }
    let usage = |m: &str| CliError::new(Exit::Usage, m.to_string());
    let backup = args
        .backup
        .ok_or_else(|| usage("give --backup ID --into-database NEW (logical) or --instance NAME --pgdata DIR (point in time)"))?;
    let into = args
        .into_database
        .clone()
        .ok_or_else(|| usage("name the new database with --into-database"))?;
    let mut c = client::connect(config).await?;
    let req = StartRestoreRequest {
        backup_id: backup,
        host: args.host.clone(),
        into_database: into.clone(),
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
        wait::until_done(&mut c, job, &format!("restore {into}")).await?
    };
    if format == Format::Json {
        print_json(&json!({
            "job_id": job.id, "state": job.state, "agent": job.agent, "instance": job.instance,
            "backup_id": backup, "into_database": into,
            "bytes": job.bytes_done, "message": job.message,
        }));
    } else if args.no_wait {
        println!(
            "job {} started: restore of backup {backup} on agent {}",
            job.id, job.agent
        );
    } else if job.state == "succeeded" {
        println!("{}", job.message);
    }
    finished(&job)
}

fn finished(job: &JobInfo) -> Result<Exit, CliError> {
    match job.state.as_str() {
        "failed" => Err(CliError::new(Exit::Failed, job.message.clone())),
        _ => Ok(Exit::Ok),
    }
}

/// The target as the controller takes it: (kind, value).
fn target(args: &Args) -> Result<(String, String), CliError> {
    let usage = |m: String| CliError::new(Exit::Usage, m);
    Ok(if let Some(t) = &args.to {
        let micros = tidemark_core::timefmt::parse_timestamp(t).map_err(usage)?;
        ("time".into(), micros.to_string())
    } else if let Some(l) = &args.lsn {
        ("lsn".into(), l.clone())
    } else if let Some(x) = &args.xid {
        ("xid".into(), x.clone())
    } else if let Some(n) = &args.name {
        ("name".into(), n.clone())
    } else if args.immediate {
        ("immediate".into(), String::new())
    } else if args.latest {
        ("latest".into(), String::new())
    } else {
        return Err(usage(
            "give a recovery target: --to TIMESTAMP, --lsn, --xid, --name, --immediate or --latest"
                .into(),
        ));
    })
}

async fn point_in_time(
    config: Option<&Path>,
    format: Format,
    args: Args,
) -> Result<Exit, CliError> {
    let (target_kind, target_value) = target(&args)?;
    let mut map = HashMap::new();
    for m in &args.tablespace_map {
        let (from, to) = m.split_once('=').ok_or_else(|| {
            CliError::new(
                Exit::Usage,
                format!("--tablespace-map {m:?}: write it as OID=DIR or OLD-DIR=NEW-DIR"),
            )
        })?;
        map.insert(from.to_string(), to.to_string());
    }
    let instance = args.instance.clone().unwrap_or_default();
    let pgdata = args.pgdata.clone().unwrap_or_default();
    let mut c = client::connect(config).await?;
    let req = StartPitrRestoreRequest {
        instance: instance.clone(),
        host: args.host.clone(),
        pgdata: pgdata.clone(),
        target_kind: target_kind.clone(),
        target: target_value,
        action: args.action.clone(),
        archive: args.archive == "on",
        port: args.port.unwrap_or(0) as u32,
        start: args.start,
        tablespace_map: map,
        backup_id: args.from_backup.unwrap_or(0),
        skip_verify: args.skip_verify,
    };
    let job = c.start_pitr_restore(req).await?.into_inner();
    let job = if args.no_wait {
        job
    } else {
        wait::until_done(&mut c, job, &format!("restore {instance} into {pgdata}")).await?
    };
    if format == Format::Json {
        print_json(&json!({
            "job_id": job.id, "state": job.state, "agent": job.agent, "instance": job.instance,
            "pgdata": pgdata, "target_kind": target_kind, "bytes": job.bytes_done,
            "message": job.message,
        }));
    } else if args.no_wait {
        println!(
            "job {} started: restore of {instance} into {pgdata} on agent {}",
            job.id, job.agent
        );
    } else if job.state == "succeeded" {
        println!("{}", job.message);
    }
    finished(&job)
}
