//! The controller's config file.
//!
//! ```toml
//! version = 1
//! listen = "0.0.0.0:7420"
//! data-dir = "/var/lib/tidemark"
//! metrics-listen = "127.0.0.1:9187"   # Prometheus text at /metrics (plain HTTP); optional
//!
//! [tls]
//! ca = "/etc/tidemark/pki/ca.crt"
//! cert = "/etc/tidemark/pki/controller-backup1.crt"
//! key = "/etc/tidemark/pki/controller-backup1.key"
//!
//! [store]
//! kind = "fs"
//! path = "/var/lib/tidemark/store"   # default: DATA-DIR/store
//!
//! [catalog]
//! snapshot-every = "1h"              # a SQLite catalog's online snapshot into the store; "off"
//! snapshots-kept = 3
//!
//! [ingest]
//! wal-streams = 4                    # WAL segments and binlogs received at once; more retry
//!
//! [encryption]
//! enabled = true                     # seal every chunk (AES-256-GCM) before it is stored
//! key-dir = "/var/lib/tidemark/keys" # kek-N.key files, mode 0600; default: DATA-DIR/keys
//!
//! [drills]
//! amcheck = true                     # run pg_amcheck on every restored cluster
//! user = "postgres"                  # the role smoke checks connect as in the sandbox
//! sample-interval = "60s"            # how often agents run the probe queries
//! switch-interval = "5m"             # used when an instance has archive_timeout off
//!
//! [schedule]
//! tick = "10s"                       # how often the scheduler looks for due work
//! backup-timeout = "12h"             # a scheduled backup still running then fails
//! drill-timeout = "6h"
//! retries = 3                        # attempts after the first, for failed or timed-out runs
//! retry-backoff = "5m"               # doubles with each attempt
//!
//! [[instance]]
//! name = "orders-pg"
//! logical = "0 1 * * *"              # cron, UTC; "off" or absent: not scheduled
//! base = "0 2 * * 0"
//! drill = "0 6 * * *"
//! [[instance.check]]
//! name = "orders exist"
//! database = "orders"
//! sql = "SELECT count(*) FROM orders"
//! expect = "within-pct:1"            # nonzero | equals:V | within-pct:P
//! [instance.retention]
//! keep-daily = 7                     # base backups: newest per UTC day, week, month
//! keep-weekly = 4
//! keep-monthly = 6
//! pitr-window = "7d"                 # every point this far back stays restorable
//! min-base = 2                       # complete base backups always kept
//! logical = { keep-daily = 7 }       # logical dumps' own counts
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tidemark_core::config::{self, ConfigError, TlsFiles};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ControllerConfig {
    #[allow(dead_code)]
    pub version: u32,
    /// Address for the gRPC listener; port 0 picks a free port, written to
    /// DATA-DIR/controller.addr once bound.
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Address for the Prometheus metrics (plain HTTP, GET /metrics); unset: none. Port 0
    /// picks a free port, written to DATA-DIR/metrics.addr once bound.
    pub metrics_listen: Option<SocketAddr>,
    pub tls: TlsFiles,
    #[serde(default)]
    pub catalog: CatalogSettings,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub encryption: EncryptionSettings,
    #[serde(default)]
    pub drills: DrillSettings,
    #[serde(default)]
    pub schedule: ScheduleSettings,
    #[serde(default)]
    pub verify: VerifySettings,
    #[serde(default)]
    pub retention: RetentionSettings,
    #[serde(default)]
    pub ingest: IngestSettings,
    /// Per-instance policy: smoke checks for drills.
    #[serde(default, rename = "instance")]
    pub instances: Vec<InstancePolicy>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DrillSettings {
    /// Run pg_amcheck on every restored cluster.
    #[serde(default = "yes")]
    pub amcheck: bool,
    /// The role smoke checks and pg_amcheck connect as in the sandbox.
    #[serde(default = "default_user")]
    pub user: String,
    /// How often agents take samples of the probe queries.
    #[serde(
        default = "default_sample_interval",
        with = "tidemark_core::duration::serde_text"
    )]
    pub sample_interval: Duration,
    /// The longest a commit may wait to reach the archive, for instances that report
    /// archive_timeout off: a drill's recovered point must be this close to its target
    /// unless the log shows no commit in between.
    #[serde(
        default = "default_switch_interval",
        with = "tidemark_core::duration::serde_text"
    )]
    pub switch_interval: Duration,
}

