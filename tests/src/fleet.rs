//! A whole fleet for a test: a CA, a controller, agents, and an admin CLI, all real
//! processes talking mTLS on loopback.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::pg::PgCluster;
use crate::process::{Daemon, run, wait_for};
use crate::{TestDir, bin};

/// A fleet CA in `dir/NAME`.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn init(dir: &Path) -> Self {
        let out = run(Command::new(bin("tidemark"))
            .args(["pki", "init", "--dir"])
            .arg(dir));
        assert!(
            out.status.success(),
            "pki init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir: dir.into() }
    }

    /// Issue ROLE:NAME, or reuse the one issued before; returns (cert, key).
    pub fn issue(&self, name: &str, extra: &[&str]) -> (PathBuf, PathBuf) {
        let stem = name.replace(':', "-");
        let files = (
            self.dir.join(format!("{stem}.crt")),
            self.dir.join(format!("{stem}.key")),
        );
        if files.0.exists() {
            return files;
        }
        let out = run(Command::new(bin("tidemark"))
            .args(["pki", "issue", "--dir"])
            .arg(&self.dir)
            .args(["--name", name])
            .args(extra));
        assert!(
            out.status.success(),
            "pki issue {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        files
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    pub fn tls_toml(&self, cert: &Path, key: &Path) -> String {
        format!(
            "[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            self.ca().display(),
            cert.display(),
            key.display()
        )
    }
}

pub struct Controller {
    pub daemon: Daemon,
    pub data_dir: PathBuf,
    pub url: String,
}

impl Controller {
    pub fn start(dir: &Path, pki: &Pki) -> Self {
        Self::start_configured(dir, pki, "127.0.0.1:0", "")
    }

    /// Start on `listen` with `extra` appended to the config (`[drills]`, `[[instance]]`).
    /// The certificate names localhost and 127.0.0.1 unless the test issued
    /// controller:localhost itself first.
    pub fn start_configured(dir: &Path, pki: &Pki, listen: &str, extra: &str) -> Self {
        let (cert, key) = pki.issue("controller:localhost", &["--san", "127.0.0.1"]);
        let data_dir = dir.join("controller");
        let config = dir.join("controller.toml");
        std::fs::write(
            &config,
            format!(
                "version = 1\nlisten = \"{listen}\"\nmetrics-listen = \"127.0.0.1:0\"\ndata-dir = \"{}\"\n{}\n{extra}\n",
                data_dir.display(),
                pki.tls_toml(&cert, &key)
            ),
        )
        .unwrap();
        Self::start_with(dir, &config, data_dir)
    }

    /// The port it listens on.
    pub fn port(&self) -> String {
        self.url.rsplit(':').next().unwrap().to_string()
    }

    /// Pin the config (`DIR/controller.toml`) to the port it listens on now, so agents'
    /// configs stay right across restarts; returns the config's path.
    pub fn pin_port(&self, dir: &Path) -> PathBuf {
        let config = dir.join("controller.toml");
        let text = std::fs::read_to_string(&config).unwrap().replace(
            "\nlisten = \"127.0.0.1:0\"",
            &format!("\nlisten = \"127.0.0.1:{}\"", self.port()),
        );
        std::fs::write(&config, text).unwrap();
        config
    }

    /// Kill the controller (if it still runs) and start it again on the same port and data
    /// directory.
    pub fn restart_in_place(&mut self, dir: &Path) {
        let config = self.pin_port(dir);
        self.daemon.kill9();
        let data_dir = self.data_dir.clone();
        *self = Controller::start_with(dir, &config, data_dir);
    }

    /// Start (or restart) on an existing config.
    pub fn start_with(dir: &Path, config: &Path, data_dir: PathBuf) -> Self {
        let addr_file = data_dir.join("controller.addr");
        let _ = std::fs::remove_file(&addr_file);
        let mut cmd = Command::new(bin("tidemark-controller"));
        cmd.arg("--config").arg(config);
        let mut daemon = Daemon::spawn("controller", cmd, &dir.join("controller.log"));
        let addr = wait_for("the controller to listen", Duration::from_secs(20), || {
            if let Some(status) = daemon.has_exited() {
                panic!("controller exited with {status}: {}", daemon.log_text());
            }
            std::fs::read_to_string(&addr_file)
                .ok()
                .filter(|s| s.ends_with('\n'))
        });
        let port = addr.trim().rsplit(':').next().unwrap().to_string();
        Self {
            daemon,
            data_dir,
            url: format!("https://localhost:{port}"),
        }
    }

    /// A read-only connection to the catalog (SQLite lets a second reader open it while the
    /// controller runs), with a runtime to drive it.
    fn catalog(&self) -> (tokio::runtime::Runtime, sqlx::SqlitePool) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(self.data_dir.join("catalog.db"))
            .read_only(true);
        let pool = rt.block_on(sqlx::SqlitePool::connect_with(opts)).unwrap();
        (rt, pool)
    }

    /// Ids (hex) of the chunks a query's first column returns.
    fn chunk_ids(&self, sql: &'static str, binds: &[&str]) -> Vec<String> {
        use sqlx::Row;
        let (rt, pool) = self.catalog();
        let mut q = sqlx::query(sql);
        for b in binds {
            q = q.bind(*b);
        }
        rt.block_on(q.fetch_all(&pool))
            .unwrap()
            .iter()
            .map(|r| {
                tidemark_core::ids::ChunkId::from_slice(&r.get::<Vec<u8>, _>(0))
                    .unwrap()
                    .to_hex()
            })
            .collect()
    }

    /// Where the catalog says chunk `hex` is stored.
    pub fn chunk_place(&self, hex_id: &str) -> ChunkPlace {
        use sqlx::Row;
        let (rt, pool) = self.catalog();
        let id = hex_id
            .parse::<tidemark_core::ids::ChunkId>()
            .unwrap()
            .0
            .to_vec();
        let r = rt
            .block_on(
                sqlx::query("SELECT pack, pack_offset, pack_len FROM chunks WHERE id = ?")
                    .bind(id)
                    .fetch_one(&pool),
            )
            .unwrap_or_else(|e| panic!("chunk {hex_id}: {e}"));
        ChunkPlace {
            hex: hex_id.to_string(),
            pack: r.get::<Option<String>, _>(0).expect("a packed chunk"),
            offset: r.get::<i64, _>(1) as u64,
            len: r.get::<i64, _>(2) as u64,
        }
    }

    /// Every chunk the catalog holds as stored.
    pub fn stored_chunks(&self) -> Vec<ChunkPlace> {
        self.chunk_ids("SELECT id FROM chunks ORDER BY id", &[])
            .iter()
            .map(|h| self.chunk_place(h))
            .collect()
    }

    /// The chunks stored in pack `pack`.
    pub fn pack_chunks(&self, pack: &str) -> Vec<String> {
        self.chunk_ids("SELECT id FROM chunks WHERE pack = ? ORDER BY id", &[pack])
    }

    /// The pack files (filesystem store) to delete for archived WAL file `name` to be lost:
    /// those holding chunks no other WAL file or backup uses.
    pub fn wal_only_pack_files(&self, instance: &str, name: &str) -> Vec<PathBuf> {
        let mut packs: Vec<String> = self
            .chunk_ids(
                "SELECT DISTINCT chunk_id FROM wal_chunks WHERE instance = ? AND name = ?
                 AND chunk_id NOT IN (SELECT chunk_id FROM wal_chunks WHERE name <> ?)
                 AND chunk_id NOT IN (SELECT chunk_id FROM part_chunks)",
                &[instance, name, name],
            )
            .iter()
            .map(|h| self.chunk_place(h).pack)
            .collect();
        packs.sort();
        packs.dedup();
        packs.iter().map(|p| self.fs_pack_path(p)).collect()
    }

    /// Ids (hex) of chunks that only part `part` of backup `backup` uses.
    pub fn part_only_chunks(&self, backup: i64, part: &str) -> Vec<String> {
        let b = backup.to_string();
        self.chunk_ids(
            "SELECT DISTINCT chunk_id FROM part_chunks WHERE backup_id = ? AND part = ?
             AND chunk_id NOT IN (SELECT chunk_id FROM part_chunks WHERE backup_id <> ? OR part <> ?)
             AND chunk_id NOT IN (SELECT chunk_id FROM wal_chunks)",
            &[&b, part, &b, part],
        )
    }

    /// Where the filesystem store keeps pack `name`.
    pub fn fs_pack_path(&self, name: &str) -> PathBuf {
        self.data_dir
            .join("store/packs")
            .join(&name[..2])
            .join(name)
    }

    /// GET /metrics; returns the Prometheus text.
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let addr =
            std::fs::read_to_string(self.data_dir.join("metrics.addr")).expect("metrics.addr");
        let mut conn = std::net::TcpStream::connect(addr.trim()).expect("connect to metrics");
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        conn.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    }

    /// One sample from the metrics text: `name{labels}` -> value.
    pub fn metric(&self, series: &str) -> f64 {
        let text = self.metrics();
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    }

    /// Paths of every pack in the filesystem store.
    pub fn pack_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let root = self.data_dir.join("store/packs");
        for fan in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            for f in std::fs::read_dir(fan.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                out.push(f.path());
            }
        }
        out.sort();
        out
    }

    /// Every object of the filesystem store (packs, records, the identity), each with its
    /// size: what "the store holds" means when a test compares before and after.
    pub fn store_files(&self) -> Vec<(PathBuf, u64)> {
        fn walk(d: &Path, out: &mut Vec<(PathBuf, u64)>) {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push((p.clone(), e.metadata().map(|m| m.len()).unwrap_or(0)));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.data_dir.join("store"), &mut out);
        out.sort();
        out
    }
}

