//! Nothing leaks: packs nothing refers to (left by uploads that never committed) are
//! collected once older than the grace period, but never by a catalog that is behind its
//! store; and a chunk another host stored is not stored again.

use std::time::Duration;

use tidemark_tests::fleet::{Fleet, FleetOpts};
use tidemark_tests::raw_agent::{RawAgent, noise};

fn fleet(label: &str) -> Fleet {
    Fleet::build(&FleetOpts {
        label,
        controller_extra: "[retention]\norphan-grace = \"3s\"\n",
        ..Default::default()
    })
}

/// A pack a crashed upload left: a copy, under a name of its own, of a pack backup `b`
/// stored (its chunks are placed elsewhere, so nothing refers to the copy).
fn stray_pack(f: &Fleet, b: i64) -> (std::path::PathBuf, u64) {
    let chunk = f.controller.part_only_chunks(b, "db:postgres")[0].clone();
    let original = f
        .controller
        .fs_pack_path(&f.controller.chunk_place(&chunk).pack);
    let path = f.controller.fs_pack_path(&"5a".repeat(16));
    std::fs::copy(&original, &path).unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    (path, size)
}

#[test]
fn an_unreferenced_pack_is_collected_once_older_than_the_grace_period() {
    let f = fleet("orphans");
    let (b, code) = f.backup();
    assert_eq!(code, 0, "{b}");
    let held = f.controller.store_files();
    let (stray, size) = stray_pack(&f, b["id"].as_i64().unwrap());
    // Bytes that are no pack at all are kept: what does not read is never deleted.
    let junk = f.controller.fs_pack_path(&"6b".repeat(16));
    std::fs::write(&junk, noise(7, 100_000)).unwrap();

    // Younger than the grace period: it may be an upload in flight.
    let applied = f.admin.json(&["retention", "apply"]);
    assert_eq!(applied["orphans_deleted"], 0, "{applied}");
    assert!(stray.exists());

    std::thread::sleep(Duration::from_millis(3500));
    let applied = f.admin.json(&["retention", "apply"]);
    assert_eq!(applied["orphans_deleted"], 1, "{applied}");
    assert_eq!(applied["orphan_bytes_freed"], size, "{applied}");
    assert!(!stray.exists());
    let kept = applied["orphans_kept"][0].as_str().unwrap();
    assert!(kept.contains("does not read as a pack"), "{applied}");
    std::fs::remove_file(&junk).unwrap();
    assert_eq!(f.controller.store_files(), held, "everything else is kept");
    let v = f.admin.json(&["verify"]);
    assert_eq!(v["bad"].as_array().unwrap().len(), 0, "{v}");
    f.dir.keep_if_asked();
}

/// An old copy of the catalog put back (instead of rebuilt) does not know the newer
/// backups' packs: collection must not take them for garbage.
#[test]
fn a_catalog_behind_its_store_collects_nothing() {
    let mut f = fleet("behind");
    let (b, code) = f.backup();
    assert_eq!(code, 0, "{b}");
    let catalog = f.controller.data_dir.join("catalog.db");
    let old = f.dir.path().join("catalog-old.db");
    let copy = tidemark_tests::process::run(
        std::process::Command::new("sqlite3")
            .arg(&catalog)
            .arg(format!(".backup '{}'", old.display())),
    );
    assert!(copy.status.success(), "{copy:?}");
    f.pg.sql(
        "postgres",
        "CREATE TABLE newer AS SELECT generate_series(1, 50000) g",
    );
    let (newer, code) = f.backup();
    assert_eq!(code, 0, "{newer}");
    let held = f.controller.store_files();

    f.controller.daemon.kill9();
    for leftover in ["catalog.db-wal", "catalog.db-shm"] {
        let _ = std::fs::remove_file(f.controller.data_dir.join(leftover));
    }
    std::fs::copy(&old, &catalog).unwrap();
    f.restart_controller();
    std::thread::sleep(Duration::from_millis(3500));
    let applied = f.admin.json(&["retention", "apply"]);
    assert_eq!(applied["orphans_deleted"], 0, "{applied}");
    let kept = applied["orphans_kept"][0].as_str().unwrap();
    assert!(
        kept.contains("the catalog is behind its store"),
        "{applied}"
    );
    assert!(kept.contains("rebuild-catalog --force"), "{applied}");
    assert_eq!(f.controller.store_files(), held, "nothing was deleted");
    f.dir.keep_if_asked();
}

#[test]
fn a_chunk_another_host_stored_is_not_stored_again_and_the_sender_then_owns_it() {
    let f = fleet("crosshost");
    let shared = noise(1, 300_000);
    let own = noise(2, 300_000);
    let mut db1 = RawAgent::connect(&f);
    db1.backup(&[(&shared, true)]);
    let packs = f.controller.pack_files().len();
    let hex = tidemark_core::ids::ChunkId::of(&shared).to_hex();
    let first_place = f.controller.chunk_place(&hex).pack;

    // db2 sends the same chunk's bytes, and one of its own: only its own is stored.
    let mut db2 = RawAgent::connect_as(&f, "db2", "db2-pg");
    let id = db2.begin();
    let stored = db2
        .upload(id, &[(&shared, true), (&own, true)], || {})
        .unwrap();
    // Reported as new all the same: what another host holds is not for db2 to learn.
    assert_eq!(stored.new_chunks, 2, "{stored:?}");
    db2.finish(id).unwrap();
    assert_eq!(f.controller.pack_files().len(), packs + 1);
    assert_eq!(
        f.controller.chunk_place(&hex).pack,
        first_place,
        "still db1's copy"
    );
    let own_hex = tidemark_core::ids::ChunkId::of(&own).to_hex();
    let new_pack = f.controller.chunk_place(&own_hex).pack;
    assert_eq!(
        f.controller.pack_chunks(&new_pack),
        vec![own_hex],
        "the new pack holds only db2's own chunk"
    );

    // Having sent the bytes, db2 may now refer to the chunk.
    let again = db2.begin();
    db2.upload(again, &[(&shared, false)], || {}).unwrap();
    db2.finish(again).unwrap();
    assert_eq!(f.controller.pack_files().len(), packs + 1);
    let v = f.admin.json(&["verify"]);
    assert_eq!(v["bad"].as_array().unwrap().len(), 0, "{v}");
    f.dir.keep_if_asked();
}
