//! Records: what the store says about itself, so that the store and the KEK file are enough
//! to rebuild a lost catalog (`repo::rebuild`). Every record is a new object under `meta/`
//! that is never replaced (the store stays append-only and works under S3 Object Lock):
//!
//! | record | name | written |
//! |---|---|---|
//! | a backup's manifest | `backups/ID-RANDOM` | before the backup is marked complete |
//! | an expiry (retention or `backups delete`) | `expiries/INSTANCE/TIME-RANDOM` | before it is applied |
//! | a retraction of a record that never took effect | `retractions/NAME` | an expiry the catalog refused; a backup record whose backup did not complete after all |
//! | an instance's registration | `instances/INSTANCE/TIME-RANDOM` | when what it registered changes |
//! | the wrapped data keys | `keys/KEK-DATAKEY-RANDOM` | when keys start or rotate |
//! | a revoked certificate | `revocations/FINGERPRINT` | before the revocation takes effect |
//! | archived files from before descriptions | `logs/INSTANCE/TIME-RANDOM` | once, at the first start after the upgrade |
//!
//! An archived WAL file or binlog is described inside the pack that carries its last chunks
//! (see `repo::pack`), so archiving costs no extra PUT.
//!
//! A record is `"TMR1" ‖ kind ‖ body`. Kind 1: sealed (AES-GCM under a data key, bound to the
//! record's name) zstd JSON. Kind 0: SHA-256 of the zstd JSON ‖ the zstd JSON; only key
//! records are plain in an encrypted store (they hold data keys wrapped by the KEK, nothing
//! else), and a plain record of any other kind there is refused, so nobody with write access
//! to the bucket alone can slip a forged manifest in.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tidemark_core::ids::{BackupId, ChunkId};
use tidemark_core::wal::Lsn;

use crate::catalog::{
    BackupKind, BackupRow, BackupStatus, BaseBackupRow, BinlogCoordRow, DataKeyRow, Engine,
    InstanceRow, KekRow, ManifestEntry, PartRow, PartStats, WalFileRow,
};
use crate::keys::Keyring;

const MAGIC: &[u8; 4] = b"TMR1";
const PLAIN: u8 = 0;
const SEALED: u8 = 1;
const FORMAT: u32 = 1;

/// A random suffix that keeps two writers from ever choosing the same name.
fn random_suffix() -> String {
    crate::store::new_pack_name()[..16].to_string()
}

/// Encode `value` as the record called `name`: sealed when `keys` is set.
pub fn encode<T: Serialize>(name: &str, value: &T, keys: Option<&Keyring>) -> Vec<u8> {
    encode_raw(
        name,
        &serde_json::to_vec(value).expect("records serialise"),
        keys,
    )
}

/// Encode `raw` bytes as the record called `name` (zstd, then sealed or digested).
pub fn encode_raw(name: &str, raw: &[u8], keys: Option<&Keyring>) -> Vec<u8> {
    let packed = zstd::encode_all(raw, 3).expect("zstd into memory");
    let mut out = MAGIC.to_vec();
    match keys {
        Some(k) => {
            out.push(SEALED);
            out.extend_from_slice(&k.seal_record(name, &packed));
        }
        None => {
            out.push(PLAIN);
            out.extend_from_slice(&Sha256::digest(&packed));
            out.extend_from_slice(&packed);
        }
    }
    out
}

/// Decode the record called `name`. `keys` is the store's keyring (None: not encrypted);
/// `plain_allowed` lets a key record be plain in an encrypted store.
pub fn decode<T: DeserializeOwned>(
    name: &str,
    bytes: &[u8],
    keys: Option<&Keyring>,
    plain_allowed: bool,
) -> Result<T, String> {
    let json = decode_raw(name, bytes, keys, plain_allowed)?;
    serde_json::from_slice(&json).map_err(|e| format!("record {name} is malformed: {e}"))
}

