//! Throwaway MariaDB servers (mariadb-install-db in a temp dir, mariadbd on a socket only,
//! binary logging on) and a fleet whose agent owns one as instance `demo-mariadb`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::TestDir;
use crate::fleet::Pki;
use crate::fleet::{Agent, Cli, Controller};
use crate::process::{Daemon, run, wait_for};

/// `/usr/sbin/mariadbd` and friends, from Debian's mariadb-server and mariadb-backup.
pub const MARIADBD: &str = "/usr/sbin/mariadbd";

fn tool(name: &str) -> Command {
    let mut c = Command::new(name);
    c.arg("--no-defaults");
    c
}

pub struct MariaDb {
    pub dir: PathBuf,
    pub datadir: PathBuf,
    pub binlog_dir: PathBuf,
    pub socket: PathBuf,
    daemon: Option<Daemon>,
    extra: Vec<String>,
}

impl MariaDb {
    /// Initialise and start a server in DIR/NAME, with binary logging in ROW format.
    /// `extra` are more mariadbd options.
    pub fn start(parent: &Path, name: &str, extra: &[&str]) -> Self {
        assert!(
            Path::new(MARIADBD).exists(),
            "{MARIADBD} is missing: apt-get install mariadb-server mariadb-backup"
        );
        let dir = parent.join(name);
        let datadir = dir.join("data");
        let binlog_dir = dir.join("binlog");
        for d in [&datadir, &binlog_dir, &dir.join("tmp")] {
            std::fs::create_dir_all(d).unwrap();
        }
        // Setup, not what is tested: a bootstrap that fails (seen once in a full run beside
        // builds, before any Tidemark code ran) is tried once more on an empty directory,
        // and both outputs are shown if that fails too.
        let install = || {
            let out = run(tool("mariadb-install-db")
                .arg("--user=root")
                .arg(format!("--datadir={}", datadir.display()))
                .args(["--auth-root-authentication-method=normal", "--skip-test-db"]));
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status.success(), text)
        };
        let (ok, first) = install();
        if !ok {
            std::fs::remove_dir_all(&datadir).unwrap();
            std::fs::create_dir_all(&datadir).unwrap();
            let (ok, second) = install();
            assert!(
                ok,
                "mariadb-install-db failed twice.\nFirst:\n{first}\nSecond:\n{second}"
            );
        }
        let mut db = Self {
            socket: dir.join("sock"),
            dir,
            datadir,
            binlog_dir,
            daemon: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        db.launch();
        db
    }

    fn launch(&mut self) {
        let mut cmd = Command::new(MARIADBD);
        cmd.arg("--no-defaults")
            .arg("--user=root")
            .arg(format!("--datadir={}", self.datadir.display()))
            .arg(format!("--tmpdir={}", self.dir.join("tmp").display()))
            .arg(format!("--socket={}", self.socket.display()))
            .arg(format!("--pid-file={}", self.dir.join("pid").display()))
            .arg(format!(
                "--log-bin={}",
                self.binlog_dir.join("mysql-bin").display()
            ))
            .args(["--skip-networking", "--server-id=1", "--binlog-format=ROW"])
            .arg("--character-set-server=utf8mb4")
            .args([
                "--innodb-buffer-pool-size=64M",
                "--innodb-log-file-size=48M",
            ])
            .args(&self.extra);
        let log = self.dir.join("server.log");
        self.daemon = Some(Daemon::spawn("mariadbd", cmd, &log));
        wait_for(
            "mariadbd to accept connections",
            Duration::from_secs(60),
            || self.try_sql("SELECT 1").ok(),
        );
    }