impl Default for DrillSettings {
    fn default() -> Self {
        Self {
            amcheck: true,
            user: default_user(),
            sample_interval: default_sample_interval(),
            switch_interval: default_switch_interval(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_user() -> String {
    "postgres".into()
}
fn default_sample_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_switch_interval() -> Duration {
    Duration::from_secs(300)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ScheduleSettings {
    #[serde(default = "default_tick", with = "tidemark_core::duration::serde_text")]
    pub tick: Duration,
    #[serde(
        default = "default_backup_timeout",
        with = "tidemark_core::duration::serde_text"
    )]
    pub backup_timeout: Duration,
    #[serde(
        default = "default_drill_timeout",
        with = "tidemark_core::duration::serde_text"
    )]
    pub drill_timeout: Duration,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(
        default = "default_retry_backoff",
        with = "tidemark_core::duration::serde_text"
    )]
    pub retry_backoff: Duration,
}

impl Default for ScheduleSettings {
    fn default() -> Self {
        Self {
            tick: default_tick(),
            backup_timeout: default_backup_timeout(),
            drill_timeout: default_drill_timeout(),
            retries: default_retries(),
            retry_backoff: default_retry_backoff(),
        }
    }
}

fn default_tick() -> Duration {
    Duration::from_secs(10)
}
fn default_backup_timeout() -> Duration {
    Duration::from_secs(12 * 3600)
}
fn default_drill_timeout() -> Duration {
    Duration::from_secs(6 * 3600)
}
fn default_retries() -> u32 {
    3
}
fn default_retry_backoff() -> Duration {
    Duration::from_secs(300)
}

/// Scheduled verification of the whole store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct VerifySettings {
    /// Cron (UTC); unset: verify runs only when asked (tidemark verify).
    pub schedule: Option<String>,
    /// Percent of the chunks each scheduled run reads, at random.
    #[serde(default = "default_sample")]
    pub sample: u32,
    /// A scheduled verification still running then is stopped and retried.
    #[serde(
        default = "default_verify_timeout",
        with = "tidemark_core::duration::serde_text"
    )]
    pub timeout: Duration,
}

impl Default for VerifySettings {
    fn default() -> Self {
        Self {
            schedule: None,
            sample: default_sample(),
            timeout: default_verify_timeout(),
        }
    }
}

/// Where the catalog lives: SQLite in the data directory (the default), or a PostgreSQL
/// database that several controllers share.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CatalogSettings {
    /// postgres://USER@HOST[:PORT]/DB[?sslmode=...]; unset: SQLite at DATA-DIR/catalog.db.
    pub url: Option<String>,
    /// A file holding the PostgreSQL password (mode 0600), kept out of the config.
    pub password_file: Option<PathBuf>,
    /// How often a SQLite catalog is snapshotted into the store ("off": never). A
    /// PostgreSQL catalog is backed up as that database is.
    #[serde(default = "default_snapshot_every", with = "snapshot_every")]
    pub snapshot_every: Option<Duration>,
    /// Snapshots kept in the store; older ones are deleted once a newer one is stored.
    #[serde(default = "default_snapshots_kept")]
    pub snapshots_kept: u32,
}

impl Default for CatalogSettings {
    fn default() -> Self {
        Self {
            url: None,
            password_file: None,
            snapshot_every: default_snapshot_every(),
            snapshots_kept: default_snapshots_kept(),
        }
    }
}

fn default_snapshot_every() -> Option<Duration> {
    Some(Duration::from_secs(3600))
}

fn default_snapshots_kept() -> u32 {
    3
}

