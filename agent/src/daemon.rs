//! The agent's life: dial the controller, register, keep the job stream open and run the
//! jobs that arrive; on any disconnection, reconnect with capped exponential backoff.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tidemark_core::tls::TlsMaterial;
use tidemark_proto::agent_service_client::AgentServiceClient;
use tidemark_proto::{
    InstanceInfo, JobReport, JobState, JobsRequest, RegisterRequest, SandboxEngine, StatusReport,
    ToolVersion, job,
};
use tonic::transport::Channel;

use crate::config::AgentConfig;
use crate::engine::{self, ArchiverStatuses, BackupKind};
use crate::error::{AgentError, Kind};
use crate::job::{JobContext, JobResult};
use crate::progress::Progress;

const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub async fn run(config: Arc<AgentConfig>, tls: TlsMaterial) -> anyhow::Result<()> {
    let endpoints = config
        .controller
        .iter()
        .map(|address| Ok((address.as_str(), tls.endpoint(address, None)?)))
        .collect::<Result<Vec<_>, tidemark_core::tls::TlsError>>()?;
    let name = tls.identity.name.clone();
    if let Some(sb) = &config.sandbox {
        // A drill interrupted by a crash or restart leaves its server and files behind.
        crate::engine::wipe_sandbox(sb)
            .await
            .map_err(|e| anyhow::anyhow!("sandbox: {e}"))?;
    }
    let mut backoff = Duration::from_secs(1);
    // Which controller to dial: the same one again after a clean close, the next one (of
    // several sharing a catalog) after it could not be reached.
    let mut at = 0;
    let mut unreachable_in_a_row = 0;
    loop {
        let (address, endpoint) = &endpoints[at];
        match session(&config, endpoint, &name, address).await {
            Ok(()) => {
                tracing::warn!(controller = %address, "job stream closed by the controller; reconnecting");
                backoff = Duration::from_secs(1);
                unreachable_in_a_row = 0;
            }
            Err(e) if e.kind() == Kind::Refused => {
                // A refused registration is a configuration problem; retrying slowly lets
                // an operator fix the fleet side without restarting the agent.
                tracing::error!(controller = %address, "registration refused: {e}");
                backoff = MAX_BACKOFF;
            }
            // Anything else: the transport, or a status that is not a refusal.
            Err(e) => {
                unreachable_in_a_row += 1;
                at = (at + 1) % endpoints.len();
                if unreachable_in_a_row < endpoints.len() {
                    // Another controller may answer: try it at once.
                    tracing::warn!(controller = %address, next = %endpoints[at].0, "cannot reach the controller: {e}");
                    continue;
                }
                unreachable_in_a_row = 0;
                tracing::warn!(controller = %address, retry_in = ?backoff, "cannot reach the controller: {e}");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Why a session ended: refused by the controller (its message), or anything else, which
/// is logged with its code since it is most likely the transport.
fn session_error(s: tonic::Status) -> AgentError {
    match Kind::of(s.code()) {
        Kind::Refused => AgentError::new(Kind::Refused, s.message()),
        kind => AgentError::new(kind, format!("{}: {}", s.code(), s.message())),
    }
}

async fn session(
    config: &Arc<AgentConfig>,
    endpoint: &tonic::transport::Endpoint,
    name: &str,
    address: &str,
) -> Result<(), AgentError> {
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| AgentError::transient(tidemark_core::text::error_chain(&e)))?;
    let mut client = AgentServiceClient::new(channel)
        .max_decoding_message_size(tidemark_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(tidemark_proto::MAX_MESSAGE_BYTES);
    let (tools, instances) = describe(config).await;
    let sandbox_engines = match &config.sandbox {
        Some(sb) => engine::all()
            .flat_map(|e| {
                e.sandbox_versions(sb)
                    .into_iter()
                    .map(move |major| SandboxEngine {
                        engine: e.kind().as_str().into(),
                        major,
                    })
            })
            .collect(),
        None => Vec::new(),
    };
    let reg = client
        .register(RegisterRequest {
            host: name.to_string(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            tools,
            instances,
            sandbox_engines,
        })
        .await
        .map_err(session_error)?
        .into_inner();
    tracing::info!(identity = %reg.identity, controller = %address, "registered");
    // A sandbox has no instances to report on. An engine whose log the agent ships itself
    // (MariaDB's binlogs) has an archiver per instance, for as long as the session lasts.
    let archiver_status = ArchiverStatuses::default();
    let _stop_reporter = (config.sandbox.is_none()).then(|| {
        AbortOnDrop(tokio::spawn(report_status(
            client.clone(),
            config.clone(),
            archiver_status.clone(),
        )))
    });
    let _stop_archivers: Vec<AbortOnDrop> = config
        .instances
        .iter()
        .filter_map(|i| {
            engine::of(i.kind()).log_archiver(client.clone(), i, archiver_status.clone())
        })
        .map(|archiver| AbortOnDrop(tokio::spawn(archiver)))
        .collect();
    let _stop_sampler = AbortOnDrop(tokio::spawn(crate::sampler::run(
        client.clone(),
        config.clone(),
        reg.probes,
        Duration::from_secs(reg.sample_interval_secs.max(1) as u64),
    )));
    let mut jobs = client
        .jobs(JobsRequest {
            session: reg.session,
        })
        .await
        .map_err(session_error)?
        .into_inner();
    // Drills die with the session: their evidence could not be reported, and the
    // controller has already written them off. What they left is wiped below. Any job can
    // be stopped by a cancel (the controller gave up on it: it timed out).
    let mut running: HashMap<i64, (bool, tokio::task::JoinHandle<()>)> = HashMap::new();
    let result = async {
        while let Some(job) = jobs.message().await.map_err(session_error)? {
            running.retain(|_, (_, t)| !t.is_finished());
            if let Some(job::Spec::Cancel(c)) = &job.spec {
                if let Some((drill, task)) = running.remove(&job.job_id) {
                    tracing::warn!(job = job.job_id, reason = %c.reason, "stopping the job at the controller's request");
                    task.abort();
                    let _ = task.await;
                    if drill {
                        wipe_sandbox(config).await;
                    }
                }
                continue;
            }
            let is_drill = matches!(job.spec, Some(job::Spec::Drill(_)));
            let id = job.job_id;
            let (client, config) = (client.clone(), config.clone());
            let task = tokio::spawn(async move { run_job(client, config, job).await });
            running.insert(id, (is_drill, task));
        }
        Ok::<(), AgentError>(())
    }
    .await;
    let mut interrupted = false;
    for (_, (drill, task)) in running {
        if drill && !task.is_finished() {
            interrupted = true;
            task.abort();
            let _ = task.await;
        }
    }
    if interrupted {
        tracing::warn!("the session ended during a drill");
        wipe_sandbox(config).await;
    }
    result
}

/// Stop a drill's server and empty the sandbox.
async fn wipe_sandbox(config: &AgentConfig) {
    if let Some(sb) = &config.sandbox {
        tracing::warn!("stopping the drill's server and emptying the sandbox");
        if let Err(e) = crate::engine::wipe_sandbox(sb).await {
            tracing::error!(error = %e, "could not empty the sandbox");
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Report every instance's archiver status now and then, for `tidemark status` and the
/// metrics (segments waiting to be archived, archive_command failures).
async fn report_status(
    mut client: AgentServiceClient<Channel>,
    config: Arc<AgentConfig>,
    archivers: ArchiverStatuses,
) {
    loop {
        let mut instances = Vec::new();
        for inst in &config.instances {
            let status = engine::of(inst.kind())
                .archiver_status(inst, &archivers)
                .await;
            instances.push(status);
        }
        if let Err(e) = client.report_status(StatusReport { instances }).await {
            tracing::warn!(error = %e.message(), "reporting archiver status failed");
        }
        tokio::time::sleep(config.status_interval).await;
    }
}

/// Tool versions and instance facts for registration. An instance that cannot be reached
/// is still registered, with the error, so `tidemark agents` shows the problem.
async fn describe(config: &AgentConfig) -> (Vec<ToolVersion>, Vec<InstanceInfo>) {
    let mut tools = Vec::new();
    let mut instances = Vec::new();
    for inst in &config.instances {
        let d = engine::of(inst.kind()).describe(inst).await;
        for t in d.tools {
            add_tool(&mut tools, t);
        }
        if !d.instance.error.is_empty() {
            tracing::warn!(instance = %inst.name, error = %d.instance.error, "instance unreachable");
        }
        instances.push(d.instance);
    }
    (tools, instances)
}

/// Each tool version once, however many instances use it.
fn add_tool(tools: &mut Vec<ToolVersion>, tool: ToolVersion) {
    if !tools
        .iter()
        .any(|v| v.name == tool.name && v.version == tool.version)
    {
        tools.push(tool);
    }
}

async fn run_job(
    mut client: AgentServiceClient<Channel>,
    config: Arc<AgentConfig>,
    job: tidemark_proto::Job,
) {
    let id = job.job_id;
    let report = |state: JobState, progress: &Progress, message: String| JobReport {
        job_id: id,
        state: state as i32,
        bytes_done: progress.done(),
        bytes_total: 0,
        message,
    };
    let progress = Progress::default();
    let _ = client
        .report_job(report(JobState::Running, &progress, String::new()))
        .await;
    let ctx = JobContext {
        client: client.clone(),
        job_id: id,
        progress: progress.clone(),
        spool_dir: config.spool_dir(),
        config_path: config.path.clone(),
    };
    let reporter = progress.report_every_second(client.clone(), id);
    let result = execute(&ctx, &config, job.spec).await;
    drop(reporter);
    let (state, message) = match result {
        Ok(m) => (JobState::Succeeded, m),
        Err(f) => (JobState::Failed, f.to_string()),
    };
    tracing::info!(job = id, state = ?state, %message, "job finished");
    // The final report must arrive: retry briefly through a blip.
    for attempt in 0..5 {
        match client
            .report_job(report(state, &progress, message.clone()))
            .await
        {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(job = id, attempt, error = %e, "reporting job result failed");
                tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
            }
        }
    }
}

/// Run one job on the engine its spec is for.
async fn execute(ctx: &JobContext, config: &AgentConfig, spec: Option<job::Spec>) -> JobResult {
    let instance_of = |name: &str| {
        config.instance(name).cloned().ok_or_else(|| {
            AgentError::permanent(format!("instance {name} is not in this agent's config"))
        })
    };
    match spec {
        Some(job::Spec::Backup(b)) => {
            let inst = instance_of(&b.instance)?;
            let kind = BackupKind::parse(&b.kind).ok_or_else(|| {
                AgentError::permanent(format!(
                    "backup kind {:?} is not supported by this agent",
                    b.kind
                ))
            })?;
            engine::of(inst.kind()).backup(ctx, &inst, kind).await
        }
        Some(job::Spec::Restore(r)) => match &r.physical {
            Some(p) => {
                // The target host may not run the source instance: the tools and the OS
                // user come from an instance of the same engine, or the engine's defaults.
                let kind = engine::recovery_engine(Some(p))?;
                let inst = config.restore_tools(&r.instance, kind);
                engine::of(kind).restore_physical(ctx, &inst, p).await
            }
            None => {
                let inst = instance_of(&r.instance)?;
                engine::of(inst.kind())
                    .restore_logical(ctx, &inst, &r)
                    .await
            }
        },
        Some(job::Spec::Drill(d)) => match &config.sandbox {
            Some(sb) => {
                let kind = engine::recovery_engine(d.restore.as_ref())?;
                engine::of(kind).drill(ctx, sb, &d).await
            }
            None => Err(AgentError::permanent(
                "this host is not a sandbox; drills run only on sandbox hosts",
            )),
        },
        Some(job::Spec::Cancel(_)) | None => Err(AgentError::permanent(
            "the controller sent a job this agent does not understand; upgrade the agent",
        )),
    }
}
