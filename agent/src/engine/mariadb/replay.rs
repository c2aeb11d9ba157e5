//! Replaying archived binlogs into a restored server: fetch the files the controller named,
//! then `mariadb-binlog --start-position=POS [--stop-datetime=T] f1 f2 ... | mariadb` in
//! one session, following the GTIDs and event times that go by, and set `gtid_slave_pos`
//! to where the replay ended.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tidemark_core::timefmt::{days_from_civil, utc};
use tidemark_proto::BinlogReplay;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::Maria;
use super::server::local_client;
use crate::error::AgentError;
use crate::job::JobContext;
use crate::tool::{self, ToolError};

/// What a replay did.
#[derive(Debug, Default, Clone)]
pub struct Replayed {
    pub files: usize,
    pub transactions: u64,
    /// Unix seconds of the last replayed event; 0 when none was.
    pub last_event_at: i64,
    /// Unix seconds of the last transaction replayed (its GTID or commit event), not of an
    /// event around it (a binlog's format description or rotate); 0 when none was.
    pub last_transaction_at: i64,
    /// domain -> "domain-server-seq" of the last transaction replayed in it.
    pub gtids: BTreeMap<u64, String>,
    /// The GTID of the last transaction replayed, whatever its domain; empty when none was.
    pub last_gtid: String,
}

impl Replayed {
    pub fn gtid_position(&self) -> String {
        self.gtids.values().cloned().collect::<Vec<_>>().join(",")
    }
}

/// Fetch archived binlogs of `instance` into `dir`; returns their paths in order.
pub async fn fetch_binlogs(
    ctx: &JobContext,
    instance: &str,
    files: &[String],
    dir: &Path,
) -> Result<Vec<PathBuf>, AgentError> {
    let mut paths = Vec::new();
    for name in files {
        let dest = dir.join(name);
        crate::engine::common::fetch_named(
            &ctx.client,
            instance,
            name,
            &dest,
            Duration::from_secs(30),
        )
        .await?;
        paths.push(dest);
    }
    Ok(paths)
}

/// Replay `files` from `replay.start_position` in one `mariadb` session, following the
/// GTIDs and event times that go by.
pub async fn replay_binlogs(
    db: &Maria,
    socket: &Path,
    replay: &BinlogReplay,
    files: &[PathBuf],
) -> Result<Replayed, AgentError> {
    let decoder = db.program("mariadb-binlog");
    let mut dec = std::process::Command::new(&decoder);
    // Binlog times are UTC here, and so is --stop-datetime.
    dec.env("TZ", "UTC")
        .arg("--no-defaults")
        .arg(format!("--start-position={}", replay.start_position));
    if replay.stop_before > 0 {
        dec.arg(format!(
            "--stop-datetime={}",
            utc(replay.stop_before).trim_end_matches('Z')
        ));
    }
    dec.args(files)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut dec = tokio::process::Command::from(dec)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ToolError::Spawn {
            program: decoder.display().to_string(),
            source,
        })?;
    let mut client = local_client(db, "mariadb", socket);
    client
        .args(["--binary-mode", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut client = tokio::process::Command::from(client)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| AgentError::permanent(format!("starting mariadb for the replay: {e}")))?;
    let decoded = dec.stdout.take().expect("piped");
    let mut dec_err = dec.stderr.take().expect("piped");
    let mut sql = client.stdin.take().expect("piped");
    let mut client_err = client.stderr.take().expect("piped");
    let mut seen = Replayed {
        files: files.len(),
        ..Default::default()
    };
    for g in replay
        .gtid
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
    {
        if let Some(domain) = g.split('-').next().and_then(|d| d.parse().ok()) {
            seen.gtids.insert(domain, g.to_string());
        }
    }
    let pump = async {
        // Account statements in the binlog need the grant tables loaded.
        sql.write_all(b"FLUSH PRIVILEGES;\n").await?;
        let mut lines = BufReader::new(decoded);
        let mut line = Vec::new();
        loop {
            line.clear();
            if lines.read_until(b'\n', &mut line).await? == 0 {
                break;
            }
            if line.first() == Some(&b'#') {
                follow(&String::from_utf8_lossy(&line), &mut seen);
            }
            sql.write_all(&line).await?;
        }
        let position = seen.gtid_position();
        if !position.is_empty() {
            sql.write_all(format!("\nSET GLOBAL gtid_slave_pos = '{position}';\n").as_bytes())
                .await?;
        }
        sql.shutdown().await?;
        drop(sql);
        Ok::<(), std::io::Error>(())
    };
    let (mut e1, mut e2) = (String::new(), String::new());
    let (pumped, _, _) = tokio::join!(
        pump,
        dec_err.read_to_string(&mut e1),
        client_err.read_to_string(&mut e2)
    );
    let dec_status = dec.wait().await?;
    let client_status = client.wait().await?;
    if !dec_status.success() {
        return Err(AgentError::permanent(format!(
            "mariadb-binlog {}: {}",
            tool::describe(dec_status),
            e1.trim()
        )));
    }
    if !client_status.success() {
        return Err(AgentError::permanent(format!(
            "replaying the binlogs failed: mariadb {}: {}",
            tool::describe(client_status),
            e2.trim()
        )));
    }
    pumped.map_err(|e| AgentError::permanent(format!("feeding the replay: {e}")))?;
    Ok(seen)
}

