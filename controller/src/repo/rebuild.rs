//! Rebuilding a lost catalog from the store alone (`tidemark-controller rebuild-catalog`):
//! the key records open the keyring (with the KEK files), the packs' indexes say which
//! chunks are stored and where, the packs' descriptions give the archived WAL and binlogs,
//! the backup records give every complete backup, and the expiry records (less those
//! retracted) say what retention or an operator removed since. Instance records give each
//! instance as last registered.
//!
//! Nothing in the store is written or changed. What does not read (a damaged record, a pack
//! whose index fails authentication) is reported and left out, never guessed at: `verify`
//! then names what it costs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use serde::de::DeserializeOwned;
use tidemark_core::ids::ChunkId;

use super::pack::{self, TAIL_GUESS, TailError};
use super::records::{
    self, BackupRecord, ExpiryRecord, InstanceRecord, KeysRecord, LogRecord, LogsRecord,
    RetractionRecord, RevocationRecord,
};
use crate::catalog::{Catalog, CatalogError, Expiry, InstanceRow, NewChunk};
use crate::keys::{Keyring, KeysError};
use crate::store::{ChunkStore, PackLoc, StoreError};

/// Store reads in flight at once.
const READS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] KeysError),
    #[error("{0}")]
    Refused(String),
}

/// What a rebuild found and wrote.
#[derive(Debug, Default)]
pub struct Report {
    /// The snapshot the rebuild started from (name, when taken).
    pub snapshot: Option<(String, i64)>,
    pub keys_version: Option<(u32, u32)>,
    pub instances: usize,
    pub packs: usize,
    pub chunks: usize,
    pub backups: usize,
    pub logs: u64,
    pub expiries: usize,
    pub retracted: usize,
    pub revocations: usize,
    /// What did not read, or did not add up; each left out.
    pub problems: Vec<String>,
    pub elapsed: Duration,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "catalog rebuilt from the store in {:.1}s:",
            self.elapsed.as_secs_f64()
        )?;
        if let Some((name, at)) = &self.snapshot {
            writeln!(
                f,
                "  snapshot      {name} (taken {}), then the records written after it",
                tidemark_core::timefmt::utc(*at)
            )?;
        }
        if let Some((kek, dk)) = self.keys_version {
            writeln!(f, "  keys          KEK {kek}, data keys up to {dk}")?;
        }
        writeln!(f, "  instances     {}", self.instances)?;
        writeln!(f, "  packs read    {} ({} chunks)", self.packs, self.chunks)?;
        writeln!(f, "  backups       {}", self.backups)?;
        writeln!(f, "  archived logs {}", self.logs)?;
        writeln!(
            f,
            "  expiries      {} applied, {} retracted",
            self.expiries, self.retracted
        )?;
        writeln!(f, "  revocations   {}", self.revocations)?;
        if self.problems.is_empty() {
            write!(f, "  problems      none")
        } else {
            writeln!(f, "  problems      {} (left out):", self.problems.len())?;
            for p in &self.problems {
                writeln!(f, "    - {p}")?;
            }
            write!(f, "  run `tidemark verify` once the controller is up")
        }
    }
}

/// How to open the store's keys.
pub struct KeySettings<'a> {
    pub enabled: bool,
    pub dir: &'a Path,
}

/// Where a rebuild starts ([`check_target`] has been asked first).
pub enum Start {
    /// An empty catalog (it may hold the keys, put there to read a snapshot).
    Empty,
    /// A catalog that holds some of it already (`--force`): only what is missing is added.
    Force,
    /// A snapshot restored as the catalog (its name and when it was taken): the records
    /// add what came after it.
    Snapshot(String, i64),
}

/// Refuse a catalog that is not empty unless told.
pub async fn check_target(catalog: &Catalog, force: bool) -> Result<(), RebuildError> {
    match catalog.rebuild_target_contents().await? {
        Some(held) if !force => Err(RebuildError::Refused(format!(
            "the catalog is not empty (it holds {held}); rebuild into a new one, or pass --force to add only what it lacks"
        ))),
        _ => Ok(()),
    }
}

