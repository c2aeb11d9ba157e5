//! tidemark-controller: the catalog, the chunk store and the gRPC services for agents and
//! operators.

/// jemalloc, not glibc's malloc. Chunk and pack buffers (1 to 16 MiB) are allocated on the
/// blocking pool's threads and freed on others; glibc kept them in per-thread arenas, and
/// RSS ran to three or four times the live heap (see `tests/bench/memory.sh`). Its settings
/// (two arenas, pages returned within a second) are in `.cargo/config.toml`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod api;
mod catalog;
mod cluster;
mod config;
mod cron;
mod drill;
mod keys;
mod layers;
mod metrics;
mod ops;
mod repo;
mod retention;
mod schedule;
mod store;
mod window;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tidemark_core::identity::Role;
use tidemark_core::tls::TlsMaterial;

use crate::config::ControllerConfig;

#[derive(Parser)]
#[command(
    name = "tidemark-controller",
    version,
    about = "Tidemark controller: catalog, chunk store and gRPC services"
)]
struct Args {
    /// Path to the controller's TOML config.
    #[arg(long, env = "TIDEMARK_CONTROLLER_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Build a new catalog from the store alone (the catalog was lost): backups, archived
    /// WAL and binlogs, instances and keys, from the records the store holds. Run it with
    /// the controller stopped, on the config the lost catalog served.
    RebuildCatalog {
        /// Write into a catalog that is not empty, adding only what it lacks.
        #[arg(long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    tidemark_core::daemon::init_logging();
    let Some(path) = args.config else {
        eprintln!("tidemark-controller: give the config file with --config FILE");
        return ExitCode::from(2);
    };
    let config = match ControllerConfig::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tidemark-controller: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let done = match args.command {
        None => rt.block_on(run(config)),
        Some(Command::RebuildCatalog { force }) => rt.block_on(rebuild_catalog(config, force)),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tidemark-controller: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(config: ControllerConfig) -> anyhow::Result<()> {
    let tls = TlsMaterial::load(&config.tls)?;
    if tls.identity.role != Role::Controller {
        anyhow::bail!(
            "certificate {} is for {}, not a controller; issue one with: tidemark pki issue --name controller:HOST",
            config.tls.cert.display(),
            tls.identity
        );
    }
    let catalog = open_catalog(&config).await?;
    tracing::info!(backend = catalog.backend_name(), "catalog open");
    // A lone controller's restart interrupted whatever was running. Controllers sharing a
    // catalog fail only the work of one that stopped (see cluster).
    if !catalog.shared() {
        let (b, j) = catalog
            .fail_interrupted(&catalog::stopped_message(None))
            .await?;
        if b + j > 0 {
            tracing::warn!(
                backups = b,
                jobs = j,
                "marked work interrupted by the last shutdown as failed"
            );
        }
        let d = catalog
            .abort_running_drills(
                None,
                "the controller restarted while this drill was running",
            )
            .await?;
        if d > 0 {
            tracing::warn!(
                drills = d,
                "marked drills interrupted by the last shutdown as aborted"
            );
        }
    }
    let (store, store_name) = open_store(&config).await?;
    let store_id = repo::identity::check(&catalog, store.as_ref(), &store_name).await?;
    tracing::info!(store = %store_name, %store_id, "store identity checked");
    let keys = keys::Keyring::open(&catalog, config.encryption.enabled, config.key_dir())
        .await
        .context("opening the encryption keys")?;
    let catalog_revoked = catalog.revocations().await?.into_iter().map(|r| r.0);
    let state = Arc::new(ops::State {
        repo: repo::Repository {
            catalog,
            store,
            keys,
            published: Default::default(),
            in_flight: Default::default(),
        },
        revoked: Arc::new(ops::revoked::Revoked::new(catalog_revoked)),
        sessions: Default::default(),
        status: Default::default(),
        uploading: ops::upload::ActiveUploads::new(config.ingest.wal_streams),
        retention_running: Default::default(),
        drills: Arc::new(drill::Drills::new(
            config.drills.clone(),
            config.instances.clone(),
        )),
        settings: ops::Settings {
            schedule: config.schedule.clone(),
            retention: config
                .instances
                .iter()
                .filter_map(|i| Some((i.name.clone(), i.retention.clone()?)))
                .collect(),
            verify_sample: config.verify.sample,
            verify_timeout: config.verify.timeout,
            retention_timeout: config.retention.timeout,
            orphan_grace: config.retention.orphan_grace,
        },
        background: Default::default(),
        leading: Default::default(),
    });
    // The store must describe the keys that seal it (a rotation whose record was not
    // written is caught up here).
    state
        .repo
        .publish_keys()
        .await
        .context("writing the store's key record")?;
    state
        .repo
        .catalog
        .sync_config_schedules(&schedule::from_config(&config))
        .await?;
    // Describe in the store what was stored before records (once; nothing after that).
    let backfill = state.repo.clone();
    tokio::spawn(async move {
        if let Err(e) = repo::backfill::run(&backfill).await {
            tracing::error!(error = %e, "describing older backups and archived files in the store failed; it is tried again at the next start");
        }
    });
    if let Some(every) = config.catalog.snapshot_every
        && !state.repo.catalog.shared()
    {
        tokio::spawn(repo::snapshot::run(
            state.repo.clone(),
            config.data_dir.clone(),
            every,
            config.catalog.snapshots_kept,
        ));
    }
    tokio::spawn(drill::run_dispatcher(state.clone()));
    tokio::spawn(schedule::run(state.clone()));
    tokio::spawn(ops::status_buffer::run(
        state.status.clone(),
        state.repo.catalog.clone(),
    ));

    if let Some(addr) = config.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening for metrics on {addr}"))?;
        let bound = listener.local_addr()?;
        let file = config.data_dir.join("metrics.addr");
        std::fs::write(&file, format!("{bound}\n"))
            .with_context(|| format!("writing {}", file.display()))?;
        tracing::info!(addr = %bound, "serving metrics at /metrics");
        tokio::spawn(metrics::serve(state.clone(), listener));
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    // Written after binding so that whoever waits for it can connect at once.
    let addr_file = config.data_dir.join("controller.addr");
    std::fs::write(&addr_file, format!("{addr}\n"))
        .with_context(|| format!("writing {}", addr_file.display()))?;
    tracing::info!(%addr, identity = %tls.identity, "controller listening");
    tokio::spawn(cluster::run(state.clone(), addr.to_string()));
    api::serve(
        state,
        &tls,
        listener,
        tidemark_core::daemon::shutdown_signal(),
    )
    .await?;
    tracing::info!("controller stopped");
    Ok(())
}

async fn open_catalog(config: &ControllerConfig) -> anyhow::Result<catalog::Catalog> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let catalog_url = config.catalog_url().map_err(anyhow::Error::msg)?;
    catalog::Catalog::open_configured(catalog_url.as_deref(), &config.data_dir.join("catalog.db"))
        .await
        .with_context(|| match &config.catalog.url {
            Some(u) => format!("opening the PostgreSQL catalog at {}", without_password(u)),
            None => format!("opening the catalog in {}", config.data_dir.display()),
        })
}

/// The configured store, checked reachable, and how to name it in messages.
async fn open_store(
    config: &ControllerConfig,
) -> anyhow::Result<(Arc<dyn store::ChunkStore>, String)> {
    let policy = store::retry::Policy::default();
    Ok(match config.store.kind {
        config::StoreKind::Fs => (
            Arc::new(store::retry::Retrying::new(
                store::fs::FsStore::open(config.store_path())?,
                policy,
            )),
            config.store_path().display().to_string(),
        ),
        config::StoreKind::S3 => {
            let settings = config.s3_settings().map_err(anyhow::Error::msg)?;
            let s3 = store::s3::S3Store::new(&settings);
            s3.check().await.with_context(|| {
                format!(
                    "checking S3 bucket {:?} at {}",
                    settings.bucket,
                    if settings.endpoint.is_empty() {
                        "AWS"
                    } else {
                        &settings.endpoint
                    }
                )
            })?;
            tracing::info!(bucket = %settings.bucket, prefix = %settings.prefix, endpoint = %settings.endpoint, "chunk store: S3");
            (
                Arc::new(store::retry::Retrying::new(s3, policy)),
                format!("s3://{}/{}", settings.bucket, settings.prefix),
            )
        }
    })
}

/// `tidemark-controller rebuild-catalog`: a new catalog from the store: a SQLite catalog
/// from the newest snapshot in the store plus the records written after it, a PostgreSQL
/// one (or a store without snapshots) from the records alone.
async fn rebuild_catalog(config: ControllerConfig, force: bool) -> anyhow::Result<()> {
    let mut catalog = open_catalog(&config).await?;
    let (store, store_name) = open_store(&config).await?;
    if store.identity().await?.is_none() {
        anyhow::bail!(
            "the store at {store_name} has no identity object (tidemark-store): it is not a Tidemark store, or not this one. Is the volume mounted, or the bucket and prefix right?"
        );
    }
    repo::rebuild::check_target(&catalog, force).await?;
    let keys = || repo::rebuild::KeySettings {
        enabled: config.encryption.enabled,
        dir: config.key_dir(),
    };
    let mut start = if force {
        repo::rebuild::Start::Force
    } else {
        repo::rebuild::Start::Empty
    };
    if !catalog.shared() && !force {
        // The snapshot is sealed with the store's keys: open them (into the empty catalog)
        // to read it.
        let mut ignored = repo::rebuild::Report::default();
        let keyring =
            repo::rebuild::open_keys(&catalog, store.as_ref(), &keys(), &mut ignored).await?;
        if let Some((name, at, bytes)) =
            repo::snapshot::newest(store.as_ref(), keyring.as_deref()).await?
        {
            catalog.close().await;
            let path = config.data_dir.join("catalog.db");
            let tmp = config.data_dir.join("catalog.db.restoring");
            std::fs::write(&tmp, &bytes)
                .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
                .with_context(|| format!("writing {}", tmp.display()))?;
            for leftover in ["catalog.db-wal", "catalog.db-shm"] {
                let _ = std::fs::remove_file(config.data_dir.join(leftover));
            }
            std::fs::rename(&tmp, &path)
                .with_context(|| format!("moving the snapshot into {}", path.display()))?;
            catalog = open_catalog(&config).await?;
            start = repo::rebuild::Start::Snapshot(name, at);
        }
    }
    let report = repo::rebuild::rebuild(&catalog, store.clone(), keys(), start).await?;
    repo::identity::check(&catalog, store.as_ref(), &store_name).await?;
    println!("{report}");
    Ok(())
}

/// `url` with any password in it masked, for messages.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or("");
            format!("{scheme}://{name}:***@{host}")
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_catalog_url_is_shown_without_its_password() {
        assert_eq!(
            super::without_password("postgres://tm:hunter2@db1:5432/tidemark"),
            "postgres://tm:***@db1:5432/tidemark"
        );
        assert_eq!(
            super::without_password("postgres://tm@db1/tidemark"),
            "postgres://tm@db1/tidemark"
        );
    }
}
