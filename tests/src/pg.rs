//! Throwaway PostgreSQL clusters: initdb into the test dir, a unix socket only (no TCP port
//! to collide on), run as the postgres user when the tests run as root.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::run;

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

pub struct PgCluster {
    pub dir: PathBuf,
    pub data: PathBuf,
    /// The socket directory, which libpq takes as its host.
    pub socket_dir: PathBuf,
    owner: Option<(u32, u32)>,
}

impl PgCluster {
    /// initdb and start a cluster under `parent/pg`.
    pub fn start(parent: &Path) -> Self {
        Self::start_with(parent, "pg", "")
    }

    /// initdb and start a cluster under `parent/NAME`, with `conf` appended to
    /// postgresql.conf (archiving settings, say).
    pub fn start_with(parent: &Path, name: &str, conf: &str) -> Self {
        let initdb = Path::new(PG_BIN).join("initdb");
        assert!(
            initdb.exists(),
            "{} is missing: install PostgreSQL 15 (apt-get install postgresql-15); .ci/run does this",
            initdb.display()
        );
        let dir = parent.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let owner = if crate::running_as_root() {
            let ids = crate::user_ids("postgres")
                .expect("the postgres OS user must exist (PostgreSQL refuses to run as root)");
            std::os::unix::fs::chown(&dir, Some(ids.0), Some(ids.1)).unwrap();
            Some(ids)
        } else {
            None
        };
        let me = Self {
            data: dir.join("data"),
            socket_dir: dir.clone(),
            dir,
            owner,
        };
        let out = run(me
            .server_cmd("initdb")
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
                "-D",
            ])
            .arg(&me.data));
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let conf = format!(
            "listen_addresses = ''\nunix_socket_directories = '{}'\nfsync = off\nshared_buffers = 32MB\nmax_connections = 30\n{conf}\n",
            me.socket_dir.display()
        );
        let pgconf = me.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&pgconf).unwrap();
        text.push_str(&conf);
        std::fs::write(&pgconf, text).unwrap();
        let out = run(me
            .server_cmd("pg_ctl")
            .arg("-D")
            .arg(&me.data)
            .arg("-l")
            .arg(me.dir.join("server.log"))
            .args(["-w", "start"]));
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            me.server_log()
        );
        me
    }

    /// Run a PostgreSQL server program (pg_ctl, pg_controldata) as the cluster's owner.
    pub fn server_cmd(&self, tool: &str) -> Command {
        let mut c = Command::new(Path::new(PG_BIN).join(tool));
        if let Some((uid, gid)) = self.owner {
            c.uid(uid).gid(gid);
        }
        c
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// A URL for sqlx (and the controller's `[catalog] url`): `db` as the superuser, over
    /// the cluster's unix socket.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@localhost/{db}?host={}",
            self.socket_dir.display()
        )
    }

    /// A psql session holding an ACCESS EXCLUSIVE lock on `table` in `db` (for two minutes,
    /// or until the child is killed): anything that reads the table, pg_dump included,
    /// waits for it.
    pub fn hold_lock(&self, db: &str, table: &str) -> std::process::Child {
        let child = self
            .psql_cmd(db)
            .arg("-c")
            .arg(format!(
                "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(120);"
            ))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("psql");
        crate::process::wait_for(
            "the lock to be held",
            std::time::Duration::from_secs(10),
            || {
                (self.sql(
                db,
                &format!("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = '{table}' AND l.mode = 'AccessExclusiveLock' AND l.granted"),
            ) == "1")
                .then_some(())
            },
        );
        child
    }

    /// How many `program` processes (pg_dump, say) are running against this cluster: those
    /// whose PGHOST, as libpq reads it from their environment, is this cluster's socket
    /// directory. A killed client is gone here at once, while its server backend may wait
    /// on a lock until the lock is released.
    pub fn clients(&self, program: &str) -> usize {
        use std::os::unix::ffi::OsStrExt;
        let want = format!("PGHOST={}", self.socket_dir.display());
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return 0;
        };
        procs
            .flatten()
            .filter(|p| {
                let dir = p.path();
                let exe = std::fs::read(dir.join("cmdline")).unwrap_or_default();
                let argv0 = exe.split(|b| *b == 0).next().unwrap_or_default();
                let named = std::path::Path::new(std::ffi::OsStr::from_bytes(argv0))
                    .file_name()
                    .is_some_and(|n| n == program);
                named
                    && std::fs::read(dir.join("environ"))
                        .unwrap_or_default()
                        .split(|b| *b == 0)
                        .any(|v| v == want.as_bytes())
            })
            .count()
    }

    /// A psql command connected to `db` as the superuser.
    pub fn psql_cmd(&self, db: &str) -> Command {
        let mut c = Command::new(Path::new(PG_BIN).join("psql"));
        c.arg("-h").arg(&self.socket_dir).args([
            "-U",
            "postgres",
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            db,
        ]);
        c
    }

    /// Complete the current WAL segment and wait until the archiver has archived it;
    /// returns its name.
    pub fn archive_current_segment(&self) -> String {
        let seg = self.sql(
            "postgres",
            "SELECT pg_walfile_name(pg_current_wal_insert_lsn())",
        );
        self.sql("postgres", "SELECT pg_switch_wal()");
        let sql =
            format!("SELECT coalesce(last_archived_wal, '') >= '{seg}' FROM pg_stat_archiver");
        crate::process::wait_for(
            &format!("{seg} to be archived"),
            std::time::Duration::from_secs(60),
            || (self.sql("postgres", &sql) == "t").then_some(()),
        );
        seg
    }

    /// Run SQL and return its trimmed, unaligned output; panics on error.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let out = run(self.psql_cmd(db).arg("-c").arg(sql));
        assert!(
            out.status.success(),
            "psql failed on {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn try_sql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = run(self.psql_cmd(db).arg("-c").arg(sql));
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// One md5 per user table, over its rows in a stable order: equal fingerprints mean
    /// equal data.
    pub fn fingerprint(&self, db: &str) -> Vec<(String, String)> {
        let tables = self.sql(
            db,
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
        );
        tables
            .lines()
            .map(|t| {
                let md5 = self.sql(db, &format!("SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM {t} x"));
                (t.to_string(), md5)
            })
            .collect()
    }
}

