//! Base backups, continuous archiving and point-in-time restore on real clusters: a restore
//! must reproduce exactly the committed state at its target, no more and no less.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tidemark_tests::fleet::Fleet;
use tidemark_tests::now_micros;
use tidemark_tests::pg::{PG_BIN, Restored, give_to_postgres};
use tidemark_tests::process::{run, wait_for};

/// A tablespace in the test dir, owned by postgres; returns its location.
fn make_tablespace(f: &Fleet, name: &str) -> String {
    let loc = f.dir.path().join(format!("ts-{name}"));
    std::fs::create_dir_all(&loc).unwrap();
    give_to_postgres(&loc);
    f.pg.sql(
        "postgres",
        &format!("CREATE TABLESPACE {name} LOCATION '{}'", loc.display()),
    );
    loc.display().to_string()
}

#[test]
fn base_backup_with_a_tablespace_is_complete_once_its_wal_is_archived() {
    let f = Fleet::start_archiving("base", "", "");
    let loc = make_tablespace(&f, "extra");
    f.pg.sql("postgres", "CREATE TABLE t (v text) TABLESPACE extra");
    f.pg.sql(
        "postgres",
        "INSERT INTO t SELECT md5(g::text) FROM generate_series(1, 10000) g",
    );
    let b = f.base_backup();
    assert_eq!(b["status"], "complete", "{b}");
    let parts: Vec<&str> = b["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let oid = f.pg.sql(
        "postgres",
        "SELECT oid FROM pg_tablespace WHERE spcname = 'extra'",
    );
    assert_eq!(
        parts,
        vec!["base", &format!("tablespace:{oid}")[..], "backup_manifest"],
        "{b}"
    );
    for p in b["parts"].as_array().unwrap() {
        assert_eq!(p["check"], "ok", "{p}");
    }
    let base = &b["base"];
    assert!(
        base["backup_label"]
            .as_str()
            .unwrap()
            .contains("START WAL LOCATION"),
        "{b}"
    );
    assert_eq!(base["tablespaces"][&oid], loc.as_str(), "{b}");
    assert_eq!(base["timeline"], 1);
    assert_eq!(
        base["system_identifier"].as_str().unwrap(),
        f.pg.sql(
            "postgres",
            "SELECT system_identifier FROM pg_control_system()"
        )
    );
    let w = f.admin.json(&["pitr-window", "--instance", "demo-pg"]);
    assert_eq!(w["restorable"], true, "{w}");
    assert_eq!(w["oldest_lsn"], base["stop_lsn"], "{w}");
    f.dir.keep_if_asked();
}

