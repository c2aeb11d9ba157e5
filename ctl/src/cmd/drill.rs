//! `tidemark drill run|history|show`: prove that backups restore.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tidemark_core::timefmt::pg_timestamp;
use tidemark_proto::{DrillInfo, GetDrillRequest, ListDrillsRequest, StartDrillRequest};

use crate::client::{self, CliError, Exit};
use crate::output::{Format, print_json, print_table};

/// Say why `--wait` is waiting once a drill has been queued this long.
const QUEUED_HINT: Duration = Duration::from_secs(60);

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Restore an instance onto a sandbox to a past point and check it.
    Run(RunArgs),
    /// Past drills, newest first.
    History {
        #[arg(long)]
        instance: Option<String>,
        /// How many to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// One drill with its evidence.
    Show { id: i64 },
}

#[derive(clap::Args)]
struct RunArgs {
    /// The instance to drill.
    #[arg(long, required_unless_present = "all", conflicts_with = "all")]
    instance: Option<String>,
    /// Drill every instance, as many at a time as the sandbox pool allows.
    #[arg(long)]
    all: bool,
    /// Where to recover to: a time (2026-11-25 09:00:00Z), a duration ago (90m), or
    /// random. Default: one hour ago, or the middle of a shorter recovery window.
    #[arg(long)]
    target: Option<String>,
    /// Run on this sandbox only.
    #[arg(long)]
    sandbox: Option<String>,
    /// Wait for the verdict; exit 1 unless every drill passed.
    #[arg(long)]
    wait: bool,
}

pub async fn run(config: Option<&Path>, format: Format, args: Args) -> Result<Exit, CliError> {
    let mut c = client::connect(config).await?;
    match args.cmd {
        Sub::Run(a) => {
            let started = c
                .start_drill(StartDrillRequest {
                    instance: a.instance.unwrap_or_default(),
                    all: a.all,
                    target: a.target.unwrap_or_default(),
                    sandbox: a.sandbox.unwrap_or_default(),
                })
                .await?
                .into_inner()
                .drills;
            let mut drills = started;
            if a.wait {
                let start = std::time::Instant::now();
                let mut told = false;
                for d in drills.iter_mut() {
                    while matches!(d.state.as_str(), "queued" | "running") {
                        if d.state == "queued" && !told && start.elapsed() > QUEUED_HINT {
                            eprintln!(
                                "drill {} is still queued: no idle sandbox of its version is connected (tidemark agents lists them)",
                                d.id
                            );
                            told = true;
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        *d = c
                            .get_drill(GetDrillRequest { id: d.id })
                            .await?
                            .into_inner();
                    }
                }
            }
            if format == Format::Json {
                print_json(&drills.iter().map(drill_json).collect::<Vec<_>>());
            } else if a.wait {
                for d in &drills {
                    print_drill(d);
                    println!();
                }
            } else {
                for d in &drills {
                    if d.state == "failed" {
                        println!("drill {} of {} cannot run: {}", d.id, d.instance, d.reason);
                    } else {
                        println!(
                            "drill {} of {} {}: target {} ({})",
                            d.id,
                            d.instance,
                            d.state,
                            pg_timestamp(d.target),
                            d.target_reason
                        );
                    }
                }
            }
            let all_passed = drills.iter().all(|d| d.state == "passed");
            let any_failed = drills.iter().any(|d| d.state == "failed");
            Ok(if (a.wait && !all_passed) || any_failed {
                Exit::Failed
            } else {
                Exit::Ok
            })
        }
        Sub::History { instance, limit } => {
            let drills = c
                .list_drills(ListDrillsRequest {
                    instance: instance.unwrap_or_default(),
                    limit,
                })
                .await?
                .into_inner()
                .drills;
            if format == Format::Json {
                print_json(&drills.iter().map(drill_json).collect::<Vec<_>>());
                return Ok(Exit::Ok);
            }
            let rows: Vec<Vec<String>> = drills
                .iter()
                .map(|d| {
                    vec![
                        d.id.to_string(),
                        d.instance.clone(),
                        d.state.clone(),
                        if d.target == 0 {
                            "-".into()
                        } else {
                            pg_timestamp(d.target)
                        },
                        dash(&d.sandbox),
                        secs(d.rto_ms),
                        if d.state == "passed" || d.rpo_secs < 0 {
                            format!("{}s", d.rpo_secs.max(0))
                        } else {
                            "-".into()
                        },
                        short(&d.reason),
                    ]
                })
                .collect();
            print_table(
                &[
                    "ID", "INSTANCE", "STATE", "TARGET", "SANDBOX", "RTO", "RPO", "REASON",
                ],
                &rows,
            );
            Ok(Exit::Ok)
        }
        Sub::Show { id } => {
            let d = c.get_drill(GetDrillRequest { id }).await?.into_inner();
            if format == Format::Json {
                print_json(&drill_json(&d));
            } else {
                print_drill(&d);
            }
            Ok(Exit::Ok)
        }
    }
}

fn dash(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.into() }
}

