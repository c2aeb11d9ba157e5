//! The agent's config file.
//!
//! ```toml
//! version = 1
//! controller = "https://backup1.example:7420"   # or a list: controllers sharing a catalog
//! spool-dir = "/var/tmp"              # only for pg_restore --jobs, which needs a seekable file
//! wal-prefetch = 8                    # wal-fetch fetches this many segments ahead
//! wal-retry-for = "30s"               # wal-push/wal-fetch retry an unreachable controller this long
//! status-interval = "15s"             # how often archiver status is reported
//!
//! [tls]
//! ca = "/etc/tidemark/pki/ca.crt"
//! cert = "/etc/tidemark/pki/agent-db1.crt"   # its common name agent:db1 names this host
//! key = "/etc/tidemark/pki/agent-db1.key"
//!
//! [[instance]]
//! name = "orders-pg"                  # fleet-unique
//! engine = "postgresql"
//! host = "/var/run/postgresql"        # libpq host: socket directory or address
//! port = 5432
//! user = "postgres"
//! passfile = "/etc/tidemark/pgpass"   # optional, a libpq password file
//! bin-dir = "/usr/lib/postgresql/15/bin"
//! databases = ["orders"]              # optional; default: every database that allows connections
//! os-user = "postgres"                # owns restored data directories (when the agent is root)
//! # PostgreSQL only:
//! long-transaction-warning = "1h"
//! lock-wait-timeout = "10m"          # optional: fail instead of waiting longer for a table lock
//! wal-wait-timeout = "5m"             # a base backup fails if its WAL is not archived by then
//! checkpoint = "fast"                 # pg_basebackup --checkpoint: fast or spread
//!
//! [[instance]]
//! name = "shop-db"
//! engine = "mariadb"                  # MariaDB, or MySQL (its mysqldump/xtrabackup are used)
//! host = "/run/mysqld/mysqld.sock"    # a socket file, or a host name (then port, default 3306)
//! user = "tidemark"                   # default root
//! passfile = "/etc/tidemark/my.cnf"   # optional: an option file with [client] password=...
//! os-user = "mysql"                   # owns restored data directories
//! # MariaDB only:
//! archive-timeout = "30s"             # rotate the binlog when its oldest unarchived event is this old
//! ```
//!
//! A key marked for one engine is refused on an instance of the other (`instance.rs`).
//!
//! A sandbox host (certificate `sandbox:NAME`) has no instances; it runs drills:
//!
//! ```toml
//! [sandbox]
//! dir = "/var/lib/tidemark/sandbox"   # wiped before and after every drill
//! os-user = "postgres"
//! bin-dirs = ["/usr/lib/postgresql/15/bin"]   # default: /usr/lib/postgresql/*/bin
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tidemark_core::config::{self, ConfigError, TlsFiles};

mod instance;

pub use instance::{Checkpoint, EngineKind, InstanceConfig, MariadbSettings, PgSettings};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AgentConfig {
    #[allow(dead_code)]
    pub version: u32,
    /// One controller, or several that share a catalog, tried in order: the daemon moves to
    /// the next when one cannot be reached, and wal-push/wal-fetch use the first that answers.
    #[serde(deserialize_with = "one_or_more")]
    pub controller: Vec<String>,
    pub tls: TlsFiles,
    pub spool_dir: Option<PathBuf>,
    /// wal-fetch: how many segments after the requested one to fetch ahead (0: none).
    #[serde(default = "default_prefetch")]
    pub wal_prefetch: u32,
    /// wal-fetch: how long to keep retrying when the controller is unreachable before
    /// giving up (and aborting recovery rather than ending it). wal-push uses at most 5 s
    /// of it: PostgreSQL retries archive_command itself.
    #[serde(
        default = "default_wal_retry",
        with = "tidemark_core::duration::serde_text"
    )]
    pub wal_retry_for: Duration,
    /// How often the daemon reports archiver status.
    #[serde(
        default = "default_status_interval",
        with = "tidemark_core::duration::serde_text"
    )]
    pub status_interval: Duration,
    #[serde(default, rename = "instance")]
    pub instances: Vec<InstanceConfig>,
    /// Set on a sandbox host: where drills restore.
    pub sandbox: Option<SandboxConfig>,
    /// Where this config was read from (wal-fetch hands it to its prefetcher).
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SandboxConfig {
    /// Drills restore here. Everything in it is removed before and after each drill, so
    /// the agent marks it as its own and refuses a directory that holds anything else.
    pub dir: PathBuf,
    /// The OS user that owns the restored files and runs the sandbox server.
    #[serde(default = "default_os_user")]
    pub os_user: String,
    /// PostgreSQL server binaries, one directory per major version; empty: every
    /// /usr/lib/postgresql/*/bin.
    #[serde(default)]
    pub bin_dirs: Vec<PathBuf>,
    /// Where mariadbd is, for MariaDB drills (mariabackup, mbstream, mariadb-binlog and
    /// the client are taken from the PATH). Default: /usr/sbin.
    pub mariadb_bin_dir: Option<PathBuf>,
}

