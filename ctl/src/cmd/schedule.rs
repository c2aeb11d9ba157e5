//! `tidemark schedule` (next runs and recent scheduled runs) and `tidemark policy`
//! (change an instance's schedules).

use std::path::Path;

use serde_json::json;
use tidemark_core::timefmt::utc;
use tidemark_proto::{GetScheduleRequest, ScheduleInfo, SetPolicyRequest};

use crate::client::{self, CliError, Exit};
use crate::output::{Format, print_json, print_table};

#[derive(clap::Args)]
pub struct ScheduleArgs {
    /// One instance only.
    #[arg(long)]
    instance: Option<String>,
}

#[derive(clap::Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    cmd: PolicyCmd,
}

#[derive(clap::Subcommand)]
enum PolicyCmd {
    /// The schedules in force, and where each came from (config or cli).
    Show {
        #[arg(long)]
        instance: Option<String>,
    },
    /// Set schedules: cron expressions in UTC ("0 2 * * *", "@daily"), or "off".
    Set {
        #[arg(long)]
        instance: String,
        /// Logical dumps (pg_dump of each database).
        #[arg(long)]
        logical: Option<String>,
        /// Base backups.
        #[arg(long)]
        base: Option<String>,
        /// Drills on a sandbox.
        #[arg(long)]
        drill: Option<String>,
    },
    /// Return a schedule to what the controller's config file says.
    Reset {
        #[arg(long)]
        instance: String,
        #[arg(long, value_parser = ["logical", "base", "drill"])]
        kind: String,
    },
}

fn when(t: i64) -> String {
    if t == 0 { "-".into() } else { utc(t) }
}

fn print_policies(info: &ScheduleInfo) {
    let rows: Vec<Vec<String>> = info
        .policies
        .iter()
        .map(|p| {
            let last = info
                .runs
                .iter()
                .find(|r| r.instance == p.instance && r.kind == p.kind)
                .map(|r| format!("{} ({})", r.state, when(r.created_at)))
                .unwrap_or_else(|| "-".into());
            vec![
                p.instance.clone(),
                p.kind.clone(),
                p.cron.clone(),
                p.origin.clone(),
                if p.cron == "off" {
                    "off".into()
                } else {
                    when(p.next_run)
                },
                last,
            ]
        })
        .collect();
    print_table(
        &[
            "INSTANCE", "KIND", "SCHEDULE", "FROM", "NEXT RUN", "LAST RUN",
        ],
        &rows,
    );
}

fn info_json(info: &ScheduleInfo) -> serde_json::Value {
    json!({
        "policies": info.policies.iter().map(|p| json!({
            "instance": p.instance, "kind": p.kind, "cron": p.cron, "origin": p.origin,
            "next_run": p.next_run, "last_slot": p.last_slot,
        })).collect::<Vec<_>>(),
        "runs": info.runs.iter().map(|r| json!({
            "id": r.id, "instance": r.instance, "kind": r.kind, "slot": r.slot, "missed": r.missed,
            "attempt": r.attempt, "state": r.state, "job_id": r.job_id, "drill_id": r.drill_id,
            "message": r.message, "created_at": r.created_at, "finished_at": r.finished_at,
            "next_attempt_at": r.next_attempt_at,
        })).collect::<Vec<_>>(),
    })
}

pub async fn schedule(
    config: Option<&Path>,
    format: Format,
    args: ScheduleArgs,
) -> Result<Exit, CliError> {
    let mut c = client::connect(config).await?;
    let info = c
        .get_schedule(GetScheduleRequest {
            instance: args.instance.unwrap_or_default(),
        })
        .await?
        .into_inner();
    if format == Format::Json {
        print_json(&info_json(&info));
        return Ok(Exit::Ok);
    }
    print_policies(&info);
    if !info.runs.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = info
            .runs
            .iter()
            .take(10)
            .map(|r| {
                vec![
                    r.id.to_string(),
                    r.instance.clone(),
                    r.kind.clone(),
                    when(r.slot),
                    r.attempt.to_string(),
                    r.state.clone(),
                    r.message.clone(),
                ]
            })
            .collect();
        print_table(
            &[
                "RUN", "INSTANCE", "KIND", "SLOT", "ATTEMPT", "STATE", "MESSAGE",
            ],
            &rows,
        );
    }
    Ok(Exit::Ok)
}

pub async fn policy(
    config: Option<&Path>,
    format: Format,
    args: PolicyArgs,
) -> Result<Exit, CliError> {
    let mut c = client::connect(config).await?;
    let info = match args.cmd {
        PolicyCmd::Show { instance } => c
            .get_schedule(GetScheduleRequest {
                instance: instance.unwrap_or_default(),
            })
            .await?
            .into_inner(),
        PolicyCmd::Set {
            instance,
            logical,
            base,
            drill,
        } => {
            let changes: Vec<(&str, String)> =
                [("logical", logical), ("base", base), ("drill", drill)]
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| (k, v)))
                    .collect();
            if changes.is_empty() {
                return Err(CliError::new(
                    Exit::Usage,
                    "nothing to set; give --logical, --base or --drill with a cron expression or off",
                ));
            }
            let mut last = None;
            for (kind, cron) in changes {
                last = Some(
                    c.set_policy(SetPolicyRequest {
                        instance: instance.clone(),
                        kind: kind.into(),
                        cron,
                        reset: false,
                    })
                    .await?
                    .into_inner(),
                );
            }
            last.expect("at least one change")
        }
        PolicyCmd::Reset { instance, kind } => c
            .set_policy(SetPolicyRequest {
                instance,
                kind,
                cron: String::new(),
                reset: true,
            })
            .await?
            .into_inner(),
    };
    if format == Format::Json {
        print_json(&info_json(&info));
    } else {
        print_policies(&info);
    }
    Ok(Exit::Ok)
}
