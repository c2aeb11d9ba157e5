//! Base backups, continuous archiving and point-in-time restore on real clusters: a restore
//! must reproduce exactly the committed state at its target, no more and no less.

use tidemark_tests::fleet::Fleet;
use tidemark_tests::pg::give_to_postgres;

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

fn base_backup(f: &Fleet) -> serde_json::Value {
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
    assert_eq!(
        out.code,
        0,
        "{}{}\nagent log:\n{}",
        out.stdout,
        out.stderr,
        f.agent.daemon.log_text()
    );
    out.json()
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
    let b = base_backup(&f);
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
