//! Two controllers sharing one PostgreSQL catalog and one S3 store: agents and operators
//! may use either, one schedules at a time, and when the one scheduling dies during a
//! scheduled run the other takes over and no job runs twice.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tidemark_tests::TestDir;
use tidemark_tests::fleet::{Agent, Cli, Controller, Pki, pg_instance_toml};
use tidemark_tests::pg::PgCluster;
use tidemark_tests::process::wait_for;
use tidemark_tests::s3::S3Server;

const LEADS: &str = "this controller now leads";

fn runs(cli: &Cli) -> Vec<Value> {
    cli.json(&["schedule"])["runs"].as_array().unwrap().clone()
}

/// Two controllers, A leading, on one catalog and one S3 store, with a PostgreSQL instance
/// to back up every 5 s. A failed attempt would wait an hour for its retry: one the dead
/// controller interrupted must be retried at once. Fields drop in order: processes first, the directory last.
struct Pair {
    a: Controller,
    b: Controller,
    admin_a: Cli,
    admin_b: Cli,
    s3: S3Server,
    pg: PgCluster,
    catalog: PgCluster,
    pki: Pki,
    dir: TestDir,
}

impl Pair {
    /// `schedule` adds settings to the controllers' `[schedule]` table.
    fn start(label: &str, schedule: &str) -> Self {
        let dir = TestDir::new(label);
        let pki = Pki::init(&dir.path().join("pki"));
        let catalog = PgCluster::start_with(dir.path(), "catalog", "");
        let pg = PgCluster::start(dir.path());
        // Enough rows that a dump takes a moment: a kill lands while a run is open.
        pg.sql(
            "postgres",
            "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 300000) g",
        );
        let s3 = S3Server::start(dir.path());
        let shared = format!(
            "[catalog]\nurl = \"{}\"\n{}[schedule]\ntick = \"1s\"\nretry-backoff = \"1h\"\n{schedule}[[instance]]\nname = \"demo-pg\"\nlogical = \"*/5 * * * * *\"\n",
            catalog.url("postgres"),
            s3.store_toml(dir.path())
        );
        // A starts first and takes the lead; B then serves without leading.
        let a = controller(dir.path(), &pki, "a", &shared);
        wait_for("A to lead", Duration::from_secs(20), || {
            a.daemon.log_text().contains(LEADS).then_some(())
        });
        let b = controller(dir.path(), &pki, "b", &shared);
        let admin_a = Cli::new(dir.path(), &pki, "admin:ops", &a.url);
        let admin_b = Cli::new(&dir.path().join("b"), &pki, "admin:ops", &b.url);
        Self {
            a,
            b,
            admin_a,
            admin_b,
            s3,
            pg,
            catalog,
            pki,
            dir,
        }
    }

    /// The agent db1 owning demo-pg, dialing `controllers` in order.
    fn agent(&self, controllers: &[&Controller]) -> Agent {
        let list: Vec<String> = controllers
            .iter()
            .map(|c| format!("\"{}\"", c.url))
            .collect();
        let config = Agent::write_config(
            self.dir.path(),
            &self.pki,
            "db1",
            "",
            "",
            &pg_instance_toml("demo-pg", &self.pg, ""),
        );
        // The harness writes one controller; this agent gets the list.
        let text = std::fs::read_to_string(&config).unwrap().replace(
            "controller = \"\"",
            &format!("controller = [{}]", list.join(", ")),
        );
        std::fs::write(&config, text).unwrap();
        let agent = Agent::spawn(self.dir.path(), "db1", &config);
        agent.wait_connected(&self.admin_b);
        agent
    }

    fn sql(&self, sql: &str) -> String {
        self.catalog.sql("postgres", sql)
    }

    /// No slot ran twice, no job made two backups, and jobs did not pile up.
    fn assert_nothing_ran_twice(&self) {
        assert_eq!(
            self.sql("SELECT count(*) FROM (SELECT slot FROM scheduled_runs GROUP BY instance, kind, slot HAVING count(*) > 1) d"),
            "0"
        );
        assert_eq!(
            self.sql("SELECT count(*) FROM (SELECT job_id FROM backups GROUP BY job_id HAVING count(*) > 1) d"),
            "0"
        );
        // At most the newest run's job, cut off by the end of the test, is still open.
        let open: i64 = self
            .sql("SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')")
            .parse()
            .unwrap();
        assert!(open <= 1, "{open} jobs open at once");
    }
}

