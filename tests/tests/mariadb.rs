//! MariaDB end to end: a real mariadbd in a temp dir, mariadb-dump, mariabackup and the
//! real tidemark binaries.

use std::time::Duration;

use serde_json::Value;
use tidemark_core::timefmt::pg_timestamp;
use tidemark_tests::fleet::drill_check as check;
use tidemark_tests::maria::{MariaFleet, Restored};
use tidemark_tests::now_micros;
use tidemark_tests::process::wait_for;

fn load_shop(f: &MariaFleet) {
    f.db.sql(
        "CREATE DATABASE shop;
         CREATE TABLE shop.customers (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL, photo BLOB) ENGINE=InnoDB;
         INSERT INTO shop.customers SELECT seq, CONCAT('Kunde ', seq, ' Ærø ☃'), UNHEX(MD5(seq)) FROM shop.seq_1_to_5000;
         CREATE TABLE shop.orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, customer INT, total DECIMAL(12,2)) ENGINE=InnoDB;
         INSERT INTO shop.orders (customer, total) SELECT 1 + seq % 5000, seq * 1.25 FROM shop.seq_1_to_20000;
         CREATE TABLE shop.visits (id INT) ENGINE=MyISAM;
         INSERT INTO shop.visits VALUES (1), (2);
         CREATE VIEW shop.big_spenders AS SELECT customer, SUM(total) AS s FROM shop.orders GROUP BY customer;
         CREATE DATABASE other;
         CREATE TABLE other.t (id INT PRIMARY KEY) ENGINE=InnoDB;
         INSERT INTO other.t VALUES (42);",
    );
}