/// Where a chunk's stored bytes are: `len` bytes at `offset` of pack `pack`.
#[derive(Debug, Clone)]
pub struct ChunkPlace {
    pub hex: String,
    pub pack: String,
    pub offset: u64,
    pub len: u64,
}

/// Flip one bit of the byte at `at` in `path`, as disk or bucket rot would.
pub fn flip_bit(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes[at as usize] ^= 0x04;
    std::fs::write(path, bytes).unwrap();
}

/// An operator's CLI, configured through a config file like a real one.
pub struct Cli {
    pub config: PathBuf,
}

pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    fn from(out: Output) -> Self {
        Self {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

impl Cli {
    /// `tidemark drill run --instance INSTANCE --wait --output json ARGS...`: the first
    /// drill's report and the exit code.
    pub fn drill_run(&self, instance: &str, args: &[&str]) -> (Value, i32) {
        let mut a = vec![
            "drill",
            "run",
            "--instance",
            instance,
            "--wait",
            "--output",
            "json",
        ];
        a.extend(args);
        let out = self.run(&a);
        let v = out.json();
        (v[0].clone(), out.code)
    }

    pub fn new(dir: &Path, pki: &Pki, identity: &str, controller_url: &str) -> Self {
        let (cert, key) = pki.issue(identity, &[]);
        Self::with_files(dir, &pki.ca(), &cert, &key, controller_url)
    }

    pub fn with_files(
        dir: &Path,
        ca: &Path,
        cert: &Path,
        key: &Path,
        controller_url: &str,
    ) -> Self {
        let config = dir.join(format!(
            "cli-{}.toml",
            cert.file_stem().unwrap().to_string_lossy()
        ));
        std::fs::write(
            &config,
            format!(
                "version = 1\ncontroller = \"{controller_url}\"\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
                ca.display(),
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
        Self { config }
    }

    pub fn run(&self, args: &[&str]) -> CliOutput {
        CliOutput::from(run(Command::new(bin("tidemark"))
            .env("TIDEMARK_CONFIG", &self.config)
            .args(args)))
    }

    /// Run with `--output json`, asserting success.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        let out = self.run(&a);
        assert_eq!(
            out.code, 0,
            "tidemark {args:?} failed: {}{}",
            out.stdout, out.stderr
        );
        out.json()
    }
}

pub struct Agent {
    pub daemon: Daemon,
    pub name: String,
    pub config: PathBuf,
}

impl Agent {
    /// Start agent NAME with `instances` (TOML `[[instance]]` tables) and wait until the
    /// controller lists it as connected.
    pub fn start(
        dir: &Path,
        pki: &Pki,
        name: &str,
        controller: &Controller,
        admin: &Cli,
        instances: &str,
    ) -> Self {
        let config = Self::write_config(dir, pki, name, &controller.url, "", instances);
        let agent = Self::spawn(dir, name, &config);
        agent.wait_connected(admin);
        agent
    }

    /// Write agent NAME's config: `top` holds top-level keys, `instances` its tables. The
    /// config and the agent's certificate and key are readable by the postgres user, whose
    /// archive_command (`tidemark-agent wal-push`) reads them.
    pub fn write_config(
        dir: &Path,
        pki: &Pki,
        name: &str,
        controller_url: &str,
        top: &str,
        instances: &str,
    ) -> PathBuf {
        let (cert, key) = pki.issue(&format!("agent:{name}"), &[]);
        let config = dir.join(format!("agent-{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "version = 1\ncontroller = \"{controller_url}\"\nspool-dir = \"{}\"\n{top}\n{}{}",
                dir.display(),
                pki.tls_toml(&cert, &key),
                instances
            ),
        )
        .unwrap();
        for f in [&config, &cert, &key, &pki.dir] {
            crate::pg::give_to_postgres(f);
        }
        config
    }

    pub fn spawn(dir: &Path, name: &str, config: &Path) -> Self {
        let mut cmd = Command::new(bin("tidemark-agent"));
        cmd.arg("--config").arg(config);
        let daemon = Daemon::spawn(
            &format!("agent {name}"),
            cmd,
            &dir.join(format!("agent-{name}.log")),
        );
        Self {
            daemon,
            name: name.into(),
            config: config.into(),
        }
    }

    /// Start the agent process again (after a kill), logging to a new file.
    pub fn restart(&mut self, dir: &Path, admin: &Cli) {
        self.daemon.kill9();
        let mut cmd = Command::new(bin("tidemark-agent"));
        cmd.arg("--config").arg(&self.config);
        let log = dir.join(format!("agent-{}-restarted.log", self.name));
        self.daemon = Daemon::spawn(&format!("agent {} (restarted)", self.name), cmd, &log);
        self.wait_connected(admin);
    }

    pub fn wait_connected(&self, admin: &Cli) {
        wait_for(
            &format!("agent {} to connect", self.name),
            Duration::from_secs(30),
            || {
                let agents = admin.json(&["agents"]);
                agents
                    .as_array()?
                    .iter()
                    .any(|a| a["name"] == self.name.as_str() && a["connected"] == true)
                    .then_some(())
            },
        );
    }
}

/// The `[[instance]]` table for a test cluster.
pub fn pg_instance_toml(name: &str, pg: &PgCluster, extra: &str) -> String {
    format!(
        "[[instance]]\nname = \"{name}\"\nengine = \"postgresql\"\nhost = \"{}\"\nuser = \"postgres\"\nbin-dir = \"{}\"\n{extra}\n",
        pg.socket_dir.display(),
        crate::pg::PG_BIN
    )
}

/// The common setup: one PostgreSQL cluster, a controller, agent `db1` owning instance
/// `demo-pg`, and an admin CLI.
/// Fields drop in order: processes first, the directory (with their logs) last.
pub struct Fleet {
    pub agent: Agent,
    pub controller: Controller,
    pub pg: PgCluster,
    /// More clusters of agent db1 ([`FleetOpts::more_instances`]): (instance, cluster).
    pub more: Vec<(String, PgCluster)>,
    /// The S3 server holding the chunks, with [`FleetOpts::s3`].
    pub s3: Option<crate::s3::S3Server>,
    pub admin: Cli,
    pub pki: Pki,
    pub dir: TestDir,
}

/// Settings for [`Fleet::build`].
#[derive(Default)]
pub struct FleetOpts<'a> {
    pub label: &'a str,
    /// Extra top-level agent settings.
    pub agent_top: &'a str,
    /// Extra postgresql.conf lines.
    pub pg_conf: &'a str,
    /// Extra settings for demo-pg's instance table.
    pub instance_extra: &'a str,
    /// Appended to the controller's config.
    pub controller_extra: &'a str,
    /// Default 127.0.0.1:0.
    pub controller_listen: Option<&'a str>,
    /// Extra names for the controller's certificate (an address a sandbox dials).
    pub controller_sans: &'a [&'a str],
    /// More archiving clusters on agent db1, by instance name.
    pub more_instances: &'a [&'a str],
    /// Store chunks in a real S3-compatible server the fleet starts ([`Fleet::s3`]).
    pub s3: bool,
}

