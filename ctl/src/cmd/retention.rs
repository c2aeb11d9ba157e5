//! `tidemark retention plan [--instance NAME]`: what retention keeps and deletes, and which
//! rule decides; nothing is deleted. `tidemark retention apply`: do it (admins only), then
//! delete the store objects nothing refers to any more.

use std::path::Path;

use serde_json::json;
use tidemark_core::timefmt::utc;
use tidemark_proto::{RetentionApplyResponse, RetentionItem, RetentionPlanRequest};

use crate::client::{self, CliError, Exit};
use crate::output::{Format, print_json, print_table};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Every backup and archived log file, keep or delete, with the reasons.
    Plan {
        #[arg(long)]
        instance: Option<String>,
    },
    /// Expire what the plan deletes, then delete the store objects nothing refers to.
    Apply {
        #[arg(long)]
        instance: Option<String>,
    },
}

pub async fn run(config: Option<&Path>, format: Format, args: Args) -> Result<Exit, CliError> {
    let mut c = client::connect(config).await?;
    let (Sub::Plan { instance } | Sub::Apply { instance }) = &args.cmd;
    let req = RetentionPlanRequest {
        instance: instance.clone().unwrap_or_default(),
    };
    if let Sub::Apply { .. } = args.cmd {
        let r = c.retention_apply(req).await?.into_inner();
        return Ok(print_applied(format, &r));
    }
    let items = c.retention_plan(req).await?.into_inner().items;
    if format == Format::Json {
        print_json(&json!(items.iter().map(item_json).collect::<Vec<_>>()));
        return Ok(Exit::Ok);
    }
    print_table(&HEADER, &rows(&items));
    Ok(Exit::Ok)
}

const HEADER: [&str; 6] = ["INSTANCE", "KIND", "WHAT", "ENDED", "DECISION", "WHY"];

fn item_json(i: &RetentionItem) -> serde_json::Value {
    json!({
        "instance": i.instance, "kind": i.kind,
        "backup_id": (i.backup_id != 0).then_some(i.backup_id),
        "name": (!i.name.is_empty()).then_some(&i.name),
        "ended_at": (i.at != 0).then_some(i.at),
        "keep": i.keep, "reasons": i.reasons,
    })
}

/// What was deleted, the garbage collected, and what was not done. Objects the store would
/// not delete make the command fail: they stay stored (and billed) until a run succeeds.
fn print_applied(format: Format, r: &RetentionApplyResponse) -> Exit {
    if format == Format::Json {
        print_json(&json!({
            "deleted": r.deleted.iter().map(item_json).collect::<Vec<_>>(),
            "skipped": r.skipped,
            "objects_deleted": r.objects_deleted,
            "chunks_freed": r.chunks_freed,
            "bytes_freed": r.bytes_freed,
            "objects_failed": r.objects_failed,
            "orphans_deleted": r.orphans_deleted,
            "orphan_bytes_freed": r.orphan_bytes_freed,
            "orphans_kept": r.orphans_kept,
        }));
    } else {
        if r.deleted.is_empty() {
            println!("Nothing to expire.");
        } else {
            print_table(&HEADER, &rows(&r.deleted));
        }
        for s in &r.skipped {
            println!("Not applied: {s}");
        }
        println!(
            "Garbage collection: {} store objects deleted, {} chunks ({:.1} MiB stored) freed.",
            r.objects_deleted,
            r.chunks_freed,
            r.bytes_freed as f64 / (1u64 << 20) as f64
        );
        if r.orphans_deleted > 0 {
            println!(
                "Unreferenced packs (left by uploads that never committed): {} deleted, {:.1} MiB freed.",
                r.orphans_deleted,
                r.orphan_bytes_freed as f64 / (1u64 << 20) as f64
            );
        }
        for k in &r.orphans_kept {
            println!("Kept: {k}");
        }
        for f in &r.objects_failed {
            eprintln!("error: could not delete {f}; it stays queued for the next run");
        }
    }
    if r.objects_failed.is_empty() {
        Exit::Ok
    } else {
        Exit::Failed
    }
}

/// One row per backup; runs of log files with the same decision and reasons in one row.
fn rows(items: &[RetentionItem]) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut run: Option<(&RetentionItem, &RetentionItem)> = None;
    let flush = |run: &mut Option<(&RetentionItem, &RetentionItem)>, out: &mut Vec<Vec<String>>| {
        if let Some((first, last)) = run.take() {
            let what = if first.name == last.name {
                first.name.clone()
            } else {
                format!("{} .. {}", first.name, last.name)
            };
            out.push(row(first, what));
        }
    };
    for i in items {
        if i.backup_id != 0 {
            flush(&mut run, &mut out);
            out.push(row(i, format!("backup {}", i.backup_id)));
            continue;
        }
        match &mut run {
            Some((first, last))
                if first.instance == i.instance
                    && first.keep == i.keep
                    && first.reasons == i.reasons =>
            {
                *last = i;
            }
            _ => {
                flush(&mut run, &mut out);
                run = Some((i, i));
            }
        }
    }
    flush(&mut run, &mut out);
    out
}

fn row(i: &RetentionItem, what: String) -> Vec<String> {
    vec![
        i.instance.clone(),
        i.kind.clone(),
        what,
        if i.at == 0 { "-".into() } else { utc(i.at) },
        if i.keep { "keep" } else { "delete" }.into(),
        i.reasons.join("; "),
    ]
}
