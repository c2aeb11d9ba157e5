//! The chunk store in a real S3-compatible server: backups and restores round-trip through
//! it, and a server that goes away mid-backup fails that backup cleanly without harming the
//! next one.

use std::time::Duration;

use tidemark_tests::fleet::{Fleet, FleetOpts};
use tidemark_tests::process::wait_for;

fn s3_fleet(label: &str) -> Fleet {
    Fleet::build(&FleetOpts {
        label,
        s3: true,
        ..Default::default()
    })
}

#[test]
fn backups_round_trip_through_s3() {
    let f = s3_fleet("s3trip");
    f.pg.sql("postgres", "CREATE DATABASE shop");
    f.pg.sql(
        "shop",
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS body FROM generate_series(1, 50000) g",
    );
    let (b, code) = f.backup();
    assert_eq!(code, 0, "{b}");
    assert_eq!(b["status"], "complete", "{b}");
    let id = b["id"].as_i64().unwrap();
    let out = f.restore(id, &["--database", "shop", "--into-database", "shop_back"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(f.pg.fingerprint("shop"), f.pg.fingerprint("shop_back"));

    // Base backups and the WAL archive live there too.
    f.base_backup();
    let s3 = f.s3.as_ref().unwrap();
    let objects = s3.object_files();
    assert!(objects.len() >= 3, "{objects:?}");
    // The store was initialised with its identity, at the root of its prefix.
    let identity = s3.identity_files();
    assert_eq!(identity.len(), 1, "{identity:?}");
    assert!(
        identity[0].ends_with("tidemark/fleet/tidemark-store"),
        "{identity:?}"
    );
    assert!(
        objects
            .iter()
            .all(|p| p.to_string_lossy().contains("/tidemark/fleet/packs/")),
        "{objects:?}"
    );
    assert!(
        f.controller.pack_files().is_empty(),
        "nothing goes to the controller's disk"
    );
    // The store describes itself: a manifest record per backup, and the instance's.
    let records = s3.record_files();
    let named = |dir: &str| {
        records
            .iter()
            .filter(|p| {
                p.to_string_lossy()
                    .contains(&format!("/tidemark/fleet/meta/{dir}/"))
            })
            .count()
    };
    assert_eq!(named("backups"), 2, "{records:?}");
    assert!(named("instances") >= 1, "{records:?}");
    // What S3 bills is counted: one PUT per pack, each pack holding many chunks, one per
    // record, and the identity's one when the store was initialised.
    let puts = f
        .controller
        .metric("tidemark_store_requests_total{op=\"put\"}");
    assert_eq!(
        puts as usize,
        objects.len() + records.len() + identity.len(),
        "one PUT per pack and per record, and one for the identity"
    );
    let chunks = f.controller.stored_chunks().len();
    assert!(
        chunks > 2 * objects.len(),
        "{chunks} chunks in {} packs",
        objects.len()
    );
    f.dir.keep_if_asked();
}

#[test]
fn an_s3_server_stopped_mid_backup_fails_it_cleanly_and_the_next_succeeds() {
    let mut f = s3_fleet("s3down");
    f.pg.sql("postgres", "CREATE DATABASE big");
    // Text that does not compress or deduplicate away, so the upload takes a while.
    f.pg.sql(
        "big",
        "CREATE TABLE t AS SELECT g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) AS body FROM generate_series(1, 1500000) g",
    );
    let out = f
        .admin
        .run(&["backup", "--instance", "demo-pg", "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    wait_for(
        "the upload to be under way",
        Duration::from_secs(60),
        || {
            let j = f.admin.json(&["backups"]);
            let b = j.as_array()?.first()?.clone();
            (b["status"] == "running" && b["raw_bytes"].as_u64().unwrap_or(0) > 0
                || b["chunks"].as_u64().unwrap_or(0) > 0)
                .then_some(())
                .or_else(|| {
                    std::thread::sleep(Duration::from_millis(50));
                    None
                })
        },
    );
    f.s3.as_mut().unwrap().stop();
    let failed = wait_for("the backup to fail", Duration::from_secs(120), || {
        let j = f.admin.json(&["backups"]);
        let b = j.as_array()?.first()?.clone();
        (b["status"] == "failed").then_some(b)
    });
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains("could not reach the S3 server"), "{failed}");
    assert!(reason.contains("onnection refused"), "{failed}");
    assert!(
        f.admin
            .json(&["backups"])
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["status"] != "complete"),
        "nothing half-stored looks complete"
    );

    // Back again: the next backup is complete and restores.
    let dir = f.dir.path().to_path_buf();
    f.s3.as_mut().unwrap().restart(&dir);
    let (b, code) = f.backup();
    assert_eq!(code, 0, "{b}");
    assert_eq!(b["status"], "complete", "{b}");
    let out = f.restore(
        b["id"].as_i64().unwrap(),
        &["--database", "big", "--into-database", "big_back"],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(f.pg.sql("big_back", "SELECT count(*) FROM t"), "1500000");
    f.dir.keep_if_asked();
}