/// Let the postgres user read `path` (archive_command runs as postgres and reads the agent's
/// config and key); root, which runs the agent daemon in tests, reads it regardless.
pub fn give_to_postgres(path: &Path) {
    if let Some((uid, gid)) = crate::running_as_root()
        .then(|| crate::user_ids("postgres"))
        .flatten()
    {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = run(self.server_cmd("pg_ctl").arg("-D").arg(&self.data).args([
            "-m",
            "immediate",
            "stop",
        ]));
    }
}

/// A server a restore started (`--start`) in `data`, on `port` with its socket in
/// `socket_dir`; stopped when dropped, so a failing test leaves nothing running.
pub struct Restored {
    pub data: PathBuf,
    pub port: u16,
    pub socket_dir: PathBuf,
}

impl Restored {
    pub fn new(data: &Path, port: u16, socket_dir: &Path) -> Self {
        Self {
            data: data.to_path_buf(),
            port,
            socket_dir: socket_dir.to_path_buf(),
        }
    }

    /// Run `sql` in database postgres; the output, trimmed.
    pub fn sql(&self, sql: &str) -> String {
        let out = run(Command::new(format!("{PG_BIN}/psql"))
            .arg("-h")
            .arg(&self.socket_dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-X",
                "-A",
                "-t",
                "-q",
                "-d",
                "postgres",
                "-c",
                sql,
            ]));
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        let mut c = Command::new(format!("{PG_BIN}/pg_ctl"));
        c.arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"]);
        if let Some((uid, gid)) = crate::user_ids("postgres").filter(|_| crate::running_as_root()) {
            c.uid(uid).gid(gid);
        }
        let _ = run(&mut c);
    }
}
