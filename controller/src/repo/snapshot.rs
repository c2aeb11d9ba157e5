//! Snapshots of a SQLite catalog in the store: the controller's own history (jobs, drills,
//! schedules, audit, the links between them) survives the loss of its disk, not only what
//! the records describe. Each snapshot is an online copy (`VACUUM INTO`), compressed and
//! sealed like every record, under `meta/snapshots/TIME-RANDOM`; the newest few are kept.
//! `rebuild-catalog` starts from the newest and adds every record written after it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Repository;
use super::records;
use crate::catalog::now;
use crate::keys::Keyring;
use crate::store::{ChunkStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Io(String),
    #[error("{0}")]
    Record(String),
}

/// Every snapshot in the store, oldest first.
async fn listed(store: &dyn ChunkStore) -> Result<Vec<String>, StoreError> {
    let mut names = store.list_records("snapshots/").await?;
    names.sort();
    Ok(names)
}

/// Take a snapshot now (in `work_dir`, next to the catalog) and keep only the newest
/// `kept`. Returns its name; None for a PostgreSQL catalog.
pub async fn take(
    repo: &Repository,
    work_dir: &Path,
    kept: u32,
) -> Result<Option<String>, SnapshotError> {
    let file = work_dir.join(format!("catalog-snapshot.{}.db", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let taken = repo.catalog.snapshot_into(&file).await;
    let read = match taken {
        Ok(true) => tokio::fs::read(&file)
            .await
            .map_err(|e| SnapshotError::Io(format!("{}: {e}", file.display()))),
        Ok(false) => return Ok(None),
        Err(e) => Err(e.into()),
    };
    let _ = std::fs::remove_file(&file);
    let raw = read?;
    let name = records::snapshot_name(now());
    let keys = repo.keys.clone();
    let (n, encoded) = tokio::task::spawn_blocking(move || {
        let encoded = records::encode_raw(&name, &raw, keys.as_deref());
        (name, encoded)
    })
    .await
    .map_err(|e| SnapshotError::Io(format!("compressing the snapshot: {e}")))?;
    repo.store.put_record(&n, &encoded).await?;
    tracing::info!(snapshot = %n, bytes = encoded.len(), "catalog snapshot stored");
    let all = listed(repo.store.as_ref()).await?;
    let extra = all.len().saturating_sub(kept.max(1) as usize);
    for old in &all[..extra] {
        if let Err(e) = repo.store.delete_record(old).await {
            tracing::warn!(snapshot = %old, error = %e, "an old catalog snapshot could not be deleted; trying again after the next");
        }
    }
    Ok(Some(n))
}

/// Snapshot the catalog every `every`, counting from the newest snapshot in the store (a
/// controller restarted often still takes them), for as long as the controller runs.
pub async fn run(repo: Repository, work_dir: PathBuf, every: Duration, kept: u32) {
    loop {
        let newest = match listed(repo.store.as_ref()).await {
            Ok(names) => names.last().and_then(|n| records::snapshot_time(n)),
            Err(e) => {
                tracing::warn!(error = %e, "listing catalog snapshots failed; trying again in a minute");
                tokio::time::sleep(Duration::from_secs(60)).await;
                continue;
            }
        };
        let due = newest.map_or(0, |t| t + every.as_secs() as i64);
        let wait = (due - now()).max(0) as u64;
        tokio::time::sleep(Duration::from_secs(wait)).await;
        match take(&repo, &work_dir, kept).await {
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, "catalog snapshot failed; trying again in a minute");
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        }
    }
}

/// The newest snapshot in the store: its name, when it was taken, and the SQLite file.
pub async fn newest(
    store: &dyn ChunkStore,
    keys: Option<&Keyring>,
) -> Result<Option<(String, i64, Vec<u8>)>, SnapshotError> {
    let Some(name) = listed(store).await?.pop() else {
        return Ok(None);
    };
    let at = records::snapshot_time(&name)
        .ok_or_else(|| SnapshotError::Record(format!("{name} is not a snapshot's name")))?;
    let bytes = store.get_record(&name).await?;
    let raw = records::decode_raw(&name, &bytes, keys, false).map_err(SnapshotError::Record)?;
    Ok(Some((name, at, raw)))
}
