//! One `[[instance]]` of the agent's config: the settings every engine has (how to reach
//! the server, its tools, what to dump, which OS user owns restored files), and the
//! settings of its engine.
//!
//! The file keeps one flat table per instance whatever its engine (`engine = "..."` then
//! any keys), so it is read as [`InstanceTable`], which knows every key, and split by
//! engine. A key of another engine (`checkpoint` on a MariaDB instance) is refused by name
//! rather than silently ignored; an unknown key is refused as before.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Which engine an instance runs; `engine = "postgresql"` or `"mariadb"` (MySQL servers
/// are `mariadb` too: the agent tells them apart by their version).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum EngineKind {
    Postgresql,
    Mariadb,
}

/// What the config knows of an engine before any of its settings.
struct EngineDefaults {
    name: &'static str,
    port: u16,
    user: &'static str,
    os_user: &'static str,
}

impl EngineKind {
    /// Every engine the config can name, in the order the agent offers and visits them.
    pub const ALL: [EngineKind; 2] = [EngineKind::Postgresql, EngineKind::Mariadb];

    fn defaults(self) -> EngineDefaults {
        match self {
            EngineKind::Postgresql => EngineDefaults {
                name: "postgresql",
                port: 5432,
                user: "postgres",
                os_user: "postgres",
            },
            EngineKind::Mariadb => EngineDefaults {
                name: "mariadb",
                port: 3306,
                user: "root",
                os_user: "mysql",
            },
        }
    }

    /// The engine's name, as in the config and the protocol.
    pub fn as_str(self) -> &'static str {
        self.defaults().name
    }

    fn default_port(self) -> u16 {
        self.defaults().port
    }

    fn default_user(self) -> &'static str {
        self.defaults().user
    }

    fn default_os_user(self) -> &'static str {
        self.defaults().os_user
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One configured database instance on this host.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "InstanceTable")]
pub struct InstanceConfig {
    /// Fleet-unique.
    pub name: String,
    /// PostgreSQL: a libpq host (socket directory or address). MariaDB: a socket file, or a
    /// host name (then `port`).
    pub host: String,
    /// Default: 5432 for PostgreSQL, 3306 for MariaDB.
    pub port: u16,
    /// Default: postgres for PostgreSQL, root for MariaDB.
    pub user: String,
    /// PostgreSQL: a libpq password file. MariaDB: an option file with `[client] password`.
    pub passfile: Option<PathBuf>,
    /// Where the engine's client tools are; default: the PATH.
    pub bin_dir: Option<PathBuf>,
    /// What a logical backup dumps; default: every user database.
    pub databases: Option<Vec<String>>,
    /// The OS user that owns restored data directories and runs a restored server, when
    /// the agent runs as root (PostgreSQL refuses to run as root). Default: postgres, or
    /// mysql for MariaDB.
    pub os_user: String,
    /// The engine, with its own settings.
    pub engine: EngineSettings,
}

/// An instance's engine and the settings only that engine has.
#[derive(Debug, Clone)]
pub enum EngineSettings {
    Postgresql(PgSettings),
    Mariadb(MariadbSettings),
}

impl EngineSettings {
    pub fn kind(&self) -> EngineKind {
        match self {
            EngineSettings::Postgresql(_) => EngineKind::Postgresql,
            EngineSettings::Mariadb(_) => EngineKind::Mariadb,
        }
    }

    /// The engine's settings when the config sets none of them.
    pub fn defaults(kind: EngineKind) -> Self {
        match kind {
            EngineKind::Postgresql => EngineSettings::Postgresql(PgSettings::default()),
            EngineKind::Mariadb => EngineSettings::Mariadb(MariadbSettings::default()),
        }
    }
}