/// A duration, or "off".
mod snapshot_every {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        if text == "off" {
            return Ok(None);
        }
        let every = tidemark_core::duration::parse(&text).map_err(serde::de::Error::custom)?;
        if every < Duration::from_secs(1) {
            return Err(serde::de::Error::custom(
                "snapshot-every must be at least 1s, or \"off\"",
            ));
        }
        Ok(Some(every))
    }
}

/// How many archived files the controller receives at once; more are refused as
/// unavailable, and their agents try again.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IngestSettings {
    /// WAL segments and binlogs received at once.
    pub wal_streams: usize,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self { wal_streams: 4 }
    }
}

/// When retention is applied without an operator asking (the policies are per instance).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RetentionSettings {
    /// Cron (UTC); unset: retention is applied only when asked (tidemark retention apply).
    pub schedule: Option<String>,
    /// A scheduled run still going then is reported and retried.
    #[serde(
        default = "default_verify_timeout",
        with = "tidemark_core::duration::serde_text"
    )]
    pub timeout: Duration,
    /// A pack in the store that nothing in the catalog refers to is deleted once this old
    /// (an upload in flight writes its packs before it commits them).
    #[serde(
        default = "default_orphan_grace",
        with = "tidemark_core::duration::serde_text"
    )]
    pub orphan_grace: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            schedule: None,
            timeout: default_verify_timeout(),
            orphan_grace: default_orphan_grace(),
        }
    }
}

fn default_orphan_grace() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_verify_timeout() -> Duration {
    Duration::from_secs(6 * 3600)
}

fn default_sample() -> u32 {
    100
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct InstancePolicy {
    pub name: String,
    /// Cron expressions (UTC) for scheduled logical dumps, base backups and drills.
    pub logical: Option<String>,
    pub base: Option<String>,
    pub drill: Option<String>,
    #[serde(default, rename = "check")]
    pub checks: Vec<CheckConfig>,
    /// What to keep; absent: everything (retention never deletes without a policy).
    pub retention: Option<crate::retention::Policy>,
}

impl InstancePolicy {
    /// (kind, cron) for each scheduled kind.
    pub fn schedules(&self) -> Vec<(&'static str, &str)> {
        [
            ("logical", &self.logical),
            ("base", &self.base),
            ("drill", &self.drill),
        ]
        .into_iter()
        .filter_map(|(k, c)| c.as_deref().map(|c| (k, c)))
        .collect()
    }
}

/// A smoke check: an SQL query whose first column of the first row must meet `expect`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CheckConfig {
    pub name: String,
    #[serde(default = "default_database")]
    pub database: String,
    pub sql: String,
    pub expect: Expect,
}

fn default_database() -> String {
    "postgres".into()
}

/// What a smoke check's value must be.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// A number other than zero.
    Nonzero,
    /// This exact value (numerically, when both are numbers).
    Equals(String),
    /// Within P percent of the production sample nearest before the target.
    WithinPct(f64),
}

impl std::str::FromStr for Expect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("expect = {s:?} is not one of nonzero, equals:VALUE or within-pct:PERCENT");
        match s.split_once(':') {
            None if s == "nonzero" => Ok(Expect::Nonzero),
            Some(("equals", v)) => Ok(Expect::Equals(v.to_string())),
            Some(("within-pct", p)) => match p.trim().parse::<f64>() {
                Ok(p) if p >= 0.0 && p.is_finite() => Ok(Expect::WithinPct(p)),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Nonzero => write!(f, "nonzero"),
            Expect::Equals(v) => write!(f, "equals:{v}"),
            Expect::WithinPct(p) => write!(f, "within-pct:{p}"),
        }
    }
}

