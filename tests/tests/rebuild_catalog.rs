//! A lost catalog is rebuilt from the store alone, by the README's own commands (section
//! "Disaster recovery of the controller"), on both engines, encrypted, in the S3 test
//! server: a SQLite catalog from its newest snapshot plus the records written after it, a
//! PostgreSQL catalog from the records alone. Before the loss the answers are read
//! (backups, each backup's detail, the recovery window, the retention plan, verify); after
//! the rebuild every answer is the same, a point-in-time restore between two committed
//! markers is exact (and on PostgreSQL a drill to it passes), and new backups continue
//! after the old ids.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tidemark_tests::bin;
use tidemark_tests::fleet::{Cli, Controller, Fleet, FleetOpts};
use tidemark_tests::maria::MariaFleet;
use tidemark_tests::pg::PgCluster;
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

/// Each backup's detail without its job (the controller's bookkeeping: a rebuild from the
/// records alone does not have it).
fn details(admin: &Cli, backups: &Value) -> Vec<Value> {
    backups
        .as_array()
        .unwrap()
        .iter()
        .map(|b| admin.json(&["backups", "show", &b["id"].to_string()]))
        .collect()
}

fn without_job(mut d: Value) -> Value {
    d.as_object_mut().unwrap().remove("job_id");
    d
}

fn answers(admin: &Cli, instance: &str) -> Answers {
    let backups = admin.json(&["backups", "--instance", instance]);
    let details = details(admin, &backups)
        .into_iter()
        .map(without_job)
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

/// The shell blocks of the README's section "Disaster recovery of the controller", in
/// order: the SQLite rebuild, the checks, the PostgreSQL rebuild.
fn readme_blocks() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let from = readme
        .find("### Disaster recovery of the controller")
        .expect("the README has the section");
    let section = &readme[from..];
    let section = &section[..section[4..].find("\n### ").map_or(section.len(), |e| e + 4)];
    let blocks: Vec<String> = section
        .split("```sh\n")
        .skip(1)
        .map(|b| b[..b.find("```").unwrap()].to_string())
        .collect();
    assert_eq!(blocks.len(), 3, "{section}");
    blocks
}

/// Run a README block word for word in bash, with the README's paths and instance name
/// replaced by the test's own, the binaries on PATH and the admin's CLI config.
fn run_block(block: &str, subs: &[(&str, String)], admin: &Cli, env: &[(&str, String)]) -> String {
    let mut script = block.to_string();
    for (from, to) in subs {
        script = script.replace(from, to);
    }
    let bin_dir = bin("tidemark").parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let mut cmd = Command::new("bash");
    cmd.args(["-euo", "pipefail", "-c", &script])
        .env("PATH", path)
        .env("TIDEMARK_CONFIG", &admin.config);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run(&mut cmd);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{script}\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A second rebuild is refused: the catalog is not empty now.
fn rebuilding_again_is_refused(config: &Path) {
    let again = run(Command::new(bin("tidemark-controller"))
        .arg("rebuild-catalog")
        .arg("--config")
        .arg(config));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success(), "{err}");
    assert!(err.contains("the catalog is not empty"), "{err}");
    assert!(err.contains("--force"), "{err}");
}

/// Replace `from` with `to` in the controller's config.
fn edit_config(config: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    assert!(text.contains(from), "{text}");
    std::fs::write(config, text.replace(from, to)).unwrap();
}

/// The README's SQLite procedure, word for word, after the loss: the controller is stopped
/// (killed), then the section's first block runs. Returns what the rebuild printed.
fn follow_the_sqlite_procedure(f: &mut Fleet, config: &Path) -> String {
    f.controller.daemon.kill9();
    run_block(&readme_blocks()[0], &sqlite_subs(f, config), &f.admin, &[])
}

