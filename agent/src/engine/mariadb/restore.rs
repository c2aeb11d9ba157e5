//! Restoring one database of a MariaDB dump into a new database, through the `mariadb`
//! client in one session.
//!
//! A dump holds every database of the instance. The stream is read line by line (the dump
//! escapes newlines inside values, and --hex-blob keeps binary data out of it): the
//! session settings at its head are kept, the chosen database's section is kept with its
//! `CREATE DATABASE`, `USE` and `ALTER DATABASE` statements renamed to the new database,
//! and every other database's section is left out. Like PostgreSQL restores, the new
//! database must not exist unless the operator passed --clean, and a failed restore drops
//! the database it created.
//!
//! Views and routines that name their own database explicitly (views always do) still
//! name the source database after a rename; restore under the original name on another
//! instance when that matters.

use std::process::Stdio;

use tidemark_core::ids::BackupId;
use tidemark_core::text::bytes as human_bytes;
use tidemark_proto::RestoreJob;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::{Maria, quote_ident, quote_literal};
use crate::download::download_part;
use crate::error::AgentError;
use crate::job::{JobContext, JobResult};
use crate::tool::{self, ToolError};

const SECTION: &str = "-- Current Database: `";
/// Longer lines are rows, never a statement that names the database.
const SHORT_LINE: usize = 4096;

pub async fn run(ctx: &JobContext, db: &Maria, job: &RestoreJob) -> JobResult {
    let into = &job.into_database;
    if job.database.is_empty() {
        return Err(AgentError::permanent(
            "the controller named no source database for this dump",
        ));
    }
    let exists = db
        .query(
            None,
            &format!(
                "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = {}",
                quote_literal(into)
            ),
        )
        .await?
        == "1";
    if exists {
        if !job.clean {
            return Err(AgentError::permanent(format!(
                "database {into} already exists on instance {}; pass --clean to replace it, or pick a new name",
                db.cfg.name
            )));
        }
        db.query(None, &format!("DROP DATABASE {}", quote_ident(into)))
            .await?;
    }
    let backup = BackupId(job.backup_id);
    match restore_into(ctx, db, job, backup).await {
        Ok(bytes) => Ok(format!(
            "restored database {} of backup {backup} into database {into} on instance {} ({} of dump read)",
            job.database,
            db.cfg.name,
            human_bytes(bytes)
        )),
        Err(f) => {
            let mut msg = format!(
                "restore of backup {backup} into {into} failed: {}",
                f.message()
            );
            match db
                .query(
                    None,
                    &format!("DROP DATABASE IF EXISTS {}", quote_ident(into)),
                )
                .await
            {
                Ok(_) => msg.push_str(&format!(
                    "; the partly restored database {into} was dropped"
                )),
                Err(e) => msg.push_str(&format!(
                    "; dropping the partly restored database {into} failed too: {e}"
                )),
            }
            Err(AgentError::new(f.kind(), msg))
        }
    }
}

async fn restore_into(
    ctx: &JobContext,
    db: &Maria,
    job: &RestoreJob,
    backup: BackupId,
) -> Result<u64, AgentError> {
    let mut cmd = db.command("mariadb");
    cmd.arg("--batch")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let program = db.program("mariadb").display().to_string();
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ToolError::Spawn { program, source })?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let (mut tx, rx) = tokio::io::duplex(1 << 20);
    let download = async {
        let r = download_part(
            &ctx.client,
            backup,
            &job.part,
            ctx.job_id,
            &mut tx,
            &ctx.progress,
        )
        .await;
        drop(tx);
        r
    };
    let mut filter = SectionFilter::new(&job.database, &job.into_database);
    let feed = async {
        let mut lines = BufReader::new(rx);
        let mut line = Vec::new();
        loop {
            line.clear();
            if lines.read_until(b'\n', &mut line).await? == 0 {
                break;
            }
            if let Some(out) = filter.line(&line) {
                stdin.write_all(&out).await?;
            }
        }
        stdin.shutdown().await?;
        drop(stdin);
        Ok::<(), std::io::Error>(())
    };
    let mut err = String::new();
    let (downloaded, fed, _) = tokio::join!(download, feed, stderr.read_to_string(&mut err));
    let status = child
        .wait()
        .await
        .map_err(|e| AgentError::permanent(format!("waiting for mariadb: {e}")))?;
    if !status.success() {
        return Err(AgentError::permanent(format!(
            "mariadb {}: {}",
            tool::describe(status),
            err.trim()
        )));
    }
    let bytes = downloaded?;
    fed.map_err(|e| AgentError::permanent(format!("feeding mariadb: {e}")))?;
    if !filter.found {
        return Err(AgentError::permanent(format!(
            "the dump has no database {}",
            job.database
        )));
    }
    Ok(bytes)
}

