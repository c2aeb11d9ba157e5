//! Logical backup of a MariaDB/MySQL instance: one `mariadb-dump --single-transaction`
//! of every database in one snapshot, streamed as the part `dump`. One dump, not one per
//! database, because only one transaction sees all databases at the same binlog position,
//! and point-in-time recovery from a dump replays binlogs from exactly that position.
//!
//! The dump's own text says where it stands (`--master-data=2` writes the binlog file and
//! position as a comment near the top, and the GTID position near the end), and a complete
//! dump ends with `-- Dump completed`. The agent reads both as the stream goes by; a dump
//! without them is not stored.

use std::time::{SystemTime, UNIX_EPOCH};

use tidemark_core::text::bytes as human_bytes;
use tidemark_proto::{BeginBackupRequest, BinlogCoordinates, FinishBackupRequest, PartCheck};

use super::{Maria, ServerFacts, quote_literal, version_triple};
use crate::error::AgentError;
use crate::job::{JobContext, JobResult};
use crate::upload::{Inspector, Malformed, Part, upload_inspected};

pub const DUMP_PART: &str = "dump";
/// MariaDB: the accounts and their grants (`mariadb-dump --system=users`), which the dump
/// of the user databases does not hold. MySQL's mysqldump has no such option.
pub const USERS_PART: &str = "users";
pub const FORMAT: &str = "mariadb-dump-sql";
const HEAD_BYTES: usize = 64 * 1024;
const TAIL_BYTES: usize = 4096;

pub async fn run(ctx: &JobContext, db: &Maria) -> JobResult {
    let facts = db.facts().await?;
    let databases = db.databases().await?;
    if databases.is_empty() {
        return Err(AgentError::permanent(format!(
            "instance {} has no database to dump",
            db.cfg.name
        )));
    }
    let mut warnings = non_transactional_tables(db, &databases).await;
    warnings.extend(facts.binlog_warnings());
    let tool = Maria::dump_tool(&facts);
    let begin = BeginBackupRequest {
        instance: db.cfg.name.clone(),
        kind: "logical".into(),
        job_id: ctx.job_id,
        parts: if facts.is_mysql() {
            vec![DUMP_PART.into()]
        } else {
            vec![DUMP_PART.into(), USERS_PART.into()]
        },
        warnings: warnings.clone(),
        server_version: facts.version.clone(),
        tool_version: db.tool_version(tool).await.unwrap_or_default(),
        databases: databases.clone(),
    };
    let backup = ctx.begin_backup(begin).await?;
    tracing::info!(%backup, instance = %db.cfg.name, databases = databases.len(), warnings = warnings.len(), "logical backup started");
    let start_time = unix_now();
    let mut cmd = db.command(tool);
    cmd.args(dump_args(&facts))
        .arg("--databases")
        .args(&databases);
    let part = Part {
        backup,
        name: DUMP_PART,
        format: FORMAT,
    };
    let uploaded = upload_inspected(
        &ctx.client,
        part,
        cmd,
        &ctx.progress,
        DumpInspector {
            needs_position: !facts.log_bin_basename.is_empty(),
            ..Default::default()
        },
    )
    .await;
    let (ack, found) = match uploaded {
        Ok(r) => r,
        Err(e) => {
            return Err(ctx.fail_backup(backup, e.into()).await);
        }
    };
    let coords = found.coordinates(start_time, unix_now());
    let mut checks = Vec::new();
    if !facts.is_mysql() {
        // CREATE OR REPLACE USER: loading it into a new server replaces its default root
        // with the original's.
        let mut users = db.command(tool);
        users.args(["--system=users", "--replace"]);
        let part = Part {
            backup,
            name: USERS_PART,
            format: "sql",
        };
        match upload_inspected(
            &ctx.client,
            part,
            users,
            &ctx.progress,
            DumpInspector::default(),
        )
        .await
        {
            Ok((u, _)) => checks.push(PartCheck {
                part: USERS_PART.into(),
                ok: true,
                detail: format!(
                    "accounts and grants, {}, ending with the completion line",
                    human_bytes(u.raw_bytes)
                ),
            }),
            Err(e) => {
                return Err(ctx.fail_backup(backup, e.into()).await);
            }
        }
    }
    let position = if coords.file.is_empty() {
        "no binlog position (binary logging is off)".to_string()
    } else {
        format!("binlog position {}:{}", coords.file, coords.position)
    };
    let finish = FinishBackupRequest {
        backup_id: backup.0,
        error: String::new(),
        checks: {
            checks.insert(
                0,
                PartCheck {
                    part: DUMP_PART.into(),
                    ok: true,
                    detail: format!(
                        "{tool} stream of {} ends with its completion line; {position}",
                        human_bytes(ack.raw_bytes),
                    ),
                },
            );
            checks
        },
        base: None,
        binlog: Some(coords),
    };
    ctx.finish_complete(finish).await?;
    Ok(format!(
        "backup {backup} complete: {} database(s), {} dumped, {} new in the store{}",
        databases.len(),
        human_bytes(ack.raw_bytes),
        human_bytes(ack.new_bytes),
        if warnings.is_empty() {
            String::new()
        } else {
            format!(", {} warning(s)", warnings.len())
        }
    ))
}