/// A drill sandbox: agent binary, `sandbox:NAME` certificate, `[sandbox]` directory.
pub struct Sandbox {
    pub daemon: Daemon,
    pub name: String,
    pub config: PathBuf,
    /// The directory drills restore into.
    pub dir: PathBuf,
}

impl Sandbox {
    /// Start sandbox NAME dialing `controller_url`, optionally inside network namespace
    /// `netns`, and wait until the controller lists it as connected.
    pub fn start(
        dir: &Path,
        pki: &Pki,
        name: &str,
        controller_url: &str,
        admin: &Cli,
        netns: Option<&str>,
    ) -> Self {
        let (cert, key) = pki.issue(&format!("sandbox:{name}"), &[]);
        let config = dir.join(format!("sandbox-{name}.toml"));
        let sandbox_dir = dir.join(format!("sandbox-{name}"));
        std::fs::write(
            &config,
            format!(
                "version = 1\ncontroller = \"{controller_url}\"\n{}\n[sandbox]\ndir = \"{}\"\nbin-dirs = [\"{}\"]\n",
                pki.tls_toml(&cert, &key),
                sandbox_dir.display(),
                crate::pg::PG_BIN
            ),
        )
        .unwrap();
        // wal-fetch runs as postgres, under the sandbox's restored server.
        for f in [&config, &cert, &key, &pki.dir] {
            crate::pg::give_to_postgres(f);
        }
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin("tidemark-agent"));
                c
            }
            None => Command::new(bin("tidemark-agent")),
        };
        cmd.arg("--config").arg(&config);
        let daemon = Daemon::spawn(
            &format!("sandbox {name}"),
            cmd,
            &dir.join(format!("sandbox-{name}.log")),
        );
        let mut sb = Self {
            daemon,
            name: name.into(),
            config,
            dir: sandbox_dir,
        };
        wait_for(
            &format!("sandbox {name} to connect"),
            Duration::from_secs(30),
            || {
                if let Some(status) = sb.daemon.has_exited() {
                    panic!("sandbox exited with {status}: {}", sb.daemon.log_text());
                }
                admin
                    .json(&["agents"])
                    .as_array()?
                    .iter()
                    .any(|a| a["name"] == name && a["role"] == "sandbox" && a["connected"] == true)
                    .then_some(())
            },
        );
        sb
    }

    /// What the sandbox directory holds besides its mark.
    pub fn leftovers(&self) -> Vec<String> {
        std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n != ".tidemark-sandbox")
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Sandbox {
    /// A test that fails mid-drill must not leave the sandbox's server running.
    fn drop(&mut self) {
        self.daemon.kill9();
        let data = self.dir.join("data");
        if data.join("postmaster.pid").exists() {
            let mut cmd = Command::new(std::path::Path::new(crate::pg::PG_BIN).join("pg_ctl"));
            cmd.arg("-D").arg(&data).args(["-m", "immediate", "stop"]);
            if let Some((uid, gid)) =
                crate::user_ids("postgres").filter(|_| crate::running_as_root())
            {
                use std::os::unix::process::CommandExt;
                cmd.uid(uid).gid(gid);
            }
            let _ = run(&mut cmd);
        }
    }
}