/// Keeps the head of a dump and one database's section, renamed.
struct SectionFilter {
    source: String,
    from: String,
    to: String,
    alter: String,
    /// None: the head, before any section; Some(true): inside the chosen section.
    inside: Option<bool>,
    found: bool,
}

impl SectionFilter {
    fn new(source: &str, into: &str) -> Self {
        Self {
            source: source.to_string(),
            from: quote_ident(source),
            to: quote_ident(into),
            alter: format!("ALTER DATABASE {}", quote_ident(source)),
            inside: None,
            found: false,
        }
    }

    /// The line to send on, renamed if need be; None to leave it out.
    fn line<'a>(&mut self, line: &'a [u8]) -> Option<std::borrow::Cow<'a, [u8]>> {
        use std::borrow::Cow;
        if let Some(rest) = line.strip_prefix(SECTION.as_bytes()) {
            let name = String::from_utf8_lossy(rest);
            let name = name.trim_end().trim_end_matches('`').replace("``", "`");
            let mine = name == self.source;
            self.found |= mine;
            self.inside = Some(mine);
            return None;
        }
        match self.inside {
            None => Some(Cow::Borrowed(line)),
            Some(false) => None,
            // Statements naming the database are short; rows (long INSERT lines) pass as
            // they are, unread.
            Some(true) if line.len() > SHORT_LINE => Some(Cow::Borrowed(line)),
            Some(true) => {
                let text = String::from_utf8_lossy(line);
                let names_db = text.starts_with("CREATE DATABASE ")
                    || text.starts_with("USE ")
                    || text.contains(&self.alter);
                if names_db {
                    Some(Cow::Owned(text.replace(&self.from, &self.to).into_bytes()))
                } else {
                    Some(Cow::Borrowed(line))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_chosen_section_is_kept_and_renamed() {
        let dump = "/*!40101 SET NAMES utf8mb4 */;\n\
            -- CHANGE MASTER TO MASTER_LOG_FILE='b.000001', MASTER_LOG_POS=4;\n\
            -- Current Database: `a`\n\
            CREATE DATABASE /*!32312 IF NOT EXISTS*/ `a`;\n\
            USE `a`;\n\
            INSERT INTO `t` VALUES (1);\n\
            -- Current Database: `shop`\n\
            CREATE DATABASE /*!32312 IF NOT EXISTS*/ `shop` /*!40100 DEFAULT CHARACTER SET latin1 */;\n\
            USE `shop`;\n\
            INSERT INTO `t` VALUES ('`shop`');\n\
            /*!50003 ALTER DATABASE `shop` CHARACTER SET latin1 */ ;;\n\
            -- Current Database: `z`\n\
            USE `z`;\n";
        let mut f = SectionFilter::new("shop", "shop_copy");
        let out: String = dump
            .split_inclusive('\n')
            .filter_map(|l| f.line(l.as_bytes()).map(|b| b.into_owned()))
            .map(|b| String::from_utf8(b).unwrap())
            .collect();
        assert!(f.found);
        assert_eq!(
            out,
            "/*!40101 SET NAMES utf8mb4 */;\n\
             -- CHANGE MASTER TO MASTER_LOG_FILE='b.000001', MASTER_LOG_POS=4;\n\
             CREATE DATABASE /*!32312 IF NOT EXISTS*/ `shop_copy` /*!40100 DEFAULT CHARACTER SET latin1 */;\n\
             USE `shop_copy`;\n\
             INSERT INTO `t` VALUES ('`shop`');\n\
             /*!50003 ALTER DATABASE `shop_copy` CHARACTER SET latin1 */ ;;\n"
        );
    }
}
