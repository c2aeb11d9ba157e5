//! PostgreSQL: the [`Engine`] for PostgreSQL instances, connection settings shared by
//! every tool run, and small catalog queries through psql (the agent links no database
//! driver).
//!
//! Backups: `logical` (pg_dumpall globals, then pg_dump per database) and `base`
//! (pg_basebackup through named pipes, `fifo` and `tar`). Restores: `restore` (pg_restore
//! into a database) and `physical` (a base backup, then recovery from archived WAL). Drills:
//! `drill`. The WAL archive is not a daemon task: PostgreSQL runs `tidemark-agent
//! wal-push` as its archive_command and `wal-fetch` as its restore_command (`wal`).

pub mod base;
pub mod drill;
mod fifo;
pub mod logical;
mod manifest;
pub mod physical;
pub mod restore;
pub mod tar;
pub mod wal;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tidemark_proto::agent_service_client::AgentServiceClient;
use tidemark_proto::{ArchiverStatus, DrillJob, InstanceInfo, PhysicalRestore, RestoreJob};
use tonic::transport::Channel;

use super::{ArchiverStatuses, BackupKind, Description, Engine, SessionTask};
use crate::config::{EngineKind, InstanceConfig, PgSettings, SandboxConfig};
use crate::error::AgentError;
use crate::job::{JobContext, JobResult};
use crate::tool::{self, ToolError};

/// The PostgreSQL engine.
pub struct PostgresEngine;

#[async_trait]
impl Engine for PostgresEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Postgresql
    }

    async fn describe(&self, inst: &InstanceConfig) -> Description {
        let pg = Pg::new(inst.clone());
        let tools =
            super::common::tool_versions(&["pg_dump", "pg_restore", "pg_basebackup"], |t| {
                pg.tool_version(t)
            })
            .await;
        let (server_version, databases, error) =
            match (pg.server_version().await, pg.databases().await) {
                (Ok(v), Ok(d)) => (v, d, String::new()),
                (Err(e), _) | (_, Err(e)) => (String::new(), Vec::new(), e.to_string()),
            };
        let (data_directory, wal_segment_size) = pg.storage().await.unwrap_or_default();
        let instance = InstanceInfo {
            name: inst.name.clone(),
            engine: EngineKind::Postgresql.as_str().into(),
            server_version,
            system_identifier: pg.system_identifier().await,
            databases,
            error,
            data_directory,
            wal_segment_size,
            log_bin_basename: String::new(),
        };
        Description { tools, instance }
    }

    async fn backup(&self, ctx: &JobContext, inst: &InstanceConfig, kind: BackupKind) -> JobResult {
        let pg = Pg::new(inst.clone());
        match kind {
            BackupKind::Logical => logical::run(ctx, &pg).await,
            BackupKind::Base => base::run(ctx, &pg).await,
        }
    }

    async fn restore_logical(
        &self,
        ctx: &JobContext,
        inst: &InstanceConfig,
        job: &RestoreJob,
    ) -> JobResult {
        restore::run(ctx, &Pg::new(inst.clone()), job).await
    }

    async fn restore_physical(
        &self,
        ctx: &JobContext,
        inst: &InstanceConfig,
        job: &PhysicalRestore,
    ) -> JobResult {
        physical::run(ctx, &ctx.config_path, inst, job).await
    }

    async fn drill(&self, ctx: &JobContext, sandbox: &SandboxConfig, job: &DrillJob) -> JobResult {
        drill::run(ctx, &ctx.config_path, sandbox, job).await
    }

    /// None: PostgreSQL pushes its WAL itself, through archive_command.
    fn log_archiver(
        &self,
        _: AgentServiceClient<Channel>,
        _: &InstanceConfig,
        _: ArchiverStatuses,
    ) -> Option<SessionTask> {
        None
    }

    /// From the server: pg_stat_archiver and the segments waiting to be archived.
    async fn archiver_status(&self, inst: &InstanceConfig, _: &ArchiverStatuses) -> ArchiverStatus {
        Pg::new(inst.clone()).archiver_status().await
    }

    async fn probe(
        &self,
        inst: &InstanceConfig,
        database: &str,
        sql: &str,
    ) -> Result<String, AgentError> {
        Ok(Pg::new(inst.clone()).query(database, sql).await?)
    }

    fn sandbox_versions(&self, sandbox: &SandboxConfig) -> Vec<u32> {
        drill::sandbox_binaries(sandbox).into_keys().collect()
    }

    async fn stop_sandbox_server(&self, sandbox: &SandboxConfig) {
        let data = crate::sandbox::data_dir(&sandbox.dir);
        if data.join("postmaster.pid").exists() {
            drill::stop_sandbox_server(sandbox, &data).await;
        }
    }
}

/// One configured PostgreSQL instance and how to reach it.
#[derive(Clone)]
pub struct Pg {
    pub cfg: InstanceConfig,
    /// PostgreSQL's own settings (defaults for an instance configured for another engine,
    /// whose tools a restore may borrow).
    pub settings: PgSettings,
}

