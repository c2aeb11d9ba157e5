//! Writing the store's records (`repo::records`) at the moments the catalog changes what a
//! rebuild would need: a backup completing, an expiry, an instance registering, keys
//! starting or rotating.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;
use tidemark_core::ids::BackupId;

use super::Repository;
use super::records::{
    self, BackupRecord, ExpiryRecord, InstanceRecord, KeysRecord, RetractionRecord,
    RevocationRecord,
};
use crate::catalog::{CatalogError, Expiry, InstanceRow, now};
use crate::store::StoreError;

/// Manifest lines read from the catalog per query while a backup record is built.
const PAGE: u32 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("writing record {name} to the store: {source}")]
    Store { name: String, source: StoreError },
    #[error("{0}")]
    Missing(String),
}

/// What this controller last published per instance, so that a status report that changes
/// nothing writes nothing.
#[derive(Default)]
pub struct Published {
    instances: Mutex<HashMap<String, InstanceRecord>>,
}

impl Repository {
    /// Write `value` as the record `name`: sealed, unless `plain` (key records only).
    pub async fn put_record<T: Serialize>(
        &self,
        name: &str,
        value: &T,
        plain: bool,
    ) -> Result<(), PublishError> {
        let keys = if plain { None } else { self.keys.as_deref() };
        let bytes = records::encode(name, value, keys);
        self.store
            .put_record(name, &bytes)
            .await
            .map_err(|source| PublishError::Store {
                name: name.to_string(),
                source,
            })
    }

    /// Write backup `id`'s manifest record, as it will be once marked complete at
    /// `finished_at`. Called before it is marked complete: a backup the store cannot
    /// describe is not complete.
    pub async fn publish_backup(
        &self,
        id: BackupId,
        finished_at: i64,
    ) -> Result<String, PublishError> {
        let cat = &self.catalog;
        let b = cat
            .backup(id)
            .await?
            .ok_or_else(|| PublishError::Missing(format!("backup {id} is not in the catalog")))?;
        let inst = cat.instance(&b.instance).await?.ok_or_else(|| {
            PublishError::Missing(format!("instance {} is not registered", b.instance))
        })?;
        let mut manifests = Vec::with_capacity(b.parts.len());
        for p in &b.parts {
            let mut lines = Vec::new();
            loop {
                let page = cat
                    .manifest_page(id, &p.name, lines.len() as u64, PAGE)
                    .await?;
                let done = page.len() < PAGE as usize;
                lines.extend(page);
                if done {
                    break;
                }
            }
            manifests.push(lines);
        }
        let base = cat.base_backup(id).await?;
        let binlog = cat.binlog_coordinates(id).await?;
        let record = BackupRecord::new(
            &b,
            &inst,
            finished_at,
            manifests,
            base.as_ref(),
            binlog.as_ref(),
        );
        let name = record.name();
        self.put_record(&name, &record, false).await?;
        Ok(name)
    }

    /// Write an expiry, as of `at`, before it is applied; returns its name, for a
    /// retraction should the catalog refuse it.
    pub async fn publish_expiry(&self, e: &Expiry, at: i64) -> Result<String, PublishError> {
        let record = ExpiryRecord {
            format: 1,
            instance: e.instance.clone(),
            at,
            backups: e.backups.clone(),
            logs: e.logs.clone(),
        };
        let name = record.name();
        self.put_record(&name, &record, false).await?;
        Ok(name)
    }

    /// Record `name` (an expiry the catalog refused, a backup that did not complete after
    /// all) never took effect: a rebuild ignores it.
    pub async fn retract(&self, name: &str, why: &str) -> Result<(), PublishError> {
        let record = RetractionRecord {
            format: 1,
            record: name.to_string(),
            why: why.to_string(),
        };
        self.put_record(&record.name(), &record, false).await
    }

    /// Record a revocation before it takes effect (once per certificate).
    pub async fn publish_revocation(
        &self,
        fingerprint: &str,
        identity: &str,
        by: &str,
    ) -> Result<(), PublishError> {
        let record = RevocationRecord {
            format: 1,
            fingerprint: fingerprint.to_string(),
            identity: identity.to_string(),
            revoked_at: now(),
            revoked_by: by.to_string(),
        };
        match self.put_record(&record.name(), &record, false).await {
            Err(PublishError::Store {
                source: StoreError::RecordExists(_),
                ..
            }) => Ok(()),
            other => other,
        }
    }

    /// Publish what `inst` registered, unless this controller published the same already.
    pub async fn publish_instance(&self, inst: &InstanceRow) -> Result<(), PublishError> {
        let record = InstanceRecord::new(inst, now());
        let unchanged = self
            .published
            .instances
            .lock()
            .expect("published lock")
            .get(&inst.name)
            .is_some_and(|r| r.same_facts(&record));
        if unchanged {
            return Ok(());
        }
        if self
            .newest_instance_record(&inst.name)
            .await?
            .is_none_or(|r| !r.same_facts(&record))
        {
            self.put_record(&record.name(), &record, false).await?;
        }
        self.published
            .instances
            .lock()
            .expect("published lock")
            .insert(inst.name.clone(), record);
        Ok(())
    }

    /// The newest record of instance `name` in the store, if one reads.
    async fn newest_instance_record(
        &self,
        name: &str,
    ) -> Result<Option<InstanceRecord>, PublishError> {
        let dir = format!("instances/{name}/");
        let store_err = |source| PublishError::Store {
            name: dir.clone(),
            source,
        };
        let Some(newest) = self
            .store
            .list_records(&dir)
            .await
            .map_err(store_err)?
            .into_iter()
            .max()
        else {
            return Ok(None);
        };
        let bytes = self.store.get_record(&newest).await.map_err(store_err)?;
        // One that does not read is simply written again.
        Ok(records::decode(&newest, &bytes, self.keys.as_deref(), false).ok())
    }

    /// Make sure the store holds the catalog's current keys: at start, and after a
    /// rotation. Chunks sealed with a data key the store does not describe could not be
    /// opened after the catalog is lost.
    pub async fn publish_keys(&self) -> Result<(), PublishError> {
        if self.keys.is_none() {
            return Ok(());
        }
        let record = KeysRecord::new(
            &self.catalog.keks().await?,
            &self.catalog.data_keys().await?,
        );
        let store_err = |source| PublishError::Store {
            name: "keys/".into(),
            source,
        };
        let names = self.store.list_records("keys/").await.map_err(store_err)?;
        for n in names.iter().filter(|n| n.starts_with(&key_prefix(&record))) {
            let bytes = self.store.get_record(n).await.map_err(store_err)?;
            if records::decode::<KeysRecord>(n, &bytes, None, true).is_ok_and(|r| r == record) {
                return Ok(());
            }
        }
        self.put_record(&record.name(), &record, true).await
    }
}

/// The part of a key record's name that says which state of the keys it holds.
fn key_prefix(r: &KeysRecord) -> String {
    let name = r.name();
    name[..name.rfind('-').expect("a key record name has a suffix") + 1].to_string()
}
