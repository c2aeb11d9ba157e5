//! `tidemark audit [--limit N]`: the audit log of operators' changes.

use std::path::Path;

use serde_json::json;
use tidemark_core::timefmt::utc;
use tidemark_proto::ListAuditRequest;

use crate::client::{self, CliError, Exit};
use crate::output::{Format, print_json, print_table};

#[derive(clap::Args)]
pub struct Args {
    /// How many entries, newest first.
    #[arg(long, default_value_t = 50)]
    limit: u32,
}

pub async fn run(config: Option<&Path>, format: Format, args: Args) -> Result<Exit, CliError> {
    let mut c = client::connect(config).await?;
    let r = c
        .list_audit(ListAuditRequest { limit: args.limit })
        .await?
        .into_inner();
    if format == Format::Json {
        print_json(&json!(
            r.entries
                .iter()
                .map(|e| json!({
                    "at": e.at, "who": e.who, "action": e.action,
                    "detail": e.detail, "outcome": e.outcome,
                }))
                .collect::<Vec<_>>()
        ));
    } else {
        let rows: Vec<Vec<String>> = r
            .entries
            .iter()
            .map(|e| {
                vec![
                    utc(e.at),
                    e.who.clone(),
                    e.action.clone(),
                    e.outcome.clone(),
                    e.detail.clone(),
                ]
            })
            .collect();
        print_table(&["AT", "WHO", "ACTION", "OUTCOME", "DETAIL"], &rows);
    }
    Ok(Exit::Ok)
}
