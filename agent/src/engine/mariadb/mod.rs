//! MariaDB (and MySQL): the [`Engine`] for MariaDB instances, how the agent reaches a
//! server, and the small queries it needs, through the `mariadb` command-line client (the
//! agent links no database driver).
//!
//! Backups: `logical` (one mariadb-dump of every database) and `base` (mariabackup's
//! xbstream, checked by `xbstream`). Restores: `restore` (one database of a dump) and
//! `pitr` (a backup, then the archived binlogs replayed). Drills: `drill`. The daemon runs
//! the binlog archiver (`binlog`) for each instance.
//!
//! Every tool gets `--no-defaults` first, so nothing in /etc/mysql changes what it does, or
//! `--defaults-file=PASSFILE` when a password file is configured: an option file with a
//! `[client]` section, so the password is in neither argv nor the environment.

pub mod binlog;
pub mod drill;
pub mod logical;
pub mod physical;
pub mod pitr;
pub mod replay;
pub mod restore;
pub mod server;
mod xbstream;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tidemark_proto::agent_service_client::AgentServiceClient;
use tidemark_proto::{ArchiverStatus, DrillJob, InstanceInfo, PhysicalRestore, RestoreJob};
use tonic::transport::Channel;

use super::{ArchiverStatuses, BackupKind, Description, Engine, SessionTask};
use crate::config::{EngineKind, InstanceConfig, MariadbSettings, SandboxConfig};
use crate::error::AgentError;
use crate::job::{JobContext, JobResult};
use crate::tool::{self, ToolError};

/// The MariaDB engine (MySQL servers too: its tools are picked by the server's version).
pub struct MariadbEngine;

#[async_trait]
impl Engine for MariadbEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Mariadb
    }

    async fn describe(&self, inst: &InstanceConfig) -> Description {
        let db = Maria::new(inst.clone());
        let tools = super::common::tool_versions(
            &["mariadb-dump", "mariabackup", "mbstream", "mariadb-binlog"],
            |t| db.tool_version(t),
        )
        .await;
        let (facts, databases, error) = match (db.facts().await, db.databases().await) {
            (Ok(f), Ok(d)) => (f, d, String::new()),
            (Err(e), _) | (_, Err(e)) => (Default::default(), Vec::new(), e.to_string()),
        };
        let instance = InstanceInfo {
            name: inst.name.clone(),
            engine: EngineKind::Mariadb.as_str().into(),
            server_version: facts.version,
            system_identifier: String::new(),
            databases,
            error,
            data_directory: facts.datadir,
            wal_segment_size: 0,
            log_bin_basename: facts.log_bin_basename,
        };
        Description { tools, instance }
    }

    async fn backup(&self, ctx: &JobContext, inst: &InstanceConfig, kind: BackupKind) -> JobResult {
        let db = Maria::new(inst.clone());
        match kind {
            BackupKind::Logical => logical::run(ctx, &db).await,
            BackupKind::Base => physical::run(ctx, &db).await,
        }
    }

    async fn restore_logical(
        &self,
        ctx: &JobContext,
        inst: &InstanceConfig,
        job: &RestoreJob,
    ) -> JobResult {
        restore::run(ctx, &Maria::new(inst.clone()), job).await
    }

    async fn restore_physical(
        &self,
        ctx: &JobContext,
        inst: &InstanceConfig,
        job: &PhysicalRestore,
    ) -> JobResult {
        pitr::run(ctx, inst, job).await
    }

    async fn drill(&self, ctx: &JobContext, sandbox: &SandboxConfig, job: &DrillJob) -> JobResult {
        drill::run(ctx, sandbox, job).await
    }

    /// The binlog archiver: the server only writes its binlogs, the agent ships them.
    fn log_archiver(
        &self,
        client: AgentServiceClient<Channel>,
        inst: &InstanceConfig,
        statuses: ArchiverStatuses,
    ) -> Option<SessionTask> {
        Some(Box::pin(binlog::archive(
            client,
            Maria::new(inst.clone()),
            statuses,
        )))
    }

    /// What the binlog archiver last recorded.
    async fn archiver_status(
        &self,
        inst: &InstanceConfig,
        statuses: &ArchiverStatuses,
    ) -> ArchiverStatus {
        let known = statuses
            .lock()
            .expect("status lock")
            .get(&inst.name)
            .cloned();
        known.unwrap_or_else(|| ArchiverStatus {
            instance: inst.name.clone(),
            archive_timeout_secs: Maria::new(inst.clone()).settings.archive_timeout.as_secs()
                as i64,
            error: "the binlog archiver has not run yet".into(),
            ..Default::default()
        })
    }

    async fn probe(
        &self,
        inst: &InstanceConfig,
        database: &str,
        sql: &str,
    ) -> Result<String, AgentError> {
        Ok(Maria::new(inst.clone()).query(Some(database), sql).await?)
    }

    fn sandbox_versions(&self, sandbox: &SandboxConfig) -> Vec<u32> {
        drill::mariadb_series(sandbox)
            .map(|(series, _)| series)
            .into_iter()
            .collect()
    }

    async fn stop_sandbox_server(&self, sandbox: &SandboxConfig) {
        let data = crate::sandbox::data_dir(&sandbox.dir);
        crate::sandbox::kill_by_pid_file(&data.join(server::PID)).await;
    }
}