/// Take the event time and GTID from one of mariadb-binlog's comment lines:
/// `#261126  4:42:16 server id 1  end_log_pos 427 CRC32 0xac93fb79 <TAB>GTID 0-1-5 trans`.
fn follow(line: &str, seen: &mut Replayed) {
    let Some(rest) = line.strip_prefix('#') else {
        return;
    };
    if !rest.contains(" server id ") {
        return;
    }
    let t = event_time(rest);
    if let Some(t) = t {
        seen.last_event_at = t;
        if rest.contains("\tXid = ") && seen.transactions > 0 {
            seen.last_transaction_at = t;
        }
    }
    if let Some(g) = rest.split("GTID ").nth(1) {
        let gtid = g.split_whitespace().next().unwrap_or("");
        let mut parts = gtid.split('-');
        if let (Some(Ok(domain)), Some(_), Some(_)) = (
            parts.next().map(str::parse::<u64>),
            parts.next(),
            parts.next(),
        ) {
            seen.gtids.insert(domain, gtid.to_string());
            seen.last_gtid = gtid.to_string();
            seen.transactions += 1;
            if let Some(t) = t {
                seen.last_transaction_at = t;
            }
        }
    }
}

/// `261126  4:42:16 server id ...` -> unix seconds (the decoder ran with TZ=UTC).
fn event_time(s: &str) -> Option<i64> {
    let date = s.get(0..6)?;
    let (yy, mm, dd): (i64, u32, u32) = (
        date.get(0..2)?.parse().ok()?,
        date.get(2..4)?.parse().ok()?,
        date.get(4..6)?.parse().ok()?,
    );
    let clock = s.get(6..)?.split_whitespace().next()?;
    let mut hms = clock.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    Some(days_from_civil(2000 + yy, mm, dd) * 86400 + h * 3600 + m * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_comments_give_event_times_and_gtids() {
        let mut seen = Replayed::default();
        follow(
            "#261126  4:42:16 server id 1  end_log_pos 427 CRC32 0xac93fb79 \tGTID 0-1-5 trans\n",
            &mut seen,
        );
        follow(
            "#261126 14:02:09 server id 1  end_log_pos 500 CRC32 0x1 \tGTID 2-1-9 trans\n",
            &mut seen,
        );
        follow(
            "#261126 14:02:10 server id 1  end_log_pos 600 CRC32 0x1 \tXid = 12\n",
            &mut seen,
        );
        follow("# at 427\n", &mut seen);
        assert_eq!(seen.transactions, 2);
        assert_eq!(seen.gtid_position(), "0-1-5,2-1-9");
        assert_eq!(seen.last_gtid, "2-1-9");
        assert_eq!(utc(seen.last_event_at), "2026-11-26 14:02:10Z");
        assert_eq!(utc(seen.last_transaction_at), "2026-11-26 14:02:10Z");
        // A later rotate is an event, not a transaction.
        follow(
            "#261126 14:05:00 server id 1  end_log_pos 650 CRC32 0x1 \tRotate to mysql-bin.000002  pos: 4\n",
            &mut seen,
        );
        assert_eq!(utc(seen.last_event_at), "2026-11-26 14:05:00Z");
        assert_eq!(utc(seen.last_transaction_at), "2026-11-26 14:02:10Z");
    }

    #[test]
    fn events_without_a_transaction_give_no_transaction_time() {
        let mut seen = Replayed::default();
        follow(
            "#261126 14:00:00 server id 1  end_log_pos 256 CRC32 0x1 \tStart: binlog v 4\n",
            &mut seen,
        );
        assert_eq!(seen.transactions, 0);
        assert_eq!(seen.last_transaction_at, 0);
        assert!(seen.last_event_at > 0);
    }
}
