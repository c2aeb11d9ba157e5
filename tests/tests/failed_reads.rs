//! A read that fails now never erases a record. A pack that cannot be found (a file moved
//! away, an S3 replica that lags) makes verify mark what uses it corrupt, restores refuse it,
//! and retention keeps it; once the pack is back, the next verify reads it intact, the
//! backup is complete again and restores.

use tidemark_tests::fleet::{Fleet, FleetOpts};

#[test]
fn a_missing_pack_is_reported_and_kept_and_its_backup_heals_when_it_is_back() {
    let f = Fleet::build(&FleetOpts {
        label: "failedread",
        controller_extra: "[[instance]]\nname = \"demo-pg\"\n[instance.retention]\nmin-base = 1\n",
        ..Default::default()
    });
    f.pg.sql("postgres", "CREATE DATABASE shop");
    f.pg.sql(
        "shop",
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS body FROM generate_series(1, 50000) g",
    );
    let (b, code) = f.backup();
    assert_eq!(code, 0, "{b}");
    let id = b["id"].as_i64().unwrap();

    // A pack of it cannot be read now.
    let packs = f.controller.pack_files();
    assert!(!packs.is_empty());
    let away = f.dir.path().join("pack-away");
    std::fs::rename(&packs[0], &away).unwrap();
    let out = f.admin.run(&["verify", "--output", "json"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let v = out.json();
    let bad = v["bad"].as_array().unwrap();
    assert!(!bad.is_empty(), "{v}");
    // Each bad chunk is named with the pack that holds it: the one moved away.
    let moved = packs[0].file_name().unwrap().to_str().unwrap();
    assert!(bad.iter().all(|b| b["pack"] == moved), "{v}");
    let detail = f.admin.json(&["backups", "show", &id.to_string()]);
    assert!(detail.to_string().contains("corrupt"), "{detail}");
    let refused = f.restore(id, &["--database", "shop", "--into-database", "shop_early"]);
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("is corrupt, not complete"),
        "{}",
        refused.stderr
    );

    // Retention keeps it: a read failed, which may pass.
    let plan = f
        .admin
        .json(&["retention", "plan", "--instance", "demo-pg"]);
    let item = plan
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["backup_id"] == id)
        .unwrap_or_else(|| panic!("backup {id} not planned: {plan:#}"));
    assert_eq!(item["keep"], true, "{plan:#}");
    assert!(
        item["reasons"][0]
            .as_str()
            .unwrap()
            .contains("found damaged by verify"),
        "{plan:#}"
    );

    // The pack is back: the next run reads it intact and the backup is complete again,
    // because nothing of it was forgotten.
    std::fs::rename(&away, &packs[0]).unwrap();
    let v = f.admin.json(&["verify"]);
    assert_eq!(v["bad"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(v["backups_healed"][0], id, "{v}");
    let detail = f.admin.json(&["backups", "show", &id.to_string()]);
    assert_eq!(detail["status"], "complete", "{detail}");
    let out = f.restore(id, &["--database", "shop", "--into-database", "shop_back"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(f.pg.fingerprint("shop"), f.pg.fingerprint("shop_back"));
}

/// Deleting a damaged backup is an operator's decision, made with an audited command.
#[test]
fn only_an_admin_deletes_a_corrupt_backup_with_a_reason_and_collection_then_frees_it() {
    let f = Fleet::build(&FleetOpts {
        label: "deletebackup",
        controller_extra: "[[instance]]\nname = \"demo-pg\"\n[instance.retention]\nmin-base = 1\n",
        ..Default::default()
    });
    let (b, code) = f.backup();
    assert_eq!(code, 0, "{b}");
    let id = b["id"].as_i64().unwrap().to_string();
    let packs = f.controller.pack_files();
    std::fs::remove_file(&packs[0]).unwrap();
    assert_eq!(f.admin.run(&["verify"]).code, 1);

    // Retention keeps it, however often it runs.
    let applied = f.admin.json(&["retention", "apply"]);
    assert_eq!(applied["objects_deleted"], 0, "{applied}");
    assert_eq!(f.controller.pack_files().len(), packs.len() - 1);

    let viewer =
        tidemark_tests::fleet::Cli::new(f.dir.path(), &f.pki, "viewer:vera", &f.controller.url);
    let refused = viewer.run(&["backups", "delete", &id, "--reason", "damaged"]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("admin"), "{}", refused.stderr);
    let no_reason = f.admin.run(&["backups", "delete", &id, "--reason", " "]);
    assert_eq!(no_reason.code, 2, "{}", no_reason.stderr);
    assert!(
        no_reason.stderr.contains("--reason"),
        "{}",
        no_reason.stderr
    );

    let out = f.admin.run(&[
        "backups",
        "delete",
        &id,
        "--reason",
        "pack lost with disk 3",
        "--output",
        "json",
    ]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(out.json()["status"], "expired", "{}", out.stdout);
    assert!(
        out.stdout.contains("pack lost with disk 3"),
        "{}",
        out.stdout
    );
    let log = f.admin.json(&["audit", "--limit", "20"]);
    let audited = log.as_array().unwrap().iter().any(|e| {
        e["who"] == "admin:ops" && e["action"] == "delete backups" && e["outcome"] == "ok"
    });
    assert!(audited, "{log:#}");
    // The next collection frees what only it used.
    let applied = f.admin.json(&["retention", "apply"]);
    assert!(
        applied["objects_deleted"].as_u64().unwrap() > 0,
        "{applied}"
    );
    assert!(f.controller.pack_files().is_empty());
}
