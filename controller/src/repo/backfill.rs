//! What a store written before records lacks, written once after the upgrade: a record for
//! every complete backup without one, and `logs/` records describing the archived files no
//! pack describes. Until it has run, a catalog rebuilt from the store would not know them.
//! It runs in the background at every start and finds nothing to do once done.

use std::collections::{BTreeMap, HashSet};

use super::Repository;
use super::publish::PublishError;
use super::records::{LogRecord, LogsRecord};
use crate::catalog::BackupStatus;

/// Archived files described per `logs/` record.
const FILES_PER_RECORD: u32 = 5000;

/// Write what is missing; returns (backups, archived files) described.
pub async fn run(repo: &Repository) -> Result<(usize, usize), PublishError> {
    let store_err = |source| PublishError::Store {
        name: "backups/".into(),
        source,
    };
    let recorded: HashSet<i64> = repo
        .store
        .list_records("backups/")
        .await
        .map_err(store_err)?
        .iter()
        .filter_map(|n| n.strip_prefix("backups/")?.split('-').next()?.parse().ok())
        .collect();
    let mut backups = 0;
    for b in repo.catalog.list_backups(None).await? {
        if b.status == BackupStatus::Complete && !recorded.contains(&b.id.0) {
            let finished = b.finished_at.unwrap_or(b.started_at);
            repo.publish_backup(b.id, finished).await?;
            backups += 1;
        }
    }
    let mut files = 0;
    loop {
        let batch = repo.catalog.undescribed_logs(FILES_PER_RECORD).await?;
        if batch.is_empty() {
            break;
        }
        let mut by_instance: BTreeMap<String, Vec<LogRecord>> = BTreeMap::new();
        for f in &batch {
            let entries = repo.catalog.wal_manifest(&f.instance, &f.name).await?;
            by_instance
                .entry(f.instance.clone())
                .or_default()
                .push(LogRecord::new(f, &entries));
        }
        for (instance, described) in by_instance {
            let done: Vec<(String, String)> = described
                .iter()
                .map(|l| (l.instance.clone(), l.name.clone()))
                .collect();
            let record = LogsRecord {
                format: 1,
                instance,
                files: described,
            };
            repo.put_record(&record.name(), &record, false).await?;
            repo.catalog.mark_described(&done).await?;
            files += done.len();
        }
    }
    if backups + files > 0 {
        tracing::info!(
            backups,
            files,
            "described in the store what was stored before records"
        );
    }
    Ok((backups, files))
}
