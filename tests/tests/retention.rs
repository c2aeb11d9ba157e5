//! `tidemark retention plan` on a real fleet: the policy from the controller's config, the
//! catalog's backups and archived WAL, every decision with its reason, and nothing deleted.

use tidemark_tests::fleet::{Cli, Fleet, FleetOpts};

#[test]
fn the_plan_keeps_what_the_policy_and_the_wal_need_and_deletes_nothing() {
    let f = Fleet::build(&FleetOpts {
        label: "retplan",
        controller_extra: "[[instance]]\nname = \"demo-pg\"\n[instance.retention]\nmin-base = 2\n",
        ..Default::default()
    });
    f.pg.sql("postgres", "CREATE TABLE t AS SELECT 1 AS x");
    let bases: Vec<i64> = (0..3)
        .map(|_| {
            f.pg.sql("postgres", "INSERT INTO t SELECT 1; SELECT pg_switch_wal()");
            f.base_backup()["id"].as_i64().unwrap()
        })
        .collect();
    let dumps: Vec<i64> = (0..2)
        .map(|_| {
            let (b, code) = f.backup();
            assert_eq!(code, 0, "{b}");
            b["id"].as_i64().unwrap()
        })
        .collect();

    let viewer = Cli::new(f.dir.path(), &f.pki, "viewer:vera", &f.controller.url);
    let plan = viewer.json(&["retention", "plan", "--instance", "demo-pg"]);
    let items = plan.as_array().unwrap();
    let backup = |id: i64| {
        items
            .iter()
            .find(|i| i["backup_id"] == id)
            .unwrap_or_else(|| panic!("backup {id} not planned: {plan:#}"))
    };
    assert_eq!(backup(bases[0])["keep"], false, "{plan:#}");
    assert_eq!(backup(bases[0])["reasons"][0], "no rule keeps it");
    for id in &bases[1..] {
        assert_eq!(backup(*id)["keep"], true, "{plan:#}");
    }
    assert!(
        backup(bases[2])["reasons"]
            .to_string()
            .contains("newest complete base backup")
    );
    assert_eq!(backup(dumps[0])["keep"], false, "{plan:#}");
    assert_eq!(backup(dumps[1])["keep"], true, "{plan:#}");

    // WAL before the second base backup's start goes; from there on it stays.
    let wal: Vec<(&str, bool)> = items
        .iter()
        .filter(|i| i["kind"] == "wal")
        .map(|i| (i["name"].as_str().unwrap(), i["keep"].as_bool().unwrap()))
        .collect();
    assert!(
        wal.iter().any(|w| !w.1),
        "some WAL predates base 2: {plan:#}"
    );
    let first_kept = wal.iter().position(|w| w.1).expect("WAL kept");
    assert!(
        wal[..first_kept].iter().all(|w| !w.1) && wal[first_kept..].iter().all(|w| w.1),
        "{wal:?}"
    );
    let reason = items
        .iter()
        .find(|i| i["kind"] == "wal" && i["keep"] == false)
        .unwrap()["reasons"][0]
        .to_string();
    assert!(reason.contains(&format!("({})", bases[1])), "{reason}");

    // Planning deletes nothing: every backup still restores from the catalog.
    let list = f.admin.json(&["backups", "--instance", "demo-pg"]);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|b| b["status"] == "complete"),
        "{list:#}"
    );
    // The table groups runs of WAL.
    let table = f.admin.run(&["retention", "plan"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.contains(" .. "), "{}", table.stdout);
    f.dir.keep_if_asked();
}
