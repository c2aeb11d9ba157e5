//! `tidemark agents`: who is in the fleet, connected or not, and their instances.

use std::path::Path;

use serde_json::json;
use tidemark_core::timefmt;
use tidemark_proto::ListAgentsRequest;

use crate::client::{self, CliError, Exit};
use crate::output::{Format, print_json, print_table};

pub async fn run(config: Option<&Path>, format: Format) -> Result<Exit, CliError> {
    let mut c = client::connect(config).await?;
    let agents = c
        .list_agents(ListAgentsRequest {})
        .await?
        .into_inner()
        .agents;
    if format == Format::Json {
        let v: Vec<_> = agents
            .iter()
            .map(|a| {
                json!({
                    "name": a.name, "role": a.role, "connected": a.connected, "last_seen": a.last_seen,
                    "sandbox_engines": a.sandbox_engines.iter().map(|e| json!({"engine": e.engine, "major": e.major})).collect::<Vec<_>>(),
                    "agent_version": a.agent_version,
                    "tools": a.tools.iter().map(|t| json!({"name": t.name, "version": t.version})).collect::<Vec<_>>(),
                    "instances": a.instances.iter().map(|i| json!({
                        "name": i.name, "engine": i.engine, "server_version": i.server_version,
                        "system_identifier": i.system_identifier, "databases": i.databases, "error": i.error,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        print_json(&v);
        return Ok(Exit::Ok);
    }
    let mut rows = Vec::new();
    for a in &agents {
        let status = if a.connected {
            "connected"
        } else {
            "disconnected"
        }
        .to_string();
        let first = |rows: &mut Vec<Vec<String>>, inst: Vec<String>| {
            let mut row = vec![a.name.clone(), status.clone(), timefmt::utc(a.last_seen)];
            row.extend(inst);
            rows.push(row);
        };
        if a.role == "sandbox" {
            // One row per engine: "postgresql 15", "mariadb 10.11" (a series, major*100+minor).
            let engines: Vec<(String, String)> = a
                .sandbox_engines
                .iter()
                .map(|e| {
                    let v = if e.engine == "mariadb" {
                        format!("{}.{}", e.major / 100, e.major % 100)
                    } else {
                        e.major.to_string()
                    };
                    (e.engine.clone(), v)
                })
                .collect();
            let mut engines = engines.into_iter();
            let (e, v) = engines.next().unwrap_or(("-".into(), "-".into()));
            first(&mut rows, vec!["(sandbox)".into(), e, v, "-".into()]);
            for (e, v) in engines {
                rows.push(vec![
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    e,
                    v,
                    "-".into(),
                ]);
            }
        } else if a.instances.is_empty() {
            first(
                &mut rows,
                vec!["-".into(), "-".into(), "-".into(), "-".into()],
            );
        }
        for i in &a.instances {
            let state = if i.error.is_empty() {
                i.databases.join(",")
            } else {
                format!("error: {}", i.error)
            };
            first(
                &mut rows,
                vec![
                    i.name.clone(),
                    i.engine.clone(),
                    i.server_version.clone(),
                    state,
                ],
            );
        }
    }
    print_table(
        &[
            "AGENT",
            "STATUS",
            "LAST SEEN",
            "INSTANCE",
            "ENGINE",
            "VERSION",
            "DATABASES",
        ],
        &rows,
    );
    Ok(Exit::Ok)
}