/// PostgreSQL's own instance settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PgSettings {
    /// Warn when a transaction has been open longer than this when a dump starts (it pins
    /// old row versions while the dump's snapshot lasts).
    pub long_transaction_warning: Duration,
    /// pg_dump's --lock-wait-timeout: fail rather than wait longer than this for a table
    /// lock (another session's ALTER TABLE, say). Unset: wait as long as pg_dump would.
    pub lock_wait_timeout: Option<Duration>,
    /// How long a base backup waits for its WAL to be archived before it fails.
    pub wal_wait_timeout: Duration,
    /// pg_basebackup's --checkpoint.
    pub checkpoint: Checkpoint,
}

impl Default for PgSettings {
    fn default() -> Self {
        Self {
            long_transaction_warning: Duration::from_secs(3600),
            lock_wait_timeout: None,
            wal_wait_timeout: Duration::from_secs(300),
            checkpoint: Checkpoint::default(),
        }
    }
}

/// MariaDB's own instance settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MariadbSettings {
    /// The agent ships closed binlogs only, so it rotates the binlog (FLUSH BINARY LOGS)
    /// once its oldest unarchived event is this old. This bounds the RPO, as PostgreSQL's
    /// archive_timeout does.
    pub archive_timeout: Duration,
}

impl Default for MariadbSettings {
    fn default() -> Self {
        Self {
            archive_timeout: Duration::from_secs(30),
        }
    }
}

/// pg_basebackup's --checkpoint: "fast" starts the backup at once, "spread" waits for a
/// paced checkpoint (gentler on a busy server's I/O).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum Checkpoint {
    #[default]
    Fast,
    Spread,
}

impl InstanceConfig {
    pub fn kind(&self) -> EngineKind {
        self.engine.kind()
    }

    /// PostgreSQL's settings, if this is a PostgreSQL instance.
    pub fn postgresql(&self) -> Option<&PgSettings> {
        match &self.engine {
            EngineSettings::Postgresql(s) => Some(s),
            _ => None,
        }
    }

    /// MariaDB's settings, if this is a MariaDB instance.
    pub fn mariadb(&self) -> Option<&MariadbSettings> {
        match &self.engine {
            EngineSettings::Mariadb(s) => Some(s),
            _ => None,
        }
    }

    /// Defaults for restoring onto a host that runs no instance of this engine (a restore
    /// target, a sandbox): tools on the PATH, the engine's default users. The host is never
    /// connected to: a restored server is reached through its own socket.
    pub fn fallback(kind: EngineKind, name: &str) -> Self {
        Self {
            name: name.into(),
            host: "/var/run/postgresql".into(),
            port: kind.default_port(),
            user: kind.default_user().into(),
            passfile: None,
            bin_dir: None,
            databases: None,
            os_user: kind.default_os_user().into(),
            engine: EngineSettings::defaults(kind),
        }
    }
}

/// An `[[instance]]` table as written: every key any engine takes. Field order is the
/// order an unknown key's error lists them in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct InstanceTable {
    name: String,
    engine: EngineKind,
    host: String,
    #[serde(default)]
    port: u16,
    #[serde(default)]
    user: String,
    passfile: Option<PathBuf>,
    bin_dir: Option<PathBuf>,
    databases: Option<Vec<String>>,
    #[serde(default, with = "tidemark_core::duration::serde_text_opt")]
    lock_wait_timeout: Option<Duration>,
    #[serde(default, with = "tidemark_core::duration::serde_text_opt")]
    wal_wait_timeout: Option<Duration>,
    checkpoint: Option<Checkpoint>,
    #[serde(default)]
    os_user: String,
    #[serde(default, with = "tidemark_core::duration::serde_text_opt")]
    long_transaction_warning: Option<Duration>,
    #[serde(default, with = "tidemark_core::duration::serde_text_opt")]
    archive_timeout: Option<Duration>,
}