fn warnings(b: &Value) -> Vec<String> {
    b["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_logical_backup_records_its_binlog_position_warns_about_myisam_and_restores_one_database() {
    let f = MariaFleet::start("my-logical", "", "");
    load_shop(&f);
    let master = f.db.sql("SHOW MASTER STATUS");
    let b = f.backup("logical");
    assert_eq!(b["status"], "complete", "{b}");
    let part = &b["parts"][0];
    assert_eq!(part["name"], "dump");
    assert_eq!(part["check"], "ok", "{part}");
    // The accounts and grants, which the dump of the user databases does not hold.
    let users = &b["parts"][1];
    assert_eq!(users["name"], "users");
    assert_eq!(users["check"], "ok", "{users}");
    // The position the dump is consistent with is the server's, as SHOW MASTER STATUS
    // gave it just before (nothing was written in between).
    let (file, pos) = {
        let mut it = master.split('\t');
        (
            it.next().unwrap().to_string(),
            it.next().unwrap().to_string(),
        )
    };
    assert_eq!(b["binlog"]["file"], file.as_str(), "{b}");
    assert_eq!(b["binlog"]["position"].to_string(), pos, "{b}");
    assert!(!b["binlog"]["gtid"].as_str().unwrap().is_empty(), "{b}");
    assert_eq!(b["databases"], serde_json::json!(["other", "shop"]));
    let w = warnings(&b);
    assert!(
        w.iter()
            .any(|w| w.starts_with("MyISAM") && w.contains("shop.visits")),
        "{w:?}"
    );
    assert!(!w.iter().any(|w| w.contains("customers")), "{w:?}");

    let id = b["id"].as_i64().unwrap().to_string();
    let restore = |into: &str, extra: &[&str]| {
        let mut a = vec![
            "restore",
            "--backup",
            &id,
            "--host",
            "db1",
            "--database",
            "shop",
            "--into-database",
            into,
        ];
        a.extend(extra);
        f.admin.run(&a)
    };
    let out = restore("shop_copy", &[]);
    assert_eq!(
        out.code,
        0,
        "{}{}\n{}",
        out.stdout,
        out.stderr,
        f.agent.daemon.log_text()
    );
    for t in ["customers", "orders", "visits"] {
        assert_eq!(
            f.db.checksum(&format!("shop.{t}")),
            f.db.checksum(&format!("shop_copy.{t}")),
            "table {t}"
        );
    }
    assert_eq!(
        f.db.sql("SELECT COUNT(*) FROM shop_copy.big_spenders"),
        "5000"
    );
    // Only the chosen database came along, and the source was not touched.
    assert_eq!(
        f.db.sql(
            "SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name LIKE 'other%'"
        ),
        "1"
    );
    // The copy exists now: a second restore into it is refused unless --clean.
    f.db.sql("INSERT INTO shop_copy.customers VALUES (99999, 'extra', NULL)");
    let again = restore("shop_copy", &[]);
    assert_ne!(again.code, 0);
    assert!(
        again.stderr.contains("already exists") && again.stderr.contains("--clean"),
        "{}",
        again.stderr
    );
    let clean = restore("shop_copy", &["--clean"]);
    assert_eq!(clean.code, 0, "{}", clean.stderr);
    assert_eq!(f.db.sql("SELECT COUNT(*) FROM shop_copy.customers"), "5000");
    // A database the dump does not hold is named in the refusal.
    let missing = f.admin.run(&[
        "restore",
        "--backup",
        &id,
        "--host",
        "db1",
        "--database",
        "nope",
        "--into-database",
        "x",
    ]);
    assert_ne!(missing.code, 0);
    assert!(missing.stderr.contains("other, shop"), "{}", missing.stderr);
    f.dir.keep_if_asked();
}

#[test]
fn a_physical_backup_is_checked_chunk_by_chunk_and_records_its_binlog_position() {
    let f = MariaFleet::start("my-physical", "", "");
    load_shop(&f);
    let b = f.backup("base");
    assert_eq!(b["status"], "complete", "{b}");
    let part = &b["parts"][0];
    assert_eq!(part["name"], "xbstream");
    assert_eq!(part["check"], "ok", "{part}");
    assert!(
        part["check_detail"]
            .as_str()
            .unwrap()
            .contains("CRC32 matched"),
        "{part}"
    );
    let active = f.db.binlogs().pop().unwrap();
    assert_eq!(b["binlog"]["file"], active.as_str(), "{b}");
    assert!(b["binlog"]["position"].as_u64().unwrap() > 4, "{b}");
    assert!(
        b["tool_version"].as_str().unwrap().contains("MariaDB"),
        "{b}"
    );
    f.dir.keep_if_asked();
}

#[test]
fn binlogs_are_archived_once_closed_never_while_active_and_rotated_by_archive_timeout() {
    let f = MariaFleet::start("my-binlog", "archive-timeout = \"2s\"", "");
    f.db.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, at TIMESTAMP(6))");
    for round in 0..3 {
        f.db.sql(&format!("INSERT INTO app.t VALUES ({round}, NOW(6))"));
        let before = f.db.binlogs();
        // The write is in the active file; the agent closes it once it is 2 s old and ships
        // it, without anyone running FLUSH BINARY LOGS.
        let written_to = before.last().unwrap().clone();
        f.wait_archived(&written_to);
        let w = f.window();
        let now = f.db.binlogs();
        let active = now.last().unwrap();
        assert!(
            w["newest_wal"].as_str().unwrap() < active.as_str(),
            "the archive holds {} while {active} is still being written",
            w["newest_wal"]
        );
    }
    // An idle server is not rotated: no new file appears while nothing is written.
    let idle = f.db.binlogs();
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(f.db.binlogs(), idle);
    // The status shows the archiver's progress.
    let status = f.admin.json(&["status"]);
    let inst = status
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["instance"] == "demo-mariadb")
        .expect("demo-mariadb in status")
        .clone();
    let archived = wait_for("the archiver status", Duration::from_secs(30), || {
        let s = f.admin.json(&["status"]);
        let i = s
            .as_array()?
            .iter()
            .find(|i| i["instance"] == "demo-mariadb")?
            .clone();
        let last = i["archiver"]["last_archived_wal"].as_str()?.to_string();
        (!last.is_empty()).then_some(last)
    });
    assert!(archived.starts_with("mysql-bin."), "{inst}");
    // A restarted agent ships every closed file again: identical files are "already
    // archived", so nothing conflicts and nothing is stored twice.
    let files_before = f.window()["wal_files"].clone();
    let mut f = f;
    f.agent.restart(f.dir.path(), &f.admin);
    wait_for(
        "the restarted agent's archiver",
        Duration::from_secs(30),
        || {
            f.agent
                .daemon
                .log_text()
                .contains("already archived")
                .then_some(())
        },
    );
    let w = f.window();
    assert_eq!(w["wal_files"], files_before, "{w}");
    let status = f.admin.json(&["status"]);
    let alerts = status.as_array().unwrap()[0]["alerts"].clone();
    assert_eq!(alerts, serde_json::json!([]), "{status}");
    f.dir.keep_if_asked();
}

