//! tidemark-agent: runs on every database host, executes the databases' own backup tools and
//! streams their output to the controller.

mod config;
mod daemon;
mod download;
mod engine;
mod job;
mod progress;
mod tool;
mod upload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tidemark_core::identity::Role;
use tidemark_core::tls::TlsMaterial;

use crate::config::AgentConfig;

#[derive(Parser)]
#[command(
    name = "tidemark-agent",
    version,
    about = "Tidemark agent: backs up the database instances on this host"
)]
struct Args {
    /// Path to the agent's TOML config.
    #[arg(long, env = "TIDEMARK_AGENT_CONFIG")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tidemark_core::daemon::init_logging();
    let setup = AgentConfig::load(&args.config).map_err(|e| e.to_string()).and_then(|c| {
        let tls = TlsMaterial::load(&c.tls).map_err(|e| e.to_string())?;
        if tls.identity.role != Role::Agent {
            return Err(format!(
                "certificate {} is for {}, not an agent; issue one with: tidemark pki issue --name agent:HOST",
                c.tls.cert.display(),
                tls.identity
            ));
        }
        Ok((c, tls))
    });
    let (config, tls) = match setup {
        Ok(x) => x,
        Err(e) => {
            eprintln!("tidemark-agent: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
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
