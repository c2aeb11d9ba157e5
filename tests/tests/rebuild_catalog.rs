//! A lost catalog is rebuilt from the store alone: on both engines, encrypted, in the S3
//! test server. Before the loss the answers are read (backups, each backup's detail, the
//! recovery window, the retention plan, verify); the catalog is deleted; a controller on
//! an empty catalog refuses to start on the store; `tidemark-controller rebuild-catalog`
//! rebuilds it; every answer is the same again, a point-in-time restore between two
//! committed markers is exact, and new backups continue after the old ids.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tidemark_tests::bin;
use tidemark_tests::fleet::{Cli, Controller, Fleet, FleetOpts};
use tidemark_tests::maria::MariaFleet;
use tidemark_tests::process::{run, wait_for};

/// What operators read, as JSON: compared before the loss and after the rebuild.
#[derive(Debug, PartialEq)]
struct Answers {
    backups: Value,
    details: Vec<Value>,
    window: Value,
    plan: Value,
    verify: Value,
}

fn answers(admin: &Cli, instance: &str) -> Answers {
    let backups = admin.json(&["backups", "--instance", instance]);
    let details = backups
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            let mut d = admin.json(&["backups", "show", &b["id"].to_string()]);
            // The job that ran a backup is the controller's bookkeeping, not the store's.
            d.as_object_mut().unwrap().remove("job_id");
            d
        })
        .collect();
    let window = admin
        .run(&["pitr-window", "--instance", instance, "--output", "json"])
        .json();
    let plan = admin.json(&["retention", "plan", "--instance", instance]);
    let mut verify = admin.json(&["verify"]);
    // How long reading took is the only thing allowed to differ.
    verify.as_object_mut().unwrap().remove("millis");
    Answers {
        backups,
        details,
        window,
        plan,
        verify,
    }
}

