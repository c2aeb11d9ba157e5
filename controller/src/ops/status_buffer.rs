//! Archiver status reports, written to the catalog in batches. Every agent reports every
//! 15 s; a commit per report made a thousand agents queue behind each other's fsyncs, and a
//! report is telemetry (the next one comes in 15 s), not data whose acknowledgement promises
//! durability. Reports are kept here, the newest per instance, and written once a second in
//! one transaction; `tidemark status` lags by at most that.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::catalog::{ArchiverRow, Catalog};

/// How long a report may wait to be written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct StatusBuffer {
    pending: Mutex<HashMap<String, ArchiverRow>>,
}

impl StatusBuffer {
    /// Keep a report until the next flush; a newer one of the instance replaces it.
    pub fn report(&self, row: ArchiverRow) {
        self.pending
            .lock()
            .unwrap()
            .insert(row.instance.clone(), row);
    }

    /// Write what is pending in one transaction. On failure the reports are kept for the
    /// next flush, unless a newer one arrived meanwhile.
    pub async fn flush(&self, catalog: &Catalog) -> crate::catalog::Result<usize> {
        let rows: Vec<ArchiverRow> = std::mem::take(&mut *self.pending.lock().unwrap())
            .into_values()
            .collect();
        if rows.is_empty() {
            return Ok(0);
        }
        if let Err(e) = catalog.set_archiver_statuses(&rows).await {
            let mut pending = self.pending.lock().unwrap();
            for r in rows {
                pending.entry(r.instance.clone()).or_insert(r);
            }
            return Err(e);
        }
        Ok(rows.len())
    }
}

pub async fn run(buffer: Arc<StatusBuffer>, catalog: Catalog) {
    loop {
        tokio::time::sleep(FLUSH_EVERY).await;
        if let Err(e) = buffer.flush(&catalog).await {
            tracing::warn!(error = %e, "writing archiver status reports; retrying");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(instance: &str, wal: &str, at: i64) -> ArchiverRow {
        ArchiverRow {
            instance: instance.into(),
            last_archived_wal: wal.into(),
            last_archived_at: at,
            reported_at: at,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn the_newest_report_per_instance_is_written_and_an_unchanged_one_rarely() {
        let (cat, _dir) = crate::catalog::test_catalog().await;
        let buf = StatusBuffer::default();
        buf.report(row("a", "000000010000000000000001", 100));
        buf.report(row("a", "000000010000000000000002", 110));
        buf.report(row("b", "000000010000000000000007", 100));
        assert!(cat.archiver_status("a").await.unwrap().is_none(), "not yet");
        assert_eq!(buf.flush(&cat).await.unwrap(), 2);
        assert_eq!(buf.flush(&cat).await.unwrap(), 0);
        let a = cat.archiver_status("a").await.unwrap().unwrap();
        assert_eq!(a, row("a", "000000010000000000000002", 110));

        // The same content later: reported_at moves only once it is a minute old.
        let mut same = row("a", "000000010000000000000002", 110);
        same.reported_at = 150;
        buf.report(same.clone());
        buf.flush(&cat).await.unwrap();
        assert_eq!(
            cat.archiver_status("a").await.unwrap().unwrap().reported_at,
            110
        );
        same.reported_at = 171;
        buf.report(same.clone());
        buf.flush(&cat).await.unwrap();
        assert_eq!(cat.archiver_status("a").await.unwrap().unwrap(), same);
        // Changed content is written at once.
        let mut failing = same.clone();
        failing.failed_count = 1;
        failing.reported_at = 172;
        buf.report(failing.clone());
        buf.flush(&cat).await.unwrap();
        assert_eq!(cat.archiver_status("a").await.unwrap().unwrap(), failing);
    }
}
