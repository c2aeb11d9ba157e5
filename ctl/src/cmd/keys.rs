//! `tidemark keys [rotate]`: encryption at rest. Listing shows each key-encryption key's file,
//! fingerprint and how many data keys it wraps; rotating adds a new KEK and rewraps the data
//! keys under it, without touching any stored chunk.

use std::path::Path;

use serde_json::json;
use tidemark_core::timefmt::utc;
use tidemark_proto::{KeysInfo, ListKeysRequest, RotateKeysRequest};

use crate::client::{self, CliError, Exit};
use crate::output::{Format, print_json, print_table};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    cmd: Option<Sub>,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// List the key-encryption keys and data keys (the default).
    List,
    /// Add a key-encryption key and rewrap every data key under it; new chunks get a new
    /// data key. Stored chunks are not rewritten, and old backups stay restorable.
    Rotate,
}

pub async fn run(config: Option<&Path>, format: Format, args: Args) -> Result<Exit, CliError> {
    let mut c = client::connect(config).await?;
    let info = match args.cmd.unwrap_or(Sub::List) {
        Sub::List => c.list_keys(ListKeysRequest {}).await?.into_inner(),
        Sub::Rotate => c.rotate_keys(RotateKeysRequest {}).await?.into_inner(),
    };
    if format == Format::Json {
        print_json(&json!({
            "encrypted": info.encrypted,
            "active_data_key": info.active_data_key,
            "data_keys": info.data_keys,
            "rotated_to": info.rotated_to,
            "rewrapped": info.rewrapped,
            "keks": info.keks.iter().map(|k| json!({
                "id": k.id, "fingerprint": k.fingerprint, "file": k.file,
                "created_at": k.created_at, "retired_at": k.retired_at, "data_keys": k.data_keys,
            })).collect::<Vec<_>>(),
        }));
    } else {
        print_text(&info);
    }
    Ok(Exit::Ok)
}

fn print_text(info: &KeysInfo) {
    if !info.encrypted {
        println!("the store is not encrypted ([encryption] enabled = false)");
        return;
    }
    if info.rotated_to != 0 {
        println!(
            "rotated to key-encryption key {}: {} rewrapped, new chunks use data key {}",
            info.rotated_to,
            data_keys(info.rewrapped),
            info.active_data_key
        );
    }
    let rows: Vec<Vec<String>> = info
        .keks
        .iter()
        .map(|k| {
            vec![
                k.id.to_string(),
                k.fingerprint.clone(),
                utc(k.created_at),
                if k.retired_at == 0 {
                    "in use".into()
                } else {
                    format!("retired {}", utc(k.retired_at))
                },
                k.data_keys.to_string(),
                k.file.clone(),
            ]
        })
        .collect();
    print_table(
        &[
            "KEK",
            "FINGERPRINT",
            "CREATED",
            "STATE",
            "DATA KEYS",
            "FILE",
        ],
        &rows,
    );
    println!(
        "{}; new chunks are sealed with data key {}",
        data_keys(info.data_keys),
        info.active_data_key
    );
    for k in info.keks.iter().filter(|k| k.retired_at != 0) {
        println!(
            "key-encryption key {} wraps nothing now: once {} is backed up off this host, delete {}",
            k.id,
            info.keks
                .last()
                .map(|n| n.file.as_str())
                .unwrap_or("the newest key"),
            k.file
        );
    }
}

fn data_keys(n: u32) -> String {
    format!("{n} data key{}", if n == 1 { "" } else { "s" })
}
