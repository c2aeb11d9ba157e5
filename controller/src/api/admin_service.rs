//! The service operators call through the tidemark CLI. Admins may do everything; viewers
//! may only read. Every change, and every refused attempt at one, goes to the audit log.

use std::sync::Arc;

use serde_json::json;
use tidemark_core::identity::Role;
use tidemark_core::ids::{BackupId, JobId};
use tidemark_proto as pb;
use tidemark_proto::admin_service_server::AdminService;
use tonic::{Request, Response, Status};

use super::auth::{caller, require};
use super::convert;
use crate::catalog::{BackupRow, BackupStatus, DrillState};
use crate::cron::Cron;
use crate::drill::{self, target::TargetSpec};
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

/// The part a restore reads: the named database, or the backup's only one.
/// The part to restore, and the database to take from it when it holds several (a
/// MariaDB dump holds every database of the instance in one part).
fn restore_part(b: &BackupRow, database: &str) -> OpsResult<(String, String)> {
    let (dbs, part): (Vec<&str>, Option<&str>) = if b.databases.is_empty() {
        let dbs = b
            .parts
            .iter()
            .filter_map(|p| p.name.strip_prefix("db:"))
            .collect();
        (dbs, None)
    } else {
        let part = b.parts.first().map(|p| p.name.as_str());
        (b.databases.iter().map(String::as_str).collect(), part)
    };
    let pick = |db: &str| match part {
        Some(p) => (p.to_string(), db.to_string()),
        None => (format!("db:{db}"), String::new()),
    };
    if !database.is_empty() {
        if dbs.contains(&database) {
            return Ok(pick(database));
        }
        return Err(OpsError::NotFound(format!(
            "backup {} holds no database {database:?}; it holds: {}",
            b.id,
            dbs.join(", ")
        )));
    }
    match dbs.as_slice() {
        [one] => Ok(pick(one)),
        [] => Err(OpsError::FailedPrecondition(format!(
            "backup {} holds no database dump",
            b.id
        ))),
        many => Err(OpsError::InvalidArgument(format!(
            "backup {} holds several databases ({}); pick one with --database",
            b.id,
            many.join(", ")
        ))),
    }
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
            schedule_info(&self.state, &req.get_ref().instance).await?,
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
        let r = req.into_inner();
        let id: tidemark_core::identity::Identity =
            r.identity
                .parse()
                .map_err(|e: tidemark_core::identity::IdentityError| {
                    OpsError::InvalidArgument(e.to_string())
                })?;
        if r.fingerprint.len() != 64 || !r.fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(OpsError::InvalidArgument(format!(
                "{:?} is not a certificate fingerprint (64 hex digits, the SHA-256 of its DER)",
                r.fingerprint
            ))
            .into());
        }
        let fingerprint = r.fingerprint.to_ascii_lowercase();
        let newly = self
            .state
            .repo
            .catalog
            .revoke_certificate(&fingerprint, &id.to_string(), &by)
            .await
            .map_err(OpsError::from)?;
        self.state.revoked.add(&fingerprint);
        if matches!(id.role, Role::Agent | Role::Sandbox) {
            self.state
                .sessions
                .close(&id.name, "its certificate was revoked");
        }
        tracing::warn!(identity = %id, %fingerprint, "certificate revoked");
        Ok(Response::new(pb::RevokeCertificateResponse {
            identity: id.to_string(),
            fingerprint,
            already: !newly,
        }))
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
        let r = req.into_inner();
        let cat = &self.state.repo.catalog;
        let id = BackupId(r.backup_id);
        let b = self.state.backup(id).await?;
        if b.status != BackupStatus::Complete {
            let why = if b.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", b.reason)
            };
            return Err(OpsError::FailedPrecondition(format!(
                "backup {id} is {}, not complete{why}; only complete backups can be restored",
                b.status
            ))
            .into());
        }
        if r.into_database.is_empty() {
            return Err(OpsError::InvalidArgument(
                "name the new database with --into-database".into(),
            )
            .into());
        }
        let (part, source_database) = restore_part(&b, &r.database)?;
        let host = r.host.strip_prefix("agent:").unwrap_or(&r.host);
        let agent = cat.agent(host).await.map_err(OpsError::from)?;
        let agent = agent.ok_or_else(|| {
            OpsError::NotFound(format!(
                "no agent {host:?} has registered; tidemark agents lists them"
            ))
        })?;
        let owned: Vec<&str> = agent.instances.iter().map(|i| i.name.as_str()).collect();
        let instance = if !r.target_instance.is_empty() {
            if !owned.contains(&r.target_instance.as_str()) {
                return Err(OpsError::NotFound(format!(
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
            return Err(OpsError::InvalidArgument(format!(
                "agent {host} has several instances ({}); pick one with --target-instance",
                owned.join(", ")
            ))
            .into());
        };
        let source_engine = cat
            .instance(&b.instance)
            .await
            .map_err(OpsError::from)?
            .map(|i| i.engine);
        let target_engine = agent
            .instances
            .iter()
            .find(|i| i.name == instance)
            .map(|i| i.engine);
        if let (Some(s), Some(t)) = (&source_engine, &target_engine)
            && s != t
        {
            return Err(OpsError::InvalidArgument(format!(
                "backup {id} is of a {s} instance, and instance {instance} on {host} is {t}; restore onto a {s} instance"
            ))
            .into());
        }
        if let Some(bad) = cat
            .unavailable_chunks(id, &part, 1)
            .await
            .map_err(OpsError::from)?
            .first()
        {
            return Err(OpsError::DataLoss(format!(
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
            database: source_database,
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

    async fn start_pitr_restore_unaudited(
        &self,
        req: Request<pb::StartPitrRestoreRequest>,
    ) -> Result<Response<pb::JobInfo>, Status> {
        let (host, params, job, total) =
            ops::restore::plan_restore(&self.state, req.get_ref()).await?;
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

    async fn start_drill_unaudited(
        &self,
        req: Request<pb::StartDrillRequest>,
    ) -> Result<Response<pb::StartDrillResponse>, Status> {
        let r = req.into_inner();
        let spec = TargetSpec::parse(&r.target).map_err(OpsError::InvalidArgument)?;
        let mut drills = Vec::new();
        if r.all {
            if !r.instance.is_empty() {
                return Err(OpsError::InvalidArgument(
                    "give --instance NAME or --all, not both".into(),
                )
                .into());
            }
            // Every instance is tried; one that cannot be drilled is recorded as a failed
            // drill with the reason, so it shows in the history and the alerts.
            for agent in self
                .state
                .repo
                .catalog
                .agents()
                .await
                .map_err(OpsError::from)?
            {
                for inst in &agent.instances {
                    match drill::request(&self.state, inst, &spec, &r.sandbox).await {
                        Ok(d) => drills.push(ops::status::drill_info(&d)),
                        Err(e) => {
                            let cat = &self.state.repo.catalog;
                            let id = cat
                                .create_drill(&inst.name, 0, "", &r.sandbox)
                                .await
                                .map_err(OpsError::from)?;
                            cat.end_drill(id, DrillState::Failed, &e.to_string())
                                .await
                                .map_err(OpsError::from)?;
                            if let Some(d) = cat.drill(id).await.map_err(OpsError::from)? {
                                drills.push(ops::status::drill_info(&d));
                            }
                        }
                    }
                }
            }
        } else {
            let inst = ops::instance(&self.state, &r.instance).await?;
            let d = drill::request(&self.state, &inst, &spec, &r.sandbox).await?;
            drills.push(ops::status::drill_info(&d));
        }
        Ok(Response::new(pb::StartDrillResponse { drills }))
    }

    async fn set_policy_unaudited(
        &self,
        req: Request<pb::SetPolicyRequest>,
    ) -> Result<Response<pb::ScheduleInfo>, Status> {
        let r = req.into_inner();
        ops::instance(&self.state, &r.instance).await?;
        if !schedule::KINDS.contains(&r.kind.as_str()) {
            return Err(OpsError::InvalidArgument(format!(
                "schedule kind {:?} is not one of {}",
                r.kind,
                schedule::KINDS.join(", ")
            ))
            .into());
        }
        let cat = &self.state.repo.catalog;
        if r.reset {
            let configured = self
                .state
                .drills
                .policies
                .iter()
                .find(|p| p.name == r.instance)
                .and_then(|p| {
                    p.schedules()
                        .into_iter()
                        .find(|(k, _)| *k == r.kind)
                        .map(|(_, c)| c.to_string())
                });
            cat.reset_schedule(&r.instance, &r.kind, configured.as_deref())
                .await
                .map_err(OpsError::from)?;
        } else {
            let cron = r.cron.trim();
            if cron != "off" {
                Cron::parse(cron).map_err(OpsError::InvalidArgument)?;
            }
            cat.set_schedule(&r.instance, &r.kind, cron)
                .await
                .map_err(OpsError::from)?;
        }
        tracing::info!(instance = %r.instance, kind = %r.kind, cron = %r.cron, reset = r.reset, "policy changed");
        Ok(Response::new(
            schedule_info(&self.state, &r.instance).await?,
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

async fn schedule_info(state: &State, instance: &str) -> OpsResult<pb::ScheduleInfo> {
    let now = crate::catalog::now();
    let mut policies: Vec<pb::PolicyEntry> = state
        .repo
        .catalog
        .schedules()
        .await?
        .into_iter()
        .filter(|s| instance.is_empty() || s.instance == instance)
        .map(|s| {
            // The next slot after the last one that fired, or now if that one is overdue.
            let from = s.last_slot.unwrap_or(s.updated_at);
            let next = schedule::next_run(&s.cron, from)
                .map(|n| if n < now { now } else { n })
                .unwrap_or(0);
            pb::PolicyEntry {
                instance: s.instance,
                kind: s.kind,
                cron: s.cron,
                origin: s.origin,
                next_run: next,
                last_slot: s.last_slot.unwrap_or(0),
            }
        })
        .collect();
    policies.sort_by_key(|p| (p.next_run == 0, p.next_run));
    let filter = (!instance.is_empty()).then_some(instance);
    let runs = state
        .repo
        .catalog
        .runs(filter, 50)
        .await?
        .into_iter()
        .map(|r| pb::ScheduledRun {
            id: r.id,
            instance: r.instance,
            kind: r.kind,
            slot: r.slot,
            missed: r.missed,
            attempt: r.attempt,
            state: r.state.to_string(),
            job_id: r.job_id.map(|j| j.0).unwrap_or(0),
            drill_id: r.drill_id.unwrap_or(0),
            message: r.message,
            created_at: r.created_at,
            finished_at: r.finished_at.unwrap_or(0),
            next_attempt_at: r.next_attempt_at.unwrap_or(0),
        })
        .collect();
    Ok(pb::ScheduleInfo { policies, runs })
}