fn secs(ms: u64) -> String {
    if ms == 0 {
        "-".into()
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

fn short(s: &str) -> String {
    let first = s.lines().next().unwrap_or("");
    if first.chars().count() > 80 {
        format!("{}...", first.chars().take(77).collect::<String>())
    } else {
        first.to_string()
    }
}

fn when(micros: i64) -> String {
    if micros == 0 {
        "-".into()
    } else {
        pg_timestamp(micros)
    }
}

pub fn drill_json(d: &DrillInfo) -> Value {
    json!({
        "id": d.id, "instance": d.instance, "sandbox": d.sandbox, "backup_id": d.backup_id,
        "state": d.state, "target": when(d.target), "target_micros": d.target,
        "target_reason": d.target_reason,
        "recovered_at": when(d.recovered_at), "recovered_at_micros": d.recovered_at,
        "recovered_lsn": d.recovered_lsn, "stop_record": d.stop_record,
        "bytes_restored": d.bytes_restored, "wal_segments": d.wal_segments,
        "rto_ms": d.rto_ms, "restore_ms": d.restore_ms, "replay_ms": d.replay_ms,
        "rpo_secs": d.rpo_secs,
        "checks": d.checks.iter().map(|c| json!({
            "name": c.name, "expect": c.expect, "value": c.value, "ok": c.ok, "detail": c.detail,
        })).collect::<Vec<_>>(),
        "reason": d.reason, "log_tail": d.log_tail, "job_id": d.job_id,
        "created_at": d.created_at, "started_at": d.started_at, "finished_at": d.finished_at,
    })
}

pub fn print_drill(d: &DrillInfo) {
    println!(
        "drill {} of {}: {}",
        d.id,
        d.instance,
        d.state.to_uppercase()
    );
    if !d.reason.is_empty() {
        println!("  reason:      {}", d.reason);
    }
    println!("  target:      {} ({})", when(d.target), d.target_reason);
    if !d.sandbox.is_empty() {
        println!("  sandbox:     {}, backup {}", d.sandbox, d.backup_id);
    }
    if !d.recovered_lsn.is_empty() {
        println!(
            "  recovered:   last commit {} at LSN {}",
            when(d.recovered_at),
            d.recovered_lsn
        );
    }
    if !d.stop_record.is_empty() {
        println!("  stopped:     {}", d.stop_record);
    }
    if d.rto_ms > 0 {
        println!(
            "  RTO:         {} (restore {}, WAL replay {}); {} restored, {} WAL segments",
            secs(d.rto_ms),
            secs(d.restore_ms),
            secs(d.replay_ms),
            tidemark_core::text::bytes(d.bytes_restored),
            d.wal_segments
        );
    }
    if d.rpo_secs >= 0 && d.state != "queued" && d.state != "running" && d.rto_ms > 0 {
        println!(
            "  RPO:         {}s (target minus the newest archived point before it)",
            d.rpo_secs
        );
    }
    if !d.checks.is_empty() {
        println!("  checks:");
        for c in &d.checks {
            println!(
                "    {} {:<22} {:<30} {}",
                if c.ok { "ok  " } else { "FAIL" },
                c.name,
                c.expect,
                c.detail
            );
        }
    }
    if !d.log_tail.is_empty() && d.state == "failed" {
        println!("  server log (tail):");
        for l in d.log_tail.lines() {
            println!("    {l}");
        }
    }
}