/// The raw bytes of the record called `name`, checked.
pub fn decode_raw(
    name: &str,
    bytes: &[u8],
    keys: Option<&Keyring>,
    plain_allowed: bool,
) -> Result<Vec<u8>, String> {
    if bytes.len() < 5 || &bytes[..4] != MAGIC {
        return Err(format!("record {name} is not a Tidemark record"));
    }
    let packed = match (bytes[4], keys) {
        (SEALED, Some(k)) => k.open_record(name, bytes[5..].to_vec())?,
        (SEALED, None) => {
            return Err(format!(
                "record {name} is sealed, but encryption is off; set [encryption] with the key-dir holding the kek-N.key files"
            ));
        }
        (PLAIN, Some(_)) if !plain_allowed => {
            return Err(format!(
                "record {name} is plaintext in an encrypted store; it was not written by a controller of this store"
            ));
        }
        (PLAIN, _) => {
            let body = &bytes[5..];
            if body.len() < 32 || Sha256::digest(&body[32..]).as_slice() != &body[..32] {
                return Err(format!(
                    "record {name} is damaged (its digest does not match)"
                ));
            }
            body[32..].to_vec()
        }
        (other, _) => return Err(format!("record {name} has unknown kind {other}")),
    };
    zstd::decode_all(packed.as_slice())
        .map_err(|e| format!("record {name} does not decompress: {e}"))
}

