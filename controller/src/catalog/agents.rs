//! Agents and the instances they own. An instance belongs to the first agent that registers
//! it; another agent claiming the same name is refused, so one host cannot write into another
//! host's backups by naming its instance.

use sqlx::Row;

use super::{Catalog, CatalogError, Db, DbRow, Engine, Result, now};

#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRow {
    pub name: String,
    pub agent: String,
    pub engine: Engine,
    pub server_version: String,
    pub system_identifier: String,
    pub databases: Vec<String>,
    pub error: String,
    pub data_directory: String,
    pub wal_segment_size: u64,
    /// The server's archive_timeout in seconds (0: off), as last reported: the longest
    /// a commit waits to reach the archive when the server is otherwise quiet.
    pub archive_timeout: u64,
    /// MariaDB: where the server writes its binlogs ("" when binary logging is off).
    pub log_bin_basename: String,
}

impl InstanceRow {
    /// The file name part of log_bin_basename: binlogs are named BASE.000001.
    pub fn binlog_base(&self) -> &str {
        self.log_bin_basename
            .rsplit('/')
            .next()
            .unwrap_or(&self.log_bin_basename)
    }
}

impl InstanceRow {
    /// The WAL segment size, or PostgreSQL's default while the instance has not said.
    pub fn segment_size(&self) -> u64 {
        if self.wal_segment_size > 0 {
            self.wal_segment_size
        } else {
            tidemark_core::wal::DEFAULT_SEGMENT_SIZE
        }
    }
}

/// Facts about an instance from a status report; empty ones change nothing.
pub struct InstanceFacts<'a> {
    pub system_identifier: &'a str,
    pub data_directory: &'a str,
    pub wal_segment_size: u64,
    pub archive_timeout: Option<u64>,
    pub log_bin_basename: &'a str,
}

#[derive(Debug, Clone)]
pub struct AgentRow {
    pub name: String,
    /// "agent" or "sandbox".
    pub role: String,
    /// A sandbox's engines and major versions.
    pub sandbox_engines: Vec<(Engine, u32)>,
    pub agent_version: String,
    pub tools: Vec<(String, String)>,
    pub last_seen: i64,
    pub instances: Vec<InstanceRow>,
}

fn json_err(e: serde_json::Error) -> CatalogError {
    CatalogError::Corrupt(e.to_string())
}

/// A sandbox's engines as stored: `[["postgresql", 15], ...]`.
fn sandbox_engines_json(engines: &[(Engine, u32)]) -> Result<String> {
    let named: Vec<(&str, u32)> = engines.iter().map(|(e, m)| (e.as_str(), *m)).collect();
    serde_json::to_string(&named).map_err(json_err)
}

/// An engine this controller does not know (a newer controller registered the sandbox in a
/// shared catalog) is left out: the sandbox still runs the engines it knows.
fn sandbox_engines_from(json: &str) -> Result<Vec<(Engine, u32)>> {
    let named: Vec<(String, u32)> = serde_json::from_str(json).map_err(json_err)?;
    Ok(named
        .into_iter()
        .filter_map(|(e, m)| Some((Engine::from_name(&e)?, m)))
        .collect())
}

fn instance_from_row(r: &DbRow) -> Result<InstanceRow> {
    Ok(InstanceRow {
        name: r.get("name"),
        agent: r.get("agent"),
        engine: Engine::parse(r.get("engine"))?,
        server_version: r.get("server_version"),
        system_identifier: r.get("system_identifier"),
        databases: serde_json::from_str(r.get::<&str, _>("databases")).map_err(json_err)?,
        error: r.get("error"),
        data_directory: r.get("data_directory"),
        wal_segment_size: r.get::<i64, _>("wal_segment_size") as u64,
        archive_timeout: r.get::<i64, _>("archive_timeout") as u64,
        log_bin_basename: r.get("log_bin_basename"),
    })
}