/// postgresql.conf settings that archive through agent `agent`'s wal-push.
pub fn archiving_conf(dir: &Path, agent: &str) -> String {
    format!(
        "wal_level = replica\narchive_mode = on\narchive_command = '{} --config {} wal-push %p'\n",
        bin("tidemark-agent").display(),
        dir.join(format!("agent-{agent}.toml")).display()
    )
}

impl Fleet {
    pub fn start(label: &str) -> Self {
        Self::start_with(label, "")
    }

    /// A fleet whose cluster archives its WAL through agent db1 (`agent_top`: extra
    /// top-level agent settings, `pg_conf`: extra postgresql.conf lines).
    pub fn start_archiving(label: &str, agent_top: &str, pg_conf: &str) -> Self {
        Self::start_archiving_with(label, agent_top, pg_conf, "")
    }

    /// As [`start_archiving`](Self::start_archiving), with extra settings for demo-pg's
    /// instance table.
    pub fn start_archiving_with(
        label: &str,
        agent_top: &str,
        pg_conf: &str,
        instance_extra: &str,
    ) -> Self {
        Self::build(&FleetOpts {
            label,
            agent_top,
            pg_conf,
            instance_extra,
            ..Default::default()
        })
    }

    /// An archiving fleet with every knob.
    pub fn build(o: &FleetOpts) -> Self {
        let (label, agent_top, pg_conf, instance_extra) =
            (o.label, o.agent_top, o.pg_conf, o.instance_extra);
        let dir = TestDir::new(label);
        let conf = format!("{}{pg_conf}", archiving_conf(dir.path(), "db1"));
        let pg = PgCluster::start_with(dir.path(), "pg", &conf);
        let pki = Pki::init(&dir.path().join("pki"));
        if !o.controller_sans.is_empty() {
            let mut args = vec!["--san", "127.0.0.1"];
            for s in o.controller_sans {
                args.extend(["--san", s]);
            }
            pki.issue("controller:localhost", &args);
        }
        let s3 = o.s3.then(|| crate::s3::S3Server::start(dir.path()));
        let mut controller_extra = o.controller_extra.to_string();
        if let Some(s) = &s3 {
            controller_extra.push('\n');
            controller_extra.push_str(&s.store_toml(dir.path()));
        }
        let controller = Controller::start_configured(
            dir.path(),
            &pki,
            o.controller_listen.unwrap_or("127.0.0.1:0"),
            &controller_extra,
        );
        let admin = Cli::new(dir.path(), &pki, "admin:ops", &controller.url);
        let mut instance = pg_instance_toml("demo-pg", &pg, instance_extra);
        let mut more = Vec::new();
        for name in o.more_instances {
            let c = PgCluster::start_with(dir.path(), name, &conf);
            instance.push_str(&pg_instance_toml(name, &c, ""));
            more.push((name.to_string(), c));
        }
        let config = Agent::write_config(
            dir.path(),
            &pki,
            "db1",
            &controller.url,
            agent_top,
            &instance,
        );
        let agent = Agent::spawn(dir.path(), "db1", &config);
        agent.wait_connected(&admin);
        Self {
            dir,
            pg,
            more,
            s3,
            pki,
            controller,
            admin,
            agent,
        }
    }