/// A libpq connection string naming only a database: safe for any database name, where a
/// bare `-d NAME` would be parsed as a connection string if it held `=`.
pub fn dbname_conninfo(db: &str) -> String {
    format!("dbname='{}'", db.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `"name"` as an SQL identifier.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `'text'` as an SQL literal (standard_conforming_strings is on since 9.1).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Pg {
    pub fn new(cfg: InstanceConfig) -> Self {
        let settings = cfg.postgresql().cloned().unwrap_or_default();
        Self { cfg, settings }
    }

    pub fn program(&self, name: &str) -> PathBuf {
        match &self.cfg.bin_dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }

    /// A command for one of the PostgreSQL client tools, with the connection in its
    /// environment (never in argv, where passwords would show in ps).
    pub fn command(&self, tool: &str) -> std::process::Command {
        let mut c = std::process::Command::new(self.program(tool));
        for var in [
            "PGDATABASE",
            "PGSERVICE",
            "PGSERVICEFILE",
            "PGOPTIONS",
            "PGPASSWORD",
        ] {
            c.env_remove(var);
        }
        c.env("PGHOST", &self.cfg.host)
            .env("PGPORT", self.cfg.port.to_string())
            .env("PGUSER", &self.cfg.user)
            .env("PGAPPNAME", "tidemark-agent")
            .env("PGCONNECT_TIMEOUT", "10");
        if let Some(pf) = &self.cfg.passfile {
            c.env("PGPASSFILE", pf);
        }
        c
    }

    /// Run one SQL statement in `db` and return its unaligned, tuples-only output.
    pub async fn query(&self, db: &str, sql: &str) -> Result<String, ToolError> {
        let mut cmd = self.command("psql");
        cmd.args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-w",
            "-v",
            "ON_ERROR_STOP=1",
            "-F",
            "\t",
            "-d",
        ])
        .arg(dbname_conninfo(db))
        .arg("-c")
        .arg(sql);
        tool::stdout_within(cmd, "psql", Duration::from_secs(60)).await
    }

    pub async fn server_version(&self) -> Result<String, ToolError> {
        self.query("postgres", "SHOW server_version").await
    }

    /// The cluster's system identifier; needs superuser or pg_monitor-like rights, so a
    /// failure to read it is not fatal.
    pub async fn system_identifier(&self) -> String {
        self.query(
            "postgres",
            "SELECT system_identifier FROM pg_control_system()",
        )
        .await
        .unwrap_or_default()
    }

    /// The data directory (resolved through symlinks, as archive_command's working
    /// directory will be) and the WAL segment size in bytes.
    pub async fn storage(&self) -> Result<(String, u64), ToolError> {
        let out = self
            .query(
                "postgres",
                "SELECT current_setting('data_directory'), setting FROM pg_settings WHERE name = 'wal_segment_size'",
            )
            .await?;
        let (dir, size) = out.split_once('\t').unwrap_or((&out, ""));
        let dir = std::fs::canonicalize(dir)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| dir.to_string());
        Ok((dir, size.trim().parse().unwrap_or(0)))
    }

    /// pg_stat_archiver and the count of segments waiting in archive_status.
    pub async fn archiver_status(&self) -> tidemark_proto::ArchiverStatus {
        let sql = "SELECT COALESCE(extract(epoch FROM last_archived_time)::bigint, 0), COALESCE(last_archived_wal, ''),
              failed_count, COALESCE(extract(epoch FROM last_failed_time)::bigint, 0), COALESCE(last_failed_wal, ''),
              (SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready')
            FROM pg_stat_archiver";
        let mut s = tidemark_proto::ArchiverStatus {
            instance: self.cfg.name.clone(),
            archive_timeout_secs: -1,
            ..Default::default()
        };
        match self.query("postgres", sql).await {
            Ok(out) => {
                let f: Vec<&str> = out.split('\t').collect();
                if f.len() == 6 {
                    s.last_archived_at = f[0].parse().unwrap_or(0);
                    s.last_archived_wal = f[1].into();
                    s.failed_count = f[2].parse().unwrap_or(0);
                    s.last_failed_at = f[3].parse().unwrap_or(0);
                    s.last_failed_wal = f[4].into();
                    s.ready = f[5].parse().unwrap_or(0);
                } else {
                    s.error = format!("unexpected pg_stat_archiver output {out:?}");
                }
            }
            Err(e) => s.error = e.to_string(),
        }
        if s.error.is_empty() {
            s.system_identifier = self.system_identifier().await;
            if let Ok((dir, size)) = self.storage().await {
                s.data_directory = dir;
                s.wal_segment_size = size;
            }
            // In seconds whatever the unit it was set in.
            if let Ok(t) = self
                .query(
                    "postgres",
                    "SELECT setting FROM pg_settings WHERE name = 'archive_timeout'",
                )
                .await
            {
                s.archive_timeout_secs = t.trim().parse().unwrap_or(-1);
            }
        }
        s
    }

    /// Tablespaces other than pg_default and pg_global: OID -> location.
    pub async fn tablespaces(
        &self,
    ) -> Result<std::collections::BTreeMap<String, String>, ToolError> {
        let out = self
            .query(
                "postgres",
                "SELECT oid, pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY oid",
            )
            .await?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(o, l)| (o.to_string(), l.to_string()))
            .collect())
    }

    /// The databases a logical backup dumps: the configured list, or every database that
    /// allows connections (templates excluded).
    pub async fn databases(&self) -> Result<Vec<String>, ToolError> {
        if let Some(list) = &self.cfg.databases {
            return Ok(list.clone());
        }
        let out = self
            .query("postgres", "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname")
            .await?;
        Ok(out
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// `pg_dump (PostgreSQL) 15.18`.
    pub async fn tool_version(&self, tool: &str) -> Result<String, ToolError> {
        let mut cmd = self.command(tool);
        cmd.arg("--version").stdin(Stdio::null());
        let program = self.program(tool).display().to_string();
        let out = tokio::process::Command::from(cmd)
            .output()
            .await
            .map_err(|source| ToolError::Spawn { program, source })?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_hostile_names() {
        assert_eq!(dbname_conninfo("a'b\\c=d"), "dbname='a\\'b\\\\c=d'");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
