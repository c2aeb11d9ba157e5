//! `tidemark verify [--instance NAME] [--sample PCT]`: read chunks back from the store and
//! check them; exit 1 when any is missing or corrupt.

use std::path::Path;

use serde_json::json;
use tidemark_proto::VerifyRequest;

use crate::client::{self, CliError, Exit};
use crate::output::{Format, print_json};

#[derive(clap::Args)]
pub struct Args {
    /// One instance's backups and WAL; default every instance.
    #[arg(long)]
    instance: Option<String>,
    /// Read this percentage of the chunks, chosen at random (chunks found bad before are
    /// always reported).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100))]
    sample: u32,
}

pub async fn run(config: Option<&Path>, format: Format, args: Args) -> Result<Exit, CliError> {
    let mut c = client::connect(config).await?;
    let r = c
        .verify(VerifyRequest {
            instance: args.instance.unwrap_or_default(),
            sample_pct: args.sample,
        })
        .await?
        .into_inner();
    if format == Format::Json {
        print_json(&json!({
            "chunks_total": r.chunks_total, "chunks_checked": r.chunks_checked,
            "bytes_read": r.bytes_read, "millis": r.millis, "backups_marked": r.backups_marked,
            "backups_healed": r.backups_healed,
            "bad": r.bad.iter().map(|b| json!({
                "chunk": b.chunk, "pack": b.pack, "problem": b.problem, "detail": b.detail,
                "backups": b.backups, "wal": b.wal,
            })).collect::<Vec<_>>(),
        }));
    } else {
        println!(
            "checked {} of {} chunks ({}) in {:.1}s: {}",
            r.chunks_checked,
            r.chunks_total,
            tidemark_core::text::bytes(r.bytes_read),
            r.millis as f64 / 1000.0,
            if r.bad.is_empty() {
                "all intact".to_string()
            } else {
                format!(
                    "{} bad, {} backups marked corrupt",
                    r.bad.len(),
                    r.backups_marked
                )
            }
        );
        if !r.backups_healed.is_empty() {
            let healed: Vec<String> = r.backups_healed.iter().map(|i| i.to_string()).collect();
            println!(
                "backups [{}] read intact again: complete again",
                healed.join(", ")
            );
        }
        for b in &r.bad {
            let backups: Vec<String> = b.backups.iter().map(|i| i.to_string()).collect();
            let pack = if b.pack.is_empty() {
                String::new()
            } else {
                format!(" in pack {}", b.pack)
            };
            println!(
                "  {} {}{pack}: backups [{}], WAL [{}]",
                b.problem,
                b.chunk,
                backups.join(", "),
                b.wal.join(", ")
            );
        }
    }
    Ok(if r.bad.is_empty() {
        Exit::Ok
    } else {
        Exit::Failed
    })
}
