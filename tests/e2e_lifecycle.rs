//! The daemon's lifecycle against the world: `dbmazz run` (child process) with a private
//! PostgreSQL and the StarRocks double, observed through gRPC, /metrics and its exit.
//!
//! Covered (issue 9): PostgreSQL down when the daemon starts is waited out and shown
//! (state `starting`, "waiting for PostgreSQL", the outage in Status and /metrics); a
//! PostgreSQL restart under traffic is waited out, DDL right after it loads; a drain while
//! the spool writer is behind loads everything written before the request and confirms
//! the last change; a permanent error (at start or in the loader) is published as `failed`
//! before the exit; an error is worded once (no "spool: spool ...").

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use starrocks_double::{Fault, FaultDuration};
use support::control::*;
use support::e2e::*;

const SCHEMA: &str = "CREATE TABLE items (id bigint PRIMARY KEY, v text);";
const TARGETS: &[&str] = &[
    "CREATE TABLE items (id BIGINT NOT NULL, v VARCHAR(1048576)) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 1",
];

/// Waits until the child's control plane listens, then connects (without waiting for the
/// reader: the daemon may still be starting).
async fn control_plane(e: &mut E2e) -> Api {
    let before = listening_lines(e);
    e.spawn();
    e.wait_for(LONG, "control plane listening", |e| {
        listening_lines(e) > before
    })
    .await;
    Api::connect(e).await
}

fn metric_of(api_text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(&scrape(api_text), name, labels)
}

/// (a) PostgreSQL is down when the daemon starts and comes 5 s later: the daemon waits
/// (visible in Status, Health and /metrics), then replicates; it never exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_without_postgresql_waits_for_it() {
    let mut e = E2e::start(SCHEMA, "items", TARGETS).await;
    e.pg.stop().expect("stop PostgreSQL");
    let t0 = Instant::now();
    let api = control_plane(&mut e).await;

    let s = api
        .wait_status(&e, LONG, "waiting for PostgreSQL, retried", |s| {
            s.postgres
                .as_ref()
                .is_some_and(|p| !p.reachable && p.attempts >= 2)
        })
        .await;
    assert_eq!(s.state, "starting", "{s:#?}");
    assert_eq!(s.stage, "waiting for PostgreSQL", "{s:#?}");
    assert_eq!(s.activity, "waiting for PostgreSQL");
    assert!(
        s.last_error.starts_with("waiting for PostgreSQL: "),
        "{s:#?}"
    );
    let pg = s.postgres.clone().unwrap();
    assert!(
        pg.unreachable_since_unix_ms > 0 && !pg.last_error.is_empty(),
        "{pg:?}"
    );
    assert!(s.starrocks.as_ref().unwrap().reachable, "{s:#?}");
    let h = api.health().await;
    assert!(h.serving && h.state == "starting", "{h:?}");
    assert_eq!(h.stage, "waiting for PostgreSQL");
    let (code, body) = api.get("/readyz").await;
    assert_eq!((code, body.trim()), (503, "not ready: starting"));
    let (code, body) = api.get("/healthz").await;
    assert_eq!((code, body.trim()), (200, "ok: starting"));
    let (code, text) = api.get("/metrics").await;
    assert_eq!(code, 200);
    assert_eq!(
        metric_of(&text, "dbmazz_state", &[("state", "starting")]),
        1.0
    );
    let pg_label = [("dependency", "postgresql")];
    assert_eq!(metric_of(&text, "dbmazz_dependency_up", &pg_label), 0.0);
    assert!(metric_of(&text, "dbmazz_dependency_failed_attempts", &pg_label) >= 2.0);
    assert_eq!(
        metric_of(
            &text,
            "dbmazz_dependency_up",
            &[("dependency", "starrocks")]
        ),
        1.0
    );
    // Only Stop is accepted while starting.
    let err = api.control(Ctl::Pause, None).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");

    // PostgreSQL comes 5 s after the daemon.
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(t0.elapsed())).await;
    assert!(e.running(), "the daemon exited:\n{}", e.log_tail());
    e.pg.restart().expect("start PostgreSQL");
    let s = api
        .wait_status(&e, LONG, "running and connected", |s| {
            s.state == "running" && s.reader.as_ref().is_some_and(|r| r.connected)
        })
        .await;
    assert!(s.postgres.as_ref().unwrap().reachable, "{s:#?}");
    assert_eq!(s.last_error, "", "{s:#?}");
    let (code, body) = api.get("/readyz").await;
    assert_eq!(code, 200, "/readyz: {body}");

    let last = insert_txn(&e, 1, 51);
    e.wait_for(LONG, "rows after PostgreSQL came", converged)
        .await;
    e.wait_for(LONG, "slot confirmed", |e| slot_confirmed(e) >= last)
        .await;
    assert_eq!(e.target("items").len(), 50);
    assert!(e.running(), "the daemon exited:\n{}", e.log_tail());
    let st = e.sigterm().await;
    assert!(st.success(), "{st:?}\n{}", e.log_tail());
    assert_eq!(e.slot_count(), 1);
}