/// Schemas that belong to the server, never dumped as user data.
const SYSTEM_SCHEMAS: &[&str] = &["mysql", "information_schema", "performance_schema", "sys"];

/// One configured MariaDB (or MySQL) instance and how to reach it.
#[derive(Clone)]
pub struct Maria {
    pub cfg: InstanceConfig,
    /// MariaDB's own settings (defaults for a restore target with no MariaDB instance).
    pub settings: MariadbSettings,
}

/// What the server says about itself and its binary log.
#[derive(Debug, Clone, Default)]
pub struct ServerFacts {
    pub version: String,
    /// "" when binary logging is off.
    pub log_bin_basename: String,
    pub binlog_format: String,
    pub datadir: String,
}

impl ServerFacts {
    /// MySQL has its own tools and option names; MariaDB's version says so.
    pub fn is_mysql(&self) -> bool {
        !self.version.is_empty() && !self.version.contains("MariaDB")
    }

    /// What a DBA should know about the binary log before relying on it for recovery.
    pub fn binlog_warnings(&self) -> Vec<String> {
        if self.log_bin_basename.is_empty() {
            vec!["binary logging is off (log_bin): backups restore only to the moment they ended, with no point-in-time recovery after them".into()]
        } else if !self.binlog_format.eq_ignore_ascii_case("ROW") {
            vec![format!(
                "binlog_format is {}: replaying statements may not reproduce non-deterministic ones exactly during point-in-time recovery; ROW is safe",
                self.binlog_format
            )]
        } else {
            Vec::new()
        }
    }
}