/// Rebuild `catalog` from `store`, starting from `start`.
pub async fn rebuild(
    catalog: &Catalog,
    store: Arc<dyn ChunkStore>,
    keys: KeySettings<'_>,
    start: Start,
) -> Result<Report, RebuildError> {
    let started = Instant::now();
    let mut report = Report::default();
    let keyring = open_keys(catalog, store.as_ref(), &keys, &mut report).await?;
    let k = keyring.as_deref();

    // Packs: every chunk stored and where, and the archived files they describe.
    let packs = store.list_packs().await?;
    report.packs = packs.len();
    if let Start::Snapshot(name, at) = &start {
        report.snapshot = Some((name.clone(), *at));
        // Packs collected since the snapshot was taken: their chunks' rows stay, faulty,
        // so nothing offers them for dedup and verify names what lost them.
        let listed: HashSet<&str> = packs.iter().map(|p| p.name.as_str()).collect();
        for pack in catalog.chunk_packs().await? {
            if !listed.contains(pack.as_str()) {
                catalog
                    .mark_pack_fault(
                        &pack,
                        "its pack was not in the store when the catalog was rebuilt",
                    )
                    .await?;
            }
        }
    }
    let contents: Vec<_> = futures::stream::iter(packs)
        .map(|p| {
            let store = store.clone();
            async move {
                let read = read_pack(store.as_ref(), &p.name, p.size, k).await;
                (p.name, read)
            }
        })
        .buffer_unordered(READS)
        .collect()
        .await;
    let mut located: HashMap<ChunkId, PackLoc> = HashMap::new();
    // Each archived file's description, with the pack it came from.
    let mut logs: Vec<(LogRecord, String)> = Vec::new();
    for (name, read) in contents {
        match read {
            Ok(Ok(c)) => {
                for (id, loc) in c.chunks {
                    located.entry(id).or_insert(loc);
                }
                logs.extend(c.description.map(|d| (d, name.clone())));
            }
            Ok(Err(why)) => report.problems.push(format!("pack {name}: {why}")),
            Err(e) => return Err(e.into()),
        }
    }

    // Backups, expiries and retractions.
    let backups: Vec<(String, BackupRecord)> =
        read_all(store.as_ref(), "backups/", k, &mut report).await?;
    let expiries: Vec<(String, ExpiryRecord)> =
        read_all(store.as_ref(), "expiries/", k, &mut report).await?;
    let retractions: Vec<(String, RetractionRecord)> =
        read_all(store.as_ref(), "retractions/", k, &mut report).await?;
    // Archived files described in records, not packs (stored before descriptions).
    let described: Vec<(String, LogsRecord)> =
        read_all(store.as_ref(), "logs/", k, &mut report).await?;
    for (_, r) in described {
        logs.extend(r.files.into_iter().map(|l| (l, String::new())));
    }
    let revocations: Vec<(String, RevocationRecord)> =
        read_all(store.as_ref(), "revocations/", k, &mut report).await?;
    for (_, r) in &revocations {
        catalog
            .rebuild_revocation(&r.fingerprint, &r.identity, r.revoked_at, &r.revoked_by)
            .await?;
    }
    report.revocations = revocations.len();
    let retracted: HashSet<&str> = retractions.iter().map(|(_, r)| r.record.as_str()).collect();

    // Chunks, with the plaintext length the manifests give them.
    let mut raw_len: HashMap<ChunkId, u32> = HashMap::new();
    let mut note = |refs: &[records::ChunkRef]| {
        for r in refs {
            if let Ok(id) = r.0.parse::<ChunkId>() {
                raw_len.insert(id, r.1);
            }
        }
    };
    for (_, b) in &backups {
        for p in &b.parts {
            note(&p.chunks);
        }
    }
    for (l, _) in &logs {
        note(&l.chunks);
    }
    let mut chunks: Vec<NewChunk> = located
        .into_iter()
        .map(|(id, loc)| NewChunk {
            id,
            raw_len: raw_len.get(&id).copied().unwrap_or(0),
            stored_len: u64::from(loc.len),
            pack: Some(loc),
        })
        .collect();
    // Chunks stored one object each, before packs.
    let in_packs: HashSet<ChunkId> = chunks.iter().map(|c| c.id).collect();
    for id in store.list().await? {
        if !in_packs.contains(&id) {
            chunks.push(NewChunk {
                id,
                raw_len: raw_len.get(&id).copied().unwrap_or(0),
                stored_len: 0,
                pack: None,
            });
        }
    }
    report.chunks = chunks.len();
    catalog.rebuild_chunks(&chunks).await?;

    // Instances: the newest record of each, and any a backup or log names without one.
    let instances = newest_instances(store.as_ref(), k, &mut report).await?;
    let mut known: HashSet<String> = HashSet::new();
    for i in &instances {
        known.insert(i.name.clone());
        if catalog
            .rebuild_instance(&i.row().map_err(RebuildError::Refused)?, i.at)
            .await?
        {
            report.instances += 1;
        }
    }
    for (_, b) in &backups {
        if !known.contains(&b.instance) {
            report.problems.push(format!(
                "instance {} has backups but no registration record; it is added from backup {} (its agent fills in the rest when it registers)",
                b.instance, b.id
            ));
            let row = InstanceRow {
                name: b.instance.clone(),
                agent: b.agent.clone(),
                engine: crate::catalog::Engine::parse(&b.engine)?,
                server_version: b.server_version.clone(),
                system_identifier: b.system_identifier.clone(),
                databases: Vec::new(),
                error: String::new(),
                data_directory: String::new(),
                wal_segment_size: 0,
                archive_timeout: 0,
                log_bin_basename: String::new(),
            };
            catalog.rebuild_instance(&row, b.finished_at).await?;
            known.insert(b.instance.clone());
            report.instances += 1;
        }
    }

    // Backups by id, less the records retracted (a backup that stopped running while its
    // record was written). Two records of one id and start are one backup (the earliest
    // counts); two of one id and different starts are a conflict, reported.
    let mut by_id: BTreeMap<i64, &BackupRecord> = BTreeMap::new();
    for (name, b) in &backups {
        if retracted.contains(name.as_str()) {
            continue;
        }
        let slot = by_id.entry(b.id).or_insert(b);
        if slot.started_at != b.started_at {
            report.problems.push(format!(
                "two different backups are recorded as backup {} (started {} and {}); the first is kept",
                b.id, slot.started_at, b.started_at
            ));
        } else if b.finished_at < slot.finished_at {
            *slot = b;
        }
    }
    for b in by_id.values() {
        let rows = match b.rows() {
            Ok(r) => r,
            Err(why) => {
                report.problems.push(why);
                continue;
            }
        };
        if catalog
            .rebuild_backup(
                &rows.row,
                &rows.manifests,
                rows.base.as_ref(),
                rows.binlog.as_ref(),
            )
            .await?
        {
            report.backups += 1;
        }
    }

    // Archived files: the first stored under each name is the archived one.
    logs.sort_by(|(a, _), (b, _)| (a.stored_at, &a.name).cmp(&(b.stored_at, &b.name)));
    let mut seen: HashMap<(String, String), String> = HashMap::new();
    let mut files = Vec::new();
    for (l, pack) in logs {
        let key = (l.instance.clone(), l.name.clone());
        if let Some(sha) = seen.get(&key) {
            if *sha != l.sha256 {
                report.problems.push(format!(
                    "instance {} has two different {} described (sha256 {sha} first, {} later); the first is the archived one",
                    l.instance, l.name, l.sha256
                ));
            }
            continue;
        }
        seen.insert(key, l.sha256.clone());
        match l.row(&pack) {
            Ok(f) => files.push(f),
            Err(why) => report.problems.push(why),
        }
    }
    report.logs = catalog.rebuild_logs(&files).await?;

    // Expiries, oldest first, as they were applied.
    let mut applied: Vec<&(String, ExpiryRecord)> = expiries
        .iter()
        .filter(|(n, _)| !retracted.contains(n.as_str()))
        .collect();
    report.retracted = expiries.len() - applied.len();
    applied.sort_by_key(|(n, e)| (e.at, n.clone()));
    for (_, e) in applied {
        let expiry = Expiry {
            instance: e.instance.clone(),
            backups: e.backups.clone(),
            logs: e.logs.clone(),
            kept_bases: Vec::new(),
        };
        catalog.rebuild_expiry(&expiry, e.at).await?;
        report.expiries += 1;
    }
    catalog.rebuild_done().await?;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Put the newest key record in the catalog (replacing older keys a snapshot holds) and
/// open the keyring with the KEK files. Records that do not read go to `report`.
pub async fn open_keys(
    catalog: &Catalog,
    store: &dyn ChunkStore,
    keys: &KeySettings<'_>,
    report: &mut Report,
) -> Result<Option<Arc<Keyring>>, RebuildError> {
    let mut newest: Option<KeysRecord> = None;
    for name in store.list_records("keys/").await? {
        let bytes = store.get_record(&name).await?;
        match records::decode::<KeysRecord>(&name, &bytes, None, true) {
            Ok(r) if newest.as_ref().is_none_or(|n| r.version() > n.version()) => newest = Some(r),
            Ok(_) => {}
            Err(why) => report.problems.push(why),
        }
    }
    match (&newest, keys.enabled) {
        (Some(_), false) => {
            return Err(RebuildError::Refused(
                "the store is encrypted (it holds key records); set [encryption] enabled = true with key-dir holding the kek-N.key files".into(),
            ));
        }
        (Some(r), true) => {
            let (keks, data_keys) = r.rows().map_err(RebuildError::Refused)?;
            catalog.rebuild_keys(&keks, &data_keys).await?;
            report.keys_version = Some(r.version());
        }
        (None, true) if !store.list_packs().await?.is_empty() => {
            return Err(RebuildError::Refused(
                "encryption is on, but the store holds no key records, so its sealed chunks cannot be opened; were they written by a controller before key records (then the catalog cannot be rebuilt from this store), or is encryption off for this store?".into(),
            ));
        }
        (None, _) => {}
    }
    Ok(Keyring::open(catalog, keys.enabled, keys.dir).await?)
}

/// What pack `name` says about itself, from its last bytes (read again at the length its
/// footer gives when the first read was short). Ok(Err): the pack does not read.
pub async fn read_pack(
    store: &dyn ChunkStore,
    name: &str,
    size: u64,
    keys: Option<&Keyring>,
) -> Result<Result<pack::PackContents, String>, StoreError> {
    let mut want = TAIL_GUESS.min(size);
    loop {
        let tail = store.get_pack_range(name, size - want, want as u32).await?;
        match pack::read_tail(name, size, &tail, keys) {
            Ok(c) => return Ok(Ok(c)),
            Err(TailError::Short(n)) if n > want => want = n,
            Err(TailError::Short(n)) => return Ok(Err(format!("its footer asks for {n} bytes"))),
            Err(TailError::Bad(why)) => return Ok(Err(why)),
        }
    }
}

/// Every record under `dir` that reads; what does not is reported.
async fn read_all<T: DeserializeOwned + Send>(
    store: &dyn ChunkStore,
    dir: &str,
    keys: Option<&Keyring>,
    report: &mut Report,
) -> Result<Vec<(String, T)>, RebuildError> {
    let names = store.list_records(dir).await?;
    let read: Vec<(String, Vec<u8>)> = futures::stream::iter(names)
        .map(|n| async move { store.get_record(&n).await.map(|b| (n, b)) })
        .buffer_unordered(READS)
        .try_collect()
        .await?;
    let mut out = Vec::new();
    for (name, bytes) in read {
        match records::decode::<T>(&name, &bytes, keys, false) {
            Ok(r) => out.push((name, r)),
            Err(why) => report.problems.push(why),
        }
    }
    Ok(out)
}

/// The newest record of each instance (names sort by time within an instance).
async fn newest_instances(
    store: &dyn ChunkStore,
    keys: Option<&Keyring>,
    report: &mut Report,
) -> Result<Vec<InstanceRecord>, RebuildError> {
    let mut newest: BTreeMap<String, String> = BTreeMap::new();
    for name in store.list_records("instances/").await? {
        let Some(inst) = name.split('/').nth(1) else {
            continue;
        };
        let slot = newest.entry(inst.to_string()).or_default();
        if name > *slot {
            *slot = name;
        }
    }
    let mut out = Vec::new();
    for name in newest.into_values() {
        let bytes = store.get_record(&name).await?;
        match records::decode::<InstanceRecord>(&name, &bytes, keys, false) {
            Ok(r) => out.push(r),
            Err(why) => report.problems.push(why),
        }
    }
    Ok(out)
}
