//! What happens when things go wrong: a failing pg_dump, an agent killed mid-stream, a
//! chunk corrupted on disk. Nothing half-stored may look complete, and nothing corrupt may
//! be restored.

use std::time::Duration;

use tidemark_tests::fleet::Fleet;
use tidemark_tests::process::wait_for;

/// ~150 MB of poorly compressible rows in database `bulk`: a dump that takes long enough to
/// interrupt.
fn load_bulk(f: &Fleet) {
    f.pg.sql("postgres", "CREATE DATABASE bulk");
    f.pg.sql(
        "bulk",
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) AS v FROM generate_series(1, 1500000) g",
    );
}

/// Start a backup of demo-pg without waiting, and return its id once it is running.
fn start_backup_and_wait_until_running(f: &Fleet) -> i64 {
    let out = f.admin.run(&["backup", "--instance", "demo-pg"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    wait_for("the backup to start", Duration::from_secs(30), || {
        let list = f.admin.json(&["backups"]);
        let b = list.as_array()?.first()?.clone();
        (b["status"] == "running")
            .then(|| b["id"].as_i64())
            .flatten()
    })
}

/// After a failure, the next backup works.
fn assert_next_backup_completes(f: &Fleet) {
    let (next, code) = f.backup();
    assert_eq!(
        (code, next["status"].as_str()),
        (0, Some("complete")),
        "{next}"
    );
}

#[test]
fn pg_dump_failure_gives_a_failed_backup_carrying_the_stderr_reason() {
    let f = Fleet::start_with("dumpfail", "databases = [\"no_such_db\"]");
    let (b, code) = f.backup();
    assert_eq!(code, 1, "{b}");
    assert_eq!(b["status"], "failed");
    let reason = b["reason"].as_str().unwrap();
    assert!(reason.contains("pg_dump exited with status 1"), "{reason}");
    assert!(
        reason.contains("database \"no_such_db\" does not exist"),
        "stderr tail missing: {reason}"
    );
    // The part is not stored, and the failed backup cannot be restored.
    let part = b["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "db:no_such_db")
        .unwrap();
    assert_eq!(part["status"], "missing");
    let out = f.restore(b["id"].as_i64().unwrap(), &["--into-database", "x"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("not complete"), "{}", out.stderr);
}

#[test]
fn an_agent_killed_mid_stream_leaves_a_failed_backup_that_cannot_be_restored() {
    let mut f = Fleet::start_with("kill9", "databases = [\"bulk\"]");
    load_bulk(&f);
    // Kill the agent once the stream has started moving bytes.
    let backup_id = start_backup_and_wait_until_running(&f);
    std::thread::sleep(Duration::from_millis(700));
    f.agent.daemon.kill9();
    let id = backup_id.to_string();
    let b = wait_for(
        "the backup to be marked failed",
        Duration::from_secs(30),
        || {
            let b = f.admin.json(&["backups", "show", &id]);
            (b["status"] != "running").then_some(b)
        },
    );
    assert_eq!(b["status"], "failed", "{b}");
    let reason = b["reason"].as_str().unwrap();
    assert!(
        reason.contains("disconnected") || reason.contains("interrupted"),
        "{reason}"
    );
    assert!(
        b["parts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["status"] == "missing"),
        "a killed backup cannot have stored every part: {b}"
    );
    // Bring the agent back: the failed backup is refused, a new one works.
    f.agent.restart(f.dir.path(), &f.admin);
    let out = f.restore(backup_id, &["--into-database", "bulk_copy"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("failed, not complete"),
        "{}",
        out.stderr
    );
    assert!(
        f.pg.try_sql("bulk_copy", "SELECT 1").is_err(),
        "a refused restore must not create the database"
    );
    assert_next_backup_completes(&f);
}

#[test]
fn a_chunk_corrupted_on_disk_makes_restore_refuse_and_name_it() {
    let f = Fleet::start_with("corrupt", "databases = [\"app\"]");
    f.pg.sql("postgres", "CREATE DATABASE app");
    f.pg.sql(
        "app",
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 300000) g",
    );
    let (b, code) = f.backup();
    assert_eq!(code, 0, "{b}");
    let id = b["id"].as_i64().unwrap();

    // Flip one bit in the middle of every stored chunk (each in its pack).
    let chunks = f.controller.stored_chunks();
    assert!(
        chunks.len() >= 3,
        "expected several chunks, found {chunks:?}"
    );
    for c in &chunks {
        tidemark_tests::fleet::flip_bit(&f.controller.fs_pack_path(&c.pack), c.offset + c.len / 2);
    }
    let names: Vec<&str> = chunks.iter().map(|c| c.hex.as_str()).collect();

    let out = f.restore(id, &["--into-database", "app_copy"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        names
            .iter()
            .any(|n| out.stderr.contains(&format!("chunk {n}"))),
        "the error must name the corrupt chunk: {}",
        out.stderr
    );
    assert!(out.stderr.contains("corrupt"), "{}", out.stderr);
    assert!(
        f.pg.try_sql("app_copy", "SELECT 1").is_err(),
        "the partly restored database must be dropped"
    );
    // The bad chunk no longer counts as stored; a second attempt is refused before anything
    // starts.
    let out = f.restore(id, &["--into-database", "app_copy2"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("missing or was found corrupt"),
        "{}",
        out.stderr
    );
    assert!(f.pg.try_sql("app_copy2", "SELECT 1").is_err());
}

#[test]
fn agents_reconnect_after_a_controller_restart_and_interrupted_work_is_failed() {
    let mut f = Fleet::start_with("restart", "databases = [\"bulk\"]");
    load_bulk(&f);
    let id = start_backup_and_wait_until_running(&f);
    f.restart_controller();

    let b = f.admin.json(&["backups", "show", &id.to_string()]);
    assert_eq!(b["status"], "failed", "{b}");
    assert!(
        b["reason"]
            .as_str()
            .unwrap()
            .contains("controller restarted"),
        "{b}"
    );
    assert_next_backup_completes(&f);
}

#[test]
fn a_missing_tool_is_named_with_a_hint() {
    let f = Fleet::start("notool");
    let instance = format!(
        "[[instance]]\nname = \"other-pg\"\nengine = \"postgresql\"\nhost = \"{}\"\nbin-dir = \"/nonexistent/bin\"\n",
        f.pg.socket_dir.display()
    );
    let _db2 = tidemark_tests::fleet::Agent::start(
        f.dir.path(),
        &f.pki,
        "db2",
        &f.controller,
        &f.admin,
        &instance,
    );
    let agents = f.admin.json(&["agents"]);
    let db2 = agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "db2")
        .unwrap();
    let err = db2["instances"][0]["error"].as_str().unwrap();
    assert!(
        err.contains("/nonexistent/bin/psql") && err.contains("set bin-dir"),
        "{err}"
    );

    let out = f.admin.run(&["backup", "--instance", "other-pg", "--wait"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("cannot run /nonexistent/bin/"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("set bin-dir"), "{}", out.stderr);
}

#[test]
fn a_table_lock_held_too_long_fails_the_dump_after_lock_wait_timeout() {
    let f = Fleet::start_with(
        "locked",
        "databases = [\"app\"]\nlock-wait-timeout = \"2s\"",
    );
    f.pg.sql("postgres", "CREATE DATABASE app");
    f.pg.sql(
        "app",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 10) g",
    );
    let mut holder =
        f.pg.psql_cmd("app")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("psql");
    use std::io::Write;
    let stdin = holder.stdin.as_mut().unwrap();
    stdin
        .write_all(b"BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE;\n")
        .unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let (b, code) = f.backup();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(code, 1, "{b}");
    assert_eq!(b["status"], "failed");
    let reason = b["reason"].as_str().unwrap();
    assert!(
        reason.contains("pg_dump exited with status 1")
            && reason.contains("LOCK TABLE public.t")
            && reason.contains("timeout"),
        "{reason}"
    );
}
