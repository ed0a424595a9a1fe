//! Source preflight against a real PostgreSQL: publications that would lose changes
//! (missing operations, partitioned tables not published through their root, partitions
//! next to their root, row filters) and replica identities whose deletes cannot be matched
//! by primary key are refused by `dbmazz check` (with the fix) and by `run`'s `ensure`;
//! `ensure` creates publications that publish everything through partition roots.

mod support;

use std::process::Command;
use std::time::Duration;

use dbmazz::config::{SourceConfig, TableName};
use dbmazz::connectors::sources::postgres::replication::ReplicationConnection;
use dbmazz::connectors::sources::postgres::{client, setup};
use pg_scratch::PgCluster;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_dbmazz");

fn source_config(pg: &PgCluster, tables: &[&str]) -> SourceConfig {
    SourceConfig {
        conn: socket_conninfo(pg, "postgres"),
        slot_name: "dbmazz_slot".into(),
        publication_name: "dbmazz_pub".into(),
        tables: tables
            .iter()
            .map(|t| TableName::parse(t).unwrap())
            .collect(),
        streaming: false,
        set_replica_identity_full: false,
        status_interval: Duration::from_secs(5),
        do_snapshot: false,
    }
}

/// `dbmazz check --json` as a user runs it: (exit code, problems as (what, fix)).
fn check(pg: &PgCluster, tables: &str) -> (Option<i32>, Vec<(String, String)>) {
    let out = Command::new(BIN)
        .args(["check", "--json"])
        .env_clear()
        .env("SOURCE_URL", pg.socket_conn_string("postgres"))
        .env("TABLES", tables)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let problems = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["what"].as_str().unwrap().to_string(),
                p["fix"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (out.status.code(), problems)
}

/// `run`'s setup step in-process: the error it refuses with, if any.
async fn ensure_error(cfg: &SourceConfig) -> Option<String> {
    let c = client::connect(&cfg.conn).await.unwrap();
    let mut repl = ReplicationConnection::connect(&cfg.conn).await.unwrap();
    let r = setup::ensure(&c, &mut repl, cfg).await;
    repl.close().await;
    r.err().map(|e| e.to_string())
}

fn has(problems: &[(String, String)], what: &str, fix: &str) -> bool {
    problems
        .iter()
        .any(|(w, f)| w.contains(what) && f.contains(fix))
}

#[tokio::test]
async fn a_publication_without_delete_or_truncate_is_an_error_with_the_fix() {
    let pg = PgCluster::start().unwrap();
    pg.psql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         CREATE PUBLICATION dbmazz_pub FOR TABLE t WITH (publish = 'insert, update');",
    )
    .unwrap();
    let (code, problems) = check(&pg, "t");
    assert_eq!(code, Some(2), "{problems:?}");
    assert!(
        has(
            &problems,
            "publication dbmazz_pub does not publish delete, truncate: those changes would never reach StarRocks",
            "ALTER PUBLICATION \"dbmazz_pub\" SET (publish = 'insert, update, delete, truncate')"
        ),
        "{problems:?}"
    );
    // run refuses too (it used to only warn), and creates no slot.
    let cfg = source_config(&pg, &["t"]);
    let err = ensure_error(&cfg)
        .await
        .expect("run accepted the publication");
    assert!(err.contains("does not publish delete, truncate"), "{err}");
    assert_eq!(
        pg.psql("postgres", "SELECT count(*) FROM pg_replication_slots")
            .unwrap(),
        "0"
    );

    // The fix the report gives works.
    pg.psql(
        "postgres",
        "ALTER PUBLICATION dbmazz_pub SET (publish = 'insert, update, delete, truncate')",
    )
    .unwrap();
    let (code, problems) = check(&pg, "t");
    assert_eq!(code, Some(0), "{problems:?}");
    assert_eq!(ensure_error(&cfg).await, None);
}

#[tokio::test]
async fn ensure_creates_a_publication_with_every_operation_through_partition_roots() {
    let pg = PgCluster::start().unwrap();
    pg.psql("postgres", "CREATE TABLE t (id int PRIMARY KEY)")
        .unwrap();
    let cfg = source_config(&pg, &["t"]);
    assert_eq!(ensure_error(&cfg).await, None);
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT pubinsert, pubupdate, pubdelete, pubtruncate, pubviaroot FROM pg_publication WHERE pubname = 'dbmazz_pub'"
        )
        .unwrap(),
        "t|t|t|t|t"
    );
}

const PARTITIONED: &str = "
CREATE TABLE m (id int, k int, v text, PRIMARY KEY (id, k)) PARTITION BY RANGE (k);
CREATE TABLE m_low PARTITION OF m FOR VALUES FROM (0) TO (100);
CREATE TABLE m_high PARTITION OF m FOR VALUES FROM (100) TO (200) PARTITION BY RANGE (k);
CREATE TABLE m_high_a PARTITION OF m_high FOR VALUES FROM (100) TO (150);
CREATE TABLE m_high_b PARTITION OF m_high FOR VALUES FROM (150) TO (200);
";