/// What a host registers as.
#[derive(Debug, Clone, Default)]
pub struct Registration {
    /// "agent" or "sandbox".
    pub role: String,
    pub agent_version: String,
    pub tools: Vec<(String, String)>,
    pub sandbox_engines: Vec<(Engine, u32)>,
}

#[derive(Debug, PartialEq)]
pub enum Registered {
    Ok,
    /// Nothing was written: these instances (name, owner) belong to another agent.
    InstancesTaken(Vec<(String, String)>),
    /// Nothing was written: the name is registered with this other role.
    NameTaken(String),
}

type Query<'q> = sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments>;

/// Bind a status report's facts as $1..$5 (system identifier, data directory, segment size,
/// archive timeout, binlog basename; empty ones mean "not reported") and the instance as $6.
fn bind_facts<'q>(q: Query<'q>, name: &'q str, f: &InstanceFacts<'q>) -> Query<'q> {
    q.bind(f.system_identifier)
        .bind(f.data_directory)
        .bind(f.wal_segment_size as i64)
        .bind(f.archive_timeout.map(|t| t as i64))
        .bind(f.log_bin_basename)
        .bind(name)
}

impl Catalog {
    /// Record an agent or sandbox and its instances. Nothing is written when an instance
    /// belongs to another agent or the name to another role.
    pub async fn register_agent(
        &self,
        name: &str,
        reg: &Registration,
        instances: &[InstanceRow],
    ) -> Result<Registered> {
        let mut tx = self.write_tx().await?;
        let role: Option<String> = sqlx::query("SELECT role FROM agents WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?
            .map(|r| r.get(0));
        if let Some(role) = role.filter(|r| *r != reg.role) {
            return Ok(Registered::NameTaken(role));
        }
        let mut conflicts = Vec::new();
        for inst in instances {
            let owner: Option<String> = sqlx::query("SELECT agent FROM instances WHERE name = $1")
                .bind(&inst.name)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.get(0));
            if let Some(owner) = owner.filter(|o| o != name) {
                conflicts.push((inst.name.clone(), owner));
            }
        }
        if !conflicts.is_empty() {
            return Ok(Registered::InstancesTaken(conflicts));
        }
        let t = now();
        let tools_json = serde_json::to_string(&reg.tools).map_err(json_err)?;
        sqlx::query(
            "INSERT INTO agents (name, agent_version, tools, registered_at, last_seen, role, sandbox_engines)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (name) DO UPDATE SET agent_version = excluded.agent_version,
               tools = excluded.tools, last_seen = excluded.last_seen,
               sandbox_engines = excluded.sandbox_engines",
        )
        .bind(name)
        .bind(&reg.agent_version)
        .bind(&tools_json)
        .bind(t)
        .bind(t)
        .bind(&reg.role)
        .bind(sandbox_engines_json(&reg.sandbox_engines)?)
        .execute(&mut *tx)
        .await?;
        for inst in instances {
            sqlx::query(
                "INSERT INTO instances (name, agent, engine, server_version, system_identifier, databases, error, updated_at,
                   data_directory, wal_segment_size, log_bin_basename)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (name) DO UPDATE SET engine = excluded.engine,
                   server_version = excluded.server_version, databases = excluded.databases,
                   error = excluded.error, updated_at = excluded.updated_at,
                   -- An instance unreachable at registration reports none of these: keep
                   -- what is known rather than refuse its WAL until it is reachable again.
                   system_identifier = CASE WHEN excluded.system_identifier = '' THEN instances.system_identifier ELSE excluded.system_identifier END,
                   data_directory = CASE WHEN excluded.data_directory = '' THEN instances.data_directory ELSE excluded.data_directory END,
                   wal_segment_size = CASE WHEN excluded.wal_segment_size = 0 THEN instances.wal_segment_size ELSE excluded.wal_segment_size END,
                   log_bin_basename = CASE WHEN excluded.log_bin_basename = '' THEN instances.log_bin_basename ELSE excluded.log_bin_basename END",
            )
            .bind(&inst.name)
            .bind(name)
            .bind(inst.engine.as_str())
            .bind(&inst.server_version)
            .bind(&inst.system_identifier)
            .bind(serde_json::to_string(&inst.databases).map_err(json_err)?)
            .bind(&inst.error)
            .bind(t)
            .bind(&inst.data_directory)
            .bind(inst.wal_segment_size as i64)
            .bind(&inst.log_bin_basename)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Registered::Ok)
    }

    /// Take newer facts about an instance from a status report; empty ones change nothing,
    /// and a report that changes nothing writes nothing.
    pub async fn refresh_instance(&self, name: &str, f: &InstanceFacts<'_>) -> Result<()> {
        // Almost every report changes nothing: find that out on a reader, not the writer.
        let changes = bind_facts(
            sqlx::query(
                "SELECT 1 FROM instances WHERE name = $6
                   AND (($1 <> '' AND system_identifier <> $1) OR ($2 <> '' AND data_directory <> $2)
                     OR ($3 <> 0 AND wal_segment_size <> $3) OR ($4 IS NOT NULL AND archive_timeout <> $4)
                     OR ($5 <> '' AND log_bin_basename <> $5))",
            ),
            name,
            f,
        )
        .fetch_optional(&self.pool)
        .await?
        .is_some();
        if !changes {
            return Ok(());
        }
        bind_facts(
            sqlx::query(
                "UPDATE instances SET
                   system_identifier = CASE WHEN $1 = '' THEN system_identifier ELSE $1 END,
                   data_directory = CASE WHEN $2 = '' THEN data_directory ELSE $2 END,
                   wal_segment_size = CASE WHEN $3 = 0 THEN wal_segment_size ELSE $3 END,
                   archive_timeout = COALESCE($4, archive_timeout),
                   log_bin_basename = CASE WHEN $5 = '' THEN log_bin_basename ELSE $5 END
                 WHERE name = $6",
            ),
            name,
            f,
        )
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// Note that an agent was seen. `last_seen` is good to a minute: a fresher one (the agent
    /// registered just before opening its job stream) is left alone, which costs no commit.
    pub async fn touch_agent(&self, name: &str) -> Result<()> {
        sqlx::query("UPDATE agents SET last_seen = $1 WHERE name = $2 AND last_seen < $1 - 60")
            .bind(now())
            .bind(name)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    pub async fn instance(&self, name: &str) -> Result<Option<InstanceRow>> {
        sqlx::query("SELECT * FROM instances WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(instance_from_row)
            .transpose()
    }

    /// The instances registered with this system identifier (a cluster and any copies of
    /// it registered under other names).
    pub async fn instances_of_cluster(&self, system_identifier: &str) -> Result<Vec<InstanceRow>> {
        sqlx::query("SELECT * FROM instances WHERE system_identifier = $1 AND system_identifier <> '' ORDER BY name")
            .bind(system_identifier)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(instance_from_row)
            .collect()
    }

    pub async fn agent(&self, name: &str) -> Result<Option<AgentRow>> {
        Ok(self.agents().await?.into_iter().find(|a| a.name == name))
    }

    pub async fn agents(&self) -> Result<Vec<AgentRow>> {
        let instances = sqlx::query("SELECT * FROM instances ORDER BY name")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(instance_from_row)
            .collect::<Result<Vec<_>>>()?;
        let rows = sqlx::query("SELECT * FROM agents ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let name: String = r.get("name");
                Ok(AgentRow {
                    role: r.get("role"),
                    sandbox_engines: sandbox_engines_from(r.get::<&str, _>("sandbox_engines"))?,
                    agent_version: r.get("agent_version"),
                    tools: serde_json::from_str(r.get::<&str, _>("tools")).map_err(json_err)?,
                    last_seen: r.get("last_seen"),
                    instances: instances
                        .iter()
                        .filter(|i| i.agent == name)
                        .cloned()
                        .collect(),
                    name,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::test_catalog;

    fn inst(name: &str) -> InstanceRow {
        InstanceRow {
            name: name.into(),
            agent: String::new(),
            engine: Engine::Postgresql,
            server_version: "15.18".into(),
            system_identifier: "123".into(),
            databases: vec!["app".into()],
            error: String::new(),
            data_directory: "/srv/pg".into(),
            wal_segment_size: 16 << 20,
            archive_timeout: 0,
            log_bin_basename: String::new(),
        }
    }

    #[tokio::test]
    async fn a_status_report_refreshes_only_the_facts_it_carries() {
        let (cat, _dir) = test_catalog().await;
        let reg = Registration {
            role: "agent".into(),
            ..Default::default()
        };
        cat.register_agent("db1", &reg, &[inst("orders")])
            .await
            .unwrap();
        let facts = |dir, timeout| InstanceFacts {
            system_identifier: "",
            data_directory: dir,
            wal_segment_size: 0,
            archive_timeout: timeout,
            log_bin_basename: "",
        };
        // Nothing reported, or the same: unchanged.
        cat.refresh_instance("orders", &facts("", None))
            .await
            .unwrap();
        cat.refresh_instance("orders", &facts("/srv/pg", Some(0)))
            .await
            .unwrap();
        assert_eq!(cat.instance("orders").await.unwrap().unwrap(), {
            let mut i = inst("orders");
            i.agent = "db1".into();
            i
        });
        // A new data directory (a restored clone took over) and archive_timeout.
        cat.refresh_instance("orders", &facts("/srv/pg2", Some(60)))
            .await
            .unwrap();
        let i = cat.instance("orders").await.unwrap().unwrap();
        assert_eq!(
            (
                i.data_directory.as_str(),
                i.archive_timeout,
                i.system_identifier.as_str()
            ),
            ("/srv/pg2", 60, "123")
        );
    }

    #[tokio::test]
    async fn an_instance_stays_with_the_agent_that_registered_it() {
        let (cat, _dir) = test_catalog().await;
        let reg = |version: &str| Registration {
            role: "agent".into(),
            agent_version: version.into(),
            ..Default::default()
        };
        let first = cat
            .register_agent("db1", &reg("0.1"), &[inst("orders")])
            .await
            .unwrap();
        assert_eq!(first, Registered::Ok);
        // Re-registering is fine; another agent claiming it is not, and writes nothing.
        assert_eq!(
            cat.register_agent("db1", &reg("0.2"), &[inst("orders")])
                .await
                .unwrap(),
            Registered::Ok
        );
        let conflicts = cat
            .register_agent("db2", &reg("0.1"), &[inst("shop"), inst("orders")])
            .await
            .unwrap();
        assert_eq!(
            conflicts,
            Registered::InstancesTaken(vec![("orders".to_string(), "db1".to_string())])
        );
        // A sandbox cannot take an agent's name.
        let sandbox = Registration {
            role: "sandbox".into(),
            sandbox_engines: vec![(Engine::Postgresql, 15)],
            ..reg("0.1")
        };
        assert_eq!(
            cat.register_agent("db1", &sandbox, &[]).await.unwrap(),
            Registered::NameTaken("agent".into())
        );
        assert_eq!(
            cat.register_agent("sb1", &sandbox, &[]).await.unwrap(),
            Registered::Ok
        );
        let sb = cat.agent("sb1").await.unwrap().unwrap();
        assert_eq!(sb.role, "sandbox");
        assert_eq!(sb.sandbox_engines, vec![(Engine::Postgresql, 15)]);
        assert_eq!(
            sandbox_engines_from(r#"[["postgresql",15],["oracle",23]]"#).unwrap(),
            vec![(Engine::Postgresql, 15)]
        );
        assert!(cat.instance("shop").await.unwrap().is_none());
        assert!(cat.agent("db2").await.unwrap().is_none());
        let a = cat.agent("db1").await.unwrap().unwrap();
        assert_eq!(a.agent_version, "0.2");
        assert_eq!(a.instances[0].databases, vec!["app".to_string()]);
        assert_eq!(cat.instance("orders").await.unwrap().unwrap().agent, "db1");
    }
}
