//! The StarRocks `LoadSink` against a real PostgreSQL (catalog) and the StarRocks double:
//! construction needs no StarRocks, start-up checks classify their failures, `prepare`
//! gives the catalog's key positions and survives a PostgreSQL restart, and a `Success`
//! with missing rows reaches the loader as a typed rejection.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use dbmazz::config::Config;
use dbmazz::connectors::sinks::starrocks::StarRocksLoadSink;
use dbmazz::core::retry::RetryPolicy;
use dbmazz::core::{Column, Relation, ReplicaIdentity, Value};
use dbmazz::pipeline::loader::{LoadBatch, LoadResult, LoadSink, RetryNote, SinkFailureKind};
use dbmazz::pipeline::plan::{ColumnSet, PlannedRow, RowOp};
use pg_scratch::PgCluster;
use starrocks_double::{DoubleConfig, Fault, FaultDuration, StarRocksDouble};

const SCHEMA: &str =
    "CREATE TABLE items (b int NOT NULL, a int NOT NULL, v text, PRIMARY KEY (b, a));
ALTER TABLE items REPLICA IDENTITY FULL;";

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        initial_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        jitter: 0.2,
        max_attempts: None,
    }
}

fn config(
    pg: &PgCluster,
    fe_port: u16,
    mysql_port: u16,
    tables: &str,
    extra: &[(&str, &str)],
) -> Config {
    let mut env: HashMap<String, String> = [
        ("SOURCE_URL", pg.socket_conn_string("postgres")),
        ("TABLES", tables.to_string()),
        ("SINK_URL", format!("http://127.0.0.1:{fe_port}")),
        ("SINK_PORT", mysql_port.to_string()),
        ("SINK_DATABASE", "db".to_string()),
        ("SINK_USER", "root".to_string()),
        ("SINK_CONNECT_TIMEOUT_MS", "1000".to_string()),
        ("SINK_REQUEST_TIMEOUT_MS", "5000".to_string()),
        ("SPOOL_DIR", "/nonexistent/unused".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    Config::load_with(None, &|k| env.get(k).cloned()).expect("config")
}

async fn sink(cfg: &Config) -> Result<StarRocksLoadSink, dbmazz::pipeline::loader::SinkFailure> {
    StarRocksLoadSink::with_retry(cfg, cfg.sink.as_ref().unwrap(), fast()).await
}

/// `items` as pgoutput describes it under REPLICA IDENTITY FULL: every column flagged.
fn relation(id: u32, extra: &[&str]) -> Relation {
    let col = |name: &str, oid: u32| Column {
        name: name.into(),
        is_key: true,
        type_oid: oid,
        type_modifier: -1,
    };
    let mut columns = vec![col("b", 23), col("a", 23), col("v", 25)];
    columns.extend(extra.iter().map(|n| col(n, 25)));
    Relation {
        id,
        namespace: "public".into(),
        name: "items".into(),
        replica_identity: ReplicaIdentity::Full,
        columns,
    }
}

async fn double() -> StarRocksDouble {
    let sr = StarRocksDouble::start(DoubleConfig::default())
        .await
        .unwrap();
    sr.execute_sql(None, "CREATE DATABASE db").unwrap();
    sr
}

/// Issue 9, case 8 (sink side): the sink is built while StarRocks is unreachable; the
/// start-up check then fails transiently, with a message that says it once.
#[tokio::test]
async fn construction_needs_no_starrocks_and_the_check_is_transient() {
    let pg = PgCluster::start().unwrap();
    pg.psql("postgres", SCHEMA).unwrap();
    let (fe, my) = (closed_port(), closed_port());
    let cfg = config(&pg, fe, my, "items", &[]);
    let s = sink(&cfg).await.expect("built without StarRocks");
    let e = s.check_targets().await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert_eq!(
        e.message,
        format!("cannot connect to the StarRocks FE MySQL port 127.0.0.1:{my} (SINK_URL host, SINK_PORT): connection refused; dbmazz keeps retrying")
    );
}

#[tokio::test]
async fn permanent_problems_are_permanent() {
    let pg = PgCluster::start().unwrap();
    pg.psql(
        "postgres",
        &format!(
            "{SCHEMA}
             CREATE TABLE nokey (id int, v text);
             CREATE TYPE mytext;
             CREATE FUNCTION mytext_in(cstring) RETURNS mytext AS 'textin' LANGUAGE internal IMMUTABLE STRICT;
             CREATE FUNCTION mytext_out(mytext) RETURNS cstring AS 'textout' LANGUAGE internal IMMUTABLE STRICT;
             CREATE TYPE mytext (INPUT = mytext_in, OUTPUT = mytext_out, LIKE = text);
             CREATE TABLE odd (id int PRIMARY KEY, w mytext);"
        ),
    )
    .unwrap();
    let (fe, my) = (closed_port(), closed_port());
    // Found at construction, without StarRocks.
    let e = sink(&config(&pg, fe, my, "items,odd", &[]))
        .await
        .err()
        .expect("unmapped");
    assert_eq!(e.kind, SinkFailureKind::Permanent);
    assert!(
        e.message.contains("public.odd")
            && e.message.contains("column w")
            && e.message.contains("mytext"),
        "{e}"
    );
    let e = sink(&config(&pg, fe, my, "nokey", &[]))
        .await
        .err()
        .expect("no key");
    assert_eq!(e.kind, SinkFailureKind::Permanent);
    assert!(e.message.contains("public.nokey has no primary key"), "{e}");

    // Found by the check, with StarRocks up.
    let sr = double().await;
    let cfg = config(&pg, sr.fe_http_port(), sr.mysql_port(), "items", &[]);
    let s = sink(&cfg).await.unwrap();
    let e = s.check_targets().await.unwrap_err();
    assert_eq!(e.kind, SinkFailureKind::Permanent);
    assert!(
        e.message
            .starts_with("target table db.items does not exist (set SINK_CREATE_TABLES=true"),
        "{e}"
    );
    let cfg = config(
        &pg,
        sr.fe_http_port(),
        sr.mysql_port(),
        "items",
        &[
            ("SINK_PASSWORD", "wrong-s3cret"),
            ("SINK_CREATE_TABLES", "true"),
        ],
    );
    let e = sink(&cfg).await.unwrap().check_targets().await.unwrap_err();
    assert_eq!(e.kind, SinkFailureKind::Permanent);
    assert!(
        e.message.contains("check SINK_USER and SINK_PASSWORD"),
        "{e}"
    );
    assert!(!e.message.contains("wrong-s3cret"), "{e}");
    sr.stop().await;
}

/// Issue 9, case 4 (sink side): the key positions come from the catalog's primary key
/// (in key order), not from pgoutput's flags (all set under REPLICA IDENTITY FULL).
#[tokio::test]
async fn prepare_gives_the_catalog_primary_key_positions() {
    let pg = PgCluster::start().unwrap();
    pg.psql("postgres", SCHEMA).unwrap();
    let sr = double().await;
    let cfg = config(
        &pg,
        sr.fe_http_port(),
        sr.mysql_port(),
        "items",
        &[("SINK_CREATE_TABLES", "true")],
    );
    let s = sink(&cfg).await.unwrap();
    s.check_targets().await.unwrap();
    let p = s
        .prepare(&relation(7, &[]), 1, &RetryNote::detached())
        .await
        .unwrap();
    assert_eq!(
        p.key_columns,
        vec![0, 1],
        "b then a, as the primary key says"
    );
    let mut rel = relation(7, &[]);
    rel.columns.swap(0, 1);
    let p = s.prepare(&rel, 2, &RetryNote::detached()).await.unwrap();
    assert_eq!(p.key_columns, vec![1, 0]);
    sr.stop().await;
}

/// Issue 9, case 9 (sink side): after `pg_ctl restart -m fast` the sink's catalog
/// connection is closed; preparing a new relation version reconnects and succeeds.
#[tokio::test]
async fn prepare_after_a_postgres_restart_reconnects() {
    let mut pg = PgCluster::start().unwrap();
    pg.psql("postgres", SCHEMA).unwrap();
    let sr = double().await;
    let cfg = config(
        &pg,
        sr.fe_http_port(),
        sr.mysql_port(),
        "items",
        &[("SINK_CREATE_TABLES", "true")],
    );
    let s = sink(&cfg).await.unwrap();
    s.prepare(&relation(7, &[]), 1, &RetryNote::detached())
        .await
        .unwrap();
    pg.restart().unwrap();
    pg.psql("postgres", "ALTER TABLE items ADD COLUMN w text")
        .unwrap();
    let p = tokio::time::timeout(
        Duration::from_secs(60),
        s.prepare(&relation(7, &["w"]), 2, &RetryNote::detached()),
    )
    .await
    .expect("prepare after the restart never finished (the closed connection is retried forever)")
    .unwrap();
    assert_eq!(p.key_columns, vec![0, 1]);
    let out = sr
        .execute_sql(
            Some("db"),
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'db' AND table_name = 'items'",
        )
        .unwrap();
    let starrocks_double::SqlOutput::Rows { rows, .. } = out else {
        panic!("{out:?}")
    };
    let cols: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            r[0].as_ref()
                .map(|c| String::from_utf8_lossy(c).into_owned())
        })
        .collect();
    assert!(
        cols.iter().any(|c| c == "w"),
        "the new column reached the target: {cols:?}"
    );
    sr.stop().await;
}

