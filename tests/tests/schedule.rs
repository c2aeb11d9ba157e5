//! The scheduler: cron schedules per instance fire jobs over the agents' connections, a
//! missed schedule runs once after downtime, and a job that hangs times out, is stopped on
//! the agent and is retried with backoff.

use std::time::Duration;

use serde_json::Value;
use tidemark_tests::fleet::{Fleet, FleetOpts};
use tidemark_tests::process::wait_for;

fn now() -> i64 {
    tidemark_core::timefmt::now()
}

fn runs(f: &Fleet) -> Vec<Value> {
    f.admin.json(&["schedule"])["runs"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn scheduled_backups_run_and_a_missed_schedule_runs_once_after_downtime() {
    let mut f = Fleet::build(&FleetOpts {
        label: "sched",
        controller_extra: "[schedule]\ntick = \"1s\"\n[[instance]]\nname = \"demo-pg\"\nlogical = \"*/4 * * * * *\"\n",
        ..Default::default()
    });
    let s = f.admin.json(&["schedule"]);
    let p = &s["policies"][0];
    assert_eq!(
        (
            p["instance"].as_str(),
            p["kind"].as_str(),
            p["origin"].as_str()
        ),
        (Some("demo-pg"), Some("logical"), Some("config")),
        "{s}"
    );
    assert!(p["next_run"].as_i64().unwrap() >= now() - 1, "{s}");

    // It runs on its own, through the agent.
    wait_for(
        "a scheduled backup to succeed",
        Duration::from_secs(60),
        || {
            runs(&f)
                .iter()
                .any(|r| r["state"] == "succeeded")
                .then_some(())
        },
    );
    let backups = f.admin.json(&["backups", "--instance", "demo-pg"]);
    assert!(
        backups
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["status"] == "complete"),
        "{backups}"
    );

    // Down for 17 s: four or five slots pass. They run once, as one run that says so. The
    // kill comes between runs (the newest one succeeded and its slot was at most 2 s ago, so
    // the next is at least 2 s away): a run the kill cut off would be retried first, as
    // itself (the controllers test covers that), which is a different story.
    let before = wait_for(
        "a quiet moment between scheduled runs",
        Duration::from_secs(60),
        || {
            let r = runs(&f);
            let newest = r.iter().max_by_key(|r| r["id"].as_i64())?;
            (newest["state"] == "succeeded" && now() - newest["slot"].as_i64()? <= 2)
                .then(|| newest["id"].as_i64().unwrap())
        },
    );
    f.controller.daemon.kill9();
    let down = now();
    std::thread::sleep(Duration::from_secs(17));
    f.restart_controller();
    let back = now();
    let after: Vec<Value> = wait_for("a run after the restart", Duration::from_secs(30), || {
        let r: Vec<Value> = runs(&f)
            .into_iter()
            .filter(|r| r["id"].as_i64().unwrap() > before)
            .collect();
        (!r.is_empty()).then_some(r)
    });
    let first = after.iter().min_by_key(|r| r["id"].as_i64()).unwrap();
    assert!(first["missed"].as_u64().unwrap() >= 3, "{first}");
    let during = after
        .iter()
        .filter(|r| (down..=back).contains(&r["slot"].as_i64().unwrap()))
        .count();
    let slots = ((back - down) / 4) as usize;
    assert!(
        during <= 2 && slots >= 4,
        "{during} runs for {slots} slots: {after:?}"
    );

    // Switched off from the CLI; the config does not switch it back on a restart.
    let out = f
        .admin
        .run(&["policy", "set", "--instance", "demo-pg", "--logical", "off"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    f.restart_controller();
    let p = &f.admin.json(&["policy", "show"])["policies"][0];
    assert_eq!(
        (p["cron"].as_str(), p["origin"].as_str()),
        (Some("off"), Some("cli")),
        "{p}"
    );
    let out = f.admin.run(&[
        "policy",
        "set",
        "--instance",
        "demo-pg",
        "--base",
        "61 2 * * *",
    ]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("outside 0-59"), "{}", out.stderr);
    let out = f.admin.run(&[
        "policy",
        "reset",
        "--instance",
        "demo-pg",
        "--kind",
        "logical",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let p = &f.admin.json(&["policy", "show"])["policies"][0];
    assert_eq!(
        (p["cron"].as_str(), p["origin"].as_str()),
        (Some("*/4 * * * * *"), Some("config")),
        "{p}"
    );
    f.dir.keep_if_asked();
}

#[test]
fn a_scheduled_backup_that_hangs_times_out_is_stopped_and_retried_with_backoff() {
    let f = Fleet::build(&FleetOpts {
        label: "schedhang",
        controller_extra: "[schedule]\ntick = \"1s\"\nbackup-timeout = \"4s\"\nretries = 1\nretry-backoff = \"2s\"\n",
        ..Default::default()
    });
    f.pg.sql("postgres", "CREATE TABLE t (v int)");
    // pg_dump waits for this lock for as long as it is held.
    let mut holder = f.pg.hold_lock("postgres", "t");
    let out = f.admin.run(&[
        "policy",
        "set",
        "--instance",
        "demo-pg",
        "--logical",
        "* * * * * *",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    wait_for(
        "the scheduled run to start",
        Duration::from_secs(30),
        || (!runs(&f).is_empty()).then_some(()),
    );
    let out = f
        .admin
        .run(&["policy", "set", "--instance", "demo-pg", "--logical", "off"]);
    assert_eq!(out.code, 0, "{}", out.stderr);

    let run = wait_for("the run to give up", Duration::from_secs(60), || {
        let r = runs(&f).into_iter().find(|r| r["state"] == "failed")?;
        Some(r)
    });
    assert_eq!(run["attempt"], 2, "{run}");
    let msg = run["message"].as_str().unwrap();
    assert!(
        msg.starts_with("failed after 2 attempts") && msg.contains("timed out after 4s"),
        "{run}"
    );
    assert_eq!(
        runs(&f).len(),
        1,
        "the schedule was off after the first slot"
    );
    // Both attempts' backups failed, and the agent stopped each pg_dump.
    let backups = f.admin.json(&["backups", "--instance", "demo-pg"]);
    let list = backups.as_array().unwrap();
    assert_eq!(list.len(), 2, "{backups}");
    for b in list {
        assert_eq!(b["status"], "failed", "{b}");
        assert!(b["reason"].as_str().unwrap().contains("timed out"), "{b}");
    }
    // While the lock is still held: a pg_dump left behind would wait for it.
    wait_for("pg_dump to be gone", Duration::from_secs(20), || {
        (f.pg.clients("pg_dump") == 0).then_some(())
    });
    let _ = holder.kill();
    let _ = holder.wait();
    f.dir.keep_if_asked();
}