    /// `instance_extra` is appended to demo-pg's instance table (e.g. `databases = [...]`).
    pub fn start_with(label: &str, instance_extra: &str) -> Self {
        let dir = TestDir::new(label);
        let pg = PgCluster::start(dir.path());
        let pki = Pki::init(&dir.path().join("pki"));
        let controller = Controller::start(dir.path(), &pki);
        let admin = Cli::new(dir.path(), &pki, "admin:ops", &controller.url);
        let instance = pg_instance_toml("demo-pg", &pg, instance_extra);
        let agent = Agent::start(dir.path(), &pki, "db1", &controller, &admin, &instance);
        Self {
            dir,
            pg,
            more: Vec::new(),
            s3: None,
            pki,
            controller,
            admin,
            agent,
        }
    }

    /// Kill the controller (if it still runs) and start it again on the same port and data
    /// directory, so agents' configs stay right; waits for agent db1 to reconnect.
    pub fn restart_controller(&mut self) {
        self.restart_controller_alone();
        self.agent.wait_connected(&self.admin);
    }

    /// As [`restart_controller`](Self::restart_controller), without waiting for the agent.
    pub fn restart_controller_alone(&mut self) {
        self.controller.restart_in_place(self.dir.path());
    }

    /// Run a logical backup of demo-pg to the end; returns the backup's JSON detail and the
    /// CLI's exit code.
    pub fn backup(&self) -> (Value, i32) {
        let out = self.admin.run(&[
            "backup",
            "--instance",
            "demo-pg",
            "--kind",
            "logical",
            "--wait",
            "--output",
            "json",
        ]);
        (out.json(), out.code)
    }

