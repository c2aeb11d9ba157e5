//! The service operators call through the tidemark CLI. Admins may do everything; viewers
//! may only read. Every change, and every refused attempt at one, goes to the audit log.

use std::sync::Arc;

use tidemark_core::identity::Role;
use tidemark_core::ids::{BackupId, JobId};
use tidemark_proto as pb;
use tidemark_proto::admin_service_server::AdminService;
use tonic::{Request, Response, Status};

use super::auth::{caller, require};
use super::convert;
use crate::drill;
use crate::ops::{self, OpsError, OpsResult, State, jobs};
use crate::schedule;

pub struct AdminApi {
    pub state: Arc<State>,
}

/// Reading: admins and viewers.
fn read<T>(req: &Request<T>, what: &str) -> OpsResult<()> {
    require(req, &[Role::Admin, Role::Viewer], what).map(|_| ())
}

/// A change an operator asked for: who, what, and the request, for the audit log.
struct Change {
    who: String,
    action: &'static str,
    detail: String,
}

impl AdminApi {
    /// Allow a change to admins only; a refused attempt is audited here, an allowed one by
    /// [`Self::audited`] once it has run.
    async fn change<T: std::fmt::Debug>(
        &self,
        req: &Request<T>,
        action: &'static str,
    ) -> Result<Change, Status> {
        let change = Change {
            who: caller(req)?.to_string(),
            action,
            detail: format!("{:?}", req.get_ref()),
        };
        if let Err(e) = require(req, &[Role::Admin], action) {
            self.audit(
                &change.who,
                action,
                &change.detail,
                &format!("refused: {e}"),
            )
            .await;
            return Err(e.into());
        }
        Ok(change)
    }

    async fn audited<R>(
        &self,
        c: Change,
        result: Result<Response<R>, Status>,
    ) -> Result<Response<R>, Status> {
        let outcome = match &result {
            Ok(_) => "ok".to_string(),
            Err(s) => format!("failed: {}", s.message()),
        };
        self.audit(&c.who, c.action, &c.detail, &outcome).await;
        result
    }

    async fn audit(&self, who: &str, action: &str, detail: &str, outcome: &str) {
        if let Err(e) = self
            .state
            .repo
            .catalog
            .record_audit(who, action, detail, outcome)
            .await
        {
            tracing::error!(%who, action, error = %e, "could not write the audit log");
        }
    }

    async fn job_info(&self, id: JobId) -> OpsResult<pb::JobInfo> {
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
    ) -> OpsResult<pb::JobInfo> {
        let id = jobs::dispatch(
            &self.state,
            kind,
            agent,
            instance,
            params,
            bytes_total,
            spec,
        )
        .await?;
        self.job_info(id).await
    }