fn default_prefetch() -> u32 {
    8
}
fn default_wal_retry() -> Duration {
    Duration::from_secs(30)
}
fn default_status_interval() -> Duration {
    Duration::from_secs(15)
}
fn default_os_user() -> String {
    "postgres".into()
}

/// `controller = "URL"` or `controller = ["URL", ...]`.
fn one_or_more<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMore {
        One(String),
        More(Vec<String>),
    }
    Ok(match OneOrMore::deserialize(d)? {
        OneOrMore::One(s) => vec![s],
        OneOrMore::More(v) => v,
    })
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut c: AgentConfig = config::load(path)?;
        c.path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let base = config::base_dir(path);
        c.tls = c.tls.resolved(&base);
        c.spool_dir = c.spool_dir.map(|p| config::resolve(&base, &p));
        let invalid = |message: String| ConfigError::Invalid {
            path: path.into(),
            message,
        };
        if c.controller.is_empty() {
            return Err(invalid(
                "controller = [] names no controller; give one https://HOST:PORT or several".into(),
            ));
        }
        if let Some(sb) = &mut c.sandbox {
            sb.dir = config::resolve(&base, &sb.dir);
            sb.mariadb_bin_dir = sb
                .mariadb_bin_dir
                .as_ref()
                .map(|d| config::resolve(&base, d));
            sb.bin_dirs = sb
                .bin_dirs
                .iter()
                .map(|d| config::resolve(&base, d))
                .collect();
            if !c.instances.is_empty() {
                return Err(invalid(
                    "a [sandbox] host runs drills only and may not list [[instance]]s; use separate agent and sandbox hosts".into(),
                ));
            }
            if sb.dir.parent().is_none() {
                return Err(invalid(format!(
                    "[sandbox] dir {} is the root directory; give it a directory of its own",
                    sb.dir.display()
                )));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for i in &mut c.instances {
            if !seen.insert(i.name.clone()) {
                return Err(invalid(format!("instance {:?} is listed twice", i.name)));
            }
            let ok = !i.name.is_empty()
                && i.name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch));
            if !ok {
                return Err(invalid(format!(
                    "instance name {:?} may hold only letters, digits, '-', '_' and '.'",
                    i.name
                )));
            }
            if let Some(m) = i.mariadb()
                && m.archive_timeout < Duration::from_secs(1)
            {
                return Err(invalid(format!(
                    "instance {:?}: archive-timeout must be at least 1s",
                    i.name
                )));
            }
            i.passfile = i.passfile.as_ref().map(|p| config::resolve(&base, p));
            i.bin_dir = i.bin_dir.as_ref().map(|p| config::resolve(&base, p));
            if let Some(pf) = &i.passfile {
                config::check_secret_file("password file", pf)?;
            }
        }
        Ok(c)
    }

    pub fn instance(&self, name: &str) -> Option<&InstanceConfig> {
        self.instances.iter().find(|i| i.name == name)
    }

    /// The instance whose tools and OS user a physical restore of `kind` onto this host
    /// uses: instance `name` when this host runs it, else any instance of the engine, else
    /// the engine's defaults (this host runs none: a restore target).
    pub fn restore_tools(&self, name: &str, kind: EngineKind) -> InstanceConfig {
        self.instance(name)
            .filter(|i| i.kind() == kind)
            .or_else(|| self.instances.iter().find(|i| i.kind() == kind))
            .cloned()
            .unwrap_or_else(|| InstanceConfig::fallback(kind, name))
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.spool_dir.clone().unwrap_or_else(std::env::temp_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_in_deploy_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/agent.example.toml");
        let c = AgentConfig::load(&path).unwrap();
        let i = &c.instances[0];
        assert_eq!(i.kind(), EngineKind::Postgresql);
        let pg = i.postgresql().unwrap();
        assert_eq!(pg.long_transaction_warning, Duration::from_secs(3600));
        assert_eq!(pg.lock_wait_timeout, Some(Duration::from_secs(600)));
        assert_eq!(i.databases.as_deref(), Some(&["orders".to_string()][..]));
        assert_eq!(pg.wal_wait_timeout, Duration::from_secs(300));
        assert_eq!(pg.checkpoint, Checkpoint::Fast);
        assert_eq!(c.wal_prefetch, 8);
        let m = &c.instances[1];
        assert_eq!(m.kind(), EngineKind::Mariadb);
        assert_eq!((m.port, m.os_user.as_str()), (3306, "mysql"));
        assert_eq!(
            m.mariadb().unwrap().archive_timeout,
            Duration::from_secs(30)
        );
        assert_eq!(c.wal_retry_for, Duration::from_secs(30));
    }

    #[test]
    fn sandbox_example_in_deploy_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/sandbox.example.toml");
        let c = AgentConfig::load(&path).unwrap();
        let sb = c.sandbox.unwrap();
        assert_eq!(sb.dir, Path::new("/var/lib/tidemark/sandbox"));
        assert_eq!(sb.os_user, "postgres");
        assert_eq!(sb.mariadb_bin_dir.as_deref(), Some(Path::new("/usr/sbin")));
        assert!(c.instances.is_empty());
    }

    #[test]
    fn one_controller_or_several() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.toml");
        let load = |controller: &str| {
            std::fs::write(
                &p,
                format!("version = 1\ncontroller = {controller}\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n"),
            )
            .unwrap();
            AgentConfig::load(&p).map_err(|e| e.to_string())
        };
        assert_eq!(
            load("\"https://a:1\"").unwrap().controller,
            vec!["https://a:1"]
        );
        assert_eq!(
            load("[\"https://a:1\", \"https://b:1\"]")
                .unwrap()
                .controller,
            vec!["https://a:1", "https://b:1"]
        );
        let e = load("[]").unwrap_err();
        assert!(e.contains("names no controller"), "{e}");
        assert!(load("7").is_err());
    }

    #[test]
    fn a_sandbox_with_instances_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.toml");
        std::fs::write(&p, "version = 1\ncontroller = \"https://c:1\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n[sandbox]\ndir = \"/srv/sb\"\n[[instance]]\nname = \"x\"\nengine = \"postgresql\"\nhost = \"/tmp\"\n").unwrap();
        let e = AgentConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("runs drills only"), "{e}");
    }

    #[test]
    fn duplicate_and_badly_named_instances_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.toml");
        let head = "version = 1\ncontroller = \"https://c:1\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n";
        std::fs::write(&p, format!("{head}[[instance]]\nname = \"x\"\nengine = \"postgresql\"\nhost = \"/tmp\"\n[[instance]]\nname = \"x\"\nengine = \"postgresql\"\nhost = \"/tmp\"\n")).unwrap();
        assert!(
            AgentConfig::load(&p)
                .unwrap_err()
                .to_string()
                .contains("listed twice")
        );
        std::fs::write(
            &p,
            format!(
                "{head}[[instance]]\nname = \"a b\"\nengine = \"postgresql\"\nhost = \"/tmp\"\n"
            ),
        )
        .unwrap();
        assert!(
            AgentConfig::load(&p)
                .unwrap_err()
                .to_string()
                .contains("may hold only")
        );
        std::fs::write(
            &p,
            format!("{head}[[instance]]\nname = \"x\"\nengine = \"oracle\"\nhost = \"/tmp\"\n"),
        )
        .unwrap();
        assert!(
            AgentConfig::load(&p)
                .unwrap_err()
                .to_string()
                .contains("oracle")
        );
    }
}