    /// Start drill sandbox NAME on this host, dialing this fleet's controller.
    pub fn start_sandbox(&self, name: &str) -> Sandbox {
        Sandbox::start(
            self.dir.path(),
            &self.pki,
            name,
            &self.controller.url,
            &self.admin,
            None,
        )
    }

    /// Run a base backup of demo-pg to the end, asserting it succeeded; returns its JSON
    /// detail.
    pub fn base_backup(&self) -> Value {
        let out = self.admin.run(&[
            "backup",
            "--instance",
            "demo-pg",
            "--kind",
            "base",
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

    /// Where pack `name` is stored: in the S3 server's directory, or the controller's.
    pub fn pack_path(&self, name: &str) -> PathBuf {
        match &self.s3 {
            Some(s3) => s3
                .root
                .join(crate::s3::BUCKET)
                .join("fleet/packs")
                .join(&name[..2])
                .join(name),
            None => self.controller.fs_pack_path(name),
        }
    }

    pub fn restore(&self, backup: i64, args: &[&str]) -> crate::fleet::CliOutput {
        let id = backup.to_string();
        let mut a = vec!["restore", "--backup", &id, "--host", "db1"];
        a.extend(args);
        self.admin.run(&a)
    }
}

/// The check named `name` in a drill report.
pub fn drill_check<'a>(d: &'a Value, name: &str) -> &'a Value {
    d["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {d:#}"))
}

/// A raw gRPC agent-service client holding `identity`'s certificate, for calls the real
/// agent would never make.
pub fn raw_agent_client(
    pki: &Pki,
    controller_url: &str,
    identity: &str,
    rt: &tokio::runtime::Runtime,
) -> tidemark_proto::agent_service_client::AgentServiceClient<tonic::transport::Channel> {
    let (cert, key) = pki.issue(identity, &[]);
    let tls = tidemark_core::tls::TlsMaterial::load(&tidemark_core::config::TlsFiles {
        ca: pki.ca(),
        cert,
        key,
    })
    .unwrap();
    let channel = rt
        .block_on(
            tls.endpoint(controller_url, Some(Duration::from_secs(30)))
                .unwrap()
                .connect(),
        )
        .unwrap();
    tidemark_proto::agent_service_client::AgentServiceClient::new(channel)
}
