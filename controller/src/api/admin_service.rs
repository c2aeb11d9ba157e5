//! The service operators call through the tidemark CLI. Admin certificates only.

use std::sync::Arc;

use serde_json::json;
use tidemark_core::identity::Role;
use tidemark_core::ids::{BackupId, JobId};
use tidemark_proto as pb;
use tidemark_proto::admin_service_server::AdminService;
use tonic::{Request, Response, Status};

use super::State;
use super::auth::require;
use super::convert;
use super::error::{ApiError, ApiResult};
use super::recovery;
use crate::catalog::{BackupRow, DrillState, JobState};
use crate::drill::{self, target::TargetSpec};

pub struct AdminApi {
    pub state: Arc<State>,
}

fn admin<T>(req: &Request<T>, what: &str) -> ApiResult<()> {
    require(req, &[Role::Admin], what).map(|_| ())
}

/// The part a restore reads: the named database, or the backup's only one.
fn restore_part(b: &BackupRow, database: &str) -> ApiResult<String> {
    let dbs: Vec<&str> = b
        .parts
        .iter()
        .filter_map(|p| p.name.strip_prefix("db:"))
        .collect();
    if !database.is_empty() {
        if dbs.contains(&database) {
            return Ok(format!("db:{database}"));
        }
        return Err(ApiError::NotFound(format!(
            "backup {} holds no database {database:?}; it holds: {}",
            b.id,
            dbs.join(", ")
        )));
    }
    match dbs.as_slice() {
        [one] => Ok(format!("db:{one}")),
        [] => Err(ApiError::FailedPrecondition(format!(
            "backup {} holds no database dump",
            b.id
        ))),
        many => Err(ApiError::InvalidArgument(format!(
            "backup {} holds several databases ({}); pick one with --database",
            b.id,
            many.join(", ")
        ))),
    }
}

impl AdminApi {
    async fn job_info(&self, id: JobId) -> ApiResult<pb::JobInfo> {
        let j = self.state.job(id).await?;
        Ok(convert::job(&j))
    }