/// The README's paths and instance name, as this fleet has them.
fn sqlite_subs(f: &Fleet, config: &Path) -> [(&'static str, String); 3] {
    [
        (
            "/etc/tidemark/controller.toml",
            config.display().to_string(),
        ),
        (
            "/var/lib/tidemark",
            f.controller.data_dir.display().to_string(),
        ),
        ("orders-pg", "demo-pg".to_string()),
    ]
}

/// Start the controller again on the rebuilt catalog, wait for the agent, and run the
/// README's checks word for word.
fn serve_again(f: &mut Fleet, config: &Path) {
    let data_dir = f.controller.data_dir.clone();
    f.controller = Controller::start_with(f.dir.path(), config, data_dir);
    f.agent.wait_connected(&f.admin);
    run_block(&readme_blocks()[1], &sqlite_subs(f, config), &f.admin, &[]);
}

fn complete_id(b: &Value) -> i64 {
    assert_eq!(b["status"], "complete", "{b}");
    b["id"].as_i64().unwrap()
}

/// SQLite catalog: phase one, a snapshot, phase two (after it), lose the catalog, follow
/// the README.
#[test]
fn a_postgresql_fleet_with_a_sqlite_catalog_comes_back_from_a_snapshot_and_the_records_after_it() {
    let mut f = Fleet::build(&FleetOpts {
        label: "rebuild-pg",
        s3: true,
        controller_extra: "[catalog]\nsnapshot-every = \"off\"\n[encryption]\nenabled = true\n[[instance]]\nname = \"demo-pg\"\n[instance.retention]\nmin-base = 2\n",
        ..Default::default()
    });
    let config = f.controller.pin_port(f.dir.path());
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
    complete_id(&f.base_backup());
    let b2 = complete_id(&f.base_backup());
    // Retention expires the dump and the archived WAL only the first base backup needed.
    let applied = f
        .admin
        .json(&["retention", "apply", "--instance", "demo-pg"]);
    assert!(
        !applied["deleted"].as_array().unwrap().is_empty(),
        "{applied:#}"
    );

    // A snapshot of the catalog as it is now: the first start with snapshots on takes one.
    edit_config(
        &config,
        "snapshot-every = \"off\"",
        "snapshot-every = \"1h\"",
    );
    f.restart_controller();
    let s3 = f.s3.as_ref().unwrap();
    wait_for("a catalog snapshot", Duration::from_secs(30), || {
        s3.record_files()
            .iter()
            .any(|p| p.to_string_lossy().contains("/meta/snapshots/"))
            .then_some(())
    });
    edit_config(
        &config,
        "snapshot-every = \"1h\"",
        "snapshot-every = \"off\"",
    );
    f.restart_controller();

    // After the snapshot: a rotation (new chunks sealed with data key 2), a base backup, a
    // dump, and two markers a second apart, archived. Only the records know these.
    assert_eq!(f.admin.json(&["keys", "rotate"])["rotated_to"], 2);
    let b3 = complete_id(&f.base_backup());
    let (l2, code) = f.backup();
    assert_eq!(code, 0, "{l2}");
    let l2 = complete_id(&l2);
    let shop = f.pg.fingerprint("shop");
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
    // The window ends at the newest segment's time, in whole seconds: switch it a second
    // after marker 2, so that the target is inside.
    std::thread::sleep(Duration::from_millis(1100));
    let seg = f.pg.archive_current_segment();
    wait_for(
        "the markers' WAL in the archive",
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
    let job_of =
        |f: &Fleet, id: i64| f.admin.json(&["backups", "show", &id.to_string()])["job_id"].clone();
    assert!(job_of(&f, b2).as_i64().unwrap() > 0);

    // The loss, and the README's procedure.
    let printed = follow_the_sqlite_procedure(&mut f, &config);
    assert!(printed.contains("snapshot      snapshots/"), "{printed}");
    assert!(printed.contains("KEK 2"), "{printed}");
    assert!(printed.contains("problems      none"), "{printed}");
    assert!(f.controller.data_dir.join("catalog.db.lost").exists());
    rebuilding_again_is_refused(&config);
    serve_again(&mut f, &config);

    let after = answers(&f.admin, "demo-pg");
    assert_eq!(
        before, after,
        "the rebuilt catalog answers as the lost one did"
    );
    // The snapshot brought the controller's history: the job of a backup taken before it.
    // A backup after it came from its record alone.
    assert!(job_of(&f, b2).as_i64().unwrap() > 0, "{}", job_of(&f, b2));
    assert_eq!(job_of(&f, b3), 0, "{}", job_of(&f, b3));

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
    // A drill to the same second passes on a sandbox: its base backup, WAL and keys all
    // came from the store.
    let _sb = f.start_sandbox("sb1");
    let (drill, code) = f.admin.drill_run("demo-pg", &["--target", &target]);
    assert_eq!(code, 0, "{drill:#}");
    assert_eq!(drill["state"], "passed", "{drill:#}");
    // The newest dump restores the database it was taken from.
    let out = f.restore(l2, &["--database", "shop", "--into-database", "shop_back"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(f.pg.fingerprint("shop_back"), shop);

    // New backups continue after the ids the store knows.
    let next = complete_id(&f.base_backup());
    assert!(next > b3.max(l2), "{next}");
    f.dir.keep_if_asked();
}

/// PostgreSQL catalog (no snapshots): lose its database, show a controller on a new empty
/// one refuses the store, follow the README.
#[test]
fn a_mariadb_fleet_with_a_postgresql_catalog_comes_back_from_the_records_alone() {
    let dir_for_catalog = tidemark_tests::TestDir::new("rebuild-my-catalog");
    let catalog = PgCluster::start_with(dir_for_catalog.path(), "catalog", "");
    catalog.sql("postgres", "CREATE ROLE tidemark LOGIN");
    catalog.sql("postgres", "CREATE DATABASE tidemark");
    let mut f = MariaFleet::build(
        "rebuild-my",
        "archive-timeout = \"2s\"",
        &format!(
            "[catalog]\nurl = \"{}\"\n[encryption]\nenabled = true\n[[instance]]\nname = \"demo-mariadb\"\n[instance.retention]\nmin-base = 1\n",
            catalog.url("tidemark")
        ),
        true,
    );
    let config = f.controller.pin_port(f.dir.path());
    f.db.sql(
        "CREATE DATABASE app;
         CREATE TABLE app.load (id BIGINT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(40)) ENGINE=InnoDB;
         CREATE TABLE app.markers (name VARCHAR(10) PRIMARY KEY, at TIMESTAMP(6)) ENGINE=InnoDB;
         INSERT INTO app.load (v) SELECT MD5(seq) FROM app.seq_1_to_5000;",
    );
    let dump = complete_id(&f.backup("logical"));
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

    // A revoked certificate, put back in place: refused now, and by the rebuilt catalog.
    let viewer = Cli::new(f.dir.path(), &f.pki, "viewer:vera", &f.controller.url);
    let cert = f.pki.dir.join("viewer-vera.crt");
    let kept = f.dir.path().join("viewer-vera.crt.kept");
    std::fs::copy(&cert, &kept).unwrap();
    let refused = |v: &Cli| v.run(&["backups"]).code != 0;
    assert!(!refused(&viewer), "a viewer may list backups");
    let dir = f.pki.dir.to_string_lossy().into_owned();
    let out = f
        .admin
        .run(&["pki", "revoke", "--dir", &dir, "--name", "viewer:vera"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    std::fs::copy(&kept, &cert).unwrap();
    assert!(refused(&viewer));

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

    // The catalog's database is lost. A controller on a new, empty one refuses the store.
    f.controller.daemon.kill9();
    catalog.sql("postgres", "DROP DATABASE tidemark");
    catalog.sql("postgres", "CREATE DATABASE tidemark");
    let start = run(Command::new(bin("tidemark-controller"))
        .arg("--config")
        .arg(&config));
    let err = String::from_utf8_lossy(&start.stderr).to_string();
    assert!(!start.status.success(), "{err}");
    assert!(err.contains("rebuild-catalog"), "{err}");

    // The README's procedure: a new database, [catalog] url pointed at it, one rebuild.
    let blocks = readme_blocks();
    let subs = [
        (
            "/etc/tidemark/controller.toml",
            config.display().to_string(),
        ),
        ("orders-pg", "demo-mariadb".to_string()),
    ];
    let psql_env = [
        ("PGHOST", catalog.socket_dir.display().to_string()),
        ("PGUSER", "postgres".to_string()),
    ];
    let (old_url, new_url) = (catalog.url("tidemark"), catalog.url("tidemark_rebuilt"));
    let printed = {
        // The block's first line makes the database; the config then points at it.
        let (create, rebuild) = blocks[2].split_once('\n').unwrap();
        run_block(create, &subs, &f.admin, &psql_env);
        edit_config(&config, &old_url, &new_url);
        run_block(rebuild, &subs, &f.admin, &psql_env)
    };
    assert!(printed.contains("problems      none"), "{printed}");
    assert!(!printed.contains("snapshot "), "{printed}");
    rebuilding_again_is_refused(&config);
    let data_dir = f.controller.data_dir.clone();
    f.controller = Controller::start_with(f.dir.path(), &config, data_dir);
    f.agent.wait_connected(&f.admin);
    run_block(&blocks[1], &subs, &f.admin, &[]);
    let after = answers(&f.admin, "demo-mariadb");
    assert_eq!(
        before, after,
        "the rebuilt catalog answers as the lost one did"
    );
    assert!(printed.contains("revocations   1"), "{printed}");
    assert!(
        refused(&viewer),
        "a revoked certificate works again after the rebuild"
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
    // New backups continue after the ids the store knows (PostgreSQL's identity column
    // was moved past them).
    let next = complete_id(&f.backup("logical"));
    assert!(next > base.max(dump), "{next}");
    f.dir.keep_if_asked();
}

/// SQLite catalog, encrypted filesystem store, no snapshot ever taken: the records alone.
#[test]
fn a_sqlite_catalog_without_snapshots_comes_back_from_the_records_alone() {
    let mut f = Fleet::build(&FleetOpts {
        label: "rebuild-nosnap",
        controller_extra: "[catalog]\nsnapshot-every = \"off\"\n[encryption]\nenabled = true\n",
        ..Default::default()
    });
    let config = f.controller.pin_port(f.dir.path());
    let (l, code) = f.backup();
    assert_eq!(code, 0, "{l}");
    f.base_backup();
    let before = answers(&f.admin, "demo-pg");
    let printed = follow_the_sqlite_procedure(&mut f, &config);
    assert!(!printed.contains("snapshot "), "{printed}");
    assert!(printed.contains("backups       2"), "{printed}");
    assert!(printed.contains("problems      none"), "{printed}");
    serve_again(&mut f, &config);
    assert_eq!(before, answers(&f.admin, "demo-pg"));
    f.dir.keep_if_asked();
}

/// A store written before records (no backup records, no descriptions of archived files)
/// is described at the first start after the upgrade, and can then be rebuilt.
#[test]
fn a_store_from_before_records_is_described_after_the_upgrade() {
    let mut f = Fleet::build(&FleetOpts {
        label: "rebuild-old",
        controller_extra: "[catalog]\nsnapshot-every = \"off\"\n",
        ..Default::default()
    });
    let config = f.controller.pin_port(f.dir.path());
    let (l, code) = f.backup();
    assert_eq!(code, 0, "{l}");
    f.base_backup();
    f.pg.sql("postgres", "CREATE TABLE after_the_backup AS SELECT 1 AS x");
    f.pg.archive_current_segment();
    let before = answers(&f.admin, "demo-pg");

    // What an older version left: no backup records, and archived files no pack describes.
    f.controller.daemon.kill9();
    let meta = f.controller.data_dir.join("store/meta/backups");
    std::fs::remove_dir_all(&meta).unwrap();
    let sql = run(Command::new("sqlite3")
        .arg(f.controller.data_dir.join("catalog.db"))
        .arg("UPDATE wal_files SET description_pack = NULL"));
    assert!(sql.status.success(), "{sql:?}");
    f.restart_controller();
    wait_for(
        "the older backups to be described",
        Duration::from_secs(30),
        || {
            let n = std::fs::read_dir(&meta).ok()?.count();
            (n == 2).then_some(())
        },
    );
    let logs = f.controller.data_dir.join("store/meta/logs/demo-pg");
    wait_for(
        "the older archived files to be described",
        Duration::from_secs(30),
        || std::fs::read_dir(&logs).ok()?.next().map(|_| ()),
    );
    // Let the marks settle: the record is written before the files are marked described.
    std::thread::sleep(Duration::from_millis(500));

    let printed = follow_the_sqlite_procedure(&mut f, &config);
    assert!(printed.contains("backups       2"), "{printed}");
    assert!(printed.contains("problems      none"), "{printed}");
    serve_again(&mut f, &config);
    assert_eq!(before, answers(&f.admin, "demo-pg"));
    f.dir.keep_if_asked();
}