/// Lose the catalog, show that a controller on an empty one refuses the store, rebuild it
/// with `rebuild-catalog`, and start the controller again on the same port. Returns what
/// the rebuild printed.
fn lose_and_rebuild(controller: &mut Controller, dir: &Path) -> String {
    let config = controller.pin_port(dir);
    controller.daemon.kill9();
    for f in ["catalog.db", "catalog.db-wal", "catalog.db-shm"] {
        let _ = std::fs::remove_file(controller.data_dir.join(f));
    }
    let start = run(Command::new(bin("tidemark-controller"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn"));
    let err = String::from_utf8_lossy(&start.stderr).to_string();
    assert!(!start.status.success(), "{err}");
    assert!(err.contains("rebuild-catalog"), "{err}");

    let rebuilt = run(Command::new(bin("tidemark-controller"))
        .arg("rebuild-catalog")
        .arg("--config")
        .arg(&config));
    let out = String::from_utf8_lossy(&rebuilt.stdout).to_string();
    assert!(
        rebuilt.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&rebuilt.stderr)
    );
    assert!(out.contains("problems      none"), "{out}");

    // Once rebuilt, a second run is refused: the catalog is not empty.
    let again = run(Command::new(bin("tidemark-controller"))
        .arg("rebuild-catalog")
        .arg("--config")
        .arg(&config));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success(), "{err}");
    assert!(err.contains("the catalog is not empty"), "{err}");
    assert!(err.contains("--force"), "{err}");

    let data_dir = controller.data_dir.clone();
    *controller = Controller::start_with(dir, &config, data_dir);
    out
}

fn complete_id(b: &Value) -> i64 {
    assert_eq!(b["status"], "complete", "{b}");
    b["id"].as_i64().unwrap()
}

#[test]
fn a_postgresql_fleet_is_restorable_from_the_store_alone() {
    let mut f = Fleet::build(&FleetOpts {
        label: "rebuild-pg",
        s3: true,
        controller_extra: "[encryption]\nenabled = true\n[[instance]]\nname = \"demo-pg\"\n[instance.retention]\nmin-base = 2\n",
        ..Default::default()
    });
    f.pg.sql(
        "postgres",
        "CREATE TABLE markers (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())",
    );
    f.pg.sql("postgres", "CREATE DATABASE shop");
    f.pg.sql(
        "shop",
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS body FROM generate_series(1, 20000) g",
    );
    let (l1, code) = f.backup();
    assert_eq!(code, 0, "{l1}");
    let _b1 = complete_id(&f.base_backup());
    let _b2 = complete_id(&f.base_backup());
    // Retention expires the dump and archived WAL only the first base backup needed: the
    // store records the expiry, so a rebuild must not bring them back.
    let applied = f
        .admin
        .json(&["retention", "apply", "--instance", "demo-pg"]);
    assert!(
        !applied["deleted"].as_array().unwrap().is_empty(),
        "{applied:#}"
    );
    // A rotation: new chunks are sealed with data key 2.
    assert_eq!(f.admin.json(&["keys", "rotate"])["rotated_to"], 2);
    let b3 = complete_id(&f.base_backup());
    let (l2, code) = f.backup();
    assert_eq!(code, 0, "{l2}");
    let l2 = complete_id(&l2);
    let shop = f.pg.fingerprint("shop");

    // Two markers a second apart, archived.
    f.pg.sql("postgres", "INSERT INTO markers (id) VALUES (1)");
    std::thread::sleep(Duration::from_millis(1200));
    f.pg.sql("postgres", "INSERT INTO markers (id) VALUES (2)");
    let at = |id: i64| -> i64 {
        f.pg.sql(
            "postgres",
            &format!(
                "SELECT (extract(epoch FROM at) * 1000000)::bigint FROM markers WHERE id = {id}"
            ),
        )
        .parse()
        .unwrap()
    };
    let target_micros = (at(1) + at(2)) / 2;
    let seg = f.pg.sql(
        "postgres",
        "SELECT pg_walfile_name(pg_current_wal_insert_lsn())",
    );
    f.pg.sql("postgres", "SELECT pg_switch_wal()");
    wait_for(
        "the markers' WAL to be archived",
        Duration::from_secs(60),
        || {
            let w = f
                .admin
                .run(&["pitr-window", "--instance", "demo-pg", "--output", "json"])
                .json();
            (w["newest_wal"].as_str()? >= seg.as_str()).then_some(())
        },
    );

    let before = answers(&f.admin, "demo-pg");
    assert_eq!(
        before.verify["bad"].as_array().unwrap().len(),
        0,
        "{:#}",
        before.verify
    );
    let printed = lose_and_rebuild(&mut f.controller, f.dir.path());
    assert!(printed.contains("KEK 2"), "{printed}");
    f.agent.wait_connected(&f.admin);
    let after = answers(&f.admin, "demo-pg");
    assert_eq!(
        before, after,
        "the rebuilt catalog answers as the lost one did"
    );

    // A point-in-time restore between the markers: exactly marker 1.
    let data = f.dir.path().join("restored");
    let target = tidemark_core::timefmt::pg_timestamp(target_micros);
    let out = f.admin.run(&[
        "restore",
        "--instance",
        "demo-pg",
        "--host",
        "db1",
        "--pgdata",
        data.to_str().unwrap(),
        "--port",
        "25491",
        "--start",
        "--to",
        &target,
        "--action",
        "promote",
        "--output",
        "json",
    ]);
    let restored = tidemark_tests::pg::Restored::new(&data, 25491, &f.pg.socket_dir);
    assert_eq!(
        out.code,
        0,
        "{}{}\n{}",
        out.stdout,
        out.stderr,
        f.agent.daemon.log_text()
    );
    assert_eq!(
        restored.sql("SELECT string_agg(id::text, ',') FROM markers"),
        "1"
    );
    drop(restored);
    // The newest dump restores to the database it was taken from.
    let out = f.restore(l2, &["--database", "shop", "--into-database", "shop_back"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(f.pg.fingerprint("shop_back"), shop);

    // New backups continue after the ids the store knows.
    let next = complete_id(&f.base_backup());
    assert!(next > b3.max(l2), "{next}");
    f.dir.keep_if_asked();
}

#[test]
fn a_mariadb_fleet_is_restorable_from_the_store_alone() {
    let mut f = MariaFleet::build(
        "rebuild-my",
        "archive-timeout = \"2s\"",
        "[encryption]\nenabled = true\n[[instance]]\nname = \"demo-mariadb\"\n[instance.retention]\nmin-base = 1\n",
        true,
    );
    f.db.sql(
        "CREATE DATABASE app;
         CREATE TABLE app.load (id BIGINT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(40)) ENGINE=InnoDB;
         CREATE TABLE app.markers (name VARCHAR(10) PRIMARY KEY, at TIMESTAMP(6)) ENGINE=InnoDB;
         INSERT INTO app.load (v) SELECT MD5(seq) FROM app.seq_1_to_5000;",
    );
    let _dump = complete_id(&f.backup("logical"));
    let base = complete_id(&f.backup("base"));

    // Marker A, two seconds, marker B (binlog times are whole seconds), both archived.
    f.db.sql("INSERT INTO app.markers VALUES ('A', NOW(6))");
    let a_second: i64 =
        f.db.sql("SELECT FLOOR(UNIX_TIMESTAMP(at)) FROM app.markers WHERE name = 'A'")
            .parse()
            .unwrap();
    wait_for("two seconds past marker A", Duration::from_secs(5), || {
        let now: i64 = f.db.sql("SELECT UNIX_TIMESTAMP()").parse().ok()?;
        (now >= a_second + 2).then_some(())
    });
    f.db.sql("INSERT INTO app.markers VALUES ('B', NOW(6))");
    let written_to = f.db.binlogs().pop().unwrap();
    f.wait_archived(&written_to);

    let before = answers(&f.admin, "demo-mariadb");
    assert_eq!(
        before.verify["bad"].as_array().unwrap().len(),
        0,
        "{:#}",
        before.verify
    );
    assert!(
        before.window["wal_files"].as_u64().unwrap() >= 2,
        "{:#}",
        before.window
    );
    lose_and_rebuild(&mut f.controller, f.dir.path());
    f.agent.wait_connected(&f.admin);
    let after = answers(&f.admin, "demo-mariadb");
    assert_eq!(
        before, after,
        "the rebuilt catalog answers as the lost one did"
    );

    let datadir = f.dir.path().join("restored");
    let out = f.admin.run(&[
        "restore",
        "--instance",
        "demo-mariadb",
        "--host",
        "db1",
        "--datadir",
        datadir.to_str().unwrap(),
        "--to",
        &tidemark_core::timefmt::utc(a_second + 1),
        "--start",
    ]);
    let restored = tidemark_tests::maria::Restored::new(&datadir);
    assert_eq!(
        out.code,
        0,
        "{}{}\n{}",
        out.stdout,
        out.stderr,
        f.agent.daemon.log_text()
    );
    assert!(
        out.stdout.contains(&format!("backup {base}")),
        "{}",
        out.stdout
    );
    assert_eq!(
        restored.sql("SELECT GROUP_CONCAT(name) FROM app.markers"),
        "A"
    );
    assert_eq!(restored.sql("SELECT COUNT(*) FROM app.load"), "5000");
    drop(restored);
    f.dir.keep_if_asked();
}
