//! `tidemark verify` reads the store back: a flipped bit and a deleted object are each
//! found, the backups that used them are marked corrupt with the reason, and restores
//! refuse them. On the filesystem store, on S3, and on a store encrypted at rest.

use tidemark_tests::fleet::{Fleet, FleetOpts, flip_bit};

fn scenario(label: &str, s3: bool, encrypted: bool) {
    let f = Fleet::build(&FleetOpts {
        label,
        s3,
        controller_extra: if encrypted {
            "[encryption]\nenabled = true\n"
        } else {
            ""
        },
        ..Default::default()
    });
    f.pg.sql("postgres", "CREATE DATABASE shop");
    f.pg.sql(
        "shop",
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS body FROM generate_series(1, 30000) g",
    );
    let (logical, code) = f.backup();
    assert_eq!(code, 0, "{logical}");
    let base = f.base_backup();
    let (l, b) = (
        logical["id"].as_i64().unwrap(),
        base["id"].as_i64().unwrap(),
    );

    let v = f.admin.json(&["verify"]);
    assert_eq!(v["bad"].as_array().unwrap().len(), 0, "{v}");
    assert!(v["chunks_checked"].as_u64().unwrap() > 5, "{v}");
    assert_eq!(v["chunks_checked"], v["chunks_total"], "{v}");

    // One bit of a chunk only the logical dump uses; the pack of a chunk only the base
    // backup uses (every chunk in that pack is lost with it).
    let flipped = f.controller.part_only_chunks(l, "db:shop")[0].clone();
    let place = f.controller.chunk_place(&flipped);
    flip_bit(&f.pack_path(&place.pack), place.offset + place.len / 2);
    let deleted = f.controller.part_only_chunks(b, "base")[0].clone();
    let lost_pack = f.controller.chunk_place(&deleted).pack;
    let lost = f.controller.pack_chunks(&lost_pack);
    std::fs::remove_file(f.pack_path(&lost_pack)).unwrap();

    let out = f.admin.run(&["verify", "--output", "json"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let v = out.json();
    let bad = v["bad"].as_array().unwrap();
    assert_eq!(bad.len(), 1 + lost.len(), "{v}");
    let find = |hex: &str| {
        bad.iter()
            .find(|x| x["chunk"] == hex)
            .unwrap_or_else(|| panic!("{hex} not reported: {v}"))
    };
    assert_eq!(find(&flipped)["problem"], "corrupt", "{v}");
    if encrypted {
        // Found by the AES-GCM tag, before anything is decompressed.
        let detail = find(&flipped)["detail"].as_str().unwrap();
        assert!(detail.contains("fails authentication"), "{v}");
    }
    assert_eq!(find(&flipped)["backups"], serde_json::json!([l]), "{v}");
    assert_eq!(find(&deleted)["problem"], "missing", "{v}");
    assert_eq!(find(&deleted)["backups"], serde_json::json!([b]), "{v}");
    for hex in &lost {
        assert_eq!(find(hex)["problem"], "missing", "{v}");
    }
    assert_eq!(v["backups_marked"], 2, "{v}");

    // Both backups read as corrupt, with the reason; restores refuse them.
    let list = f.admin.json(&["backups", "--instance", "demo-pg"]);
    for id in [l, b] {
        let row = list
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == id)
            .unwrap();
        assert_eq!(row["status"], "corrupt", "{row}");
        assert!(row["reason"].as_str().unwrap().contains("chunk "), "{row}");
    }
    let out = f.restore(l, &["--database", "shop", "--into-database", "shop_back"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("corrupt"), "{}", out.stderr);
    let out = f.admin.run(&[
        "restore",
        "--instance",
        "demo-pg",
        "--host",
        "db1",
        "--pgdata",
        "/tmp/never-restored",
        "--latest",
    ]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("cannot be restored"), "{}", out.stderr);
    assert_eq!(
        f.controller
            .metric("tidemark_corrupt_backups{instance=\"demo-pg\"}"),
        2.0
    );
    let st = f.admin.json(&["status"]);
    let alerts = st[0]["alerts"].to_string();
    assert!(
        alerts.contains("corrupt") && alerts.contains(&flipped),
        "{st}"
    );

    // A later sampled run still reports what was lost.
    let out = f
        .admin
        .run(&["verify", "--sample", "1", "--output", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let v = out.json();
    let bad = v["bad"].as_array().unwrap();
    assert_eq!(bad.len(), 1 + lost.len(), "{v}");
    assert!(bad.iter().all(|x| x["problem"] == "lost earlier"), "{v}");
    assert_eq!(v["backups_marked"], 0, "{v}");
    f.dir.keep_if_asked();
}

#[test]
fn verify_finds_a_flipped_bit_and_a_deleted_chunk_on_the_filesystem_store() {
    scenario("verifyfs", false, false);
}

#[test]
fn verify_finds_a_flipped_bit_and_a_deleted_object_on_s3() {
    scenario("verifys3", true, false);
}

/// On the filesystem store, which keeps no checksum of its own (S3 would catch the flipped
/// bit by its object checksum first): the AES-GCM tag does.
#[test]
fn verify_finds_a_flipped_bit_and_a_deleted_chunk_in_an_encrypted_store() {
    scenario("verifyenc", false, true);
}

#[test]
fn verification_runs_on_a_schedule_and_a_damaged_store_fails_it() {
    let f = Fleet::build(&FleetOpts {
        label: "verifysched",
        controller_extra: "[schedule]\ntick = \"1s\"\n[verify]\nschedule = \"*/2 * * * * *\"\nsample = 100\n",
        ..Default::default()
    });
    f.pg.sql("postgres", "CREATE DATABASE shop");
    f.pg.sql(
        "shop",
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS body FROM generate_series(1, 20000) g",
    );
    let (logical, code) = f.backup();
    assert_eq!(code, 0, "{logical}");
    let runs = |state: &str| -> Vec<serde_json::Value> {
        f.admin.json(&["schedule"])["runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["kind"] == "verify" && r["state"] == state)
            .cloned()
            .collect()
    };
    let ok = tidemark_tests::process::wait_for(
        "a scheduled verification",
        std::time::Duration::from_secs(60),
        || runs("succeeded").into_iter().next(),
    );
    assert_eq!(ok["instance"], "*", "{ok}");
    assert!(
        ok["message"].as_str().unwrap().contains("all intact"),
        "{ok}"
    );

    let l = logical["id"].as_i64().unwrap();
    let hex = f.controller.part_only_chunks(l, "db:shop")[0].clone();
    let place = f.controller.chunk_place(&hex);
    flip_bit(&f.pack_path(&place.pack), place.offset + place.len / 2);
    let bad = tidemark_tests::process::wait_for(
        "a verification to find the damage",
        std::time::Duration::from_secs(60),
        || runs("failed").into_iter().next(),
    );
    assert!(
        bad["message"]
            .as_str()
            .unwrap()
            .contains("1 missing or corrupt"),
        "{bad}"
    );
    assert_eq!(bad["attempt"], 1, "a finding is not retried: {bad}");
    let b = f.admin.json(&["backups", "--instance", "demo-pg"]);
    assert_eq!(b[0]["status"], "corrupt", "{b}");
    f.dir.keep_if_asked();
}

#[test]
fn a_scheduled_verification_stuck_on_a_hung_store_times_out_and_is_stopped() {
    let f = Fleet::build(&FleetOpts {
        label: "verifyhang",
        s3: true,
        controller_extra: "[schedule]\ntick = \"1s\"\nretries = 0\n[verify]\nschedule = \"*/2 * * * * *\"\nsample = 100\ntimeout = \"3s\"\n",
        ..Default::default()
    });
    f.pg.sql("postgres", "CREATE DATABASE shop");
    let (logical, code) = f.backup();
    assert_eq!(code, 0, "{logical}");
    // The S3 server stops answering, without closing connections: every read hangs until
    // the store's own per-try timeout, a minute away.
    let pid = f.s3.as_ref().unwrap().daemon.pid().to_string();
    let signal = |sig: &str| {
        assert!(
            std::process::Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        )
    };
    signal("-STOP");
    let failed = tidemark_tests::process::wait_for(
        "a verification to time out",
        std::time::Duration::from_secs(60),
        || {
            f.admin.json(&["schedule"])["runs"]
                .as_array()?
                .iter()
                .find(|r| r["kind"] == "verify" && r["state"] == "failed")
                .cloned()
        },
    );
    signal("-CONT");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("timed out after 3s"),
        "{failed}"
    );
    // A store that hung is not a damaged one: nothing was marked corrupt. Once it answers
    // again, the next scheduled run goes through.
    let b = f.admin.json(&["backups", "--instance", "demo-pg"]);
    assert_eq!(b[0]["status"], "complete", "{b}");
    let ok = tidemark_tests::process::wait_for(
        "a verification after the store came back",
        std::time::Duration::from_secs(60),
        || {
            f.admin.json(&["schedule"])["runs"]
                .as_array()?
                .iter()
                .find(|r| r["kind"] == "verify" && r["state"] == "succeeded")
                .cloned()
        },
    );
    assert!(
        ok["message"].as_str().unwrap().contains("all intact"),
        "{ok}"
    );
    f.dir.keep_if_asked();
}