/// `` `name` `` as an identifier.
pub fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// `'text'` as a string literal (backslashes escape in MariaDB's default sql_mode).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl Maria {
    pub fn new(cfg: InstanceConfig) -> Self {
        let settings = cfg.mariadb().cloned().unwrap_or_default();
        Self { cfg, settings }
    }

    pub fn program(&self, name: &str) -> PathBuf {
        match &self.cfg.bin_dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }

    /// The option-file argument, which must come first.
    pub fn defaults_arg(&self) -> String {
        match &self.cfg.passfile {
            Some(p) => format!("--defaults-file={}", p.display()),
            None => "--no-defaults".into(),
        }
    }

    /// A command for a client tool that connects to the server (mariadb, mariadb-dump,
    /// mariabackup, mariadb-admin).
    pub fn command(&self, tool: &str) -> std::process::Command {
        let mut c = std::process::Command::new(self.program(tool));
        c.env_remove("MYSQL_PWD")
            .env_remove("MYSQL_HOST")
            .env_remove("MYSQL_TCP_PORT")
            .env_remove("MYSQL_UNIX_PORT")
            .arg(self.defaults_arg());
        if self.cfg.host.starts_with('/') {
            c.arg(format!("--socket={}", self.cfg.host));
        } else {
            c.arg(format!("--host={}", self.cfg.host))
                .arg(format!("--port={}", self.cfg.port));
        }
        c.arg(format!("--user={}", self.cfg.user));
        c
    }

    /// Run SQL and return its tab-separated output (no column names).
    pub async fn query(&self, db: Option<&str>, sql: &str) -> Result<String, ToolError> {
        let mut cmd = self.command("mariadb");
        cmd.args(["--batch", "--skip-column-names", "--connect-timeout=10"]);
        if let Some(db) = db {
            cmd.arg(format!("--database={db}"));
        }
        cmd.arg("--execute").arg(sql);
        tool::stdout_within(cmd, "mariadb", Duration::from_secs(60)).await
    }

    pub async fn facts(&self) -> Result<ServerFacts, ToolError> {
        let out = self
            .query(
                None,
                "SELECT @@version, IF(@@log_bin, @@log_bin_basename, ''), @@binlog_format, @@datadir",
            )
            .await?;
        let f: Vec<&str> = out.split('\t').collect();
        match f.as_slice() {
            [version, base, format, datadir] => Ok(ServerFacts {
                version: version.to_string(),
                log_bin_basename: base.to_string(),
                binlog_format: format.to_string(),
                datadir: datadir.to_string(),
            }),
            _ => Err(ToolError::Failed {
                tool: "mariadb".into(),
                status: "unexpected output".into(),
                stderr: out,
            }),
        }
    }

    /// The databases a logical backup dumps: the configured list, or every user schema.
    pub async fn databases(&self) -> Result<Vec<String>, ToolError> {
        if let Some(list) = &self.cfg.databases {
            return Ok(list.clone());
        }
        let out = self
            .query(
                None,
                "SELECT schema_name FROM information_schema.schemata ORDER BY schema_name",
            )
            .await?;
        Ok(out
            .lines()
            .filter(|l| !l.is_empty() && !SYSTEM_SCHEMAS.contains(l))
            .map(str::to_string)
            .collect())
    }

    /// The first line of `TOOL --version`.
    pub async fn tool_version(&self, tool: &str) -> Result<String, ToolError> {
        let program = self.program(tool);
        let out = tokio::process::Command::new(&program)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|source| ToolError::Spawn {
                program: program.display().to_string(),
                source,
            })?;
        // mariabackup prints its version on stderr.
        let text = if out.stdout.is_empty() {
            out.stderr
        } else {
            out.stdout
        };
        Ok(String::from_utf8_lossy(&text)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string())
    }

    /// Which dump and backup tools to run: MySQL's names differ from MariaDB's.
    pub fn dump_tool(facts: &ServerFacts) -> &'static str {
        if facts.is_mysql() {
            "mysqldump"
        } else {
            "mariadb-dump"
        }
    }

    pub fn backup_tool(facts: &ServerFacts) -> &'static str {
        if facts.is_mysql() {
            "xtrabackup"
        } else {
            "mariabackup"
        }
    }
}

/// `5.7.44` or `8.0.36-28` -> (major, minor, patch).
pub fn version_triple(v: &str) -> (u32, u32, u32) {
    let mut it = v
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(0));
    (
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
        it.next().unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_hostile_names() {
        assert_eq!(quote_ident("we`ird"), "`we``ird`");
        assert_eq!(quote_literal("it's \\"), "'it\\'s \\\\'");
    }

    #[test]
    fn mysql_is_told_apart_from_mariadb() {
        let maria = ServerFacts {
            version: "10.11.19-MariaDB-0+deb12u1-log".into(),
            ..Default::default()
        };
        let mysql = ServerFacts {
            version: "8.0.36".into(),
            ..Default::default()
        };
        assert!(!maria.is_mysql());
        assert!(mysql.is_mysql());
        assert_eq!(Maria::dump_tool(&mysql), "mysqldump");
        assert_eq!(Maria::backup_tool(&maria), "mariabackup");
        assert_eq!(version_triple("8.0.26-log"), (8, 0, 26));
        assert_eq!(version_triple("10.11.19-MariaDB"), (10, 11, 19));
    }
}