impl InstanceTable {
    /// Each engine's own keys: the engine it belongs to, and whether this table sets it.
    fn engine_keys(&self) -> [(&'static str, EngineKind, bool); 5] {
        use EngineKind::*;
        [
            (
                "lock-wait-timeout",
                Postgresql,
                self.lock_wait_timeout.is_some(),
            ),
            (
                "wal-wait-timeout",
                Postgresql,
                self.wal_wait_timeout.is_some(),
            ),
            ("checkpoint", Postgresql, self.checkpoint.is_some()),
            (
                "long-transaction-warning",
                Postgresql,
                self.long_transaction_warning.is_some(),
            ),
            ("archive-timeout", Mariadb, self.archive_timeout.is_some()),
        ]
    }
}

/// A key that belongs to another engine than the instance's.
#[derive(Debug, thiserror::Error)]
#[error(
    "instance {instance:?}: {key} is a {owner} setting, and this instance's engine is {engine}; remove it"
)]
pub struct ForeignKey {
    instance: String,
    key: &'static str,
    owner: EngineKind,
    engine: EngineKind,
}

impl TryFrom<InstanceTable> for InstanceConfig {
    type Error = ForeignKey;

    fn try_from(t: InstanceTable) -> Result<Self, ForeignKey> {
        let kind = t.engine;
        if let Some((key, owner, _)) = t
            .engine_keys()
            .into_iter()
            .find(|(_, owner, set)| *set && *owner != kind)
        {
            return Err(ForeignKey {
                instance: t.name,
                key,
                owner,
                engine: kind,
            });
        }
        let engine = match kind {
            EngineKind::Postgresql => {
                let d = PgSettings::default();
                EngineSettings::Postgresql(PgSettings {
                    long_transaction_warning: t
                        .long_transaction_warning
                        .unwrap_or(d.long_transaction_warning),
                    lock_wait_timeout: t.lock_wait_timeout,
                    wal_wait_timeout: t.wal_wait_timeout.unwrap_or(d.wal_wait_timeout),
                    checkpoint: t.checkpoint.unwrap_or(d.checkpoint),
                })
            }
            EngineKind::Mariadb => EngineSettings::Mariadb(MariadbSettings {
                archive_timeout: t
                    .archive_timeout
                    .unwrap_or(MariadbSettings::default().archive_timeout),
            }),
        };
        let or = |v: String, default: &str| if v.is_empty() { default.into() } else { v };
        Ok(InstanceConfig {
            port: if t.port == 0 {
                kind.default_port()
            } else {
                t.port
            },
            user: or(t.user, kind.default_user()),
            os_user: or(t.os_user, kind.default_os_user()),
            name: t.name,
            host: t.host,
            passfile: t.passfile,
            bin_dir: t.bin_dir,
            databases: t.databases,
            engine,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(table: &str) -> Result<InstanceConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.toml");
        let head = "version = 1\ncontroller = \"https://c:1\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n";
        std::fs::write(&p, format!("{head}[[instance]]\nname = \"x\"\n{table}")).unwrap();
        super::super::AgentConfig::load(&p)
            .map(|c| c.instances.into_iter().next().unwrap())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn each_engine_gets_its_defaults() {
        let pg = parse("engine = \"postgresql\"\nhost = \"/tmp\"\n").unwrap();
        assert_eq!((pg.port, pg.user.as_str()), (5432, "postgres"));
        assert_eq!(pg.os_user, "postgres");
        assert_eq!(pg.postgresql(), Some(&PgSettings::default()));
        let d = PgSettings::default();
        assert_eq!(d.long_transaction_warning, Duration::from_secs(3600));
        assert_eq!(d.wal_wait_timeout, Duration::from_secs(300));
        assert_eq!(
            (d.lock_wait_timeout, d.checkpoint),
            (None, Checkpoint::Fast)
        );
        assert!(pg.mariadb().is_none());

        let m = parse("engine = \"mariadb\"\nhost = \"/run/mysqld/mysqld.sock\"\n").unwrap();
        assert_eq!(
            (m.port, m.user.as_str(), m.os_user.as_str()),
            (3306, "root", "mysql")
        );
        assert_eq!(m.kind(), EngineKind::Mariadb);
        assert_eq!(
            m.mariadb().map(|s| s.archive_timeout),
            Some(Duration::from_secs(30))
        );
        assert!(m.postgresql().is_none());

        let f = InstanceConfig::fallback(EngineKind::Mariadb, "y");
        assert_eq!((f.port, f.os_user.as_str()), (3306, "mysql"));
        assert_eq!(f.mariadb(), Some(&MariadbSettings::default()));
    }

    #[test]
    fn an_engines_own_keys_are_read() {
        let pg = parse(
            "engine = \"postgresql\"\nhost = \"/tmp\"\ncheckpoint = \"spread\"\nwal-wait-timeout = \"1m\"\nlock-wait-timeout = \"2s\"\nlong-transaction-warning = \"5m\"\n",
        )
        .unwrap();
        assert_eq!(
            pg.postgresql(),
            Some(&PgSettings {
                long_transaction_warning: Duration::from_secs(300),
                lock_wait_timeout: Some(Duration::from_secs(2)),
                wal_wait_timeout: Duration::from_secs(60),
                checkpoint: Checkpoint::Spread,
            })
        );
        let m =
            parse("engine = \"mariadb\"\nhost = \"db\"\nport = 3307\narchive-timeout = \"5s\"\n")
                .unwrap();
        assert_eq!(m.port, 3307);
        assert_eq!(
            m.mariadb().map(|s| s.archive_timeout),
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn another_engines_key_is_refused_by_name() {
        for (engine, key, owner) in [
            ("mariadb", "checkpoint = \"fast\"", "postgresql"),
            ("mariadb", "wal-wait-timeout = \"1m\"", "postgresql"),
            ("mariadb", "lock-wait-timeout = \"1m\"", "postgresql"),
            ("mariadb", "long-transaction-warning = \"1h\"", "postgresql"),
            ("postgresql", "archive-timeout = \"30s\"", "mariadb"),
        ] {
            let e = parse(&format!("engine = \"{engine}\"\nhost = \"h\"\n{key}\n")).unwrap_err();
            let name = key.split(' ').next().unwrap();
            let want = format!(
                "instance \"x\": {name} is a {owner} setting, and this instance's engine is {engine}; remove it"
            );
            assert!(e.contains(&want), "{e}");
        }
    }

    /// The instance tables deploy/lib/demo-*.sh (quickstart) and the test harness
    /// (tests/src/fleet.rs, tests/src/maria.rs) write, with every extra key a test adds.
    #[test]
    fn the_tables_quickstart_and_the_harness_write_parse() {
        for table in [
            "engine = \"postgresql\"\nhost = \"/d/pg\"\nport = 5432\nuser = \"postgres\"\nbin-dir = \"/usr/lib/postgresql/15/bin\"\n",
            "engine = \"mariadb\"\nhost = \"/d/maria/mysqld.sock\"\nuser = \"root\"\nos-user = \"mysql\"\narchive-timeout = \"5s\"\n",
            "engine = \"postgresql\"\nhost = \"/d\"\nuser = \"postgres\"\nbin-dir = \"/b\"\ndatabases = [\"app\"]\nlock-wait-timeout = \"2s\"\nlong-transaction-warning = \"1s\"\nwal-wait-timeout = \"3s\"\n",
            "engine = \"mariadb\"\nhost = \"/d/mysqld.sock\"\nuser = \"root\"\nos-user = \"root\"\narchive-timeout = \"2s\"\n",
        ] {
            parse(table).unwrap();
        }
    }

    #[test]
    fn an_unknown_key_is_still_refused() {
        let e =
            parse("engine = \"postgresql\"\nhost = \"h\"\ncheckpoints = \"fast\"\n").unwrap_err();
        assert!(e.contains("unknown field `checkpoints`"), "{e}");
        let e = parse("engine = \"oracle\"\nhost = \"h\"\n").unwrap_err();
        assert!(e.contains("oracle"), "{e}");
    }
}
