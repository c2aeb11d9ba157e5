//! PostgreSQL logical backups end to end: real clusters, real binaries.

use tidemark_tests::fleet::Fleet;

fn parts(backup: &serde_json::Value) -> Vec<String> {
    backup["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

fn load_shop(f: &Fleet) {
    f.pg.sql("postgres", "CREATE ROLE shop_owner LOGIN");
    f.pg.sql("postgres", "CREATE DATABASE shop OWNER shop_owner");
    f.pg.sql(
        "shop",
        "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, photo bytea);
         INSERT INTO customers SELECT g, 'Kunde ' || g || ' Ærø ☃', decode(md5(g::text), 'hex') FROM generate_series(1, 5000) g;
         CREATE TABLE orders (id bigserial PRIMARY KEY, customer int REFERENCES customers, total numeric(12,2), placed timestamptz);
         INSERT INTO orders (customer, total, placed) SELECT 1 + g % 5000, g * 1.25, '2026-01-01'::timestamptz + g * interval '1 minute' FROM generate_series(1, 20000) g;
         CREATE VIEW big_spenders AS SELECT customer, sum(total) FROM orders GROUP BY customer HAVING sum(total) > 1000;
         ALTER TABLE customers OWNER TO shop_owner;",
    );
}

#[test]
fn backup_and_restore_round_trip_with_equal_data() {
    let f = Fleet::start("roundtrip");
    load_shop(&f);
    let (b, code) = f.backup();
    assert_eq!(code, 0, "backup failed: {b}");
    assert_eq!(b["status"], "complete", "{b}");
    assert_eq!(parts(&b), vec!["globals", "db:postgres", "db:shop"]);
    for p in b["parts"].as_array().unwrap() {
        assert_eq!(p["status"], "stored", "{p}");
        assert_eq!(p["check"], "ok", "{p}");
        assert_eq!(p["stream_sha256"].as_str().unwrap().len(), 64);
    }
    let shop = &b["parts"][2];
    assert_eq!(shop["format"], "pg_dump-custom");
    assert!(
        shop["check_detail"]
            .as_str()
            .unwrap()
            .contains("TOC entries"),
        "{shop}"
    );
    let id = b["id"].as_i64().unwrap();

    // Piped restore into a new database.
    let out = f.restore(id, &["--into-database", "shop_copy", "--database", "shop"]);
    assert_eq!(out.code, 0, "restore failed: {}{}", out.stdout, out.stderr);
    let original = f.pg.fingerprint("shop");
    assert_eq!(original.len(), 2);
    assert_eq!(f.pg.fingerprint("shop_copy"), original);
    assert_eq!(
        f.pg.sql("shop_copy", "SELECT count(*) FROM big_spenders"),
        f.pg.sql("shop", "SELECT count(*) FROM big_spenders")
    );
    assert_eq!(
        f.pg.sql(
            "shop_copy",
            "SELECT tableowner FROM pg_tables WHERE tablename = 'customers'"
        ),
        "shop_owner"
    );

    // Parallel restore spools to a file first.
    let out = f.restore(
        id,
        &[
            "--into-database",
            "shop_par",
            "--database",
            "shop",
            "--jobs",
            "2",
        ],
    );
    assert_eq!(
        out.code, 0,
        "parallel restore failed: {}{}",
        out.stdout, out.stderr
    );
    assert_eq!(f.pg.fingerprint("shop_par"), original);
    let spooled: Vec<_> = std::fs::read_dir(f.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("tidemark-restore-")
        })
        .collect();
    assert!(spooled.is_empty(), "spool files left behind: {spooled:?}");

    // Several databases: the source must be named.
    let out = f.restore(id, &["--into-database", "x"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--database"), "{}", out.stderr);

    // An existing non-empty database is refused without --clean, and replaced with it.
    f.pg.sql(
        "shop_copy",
        "INSERT INTO orders (customer, total) VALUES (1, 99999)",
    );
    let out = f.restore(id, &["--into-database", "shop_copy", "--database", "shop"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("not empty") && out.stderr.contains("--clean"),
        "{}",
        out.stderr
    );
    assert_ne!(
        f.pg.fingerprint("shop_copy"),
        original,
        "a refused restore must not touch the database"
    );
    let out = f.restore(
        id,
        &[
            "--into-database",
            "shop_copy",
            "--database",
            "shop",
            "--clean",
        ],
    );
    assert_eq!(
        out.code, 0,
        "clean restore failed: {}{}",
        out.stdout, out.stderr
    );
    assert_eq!(f.pg.fingerprint("shop_copy"), original);

    // The listing shows it.
    let list = f.admin.json(&["backups", "--instance", "demo-pg"]);
    assert_eq!(list[0]["id"], id);
    assert_eq!(list[0]["status"], "complete");
    let table = f.admin.run(&["backups"]);
    assert!(table.stdout.starts_with("ID"), "{}", table.stdout);
    f.dir.keep_if_asked();
}

#[test]
fn second_backup_of_unchanged_data_stores_little_and_agent_memory_stays_bounded() {
    let f = Fleet::start_with("dedup", "databases = [\"bulk\"]");
    f.pg.sql("postgres", "CREATE DATABASE bulk");
    // ~100 MiB of poorly compressible rows: far larger than any buffer the agent may hold.
    f.pg.sql(
        "bulk",
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) || md5((g * 31)::text) AS v
         FROM generate_series(1, 800000) g",
    );
    let (first, code) = f.backup();
    assert_eq!(code, 0, "{first}");
    let (second, code) = f.backup();
    assert_eq!(code, 0, "{second}");
    let raw = second["raw_bytes"].as_u64().unwrap();
    assert!(raw > 90 << 20, "dump is only {raw} bytes");
    let (new1, new2) = (
        first["new_bytes"].as_u64().unwrap(),
        second["new_bytes"].as_u64().unwrap(),
    );
    eprintln!("dedup: raw {raw}, first stored {new1} new bytes, second {new2}");
    assert!(new1 > 0);
    assert!(
        (new2 as f64) < 0.05 * new1 as f64,
        "second backup stored {new2} new bytes, first stored {new1}: dedup is not working"
    );
    // Both are restorable to the same data.
    let id = second["id"].as_i64().unwrap();
    let out = f.restore(id, &["--into-database", "bulk_copy"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(f.pg.fingerprint("bulk_copy"), f.pg.fingerprint("bulk"));

    let peak_kib = f.agent.daemon.peak_rss_kib();
    eprintln!("agent peak RSS {peak_kib} KiB");
    assert!(
        peak_kib < 96 * 1024,
        "agent peaked at {peak_kib} KiB while moving {raw} bytes: memory is not bounded"
    );
}

#[test]
fn repetitive_data_that_repeats_chunks_back_to_back_backs_up_and_restores() {
    let f = Fleet::start_with("repeats", "databases = [\"blobs\"]");
    f.pg.sql("postgres", "CREATE DATABASE blobs");
    // Constant bytes give FastCDC no cut points: a run of identical maximum-size chunks,
    // each referenced while the first copy may still be on its way to disk.
    f.pg.sql(
        "blobs",
        "CREATE TABLE b (id int, v text);
         INSERT INTO b SELECT g, repeat('z', 40000000) FROM generate_series(1, 2) g",
    );
    let (b, code) = f.backup();
    assert_eq!(code, 0, "{b}");
    let part = b["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "db:blobs")
        .unwrap()
        .clone();
    let chunks = part["chunks"].as_u64().unwrap();
    let new_chunks = part["new_chunks"].as_u64().unwrap();
    assert!(
        chunks >= 6 && new_chunks < chunks / 2,
        "expected repeated chunks: {part}"
    );
    let out = f.restore(
        b["id"].as_i64().unwrap(),
        &["--into-database", "blobs_copy"],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(f.pg.fingerprint("blobs_copy"), f.pg.fingerprint("blobs"));
}