/// Which backup (id, start time) the backup record called `name` is, from its name.
pub fn backup_of(name: &str) -> Option<(i64, i64)> {
    let mut parts = name.strip_prefix("backups/")?.split('-');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The name of a catalog snapshot taken at `at`: they sort by time.
pub fn snapshot_name(at: i64) -> String {
    format!("snapshots/{at:012}-{}", random_suffix())
}

/// When the snapshot called `name` was taken, from its name.
pub fn snapshot_time(name: &str) -> Option<i64> {
    name.strip_prefix("snapshots/")?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// A chunk reference as records hold it: the id in hex and the plaintext length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkRef(pub String, pub u32);

fn refs(entries: &[ManifestEntry]) -> Vec<ChunkRef> {
    entries
        .iter()
        .map(|e| ChunkRef(e.id.to_hex(), e.raw_len))
        .collect()
}

/// The manifest lines of `refs`, in order.
pub fn entries(refs: &[ChunkRef]) -> Result<Vec<ManifestEntry>, String> {
    refs.iter()
        .enumerate()
        .map(|(seq, r)| {
            Ok(ManifestEntry {
                seq: seq as u64,
                id: r.0.parse::<ChunkId>().map_err(|e| e.to_string())?,
                raw_len: r.1,
            })
        })
        .collect()
}

/// A complete backup, all a restore needs of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupRecord {
    pub format: u32,
    pub id: i64,
    pub instance: String,
    pub engine: String,
    /// The cluster's system identifier (PostgreSQL) or server id (MariaDB), as registered.
    pub system_identifier: String,
    pub agent: String,
    pub kind: String,
    pub started_at: i64,
    pub finished_at: i64,
    pub server_version: String,
    pub tool_version: String,
    pub warnings: Vec<String>,
    pub databases: Vec<String>,
    pub parts: Vec<PartRecord>,
    pub base: Option<BaseRecord>,
    pub binlog: Option<BinlogRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartRecord {
    pub name: String,
    pub format: String,
    pub raw_bytes: u64,
    pub new_chunks: u64,
    pub new_bytes: u64,
    pub stream_sha256: String,
    pub check_status: String,
    pub check_detail: String,
    pub chunks: Vec<ChunkRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseRecord {
    pub start_lsn: String,
    pub stop_lsn: String,
    pub timeline: u32,
    pub system_identifier: String,
    pub backup_label: String,
    pub start_time: i64,
    pub stop_time: i64,
    pub tablespaces: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinlogRecord {
    pub file: String,
    pub seq: Option<u64>,
    pub position: u64,
    pub gtid: String,
    pub start_time: i64,
    pub stop_time: i64,
}

impl BackupRecord {
    /// `b` as it will be once complete at `finished_at`, with each part's manifest.
    pub fn new(
        b: &BackupRow,
        inst: &InstanceRow,
        finished_at: i64,
        manifests: Vec<Vec<ManifestEntry>>,
        base: Option<&BaseBackupRow>,
        binlog: Option<&BinlogCoordRow>,
    ) -> Self {
        BackupRecord {
            format: FORMAT,
            id: b.id.0,
            instance: b.instance.clone(),
            engine: inst.engine.as_str().to_string(),
            system_identifier: inst.system_identifier.clone(),
            agent: b.agent.clone(),
            kind: b.kind.as_str().to_string(),
            started_at: b.started_at,
            finished_at,
            server_version: b.server_version.clone(),
            tool_version: b.tool_version.clone(),
            warnings: b.warnings.clone(),
            databases: b.databases.clone(),
            parts: b
                .parts
                .iter()
                .zip(manifests)
                .map(|(p, m)| PartRecord {
                    name: p.name.clone(),
                    format: p.format.clone(),
                    raw_bytes: p.stats.raw_bytes,
                    new_chunks: p.stats.new_chunks,
                    new_bytes: p.stats.new_bytes,
                    stream_sha256: p.stats.stream_sha256.clone(),
                    check_status: p.check_status.clone(),
                    check_detail: p.check_detail.clone(),
                    chunks: refs(&m),
                })
                .collect(),
            base: base.map(|r| BaseRecord {
                start_lsn: r.start_lsn.to_string(),
                stop_lsn: r.stop_lsn.to_string(),
                timeline: r.timeline,
                system_identifier: r.system_identifier.clone(),
                backup_label: r.backup_label.clone(),
                start_time: r.start_time,
                stop_time: r.stop_time,
                tablespaces: r.tablespaces.clone(),
            }),
            binlog: binlog.map(|c| BinlogRecord {
                file: c.file.clone(),
                seq: c.seq,
                position: c.position,
                gtid: c.gtid.clone(),
                start_time: c.start_time,
                stop_time: c.stop_time,
            }),
        }
    }

    /// `backups/ID-STARTED-RANDOM`: a listing alone tells which backup each one is.
    pub fn name(&self) -> String {
        format!(
            "backups/{:012}-{}-{}",
            self.id,
            self.started_at,
            random_suffix()
        )
    }

    /// The catalog's rows for this backup, complete, and each part's manifest.
    pub fn rows(&self) -> Result<RebuiltBackup, String> {
        let id = BackupId(self.id);
        let kind = BackupKind::from_name(&self.kind)
            .ok_or_else(|| format!("backup {id} has unknown kind {:?}", self.kind))?;
        let mut parts = Vec::new();
        let mut manifests = Vec::new();
        for p in &self.parts {
            let m = entries(&p.chunks).map_err(|e| format!("backup {id} part {}: {e}", p.name))?;
            parts.push(PartRow {
                name: p.name.clone(),
                format: p.format.clone(),
                stored: true,
                stats: PartStats {
                    raw_bytes: p.raw_bytes,
                    chunks: m.len() as u64,
                    new_chunks: p.new_chunks,
                    new_bytes: p.new_bytes,
                    stream_sha256: p.stream_sha256.clone(),
                },
                check_status: p.check_status.clone(),
                check_detail: p.check_detail.clone(),
            });
            manifests.push(m);
        }
        let lsn = |s: &str| Lsn::parse(s).map_err(|e| format!("backup {id}: {e}"));
        let base = match &self.base {
            None => None,
            Some(b) => Some(BaseBackupRow {
                backup_id: id,
                start_lsn: lsn(&b.start_lsn)?,
                stop_lsn: lsn(&b.stop_lsn)?,
                timeline: b.timeline,
                system_identifier: b.system_identifier.clone(),
                backup_label: b.backup_label.clone(),
                start_time: b.start_time,
                stop_time: b.stop_time,
                tablespaces: b.tablespaces.clone(),
            }),
        };
        Ok(RebuiltBackup {
            row: BackupRow {
                id,
                instance: self.instance.clone(),
                agent: self.agent.clone(),
                kind,
                status: BackupStatus::Complete,
                job_id: None,
                started_at: self.started_at,
                finished_at: Some(self.finished_at),
                reason: String::new(),
                server_version: self.server_version.clone(),
                tool_version: self.tool_version.clone(),
                warnings: self.warnings.clone(),
                parts,
                databases: self.databases.clone(),
                expired_at: None,
            },
            manifests,
            base,
            binlog: self.binlog.as_ref().map(|c| BinlogCoordRow {
                backup_id: id,
                file: c.file.clone(),
                seq: c.seq,
                position: c.position,
                gtid: c.gtid.clone(),
                start_time: c.start_time,
                stop_time: c.stop_time,
            }),
        })
    }
}

/// A backup as the catalog holds it, from its record.
pub struct RebuiltBackup {
    pub row: BackupRow,
    pub manifests: Vec<Vec<ManifestEntry>>,
    pub base: Option<BaseBackupRow>,
    pub binlog: Option<BinlogCoordRow>,
}

/// Backups expired and archived logs deleted, by retention or an operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExpiryRecord {
    pub format: u32,
    pub instance: String,
    pub at: i64,
    /// (backup id, the reason recorded with it)
    pub backups: Vec<(i64, String)>,
    pub logs: Vec<String>,
}

impl ExpiryRecord {
    pub fn name(&self) -> String {
        format!(
            "expiries/{}/{:012}-{}",
            self.instance,
            self.at,
            random_suffix()
        )
    }
}

/// A record that never took effect: an expiry the catalog refused (its premises changed),
/// a backup record written for a backup that did not complete after all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetractionRecord {
    pub format: u32,
    /// The retracted record's name.
    pub record: String,
    pub why: String,
}

impl RetractionRecord {
    pub fn name(&self) -> String {
        format!("retractions/{}", self.record.replace('/', "."))
    }
}

/// A certificate an operator revoked: refused from then on, also by a rebuilt catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevocationRecord {
    pub format: u32,
    pub fingerprint: String,
    pub identity: String,
    pub revoked_at: i64,
    pub revoked_by: String,
}

impl RevocationRecord {
    /// One per certificate: revoking it again writes nothing new.
    pub fn name(&self) -> String {
        format!("revocations/{}", self.fingerprint)
    }
}

/// An instance as registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub format: u32,
    pub at: i64,
    pub name: String,
    pub agent: String,
    pub engine: String,
    pub server_version: String,
    pub system_identifier: String,
    pub databases: Vec<String>,
    pub data_directory: String,
    pub wal_segment_size: u64,
    pub archive_timeout: u64,
    pub log_bin_basename: String,
}

