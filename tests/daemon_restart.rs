//! `dbmazz run` and `dbmazz check` as a user runs them: a child process against a private
//! PostgreSQL (and the StarRocks double). Start, SIGTERM, kill -9, start again: the slot
//! stays the same and every change arrives (invariants 7 and 8).

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pg_scratch::{Options, PgCluster};
use support::e2e::E2e;

const BIN: &str = env!("CARGO_BIN_EXE_dbmazz");

fn slot_row(pg: &PgCluster) -> String {
    pg.psql(
        "postgres",
        "SELECT slot_name || ':' || plugin FROM pg_replication_slots",
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_kill9_and_restart_keep_the_slot_and_lose_nothing() {
    let mut e = E2e::start(
        "CREATE TABLE events (id bigint PRIMARY KEY, payload text)",
        "events",
        &["CREATE TABLE events (id BIGINT NOT NULL, payload VARCHAR(1048576)) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 1"],
    )
    .await;
    // The first start creates the slot; changes before it are the snapshot's business.
    e.spawn();
    e.wait_for(Duration::from_secs(60), "slot created", |e| {
        e.slot_count() == 1
    })
    .await;
    let slot_before = slot_row(&e.pg);
    assert_eq!(slot_before, "dbmazz_slot:pgoutput");

    // Steady traffic on another thread for the whole test: one row per transaction.
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU32::new(1));
    let traffic = {
        let (stop, next) = (stop.clone(), next.clone());
        let conn = e.pg.socket_conn_string("postgres");
        tokio::spawn(async move {
            let (client, c) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(c);
            while !stop.load(Ordering::SeqCst) {
                let id = next.fetch_add(1, Ordering::SeqCst) as i64;
                client
                    .execute("INSERT INTO events VALUES ($1, 'p')", &[&id])
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Clean stop: exit 0, slot kept; traffic goes on while it is stopped.
    assert!(e.sigterm().await.success());
    assert_eq!(slot_row(&e.pg), slot_before);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Start again, then kill -9 in the middle of the traffic, twice.
    for round in 0..2u64 {
        e.spawn();
        tokio::time::sleep(Duration::from_millis(1500 + round * 700)).await;
        e.sigkill().await;
        assert_eq!(slot_row(&e.pg), slot_before, "slot gone after kill -9");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Final run: stop the traffic, let the daemon catch up.
    e.spawn();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    traffic.await.unwrap();
    let last = next.load(Ordering::SeqCst) as i64 - 1;
    e.wait_for(Duration::from_secs(60), "every row in StarRocks", |e| {
        e.target("events").len() as i64 == last
    })
    .await;
    assert!(e.sigterm().await.success());
    assert_eq!(slot_row(&e.pg), slot_before);
    let mut ids: Vec<i64> = e
        .target("events")
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, (1..=last).collect::<Vec<_>>());
}

#[test]
fn check_reports_a_good_setup_and_fails_on_wal_level_replica() {
    let mut pg = PgCluster::start().unwrap();
    pg.psql(
        "postgres",
        "CREATE TABLE events (id bigint PRIMARY KEY); CREATE TABLE nokey (v int)",
    )
    .unwrap();
    let check = |pg: &PgCluster, tables: &str, json: bool| {
        let mut c = Command::new(BIN);
        c.arg("check")
            .env_clear()
            .env("SOURCE_URL", pg.socket_conn_string("postgres"))
            .env("TABLES", tables);
        if json {
            c.arg("--json");
        }
        c.output().unwrap()
    };
    let ok = check(&pg, "events", false);
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(text.contains("wal_level       logical"), "{text}");
    assert!(text.contains("public.events"), "{text}");
    assert!(text.contains("primary key (id)"), "{text}");
    assert!(text.contains("OK: ready to replicate"), "{text}");
    // check changes nothing: no slot, no publication created.
    assert_eq!(
        pg.psql("postgres", "SELECT count(*) FROM pg_replication_slots")
            .unwrap(),
        "0"
    );
    assert_eq!(
        pg.psql("postgres", "SELECT count(*) FROM pg_publication")
            .unwrap(),
        "0"
    );

    // A table without a key and a missing table are reported with fixes.
    let bad = check(&pg, "nokey,ghost", true);
    assert_eq!(bad.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let problems = v["problems"].to_string();
    assert!(
        problems.contains("public.nokey has no primary key"),
        "{problems}"
    );
    assert!(
        problems.contains("public.ghost does not exist"),
        "{problems}"
    );

    pg.restart_with(Options::default().wal_level("replica"))
        .unwrap();
    let out = check(&pg, "events", false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("wal_level is 'replica'"), "{text}");
    assert!(
        text.contains("ALTER SYSTEM SET wal_level = logical"),
        "{text}"
    );
}

#[test]
fn run_refuses_wal_level_replica_with_a_clear_error_and_bad_config_names_the_variable() {
    let pg = PgCluster::start_with(Options::default().wal_level("replica")).unwrap();
    pg.psql("postgres", "CREATE TABLE events (id bigint PRIMARY KEY)")
        .unwrap();
    let spool = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("run")
        .env_clear()
        .env("SOURCE_URL", pg.socket_conn_string("postgres"))
        .env("TABLES", "events")
        .env("SPOOL_DIR", spool.path())
        .env("SINK_URL", "http://127.0.0.1:1")
        .env("SINK_DATABASE", "d")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wal_level"), "{err}");

    let out = Command::new(BIN)
        .arg("run")
        .env_clear()
        .env("SOURCE_URL", pg.socket_conn_string("postgres"))
        .env("TABLES", "events")
        .env("FLUSH_SIZE", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("FLUSH_SIZE") && err.contains("lots"), "{err}");
}

#[test]
fn help_documents_every_variable() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for s in dbmazz::config::SETTINGS {
        assert!(text.contains(s.env), "{} missing from --help", s.env);
    }
    for cmd in ["run", "check", "spool", "slot"] {
        assert!(text.contains(cmd), "{cmd} missing from --help");
    }
}