#[tokio::test]
async fn partitioned_tables_need_publish_via_partition_root_and_no_partition_beside_the_root() {
    let pg = PgCluster::start().unwrap();
    pg.psql("postgres", PARTITIONED).unwrap();
    pg.psql(
        "postgres",
        "CREATE PUBLICATION dbmazz_pub FOR TABLE m WITH (publish_via_partition_root = false)",
    )
    .unwrap();
    let (code, problems) = check(&pg, "m");
    assert_eq!(code, Some(2), "{problems:?}");
    assert!(
        has(
            &problems,
            "table public.m is partitioned and publication dbmazz_pub does not publish through the partition root: its changes would arrive under each partition's name instead of public.m",
            "ALTER PUBLICATION \"dbmazz_pub\" SET (publish_via_partition_root = true)"
        ),
        "{problems:?}"
    );
    let cfg = source_config(&pg, &["m"]);
    let err = ensure_error(&cfg).await.expect("run accepted it");
    assert!(err.contains("publish_via_partition_root = true"), "{err}");

    pg.psql(
        "postgres",
        "ALTER PUBLICATION dbmazz_pub SET (publish_via_partition_root = true)",
    )
    .unwrap();
    let (code, problems) = check(&pg, "m");
    assert_eq!(code, Some(0), "{problems:?}");

    // A partition (at any depth) next to its root: one source table, one target table.
    let (code, problems) = check(&pg, "m,m_high_a");
    assert_eq!(code, Some(2), "{problems:?}");
    assert!(
        has(
            &problems,
            "table public.m_high_a is a partition of public.m, which is also in TABLES",
            "remove public.m_high_a from TABLES"
        ),
        "{problems:?}"
    );
    // Alone, a partition whose root the publication publishes arrives under the root.
    let (code, problems) = check(&pg, "m_low");
    assert_eq!(code, Some(2), "{problems:?}");
    assert!(
        has(
            &problems,
            "table public.m_low is a partition of public.m, which publication dbmazz_pub publishes through its root",
            "replicate public.m instead"
        ),
        "{problems:?}"
    );
}

#[tokio::test]
async fn a_row_filter_is_an_error() {
    let pg = PgCluster::start().unwrap();
    pg.psql(
        "postgres",
        "CREATE TABLE t (id int PRIMARY KEY, v text);
         CREATE PUBLICATION dbmazz_pub FOR TABLE t WHERE (id > 10);",
    )
    .unwrap();
    let (code, problems) = check(&pg, "t");
    assert_eq!(code, Some(2), "{problems:?}");
    assert!(
        has(
            &problems,
            "publication dbmazz_pub has a row filter on public.t (WHERE (id > 10))",
            "without the WHERE clause"
        ),
        "{problems:?}"
    );
}

#[tokio::test]
async fn replica_identity_must_let_deletes_be_matched_by_primary_key() {
    let pg = PgCluster::start().unwrap();
    pg.psql(
        "postgres",
        "CREATE TABLE by_code (id int PRIMARY KEY, code text NOT NULL, v text);
         CREATE UNIQUE INDEX by_code_code ON by_code (code);
         ALTER TABLE by_code REPLICA IDENTITY USING INDEX by_code_code;
         CREATE TABLE covering (id int PRIMARY KEY, code text NOT NULL, v text);
         CREATE UNIQUE INDEX covering_code_id ON covering (code, id);
         ALTER TABLE covering REPLICA IDENTITY USING INDEX covering_code_id;
         CREATE TABLE silent (id int PRIMARY KEY, v text);
         ALTER TABLE silent REPLICA IDENTITY NOTHING;
         CREATE TABLE keyless (v text);
         ALTER TABLE keyless REPLICA IDENTITY FULL;",
    )
    .unwrap();
    pg.psql("postgres", PARTITIONED).unwrap();
    pg.psql("postgres", "ALTER TABLE m_high_b REPLICA IDENTITY NOTHING")
        .unwrap();

    let (code, problems) = check(&pg, "covering");
    assert_eq!(
        code,
        Some(0),
        "an index covering the key is fine: {problems:?}"
    );

    let (code, problems) = check(&pg, "by_code,silent,keyless,m");
    assert_eq!(code, Some(2), "{problems:?}");
    let fix = "REPLICA IDENTITY DEFAULT (the primary key), or REPLICA IDENTITY FULL";
    for (what, fix) in [
        (
            "table public.by_code has REPLICA IDENTITY USING INDEX by_code_code (code), which lacks primary key column(s) id: a delete or key change arrives with only the index's columns",
            format!("ALTER TABLE \"public\".\"by_code\" {fix}"),
        ),
        (
            "table public.silent has REPLICA IDENTITY NOTHING",
            format!("ALTER TABLE \"public\".\"silent\" {fix}"),
        ),
        (
            "table public.keyless has no primary key",
            "ALTER TABLE \"public\".\"keyless\" ADD PRIMARY KEY".to_string(),
        ),
        (
            "table public.m_high_b (a partition of public.m) has REPLICA IDENTITY NOTHING",
            format!("ALTER TABLE \"public\".\"m_high_b\" {fix}"),
        ),
    ] {
        assert!(has(&problems, what, &fix), "missing {what:?} in {problems:?}");
    }
    assert_eq!(problems.len(), 4, "{problems:?}");

    // run refuses, naming them; with SOURCE_SET_REPLICA_IDENTITY_FULL it fixes the
    // identities itself (a missing primary key stays a problem).
    let cfg = source_config(&pg, &["by_code", "silent", "m"]);
    let err = ensure_error(&cfg).await.expect("run accepted it");
    assert!(
        err.contains("public.by_code") && err.contains("public.silent"),
        "{err}"
    );
    let mut cfg = cfg;
    cfg.set_replica_identity_full = true;
    assert_eq!(ensure_error(&cfg).await, None);
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT string_agg(relname || '=' || relreplident::text, ',' ORDER BY relname) FROM pg_class
             WHERE relname IN ('by_code', 'silent', 'm', 'm_low', 'm_high_a', 'm_high_b')"
        )
        .unwrap(),
        "by_code=f,m=f,m_high_a=f,m_high_b=f,m_low=f,silent=f"
    );
}
