//! tidemark: the operator CLI for a Tidemark fleet.
//!
//! Exit codes: 0 ok, 1 the operation failed, 2 usage or config error, 3 controller
//! unreachable or not authorised.

mod client;
mod cmd;
mod output;
mod progress;
mod wait;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::client::{CliError, Exit};
use crate::output::Format;

#[derive(Parser)]
#[command(name = "tidemark", version, about = "Operate a Tidemark backup fleet")]
struct Cli {
    /// CLI config: the controller's address and this operator's certificate.
    #[arg(long, global = true, env = "TIDEMARK_CONFIG")]
    config: Option<PathBuf>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t)]
    output: Format,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List agents, whether they are connected, and their instances.
    Agents,
    /// List backups (newest first), or show one.
    Backups(cmd::backups::Args),
    /// Take a backup of an instance now.
    Backup(cmd::backup::Args),
    /// Restore: a logical backup into a new database (--backup --into-database), or a
    /// point in time into a new data directory (--instance --pgdata and a target).
    Restore(Box<cmd::restore::Args>),
    /// Show an instance's recovery window: the oldest and newest restorable points.
    PitrWindow(cmd::pitr_window::Args),
    /// The fleet at a glance: recovery windows, WAL archiving, backup ages, alerts.
    Status,
    /// Drills: restore instances onto sandboxes to a past point and check them.
    Drill(cmd::drill::Args),
    /// Scheduled backups and drills: what runs next, and how recent runs went.
    Schedule(cmd::schedule::ScheduleArgs),
    /// Show or change an instance's schedules (cron, UTC).
    Policy(cmd::schedule::PolicyArgs),
    /// Retention: what each instance's policy keeps and deletes, and why.
    Retention(cmd::retention::Args),
    /// Read stored chunks back and check them; damaged backups are marked corrupt.
    Verify(cmd::verify::Args),
    /// Encryption at rest: list the keys, or rotate the key-encryption key.
    Keys(cmd::keys::Args),
    /// Operators' changes (backups, restores, drills, policies, verify, keys, revocations),
    /// newest first, with who made them and how they ended.
    Audit(cmd::audit::Args),
    /// Make the fleet's CA and certificates, or revoke one.
    Pki(cmd::pki::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let config = cli.config.as_deref();
    let result = rt.block_on(async {
        match cli.cmd {
            Cmd::Agents => cmd::agents::run(config, cli.output).await,
            Cmd::Backups(a) => cmd::backups::run(config, cli.output, a).await,
            Cmd::Backup(a) => cmd::backup::run(config, cli.output, a).await,
            Cmd::Restore(a) => cmd::restore::run(config, cli.output, *a).await,
            Cmd::PitrWindow(a) => cmd::pitr_window::run(config, cli.output, a).await,
            Cmd::Status => cmd::status::run(config, cli.output).await,
            Cmd::Drill(a) => cmd::drill::run(config, cli.output, a).await,
            Cmd::Schedule(a) => cmd::schedule::schedule(config, cli.output, a).await,
            Cmd::Policy(a) => cmd::schedule::policy(config, cli.output, a).await,
            Cmd::Verify(a) => cmd::verify::run(config, cli.output, a).await,
            Cmd::Retention(a) => cmd::retention::run(config, cli.output, a).await,
            Cmd::Audit(a) => cmd::audit::run(config, cli.output, a).await,
            Cmd::Keys(a) => cmd::keys::run(config, cli.output, a).await,
            Cmd::Pki(a) => cmd::pki::run(config, cli.output, a).await,
        }
    });
    match result {
        Ok(Exit::Ok) => ExitCode::SUCCESS,
        Ok(code) => ExitCode::from(code as u8),
        Err(CliError {
            exit,
            message,
            hint,
        }) => {
            eprintln!("tidemark: {message}");
            if let Some(h) = hint {
                eprintln!("hint: {h}");
            }
            ExitCode::from(exit as u8)
        }
    }
}
