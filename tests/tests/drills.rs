//! Drills: a sandbox restores an instance to a past point from the controller alone, and
//! the verdict rests on evidence: exactly the rows committed before the target, the
//! production samples, and the reasons when something is missing.

use std::time::Duration;

use serde_json::Value;
use tidemark_core::timefmt::pg_timestamp;
use tidemark_tests::fleet::{Fleet, FleetOpts, Sandbox, drill_check as check};
use tidemark_tests::now_micros;
use tidemark_tests::process::wait_for;

/// Checks on the markers table: the rows written before the target, none of those after,
/// a sampled row count, and something that is never zero.
const CHECKS: &str = r#"
[drills]
sample-interval = "1s"

[[instance]]
name = "demo-pg"
[[instance.check]]
name = "before-rows"
sql = "SELECT count(*) FROM markers WHERE phase = 'before'"
expect = "equals:50"
[[instance.check]]
name = "after-rows"
sql = "SELECT count(*) FROM markers WHERE phase = 'after'"
expect = "equals:0"
[[instance.check]]
name = "sampled-rows"
sql = "SELECT count(*) FROM markers"
expect = "within-pct:0"
[[instance.check]]
name = "catalog"
sql = "SELECT count(*) FROM pg_class"
expect = "nonzero"
"#;

/// Complete the current segment and wait until it is archived; returns its name.
fn archive_now(f: &Fleet) -> String {
    f.pg.archive_current_segment()
}

/// 50 'before' rows, a sample of them, the target, then 10 'after' rows, all archived.
/// Returns the target as PostgreSQL reads it.
fn write_markers(f: &Fleet) -> String {
    for i in 0..50 {
        f.pg.sql(
            "postgres",
            &format!("INSERT INTO markers (phase, n) VALUES ('before', {i})"),
        );
    }
    // The agent samples every second: let a sample of the 50 rows be taken.
    std::thread::sleep(Duration::from_millis(2500));
    let target = pg_timestamp(now_micros());
    std::thread::sleep(Duration::from_millis(1200));
    f.pg.sql(
        "postgres",
        "INSERT INTO markers (phase, n) SELECT 'after', g FROM generate_series(1, 10) g",
    );
    archive_now(f);
    target
}

fn drill(f: &Fleet, args: &[&str]) -> (Value, i32) {
    f.admin.drill_run("demo-pg", args)
}

/// A base backup, the markers, and a drill to the target between them that passes with
/// the 50 rows before it.
fn backup_and_drill_passes(f: &Fleet, sb: &Sandbox) {
    f.base_backup();
    let target = write_markers(f);
    let (d, code) = drill(f, &["--target", &target]);
    assert_eq!(code, 0, "{d:#}\nsandbox log:\n{}", sb.daemon.log_text());
    assert_eq!(d["state"], "passed", "{d:#}");
    assert_eq!(check(&d, "before-rows")["value"], "50");
}

fn drill_fleet(label: &str, extra: &str) -> (Fleet, Sandbox) {
    let f = Fleet::build(&FleetOpts {
        label,
        controller_extra: extra,
        ..Default::default()
    });
    let sb = f.start_sandbox("sb1");
    f.pg.sql(
        "postgres",
        "CREATE TABLE markers (id serial PRIMARY KEY, phase text NOT NULL, n int NOT NULL)",
    );
    (f, sb)
}

