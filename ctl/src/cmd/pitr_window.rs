//! `tidemark pitr-window --instance NAME`: the oldest and newest points a restore can reach.

use std::path::Path;

use serde_json::{Value, json};
use tidemark_core::timefmt;
use tidemark_proto::{PitrWindowInfo, PitrWindowRequest};

use crate::client::{self, CliError, Exit};
use crate::output::{Format, print_json};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    instance: String,
}

pub fn window_json(w: &PitrWindowInfo) -> Value {
    json!({
        "instance": w.instance, "restorable": w.restorable,
        "oldest_time": w.oldest_time, "oldest_lsn": w.oldest_lsn,
        "newest_time": w.newest_time, "newest_lsn": w.newest_lsn,
        "gap": w.gap, "base_backups": w.base_backups, "wal_files": w.wal_files,
        "newest_wal": w.newest_wal, "detail": w.detail,
    })
}

pub async fn run(config: Option<&Path>, format: Format, args: Args) -> Result<Exit, CliError> {
    let mut c = client::connect(config).await?;
    let w = c
        .pitr_window(PitrWindowRequest {
            instance: args.instance,
        })
        .await?
        .into_inner();
    if format == Format::Json {
        print_json(&window_json(&w));
    } else {
        let field = |k: &str, v: String| println!("{k:<13} {v}");
        field("instance", w.instance.clone());
        if w.restorable {
            field(
                "oldest",
                format!("{} ({})", timefmt::utc(w.oldest_time), w.oldest_lsn),
            );
            field(
                "newest",
                format!("{} ({})", timefmt::utc(w.newest_time), w.newest_lsn),
            );
        } else {
            field("window", w.detail.clone());
        }
        if !w.gap.is_empty() {
            field(
                "gap",
                format!(
                    "{} is missing from the archive; the window before it ends there",
                    w.gap
                ),
            );
        }
        field("base backups", w.base_backups.to_string());
        field(
            "wal files",
            format!(
                "{} (newest {})",
                w.wal_files,
                if w.newest_wal.is_empty() {
                    "-"
                } else {
                    &w.newest_wal
                }
            ),
        );
    }
    Ok(if w.restorable { Exit::Ok } else { Exit::Failed })
}