impl InstanceRecord {
    pub fn new(i: &InstanceRow, at: i64) -> Self {
        InstanceRecord {
            format: FORMAT,
            at,
            name: i.name.clone(),
            agent: i.agent.clone(),
            engine: i.engine.as_str().to_string(),
            server_version: i.server_version.clone(),
            system_identifier: i.system_identifier.clone(),
            databases: i.databases.clone(),
            data_directory: i.data_directory.clone(),
            wal_segment_size: i.wal_segment_size,
            archive_timeout: i.archive_timeout,
            log_bin_basename: i.log_bin_basename.clone(),
        }
    }

    pub fn name(&self) -> String {
        format!(
            "instances/{}/{:012}-{}",
            self.name,
            self.at,
            random_suffix()
        )
    }

    /// Does it say the same as `other`, the time it was written aside?
    pub fn same_facts(&self, other: &InstanceRecord) -> bool {
        InstanceRecord {
            at: 0,
            ..self.clone()
        } == InstanceRecord {
            at: 0,
            ..other.clone()
        }
    }

    pub fn row(&self) -> Result<InstanceRow, String> {
        Ok(InstanceRow {
            name: self.name.clone(),
            agent: self.agent.clone(),
            engine: Engine::from_name(&self.engine).ok_or_else(|| {
                format!(
                    "instance {} has unknown engine {:?}",
                    self.name, self.engine
                )
            })?,
            server_version: self.server_version.clone(),
            system_identifier: self.system_identifier.clone(),
            databases: self.databases.clone(),
            error: String::new(),
            data_directory: self.data_directory.clone(),
            wal_segment_size: self.wal_segment_size,
            archive_timeout: self.archive_timeout,
            log_bin_basename: self.log_bin_basename.clone(),
        })
    }
}

