//! tidemark-agent: runs on every database host, executes the databases' own backup tools and
//! streams their output to the controller. The same binary is PostgreSQL's archive_command
//! (`wal-push`) and restore_command (`wal-fetch`).

/// jemalloc, not glibc's malloc. Chunk and pack buffers (1 to 16 MiB) are allocated on the
/// blocking pool's threads and freed on others; glibc kept them in per-thread arenas, and
/// RSS ran to three or four times the live heap (see `tests/bench/memory.sh`). Its settings
/// (two arenas, pages returned within a second) are in `.cargo/config.toml`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod config;
mod daemon;
mod download;
mod engine;
mod error;
mod job;
mod osuser;
mod progress;
mod sampler;
mod sandbox;
mod tool;
mod upload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tidemark_core::identity::Role;
use tidemark_core::tls::TlsMaterial;

use crate::config::AgentConfig;
use crate::engine::postgres::wal;
use crate::error::AgentError;

#[derive(Parser)]
#[command(
    name = "tidemark-agent",
    version,
    about = "Tidemark agent: backs up the database instances on this host"
)]
struct Args {
    /// Path to the agent's TOML config.
    #[arg(
        long,
        env = "TIDEMARK_AGENT_CONFIG",
        default_value = "/etc/tidemark/agent.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent daemon (the default).
    Run,
    /// archive_command: archive_command = 'tidemark-agent wal-push %p'.
    WalPush {
        /// The file to archive (%p), relative to the data directory.
        path: PathBuf,
    },
    /// restore_command: restore_command = 'tidemark-agent wal-fetch %f %p'. Exits 0 when
    /// found, 1 when the archive has no such file, 200 on any other failure.
    WalFetch {
        /// The WAL file name recovery wants (%f).
        name: String,
        /// Where to put it (%p).
        dest: PathBuf,
        /// The instance whose archive to read; default: the one with this cluster's system
        /// identifier.
        #[arg(long)]
        instance: Option<String>,
        /// Internal: fetch the segments after NAME into the prefetch directory.
        #[arg(long, hide = true)]
        prefetch: bool,
    },
}

/// wal-fetch's status for "failed, and not because the file is absent": above 125, so that
/// PostgreSQL aborts recovery instead of ending it early.
const FETCH_ABORT: u8 = 200;

fn load(path: &std::path::Path) -> Result<(AgentConfig, TlsMaterial), AgentError> {
    let c = AgentConfig::load(path).map_err(|e| AgentError::permanent(e.to_string()))?;
    let tls = TlsMaterial::load(&c.tls).map_err(|e| AgentError::permanent(e.to_string()))?;
    match (tls.identity.role, c.sandbox.is_some()) {
        (Role::Agent, false) | (Role::Sandbox, true) => Ok((c, tls)),
        (Role::Sandbox, false) => Err(AgentError::permanent(format!(
            "certificate {} is for {}, a sandbox, but {} has no [sandbox] section; add one with dir = \"/var/lib/tidemark/sandbox\"",
            c.tls.cert.display(),
            tls.identity,
            path.display()
        ))),
        (Role::Agent, true) => Err(AgentError::permanent(format!(
            "{} has a [sandbox] section, but certificate {} is for {}; a sandbox needs a certificate issued with --name sandbox:HOST",
            path.display(),
            c.tls.cert.display(),
            tls.identity
        ))),
        _ => Err(AgentError::permanent(format!(
            "certificate {} is for {}, not an agent or sandbox; issue one with: tidemark pki issue --name agent:HOST",
            c.tls.cert.display(),
            tls.identity
        ))),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    tidemark_core::daemon::init_logging();
    tidemark_core::tls::install_crypto_provider();
    let command = args.command.unwrap_or(Command::Run);
    let failure_status = match command {
        Command::WalFetch { .. } => FETCH_ABORT,
        Command::Run => 2,
        Command::WalPush { .. } => 1,
    };
    let (config, tls) = match load(&args.config) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("tidemark-agent: {e}");
            return ExitCode::from(failure_status);
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    match command {
        Command::Run => {
            let result = rt.block_on(async {
                tokio::select! {
                    r = daemon::run(Arc::new(config), tls) => r,
                    _ = tidemark_core::daemon::shutdown_signal() => { tracing::info!("agent stopping"); Ok(()) }
                }
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tidemark-agent: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::WalPush { .. } if config.sandbox.is_some() => {
            eprintln!(
                "tidemark-agent wal-push: this host is a sandbox, and a sandbox never archives WAL; set archive_mode = off"
            );
            ExitCode::from(1)
        }
        Command::WalPush { path } => match rt.block_on(wal::push::run(&config, &tls, &path)) {
            Ok(msg) => {
                tracing::debug!("{msg}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tidemark-agent wal-push: {e}");
                ExitCode::from(1)
            }
        },
        Command::WalFetch {
            name,
            dest,
            instance,
            prefetch,
        } => {
            if prefetch {
                rt.block_on(wal::fetch::prefetch(
                    &config,
                    &tls,
                    &name,
                    &dest,
                    instance.as_deref(),
                ));
                return ExitCode::SUCCESS;
            }
            let req = wal::fetch::Request {
                name: &name,
                dest: &dest,
                instance: instance.as_deref(),
            };
            match rt.block_on(wal::fetch::run(&config, &tls, req)) {
                Ok(wal::fetch::Fetched::Found) => ExitCode::SUCCESS,
                Ok(wal::fetch::Fetched::NotFound) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("tidemark-agent wal-fetch: {e}");
                    ExitCode::from(FETCH_ABORT)
                }
            }
        }
    }
}