/// Inserts rows into app.load from another thread until stopped: write load.
struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Writer {
    fn start(socket: &std::path::Path) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, socket) = (stop.clone(), socket.to_path_buf());
        let thread = std::thread::spawn(move || {
            let mut n = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let ok = std::process::Command::new("mariadb")
                    .arg("--no-defaults")
                    .arg(format!("--socket={}", socket.display()))
                    .args(["-uroot", "-e", "INSERT INTO app.load (v, at) SELECT MD5(RAND()), NOW(6) FROM app.seq_1_to_50"])
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                assert!(ok, "the load writer's insert failed");
                n += 1;
            }
            n
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stop and return how many batches were written.
    fn stop(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

#[test]
fn a_point_in_time_restore_between_two_markers_is_exact_under_write_load() {
    let f = MariaFleet::start("my-pitr", "archive-timeout = \"2s\"", "");
    f.db.sql(
        "CREATE DATABASE app;
         CREATE TABLE app.load (id BIGINT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(40), at TIMESTAMP(6)) ENGINE=InnoDB;
         CREATE TABLE app.markers (name VARCHAR(10) PRIMARY KEY, at TIMESTAMP(6)) ENGINE=InnoDB;
         INSERT INTO app.load (v, at) SELECT MD5(seq), NOW(6) FROM app.seq_1_to_2000;
         CREATE USER app@localhost IDENTIFIED BY 'app-secret';
         GRANT SELECT ON app.* TO app@localhost;",
    );
    let b = f.backup("base");
    let dump = f.backup("logical");
    // Load before marker A, nothing between A and B, load again after B. Binlog times are
    // whole seconds: B comes two seconds after A's, so a target in the second after A's
    // second lies strictly between them.
    let w = Writer::start(&f.db.socket);
    std::thread::sleep(Duration::from_secs(2));
    assert!(w.stop() > 0);
    f.db.sql("INSERT INTO app.markers VALUES ('A', NOW(6))");
    let a_second: i64 =
        f.db.sql("SELECT FLOOR(UNIX_TIMESTAMP(at)) FROM app.markers WHERE name = 'A'")
            .parse()
            .unwrap();
    let (sum_a, count_a) = (
        f.db.checksum("app.load"),
        f.db.sql("SELECT COUNT(*) FROM app.load"),
    );
    wait_for("two seconds past marker A", Duration::from_secs(5), || {
        let now: i64 = f.db.sql("SELECT UNIX_TIMESTAMP()").parse().ok()?;
        (now >= a_second + 2).then_some(())
    });
    f.db.sql("INSERT INTO app.markers VALUES ('B', NOW(6))");
    let w = Writer::start(&f.db.socket);
    std::thread::sleep(Duration::from_secs(2));
    w.stop();
    let written_to = f.db.binlogs().pop().unwrap();
    f.wait_archived(&written_to);

    let datadir = f.dir.path().join("restored");
    let to = tidemark_core::timefmt::utc(a_second + 1);
    let out = f.admin.run(&[
        "restore",
        "--instance",
        "demo-mariadb",
        "--host",
        "db1",
        "--datadir",
        datadir.to_str().unwrap(),
        "--to",
        &to,
        "--start",
    ]);
    let restored = Restored::new(&datadir);
    let result = std::panic::catch_unwind(|| {
        assert_eq!(
            out.code,
            0,
            "{}{}\n{}",
            out.stdout,
            out.stderr,
            f.agent.daemon.log_text()
        );
        assert!(
            out.stdout.contains(&format!("backup {}", b["id"])),
            "{}",
            out.stdout
        );
        assert!(out.stdout.contains("GTID position 0-1-"), "{}", out.stdout);
        assert_eq!(
            restored.sql("SELECT GROUP_CONCAT(name) FROM app.markers"),
            "A"
        );
        assert_eq!(restored.sql("SELECT COUNT(*) FROM app.load"), count_a);
        let sum = restored.sql("CHECKSUM TABLE app.load");
        assert_eq!(sum.split('\t').nth(1).unwrap(), sum_a);
        // The replayed server can follow the original by GTID from where it stopped.
        let pos = restored.sql("SELECT @@gtid_slave_pos");
        assert!(pos.starts_with("0-1-"), "{pos}");
        // And the archive was untouched by the restore: nothing was written as a binlog.
        assert!(!datadir.join("mysql-bin.000001").exists());
    });
    drop(restored);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    // The second path to the same point: the logical dump, loaded into a new server, then
    // the same binlogs replayed from the dump's position.
    let from_dump = f.dir.path().join("from-dump");
    let dump_id = dump["id"].as_i64().unwrap().to_string();
    let out = f.admin.run(&[
        "restore",
        "--instance",
        "demo-mariadb",
        "--host",
        "db1",
        "--datadir",
        from_dump.to_str().unwrap(),
        "--to",
        &to,
        "--from-backup",
        &dump_id,
        "--start",
    ]);
    let from_dump_server = Restored::new(&from_dump);
    let result = std::panic::catch_unwind(|| {
        assert_eq!(
            out.code,
            0,
            "{}{}
{}",
            out.stdout,
            out.stderr,
            f.agent.daemon.log_text()
        );
        assert!(
            out.stdout.contains(&format!("backup {dump_id}")),
            "{}",
            out.stdout
        );
        assert_eq!(
            from_dump_server.sql("SELECT GROUP_CONCAT(name) FROM app.markers"),
            "A"
        );
        let sum = from_dump_server.sql("CHECKSUM TABLE app.load");
        assert_eq!(sum.split('\t').nth(1).unwrap(), sum_a);
        // The accounts came along with the dump, grants included.
        assert_eq!(
            from_dump_server
                .sql("SHOW GRANTS FOR app@localhost")
                .lines()
                .count(),
            2
        );
        // ...and the temporary account that loaded them is gone.
        assert_eq!(
            from_dump_server
                .sql("SELECT COUNT(*) FROM mysql.global_priv WHERE User = 'tidemark_restore'"),
            "0"
        );
    });
    drop(from_dump_server);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    // A target before the backup, or past the archive, is refused before anything runs.
    let early = f.admin.run(&[
        "restore",
        "--instance",
        "demo-mariadb",
        "--host",
        "db1",
        "--datadir",
        f.dir.path().join("early").to_str().unwrap(),
        "--to",
        "2020-01-01 00:00:00",
    ]);
    assert_ne!(early.code, 0);
    assert!(
        early
            .stderr
            .contains("outside instance demo-mariadb's recovery window"),
        "{}",
        early.stderr
    );
    f.dir.keep_if_asked();
}

fn drill(f: &MariaFleet, target: &str) -> (Value, i32) {
    f.admin.drill_run("demo-mariadb", &["--target", target])
}

#[test]
fn a_mariadb_drill_passes_and_fails_with_the_reason_when_a_binlog_is_lost() {
    let checks = r#"
[[instance]]
name = "demo-mariadb"
[[instance.check]]
name = "markers"
database = "app"
sql = "SELECT COUNT(*) FROM markers"
expect = "equals:2"
[[instance.check]]
name = "orders"
database = "app"
sql = "SELECT COUNT(*) FROM orders"
expect = "nonzero"
"#;
    let f = MariaFleet::start("my-drill", "archive-timeout = \"2s\"", checks);
    let sb = f.start_sandbox("sb1");
    let agents = f.admin.json(&["agents"]);
    let offered = agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "sb1")
        .unwrap()["sandbox_engines"]
        .to_string();
    assert!(offered.contains("mariadb"), "{offered}");
    f.db.sql(
        "CREATE DATABASE app;
         CREATE TABLE app.markers (name VARCHAR(10) PRIMARY KEY) ENGINE=InnoDB;
         CREATE TABLE app.orders (id INT AUTO_INCREMENT PRIMARY KEY, total INT) ENGINE=InnoDB;
         INSERT INTO app.orders (total) SELECT seq FROM app.seq_1_to_1000;",
    );
    f.backup("base");
    // Three batches, each in a binlog of its own, with a target after each.
    let mut targets = Vec::new();
    let mut files = Vec::new();
    for batch in 0..3 {
        f.db.sql(&format!("INSERT INTO app.markers VALUES ('m{batch}')"));
        let file = f.db.binlogs().pop().unwrap();
        f.wait_archived(&file);
        files.push(file);
        std::thread::sleep(Duration::from_millis(1100));
        targets.push(pg_timestamp(now_micros()));
        std::thread::sleep(Duration::from_millis(1100));
    }
    f.db.sql("INSERT INTO app.markers VALUES ('last')");
    let last = f.db.binlogs().pop().unwrap();
    f.wait_archived(&last);

    // After the second marker: two rows, every rule met.
    let (d, code) = drill(&f, &targets[1]);
    assert_eq!(code, 0, "{d:#}\n{}", sb.daemon.log_text());
    assert_eq!(d["state"], "passed", "{d:#}");
    assert_eq!(check(&d, "markers")["value"], "2", "{d:#}");
    assert_eq!(check(&d, "binlog-replayed")["ok"], true, "{d:#}");
    // What the replay applied, as it reported it: the two markers' transactions at least.
    let applied: u64 = check(&d, "binlog-replayed")["value"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(applied >= 2, "{d:#}");
    assert_eq!(check(&d, "recovered-point")["ok"], true, "{d:#}");
    assert!(d["wal_segments"].as_u64().unwrap() >= 2, "{d:#}");
    assert!(d["rto_ms"].as_u64().unwrap() > 0, "{d:#}");
    assert!(
        check(&d, "amcheck")["detail"]
            .as_str()
            .unwrap()
            .contains("tables OK"),
        "{d:#}"
    );
    assert!(sb.leftovers().is_empty(), "{:?}", sb.leftovers());
    let series = "tidemark_drill_status{instance=\"demo-mariadb\"}";
    assert_eq!(f.controller.metric(series), 1.0);

    // The binlog holding the second marker is lost from the store: a drill past it fails,
    // and says which file.
    let lost = &files[1];
    let chunks = f.controller.wal_only_pack_files("demo-mariadb", lost);
    assert!(!chunks.is_empty());
    for p in &chunks {
        std::fs::remove_file(p).unwrap();
    }
    let (d, code) = drill(&f, &targets[2]);
    assert_eq!(code, 1, "{d:#}");
    assert_eq!(d["state"], "failed", "{d:#}");
    let reason = d["reason"].as_str().unwrap();
    assert!(
        reason.contains(lost.as_str()) && reason.contains("recovery failed"),
        "{d:#}"
    );
    assert!(sb.leftovers().is_empty(), "{:?}", sb.leftovers());
    assert_eq!(f.controller.metric(series), 0.0);
    f.dir.keep_if_asked();
}

#[test]
fn a_binlog_push_for_another_agents_instance_or_under_a_foreign_name_is_refused() {
    use tidemark_proto::agent_service_client::AgentServiceClient;
    use tidemark_proto::upload_part_message::Msg;
    use tidemark_proto::{RegisterRequest, UploadPartMessage, WalHeader};
    let f = MariaFleet::start("my-push", "", "");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let connect = |identity: &str| {
        tidemark_tests::fleet::raw_agent_client(&f.pki, &f.controller.url, identity, &rt)
    };
    let push = |c: &mut AgentServiceClient<tonic::transport::Channel>, name: &str| {
        let h = WalHeader {
            instance: "demo-mariadb".into(),
            name: name.into(),
            ..Default::default()
        };
        let msg = UploadPartMessage {
            msg: Some(Msg::Wal(h)),
        };
        rt.block_on(c.push_wal(tokio_stream::iter(vec![msg])))
            .unwrap_err()
    };
    let mut db2 = connect("agent:db2");
    rt.block_on(db2.register(RegisterRequest {
        host: "db2".into(),
        agent_version: "test".into(),
        ..Default::default()
    }))
    .unwrap();
    let e = push(&mut db2, "mysql-bin.000001");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{}", e.message());
    assert!(
        e.message().contains("belongs to agent db1"),
        "{}",
        e.message()
    );
    // The owner itself may push only files named after the instance's log_bin_basename.
    let mut db1 = connect("agent:db1");
    let e = push(&mut db1, "../../etc/passwd");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{}", e.message());
    assert!(e.message().contains("log_bin_basename"), "{}", e.message());
    f.dir.keep_if_asked();
}

/// Retention on MariaDB: the binlogs before the oldest kept backup's coordinates go with the
/// backup that needed them, and the window then starts at the oldest kept backup.
#[test]
fn retention_expires_a_physical_backup_and_the_binlogs_only_it_needed() {
    let f = MariaFleet::start(
        "my-retention",
        "archive-timeout = \"2s\"",
        "[[instance]]\nname = \"demo-mariadb\"\n[instance.retention]\nmin-base = 2\n",
    );
    f.db.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY)");
    let bases: Vec<Value> = (0..3)
        .map(|i| {
            f.db.sql(&format!(
                "INSERT INTO app.t VALUES ({i}); FLUSH BINARY LOGS"
            ));
            let b = f.backup("base");
            f.db.sql("FLUSH BINARY LOGS");
            b
        })
        .collect();
    f.wait_archived(bases[2]["binlog"]["file"].as_str().unwrap());
    let first_kept = bases[1]["binlog"]["file"].as_str().unwrap().to_string();

    let plan = f
        .admin
        .json(&["retention", "plan", "--instance", "demo-mariadb"]);
    let planned: Vec<&Value> = plan
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["keep"] == false)
        .collect();
    let applied = f.admin.json(&["retention", "apply"]);
    let deleted = applied["deleted"].as_array().unwrap();
    assert_eq!(
        deleted.iter().collect::<Vec<_>>(),
        planned,
        "apply did exactly the plan: {applied:#}"
    );
    assert!(
        deleted
            .iter()
            .any(|i| i["backup_id"] == bases[0]["id"] && i["kind"] == "base"),
        "{applied:#}"
    );
    let binlogs: Vec<&str> = deleted
        .iter()
        .filter(|i| i["kind"] == "binlog")
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert!(!binlogs.is_empty(), "{applied:#}");
    assert!(
        binlogs.iter().all(|n| *n < first_kept.as_str()),
        "only binlogs before {first_kept}: {binlogs:?}"
    );
    let w = f.window();
    assert_eq!(w["restorable"], true, "{w}");
    assert_eq!(w["base_backups"], 2, "{w}");
    assert!(
        w["oldest_lsn"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{first_kept}:")),
        "the window starts at the oldest kept backup: {w}"
    );
    let v = f.admin.json(&["verify"]);
    assert_eq!(v["bad"].as_array().unwrap().len(), 0, "{v}");
    f.dir.keep_if_asked();
}
