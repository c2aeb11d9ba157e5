//! `tidemark retention plan [--instance NAME]`: what retention keeps and deletes, and which
//! rule decides. Nothing is deleted.

use std::path::Path;

use serde_json::json;
use tidemark_core::timefmt::utc;
use tidemark_proto::{RetentionItem, RetentionPlanRequest};

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
}

pub async fn run(config: Option<&Path>, format: Format, args: Args) -> Result<Exit, CliError> {
    let Sub::Plan { instance } = args.cmd;
    let mut c = client::connect(config).await?;
    let items = c
        .retention_plan(RetentionPlanRequest {
            instance: instance.unwrap_or_default(),
        })
        .await?
        .into_inner()
        .items;
    if format == Format::Json {
        print_json(&json!(
            items
                .iter()
                .map(|i| json!({
                    "instance": i.instance, "kind": i.kind,
                    "backup_id": (i.backup_id != 0).then_some(i.backup_id),
                    "name": (!i.name.is_empty()).then_some(&i.name),
                    "ended_at": (i.at != 0).then_some(i.at),
                    "keep": i.keep, "reasons": i.reasons,
                }))
                .collect::<Vec<_>>()
        ));
        return Ok(Exit::Ok);
    }
    print_table(
        &["INSTANCE", "KIND", "WHAT", "ENDED", "DECISION", "WHY"],
        &rows(&items),
    );
    Ok(Exit::Ok)
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