/// The dump options: one consistent snapshot, everything a restore needs, and the binlog
/// position as a comment. MySQL 8.0.26 renamed --master-data to --source-data.
fn dump_args(facts: &ServerFacts) -> Vec<&'static str> {
    let mut args = vec![
        "--single-transaction",
        "--routines",
        "--triggers",
        "--events",
        "--hex-blob",
        "--quick",
    ];
    // Without a binary log there is no position to record (and the option fails).
    if !facts.log_bin_basename.is_empty() {
        args.push(
            if facts.is_mysql() && version_triple(&facts.version) >= (8, 0, 26) {
                "--source-data=2"
            } else {
                "--master-data=2"
            },
        );
    }
    args
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Tables a --single-transaction snapshot does not cover: their rows may be from any
/// moment of the dump, and may not match the recorded binlog position.
async fn non_transactional_tables(db: &Maria, databases: &[String]) -> Vec<String> {
    let list = databases
        .iter()
        .map(|d| quote_literal(d))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT engine, GROUP_CONCAT(CONCAT(table_schema, '.', table_name) ORDER BY table_schema, table_name SEPARATOR ', ')
         FROM information_schema.tables
         WHERE table_type = 'BASE TABLE' AND table_schema IN ({list})
           AND engine NOT IN ('InnoDB', 'RocksDB', 'SEQUENCE')
         GROUP BY engine ORDER BY engine"
    );
    match db.query(None, &sql).await {
        Err(e) => vec![format!(
            "could not check for non-transactional tables: {e}"
        )],
        Ok(out) => out
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(engine, tables)| {
                format!(
                    "{engine} tables are not covered by the dump's transaction, so their rows may not match the recorded binlog position: {tables}"
                )
            })
            .collect(),
    }
}

/// Picks the binlog position out of a dump's head and tail, and checks it is complete.
#[derive(Default)]
pub struct DumpInspector {
    needs_position: bool,
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl Inspector for DumpInspector {
    fn feed(&mut self, bytes: &[u8]) {
        if self.head.len() < HEAD_BYTES {
            let take = bytes.len().min(HEAD_BYTES - self.head.len());
            self.head.extend_from_slice(&bytes[..take]);
        }
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > 2 * TAIL_BYTES {
            self.tail.drain(..self.tail.len() - TAIL_BYTES);
        }
    }

    fn verdict(&mut self) -> Result<(), Malformed> {
        let tail = String::from_utf8_lossy(&self.tail);
        if !tail.contains("\n-- Dump completed") {
            return Err(Malformed(
                "the dump does not end with its '-- Dump completed' line; it is truncated".into(),
            ));
        }
        if self.needs_position && self.file_and_position().is_none() {
            return Err(Malformed("the dump names no binlog position (CHANGE MASTER TO MASTER_LOG_FILE=...); is binary logging on (log_bin)?".into()));
        }
        Ok(())
    }
}

impl DumpInspector {
    fn file_and_position(&self) -> Option<(String, u64)> {
        let head = String::from_utf8_lossy(&self.head);
        head.lines().find_map(|l| {
            let l = l.strip_prefix("-- ")?;
            let rest = l
                .strip_prefix("CHANGE MASTER TO MASTER_LOG_FILE='")
                .or_else(|| l.strip_prefix("CHANGE REPLICATION SOURCE TO SOURCE_LOG_FILE='"))?;
            let (file, rest) = rest.split_once('\'')?;
            let pos = rest.split_once("_LOG_POS=")?.1;
            let pos: String = pos.chars().take_while(|c| c.is_ascii_digit()).collect();
            Some((file.to_string(), pos.parse().ok()?))
        })
    }

    /// MariaDB writes `-- SET GLOBAL gtid_slave_pos='0-1-42';` near the end.
    fn gtid(&self) -> String {
        let tail = String::from_utf8_lossy(&self.tail);
        tail.lines()
            .find_map(|l| {
                let v = l.strip_prefix("-- SET GLOBAL gtid_slave_pos='")?;
                Some(v.split_once('\'')?.0.to_string())
            })
            .unwrap_or_default()
    }

    pub fn coordinates(&self, start_time: i64, stop_time: i64) -> BinlogCoordinates {
        let (file, position) = self.file_and_position().unwrap_or_default();
        BinlogCoordinates {
            file,
            position,
            gtid: self.gtid(),
            start_time,
            stop_time,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inspect(text: &str, step: usize) -> DumpInspector {
        let mut d = DumpInspector {
            needs_position: true,
            ..Default::default()
        };
        for piece in text.as_bytes().chunks(step) {
            d.feed(piece);
        }
        d
    }

    #[test]
    fn coordinates_come_from_the_head_and_the_tail() {
        let filler = "INSERT INTO t VALUES (1);\n".repeat(5000);
        let text = format!(
            "-- MariaDB dump\n-- CHANGE MASTER TO MASTER_LOG_FILE='mysql-bin.000002', MASTER_LOG_POS=601;\n{filler}-- SET GLOBAL gtid_slave_pos='0-1-5';\n\n-- Dump completed on 2026-11-26  4:43:48\n"
        );
        let mut d = inspect(&text, 777);
        assert_eq!(d.verdict(), Ok(()));
        let c = d.coordinates(1, 2);
        assert_eq!(
            (c.file.as_str(), c.position, c.gtid.as_str()),
            ("mysql-bin.000002", 601, "0-1-5")
        );
    }

    #[test]
    fn mysql_source_data_is_understood() {
        let d = inspect(
            "-- CHANGE REPLICATION SOURCE TO SOURCE_LOG_FILE='binlog.000007', SOURCE_LOG_POS=157;\n-- Dump completed\n",
            10,
        );
        assert_eq!(d.file_and_position(), Some(("binlog.000007".into(), 157)));
    }

    #[test]
    fn a_truncated_or_positionless_dump_is_refused() {
        let mut cut = inspect(
            "-- CHANGE MASTER TO MASTER_LOG_FILE='b.000001', MASTER_LOG_POS=4;\nINSERT",
            5,
        );
        assert!(cut.verdict().unwrap_err().0.contains("truncated"));
        let mut nolog = inspect("-- MariaDB dump\n\n-- Dump completed on x\n", 5);
        assert!(nolog.verdict().unwrap_err().0.contains("log_bin"));
    }
}
