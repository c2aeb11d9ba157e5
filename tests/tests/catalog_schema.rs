//! The catalog's schema is written twice: SQLite reaches it through its migrations, a new
//! PostgreSQL catalog is created from one file. Both must end as the same schema: the same
//! tables, columns, column types (by family: integer, text, bytes, real) and indexes. Each is
//! made by the real controller, then read back from the database itself.

use std::collections::BTreeSet;

use sqlx::Row;
use tidemark_tests::TestDir;
use tidemark_tests::fleet::{Controller, Pki};
use tidemark_tests::pg::PgCluster;

/// One fact of a schema, in a form both backends can be compared in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Fact {
    Table(String),
    /// table, column, type family, NOT NULL
    Column(String, String, &'static str, bool),
    /// table, columns in order, unique
    Index(String, Vec<String>, bool),
}

/// SQLite's type affinity rules, and PostgreSQL's type names, reduced to a family.
fn family(declared: &str) -> &'static str {
    let t = declared.to_ascii_lowercase();
    if t.contains("int") || t == "serial" || t == "bigserial" {
        "integer"
    } else if t.contains("char") || t.contains("text") || t.contains("clob") {
        "text"
    } else if t.contains("blob") || t == "bytea" || t.is_empty() {
        "bytes"
    } else if t.contains("real") || t.contains("floa") || t.contains("doub") {
        "real"
    } else if t.contains("bool") {
        "boolean"
    } else {
        "numeric"
    }
}

async fn sqlite_schema(path: &std::path::Path) -> BTreeSet<Fact> {
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true);
    let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
    let mut facts = BTreeSet::new();
    let tables: Vec<String> = sqlx::query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect();
    for t in &tables {
        facts.insert(Fact::Table(t.clone()));
        let cols = sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA table_info(\"{t}\")")))
            .fetch_all(&pool)
            .await
            .unwrap();
        for c in &cols {
            let pk: i64 = c.get("pk");
            // SQLite lets a primary key column hold NULL unless it says NOT NULL; PostgreSQL
            // never does: a key column is NOT NULL on both.
            let notnull = c.get::<i64, _>("notnull") == 1 || pk > 0;
            facts.insert(Fact::Column(
                t.clone(),
                c.get("name"),
                family(c.get::<&str, _>("type")),
                notnull,
            ));
        }
        // Every index, the primary key's and unique constraints' included: columns in order.
        let indexes = sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA index_list(\"{t}\")")))
            .fetch_all(&pool)
            .await
            .unwrap();
        for i in &indexes {
            let name: String = i.get("name");
            let unique = i.get::<i64, _>("unique") == 1;
            let cols: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
                "PRAGMA index_info(\"{name}\")"
            )))
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|c| c.get::<String, _>("name"))
            .collect();
            facts.insert(Fact::Index(t.clone(), cols, unique));
        }
        // An INTEGER PRIMARY KEY is the rowid: SQLite lists no index for it.
        let rowid_key: Vec<String> = cols
            .iter()
            .filter(|c| c.get::<i64, _>("pk") > 0)
            .map(|c| c.get::<String, _>("name"))
            .collect();
        let covered = facts
            .iter()
            .any(|f| matches!(f, Fact::Index(tt, c, true) if tt == t && *c == rowid_key));
        if !rowid_key.is_empty() && !covered {
            facts.insert(Fact::Index(t.clone(), rowid_key, true));
        }
    }
    pool.close().await;
    facts
}

async fn postgres_schema(url: &str) -> BTreeSet<Fact> {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let mut facts = BTreeSet::new();
    for r in sqlx::query(
        "SELECT c.table_name::text, c.column_name::text, c.data_type::text, c.is_nullable::text
         FROM information_schema.columns c JOIN information_schema.tables t
           ON t.table_schema = c.table_schema AND t.table_name = c.table_name
         WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    {
        let table: String = r.get(0);
        facts.insert(Fact::Table(table.clone()));
        facts.insert(Fact::Column(
            table,
            r.get(1),
            family(r.get::<&str, _>(2)),
            r.get::<&str, _>(3) == "NO",
        ));
    }
    // Each index with its key columns in order.
    for r in sqlx::query(
        "SELECT t.relname::text, ix.indisunique,
                array_agg(a.attname::text ORDER BY k.n) AS cols
         FROM pg_index ix
         JOIN pg_class t ON t.oid = ix.indrelid
         JOIN pg_namespace ns ON ns.oid = t.relnamespace
         CROSS JOIN LATERAL unnest(ix.indkey) WITH ORDINALITY AS k(attnum, n)
         JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
         WHERE ns.nspname = 'public'
         GROUP BY ix.indexrelid, t.relname, ix.indisunique",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    {
        let table: String = r.get(0);
        facts.insert(Fact::Index(table, r.get("cols"), r.get(1)));
    }
    pool.close().await;
    facts
}

#[test]
fn both_catalog_backends_end_with_the_same_schema() {
    let dir = TestDir::new("catalog-schema");
    let pki = Pki::init(&dir.path().join("pki"));
    let server = PgCluster::start_with(dir.path(), "catalog", "");
    // Each controller makes its catalog as it starts, and listens only once it is made.
    let sqlite_dir = dir.path().join("on-sqlite");
    std::fs::create_dir_all(&sqlite_dir).unwrap();
    let on_sqlite = Controller::start(&sqlite_dir, &pki);
    let pg_dir = dir.path().join("on-postgres");
    std::fs::create_dir_all(&pg_dir).unwrap();
    let url = server.url("postgres");
    let on_postgres = Controller::start_configured(
        &pg_dir,
        &pki,
        "127.0.0.1:0",
        &format!("[catalog]\nurl = \"{url}\"\n"),
    );
    let sqlite_file = on_sqlite.data_dir.join("catalog.db");
    drop(on_sqlite);
    drop(on_postgres);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let lite = rt.block_on(sqlite_schema(&sqlite_file));
    let pg = rt.block_on(postgres_schema(&url));
    // Not trivially equal: both hold the catalog's main tables.
    for t in ["backups", "chunks", "instances", "wal_files", "jobs"] {
        assert!(
            lite.contains(&Fact::Table(t.into())),
            "SQLite catalog has no {t}: {lite:?}"
        );
    }
    let only_lite: Vec<_> = lite.difference(&pg).collect();
    let only_pg: Vec<_> = pg.difference(&lite).collect();
    assert!(
        only_lite.is_empty() && only_pg.is_empty(),
        "the two catalog schemas differ\nonly on SQLite:\n{}\nonly on PostgreSQL:\n{}",
        only_lite
            .iter()
            .map(|f| format!("  {f:?}"))
            .collect::<Vec<_>>()
            .join("\n"),
        only_pg
            .iter()
            .map(|f| format!("  {f:?}"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
}

#[test]
fn type_families() {
    assert_eq!(family("INTEGER"), "integer");
    assert_eq!(family("bigint"), "integer");
    assert_eq!(family("BLOB"), "bytes");
    assert_eq!(family("bytea"), "bytes");
    assert_eq!(family("TEXT"), "text");
    assert_eq!(family("character varying"), "text");
    assert_eq!(family("double precision"), "real");
}