#[test]
fn a_drill_recovers_exactly_what_was_committed_before_its_target() {
    let (f, sb) = drill_fleet("drill", CHECKS);
    // A restart after the backup may have reset the agent's session: the sampler starts
    // with each session, so sample only once the table exists.
    f.base_backup();
    let target = write_markers(&f);

    // Not to now, and not past the newest archived WAL.
    let out = f
        .admin
        .run(&["drill", "run", "--instance", "demo-pg", "--target", "now"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("past"), "{}", out.stderr);
    std::thread::sleep(Duration::from_secs(3));
    let out = f
        .admin
        .run(&["drill", "run", "--instance", "demo-pg", "--target", "1s"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("later than the newest archived WAL"),
        "{}",
        out.stderr
    );

    let (d, code) = drill(&f, &["--target", &target]);
    assert_eq!(code, 0, "{d:#}\nsandbox log:\n{}", sb.daemon.log_text());
    assert_eq!(d["state"], "passed", "{d:#}");
    assert_eq!(d["sandbox"], "sb1");
    for c in d["checks"].as_array().unwrap() {
        assert_eq!(c["ok"], true, "{c}");
    }
    assert_eq!(check(&d, "before-rows")["value"], "50");
    assert_eq!(check(&d, "after-rows")["value"], "0");
    assert_eq!(check(&d, "sampled-rows")["value"], "50");
    assert!(
        check(&d, "sampled-rows")["detail"]
            .as_str()
            .unwrap()
            .contains("sample 50"),
        "{d:#}"
    );
    assert_eq!(check(&d, "amcheck")["ok"], true, "{d:#}");
    // Recovery stopped at the first commit after the target: the 'after' rows.
    let target_micros = d["target_micros"].as_i64().unwrap();
    let recovered = d["recovered_at_micros"].as_i64().unwrap();
    assert!(
        recovered <= target_micros && recovered > target_micros - 10_000_000,
        "{d:#}"
    );
    assert!(
        d["stop_record"]
            .as_str()
            .unwrap()
            .starts_with("recovery stopping before commit of transaction"),
        "{d:#}"
    );
    assert!(d["wal_segments"].as_u64().unwrap() >= 2, "{d:#}");
    assert!(d["bytes_restored"].as_u64().unwrap() > 1 << 20, "{d:#}");
    let (rto, restore, replay) = (
        d["rto_ms"].as_u64().unwrap(),
        d["restore_ms"].as_u64().unwrap(),
        d["replay_ms"].as_u64().unwrap(),
    );
    assert!(
        restore > 0 && replay > 0 && rto >= restore + replay,
        "{d:#}"
    );
    assert!(d["rpo_secs"].as_i64().unwrap() >= 0, "{d:#}");
    assert!(sb.leftovers().is_empty(), "{:?}", sb.leftovers());

    // Metrics and status carry the verdict.
    let series = |name: &str| format!("{name}{{instance=\"demo-pg\"}}");
    let c = &f.controller;
    assert_eq!(c.metric(&series("tidemark_drill_status")), 1.0);
    assert!(c.metric(&series("tidemark_drill_last_success_timestamp")) > 1.7e9);
    assert!(c.metric(&series("tidemark_drill_rto_seconds")) > 0.0);
    // Every series the shipped alert rules use is served.
    let rules = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/prometheus/tidemark-alerts.yml"),
    )
    .unwrap();
    let served = c.metrics();
    for word in rules.split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_')) {
        if word.starts_with("tidemark_") {
            assert!(
                served.contains(&format!("\n{word}{{")),
                "alert rules use {word}, which /metrics does not serve"
            );
        }
    }
    let st = f.admin.json(&["status"]);
    assert_eq!(st[0]["last_drill"]["state"], "passed", "{st}");

    // A second drill on the same sandbox finds no leftovers, even when something was left.
    std::fs::create_dir_all(sb.dir.join("data")).unwrap();
    std::fs::write(sb.dir.join("data/PG_VERSION"), "15\n").unwrap();
    let (d2, code) = drill(&f, &["--target", &target]);
    assert_eq!(code, 0, "{d2:#}");
    assert_eq!(d2["state"], "passed", "{d2:#}");
    assert!(sb.leftovers().is_empty(), "{:?}", sb.leftovers());
    let h = f.admin.json(&["drill", "history", "--instance", "demo-pg"]);
    assert_eq!(h.as_array().unwrap().len(), 2, "{h}");
    f.dir.keep_if_asked();
}

#[test]
fn a_drill_fails_with_the_reason_when_a_check_is_not_met_or_wal_is_lost() {
    let checks = r#"
[[instance]]
name = "demo-pg"
[[instance.check]]
name = "impossible"
sql = "SELECT count(*) FROM markers"
expect = "equals:999"
"#;
    let (f, sb) = drill_fleet("drillfail", checks);
    f.base_backup();
    let mut targets = Vec::new();
    let mut segments = Vec::new();
    for batch in 0..3 {
        f.pg.sql(
            "postgres",
            &format!(
                "INSERT INTO markers (phase, n) SELECT 'b{batch}', g FROM generate_series(1, 100) g"
            ),
        );
        segments.push(archive_now(&f));
        std::thread::sleep(Duration::from_millis(1100));
        targets.push(pg_timestamp(now_micros()));
        std::thread::sleep(Duration::from_millis(1100));
    }
    f.pg.sql(
        "postgres",
        "INSERT INTO markers (phase, n) VALUES ('last', 0)",
    );
    archive_now(&f);

    // Everything restores, but the data is not what the check expects.
    let (d, code) = drill(&f, &["--target", &targets[0]]);
    assert_eq!(code, 1, "{d:#}");
    assert_eq!(d["state"], "failed", "{d:#}");
    assert_eq!(d["reason"], "impossible: expected 999, got 100", "{d:#}");
    assert_eq!(check(&d, "recovered-point")["ok"], true, "{d:#}");
    let series = "tidemark_drill_status{instance=\"demo-pg\"}";
    assert_eq!(f.controller.metric(series), 0.0);

    // The segment holding the second batch is lost from the store: recovery to a point
    // after it cannot get there, and the drill says which segment.
    let lost = &segments[1];
    let files = f.controller.wal_only_pack_files("demo-pg", lost);
    assert!(!files.is_empty());
    for p in &files {
        std::fs::remove_file(p).unwrap();
    }
    let (d, code) = drill(&f, &["--target", &targets[2]]);
    assert_eq!(code, 1, "{d:#}");
    assert_eq!(d["state"], "failed", "{d:#}");
    let reason = d["reason"].as_str().unwrap();
    assert!(reason.contains(lost.as_str()), "{d:#}");
    assert!(reason.contains("recovery failed"), "{d:#}");
    assert_eq!(check(&d, "recovery-target")["ok"], false, "{d:#}");
    assert!(sb.leftovers().is_empty(), "{:?}", sb.leftovers());
    f.dir.keep_if_asked();
}