fn utc_micros(micros: i64) -> String {
    // tidemark reads "YYYY-MM-DD HH:MM:SS.ffffff" as UTC; let PostgreSQL format it.
    let out = run(Command::new("date").args([
        "-u",
        "-d",
        &format!("@{}.{:06}", micros / 1_000_000, micros % 1_000_000),
        "+%Y-%m-%d %H:%M:%S.%6N",
    ]));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Restore demo-pg into a new directory with `target` args, start it, and return it.
fn restore_to(
    f: &Fleet,
    label: &str,
    port: u16,
    ts_oid: &str,
    target: &[&str],
) -> (Restored, serde_json::Value) {
    let data = f.dir.path().join(format!("restore-{label}"));
    let ts = f.dir.path().join(format!("restore-{label}-ts"));
    let map = format!("{ts_oid}={}", ts.display());
    let port_s = port.to_string();
    let mut args = vec![
        "restore",
        "--instance",
        "demo-pg",
        "--host",
        "db1",
        "--pgdata",
        data.to_str().unwrap(),
        "--port",
        &port_s,
        "--start",
        "--tablespace-map",
        &map,
        "--output",
        "json",
    ];
    args.extend(target);
    let out = f.admin.run(&args);
    let restored = Restored::new(&data, port, &f.pg.socket_dir);
    assert_eq!(
        out.code,
        0,
        "restore {label}: {}{}\nagent log:\n{}",
        out.stdout,
        out.stderr,
        f.agent.daemon.log_text()
    );
    (restored, out.json())
}

#[test]
fn point_in_time_restores_are_exact_to_a_time_an_lsn_and_a_restore_point() {
    let f = Fleet::start_archiving("pitr", "", "");
    make_tablespace(&f, "extra");
    let ts_oid = f.pg.sql(
        "postgres",
        "SELECT oid FROM pg_tablespace WHERE spcname = 'extra'",
    );
    f.pg.sql("postgres", "CREATE TABLE markers (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp()) TABLESPACE extra");
    let bench = |args: &[&str]| {
        let mut c = Command::new(format!("{PG_BIN}/pgbench"));
        c.arg("-h")
            .arg(&f.pg.socket_dir)
            .args(["-U", "postgres"])
            .args(args)
            .arg("postgres");
        c
    };
    let out = run(&mut bench(&["-i", "-s", "2", "-q"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b = f.base_backup();
    assert_eq!(b["status"], "complete", "{b}");

    // pgbench writes throughout; a marker commits about every second, with the client's
    // clock read just before and just after each commit.
    let mut load = bench(&["-c", "2", "-T", "15", "-n"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut times = Vec::new();
    let (mut lsn_after_7, mut named_after, mut xid_8) = (String::new(), 0, String::new());
    for k in 1..=10 {
        let before = now_micros();
        let xid = f.pg.sql(
            "postgres",
            &format!(
                "BEGIN; INSERT INTO markers (id) VALUES ({k}); SELECT pg_current_xact_id(); COMMIT"
            ),
        );
        let after = now_micros();
        if k == 8 {
            xid_8 = xid;
        }
        times.push((before, after));
        if k == 7 {
            lsn_after_7 = f.pg.sql("postgres", "SELECT pg_current_wal_insert_lsn()");
        }
        if k == 9 {
            f.pg.sql("postgres", "SELECT pg_create_restore_point('before-ten')");
            named_after = k;
        }
        std::thread::sleep(Duration::from_millis(900));
    }
    let _ = load.wait();
    // Archive everything written so far.
    let seg = f.pg.sql(
        "postgres",
        "SELECT pg_walfile_name(pg_current_wal_insert_lsn())",
    );
    f.pg.sql("postgres", "SELECT pg_switch_wal()");
    wait_for(
        "the last segment to be archived",
        Duration::from_secs(60),
        || {
            let sql =
                format!("SELECT coalesce(last_archived_wal, '') >= '{seg}' FROM pg_stat_archiver");
            (f.pg.sql("postgres", &sql) == "t").then_some(())
        },
    );
    let markers = |r: &Restored| r.sql("SELECT string_agg(id::text, ',' ORDER BY id) FROM markers");

    // To a time between markers 5 and 6: exactly 1..5.
    let target = utc_micros((times[4].1 + times[5].0) / 2);
    let (r, job) = restore_to(
        &f,
        "time",
        25432,
        &ts_oid,
        &["--to", &target, "--action", "promote", "--archive", "on"],
    );
    assert_eq!(markers(&r), "1,2,3,4,5", "{job}");
    // Replay went through wal-fetch's prefetcher.
    assert!(
        r.data.join("pg_wal/.tidemark-prefetch").is_dir(),
        "no prefetch directory"
    );
    assert!(
        job["message"].as_str().unwrap().contains("promoted"),
        "{job}"
    );
    // The restored cluster is sound.
    let out = run(Command::new(format!("{PG_BIN}/pg_amcheck"))
        .arg("-h")
        .arg(&r.socket_dir)
        .args([
            "-p",
            "25432",
            "-U",
            "postgres",
            "--all",
            "--install-missing",
            "--heapallindexed",
        ]));
    assert!(
        out.status.success(),
        "pg_amcheck: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A promoted clone with archiving on adds nothing to the primary's archive.
    let files_before = f.admin.json(&["pitr-window", "--instance", "demo-pg"])["wal_files"]
        .as_u64()
        .unwrap();
    r.sql("SELECT pg_switch_wal()");
    wait_for(
        "the clone's archiver to fail",
        Duration::from_secs(30),
        || (r.sql("SELECT failed_count FROM pg_stat_archiver") != "0").then_some(()),
    );
    let files_after = f.admin.json(&["pitr-window", "--instance", "demo-pg"])["wal_files"]
        .as_u64()
        .unwrap();
    assert_eq!(
        files_before, files_after,
        "a restored clone added WAL to the primary's archive"
    );
    drop(r);

    // To the LSN read after marker 7 committed: exactly 1..7.
    let (r, _) = restore_to(&f, "lsn", 25433, &ts_oid, &["--lsn", &lsn_after_7]);
    assert_eq!(markers(&r), "1,2,3,4,5,6,7");
    assert_eq!(r.sql("SELECT pg_get_wal_replay_pause_state()"), "paused");
    drop(r);

    // To the commit of marker 8's transaction: exactly 1..8.
    let (r, _) = restore_to(&f, "xid", 25435, &ts_oid, &["--xid", &xid_8]);
    assert_eq!(markers(&r), "1,2,3,4,5,6,7,8");
    drop(r);

    // To the base backup's consistent point: the table as it was then, with no markers.
    let (r, _) = restore_to(&f, "immediate", 25436, &ts_oid, &["--immediate"]);
    assert_eq!(markers(&r), "");
    assert_eq!(r.sql("SELECT count(*) FROM markers"), "0");
    drop(r);

    // To the restore point made after marker 9: exactly 1..9.
    let (r, _) = restore_to(&f, "name", 25434, &ts_oid, &["--name", "before-ten"]);
    assert_eq!(markers(&r), "1,2,3,4,5,6,7,8,9");
    assert_eq!(named_after, 9);
    drop(r);

    // A target before the backup ended, or after the newest archived WAL, is refused with
    // the window in the message.
    let out = f.admin.run(&[
        "restore",
        "--instance",
        "demo-pg",
        "--host",
        "db1",
        "--pgdata",
        "/tmp/never",
        "--to",
        "2001-01-01 00:00:00",
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("outside instance demo-pg's recovery window"),
        "{}",
        out.stderr
    );
    assert!(!Path::new("/tmp/never").exists());
    f.dir.keep_if_asked();
}

fn switch_wal(f: &Fleet) -> String {
    let seg = f.pg.sql(
        "postgres",
        "SELECT pg_walfile_name(pg_current_wal_insert_lsn())",
    );
    f.pg.sql("postgres", "SELECT pg_switch_wal()");
    seg
}

#[test]
fn archiving_catches_up_after_a_controller_outage_and_a_lost_segment_is_a_gap() {
    let mut f = Fleet::start_archiving("outage", "status-interval = \"1s\"\n", "");
    f.pg.sql("postgres", "CREATE TABLE t (v int)");
    let b = f.base_backup();
    assert_eq!(b["status"], "complete", "{b}");

    // The controller goes away while PostgreSQL keeps writing: archive_command fails and
    // PostgreSQL keeps the segments.
    f.controller.daemon.kill9();
    let mut segs = Vec::new();
    for i in 0..3 {
        f.pg.sql(
            "postgres",
            &format!("INSERT INTO t SELECT g FROM generate_series(1, 20000) g WHERE {i} >= 0"),
        );
        segs.push(switch_wal(&f));
    }
    wait_for("archive_command to fail", Duration::from_secs(30), || {
        (f.pg
            .sql("postgres", "SELECT failed_count > 0 FROM pg_stat_archiver")
            == "t")
            .then_some(())
    });
    let ready = std::fs::read_dir(f.pg.data.join("pg_wal/archive_status"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".ready")
        })
        .count();
    assert!(
        ready >= 3,
        "PostgreSQL should keep the unarchived segments; {ready} .ready files"
    );

    // Back again: the archiver catches up in order; no gap. PostgreSQL's archiver sleeps
    // up to a minute after repeated failures, and a wake-up that arrives while it is still
    // retrying is not queued: keep completing segments until it has caught up.
    f.restart_controller();
    let last = switch_wal(&f);
    wait_for(
        &format!("{last} to be archived"),
        Duration::from_secs(150),
        || {
            let sql =
                format!("SELECT coalesce(last_archived_wal, '') >= '{last}' FROM pg_stat_archiver");
            if f.pg.sql("postgres", &sql) == "t" {
                return Some(());
            }
            f.pg.sql("postgres", "INSERT INTO t VALUES (0)");
            f.pg.sql("postgres", "SELECT pg_switch_wal()");
            std::thread::sleep(Duration::from_secs(2));
            None
        },
    );
    let w = f.admin.json(&["pitr-window", "--instance", "demo-pg"]);
    assert_eq!(w["restorable"], true, "{w}");
    assert_eq!(w["gap"], "", "{w}");
    assert!(w["newest_wal"].as_str().unwrap() >= last.as_str(), "{w}");
    let series = |name: &str| format!("{name}{{instance=\"demo-pg\"}}");
    let c = &f.controller;
    assert_eq!(c.metric(&series("tidemark_wal_gap")), 0.0);
    assert!(c.metric(&series("tidemark_wal_archive_age_seconds")) < 120.0);
    assert!(c.metric(&series("tidemark_base_backup_age_seconds")) < 600.0);
    assert!(c.metric(&series("tidemark_pitr_window_seconds")) > 0.0);
    // The agent reports the archiver's state; nothing is left waiting.
    wait_for(
        "the archiver status to show no backlog",
        Duration::from_secs(30),
        || {
            let s = f.admin.json(&["status"]);
            let a = &s[0]["archiver"];
            (a["ready"] == 0
                && a["failed_count"].as_u64() > Some(0)
                && a["last_archived_wal"].as_str() >= Some(last.as_str()))
            .then_some(())
        },
    );

    // A segment whose stored data is lost: fetching it fails hard (never "not found"), the
    // window ends before it, and a restore past it is refused.
    let lost = &segs[1];
    let files = f.controller.wal_only_pack_files("demo-pg", lost);
    assert!(!files.is_empty(), "no chunk of {lost} is its own");
    for c in &files {
        std::fs::remove_file(c).unwrap();
    }
    let dest = f.dir.path().join("fetched-lost");
    let out = run(Command::new(tidemark_tests::bin("tidemark-agent"))
        .current_dir(&f.pg.data)
        .arg("--config")
        .arg(&f.agent.config)
        .args(["wal-fetch", lost])
        .arg(&dest));
    assert_eq!(
        out.status.code(),
        Some(200),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let w = f.admin.json(&["pitr-window", "--instance", "demo-pg"]);
    assert_eq!(w["gap"], lost.as_str(), "{w}");
    assert_eq!(f.controller.metric(&series("tidemark_wal_gap")), 1.0);
    // A second ago was inside the window before the loss; now it is past the gap.
    let recent = utc_micros(now_micros() - 1_000_000);
    for target in [&["--to", recent.as_str()][..], &["--latest"][..]] {
        let mut args = vec![
            "restore",
            "--instance",
            "demo-pg",
            "--host",
            "db1",
            "--pgdata",
            "/tmp/never",
        ];
        args.extend(target);
        let out = f.admin.run(&args);
        assert_eq!(out.code, 1, "{target:?}: {}", out.stderr);
        assert!(
            out.stderr.contains(&format!("{lost} is missing")),
            "{target:?}: {}",
            out.stderr
        );
    }
    f.dir.keep_if_asked();
}

#[test]
fn a_base_backup_whose_wal_cannot_be_archived_fails_and_says_why() {
    // archive_command always fails: PostgreSQL would wait for the backup's WAL forever.
    let f = Fleet::start_archiving_with(
        "walwait",
        "",
        "archive_command = '/bin/false'",
        "wal-wait-timeout = \"3s\"",
    );
    let out = f.admin.run(&[
        "backup",
        "--instance",
        "demo-pg",
        "--kind",
        "base",
        "--wait",
        "--output",
        "json",
    ]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let b = out.json();
    assert_eq!(b["status"], "failed", "{b}");
    let reason = b["reason"].as_str().unwrap();
    assert!(
        reason.contains("waited longer than 3s for the backup's WAL to be archived"),
        "{reason}"
    );
    assert!(reason.contains("archive_command"), "{reason}");
    let w = f
        .admin
        .run(&["pitr-window", "--instance", "demo-pg", "--output", "json"]);
    assert_eq!(
        w.code, 1,
        "a failed base backup must not open a recovery window: {}",
        w.stdout
    );
    f.dir.keep_if_asked();
}

/// The pid of a running process whose command line contains every one of `words`.
fn find_process(words: &[&str]) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        words.iter().all(|w| cmd.contains(w)).then_some(pid)
    })
}

#[test]
fn a_pg_basebackup_killed_mid_stream_fails_the_backup_and_stores_nothing_of_it() {
    let f = Fleet::start_archiving("bbkill", "", "");
    f.pg.sql(
        "postgres",
        "CREATE TABLE bulk AS SELECT g, md5(g::text) || md5((g * 7)::text) AS v FROM generate_series(1, 1500000) g",
    );
    let out = f
        .admin
        .run(&["backup", "--instance", "demo-pg", "--kind", "base"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // This fleet's pg_basebackup only: it writes under this test's spool directory (tests
    // run side by side).
    let spool = f.dir.path().display().to_string();
    let pid = wait_for(
        "pg_basebackup to be streaming",
        Duration::from_secs(30),
        || find_process(&["pg_basebackup", &spool]),
    );
    std::thread::sleep(Duration::from_millis(300));
    let _ = run(Command::new("kill").args(["-9", &pid.to_string()]));
    let b = wait_for("the backup to fail", Duration::from_secs(60), || {
        let list = f.admin.json(&["backups"]);
        let b = list.as_array()?.first()?.clone();
        (b["status"] != "running").then_some(b)
    });
    assert_eq!(b["status"], "failed", "{b}");
    let reason = b["reason"].as_str().unwrap();
    assert!(
        reason.contains("pg_basebackup was killed by signal 9"),
        "{reason}"
    );
    let detail = f.admin.json(&["backups", "show", &b["id"].to_string()]);
    let base = detail["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "base")
        .unwrap()
        .clone();
    assert_eq!(
        base["status"], "missing",
        "a cut tar stream was stored: {detail}"
    );
    let w = f.admin.run(&["pitr-window", "--instance", "demo-pg"]);
    assert_eq!(
        w.code, 1,
        "a failed base backup opened a window: {}",
        w.stdout
    );
    f.dir.keep_if_asked();
}