    /// Record a job and hand it to its agent; a job that cannot be delivered fails at once.
    async fn dispatch(
        &self,
        kind: &str,
        agent: &str,
        instance: &str,
        params: serde_json::Value,
        bytes_total: u64,
        spec: pb::job::Spec,
    ) -> ApiResult<pb::JobInfo> {
        let cat = &self.state.catalog;
        // Sandboxes take drills only: a restore job would let one read any backup.
        if cat
            .agent(agent)
            .await?
            .is_some_and(|a| a.role == Role::Sandbox.as_str())
        {
            return Err(ApiError::FailedPrecondition(format!(
                "{agent} is a sandbox; it runs drills (tidemark drill run), not {kind} jobs"
            )));
        }
        let id = cat
            .create_job(kind, agent, instance, &params, bytes_total)
            .await?;
        let job = pb::Job {
            job_id: id.0,
            spec: Some(spec),
        };
        if let Err(e) = self.state.sessions.send(agent, job).await {
            cat.update_job(id, JobState::Failed, 0, None, &e.to_string())
                .await?;
            return Err(e);
        }
        tracing::info!(job = %id, kind, agent, instance, "job dispatched");
        self.job_info(id).await
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn list_agents(
        &self,
        req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        admin(&req, "list agents")?;
        let agents = self.state.catalog.agents().await.map_err(ApiError::from)?;
        let agents = agents
            .iter()
            .map(|a| convert::agent(a, self.state.sessions.is_connected(&a.name)))
            .collect();
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }

    async fn list_backups(
        &self,
        req: Request<pb::ListBackupsRequest>,
    ) -> Result<Response<pb::ListBackupsResponse>, Status> {
        admin(&req, "list backups")?;
        let r = req.into_inner();
        let filter = (!r.instance.is_empty()).then_some(r.instance.as_str());
        let rows = self
            .state
            .catalog
            .list_backups(filter)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListBackupsResponse {
            backups: rows.iter().map(convert::backup_summary).collect(),
        }))
    }

    async fn get_backup(
        &self,
        req: Request<pb::GetBackupRequest>,
    ) -> Result<Response<pb::BackupDetail>, Status> {
        admin(&req, "read backups")?;
        let id = BackupId(req.into_inner().id);
        let b = self.state.backup(id).await?;
        let base = self
            .state
            .catalog
            .base_backup(id)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(convert::backup_detail(&b, base.as_ref())))
    }

    async fn start_backup(
        &self,
        req: Request<pb::StartBackupRequest>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        admin(&req, "start backups")?;
        let r = req.into_inner();
        let kind = if r.kind.is_empty() {
            "logical".to_string()
        } else {
            r.kind
        };
        if !super::agent_service::KINDS.contains(&kind.as_str()) {
            return Err(ApiError::InvalidArgument(format!(
                "backup kind {kind:?} is not supported; use --kind logical or --kind base"
            ))
            .into());
        }
        let inst = self
            .state
            .catalog
            .instance(&r.instance)
            .await
            .map_err(ApiError::from)?;
        let inst = inst.ok_or_else(|| {
            ApiError::NotFound(format!(
                "no instance {:?} is registered; tidemark agents lists them",
                r.instance
            ))
        })?;
        let spec = pb::job::Spec::Backup(pb::BackupJob {
            instance: inst.name.clone(),
            kind: kind.clone(),
        });
        let params = json!({ "instance": inst.name, "kind": kind });
        Ok(Response::new(
            self.dispatch("backup", &inst.agent, &inst.name, params, 0, spec)
                .await?,
        ))
    }

    async fn start_restore(
        &self,
        req: Request<pb::StartRestoreRequest>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        admin(&req, "start restores")?;
        let r = req.into_inner();
        let cat = &self.state.catalog;
        let id = BackupId(r.backup_id);
        let b = self.state.backup(id).await?;
        if b.status != "complete" {
            let why = if b.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", b.reason)
            };
            return Err(ApiError::FailedPrecondition(format!(
                "backup {id} is {}, not complete{why}; only complete backups can be restored",
                b.status
            ))
            .into());
        }
        if r.into_database.is_empty() {
            return Err(ApiError::InvalidArgument(
                "name the new database with --into-database".into(),
            )
            .into());
        }
        let part = restore_part(&b, &r.database)?;
        let host = r.host.strip_prefix("agent:").unwrap_or(&r.host);
        let agent = cat.agent(host).await.map_err(ApiError::from)?;
        let agent = agent.ok_or_else(|| {
            ApiError::NotFound(format!(
                "no agent {host:?} has registered; tidemark agents lists them"
            ))
        })?;
        let owned: Vec<&str> = agent.instances.iter().map(|i| i.name.as_str()).collect();
        let instance = if !r.target_instance.is_empty() {
            if !owned.contains(&r.target_instance.as_str()) {
                return Err(ApiError::NotFound(format!(
                    "agent {host} has no instance {:?}",
                    r.target_instance
                ))
                .into());
            }
            r.target_instance.clone()
        } else if owned.contains(&b.instance.as_str()) {
            b.instance.clone()
        } else if let [one] = owned.as_slice() {
            one.to_string()
        } else {
            return Err(ApiError::InvalidArgument(format!(
                "agent {host} has several instances ({}); pick one with --target-instance",
                owned.join(", ")
            ))
            .into());
        };
        if let Some(bad) = cat
            .unavailable_chunks(id, &part, 1)
            .await
            .map_err(ApiError::from)?
            .first()
        {
            return Err(ApiError::DataLoss(format!(
                "backup {id} cannot be restored: chunk {bad} of part {part} is missing or was found corrupt"
            ))
            .into());
        }
        let total = b.part(&part).map(|p| p.stats.raw_bytes).unwrap_or(0);
        let job = pb::RestoreJob {
            backup_id: id.0,
            part: part.clone(),
            instance: instance.clone(),
            into_database: r.into_database.clone(),
            clean: r.clean,
            jobs: r.jobs.max(1),
            no_owner: r.no_owner,
            physical: None,
        };
        let params = json!({
            "backup_id": id.0, "part": part, "instance": instance, "into_database": r.into_database,
            "clean": r.clean, "jobs": job.jobs, "no_owner": r.no_owner,
        });
        let info = self
            .dispatch(
                "restore",
                host,
                &instance,
                params,
                total,
                pb::job::Spec::Restore(job),
            )
            .await?;
        Ok(Response::new(info))
    }

    async fn get_job(
        &self,
        req: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        admin(&req, "read jobs")?;
        Ok(Response::new(
            self.job_info(JobId(req.into_inner().id)).await?,
        ))
    }

    async fn start_pitr_restore(
        &self,
        req: Request<pb::StartPitrRestoreRequest>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        admin(&req, "start restores")?;
        let (host, params, job, total) = recovery::plan_restore(&self.state, req.get_ref()).await?;
        let instance = job.instance.clone();
        let info = self
            .dispatch(
                "restore",
                &host,
                &instance,
                params,
                total,
                pb::job::Spec::Restore(job),
            )
            .await?;
        Ok(Response::new(info))
    }

    async fn pitr_window(
        &self,
        req: Request<pb::PitrWindowRequest>,
    ) -> Result<Response<pb::PitrWindowInfo>, Status> {
        admin(&req, "read recovery windows")?;
        let inst = recovery::instance(&self.state, &req.get_ref().instance).await?;
        Ok(Response::new(
            recovery::window_info(&self.state, &inst).await?,
        ))
    }

    async fn fleet_status(
        &self,
        req: Request<pb::FleetStatusRequest>,
    ) -> Result<Response<pb::FleetStatusResponse>, Status> {
        admin(&req, "read the fleet status")?;
        Ok(Response::new(pb::FleetStatusResponse {
            instances: recovery::fleet_status(&self.state).await?,
        }))
    }

    async fn start_drill(
        &self,
        req: Request<pb::StartDrillRequest>,
    ) -> Result<Response<pb::StartDrillResponse>, Status> {
        admin(&req, "start drills")?;
        let r = req.into_inner();
        let spec = TargetSpec::parse(&r.target).map_err(ApiError::InvalidArgument)?;
        let mut drills = Vec::new();
        if r.all {
            if !r.instance.is_empty() {
                return Err(ApiError::InvalidArgument(
                    "give --instance NAME or --all, not both".into(),
                )
                .into());
            }
            // Every instance is tried; one that cannot be drilled is recorded as a failed
            // drill with the reason, so it shows in the history and the alerts.
            for agent in self.state.catalog.agents().await.map_err(ApiError::from)? {
                for inst in &agent.instances {
                    match drill::request(&self.state, inst, &spec, &r.sandbox).await {
                        Ok(d) => drills.push(drill::info(&d)),
                        Err(e) => {
                            let cat = &self.state.catalog;
                            let id = cat
                                .create_drill(&inst.name, 0, "", &r.sandbox)
                                .await
                                .map_err(ApiError::from)?;
                            cat.end_drill(id, DrillState::Failed, &e.to_string())
                                .await
                                .map_err(ApiError::from)?;
                            if let Some(d) = cat.drill(id).await.map_err(ApiError::from)? {
                                drills.push(drill::info(&d));
                            }
                        }
                    }
                }
            }
        } else {
            let inst = recovery::instance(&self.state, &r.instance).await?;
            let d = drill::request(&self.state, &inst, &spec, &r.sandbox).await?;
            drills.push(drill::info(&d));
        }
        Ok(Response::new(pb::StartDrillResponse { drills }))
    }

    async fn list_drills(
        &self,
        req: Request<pb::ListDrillsRequest>,
    ) -> Result<Response<pb::ListDrillsResponse>, Status> {
        admin(&req, "read drills")?;
        let r = req.into_inner();
        let instance = (!r.instance.is_empty()).then_some(r.instance.as_str());
        let limit = if r.limit == 0 { 50 } else { r.limit };
        let rows = self
            .state
            .catalog
            .list_drills(instance, limit)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::ListDrillsResponse {
            drills: rows.iter().map(drill::info).collect(),
        }))
    }

    async fn get_drill(
        &self,
        req: Request<pb::GetDrillRequest>,
    ) -> Result<Response<pb::DrillInfo>, Status> {
        admin(&req, "read drills")?;
        let id = req.get_ref().id;
        let d = self
            .state
            .catalog
            .drill(id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::NotFound(format!("drill {id} does not exist")))?;
        Ok(Response::new(drill::info(&d)))
    }
}