    async fn dispatch_restore(&self, plan: ops::restore::RestorePlan) -> OpsResult<pb::JobInfo> {
        let instance = plan.job.instance.clone();
        self.dispatch(
            "restore",
            &plan.host,
            &instance,
            plan.params,
            plan.bytes_total,
            pb::job::Spec::Restore(plan.job),
        )
        .await
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn list_agents(
        &self,
        req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        read(&req, "list agents")?;
        let agents = self
            .state
            .repo
            .catalog
            .agents()
            .await
            .map_err(OpsError::from)?;
        let connected = self.state.connected_agents().await?;
        let agents = agents
            .iter()
            .map(|a| convert::agent(a, connected.contains(&a.name)))
            .collect();
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }

    async fn list_backups(
        &self,
        req: Request<pb::ListBackupsRequest>,
    ) -> Result<Response<pb::ListBackupsResponse>, Status> {
        read(&req, "list backups")?;
        let r = req.into_inner();
        let filter = (!r.instance.is_empty()).then_some(r.instance.as_str());
        let rows = self
            .state
            .repo
            .catalog
            .list_backups(filter)
            .await
            .map_err(OpsError::from)?;
        Ok(Response::new(pb::ListBackupsResponse {
            backups: rows.iter().map(convert::backup_summary).collect(),
        }))
    }

    async fn get_backup(
        &self,
        req: Request<pb::GetBackupRequest>,
    ) -> Result<Response<pb::BackupDetail>, Status> {
        read(&req, "read backups")?;
        let id = BackupId(req.into_inner().id);
        let b = self.state.backup(id).await?;
        let base = self
            .state
            .repo
            .catalog
            .base_backup(id)
            .await
            .map_err(OpsError::from)?;
        let binlog = self
            .state
            .repo
            .catalog
            .binlog_coordinates(id)
            .await
            .map_err(OpsError::from)?;
        Ok(Response::new(convert::backup_detail(
            &b,
            base.as_ref(),
            binlog.as_ref(),
        )))
    }

    async fn delete_backup(
        &self,
        req: Request<pb::DeleteBackupRequest>,
    ) -> Result<Response<pb::BackupSummary>, Status> {
        let change = self.change(&req, "delete backups").await?;
        let r = req.get_ref();
        let result = ops::backups::delete(&self.state, BackupId(r.id), &change.who, &r.reason)
            .await
            .map(|b| Response::new(convert::backup_summary(&b)))
            .map_err(Status::from);
        self.audited(change, result).await
    }

    async fn start_backup(
        &self,
        req: Request<pb::StartBackupRequest>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        let change = self.change(&req, "start backups").await?;
        let result = self.start_backup_unaudited(req).await;
        self.audited(change, result).await
    }

    async fn start_restore(
        &self,
        req: Request<pb::StartRestoreRequest>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        let change = self.change(&req, "start restores").await?;
        let result = self.start_restore_unaudited(req).await;
        self.audited(change, result).await
    }

    async fn get_job(
        &self,
        req: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        read(&req, "read jobs")?;
        Ok(Response::new(
            self.job_info(JobId(req.into_inner().id)).await?,
        ))
    }

    async fn start_pitr_restore(
        &self,
        req: Request<pb::StartPitrRestoreRequest>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        let change = self.change(&req, "start restores").await?;
        let result = self.start_pitr_restore_unaudited(req).await;
        self.audited(change, result).await
    }

    async fn pitr_window(
        &self,
        req: Request<pb::PitrWindowRequest>,
    ) -> Result<Response<pb::PitrWindowInfo>, Status> {
        read(&req, "read recovery windows")?;
        let inst = ops::instance(&self.state, &req.get_ref().instance).await?;
        Ok(Response::new(
            ops::window::window_info(&self.state, &inst).await?,
        ))
    }

    async fn fleet_status(
        &self,
        req: Request<pb::FleetStatusRequest>,
    ) -> Result<Response<pb::FleetStatusResponse>, Status> {
        read(&req, "read the fleet status")?;
        Ok(Response::new(pb::FleetStatusResponse {
            instances: ops::status::fleet_status(&self.state).await?,
        }))
    }

    async fn start_drill(
        &self,
        req: Request<pb::StartDrillRequest>,
    ) -> Result<Response<pb::StartDrillResponse>, Status> {
        let change = self.change(&req, "start drills").await?;
        let result = self.start_drill_unaudited(req).await;
        self.audited(change, result).await
    }

    async fn list_drills(
        &self,
        req: Request<pb::ListDrillsRequest>,
    ) -> Result<Response<pb::ListDrillsResponse>, Status> {
        read(&req, "read drills")?;
        let r = req.into_inner();
        let instance = (!r.instance.is_empty()).then_some(r.instance.as_str());
        let limit = if r.limit == 0 { 50 } else { r.limit };
        let rows = self
            .state
            .repo
            .catalog
            .list_drills(instance, limit)
            .await
            .map_err(OpsError::from)?;
        Ok(Response::new(pb::ListDrillsResponse {
            drills: rows.iter().map(ops::status::drill_info).collect(),
        }))
    }

    async fn get_drill(
        &self,
        req: Request<pb::GetDrillRequest>,
    ) -> Result<Response<pb::DrillInfo>, Status> {
        read(&req, "read drills")?;
        let id = req.get_ref().id;
        let d = self
            .state
            .repo
            .catalog
            .drill(id)
            .await
            .map_err(OpsError::from)?
            .ok_or_else(|| OpsError::NotFound(format!("drill {id} does not exist")))?;
        Ok(Response::new(ops::status::drill_info(&d)))
    }

    async fn get_schedule(
        &self,
        req: Request<pb::GetScheduleRequest>,
    ) -> Result<Response<pb::ScheduleInfo>, Status> {
        read(&req, "read schedules")?;
        Ok(Response::new(
            schedule::policy::info(&self.state, &req.get_ref().instance).await?,
        ))
    }

    async fn set_policy(
        &self,
        req: Request<pb::SetPolicyRequest>,
    ) -> Result<Response<pb::ScheduleInfo>, Status> {
        let change = self.change(&req, "change policies").await?;
        let result = self.set_policy_unaudited(req).await;
        self.audited(change, result).await
    }

    async fn verify(
        &self,
        req: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyReport>, Status> {
        let change = self.change(&req, "verify the store").await?;
        let result = self.verify_unaudited(req).await;
        self.audited(change, result).await
    }

    async fn list_keys(
        &self,
        req: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::KeysInfo>, Status> {
        read(&req, "list the encryption keys")?;
        Ok(Response::new(ops::keys::info(&self.state).await?))
    }

    async fn rotate_keys(
        &self,
        req: Request<pb::RotateKeysRequest>,
    ) -> Result<Response<pb::KeysInfo>, Status> {
        let change = self.change(&req, "rotate the encryption keys").await?;
        let result = self.rotate_keys_unaudited(req).await;
        self.audited(change, result).await
    }

    async fn revoke_certificate(
        &self,
        req: Request<pb::RevokeCertificateRequest>,
    ) -> Result<Response<pb::RevokeCertificateResponse>, Status> {
        let change = self.change(&req, "revoke certificates").await?;
        let result = self.revoke_unaudited(req).await;
        self.audited(change, result).await
    }

    async fn retention_plan(
        &self,
        req: Request<pb::RetentionPlanRequest>,
    ) -> Result<Response<pb::RetentionPlanResponse>, Status> {
        read(&req, "read retention plans")?;
        Ok(Response::new(
            ops::retention::plan(&self.state, &req.get_ref().instance).await?,
        ))
    }

    async fn retention_apply(
        &self,
        req: Request<pb::RetentionPlanRequest>,
    ) -> Result<Response<pb::RetentionApplyResponse>, Status> {
        let change = self.change(&req, "apply retention").await?;
        let result = ops::retention::apply(&self.state, &req.get_ref().instance)
            .await
            .map(Response::new)
            .map_err(Status::from);
        self.audited(change, result).await
    }

    async fn list_audit(
        &self,
        req: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        read(&req, "read the audit log")?;
        let limit = match req.get_ref().limit {
            0 => 50,
            n => n.min(10_000),
        };
        let entries = self
            .state
            .repo
            .catalog
            .audit_log(limit)
            .await
            .map_err(OpsError::from)?
            .into_iter()
            .map(|a| pb::AuditEntry {
                at: a.at,
                who: a.who,
                action: a.action,
                detail: a.detail,
                outcome: a.outcome,
            })
            .collect();
        Ok(Response::new(pb::ListAuditResponse { entries }))
    }
}

/// The changes, audited by their wrappers in the service above.
impl AdminApi {
    /// Refuse a certificate from now on: every call it makes, and its job stream at once.
    async fn revoke_unaudited(
        &self,
        req: Request<pb::RevokeCertificateRequest>,
    ) -> Result<Response<pb::RevokeCertificateResponse>, Status> {
        let by = caller(&req)?.to_string();
        Ok(Response::new(
            ops::revoked::revoke(&self.state, &by, req.into_inner()).await?,
        ))
    }

    async fn start_backup_unaudited(
        &self,
        req: Request<pb::StartBackupRequest>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        let r = req.into_inner();
        let id = jobs::start_backup(&self.state, &r.instance, &r.kind).await?;
        Ok(Response::new(self.job_info(id).await?))
    }

    async fn start_restore_unaudited(
        &self,
        req: Request<pb::StartRestoreRequest>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        let plan = ops::restore::plan_logical_restore(&self.state, req.get_ref()).await?;
        Ok(Response::new(self.dispatch_restore(plan).await?))
    }

    async fn start_pitr_restore_unaudited(
        &self,
        req: Request<pb::StartPitrRestoreRequest>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        let plan = ops::restore::plan_restore(&self.state, req.get_ref()).await?;
        Ok(Response::new(self.dispatch_restore(plan).await?))
    }

    async fn start_drill_unaudited(
        &self,
        req: Request<pb::StartDrillRequest>,
    ) -> Result<Response<pb::StartDrillResponse>, Status> {
        Ok(Response::new(
            drill::request_run(&self.state, req.get_ref()).await?,
        ))
    }

    async fn set_policy_unaudited(
        &self,
        req: Request<pb::SetPolicyRequest>,
    ) -> Result<Response<pb::ScheduleInfo>, Status> {
        Ok(Response::new(
            schedule::policy::set(&self.state, req.get_ref()).await?,
        ))
    }

    async fn verify_unaudited(
        &self,
        req: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyReport>, Status> {
        Ok(Response::new(
            ops::verify::run(&self.state, req.get_ref()).await?,
        ))
    }

    async fn rotate_keys_unaudited(
        &self,
        _req: Request<pb::RotateKeysRequest>,
    ) -> Result<Response<pb::KeysInfo>, Status> {
        Ok(Response::new(ops::keys::rotate(&self.state).await?))
    }
}