impl<'de> Deserialize<'de> for Expect {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Encryption at rest, for the whole fleet's store.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EncryptionSettings {
    #[serde(default)]
    pub enabled: bool,
    /// Where the key-encryption keys are (resolved in load: DATA-DIR/keys by default).
    pub key_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StoreConfig {
    #[serde(default)]
    pub kind: StoreKind,
    /// fs: the directory.
    pub path: Option<PathBuf>,
    /// s3: the bucket, a key prefix, the endpoint (empty: AWS), region, path-style
    /// requests, and credentials (an AWS shared-credentials file, or the environment's
    /// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY).
    pub bucket: Option<String>,
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub endpoint: String,
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default)]
    pub path_style: bool,
    pub credentials_file: Option<PathBuf>,
    #[serde(default = "default_profile")]
    pub profile: String,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_profile() -> String {
    "default".into()
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    #[default]
    Fs,
    S3,
}

impl ControllerConfig {
    /// The catalog's PostgreSQL URL with the password file's password in it; None: SQLite.
    pub fn catalog_url(&self) -> Result<Option<String>, String> {
        let Some(url) = &self.catalog.url else {
            return Ok(None);
        };
        let Some(file) = &self.catalog.password_file else {
            return Ok(Some(url.clone()));
        };
        let password = std::fs::read_to_string(file)
            .map_err(|e| format!("reading the catalog password file {}: {e}", file.display()))?;
        let opts = <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(url)
            .map_err(|e| format!("[catalog] url: {e}"))?
            .password(password.trim_end_matches(['\n', '\r']));
        Ok(Some(sqlx::ConnectOptions::to_url_lossy(&opts).to_string()))
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut c: ControllerConfig = config::load(path)?;
        let base = config::base_dir(path);
        c.data_dir = config::resolve(&base, &c.data_dir);
        c.tls = c.tls.resolved(&base);
        c.store.path = Some(match &c.store.path {
            Some(p) => config::resolve(&base, p),
            None => c.data_dir.join("store"),
        });
        c.encryption.key_dir = Some(match &c.encryption.key_dir {
            Some(p) => config::resolve(&base, p),
            None => c.data_dir.join("keys"),
        });
        c.store.credentials_file = c
            .store
            .credentials_file
            .as_ref()
            .map(|p| config::resolve(&base, p));
        if c.store.kind == StoreKind::S3 && c.store.bucket.as_deref().unwrap_or("").is_empty() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                message: "[store] kind = \"s3\" needs bucket = \"NAME\"".into(),
            });
        }
        if let Some(f) = &c.store.credentials_file {
            config::check_secret_file("S3 credentials file", f)?;
        }
        c.catalog.password_file = c
            .catalog
            .password_file
            .as_ref()
            .map(|p| config::resolve(&base, p));
        match c.catalog.url.as_deref() {
            Some(u) if !(u.starts_with("postgres://") || u.starts_with("postgresql://")) => {
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    message: format!(
                        "[catalog] url {u:?} is not a PostgreSQL URL; use postgres://USER@HOST/DB, or leave it out for SQLite in the data directory"
                    ),
                });
            }
            None if c.catalog.password_file.is_some() => {
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    message: "[catalog] password-file is set without url".into(),
                });
            }
            _ => {}
        }
        if let Some(f) = &c.catalog.password_file {
            config::check_secret_file("catalog password file", f)?;
        }
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        if let Some(cron) = &c.verify.schedule
            && let Err(e) = crate::cron::Cron::parse(cron)
        {
            return Err(invalid(format!("[verify] schedule = {e}")));
        }
        if let Some(cron) = &c.retention.schedule
            && let Err(e) = crate::cron::Cron::parse(cron)
        {
            return Err(invalid(format!("[retention] schedule = {e}")));
        }
        if !(1..=100).contains(&c.verify.sample) {
            return Err(invalid(format!(
                "[verify] sample = {} is not a percentage from 1 to 100",
                c.verify.sample
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for p in &c.instances {
            if !seen.insert(&p.name) {
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    message: format!("[[instance]] {:?} appears twice", p.name),
                });
            }
            for (kind, cron) in p.schedules() {
                if cron != "off"
                    && let Err(e) = crate::cron::Cron::parse(cron)
                {
                    return Err(ConfigError::Invalid {
                        path: path.to_path_buf(),
                        message: format!("instance {:?}: {kind} = {e}", p.name),
                    });
                }
            }
            let mut names = std::collections::HashSet::new();
            for ch in &p.checks {
                if !names.insert(&ch.name) {
                    return Err(ConfigError::Invalid {
                        path: path.to_path_buf(),
                        message: format!(
                            "instance {:?} has two checks named {:?}",
                            p.name, ch.name
                        ),
                    });
                }
            }
        }
        Ok(c)
    }

    pub fn key_dir(&self) -> &Path {
        self.encryption
            .key_dir
            .as_deref()
            .expect("resolved in load")
    }

    pub fn store_path(&self) -> &Path {
        self.store.path.as_deref().expect("resolved in load")
    }

    /// The S3 settings, with credentials read from the file or the environment.
    pub fn s3_settings(&self) -> Result<crate::store::s3::S3Settings, String> {
        let st = &self.store;
        let (access_key, secret_key) = match &st.credentials_file {
            Some(f) => crate::store::s3::credentials_from_file(f, &st.profile)?,
            None => match (
                std::env::var("AWS_ACCESS_KEY_ID"),
                std::env::var("AWS_SECRET_ACCESS_KEY"),
            ) {
                (Ok(k), Ok(s)) if !k.is_empty() && !s.is_empty() => (k, s),
                _ => {
                    return Err(
                        "[store] kind = \"s3\" needs credentials: set credentials-file (an AWS shared-credentials file, mode 0600) or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".into(),
                    );
                }
            },
        };
        Ok(crate::store::s3::S3Settings {
            bucket: st.bucket.clone().unwrap_or_default(),
            prefix: st.prefix.clone(),
            endpoint: st.endpoint.clone(),
            region: st.region.clone(),
            path_style: st.path_style,
            access_key,
            secret_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retention_table_is_read_and_a_typo_in_it_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let write = |extra: &str| {
            let p = dir.path().join("c.toml");
            std::fs::write(
                &p,
                format!(
                    "version = 1\nlisten = \"127.0.0.1:0\"\ndata-dir = \"d\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n[[instance]]\nname = \"x\"\n[instance.retention]\n{extra}"
                ),
            )
            .unwrap();
            p
        };
        let c = ControllerConfig::load(&write(
            "keep-daily = 7\npitr-window = \"3d\"\nlogical = { keep-weekly = 2 }\n",
        ))
        .unwrap();
        let r = c.instances[0].retention.clone().unwrap();
        assert_eq!(r.base.keep_daily, 7);
        assert_eq!(r.min_base, 2, "the default");
        assert_eq!(r.pitr_window, Some(Duration::from_secs(3 * 86_400)));
        assert_eq!(r.logical.keep_weekly, 2);
        let e = ControllerConfig::load(&write("keep-dialy = 7\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("keep-dialy"), "{e}");
        let e = ControllerConfig::load(&write("pitr-window = \"soon\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("soon"), "{e}");
    }

    #[test]
    fn example_config_in_deploy_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/controller.example.toml");
        let c = ControllerConfig::load(&path).unwrap();
        assert_eq!(c.store.kind, StoreKind::Fs);
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9187".parse().unwrap()));
        assert!(c.data_dir.is_absolute());
        assert!(c.tls.key.is_absolute());
        let p = &c.instances[0];
        assert_eq!(
            p.schedules(),
            vec![
                ("logical", "0 1 * * *"),
                ("base", "0 2 * * 0"),
                ("drill", "0 6 * * *")
            ]
        );
        assert_eq!(p.checks.len(), 3);
        assert_eq!(p.checks[0].expect, Expect::WithinPct(1.0));
        assert_eq!(p.retention.as_ref().unwrap().logical.keep_daily, 14);
        assert!(c.encryption.enabled);
        assert_eq!(c.key_dir(), Path::new("/var/lib/tidemark/keys"));
        assert_eq!(c.schedule.retries, 3);
        assert_eq!(c.drills.sample_interval, Duration::from_secs(60));
        assert_eq!(c.verify.schedule.as_deref(), Some("0 4 * * *"));
        assert_eq!(c.verify.sample, 10);
        assert_eq!(c.verify.timeout, Duration::from_secs(6 * 3600));
        assert_eq!(c.retention.schedule.as_deref(), Some("0 3 * * *"));
        assert_eq!(c.retention.timeout, Duration::from_secs(6 * 3600));
    }

    #[test]
    fn a_postgres_catalog_is_configured_with_its_password_kept_apart() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let load = |catalog: &str| {
            let p = dir.path().join("c.toml");
            std::fs::write(
                &p,
                format!(
                    "version = 1\nlisten = \"127.0.0.1:0\"\ndata-dir = \"d\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n[catalog]\n{catalog}"
                ),
            )
            .unwrap();
            ControllerConfig::load(&p).map_err(|e| e.to_string())
        };
        let c = load("").unwrap();
        assert_eq!(c.catalog_url().unwrap(), None, "SQLite");

        let e = load("url = \"mysql://x/y\"\n").unwrap_err();
        assert!(e.contains("not a PostgreSQL URL"), "{e}");
        let e = load("password-file = \"pw\"\n").unwrap_err();
        assert!(e.contains("without url"), "{e}");

        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret/:@\n").unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load("url = \"postgres://tm@db1/tidemark\"\npassword-file = \"pw\"\n").unwrap_err();
        assert!(
            e.contains("catalog password file"),
            "readable by others: {e}"
        );
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = load("url = \"postgres://tm@db1/tidemark\"\npassword-file = \"pw\"\n").unwrap();
        let url = c.catalog_url().unwrap().unwrap();
        let opts: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
        assert_eq!(opts.get_host(), "db1");
        assert_eq!(opts.get_username(), "tm");
        assert_eq!(opts.get_database(), Some("tidemark"));
        assert!(url.contains("s3cret"), "the password, encoded: {url}");
    }

    /// The shared-catalog example names a PostgreSQL catalog and an S3 store. Its secret
    /// files do not exist here: without them it loads, and the missing password file is
    /// named.
    #[test]
    fn shared_controller_example_in_deploy_parses() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/controller-shared.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let without_password: String = text
            .lines()
            .filter(|l| !l.starts_with("password-file") && !l.starts_with("credentials-file"))
            .map(|l| format!("{l}\n"))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("c.toml");
        std::fs::write(&copy, without_password).unwrap();
        let c = ControllerConfig::load(&copy).unwrap();
        assert_eq!(c.store.kind, StoreKind::S3);
        let url = c.catalog_url().unwrap().unwrap();
        assert!(
            url.starts_with("postgres://tidemark@catalog-db.example"),
            "{url}"
        );
        let e = ControllerConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("file"), "{e}");
    }

    #[test]
    fn a_bad_schedule_names_the_instance_and_kind() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "version = 1\nlisten = \"127.0.0.1:0\"\ndata-dir = \"d\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n[[instance]]\nname = \"orders\"\nbase = \"0 2 * *\"\n",
        )
        .unwrap();
        let e = ControllerConfig::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("instance \"orders\": base = ") && e.contains("5 fields"),
            "{e}"
        );
    }

    #[test]
    fn expectations_parse_and_bad_ones_are_named() {
        assert_eq!("nonzero".parse::<Expect>(), Ok(Expect::Nonzero));
        assert_eq!("equals:0".parse::<Expect>(), Ok(Expect::Equals("0".into())));
        assert_eq!(
            "within-pct:2.5".parse::<Expect>(),
            Ok(Expect::WithinPct(2.5))
        );
        for bad in ["", "zero", "within-pct:x", "within-pct:-1", "equal:3"] {
            let e = bad.parse::<Expect>().unwrap_err();
            assert!(
                e.contains("nonzero, equals:VALUE or within-pct:PERCENT"),
                "{e}"
            );
        }
    }

    #[test]
    fn unknown_store_kind_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "version = 1\nlisten = \"127.0.0.1:0\"\ndata-dir = \"d\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n[store]\nkind = \"tape\"\n",
        )
        .unwrap();
        let e = ControllerConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("tape"), "{e}");
    }
}
