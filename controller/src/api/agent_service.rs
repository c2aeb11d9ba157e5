//! The service agents call. Every call takes the agent's name from its certificate, and an
//! agent may only touch its own instances, backups and jobs.

use std::sync::Arc;

use tidemark_core::identity::{Identity, Role};
use tidemark_core::ids::{BackupId, JobId};
use tidemark_proto as pb;
use tidemark_proto::agent_service_server::AgentService;
use tonic::{Request, Response, Status, Streaming};

use super::auth::require;
use super::read::{self, PartStream};
use super::upload;
use crate::catalog::JobState;
use crate::ops::sessions::{Closed, JobStream};
use crate::ops::{self, OpsError, OpsResult, State};
use tidemark_proto::upload_part_message::Msg;

pub struct AgentApi {
    pub state: Arc<State>,
}

fn agent_name<T>(req: &Request<T>, what: &str) -> OpsResult<String> {
    Ok(require(req, &[Role::Agent], what)?.name)
}

/// Calls a sandbox may make too: registering, taking jobs, reading what its drill needs.
fn agent_or_sandbox<T>(req: &Request<T>, what: &str) -> OpsResult<Identity> {
    require(req, &[Role::Agent, Role::Sandbox], what)
}

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let who = agent_or_sandbox(&req, "register as an agent or sandbox")?;
        Ok(Response::new(
            ops::agents::register(&self.state, &who, req.into_inner()).await?,
        ))
    }

    type JobsStream = futures::stream::Map<JobStream, ClosedAsStatus>;

    async fn jobs(
        &self,
        req: Request<pb::JobsRequest>,
    ) -> Result<Response<Self::JobsStream>, Status> {
        let agent = agent_or_sandbox(&req, "take jobs")?.name;
        let stream = ops::agents::attach(&self.state, &agent, req.into_inner().session).await?;
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
        let (job, reported) = ops::jobs::report(&self.state, &agent, &r).await?;
        if job.kind == "drill" && reported.is_terminal() {
            crate::drill::job_ended(
                &self.state,
                job.id,
                reported == JobState::Succeeded,
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
        Ok(Response::new(
            ops::backups::begin(&self.state, &agent, req.into_inner()).await?,
        ))
    }

    async fn have_chunks(
        &self,
        req: Request<pb::HaveChunksRequest>,
    ) -> Result<Response<pb::HaveChunksResponse>, Status> {
        let agent = agent_name(&req, "query chunks")?;
        Ok(Response::new(
            ops::backups::have_chunks(&self.state, &agent, &req.into_inner().ids).await?,
        ))
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
        ops::backups::may_read(&self.state, &agent, &b, &r.part, JobId(r.job_id)).await?;
        Ok(Response::new(
            read::stream_part(self.state.clone(), b.id, &r.part).await?,
        ))
    }

    async fn finish_backup(
        &self,
        req: Request<pb::FinishBackupRequest>,
    ) -> Result<Response<pb::FinishBackupResponse>, Status> {
        let agent = agent_name(&req, "finish a backup")?;
        Ok(Response::new(
            ops::backups::finish(&self.state, &agent, req.into_inner()).await?,
        ))
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
        ops::agents::report_status(&self.state, &agent, req.into_inner().instances).await?;
        Ok(Response::new(pb::StatusReportAck {}))
    }

    async fn push_samples(
        &self,
        req: Request<pb::SampleBatch>,
    ) -> Result<Response<pb::SampleAck>, Status> {
        let agent = agent_name(&req, "push samples")?;
        ops::agents::push_samples(&self.state, &agent, req.into_inner().samples).await?;
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