/// Start a controller in `dir/name` on the shared catalog and store.
fn controller(dir: &Path, pki: &Pki, name: &str, shared: &str) -> Controller {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap();
    Controller::start_configured(&home, pki, "127.0.0.1:0", shared)
}

#[test]
fn two_controllers_share_the_catalog_and_the_survivor_takes_over_the_schedule() {
    let mut p = Pair::start("two-controllers", "");
    // The agent dials B only.
    let agent = p.agent(&[&p.b]);
    let leading = |c: &Controller| {
        let text = c.metrics();
        let line = text
            .lines()
            .find(|l| l.starts_with("tidemark_controller_leading{"))
            .expect("the leading series");
        line.rsplit(' ').next().unwrap().to_string()
    };
    assert_eq!((leading(&p.a), leading(&p.b)), ("1".into(), "0".into()));
    // A sees it connected too, through the catalog.
    let agents = p.admin_a.json(&["agents"]);
    assert_eq!(agents[0]["connected"], true, "{agents}");

    // An operator on A starts a backup of an agent connected to B: A records the job and
    // B delivers it.
    let out = p
        .admin_a
        .run(&["backup", "--instance", "demo-pg", "--wait"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        p.b.daemon
            .log_text()
            .contains("job delivered for another controller"),
        "B's log: {}",
        p.b.daemon.log_text()
    );

    // A certificate revoked through B is refused by A too, within its heartbeat.
    let viewer = Cli::new(p.dir.path(), &p.pki, "viewer:eve", &p.a.url);
    assert_eq!(viewer.run(&["agents"]).code, 0);
    let pki_dir = p.pki.dir.to_string_lossy().into_owned();
    let out = p
        .admin_b
        .run(&["pki", "revoke", "--dir", &pki_dir, "--name", "viewer:eve"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let revoked = Cli::with_files(
        p.dir.path(),
        &p.pki.ca(),
        &p.pki.dir.join("viewer-eve.crt.revoked"),
        &p.pki.dir.join("viewer-eve.key.revoked"),
        &p.a.url,
    );
    wait_for(
        "A to refuse the revoked certificate",
        Duration::from_secs(15),
        || {
            revoked
                .run(&["agents"])
                .stderr
                .contains("certificate was revoked")
                .then_some(())
        },
    );

    // Kill A while a run it started is open.
    let open = wait_for(
        "a scheduled run in progress",
        Duration::from_secs(60),
        || {
            runs(&p.admin_b)
                .into_iter()
                .find(|r| r["state"] == "running" && r["attempt"] == 1)
        },
    );
    p.a.daemon.kill9();
    let open_id = open["id"].as_i64().unwrap();
    assert!(
        !p.b.daemon.log_text().contains(LEADS),
        "B led while A lived"
    );

    // B takes the lead and finishes the run A started, without starting it again.
    wait_for("B to lead", Duration::from_secs(20), || {
        p.b.daemon.log_text().contains(LEADS).then_some(())
    });
    assert_eq!(leading(&p.b), "1");
    let done = wait_for(
        "the interrupted run to finish",
        Duration::from_secs(60),
        || {
            runs(&p.admin_b)
                .into_iter()
                .find(|r| r["id"] == open_id && r["state"] != "running")
        },
    );
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempt"], 1, "not attempted again: {done}");
    // And B fires the schedule's next slots itself.
    wait_for(
        "a scheduled run started after the takeover",
        Duration::from_secs(60),
        || {
            runs(&p.admin_b)
                .iter()
                .any(|r| r["id"].as_i64().unwrap() > open_id && r["state"] == "succeeded")
                .then_some(())
        },
    );
    p.b.daemon.kill9();

    p.assert_nothing_ran_twice();
    assert_eq!(
        p.sql("SELECT count(*) FROM scheduled_runs WHERE attempt <> 1"),
        "0"
    );
    assert_eq!(
        p.sql("SELECT count(*) FROM jobs WHERE kind = 'backup'"),
        (p.sql("SELECT count(DISTINCT job_id) FROM scheduled_runs")
            .parse::<i64>()
            .unwrap()
            + 1)
        .to_string(),
        "one job per scheduled run, and the operator's one"
    );
    assert_eq!(
        p.sql("SELECT count(*) FROM backups WHERE status <> 'complete'"),
        "0",
        "every backup completed"
    );
    // The chunks are in the one bucket both controllers use.
    assert!(!p.s3.object_files().is_empty());
    drop(agent);
    p.dir.keep_if_asked();
}

/// The agent is connected to the leader, which dies during a scheduled backup: the agent
/// moves to the other controller, the survivor fails the dead one's job and backup once it
/// has been silent for 30 s, and retries the run through the agent's new connection at
/// once (not after the hour of backoff a failed attempt waits).
#[test]
fn an_agent_moves_to_the_surviving_controller_and_the_interrupted_run_is_retried_once() {
    let mut p = Pair::start("controller-failover", "");
    let agent = p.agent(&[&p.a, &p.b]);
    let open = wait_for(
        "a scheduled backup running through A",
        Duration::from_secs(60),
        || {
            let r = runs(&p.admin_b)
                .into_iter()
                .find(|r| r["state"] == "running")?;
            let job = r["job_id"].as_i64()?;
            // The agent has begun its backup (through A, which it is connected to).
            (p.sql(&format!(
                "SELECT count(*) FROM backups WHERE job_id = {job}"
            )) == "1")
                .then_some(r)
        },
    );
    p.a.daemon.kill9();
    let open_id = open["id"].as_i64().unwrap();
    let first_job = open["job_id"].as_i64().unwrap();

    wait_for(
        "the agent to register with B",
        Duration::from_secs(30),
        || {
            agent
                .daemon
                .log_text()
                .contains(&format!("controller={}", p.b.url))
                .then_some(())
        },
    );
    let done = wait_for(
        "the interrupted run to be retried and finish",
        Duration::from_secs(90),
        || {
            runs(&p.admin_b).into_iter().find(|r| {
                r["id"] == open_id && (r["state"] == "succeeded" || r["state"] == "failed")
            })
        },
    );
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempt"], 2, "retried once: {done}");
    assert_ne!(done["job_id"].as_i64().unwrap(), first_job);
    p.b.daemon.kill9();

    // The first attempt's job and backup failed, naming the controller that stopped.
    let why = p.sql(&format!("SELECT message FROM jobs WHERE id = {first_job}"));
    assert!(why.contains("stopped while this was running"), "{why}");
    assert_eq!(
        p.sql(&format!(
            "SELECT status FROM backups WHERE job_id = {first_job}"
        )),
        "failed"
    );
    let second = done["job_id"].as_i64().unwrap();
    assert_eq!(
        p.sql(&format!(
            "SELECT status FROM backups WHERE job_id = {second}"
        )),
        "complete"
    );
    p.assert_nothing_ran_twice();
    drop(agent);
    p.dir.keep_if_asked();
}

/// A scheduled backup hangs and times out on the leader, A, while its agent is connected to
/// B: A cannot send the stop down a stream it does not hold, so B sends it when the agent
/// next reports progress on the job the catalog has ended.
#[test]
fn a_timed_out_job_is_stopped_on_an_agent_connected_to_the_other_controller() {
    let p = Pair::start("controller-cancel", "backup-timeout = \"4s\"\n");
    let agent = p.agent(&[&p.b]);
    // pg_dump waits for this lock for as long as it is held.
    let mut holder = p.pg.hold_lock("postgres", "t");
    wait_for(
        "a pg_dump waiting for the lock",
        Duration::from_secs(30),
        || (p.pg.clients("pg_dump") > 0).then_some(()),
    );
    let run = wait_for("the run to time out", Duration::from_secs(30), || {
        runs(&p.admin_b).into_iter().find(|r| {
            r["state"] == "waiting"
                && r["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("timed out after 4s"))
        })
    });
    assert_eq!(run["attempt"], 1, "{run}");
    // While the lock is still held: a pg_dump left behind would wait for it.
    wait_for("pg_dump to be stopped", Duration::from_secs(20), || {
        (p.pg.clients("pg_dump") == 0).then_some(())
    });
    assert!(
        p.a.daemon
            .log_text()
            .contains("could not ask the agent to stop the job"),
        "A had no stream to the agent: {}",
        p.a.daemon.log_text()
    );
    assert!(
        agent
            .daemon
            .log_text()
            .contains("stopping the job at the controller's request"),
        "{}",
        agent.daemon.log_text()
    );
    let _ = holder.kill();
    let _ = holder.wait();
    drop(agent);
    p.dir.keep_if_asked();
}
