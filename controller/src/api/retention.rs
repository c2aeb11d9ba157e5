//! `tidemark retention plan`: the catalog's facts fed to [`crate::retention`]'s planner.

use tidemark_proto as pb;

use super::State;
use super::error::ApiResult;
use crate::catalog::InstanceRow;
use crate::retention::{self, BackupFacts, Kind};

pub async fn plan(state: &State, instance: &str) -> ApiResult<pb::RetentionPlanResponse> {
    let instances: Vec<InstanceRow> = if instance.is_empty() {
        let mut all = Vec::new();
        for a in state.catalog.agents().await? {
            all.extend(a.instances);
        }
        all
    } else {
        vec![super::recovery::instance(state, instance).await?]
    };
    let in_use = state.catalog.backups_in_use().await?;
    let mut items = Vec::new();
    for inst in &instances {
        items.extend(plan_instance(state, inst, &in_use).await?);
    }
    Ok(pb::RetentionPlanResponse { items })
}

async fn plan_instance(
    state: &State,
    inst: &InstanceRow,
    in_use: &[i64],
) -> ApiResult<Vec<pb::RetentionItem>> {
    let policy = state.retention.get(&inst.name).cloned().unwrap_or_default();
    let mariadb = inst.engine == "mariadb";
    let mut facts = Vec::new();
    for b in state.catalog.list_backups(Some(&inst.name)).await? {
        // Only complete backups are planned: running ones are not done, and failed or
        // corrupt ones restore nothing.
        if b.status != "complete" {
            continue;
        }
        let kind = if b.kind == "base" {
            Kind::Base
        } else {
            Kind::Logical
        };
        let start_log = match kind {
            Kind::Logical => None,
            Kind::Base if mariadb => state
                .catalog
                .binlog_coordinates(b.id)
                .await?
                .map(|c| c.file)
                .filter(|f| !f.is_empty()),
            Kind::Base => state.catalog.base_backup(b.id).await?.map(|bb| {
                let size = inst.segment_size();
                tidemark_core::wal::segment_name(bb.timeline, bb.start_lsn.segno(size), size)
            }),
        };
        facts.push(BackupFacts {
            id: b.id.0,
            kind,
            stop: b.finished_at.unwrap_or(b.started_at),
            start_log,
            in_use: in_use.contains(&b.id.0),
        });
    }
    let decisions = retention::plan_backups(&policy, crate::catalog::now(), &facts);
    let logs = state.catalog.archived_log_names(&inst.name).await?;
    let log_kind = if mariadb { "binlog" } else { "wal" };
    let mut out: Vec<pb::RetentionItem> = facts
        .iter()
        .map(|f| {
            let d = &decisions[&f.id];
            item(
                inst,
                if f.kind == Kind::Base {
                    "base"
                } else {
                    "logical"
                },
                f.id,
                "",
                f.stop,
                d,
            )
        })
        .collect();
    out.sort_by_key(|i| i.backup_id);
    out.extend(
        retention::plan_logs(&facts, &decisions, &logs)
            .iter()
            .map(|(name, d)| item(inst, log_kind, 0, name, 0, d)),
    );
    Ok(out)
}

fn item(
    inst: &InstanceRow,
    kind: &str,
    id: i64,
    name: &str,
    at: i64,
    d: &retention::Decision,
) -> pb::RetentionItem {
    pb::RetentionItem {
        instance: inst.name.clone(),
        kind: kind.into(),
        backup_id: id,
        name: name.into(),
        at,
        keep: d.kept(),
        reasons: if d.kept() {
            d.keep.clone()
        } else {
            vec![d.delete_reason.clone()]
        },
    }
}