    /// Stop the server cleanly (mariadb-admin shutdown) and wait for it.
    pub fn stop(&mut self) {
        let _ = run(tool("mariadb-admin")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-uroot", "shutdown"]));
        if let Some(mut d) = self.daemon.take() {
            wait_for("mariadbd to stop", Duration::from_secs(60), || {
                d.has_exited().map(|_| ())
            });
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        let out = run(tool("mariadb")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-uroot", "--batch", "--skip-column-names", "-e", sql]));
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql)
            .unwrap_or_else(|e| panic!("SQL {sql:?} failed: {e}"))
    }

    /// `CHECKSUM TABLE db.t` as a number.
    pub fn checksum(&self, table: &str) -> String {
        let out = self.sql(&format!("CHECKSUM TABLE {table}"));
        out.split('\t').nth(1).unwrap_or("").to_string()
    }

    /// The binlog files in SHOW BINARY LOGS order; the last is the active one.
    pub fn binlogs(&self) -> Vec<String> {
        self.sql("SHOW BINARY LOGS")
            .lines()
            .filter_map(|l| l.split('\t').next())
            .map(str::to_string)
            .collect()
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        // Kill, not shut down: a test that failed should not wait on the server.
        self.daemon.take();
    }
}

/// The `[[instance]]` table for a test server.
pub fn maria_instance_toml(name: &str, db: &MariaDb, extra: &str) -> String {
    format!(
        "[[instance]]\nname = \"{name}\"\nengine = \"mariadb\"\nhost = \"{}\"\nuser = \"root\"\nos-user = \"root\"\n{extra}\n",
        db.socket.display()
    )
}

/// A MariaDB server, a controller, agent `db1` owning it as `demo-mariadb`, and an admin CLI.
/// Fields drop in order: processes first, the directory last.
pub struct MariaFleet {
    /// The S3-compatible server holding the store, when the fleet uses one.
    pub s3: Option<crate::s3::S3Server>,
    pub agent: Agent,
    pub controller: Controller,
    pub db: MariaDb,
    pub admin: Cli,
    pub pki: Pki,
    pub dir: TestDir,
}

impl MariaFleet {
    /// Start drill sandbox NAME on this host, dialing this fleet's controller.
    pub fn start_sandbox(&self, name: &str) -> crate::fleet::Sandbox {
        crate::fleet::Sandbox::start(
            self.dir.path(),
            &self.pki,
            name,
            &self.controller.url,
            &self.admin,
            None,
        )
    }

    /// `instance_extra` goes into demo-mariadb's instance table, `controller_extra` into the
    /// controller's config.
    pub fn start(label: &str, instance_extra: &str, controller_extra: &str) -> Self {
        Self::build(label, instance_extra, controller_extra, false)
    }

    /// As [`start`](Self::start), with the store in an S3-compatible server when `s3`.
    pub fn build(label: &str, instance_extra: &str, controller_extra: &str, s3: bool) -> Self {
        let dir = TestDir::new(label);
        let db = MariaDb::start(dir.path(), "maria", &[]);
        let pki = Pki::init(&dir.path().join("pki"));
        let s3 = s3.then(|| crate::s3::S3Server::start(dir.path()));
        let mut controller_extra = controller_extra.to_string();
        if let Some(s) = &s3 {
            controller_extra.push('\n');
            controller_extra.push_str(&s.store_toml(dir.path()));
        }
        let controller =
            Controller::start_configured(dir.path(), &pki, "127.0.0.1:0", &controller_extra);
        let admin = Cli::new(dir.path(), &pki, "admin:ops", &controller.url);
        let instance = maria_instance_toml("demo-mariadb", &db, instance_extra);
        let agent = Agent::start(dir.path(), &pki, "db1", &controller, &admin, &instance);
        Self {
            s3,
            agent,
            controller,
            db,
            admin,
            pki,
            dir,
        }
    }

    /// Run a backup of KIND to the end, asserting it succeeded; returns its JSON detail.
    pub fn backup(&self, kind: &str) -> serde_json::Value {
        let out = self.admin.run(&[
            "backup",
            "--instance",
            "demo-mariadb",
            "--kind",
            kind,
            "--wait",
            "--output",
            "json",
        ]);
        assert_eq!(
            out.code,
            0,
            "{}{}\nagent log:\n{}",
            out.stdout,
            out.stderr,
            self.agent.daemon.log_text()
        );
        out.json()
    }

    /// demo-mariadb's recovery window as JSON, read even while `pitr-window` exits 1 (it is
    /// not restorable until a backup exists; the JSON still says what is archived).
    pub fn window(&self) -> serde_json::Value {
        self.admin
            .run(&[
                "pitr-window",
                "--instance",
                "demo-mariadb",
                "--output",
                "json",
            ])
            .json()
    }

    /// Wait until binlog NAME is in the archive (the newest archived file reaches it).
    pub fn wait_archived(&self, name: &str) {
        wait_for(
            &format!("binlog {name} to be archived"),
            Duration::from_secs(60),
            || {
                let w = self.window();
                let newest = w["newest_wal"].as_str()?.to_string();
                (newest.as_str() >= name).then_some(())
            },
        );
    }
}

/// A server a restore started (`--start`) in `datadir`; killed when dropped, so a failing
/// test leaves nothing running.
pub struct Restored {
    datadir: PathBuf,
}

impl Restored {
    pub fn new(datadir: &Path) -> Self {
        Self {
            datadir: datadir.to_path_buf(),
        }
    }

    /// Run `sql` through the server's socket; the output, tab-separated.
    pub fn sql(&self, sql: &str) -> String {
        let out = tool("mariadb")
            .arg(format!(
                "--socket={}",
                self.datadir.join("mysqld.sock").display()
            ))
            .args(["-uroot", "--batch", "--skip-column-names", "-e", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.datadir.join("mysqld.pid")) {
            let _ = Command::new("kill").args(["-9", pid.trim()]).status();
        }
    }
}