#[test]
fn a_controller_restarted_during_a_drill_aborts_it_and_the_sandbox_is_emptied() {
    // A check that holds the drill at its target for a while.
    let checks = r#"
[[instance]]
name = "demo-pg"
[[instance.check]]
name = "slow"
sql = "SELECT 1 FROM pg_sleep(20)"
expect = "nonzero"
"#;
    let (mut f, sb) = drill_fleet("drillabort", checks);
    f.base_backup();
    let target = write_markers(&f);
    let out = f.admin.run(&[
        "drill",
        "run",
        "--instance",
        "demo-pg",
        "--target",
        &target,
        "--output",
        "json",
    ]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let id = out.json()[0]["id"].as_i64().unwrap().to_string();
    let pid_file = sb.dir.join("data/postmaster.pid");
    wait_for("the sandbox server to run", Duration::from_secs(60), || {
        pid_file.exists().then_some(())
    });
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let d = f.admin.json(&["drill", "show", &id]);
    assert_eq!(d["state"], "running", "{d:#}");

    f.restart_controller();
    let d = f.admin.json(&["drill", "show", &id]);
    assert_eq!(d["state"], "aborted", "{d:#}");
    assert!(d["reason"].as_str().unwrap().contains("restarted"), "{d:#}");
    wait_for("the sandbox to be emptied", Duration::from_secs(60), || {
        sb.leftovers().is_empty().then_some(())
    });
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the sandbox server (pid {pid}) still runs"
    );
    // The sandbox is back in the pool: the next drill runs there and passes.
    let (d, code) = drill(&f, &["--target", &target]);
    assert_eq!(d["state"], "passed", "{d:#}");
    assert_eq!(d["sandbox"], "sb1");
    assert_eq!(code, 0);
    f.dir.keep_if_asked();
}

