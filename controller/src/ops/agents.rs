//! Agents and sandboxes as they connect: registration (their instances, each engine parsed
//! here), the job stream, and what they report (archiver status, production samples).

use tidemark_core::identity::{Identity, Role};
use tidemark_proto as pb;

use super::backups::own_instance;
use super::sessions::JobStream;
use super::{OpsError, OpsResult, State};
use crate::catalog::{ArchiverRow, Engine, InstanceFacts, InstanceRow, Registered, Registration};

/// The engines this controller can back up, for messages.
fn engine_names() -> String {
    Engine::ALL
        .iter()
        .map(|e| e.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Register `who` (an agent or a sandbox) with what it says of itself.
pub async fn register(
    state: &State,
    who: &Identity,
    r: pb::RegisterRequest,
) -> OpsResult<pb::RegisterResponse> {
    let agent = who.name.clone();
    if r.host != agent {
        return Err(OpsError::PermissionDenied(format!(
            "the certificate is for {who} but the agent says its host is {:?}; issue it a certificate for {}:{}",
            r.host,
            who.role.as_str(),
            r.host
        )));
    }
    let sandbox = who.role == Role::Sandbox;
    if sandbox && !r.instances.is_empty() {
        return Err(OpsError::InvalidArgument(format!(
            "{who} is a sandbox: it runs drills and may not register instances (remove the [[instance]] sections from its config, or give the host an agent certificate)"
        )));
    }
    if !sandbox && !r.sandbox_engines.is_empty() {
        return Err(OpsError::InvalidArgument(format!(
            "{who} offers sandbox engines, but only a host with a sandbox certificate runs drills"
        )));
    }
    let mut instances = Vec::new();
    for i in &r.instances {
        let Some(engine) = Engine::from_name(&i.engine) else {
            return Err(OpsError::InvalidArgument(format!(
                "instance {} has engine {:?}; this controller supports {}",
                i.name,
                i.engine,
                engine_names()
            )));
        };
        instances.push(InstanceRow {
            name: i.name.clone(),
            agent: agent.clone(),
            engine,
            server_version: i.server_version.clone(),
            system_identifier: i.system_identifier.clone(),
            databases: i.databases.clone(),
            error: i.error.clone(),
            data_directory: i.data_directory.clone(),
            wal_segment_size: i.wal_segment_size,
            archive_timeout: 0,
            log_bin_basename: i.log_bin_basename.clone(),
        });
    }
    let tools: Vec<(String, String)> = r
        .tools
        .iter()
        .map(|t| (t.name.clone(), t.version.clone()))
        .collect();
    let reg = Registration {
            role: who.role.as_str().into(),
            agent_version: r.agent_version.clone(),
            tools,
            sandbox_engines: r
                .sandbox_engines
                .iter()
                .filter_map(|e| match Engine::from_name(&e.engine) {
                    Some(engine) => Some((engine, e.major)),
                    None => {
                        // A newer sandbox may offer more: it still runs what we know.
                        tracing::warn!(sandbox = %agent, engine = %e.engine, "sandbox offers an engine this controller does not know; ignored");
                        None
                    }
                })
                .collect(),
        };
    match state
        .repo
        .catalog
        .register_agent(&agent, &reg, &instances)
        .await?
    {
        Registered::Ok => {}
        Registered::InstancesTaken(taken) => {
            let (name, owner) = &taken[0];
            return Err(OpsError::PermissionDenied(format!(
                "instance {name} is already registered to agent {owner}; instance names are fleet-unique, so rename it in agent {agent}'s config"
            )));
        }
        Registered::NameTaken(role) => {
            return Err(OpsError::PermissionDenied(format!(
                "{agent} is already registered as a {role}; one host name cannot be both an agent and a sandbox"
            )));
        }
    }
    tracing::info!(identity = %who, instances = instances.len(), "registered");
    let names: Vec<String> = instances.iter().map(|i| i.name.clone()).collect();
    publish_instances(state, &names).await;
    Ok(pb::RegisterResponse {
        identity: who.to_string(),
        session: state.sessions.new_session_id(),
        probes: state.drills.probes(&names),
        sample_interval_secs: state.drills.settings.sample_interval.as_secs().max(1) as u32,
    })
}

/// Describe instances in the store as the catalog now holds them (unchanged ones cost a
/// comparison), in the background: a slow store never holds a registration or a status
/// report up. A store that fails here is tried again at the next status report.
async fn publish_instances(state: &State, names: &[String]) {
    let (repo, names) = (state.repo.clone(), names.to_vec());
    tokio::spawn(async move {
        for name in names {
            let published = match repo.catalog.instance(&name).await {
                Ok(Some(inst)) => repo.publish_instance(&inst).await,
                Ok(None) => Ok(()),
                Err(e) => Err(e.into()),
            };
            if let Err(e) = published {
                tracing::warn!(instance = %name, error = %e, "could not describe the instance in the store; trying again at its next status report");
            }
        }
    });
}

/// Open `agent`'s job stream (session `session` of its registration).
pub async fn attach(state: &State, agent: &str, session: u64) -> OpsResult<JobStream> {
    if state.repo.catalog.agent(agent).await?.is_none() {
        return Err(OpsError::FailedPrecondition(format!(
            "agent {agent} must register before taking jobs"
        )));
    }
    state.repo.catalog.touch_agent(agent).await?;
    // Jobs sent down an earlier stream that the agent never started are lost with it.
    state
        .repo
        .catalog
        .fail_queued_jobs_of_agent(
            agent,
            "the agent reconnected before starting this job; run it again",
        )
        .await?;
    let stream = state
        .sessions
        .attach(agent, session, state.repo.catalog.clone());
    // Other controllers sharing the catalog leave this agent's jobs for this one.
    state.repo.catalog.hold_agent(agent, true).await?;
    Ok(stream)
}

/// An agent's archiver status for its instances: facts to the catalog, the rest buffered.
pub async fn report_status(
    state: &State,
    agent: &str,
    instances: Vec<pb::ArchiverStatus>,
) -> OpsResult<()> {
    for s in instances {
        own_instance(state, agent, &s.instance, "report on").await?;
        state
            .repo
            .catalog
            .refresh_instance(
                &s.instance,
                &InstanceFacts {
                    system_identifier: &s.system_identifier,
                    data_directory: &s.data_directory,
                    wal_segment_size: s.wal_segment_size,
                    archive_timeout: u64::try_from(s.archive_timeout_secs).ok(),
                    log_bin_basename: &s.log_bin_basename,
                },
            )
            .await?;
        publish_instances(state, std::slice::from_ref(&s.instance)).await;
        state.status.report(ArchiverRow {
            instance: s.instance,
            last_archived_at: s.last_archived_at,
            last_archived_wal: s.last_archived_wal,
            failed_count: s.failed_count,
            last_failed_at: s.last_failed_at,
            last_failed_wal: s.last_failed_wal,
            ready: s.ready,
            error: s.error,
            reported_at: crate::catalog::now(),
        });
    }
    Ok(())
}

/// Values of probe queries an agent sampled on its own instances.
pub async fn push_samples(state: &State, agent: &str, samples: Vec<pb::Sample>) -> OpsResult<()> {
    let mut rows = Vec::new();
    for s in samples {
        own_instance(state, agent, &s.instance, "push samples for").await?;
        rows.push((s.instance, s.name, s.taken_at, s.value));
    }
    state.repo.catalog.add_samples(&rows).await?;
    Ok(())
}
