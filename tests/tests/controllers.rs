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

/// Start a controller in `dir/name` on the shared catalog and store.
fn controller(dir: &Path, pki: &Pki, name: &str, shared: &str) -> Controller {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap();
    Controller::start_configured(&home, pki, "127.0.0.1:0", shared)
}

#[test]
fn two_controllers_share_the_catalog_and_the_survivor_takes_over_the_schedule() {
    let dir = TestDir::new("two-controllers");
    let pki = Pki::init(&dir.path().join("pki"));
    let catalog = PgCluster::start_with(dir.path(), "catalog", "");
    let pg = PgCluster::start(dir.path());
    // Enough rows that a dump takes a moment: the kill lands while a run is open.
    pg.sql(
        "postgres",
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 300000) g",
    );
    let s3 = S3Server::start(dir.path());
    let shared = format!(
        "[catalog]\nurl = \"{}\"\n{}[schedule]\ntick = \"1s\"\n[[instance]]\nname = \"demo-pg\"\nlogical = \"*/5 * * * * *\"\n",
        catalog.url("postgres"),
        s3.store_toml(dir.path())
    );

    // A starts first and takes the lead; B then serves without leading.
    let mut a = controller(dir.path(), &pki, "a", &shared);
    wait_for("A to lead", Duration::from_secs(20), || {
        a.daemon.log_text().contains(LEADS).then_some(())
    });
    let mut b = controller(dir.path(), &pki, "b", &shared);
    let admin_a = Cli::new(dir.path(), &pki, "admin:ops", &a.url);
    let admin_b = Cli::new(&dir.path().join("b"), &pki, "admin:ops", &b.url);
    // The agent dials B only.
    let agent = Agent::start(
        dir.path(),
        &pki,
        "db1",
        &b,
        &admin_b,
        &pg_instance_toml("demo-pg", &pg, ""),
    );
    // A sees it connected too, through the catalog.
    let agents = admin_a.json(&["agents"]);
    assert_eq!(agents[0]["connected"], true, "{agents}");

    // An operator on A starts a backup of an agent connected to B: A records the job and
    // B delivers it.
    let out = admin_a.run(&["backup", "--instance", "demo-pg", "--wait"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        b.daemon
            .log_text()
            .contains("job delivered for another controller"),
        "B's log: {}",
        b.daemon.log_text()
    );

    // Kill A while a run it started is open.
    let open = wait_for(
        "a scheduled run in progress",
        Duration::from_secs(60),
        || {
            runs(&admin_b)
                .into_iter()
                .find(|r| r["state"] == "running" && r["attempt"] == 1)
        },
    );
    a.daemon.kill9();
    let open_id = open["id"].as_i64().unwrap();
    assert!(!b.daemon.log_text().contains(LEADS), "B led while A lived");

    // B takes the lead and finishes the run A started, without starting it again.
    wait_for("B to lead", Duration::from_secs(20), || {
        b.daemon.log_text().contains(LEADS).then_some(())
    });
    let done = wait_for(
        "the interrupted run to finish",
        Duration::from_secs(60),
        || {
            runs(&admin_b)
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
            runs(&admin_b)
                .iter()
                .any(|r| r["id"].as_i64().unwrap() > open_id && r["state"] == "succeeded")
                .then_some(())
        },
    );
    b.daemon.kill9();

    // No slot ran twice, no run started a second job, and each job made one backup.
    let q = |sql: &str| catalog.sql("postgres", sql);
    assert_eq!(
        q(
            "SELECT count(*) FROM (SELECT slot FROM scheduled_runs GROUP BY instance, kind, slot HAVING count(*) > 1) d"
        ),
        "0"
    );
    assert_eq!(
        q("SELECT count(*) FROM scheduled_runs WHERE attempt <> 1"),
        "0"
    );
    let runs_with_jobs = q("SELECT count(DISTINCT job_id) FROM scheduled_runs");
    let scheduled_jobs =
        q("SELECT count(*) FROM jobs WHERE id IN (SELECT job_id FROM scheduled_runs)");
    assert_eq!(runs_with_jobs, scheduled_jobs);
    assert_eq!(
        q("SELECT count(*) FROM jobs WHERE kind = 'backup'"),
        (scheduled_jobs.parse::<i64>().unwrap() + 1).to_string(),
        "the scheduled jobs and the operator's one"
    );
    assert_eq!(
        q(
            "SELECT count(*) FROM (SELECT job_id FROM backups GROUP BY job_id HAVING count(*) > 1) d"
        ),
        "0"
    );
    assert_eq!(
        q("SELECT count(*) FROM backups WHERE status <> 'complete'"),
        "0",
        "every backup completed"
    );
    drop((agent, a, b, s3, pg, catalog));
    dir.keep_if_asked();
}