#[test]
fn drills_of_all_instances_on_a_pool_of_one_run_one_after_the_other() {
    let f = Fleet::build(&FleetOpts {
        label: "drillall",
        more_instances: &["demo-pg2"],
        ..Default::default()
    });
    let _sb = f.start_sandbox("sb1");
    let clusters: Vec<(&str, &tidemark_tests::pg::PgCluster)> = std::iter::once(("demo-pg", &f.pg))
        .chain(f.more.iter().map(|(n, c)| (n.as_str(), c)))
        .collect();
    for (name, pg) in &clusters {
        pg.sql(
            "postgres",
            "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g",
        );
        let out = f
            .admin
            .run(&["backup", "--instance", name, "--kind", "base", "--wait"]);
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    }
    std::thread::sleep(Duration::from_millis(1100));
    let target = pg_timestamp(now_micros());
    std::thread::sleep(Duration::from_millis(1100));
    for (_, pg) in &clusters {
        pg.sql("postgres", "INSERT INTO t VALUES (0)");
        pg.archive_current_segment();
    }
    let out = f.admin.run(&[
        "drill", "run", "--all", "--target", &target, "--wait", "--output", "json",
    ]);
    let drills = out.json();
    assert_eq!(out.code, 0, "{drills:#}");
    let list = drills.as_array().unwrap();
    assert_eq!(list.len(), 2, "{drills:#}");
    for d in list {
        assert_eq!(d["state"], "passed", "{d:#}");
        assert_eq!(d["sandbox"], "sb1");
    }
    // One sandbox: the second started only after the first finished.
    let (a, b) = (&list[0], &list[1]);
    let (first, second) = if a["started_at"].as_i64() <= b["started_at"].as_i64() {
        (a, b)
    } else {
        (b, a)
    };
    assert!(
        second["started_at"].as_i64().unwrap() >= first["finished_at"].as_i64().unwrap(),
        "{drills:#}"
    );

    // Drills run on a schedule too: the default target (the middle of this short window).
    let set = |cron: &str| {
        let out = f
            .admin
            .run(&["policy", "set", "--instance", "demo-pg2", "--drill", cron]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    };
    set("* * * * * *");
    let run = wait_for("a scheduled drill", Duration::from_secs(90), || {
        let s = f.admin.json(&["schedule", "--instance", "demo-pg2"]);
        let r = s["runs"].as_array()?.first()?.clone();
        set("off");
        matches!(r["state"].as_str(), Some("succeeded" | "failed")).then_some(r)
    });
    assert_eq!(run["kind"], "drill");
    let d = f
        .admin
        .json(&["drill", "show", &run["drill_id"].to_string()]);
    assert_eq!(
        run["state"], "succeeded",
        "{run}
{d:#}"
    );
    assert!(
        d["target_reason"].as_str().unwrap().contains("middle"),
        "{d:#}"
    );
    f.dir.keep_if_asked();
}

#[test]
fn a_sandbox_cut_off_from_production_still_passes_a_drill() {
    // The sandbox lives in its own network namespace: its only link leads to the
    // controller's address. Production PostgreSQL listens on this host's loopback too, so
    // the test can show the sandbox cannot reach it.
    let ns = tidemark_tests::netns::Netns::new("sb");
    // Any 127/8 address is loopback on Linux: one of its own keeps port 5432 free of
    // collisions.
    let id = std::process::id();
    let pg_addr = format!(
        "127.{}.{}.{}",
        20 + id % 200,
        (id / 200) % 250,
        1 + id % 250
    );
    let pg_conf = format!("listen_addresses = '{pg_addr}'\n");
    let f = Fleet::build(&FleetOpts {
        label: "drillnetns",
        pg_conf: &pg_conf,
        controller_extra: CHECKS,
        controller_listen: Some("0.0.0.0:0"),
        controller_sans: &[&ns.host_addr],
        ..Default::default()
    });
    let url = format!("https://{}:{}", ns.host_addr, f.controller.port());
    let sb = Sandbox::start(f.dir.path(), &f.pki, "sb1", &url, &f.admin, Some(&ns.name));
    let probe = |cmd: &mut std::process::Command| {
        cmd.args(["-X", "-w", "-h", &pg_addr, "-U", "postgres"])
            .args(["-d", "postgres", "-c", "SELECT 1"])
            .env("PGCONNECT_TIMEOUT", "3")
            .output()
            .unwrap()
    };
    let here = probe(&mut std::process::Command::new("psql"));
    assert!(
        here.status.success(),
        "{}",
        String::from_utf8_lossy(&here.stderr)
    );
    let there = probe(&mut ns.command("psql"));
    assert!(
        !there.status.success(),
        "the sandbox namespace reached production PostgreSQL"
    );

    f.pg.sql(
        "postgres",
        "CREATE TABLE markers (id serial PRIMARY KEY, phase text NOT NULL, n int NOT NULL)",
    );
    backup_and_drill_passes(&f, &sb);
    assert!(sb.leftovers().is_empty(), "{:?}", sb.leftovers());
    drop(sb);
    f.dir.keep_if_asked();
}

/// Production's configuration does not bring production's code to the sandbox: preloaded
/// libraries and included files planted in the backed-up configuration (a compromised
/// database host could put anything there) are disabled in the drill's copy.
#[test]
fn a_drill_loads_no_library_and_includes_no_file_planted_in_production() {
    let (f, sb) = drill_fleet("drillplant", CHECKS);
    // Planted in the files only: no production server reads them (nothing reloads it).
    let planted = f.dir.path().join("planted.conf");
    std::fs::write(&planted, "this is not a configuration file\n").unwrap();
    let conf = f.pg.data.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str(&format!(
        "include '{p}'\ninclude'{p}'\ninclude_if_exists '{p}'\ninclude_dir '{d}'\nShared_Preload_Libraries = 'tidemark_planted'\n",
        p = planted.display(),
        d = f.dir.path().display()
    ));
    std::fs::write(&conf, text).unwrap();
    let auto = f.pg.data.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&auto).unwrap();
    for name in [
        "shared_preload_libraries",
        "session_preload_libraries",
        "local_preload_libraries",
    ] {
        text.push_str(&format!("{name} = 'tidemark_planted'\n"));
    }
    std::fs::write(&auto, text).unwrap();
    backup_and_drill_passes(&f, &sb);
    f.dir.keep_if_asked();
}
