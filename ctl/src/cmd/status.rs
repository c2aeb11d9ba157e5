//! `tidemark status`: one line per instance — recovery window, archiving health, backup ages
//! and alerts.

use std::path::Path;

use serde_json::json;
use tidemark_core::duration::human;
use tidemark_core::timefmt;
use tidemark_proto::FleetStatusRequest;

use crate::client::{self, CliError, Exit};
use crate::cmd::pitr_window::window_json;
use crate::output::{Format, print_json, print_table};

fn age(now: i64, t: i64) -> String {
    if t == 0 {
        "never".into()
    } else {
        human(std::time::Duration::from_secs((now - t).max(0) as u64))
    }
}

pub async fn run(config: Option<&Path>, format: Format) -> Result<Exit, CliError> {
    let mut c = client::connect(config).await?;
    let list = c
        .fleet_status(FleetStatusRequest {})
        .await?
        .into_inner()
        .instances;
    if format == Format::Json {
        let v: Vec<_> = list
            .iter()
            .map(|s| {
                let a = s.archiver.clone().unwrap_or_default();
                json!({
                    "instance": s.instance, "agent": s.agent, "engine": s.engine,
                    "connected": s.connected,
                    "window": s.window.as_ref().map(window_json),
                    "archiver": {
                        "last_archived_at": a.last_archived_at, "last_archived_wal": a.last_archived_wal,
                        "failed_count": a.failed_count, "last_failed_at": a.last_failed_at,
                        "last_failed_wal": a.last_failed_wal, "ready": a.ready, "error": a.error,
                        "reported_at": s.archiver_reported_at,
                    },
                    "last_base_backup": s.last_base_backup,
                    "newest_wal_stored_at": s.newest_wal_stored_at,
                    "last_logical_backup": s.last_logical_backup,
                    "alerts": s.alerts,
                    "last_drill": s.last_drill.as_ref().map(crate::cmd::drill::drill_json),
                })
            })
            .collect();
        print_json(&v);
        return Ok(Exit::Ok);
    }
    let now = tidemark_core::timefmt::now();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            let w = s.window.clone().unwrap_or_default();
            let a = s.archiver.clone().unwrap_or_default();
            let window = if w.restorable {
                format!(
                    "{} .. {}",
                    timefmt::utc(w.oldest_time),
                    timefmt::utc(w.newest_time)
                )
            } else {
                "none".into()
            };
            vec![
                s.instance.clone(),
                format!("{}{}", s.agent, if s.connected { "" } else { " (offline)" }),
                window,
                if w.gap.is_empty() {
                    "-".into()
                } else {
                    w.gap.clone()
                },
                age(now, s.newest_wal_stored_at),
                a.ready.to_string(),
                a.failed_count.to_string(),
                age(now, s.last_base_backup),
                match &s.last_drill {
                    Some(d) if d.finished_at > 0 => {
                        format!("{} {} ago", d.state, age(now, d.finished_at))
                    }
                    Some(d) => d.state.clone(),
                    None => "never".into(),
                },
                s.alerts.len().to_string(),
            ]
        })
        .collect();
    print_table(
        &[
            "INSTANCE",
            "AGENT",
            "RECOVERY WINDOW",
            "GAP",
            "ARCHIVED",
            "READY",
            "FAILED",
            "BASE BACKUP",
            "LAST DRILL",
            "ALERTS",
        ],
        &rows,
    );
    for s in &list {
        for a in &s.alerts {
            println!("alert {}: {a}", s.instance);
        }
    }
    Ok(Exit::Ok)
}
