//! Encryption at rest: with `[encryption] enabled = true` no stored object reveals the
//! database's data, a key rotation keeps every backup restorable even after the retired key's
//! file is gone, and a store cannot be switched between plaintext and encrypted by accident.

use std::os::unix::fs::PermissionsExt;

use tidemark_tests::fleet::{Fleet, FleetOpts};

const MARKER: &str = "canary-7f3a-plaintext-must-not-be-stored";

fn encrypted_fleet(label: &str) -> Fleet {
    Fleet::build(&FleetOpts {
        label,
        s3: true,
        controller_extra: "[encryption]\nenabled = true\n",
        ..Default::default()
    })
}

fn logical_backup(f: &Fleet) -> i64 {
    let (b, code) = f.backup();
    assert_eq!(code, 0, "{b}");
    assert_eq!(b["status"], "complete", "{b}");
    b["id"].as_i64().unwrap()
}

#[test]
fn an_encrypted_store_holds_no_plaintext_and_restores_across_a_key_rotation() {
    let mut f = encrypted_fleet("encrypt");
    f.pg.sql("postgres", "CREATE DATABASE shop");
    f.pg.sql(
        "shop",
        &format!(
            "CREATE TABLE t AS SELECT g AS id, '{MARKER}' || g AS body FROM generate_series(1, 20000) g"
        ),
    );
    let first = logical_backup(&f);
    let before = f.pg.fingerprint("shop");
    f.base_backup();

    let keys = f.admin.json(&["keys"]);
    assert_eq!(keys["encrypted"], true, "{keys}");
    assert_eq!(keys["keks"].as_array().unwrap().len(), 1, "{keys}");
    let kek1 = std::path::PathBuf::from(keys["keks"][0]["file"].as_str().unwrap());
    assert_eq!(
        std::fs::metadata(&kek1).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let rotated = f.admin.json(&["keys", "rotate"]);
    assert_eq!(rotated["rotated_to"], 2, "{rotated}");
    assert_eq!(rotated["rewrapped"], 1, "{rotated}");
    assert_eq!(rotated["active_data_key"], 2, "{rotated}");
    assert!(
        rotated["keks"][0]["retired_at"].as_i64().unwrap() > 0,
        "{rotated}"
    );
    assert_eq!(rotated["keks"][0]["data_keys"], 0, "{rotated}");
    assert_eq!(rotated["keks"][1]["data_keys"], 2, "{rotated}");

    f.pg.sql(
        "shop",
        &format!("INSERT INTO t SELECT g, '{MARKER}' || g FROM generate_series(20001, 30000) g"),
    );
    let second = logical_backup(&f);
    let after = f.pg.fingerprint("shop");

    // The retired key is not needed by anything: without its file, everything restores.
    std::fs::remove_file(&kek1).unwrap();
    f.restart_controller();
    for (id, db, want) in [
        (first, "shop_first", &before),
        (second, "shop_second", &after),
    ] {
        let out = f.restore(id, &["--database", "shop", "--into-database", db]);
        assert_eq!(out.code, 0, "backup {id}: {}{}", out.stdout, out.stderr);
        assert_eq!(&f.pg.fingerprint(db), want, "backup {id}");
    }

    // Dumps, the base backup and archived WAL all hold the marker rows; no object shows them.
    let s3 = f.s3.as_ref().unwrap();
    let objects = s3.object_files();
    assert!(objects.len() > 10, "{objects:?}");
    assert_eq!(
        s3.objects_revealing(MARKER.as_bytes()),
        Vec::<std::path::PathBuf>::new()
    );
    for o in &objects {
        let bytes = std::fs::read(o).unwrap();
        assert_eq!(
            &bytes[..4],
            b"TMX1",
            "{} does not start sealed",
            o.display()
        );
        assert!(
            tidemark_tests::s3::readable_chunks(&bytes).is_empty(),
            "{}: its index is readable",
            o.display()
        );
    }
    f.dir.keep_if_asked();
}

#[test]
fn a_store_cannot_switch_between_plaintext_and_encrypted() {
    let mut f = Fleet::build(&FleetOpts {
        label: "encswitch",
        s3: true,
        ..Default::default()
    });
    f.pg.sql("postgres", "CREATE DATABASE shop");
    f.pg.sql(
        "shop",
        &format!("CREATE TABLE t AS SELECT '{MARKER}' AS body"),
    );
    logical_backup(&f);
    // The control for the test above: an unencrypted store does show the marker.
    let s3 = f.s3.as_ref().unwrap();
    assert!(!s3.objects_revealing(MARKER.as_bytes()).is_empty());
    assert!(
        s3.object_files().iter().all(|o| {
            !tidemark_tests::s3::readable_chunks(&std::fs::read(o).unwrap()).is_empty()
        })
    );

    let config = f.dir.path().join("controller.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\n[encryption]\nenabled = true\n")).unwrap();
    f.controller.daemon.kill9();
    let out = std::process::Command::new(tidemark_tests::bin("tidemark-controller"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("already holds") && err.contains("unencrypted chunks"),
        "{err}"
    );
    // Nothing was created that would make the store look encrypted.
    assert!(
        !f.controller
            .data_dir
            .join("keys")
            .join("kek-1.key")
            .exists()
    );
    std::fs::write(&config, text).unwrap();
    f.restart_controller();
    logical_backup(&f);
    f.dir.keep_if_asked();
}