/// Every KEK's fingerprint and every data key wrapped by the newest KEK: what opening the
/// keyring needs. Plain: the data keys in it are sealed by the KEK, which never leaves the
/// controller's key-dir.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeysRecord {
    pub format: u32,
    pub keks: Vec<KekEntry>,
    pub data_keys: Vec<DataKeyEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KekEntry {
    pub id: u32,
    pub fingerprint: String,
    pub created_at: i64,
    pub retired_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataKeyEntry {
    pub id: u32,
    pub kek_id: u32,
    pub wrapped: String,
}

impl KeysRecord {
    pub fn new(keks: &[KekRow], data_keys: &[DataKeyRow]) -> Self {
        KeysRecord {
            format: FORMAT,
            keks: keks
                .iter()
                .map(|k| KekEntry {
                    id: k.id,
                    fingerprint: k.fingerprint.clone(),
                    created_at: k.created_at,
                    retired_at: k.retired_at,
                })
                .collect(),
            data_keys: data_keys
                .iter()
                .map(|d| DataKeyEntry {
                    id: d.id,
                    kek_id: d.kek_id,
                    wrapped: hex::encode(&d.wrapped),
                })
                .collect(),
        }
    }

    /// Which state of the keys this is: (newest KEK, newest data key). A later state is
    /// always greater.
    pub fn version(&self) -> (u32, u32) {
        (
            self.keks.iter().map(|k| k.id).max().unwrap_or(0),
            self.data_keys.iter().map(|d| d.id).max().unwrap_or(0),
        )
    }

    pub fn name(&self) -> String {
        let (kek, dk) = self.version();
        format!("keys/{kek:06}-{dk:06}-{}", random_suffix())
    }

    pub fn rows(&self) -> Result<(Vec<KekRow>, Vec<DataKeyRow>), String> {
        let keks = self
            .keks
            .iter()
            .map(|k| KekRow {
                id: k.id,
                fingerprint: k.fingerprint.clone(),
                created_at: k.created_at,
                retired_at: k.retired_at,
            })
            .collect();
        let data_keys = self
            .data_keys
            .iter()
            .map(|d| {
                Ok(DataKeyRow {
                    id: d.id,
                    kek_id: d.kek_id,
                    wrapped: hex::decode(&d.wrapped)
                        .map_err(|e| format!("data key {}: {e}", d.id))?,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok((keks, data_keys))
    }
}

/// Archived files described in a record rather than a pack: those archived before packs
/// described them, written once when the controller is upgraded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogsRecord {
    pub format: u32,
    pub instance: String,
    pub files: Vec<LogRecord>,
}

impl LogsRecord {
    pub fn name(&self) -> String {
        format!(
            "logs/{}/{:012}-{}",
            self.instance,
            now_secs(),
            random_suffix()
        )
    }
}

fn now_secs() -> i64 {
    tidemark_core::timefmt::now()
}

/// An archived WAL file or binlog, as the pack that carries it describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    pub format: u32,
    pub instance: String,
    pub name: String,
    pub timeline: u32,
    pub segno: Option<u64>,
    pub size: u64,
    pub sha256: String,
    pub modified_at: i64,
    pub stored_at: i64,
    pub agent: String,
    pub first_event_at: Option<i64>,
    pub chunks: Vec<ChunkRef>,
}

impl LogRecord {
    pub fn new(f: &WalFileRow, entries: &[ManifestEntry]) -> Self {
        LogRecord {
            format: FORMAT,
            instance: f.instance.clone(),
            name: f.name.clone(),
            timeline: f.timeline,
            segno: f.segno,
            size: f.size,
            sha256: f.sha256.clone(),
            modified_at: f.modified_at,
            stored_at: f.stored_at,
            agent: f.agent.clone(),
            first_event_at: f.first_event_at,
            chunks: refs(entries),
        }
    }

    /// The catalog's row for the file `pack` describes, and its manifest.
    pub fn row(&self, pack: &str) -> Result<(WalFileRow, Vec<ManifestEntry>), String> {
        let entries = entries(&self.chunks).map_err(|e| format!("{}: {e}", self.name))?;
        Ok((
            WalFileRow {
                instance: self.instance.clone(),
                name: self.name.clone(),
                timeline: self.timeline,
                segno: self.segno,
                size: self.size,
                sha256: self.sha256.clone(),
                chunks: entries.len() as u64,
                modified_at: self.modified_at,
                stored_at: self.stored_at,
                agent: self.agent.clone(),
                first_event_at: self.first_event_at,
                description_pack: Some(pack.to_string()),
            },
            entries,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expiry() -> ExpiryRecord {
        ExpiryRecord {
            format: FORMAT,
            instance: "db-a".into(),
            at: 1_700_000_000,
            backups: vec![(3, "older than 7 days".into())],
            logs: vec!["000000010000000000000003".into()],
        }
    }

    #[test]
    fn plain_records_round_trip_and_refuse_damage() {
        let r = expiry();
        let name = r.name();
        assert!(name.starts_with("expiries/db-a/001700000000-"));
        let bytes = encode(&name, &r, None);
        assert_eq!(
            decode::<ExpiryRecord>(&name, &bytes, None, false).unwrap(),
            r
        );
        for at in [3, 6, 20, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            assert!(
                decode::<ExpiryRecord>(&name, &bad, None, false).is_err(),
                "byte {at}"
            );
        }
    }

    #[tokio::test]
    async fn sealed_records_are_bound_to_their_name_and_plain_ones_are_refused_when_encrypted() {
        let (cat, tmp) = crate::catalog::test_catalog().await;
        let keys = Keyring::open(&cat, true, &tmp.path().join("keys"))
            .await
            .unwrap()
            .unwrap();
        let r = expiry();
        let name = r.name();
        let sealed = encode(&name, &r, Some(&keys));
        assert!(
            !sealed.windows(4).any(|w| w == b"db-a"),
            "the content is hidden"
        );
        assert_eq!(
            decode::<ExpiryRecord>(&name, &sealed, Some(&keys), false).unwrap(),
            r
        );
        assert!(
            decode::<ExpiryRecord>("expiries/db-a/other", &sealed, Some(&keys), false).is_err()
        );
        assert!(decode::<ExpiryRecord>(&name, &sealed, None, false).is_err());
        let plain = encode(&name, &r, None);
        let err = decode::<ExpiryRecord>(&name, &plain, Some(&keys), false).unwrap_err();
        assert!(err.contains("plaintext in an encrypted store"), "{err}");
        assert!(decode::<ExpiryRecord>(&name, &plain, Some(&keys), true).is_ok());
    }

    #[test]
    fn key_record_versions_grow_with_rotation() {
        let kek = |id| KekRow {
            id,
            fingerprint: format!("fp{id}"),
            created_at: 1,
            retired_at: None,
        };
        let dk = |id, kek_id| DataKeyRow {
            id,
            kek_id,
            wrapped: vec![id as u8; 40],
        };
        let first = KeysRecord::new(&[kek(1)], &[dk(1, 1)]);
        let rotated = KeysRecord::new(&[kek(1), kek(2)], &[dk(1, 2), dk(2, 2)]);
        assert!(rotated.version() > first.version());
        assert!(rotated.name() > first.name(), "names sort by version");
        let (keks, dks) = rotated.rows().unwrap();
        assert_eq!(keks.len(), 2);
        assert_eq!(dks[1], dk(2, 2));
    }
}