/// Issue 9, case 1, at the loader's interface: a `Success` with filtered rows is a typed
/// rejection that names the table, the label and the error URL, with the label committed.
#[tokio::test]
async fn a_success_with_filtered_rows_reaches_the_loader_as_a_rejection() {
    let pg = PgCluster::start().unwrap();
    pg.psql("postgres", SCHEMA).unwrap();
    let sr = double().await;
    let cfg = config(
        &pg,
        sr.fe_http_port(),
        sr.mysql_port(),
        "items",
        &[("SINK_CREATE_TABLES", "true")],
    );
    let s = sink(&cfg).await.unwrap();
    let rel = relation(7, &[]);
    s.prepare(&rel, 1, &RetryNote::detached()).await.unwrap();
    let rows: Vec<PlannedRow> = (1..=3)
        .map(|i| PlannedRow {
            seq: i,
            op: RowOp::Upsert,
            values: vec![
                (0, Value::Text(i.to_string().into_bytes().into())),
                (1, Value::Text(b"1".to_vec().into())),
                (2, Value::Text(format!("v{i}").into_bytes().into())),
            ],
        })
        .collect();
    let note = RetryNote::detached();
    let batch = |label: &str| LoadBatch {
        relation: &rel,
        rel_version: 1,
        columns: &ColumnSet::Full,
        rows: &rows,
        label: label.to_string(),
        note: &note,
    };
    assert_eq!(s.load(batch("ok1")).await.unwrap(), LoadResult::Loaded);
    sr.set_fault(Fault::FilteredSuccess { rows: 1 }, FaultDuration::Count(1));
    let e = s.load(batch("bad1")).await.unwrap_err();
    let r = e
        .rejected_load()
        .unwrap_or_else(|| panic!("not a rejection: {e:?}"));
    assert_eq!(r.table, "items");
    assert_eq!(r.label, "bad1");
    assert!(r.label_committed);
    assert_eq!((r.rows_sent, r.rows_loaded, r.rows_filtered), (3, 2, 1));
    let url = r.error_url.clone().expect("error URL");
    assert!(
        e.message.starts_with("source table public.items: StarRocks committed the load into items (label bad1) without all its rows")
            && e.message.contains(&url),
        "{e}"
    );
    sr.set_fault(Fault::LoseRows { rows: 1 }, FaultDuration::Count(1));
    let e = s.load(batch("bad2")).await.unwrap_err();
    assert!(
        e.rejected_load().is_some_and(|r| r.label_committed),
        "{e:?}"
    );
    sr.stop().await;
}
