//! `tidemark backups [--instance NAME]`, `tidemark backups show ID` and
//! `tidemark backups delete ID --reason TEXT`.

use std::path::Path;

use serde_json::{Value, json};
use tidemark_core::timefmt;
use tidemark_proto::{
    BackupDetail, BackupSummary, DeleteBackupRequest, GetBackupRequest, ListBackupsRequest,
};

use crate::client::{self, CliError, Exit};
use crate::output::{Format, bytes, print_json, print_table};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// Only this instance's backups.
    #[arg(long)]
    instance: Option<String>,
    #[command(subcommand)]
    show: Option<Show>,
}

#[derive(clap::Subcommand)]
enum Show {
    /// One backup in detail: parts, checks, warnings.
    Show { id: i64 },
    /// Delete one backup's data (admins only, audited); its row stays as history, and the
    /// next retention apply collects what only it used. Retention never deletes a backup
    /// because a read failed: a corrupt one goes only this way.
    Delete {
        id: i64,
        /// Why; kept with the backup and in the audit log.
        #[arg(long)]
        reason: String,
    },
}

pub async fn run(config: Option<&Path>, format: Format, args: Args) -> Result<Exit, CliError> {
    let mut c = client::connect(config).await?;
    match args.show {
        Some(Show::Show { id }) => {
            let b = c.get_backup(GetBackupRequest { id }).await?.into_inner();
            print_detail(&b, format);
            return Ok(Exit::Ok);
        }
        Some(Show::Delete { id, reason }) => {
            let b = c
                .delete_backup(DeleteBackupRequest { id, reason })
                .await?
                .into_inner();
            if format == Format::Json {
                print_json(&summary_json(&b));
            } else {
                println!(
                    "backup {} deleted: its data goes at the next retention apply ({})",
                    b.id, b.reason
                );
            }
            return Ok(Exit::Ok);
        }
        None => {}
    }
    let req = ListBackupsRequest {
        instance: args.instance.unwrap_or_default(),
    };
    let list = c.list_backups(req).await?.into_inner().backups;
    if format == Format::Json {
        print_json(&list.iter().map(summary_json).collect::<Vec<_>>());
        return Ok(Exit::Ok);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|b| {
            let reason: String = b.reason.chars().take(60).collect();
            vec![
                b.id.to_string(),
                b.instance.clone(),
                b.kind.clone(),
                b.status.clone(),
                timefmt::utc(b.started_at),
                duration(b),
                bytes(b.raw_bytes),
                bytes(b.new_bytes),
                b.warnings.to_string(),
                reason,
            ]
        })
        .collect();
    print_table(
        &[
            "ID", "INSTANCE", "KIND", "STATUS", "STARTED", "DURATION", "SIZE", "NEW", "WARNINGS",
            "REASON",
        ],
        &rows,
    );
    Ok(Exit::Ok)
}

fn duration(b: &BackupSummary) -> String {
    if b.finished_at == 0 {
        "-".into()
    } else {
        tidemark_core::duration::human(std::time::Duration::from_secs(
            (b.finished_at - b.started_at).max(0) as u64,
        ))
    }
}

pub fn summary_json(b: &BackupSummary) -> Value {
    json!({
        "id": b.id, "instance": b.instance, "agent": b.agent, "kind": b.kind, "status": b.status,
        "started_at": b.started_at, "finished_at": b.finished_at, "raw_bytes": b.raw_bytes,
        "new_bytes": b.new_bytes, "chunks": b.chunks, "parts": b.parts, "warnings": b.warnings,
        "reason": b.reason,
    })
}

pub fn detail_json(b: &BackupDetail) -> Value {
    let mut v = b
        .summary
        .as_ref()
        .map(summary_json)
        .unwrap_or_else(|| json!({}));
    v["warnings"] = json!(b.warnings);
    v["job_id"] = json!(b.job_id);
    v["server_version"] = json!(b.server_version);
    v["tool_version"] = json!(b.tool_version);
    if let Some(base) = &b.base {
        v["base"] = json!({
            "start_lsn": base.start_lsn, "stop_lsn": base.stop_lsn, "timeline": base.timeline,
            "system_identifier": base.system_identifier, "start_time": base.start_time,
            "stop_time": base.stop_time, "tablespaces": base.tablespaces,
            "backup_label": base.backup_label,
        });
    }
    if let Some(c) = &b.binlog {
        v["binlog"] = json!({
            "file": c.file, "position": c.position, "gtid": c.gtid,
            "start_time": c.start_time, "stop_time": c.stop_time,
        });
    }
    if !b.databases.is_empty() {
        v["databases"] = json!(b.databases);
    }
    v["parts"] = b
        .parts
        .iter()
        .map(|p| {
            json!({
                "name": p.name, "format": p.format, "status": p.status, "raw_bytes": p.raw_bytes,
                "chunks": p.chunks, "new_chunks": p.new_chunks, "new_bytes": p.new_bytes,
                "stream_sha256": p.stream_sha256, "check": p.check, "check_detail": p.check_detail,
            })
        })
        .collect();
    v
}

pub fn print_detail(b: &BackupDetail, format: Format) {
    if format == Format::Json {
        print_json(&detail_json(b));
        return;
    }
    let s = b.summary.clone().unwrap_or_default();
    let field = |k: &str, v: String| println!("{k:<15} {v}");
    field("backup", s.id.to_string());
    field("instance", format!("{} (agent {})", s.instance, s.agent));
    field("kind", s.kind.clone());
    field("status", s.status.clone());
    if !s.reason.is_empty() {
        field("reason", s.reason.clone());
    }
    field("started", timefmt::utc(s.started_at));
    field("finished", timefmt::utc(s.finished_at));
    field(
        "size",
        format!(
            "{} in {} chunks, {} new in the store",
            bytes(s.raw_bytes),
            s.chunks,
            bytes(s.new_bytes)
        ),
    );
    field("server", b.server_version.clone());
    field("tool", b.tool_version.clone());
    if let Some(base) = &b.base {
        field(
            "wal",
            format!(
                "{} .. {} on timeline {} (system identifier {})",
                base.start_lsn, base.stop_lsn, base.timeline, base.system_identifier
            ),
        );
        for (oid, loc) in &base.tablespaces {
            field("tablespace", format!("{oid} at {loc}"));
        }
    }
    if let Some(c) = &b.binlog {
        let at = if c.file.is_empty() {
            "none (binary logging was off)".to_string()
        } else {
            format!("{}:{}", c.file, c.position)
        };
        field("binlog", at);
        if !c.gtid.is_empty() {
            field("gtid", c.gtid.clone());
        }
    }
    if !b.databases.is_empty() {
        field("databases", b.databases.join(", "));
    }
    println!();
    let rows: Vec<Vec<String>> = b
        .parts
        .iter()
        .map(|p| {
            let check = if p.check.is_empty() {
                "-".to_string()
            } else {
                format!("{}: {}", p.check, p.check_detail)
            };
            vec![
                p.name.clone(),
                p.format.clone(),
                p.status.clone(),
                bytes(p.raw_bytes),
                p.chunks.to_string(),
                bytes(p.new_bytes),
                check,
            ]
        })
        .collect();
    print_table(
        &["PART", "FORMAT", "STATUS", "SIZE", "CHUNKS", "NEW", "CHECK"],
        &rows,
    );
    if !b.warnings.is_empty() {
        println!();
        for w in &b.warnings {
            println!("warning: {w}");
        }
    }
}
