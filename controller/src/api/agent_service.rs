//! The service agents call. Every call takes the agent's name from its certificate, and an
//! agent may only touch its own instances, backups and jobs.

use std::sync::Arc;

use tidemark_core::identity::{Identity, Role};
use tidemark_core::ids::{BackupId, ChunkId, JobId};
use tidemark_proto as pb;
use tidemark_proto::agent_service_server::AgentService;
use tonic::{Request, Response, Status, Streaming};

use super::auth::require;
use super::read::{self, PartStream};
use super::upload;
use crate::catalog::{
    ArchiverRow, BackupKind, BackupRow, BackupStatus, BaseBackupRow, BinlogCoordRow, Engine,
    InstanceFacts, InstanceRow, JobRow, JobState, Registered, Registration,
};
use crate::ops::sessions::{Closed, JobStream};
use crate::ops::{self, OpsError, OpsResult, State};
use tidemark_core::binlog::sequence as binlog_sequence;
use tidemark_core::wal::Lsn;
use tidemark_proto::upload_part_message::Msg;

pub struct AgentApi {
    pub state: Arc<State>,
}

/// Largest dedup query accepted in one call.
const MAX_HAVE_CHUNKS: usize = 4096;

/// The engines this controller can back up, for messages.
fn engine_names() -> String {
    Engine::ALL
        .iter()
        .map(|e| e.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn agent_name<T>(req: &Request<T>, what: &str) -> OpsResult<String> {
    Ok(require(req, &[Role::Agent], what)?.name)
}

/// Calls a sandbox may make too: registering, taking jobs, reading what its drill needs.
fn agent_or_sandbox<T>(req: &Request<T>, what: &str) -> OpsResult<Identity> {
    require(req, &[Role::Agent, Role::Sandbox], what)
}

impl AgentApi {
    async fn own_backup(&self, agent: &str, id: BackupId) -> OpsResult<BackupRow> {
        let b = self.state.backup(id).await?;
        if b.agent != agent {
            return Err(OpsError::PermissionDenied(format!(
                "backup {id} belongs to agent {}, not to agent {agent}",
                b.agent
            )));
        }
        Ok(b)
    }

    /// `instance`, if it belongs to `agent`; `what` names the refused act.
    async fn own_instance(&self, agent: &str, instance: &str, what: &str) -> OpsResult<()> {
        let inst = self.state.repo.catalog.instance(instance).await?;
        if inst.as_ref().map(|i| i.agent.as_str()) != Some(agent) {
            return Err(OpsError::PermissionDenied(format!(
                "agent {agent} may {what} only its own instances, not {instance}"
            )));
        }
        Ok(())
    }

    async fn own_job(&self, agent: &str, id: JobId) -> OpsResult<JobRow> {
        let j = self.state.job(id).await?;
        if j.agent != agent {
            return Err(OpsError::PermissionDenied(format!(
                "job {id} was given to agent {}, not to agent {agent}",
                j.agent
            )));
        }
        Ok(j)
    }

    /// May `agent` read `part` of `backup`? Its own backups, while it checks them, and any
    /// complete backup that a running restore job of its names.
    async fn may_read(&self, agent: &str, b: &BackupRow, part: &str, job: JobId) -> OpsResult<()> {
        if job.0 == 0 {
            if b.agent == agent && b.status == BackupStatus::Running {
                return Ok(());
            }
            return Err(OpsError::PermissionDenied(format!(
                "agent {agent} may read backup {} only for a restore job that names it",
                b.id
            )));
        }
        let j = self.own_job(agent, job).await?;
        let names_part = j.params.get("part").and_then(|v| v.as_str()) == Some(part)
            || j.params
                .get("parts")
                .and_then(|v| v.as_array())
                .is_some_and(|ps| ps.iter().any(|p| p.as_str() == Some(part)));
        let names_it = matches!(j.kind.as_str(), "restore" | "drill")
            && j.params.get("backup_id").and_then(|v| v.as_i64()) == Some(b.id.0)
            && names_part;
        if !names_it || j.state.is_terminal() {
            return Err(OpsError::PermissionDenied(format!(
                "job {job} does not let agent {agent} read part {part} of backup {}",
                b.id
            )));
        }
        if b.status != BackupStatus::Complete {
            return Err(OpsError::FailedPrecondition(format!(
                "backup {} is {}, not complete; only complete backups can be restored",
                b.id, b.status
            )));
        }
        Ok(())
    }
}

enum BaseWal {
    Archived,
    Waiting(String),
}

impl AgentApi {
    /// Record the binlog position a MariaDB backup is consistent with. mariabackup's copy
    /// carries its own redo log, so unlike a PostgreSQL base backup it needs no archived
    /// log to be restorable by itself: it is complete once its parts are stored.
    async fn record_binlog(
        &self,
        b: &BackupRow,
        info: Option<&pb::BinlogCoordinates>,
    ) -> OpsResult<()> {
        let info = info.ok_or_else(|| {
            OpsError::InvalidArgument(format!(
                "backup {} finished without its binlog position",
                b.id
            ))
        })?;
        let seq = if info.file.is_empty() {
            None
        } else {
            let inst = self.state.repo.catalog.instance(&b.instance).await?;
            let base = inst.as_ref().map(|i| i.binlog_base()).unwrap_or_default();
            Some(binlog_sequence(&info.file, base).ok_or_else(|| {
                OpsError::InvalidArgument(format!(
                    "backup {}: binlog {:?} is not named after the instance's log_bin_basename {base:?}",
                    b.id, info.file
                ))
            })?)
        };
        let row = BinlogCoordRow {
            backup_id: b.id,
            file: info.file.clone(),
            seq,
            position: info.position,
            gtid: info.gtid.clone(),
            start_time: info.start_time,
            stop_time: info.stop_time,
        };
        self.state
            .repo
            .catalog
            .record_binlog_coordinates(&row)
            .await?;
        Ok(())
    }

    /// Record where a base backup sits in the WAL, and whether every segment from its start
    /// to its stop is archived: until then it cannot be restored, so it is not complete.
    async fn record_base(
        &self,
        b: &BackupRow,
        info: Option<&pb::BaseBackupInfo>,
    ) -> OpsResult<BaseWal> {
        let info = info.ok_or_else(|| {
            OpsError::InvalidArgument(format!(
                "base backup {} finished without its WAL positions",
                b.id
            ))
        })?;
        let lsn = |s: &str| Lsn::parse(s).map_err(OpsError::InvalidArgument);
        let row = BaseBackupRow {
            backup_id: b.id,
            start_lsn: lsn(&info.start_lsn)?,
            stop_lsn: lsn(&info.stop_lsn)?,
            timeline: info.timeline,
            system_identifier: info.system_identifier.clone(),
            backup_label: info.backup_label.clone(),
            start_time: info.start_time,
            stop_time: info.stop_time,
            tablespaces: info.tablespaces.clone().into_iter().collect(),
        };
        if row.stop_lsn < row.start_lsn || row.timeline == 0 {
            return Err(OpsError::InvalidArgument(format!(
                "base backup {}: stop {} before start {}, or no timeline",
                b.id, row.stop_lsn, row.start_lsn
            )));
        }
        self.state.repo.catalog.record_base_backup(&row).await?;
        let missing = ops::archive::missing(
            &self.state,
            &b.instance,
            row.timeline,
            row.start_lsn,
            row.stop_lsn,
        )
        .await?;
        Ok(match missing.as_slice() {
            [] => BaseWal::Archived,
            [one] => BaseWal::Waiting(format!("waiting for WAL segment {one} to be archived")),
            [first, .., last] => BaseWal::Waiting(format!(
                "waiting for {} WAL segments ({first} .. {last}) to be archived",
                missing.len()
            )),
        })
    }
}

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let who = agent_or_sandbox(&req, "register as an agent or sandbox")?;
        let agent = who.name.clone();
        let r = req.into_inner();
        if r.host != agent {
            return Err(OpsError::PermissionDenied(format!(
                "the certificate is for {who} but the agent says its host is {:?}; issue it a certificate for {}:{}",
                r.host,
                who.role.as_str(),
                r.host
            ))
            .into());
        }
        let sandbox = who.role == Role::Sandbox;
        if sandbox && !r.instances.is_empty() {
            return Err(OpsError::InvalidArgument(format!(
                "{who} is a sandbox: it runs drills and may not register instances (remove the [[instance]] sections from its config, or give the host an agent certificate)"
            ))
            .into());
        }
        if !sandbox && !r.sandbox_engines.is_empty() {
            return Err(OpsError::InvalidArgument(format!(
                "{who} offers sandbox engines, but only a host with a sandbox certificate runs drills"
            ))
            .into());
        }
        let mut instances = Vec::new();
        for i in &r.instances {
            let Some(engine) = Engine::from_name(&i.engine) else {
                return Err(OpsError::InvalidArgument(format!(
                    "instance {} has engine {:?}; this controller supports {}",
                    i.name,
                    i.engine,
                    engine_names()
                ))
                .into());
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
        match self
            .state
            .repo
            .catalog
            .register_agent(&agent, &reg, &instances)
            .await
            .map_err(OpsError::from)?
        {
            Registered::Ok => {}
            Registered::InstancesTaken(taken) => {
                let (name, owner) = &taken[0];
                return Err(OpsError::PermissionDenied(format!(
                    "instance {name} is already registered to agent {owner}; instance names are fleet-unique, so rename it in agent {agent}'s config"
                ))
                .into());
            }
            Registered::NameTaken(role) => {
                return Err(OpsError::PermissionDenied(format!(
                    "{agent} is already registered as a {role}; one host name cannot be both an agent and a sandbox"
                ))
                .into());
            }
        }
        tracing::info!(identity = %who, instances = instances.len(), "registered");
        let names: Vec<String> = instances.iter().map(|i| i.name.clone()).collect();
        Ok(Response::new(pb::RegisterResponse {
            identity: who.to_string(),
            session: self.state.sessions.new_session_id(),
            probes: self.state.drills.probes(&names),
            sample_interval_secs: self.state.drills.settings.sample_interval.as_secs().max(1)
                as u32,
        }))
    }

    type JobsStream = futures::stream::Map<JobStream, ClosedAsStatus>;

    async fn jobs(
        &self,
        req: Request<pb::JobsRequest>,
    ) -> Result<Response<Self::JobsStream>, Status> {
        let agent = agent_or_sandbox(&req, "take jobs")?.name;
        if self
            .state
            .repo
            .catalog
            .agent(&agent)
            .await
            .map_err(OpsError::from)?
            .is_none()
        {
            return Err(OpsError::FailedPrecondition(format!(
                "agent {agent} must register before taking jobs"
            ))
            .into());
        }
        self.state
            .repo
            .catalog
            .touch_agent(&agent)
            .await
            .map_err(OpsError::from)?;
        // Jobs sent down an earlier stream that the agent never started are lost with it.
        self.state
            .repo
            .catalog
            .fail_queued_jobs_of_agent(
                &agent,
                "the agent reconnected before starting this job; run it again",
            )
            .await
            .map_err(OpsError::from)?;
        let session = req.into_inner().session;
        let stream = self
            .state
            .sessions
            .attach(&agent, session, self.state.repo.catalog.clone());
        // Other controllers sharing the catalog leave this agent's jobs for this one.
        self.state
            .repo
            .catalog
            .hold_agent(&agent, true)
            .await
            .map_err(OpsError::from)?;
        Ok(Response::new(futures::StreamExt::map(
            stream,
            closed_as_status as ClosedAsStatus,
        )))
    }

    async fn report_job(
        &self,
        req: Request<pb::JobReport>,
    ) -> Result<Response<pb::JobReportAck>, Status> {
        let agent = agent_or_sandbox(&req, "report on jobs")?.name;
        let r = req.into_inner();
        let job = self.own_job(&agent, JobId(r.job_id)).await?;
        let state = match pb::JobState::try_from(r.state) {
            Ok(pb::JobState::Running) => JobState::Running,
            Ok(pb::JobState::Succeeded) => JobState::Succeeded,
            Ok(pb::JobState::Failed) => JobState::Failed,
            _ => {
                return Err(OpsError::InvalidArgument(format!(
                    "job state {} cannot be reported",
                    r.state
                ))
                .into());
            }
        };
        let total = (r.bytes_total > 0).then_some(r.bytes_total);
        self.state
            .repo
            .catalog
            .update_job(JobId(r.job_id), state, r.bytes_done, total, &r.message)
            .await
            .map_err(OpsError::from)?;
        // The job ended in the catalog (it timed out, perhaps on another controller whose
        // cancel could not reach this agent's stream) while the agent still runs it: stop
        // it from here, where the stream is. Progress comes every second.
        if state == JobState::Running && job.state.is_terminal() {
            ops::jobs::cancel(&self.state, &agent, job.id, &job.message).await;
        }
        if job.kind == "drill" && state.is_terminal() {
            crate::drill::job_ended(
                &self.state,
                job.id,
                state == JobState::Succeeded,
                &r.message,
            )
            .await?;
        }
        Ok(Response::new(pb::JobReportAck {}))
    }

    async fn begin_backup(
        &self,
        req: Request<pb::BeginBackupRequest>,
    ) -> Result<Response<pb::BeginBackupResponse>, Status> {
        let agent = agent_name(&req, "begin a backup")?;
        let r = req.into_inner();
        let inst = self
            .state
            .repo
            .catalog
            .instance(&r.instance)
            .await
            .map_err(OpsError::from)?
            .ok_or_else(|| {
                OpsError::NotFound(format!(
                    "instance {} is not registered; agents register the instances in their config",
                    r.instance
                ))
            })?;
        if inst.agent != agent {
            return Err(OpsError::PermissionDenied(format!(
                "instance {} belongs to agent {}; agent {agent} may only back up its own instances",
                r.instance, inst.agent
            ))
            .into());
        }
        let Some(kind) = BackupKind::from_name(&r.kind) else {
            return Err(OpsError::InvalidArgument(format!(
                "backup kind {:?} is not supported; use {}",
                r.kind,
                BackupKind::ALL
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ))
            .into());
        };
        let mut parts = r.parts.clone();
        parts.sort();
        parts.dedup();
        if parts.is_empty() || parts.len() != r.parts.len() {
            return Err(OpsError::InvalidArgument(
                "a backup needs one or more distinct parts".into(),
            )
            .into());
        }
        let job = (r.job_id != 0).then_some(JobId(r.job_id));
        if let Some(j) = job {
            self.own_job(&agent, j).await?;
        }
        let id = self
            .state
            .repo
            .catalog
            .create_backup(
                &r.instance,
                &agent,
                kind,
                job,
                &r.parts,
                &r.warnings,
                &r.server_version,
                &r.tool_version,
            )
            .await
            .map_err(OpsError::from)?;
        if let Some(j) = job {
            self.state
                .repo
                .catalog
                .link_job_backup(j, id)
                .await
                .map_err(OpsError::from)?;
        }
        if !r.databases.is_empty() {
            self.state
                .repo
                .catalog
                .set_backup_databases(id, &r.databases)
                .await
                .map_err(OpsError::from)?;
        }
        tracing::info!(backup = %id, instance = %r.instance, agent = %agent, "backup started");
        Ok(Response::new(pb::BeginBackupResponse { backup_id: id.0 }))
    }

    async fn have_chunks(
        &self,
        req: Request<pb::HaveChunksRequest>,
    ) -> Result<Response<pb::HaveChunksResponse>, Status> {
        let agent = agent_name(&req, "query chunks")?;
        let ids = req
            .into_inner()
            .ids
            .iter()
            .map(|b| ChunkId::from_slice(b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| OpsError::InvalidArgument(e.to_string()))?;
        if ids.len() > MAX_HAVE_CHUNKS {
            return Err(OpsError::InvalidArgument(format!(
                "at most {MAX_HAVE_CHUNKS} chunk ids per query"
            ))
            .into());
        }
        let present = self
            .state
            .repo
            .catalog
            .have_chunks(&agent, &ids)
            .await
            .map_err(OpsError::from)?;
        Ok(Response::new(pb::HaveChunksResponse { present }))
    }

    async fn upload_part(
        &self,
        req: Request<Streaming<pb::UploadPartMessage>>,
    ) -> Result<Response<pb::UploadPartResponse>, Status> {
        let agent = agent_name(&req, "upload backups")?;
        let (first, mut rest) = upload::open(req.into_inner(), "part upload").await?;
        let Some(Msg::Header(header)) = first else {
            return Err(OpsError::InvalidArgument(
                "a part upload must start with its header".into(),
            )
            .into());
        };
        let resp = ops::upload::receive(&self.state, &agent, header, &mut rest).await?;
        Ok(Response::new(resp))
    }

    type ReadPartStream = PartStream;

    async fn read_part(
        &self,
        req: Request<pb::ReadPartRequest>,
    ) -> Result<Response<PartStream>, Status> {
        let agent = agent_or_sandbox(&req, "read backups")?.name;
        let r = req.into_inner();
        let b = self.state.backup(BackupId(r.backup_id)).await?;
        self.may_read(&agent, &b, &r.part, JobId(r.job_id)).await?;
        Ok(Response::new(
            read::stream_part(self.state.clone(), b.id, &r.part).await?,
        ))
    }

    async fn finish_backup(
        &self,
        req: Request<pb::FinishBackupRequest>,
    ) -> Result<Response<pb::FinishBackupResponse>, Status> {
        let agent = agent_name(&req, "finish a backup")?;
        let r = req.into_inner();
        let id = BackupId(r.backup_id);
        let b = self.own_backup(&agent, id).await?;
        let cat = &self.state.repo.catalog;
        for c in &r.checks {
            if b.part(&c.part).is_none() {
                return Err(OpsError::InvalidArgument(format!(
                    "backup {id} has no part {:?}",
                    c.part
                ))
                .into());
            }
            cat.set_part_check(id, &c.part, c.ok, &c.detail)
                .await
                .map_err(OpsError::from)?;
        }
        let engine = cat
            .instance(&b.instance)
            .await
            .map_err(OpsError::from)?
            .map(|i| i.engine);
        if engine == Some(Engine::Mariadb)
            && r.error.is_empty()
            && b.status == BackupStatus::Running
        {
            self.record_binlog(&b, r.binlog.as_ref()).await?;
        } else if b.kind == BackupKind::Base
            && r.error.is_empty()
            && b.status == BackupStatus::Running
        {
            match self.record_base(&b, r.base.as_ref()).await? {
                BaseWal::Archived => {}
                BaseWal::Waiting(reason) => {
                    // Not complete until its WAL is archived; the agent asks again.
                    return Ok(Response::new(pb::FinishBackupResponse {
                        status: "running".into(),
                        reason,
                    }));
                }
            }
        }
        let problem = if !r.error.is_empty() {
            Some(r.error.clone())
        } else if let Some(p) = b.parts.iter().find(|p| !p.stored) {
            Some(format!("part {} was never stored", p.name))
        } else if let Some(p) = b
            .parts
            .iter()
            .find(|p| !r.checks.iter().any(|c| c.part == p.name))
        {
            Some(format!("part {} was not checked after storing", p.name))
        } else {
            r.checks
                .iter()
                .find(|c| !c.ok)
                .map(|c| format!("structural check of part {} failed: {}", c.part, c.detail))
        };
        cat.finish_backup(id, problem.is_none(), problem.as_deref().unwrap_or(""))
            .await
            .map_err(OpsError::from)?;
        let after = self.own_backup(&agent, id).await?;
        tracing::info!(backup = %id, status = %after.status, reason = %after.reason, "backup finished");
        Ok(Response::new(pb::FinishBackupResponse {
            status: after.status.to_string(),
            reason: after.reason,
        }))
    }

    async fn push_wal(
        &self,
        req: Request<Streaming<pb::UploadPartMessage>>,
    ) -> Result<Response<pb::PushWalResponse>, Status> {
        let agent = agent_name(&req, "archive WAL")?;
        let (first, mut rest) = upload::open(req.into_inner(), "WAL push").await?;
        let Some(Msg::Wal(header)) = first else {
            return Err(OpsError::InvalidArgument(
                "a WAL push must start with its WalHeader".into(),
            )
            .into());
        };
        Ok(Response::new(
            ops::archive::push(&self.state, &agent, header, &mut rest).await?,
        ))
    }

    type FetchWalStream = PartStream;

    async fn fetch_wal(
        &self,
        req: Request<pb::FetchWalRequest>,
    ) -> Result<Response<PartStream>, Status> {
        let who = agent_or_sandbox(&req, "fetch WAL")?;
        let file = ops::archive::fetch(&self.state, &who, req.into_inner()).await?;
        Ok(Response::new(read::stream_entries(
            self.state.clone(),
            file.entries,
            file.sha256,
            file.size,
        )))
    }

    async fn report_status(
        &self,
        req: Request<pb::StatusReport>,
    ) -> Result<Response<pb::StatusReportAck>, Status> {
        let agent = agent_name(&req, "report status")?;
        for s in req.into_inner().instances {
            self.own_instance(&agent, &s.instance, "report on").await?;
            self.state
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
                .await
                .map_err(OpsError::from)?;
            self.state.status.report(ArchiverRow {
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
        Ok(Response::new(pb::StatusReportAck {}))
    }

    async fn push_samples(
        &self,
        req: Request<pb::SampleBatch>,
    ) -> Result<Response<pb::SampleAck>, Status> {
        let agent = agent_name(&req, "push samples")?;
        let mut rows = Vec::new();
        for s in req.into_inner().samples {
            self.own_instance(&agent, &s.instance, "push samples for")
                .await?;
            rows.push((s.instance, s.name, s.taken_at, s.value));
        }
        self.state
            .repo
            .catalog
            .add_samples(&rows)
            .await
            .map_err(OpsError::from)?;
        Ok(Response::new(pb::SampleAck {}))
    }

    async fn report_drill(
        &self,
        req: Request<pb::DrillReport>,
    ) -> Result<Response<pb::DrillReportAck>, Status> {
        let sandbox = require(&req, &[Role::Sandbox], "report on drills")?.name;
        crate::drill::report(&self.state, &sandbox, req.get_ref()).await?;
        Ok(Response::new(pb::DrillReportAck {}))
    }
}

type ClosedAsStatus = fn(Result<pb::Job, Closed>) -> Result<pb::Job, Status>;

/// A job stream the controller closed ends with UNAUTHENTICATED and the reason.
fn closed_as_status(item: Result<pb::Job, Closed>) -> Result<pb::Job, Status> {
    item.map_err(|c| Status::unauthenticated(c.0))
}