/// (b) `pg_ctl restart -m fast` under a running daemon with traffic: the daemon keeps
/// running, every row arrives, and a column added right after the restart loads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_restart_under_traffic_is_waited_out() {
    let mut e = E2e::start(SCHEMA, "items", TARGETS).await;
    let api = started(&mut e).await;
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        let conn = e.pg.socket_conn_string("postgres");
        tokio::spawn(async move {
            let mut id = 1i64;
            let mut client: Option<tokio_postgres::Client> = None;
            while !stop.load(Ordering::SeqCst) {
                let Some(c) = client.as_ref() else {
                    match tokio_postgres::connect(&conn, tokio_postgres::NoTls).await {
                        Ok((c, connection)) => {
                            tokio::spawn(connection);
                            client = Some(c);
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                    continue;
                };
                // A commit cut by the restart may or may not have happened: the source
                // is the truth the target is compared with.
                if c.execute("INSERT INTO items (id, v) VALUES ($1, 'p')", &[&id])
                    .await
                    .is_err()
                {
                    client = None;
                }
                id += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = api.status().await.reader.unwrap().reconnects;

    e.pg.restart().expect("restart PostgreSQL (fast shutdown)");
    e.sql("ALTER TABLE items ADD COLUMN extra text");
    e.sql(
        "INSERT INTO items (id, v, extra) SELECT 1000000 + g, 'x', 'e' || g FROM generate_series(1, 20) g",
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    traffic.await.unwrap();
    let last = insert_txn(&e, 2_000_000, 2_000_001);

    e.wait_for(LONG, "every row after the restart", converged)
        .await;
    e.wait_for(LONG, "the added column loaded", |e| {
        source_pairs(e, "SELECT id, coalesce(extra, '') FROM items ORDER BY id")
            == target_pairs(e, "items", "extra")
    })
    .await;
    e.wait_for(LONG, "slot confirmed", |e| slot_confirmed(e) >= last)
        .await;
    let s = api.status().await;
    assert!(s.reader.unwrap().reconnects > before, "no reconnect seen");
    assert!(s.postgres.unwrap().reachable);
    assert_eq!(s.state, "running");
    assert!(e.running(), "the daemon exited:\n{}", e.log_tail());
    assert!(e.sigterm().await.success());
    assert_eq!(e.slot_count(), 1);
}

/// Drain while the spool writer is behind (each group commit sleeps 300 ms before its
/// ledger write, so its channel fills and the reader holds decoded batches back): once
/// the daemon has received every row, Drain; after the exit every row is in StarRocks,
/// the slot is confirmed at the last change and the spool is empty. (The readiness
/// check used to read a field a held-back batch does not update: drain could exit with
/// that batch unloaded.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_while_the_spool_writer_is_behind_loads_everything() {
    let mut e = E2e::start(SCHEMA, "items", TARGETS).await;
    e.set_env(
        "FAILPOINTS",
        &format!(
            "{}=sleep(300)",
            dbmazz::failpoints::SPOOL_FLUSH_BEFORE_LEDGER
        ),
    );
    let api = started(&mut e).await;
    // A burst of one-row transactions, as fast as psql sends them.
    let script: String = (1..=3000)
        .map(|i| format!("INSERT INTO items VALUES ({i}, 'b{i}');\n"))
        .collect();
    e.sql(&script);
    let last = insert_txn(&e, 3001, 3002);
    let end = parse_lsn(&e.sql("SELECT pg_current_wal_insert_lsn()"));
    let s = api
        .wait_status(&e, LONG, "every row received", |s| {
            lsn_of(&s.received_lsn) >= end
        })
        .await;
    if lsn_of(&s.durable_lsn) >= last {
        eprintln!("note: the spool writer had caught up before the drain request");
    }

    let r = api.control(Ctl::Drain, None).await.expect("DrainAndStop");
    assert!(r.accepted, "{r:?}");
    let st = e.wait_exit(LONG).await;
    assert!(st.success(), "drain exit: {st:?}\n{}", e.log_tail());

    let target = target_pairs(&e, "items", "v");
    let source = source_pairs(&e, "SELECT id, v FROM items ORDER BY id");
    assert_eq!(source.len(), 3001);
    assert_eq!(
        target.len(),
        source.len(),
        "rows received before the drain are missing in StarRocks\n{}",
        e.log_tail()
    );
    assert_eq!(target, source);
    assert!(
        slot_confirmed(&e) >= last,
        "the slot is not confirmed at the last change: {:x} < {last:x}",
        slot_confirmed(&e)
    );
    let spool = dbmazz::spool::Spool::open(e.spool_path(), Default::default()).unwrap();
    let stats = spool.stats();
    assert_eq!(
        (stats.pending_records, stats.pending_txns),
        (0, 0),
        "the drain left records in the spool"
    );
    assert_eq!(e.slot_count(), 1);
}

/// A permanent loader error (StarRocks filters a row) stops the daemon with a non-zero
/// exit, keeping spool and slot; the state `failed` and the error reach Status watchers
/// before the exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_loader_error_is_published_as_failed_before_the_exit() {
    let mut e = E2e::start(SCHEMA, "items", TARGETS).await;
    let api = started(&mut e).await;
    let watch = watch_until_end(&api, 100, LONG);
    e.sr.set_fault(Fault::FilterRows { rows: 1 }, FaultDuration::Forever);
    insert_txn(&e, 1, 4);
    let st = e.wait_exit(LONG).await;
    assert!(!st.success(), "a permanent error must exit non-zero");
    let (msgs, err) = watch.await.unwrap();
    let last = msgs
        .last()
        .unwrap_or_else(|| panic!("no Watch message ({err:?})"));
    assert_eq!(
        last.state,
        "failed",
        "stream end: {err:?}; states seen: {:?}\n{}",
        msgs.iter().map(|m| m.state.as_str()).collect::<Vec<_>>(),
        e.log_tail()
    );
    assert!(last.last_error.contains("filtered"), "{last:#?}");
    assert_eq!(e.slot_count(), 1, "the slot was dropped");
    let spool = dbmazz::spool::Spool::open(e.spool_path(), Default::default()).unwrap();
    assert_eq!(
        spool.stats().pending_txns,
        1,
        "the spool lost the transaction"
    );
}

/// A permanent source problem found while starting (wal_level=replica once PostgreSQL is
/// up) ends the wait: `failed` with the reason reaches Status watchers, exit non-zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_source_problem_at_start_is_published_as_failed() {
    let mut e = E2e::start(SCHEMA, "items", TARGETS).await;
    e.pg.stop().expect("stop PostgreSQL");
    let api = control_plane(&mut e).await;
    api.wait_status(&e, LONG, "waiting for PostgreSQL", |s| {
        s.stage == "waiting for PostgreSQL"
    })
    .await;
    let watch = watch_until_end(&api, 100, LONG);
    e.pg.restart_with(pg_scratch::Options::default().wal_level("replica"))
        .expect("start PostgreSQL with wal_level=replica");
    let st = e.wait_exit(LONG).await;
    assert!(!st.success());
    let (msgs, err) = watch.await.unwrap();
    let last = msgs
        .last()
        .unwrap_or_else(|| panic!("no Watch message ({err:?})"));
    assert_eq!(last.state, "failed", "{last:#?}");
    assert!(last.last_error.contains("wal_level"), "{last:#?}");
    assert_eq!(e.slot_count(), 0);
}

/// The error of a refused spool is worded once: `dbmazz: spool at ... is locked ...`,
/// not `spool: spool at ...`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_spool_says_why_once() {
    let mut e = E2e::start(SCHEMA, "items", TARGETS).await;
    let _api = started(&mut e).await;
    let mut c = std::process::Command::new(BIN);
    c.arg("run")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in &e.env {
        c.env(k, v);
    }
    c.env("GRPC_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("HTTP_LISTEN", format!("127.0.0.1:{}", free_port()));
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("dbmazz: "))
        .unwrap_or_else(|| panic!("no final error line:\n{stderr}"));
    assert_eq!(
        line,
        format!(
            "dbmazz: spool at {} is locked by another process (is the daemon running?)",
            e.spool_path().display()
        )
    );
    assert!(e.running(), "the first daemon was disturbed");
    assert!(e.sigterm().await.success());
}
