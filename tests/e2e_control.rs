//! The control plane against a real running daemon: PostgreSQL → `dbmazz run` (child
//! process) → StarRocks double, steered and observed through gRPC (the tonic client and
//! the generic Python reflection client), the CLI and the HTTP endpoints.
//!
//! Covered: every rpc (Health/Check, Status/Get, Status/Watch, Control/Pause, Resume,
//! DrainAndStop, Stop); spool depth grows during a sink outage and drains after it;
//! /metrics parses and matches Status; /healthz and /readyz; pause holds reading and
//! loading for 10 s while the replication connection survives a 2 s
//! `wal_sender_timeout`; resume delivers everything; drain empties the spool, confirms
//! the last change in the slot and exits 0; stop exits 0; the slot is never dropped;
//! `dbmazz status --json|pause|resume|drain`; the control token.

mod grpc_support;
mod support;

use std::time::{Duration, Instant};

use grpc_support::python::{python_ready, reflect_client};
use starrocks_double::{Fault, FaultDuration, Node};
use support::control::*;
use support::e2e::*;

const SCHEMA: &str = "CREATE TABLE items (id bigint PRIMARY KEY, v text);";
const TARGETS: &[&str] = &[
    "CREATE TABLE items (id BIGINT NOT NULL, v VARCHAR(1048576)) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 1",
];
const TOKEN: &str = "e2e-c0ntrol-t0ken";

// ------------------------------------------------------------------ tests

/// Health, Status/Get, Status/Watch; spool depth grows during an outage of FE and BE and
/// drains after it; /metrics matches Status; `dbmazz status --json`, `pause`, `resume`;
/// DrainAndStop (tonic) during an outage empties the spool once the sink is back and
/// exits 0 with the slot confirmed at the last change; after a restart `dbmazz drain`
/// does the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_spool_depth_metrics_cli_and_drain() {
    let mut e = E2e::start(SCHEMA, "items", TARGETS).await;
    let api = started(&mut e).await;

    // Health and the HTTP probes of a running, connected daemon.
    let h = api.health().await;
    assert!(h.serving, "{h:?}");
    assert_eq!(h.state, "running");
    assert!(h.reader_connected, "{h:?}");
    assert_eq!(h.error, "");
    let (code, body) = api.get("/healthz").await;
    assert_eq!((code, body.trim()), (200, "ok: running"));
    let (code, body) = api.get("/readyz").await;
    assert_eq!(code, 200, "/readyz: {body}");

    let l0 = insert_txn(&e, 1, 11);
    e.wait_for(LONG, "first rows", converged).await;
    let s = api
        .wait_status(&e, LONG, "first rows confirmed", |s| {
            s.spool_records == 0 && lsn_of(&s.confirmed_lsn) >= l0
        })
        .await;
    assert_eq!(s.state, "running");
    assert_eq!(s.slot_name, "dbmazz_slot");
    assert!(lsn_of(&s.received_lsn) >= lsn_of(&s.durable_lsn));
    assert!(lsn_of(&s.durable_lsn) >= lsn_of(&s.confirmed_lsn));
    let items = s
        .tables
        .iter()
        .find(|t| t.target_table == "items")
        .unwrap_or_else(|| panic!("no items table in {:?}", s.tables));
    assert_eq!(items.source_table, "public.items");
    assert_eq!(items.rows_upserted, 10);
    assert!(items.loads >= 1);
    assert_eq!(items.last_load_outcome, "success");
    assert!(!items.last_load_label.is_empty());

    // Watch: one snapshot at once, then periodic ones.
    let t = Instant::now();
    let (msgs, _) = watch_until_end(&api, 200, Duration::from_millis(700))
        .await
        .unwrap();
    assert!(
        msgs.len() >= 2,
        "Watch sent {} messages in {:?}",
        msgs.len(),
        t.elapsed()
    );
    assert!(msgs.iter().all(|m| m.state == "running"));

    // StarRocks down: FE and BE refuse connections. The spool grows, nothing is confirmed.
    let f1 =
        e.sr.set_fault(Fault::Down { node: Node::Fe }, FaultDuration::Forever);
    let f2 =
        e.sr.set_fault(Fault::Down { node: Node::Be }, FaultDuration::Forever);
    let confirmed_before = slot_confirmed(&e);
    let l1 = insert_txn(&e, 11, 21);
    let s1 = api
        .wait_status(&e, LONG, "first outage transaction spooled", |s| {
            lsn_of(&s.durable_lsn) >= l1 && s.spool_txns >= 1
        })
        .await;
    assert_eq!(s1.spool_txns, 1, "{s1:#?}");
    assert_eq!(s1.spool_records, 11, "10 changes and a commit: {s1:#?}");
    assert!(s1.spool_bytes > 0);
    let l2 = insert_txn(&e, 21, 31);
    let l3 = insert_txn(&e, 31, 46);
    let s2 = api
        .wait_status(&e, LONG, "three outage transactions spooled", |s| {
            lsn_of(&s.durable_lsn) >= l3
        })
        .await;
    assert!(l3 > l2 && l2 > l1);
    assert_eq!(s2.spool_txns, 3, "spool depth must grow: {s2:#?}");
    assert_eq!(s2.spool_records, 11 + 11 + 16, "{s2:#?}");
    assert!(s2.spool_bytes > s1.spool_bytes);
    assert!(s2.lag_seconds > 0.0 || s2.oldest_pending_age_seconds > 0.0 || s2.spool_txns > 0);
    assert!(
        lsn_of(&s2.confirmed_lsn) < l1,
        "confirmed past what StarRocks has: {s2:#?}"
    );
    let pending: u64 = s2
        .tables
        .iter()
        .filter(|t| t.source_table == "public.items")
        .map(|t| t.pending_records)
        .sum();
    assert_eq!(pending, 10 + 10 + 15, "per-table pending changes");
    assert_eq!(
        e.target("items").len(),
        10,
        "rows arrived while StarRocks is down"
    );
    assert_eq!(
        slot_confirmed(&e),
        confirmed_before,
        "the slot moved during the outage"
    );
    // Let the slot poller (every 5 s) see the slot in use.
    let s2 = api
        .wait_status(&e, Duration::from_secs(15), "slot polled active", |s| {
            s.slot.as_ref().is_some_and(|x| x.active)
        })
        .await;
    let slot = s2.slot.clone().unwrap();
    assert!(slot.exists && slot.active, "{slot:?}");
    assert_eq!(slot.error, "");

    // /metrics: parses and has Status's figures. Nothing moves during the outage except
    // LSNs from keepalives and the slot poll: compare against Status taken before and
    // after the scrape.
    let a = api.status().await;
    let (code, text) = api.get("/metrics").await;
    let b = api.status().await;
    assert_eq!(code, 200);
    let m = scrape(&text);
    for (name, x, y) in [
        (
            "dbmazz_spool_pending_records",
            a.spool_records,
            b.spool_records,
        ),
        (
            "dbmazz_spool_pending_transactions",
            a.spool_txns,
            b.spool_txns,
        ),
        ("dbmazz_spool_pending_bytes", a.spool_bytes, b.spool_bytes),
        (
            "dbmazz_spool_capacity_bytes",
            a.spool_capacity_bytes,
            b.spool_capacity_bytes,
        ),
        (
            "dbmazz_durable_lsn",
            lsn_of(&a.durable_lsn),
            lsn_of(&b.durable_lsn),
        ),
        (
            "dbmazz_confirmed_lsn",
            lsn_of(&a.confirmed_lsn),
            lsn_of(&b.confirmed_lsn),
        ),
        (
            "dbmazz_received_lsn",
            lsn_of(&a.received_lsn),
            lsn_of(&b.received_lsn),
        ),
        (
            "dbmazz_spool_durable_seq",
            a.spool.as_ref().unwrap().durable_seq,
            b.spool.as_ref().unwrap().durable_seq,
        ),
        (
            "dbmazz_spool_loaded_seq",
            a.spool.as_ref().unwrap().loaded_seq,
            b.spool.as_ref().unwrap().loaded_seq,
        ),
        (
            "dbmazz_reader_reconnects_total",
            a.reader.as_ref().unwrap().reconnects,
            b.reader.as_ref().unwrap().reconnects,
        ),
    ] {
        let v = metric(&m, name, &[]);
        assert!(
            (x as f64) <= v && v <= (y as f64),
            "{name} = {v}, Status says {x} before and {y} after"
        );
    }
    assert_eq!(a.spool_records, s2.spool_records, "the spool moved");
    assert_eq!(metric(&m, "dbmazz_state", &[("state", "running")]), 1.0);
    assert_eq!(metric(&m, "dbmazz_state", &[("state", "paused")]), 0.0);
    assert_eq!(metric(&m, "dbmazz_reader_connected", &[]), 1.0);
    assert_eq!(metric(&m, "dbmazz_slot_exists", &[]), 1.0);
    assert_eq!(metric(&m, "dbmazz_spool_full", &[]), 0.0);
    // An error during the outage (a retried load) shows in both, or in neither.
    assert_eq!(
        metric(&m, "dbmazz_error", &[]),
        if a.last_error.is_empty() && b.last_error.is_empty() {
            0.0
        } else {
            metric(&m, "dbmazz_error", &[]).max(if a.last_error.is_empty() { 0.0 } else { 1.0 })
        },
        "dbmazz_error vs Status last_error {:?} / {:?}",
        a.last_error,
        b.last_error
    );
    let spool_id = a.spool.as_ref().unwrap().spool_id.clone();
    assert!(!spool_id.is_empty());
    assert_eq!(
        metric(
            &m,
            "dbmazz_info",
            &[("slot", "dbmazz_slot"), ("spool_id", spool_id.as_str())]
        ),
        1.0
    );
    let t_labels = [("table", "items"), ("source", "public.items")];
    let ta = a.tables.iter().find(|t| t.target_table == "items").unwrap();
    assert_eq!(
        metric(&m, "dbmazz_table_rows_upserted_total", &t_labels),
        ta.rows_upserted as f64
    );
    assert_eq!(
        metric(&m, "dbmazz_table_loads_total", &t_labels),
        ta.loads as f64
    );
    assert_eq!(
        metric(&m, "dbmazz_table_pending_records", &t_labels),
        ta.pending_records as f64
    );
    assert_eq!(ta.pending_records, 35);
    let age = metric(&m, "dbmazz_spool_oldest_pending_age_seconds", &[]);
    assert!(
        age > 0.0 && age >= a.oldest_pending_age_seconds && age <= b.oldest_pending_age_seconds,
        "oldest pending age {age} vs Status {} .. {}",
        a.oldest_pending_age_seconds,
        b.oldest_pending_age_seconds
    );

    // `dbmazz status --json` and the table view agree with Status.
    let out = cli_ok(&e, &["status", "--json"], &[]);
    let j: serde_json::Value = serde_json::from_str(&out).expect("status --json is JSON");
    assert_eq!(j["state"], "running");
    assert_eq!(j["slot_name"], "dbmazz_slot");
    assert_eq!(j["spool_records"], a.spool_records);
    assert_eq!(j["spool_txns"], a.spool_txns);
    assert_eq!(j["spool_bytes"], a.spool_bytes);
    assert_eq!(j["durable_lsn"]["value"], lsn_of(&a.durable_lsn));
    assert_eq!(
        j["durable_lsn"]["text"],
        a.durable_lsn.as_ref().unwrap().text
    );
    assert_eq!(j["confirmed_lsn"]["value"], lsn_of(&a.confirmed_lsn));
    assert_eq!(j["spool"]["spool_id"], spool_id);
    assert_eq!(j["reader"]["connected"], true);
    let jt = j["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target_table"] == "items")
        .expect("items in status --json");
    assert_eq!(jt["pending_records"], 35);
    let table = cli_ok(&e, &["status"], &[]);
    assert!(table.contains("running"), "{table}");
    assert!(table.contains("spool depth"), "{table}");
    assert!(table.contains("38 records, 3 txns"), "{table}");

    // The sink is back: the spool drains and every row arrives.
    e.sr.remove_fault(f1);
    e.sr.remove_fault(f2);
    let s = api
        .wait_status(&e, LONG, "spool drained after the outage", |s| {
            s.spool_records == 0 && s.spool_txns == 0 && lsn_of(&s.confirmed_lsn) >= l3
        })
        .await;
    assert_eq!(s.spool_bytes, 0);
    assert_eq!(s.lag_seconds, 0.0);
    e.wait_for(LONG, "rows after the outage", converged).await;
    e.wait_for(LONG, "slot confirmed after the outage", |e| {
        slot_confirmed(e) >= l3
    })
    .await;
    let (_, text) = api.get("/metrics").await;
    let m = scrape(&text);
    assert_eq!(metric(&m, "dbmazz_spool_pending_records", &[]), 0.0);
    assert_eq!(
        metric(&m, "dbmazz_table_rows_upserted_total", &t_labels),
        45.0
    );

    // CLI pause and resume.
    let out = cli_ok(&e, &["pause"], &[]);
    assert!(out.contains("state: paused"), "{out}");
    let s = api.status().await;
    assert_eq!(s.state, "paused");
    assert!(s.reader.unwrap().held_back);
    let (code, body) = api.get("/readyz").await;
    assert_eq!((code, body.trim()), (503, "not ready: paused"));
    let (code, _) = api.get("/healthz").await;
    assert_eq!(code, 200);
    let out = cli_ok(&e, &["pause", "--json"], &[]);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["accepted"], true);
    assert_eq!(j["state"], "paused");
    assert_eq!(j["message"], "already paused");
    let out = cli_ok(&e, &["resume"], &[]);
    assert!(out.contains("state: running"), "{out}");
    api.wait_status(&e, Duration::from_secs(2), "resumed", |s| {
        s.state == "running" && !s.reader.as_ref().unwrap().held_back
    })
    .await;

    // Second outage, then DrainAndStop (tonic): it waits for StarRocks, then loads
    // everything, confirms it and exits 0.
    let f1 =
        e.sr.set_fault(Fault::Down { node: Node::Fe }, FaultDuration::Forever);
    let f2 =
        e.sr.set_fault(Fault::Down { node: Node::Be }, FaultDuration::Forever);
    let l4 = insert_txn(&e, 46, 61);
    let l5 = insert_txn(&e, 61, 66);
    api.wait_status(&e, LONG, "outage transactions spooled", |s| {
        lsn_of(&s.durable_lsn) >= l5 && s.spool_txns == 2
    })
    .await;
    assert!(l5 > l4);
    let watch = watch_until_end(&api, 100, LONG);
    let r = api.control(Ctl::Drain, None).await.expect("DrainAndStop");
    assert!(r.accepted, "{r:?}");
    assert_eq!(r.state, "draining", "{r:?}");
    assert_eq!(r.target_state, "draining");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(e.running(), "drain exited while StarRocks is down");
    let s = api.status().await;
    assert_eq!(s.state, "draining");
    assert_eq!(s.spool_txns, 2, "{s:#?}");
    let h = api.health().await;
    assert!(h.serving && h.state == "draining", "{h:?}");
    let (code, _) = api.get("/readyz").await;
    assert_eq!(code, 503);
    let err = api.control(Ctl::Pause, None).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    // A second drain request while draining is a no-op.
    let r = api
        .control(Ctl::Drain, None)
        .await
        .expect("DrainAndStop again");
    assert_eq!(r.message, "already draining");

    e.sr.remove_fault(f1);
    e.sr.remove_fault(f2);
    let st = e.wait_exit(LONG).await;
    assert!(st.success(), "drain exit: {st:?}\n{}", e.log_tail());
    let (seen, watch_error) = watch.await.unwrap();
    assert!(
        seen.iter().any(|m| m.state == "draining"),
        "Watch never showed draining"
    );
    let trail: Vec<(String, String, u64, u64)> = seen
        .iter()
        .map(|m| {
            (
                m.state.clone(),
                m.stage.clone(),
                m.spool_records,
                m.spool_txns,
            )
        })
        .collect();
    let last = seen.last().expect("Watch messages");
    // The stream ends cleanly at the exit, its last update the final state (it used to
    // be cut, "broken pipe", before that update: fixed in the control plane's shutdown).
    assert!(
        watch_error.is_none(),
        "the Watch stream was cut at the daemon's exit: {watch_error:?}; last updates: {trail:?}"
    );
    assert_eq!(
        last.spool_records, 0,
        "the last status before the exit still shows a spool depth: {trail:?}"
    );
    assert_eq!(e.slot_count(), 1, "drain dropped the slot");
    assert!(converged(&e), "rows missing after the drain");
    let spool = dbmazz::spool::Spool::open(e.spool_path(), Default::default()).unwrap();
    let stats = spool.stats();
    assert_eq!(stats.pending_records, 0, "drain left records in the spool");
    assert!(stats.loaded.confirmed_lsn.0 >= l5);
    drop(spool);
    let slot_lsn = slot_confirmed(&e);
    assert!(
        slot_lsn >= l5,
        "slot confirmed_flush_lsn {slot_lsn:X} is behind the last change {l5:X} after a drain"
    );

    // Restart; `dbmazz drain` from the CLI right after the rows arrive.
    let api = started(&mut e).await;
    e.wait_for(
        LONG,
        "slot confirmed at the last drained change after the restart",
        |e| slot_confirmed(e) >= l5,
    )
    .await;
    let s = api.status().await;
    assert_eq!(s.spool_records, 0, "{s:#?}");
    let l6 = insert_txn(&e, 66, 71);
    e.wait_for(LONG, "rows after the restart", converged).await;
    let out = cli_ok(&e, &["drain"], &[]);
    assert!(out.starts_with("drain: "), "{out}");
    let st = e.wait_exit(LONG).await;
    assert!(st.success(), "CLI drain exit: {st:?}");
    drop(api);
    assert_eq!(e.slot_count(), 1, "drain dropped the slot");
    assert!(
        slot_confirmed(&e) >= l6,
        "slot not confirmed at the last change"
    );
}

/// Regression (src/daemon.rs DrainAndStop used to stop the reader at once, so the
/// confirmed LSN of what the drain loaded never reached PostgreSQL; fixed in a93a7f4):
/// after a drain the slot is confirmed at the last change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_confirms_the_last_change_in_the_slot() {
    let mut e = E2e::start(SCHEMA, "items", TARGETS).await;
    let api = started(&mut e).await;
    let f =
        e.sr.set_fault(Fault::Down { node: Node::Be }, FaultDuration::Forever);
    let last = insert_txn(&e, 1, 11);
    api.wait_status(&e, LONG, "spooled", |s| lsn_of(&s.durable_lsn) >= last)
        .await;
    api.control(Ctl::Drain, None).await.expect("DrainAndStop");
    e.sr.remove_fault(f);
    assert!(e.wait_exit(LONG).await.success());
    assert!(converged(&e));
    let slot_lsn = slot_confirmed(&e);
    assert!(
        slot_lsn >= last,
        "slot confirmed_flush_lsn {slot_lsn:X} is behind the last change {last:X} after a drain"
    );
}

/// Pause (tonic) stops loading and reading within a second; for 10 s no row arrives,
/// the received LSN stays, and the replication connection survives a 2 s
/// wal_sender_timeout (status updates keep it alive); resume delivers everything; Stop
/// exits 0 and keeps the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_reading_and_loading_while_the_connection_lives_then_resume_and_stop() {
    let opts = pg_scratch::Options::default().setting("wal_sender_timeout", "2s");
    let mut e = E2e::start_with_options(opts, SCHEMA, "items", TARGETS).await;
    // Windows load 2 s after their first change: a spooled transaction is still waiting
    // in the loader when the pause comes.
    e.set_env("FLUSH_INTERVAL_MS", "2000");
    let api = started(&mut e).await;
    let l0 = insert_txn(&e, 1, 6);
    e.wait_for(LONG, "first rows", converged).await;
    api.wait_status(&e, LONG, "first rows confirmed", |s| {
        s.spool_records == 0 && lsn_of(&s.confirmed_lsn) >= l0
    })
    .await;
    let pid = e.sql("SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'dbmazz_slot'");
    assert!(!pid.is_empty(), "slot not active");

    // A transaction reaches the spool; the loader holds it for its window.
    let l1 = insert_txn(&e, 6, 16);
    let s = api
        .wait_status(&e, LONG, "spooled", |s| lsn_of(&s.durable_lsn) >= l1)
        .await;
    assert_eq!(s.spool_txns, 1);
    let t0 = Instant::now();
    let r = api.control(Ctl::Pause, None).await.expect("Pause");
    assert!(r.accepted, "{r:?}");
    assert_eq!(
        (r.state.as_str(), r.target_state.as_str()),
        ("paused", "paused")
    );
    let s = api
        .wait_status(
            &e,
            Duration::from_secs(1),
            "reader and loader paused within 1 s",
            |s| s.state == "paused" && s.stage == "paused" && s.reader.as_ref().unwrap().held_back,
        )
        .await;
    assert!(t0.elapsed() < Duration::from_secs(1));
    let received = lsn_of(&s.received_lsn);
    let reader = s.reader.clone().unwrap();
    assert!(reader.connected);
    let h = api.health().await;
    assert!(
        h.serving && h.state == "paused" && h.stage == "paused",
        "{h:?}"
    );
    let (code, _) = api.get("/readyz").await;
    assert_eq!(code, 503, "/readyz while paused");
    let (code, _) = api.get("/healthz").await;
    assert_eq!(code, 200, "/healthz while paused");
    let r = api.control(Ctl::Pause, None).await.expect("Pause again");
    assert_eq!(r.message, "already paused");

    // 10 s paused, with new changes in PostgreSQL.
    let mut last = l1;
    let start = Instant::now();
    let mut i = 0i64;
    while start.elapsed() < Duration::from_secs(10) {
        if i % 6 == 0 {
            let from = 100 + i * 10;
            last = insert_txn(&e, from, from + 10);
        }
        i += 1;
        let s = api.status().await;
        let r = s.reader.clone().unwrap();
        assert_eq!(s.state, "paused");
        assert_eq!(s.stage, "paused", "the loader runs while paused");
        assert_eq!(
            lsn_of(&s.received_lsn),
            received,
            "the received LSN moved while paused (after {:?})",
            start.elapsed()
        );
        assert!(r.connected, "reader disconnected while paused: {r:?}");
        assert_eq!(
            r.reconnects, reader.reconnects,
            "reader reconnected while paused"
        );
        assert_eq!(s.spool_txns, 1, "the spool changed while paused: {s:#?}");
        assert_eq!(
            e.target("items").len(),
            5,
            "rows arrived in StarRocks while paused (after {:?})",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        e.sql("SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'dbmazz_slot'"),
        pid,
        "the replication connection was replaced while paused"
    );
    assert_eq!(e.sql("SELECT count(*) FROM pg_stat_replication"), "1");
    let log = e.pg.log();
    assert!(
        !log.contains("replication timeout"),
        "the walsender timed out while paused:\n{log}"
    );
    let s = api.status().await;
    let r = s.reader.clone().unwrap();
    assert!(
        r.status_updates >= reader.status_updates + 10,
        "too few status updates while paused: {} → {}",
        reader.status_updates,
        r.status_updates
    );
    assert!(
        slot_confirmed(&e) < l1,
        "confirmed a transaction that is not loaded"
    );

    // Resume: everything arrives and is confirmed.
    let r = api.control(Ctl::Resume, None).await.expect("Resume");
    assert_eq!(
        (r.state.as_str(), r.target_state.as_str()),
        ("running", "running")
    );
    let r = api.control(Ctl::Resume, None).await.expect("Resume again");
    assert_eq!(r.message, "already running");
    e.wait_for(LONG, "every row after the resume", converged)
        .await;
    let s = api
        .wait_status(&e, LONG, "spool empty after the resume", |s| {
            s.spool_records == 0 && lsn_of(&s.confirmed_lsn) >= last
        })
        .await;
    assert!(lsn_of(&s.received_lsn) >= last);
    e.wait_for(LONG, "slot confirmed after the resume", |e| {
        slot_confirmed(e) >= last
    })
    .await;
    let (code, _) = api.get("/readyz").await;
    assert_eq!(code, 200, "/readyz after resume");

    // Stop: exits 0, the slot stays.
    let r = api.control(Ctl::Stop, None).await.expect("Stop");
    assert!(r.accepted, "{r:?}");
    assert_eq!(r.target_state, "stopping");
    assert!(matches!(r.state.as_str(), "stopping" | "running"), "{r:?}");
    let st = e.wait_exit(LONG).await;
    assert!(st.success(), "stop exit: {st:?}\n{}", e.log_tail());
    assert_eq!(e.slot_count(), 1, "stop dropped the slot");
    assert!(!e.pg.log().contains("replication timeout"));
}

/// CONTROL_TOKEN: control calls without it (tonic, CLI, Python) are Unauthenticated and
/// change nothing; with it they work. Health and Status stay open. Then the generic
/// Python reflection client calls every rpc of the running daemon, ending with
/// DrainAndStop and Stop: the daemon exits 0 and keeps the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_token_and_the_python_reflection_client() {
    let mut e = E2e::start(SCHEMA, "items", TARGETS).await;
    e.set_env("CONTROL_TOKEN", TOKEN);
    let api = started(&mut e).await;
    let last = insert_txn(&e, 1, 4);
    e.wait_for(LONG, "first rows", converged).await;
    api.wait_status(&e, LONG, "confirmed", |s| {
        s.spool_records == 0 && lsn_of(&s.confirmed_lsn) >= last
    })
    .await;
    // The token never reaches the log.
    assert!(!std::fs::read_to_string(e.log_path())
        .unwrap()
        .contains(TOKEN));

    for what in [Ctl::Pause, Ctl::Resume, Ctl::Drain, Ctl::Stop] {
        for tok in [None, Some("wrong"), Some("")] {
            let err = api.control(what, tok).await.unwrap_err();
            assert_eq!(
                err.code(),
                tonic::Code::Unauthenticated,
                "{what:?} with {tok:?}: {err:?}"
            );
        }
    }
    let s = api.status().await;
    assert_eq!(s.state, "running", "a refused call changed the state");
    assert!(api.health().await.serving);

    // CLI: refused without the token, works with --token or CONTROL_TOKEN.
    let out = cli(&e, &["pause"], &[]);
    assert!(!out.status.success(), "pause without a token succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Unauthenticated"), "{err}");
    assert!(!err.contains(TOKEN));
    let out = cli(&e, &["drain", "--token", "wrong"], &[]);
    assert!(!out.status.success(), "drain with a wrong token succeeded");
    assert_eq!(api.status().await.state, "running");
    let out = cli_ok(&e, &["pause", "--token", TOKEN], &[]);
    assert!(out.contains("state: paused"), "{out}");
    let out = cli_ok(&e, &["resume"], &[("CONTROL_TOKEN", TOKEN)]);
    assert!(out.contains("state: running"), "{out}");
    let j: serde_json::Value =
        serde_json::from_str(&cli_ok(&e, &["status", "--json"], &[])).unwrap();
    assert_eq!(j["state"], "running");

    // tonic with the token.
    let r = api.control(Ctl::Pause, Some(TOKEN)).await.expect("Pause");
    assert_eq!(r.state, "paused");
    let r = api.control(Ctl::Resume, Some(TOKEN)).await.expect("Resume");
    assert_eq!(r.state, "running");

    // The generic Python client, through reflection only.
    if !tokio::task::spawn_blocking(python_ready).await.unwrap() {
        eprintln!(
            "\n\n!!!!! SKIPPED the Python part of control_token_and_the_python_reflection_client: \
             python3 with grpcio, grpcio-reflection and protobuf is not available !!!!!\n\n"
        );
        let r = api.control(Ctl::Stop, Some(TOKEN)).await.expect("Stop");
        assert!(r.accepted);
        assert!(e.wait_exit(LONG).await.success());
        assert_eq!(e.slot_count(), 1);
        return;
    }
    let before = api.status().await;
    let v = reflect_client(api.grpc.clone(), TOKEN).await;
    let health = &v["health"]["ok"];
    assert_eq!(health["serving"], true, "{v}");
    assert_eq!(health["state"], "running");
    assert_eq!(health["reader_connected"], true);
    // proto3 JSON: 64-bit integers are strings, zero values are left out.
    let s = &v["status"]["ok"];
    assert_eq!(s["state"], "running", "{s}");
    assert_eq!(s["slot_name"], "dbmazz_slot");
    assert_eq!(
        s["confirmed_lsn"]["value"],
        lsn_of(&before.confirmed_lsn).to_string()
    );
    assert_eq!(
        s["durable_lsn"]["text"],
        before.durable_lsn.as_ref().unwrap().text
    );
    assert!(
        s.get("spool_records").is_none() || s["spool_records"] == "0",
        "{s}"
    );
    let items = s["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target_table"] == "items")
        .expect("items in the Python status");
    assert_eq!(items["rows_upserted"], "3");
    let watch = v["watch"]["ok"].as_array().expect("watch messages");
    assert_eq!(watch.len(), 2, "{v}");
    assert_eq!(watch[0]["slot_name"], "dbmazz_slot");
    assert_eq!(v["pause_no_token"]["code"], "UNAUTHENTICATED", "{v}");
    assert_eq!(v["pause_wrong_token"]["code"], "UNAUTHENTICATED", "{v}");
    assert_eq!(v["pause"]["ok"]["state"], "paused", "{v}");
    assert_eq!(v["resume"]["ok"]["state"], "running", "{v}");
    // Drain with an empty spool ends at once: the answer may already say stopping.
    let drain = &v["drain"]["ok"];
    assert_eq!(drain["accepted"], true, "{v}");
    assert!(
        matches!(drain["state"].as_str(), Some("draining" | "stopping")),
        "{v}"
    );
    // Stop after the drain: accepted, or the daemon is already gone.
    let stop = &v["stop"];
    assert!(
        stop["ok"]["accepted"] == true
            || matches!(
                stop["code"].as_str(),
                Some("UNAVAILABLE" | "FAILED_PRECONDITION")
            ),
        "{v}"
    );
    let st = e.wait_exit(LONG).await;
    assert!(st.success(), "exit after drain and stop: {st:?}");
    assert_eq!(e.slot_count(), 1, "the slot was dropped");
    assert!(slot_confirmed(&e) >= last);
    assert!(!std::fs::read_to_string(e.log_path())
        .unwrap()
        .contains(TOKEN));
}

/// Regression (sink retries used to be invisible in Status: stage stayed `loading`,
/// `loader_retries` 0; fixed in a93a7f4): during an outage Status says `retrying`, and
/// shows the outage (`starrocks`: since, attempts, last error), /readyz says why it is
/// not ready and /metrics has `dbmazz_dependency_up{dependency="starrocks"} 0`; once a
/// load goes through, all of it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_retrying_during_an_outage() {
    let mut e = E2e::start(SCHEMA, "items", TARGETS).await;
    let api = started(&mut e).await;
    let f1 =
        e.sr.set_fault(Fault::Down { node: Node::Fe }, FaultDuration::Forever);
    let f2 =
        e.sr.set_fault(Fault::Down { node: Node::Be }, FaultDuration::Forever);
    insert_txn(&e, 1, 11);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let s = api.status().await;
    let (ready, why) = api.get("/readyz").await;
    let (_, text) = api.get("/metrics").await;
    e.sr.remove_fault(f1);
    e.sr.remove_fault(f2);
    assert_eq!(s.stage, "retrying", "{s:#?}");
    assert!(s.loader_retries > 0, "{s:#?}");
    // The outage itself: since when, how many attempts, the last error; not ready.
    let sr = s.starrocks.clone().unwrap();
    assert!(!sr.reachable, "{s:#?}");
    assert!(
        sr.attempts >= 1 && sr.unreachable_since_unix_ms > 0,
        "{sr:?}"
    );
    assert!(!sr.last_error.is_empty(), "{sr:?}");
    assert!(s.postgres.as_ref().unwrap().reachable, "{s:#?}");
    assert_eq!(ready, 503, "/readyz during the outage: {why}");
    assert!(
        why.starts_with("not ready: StarRocks is unreachable, retrying"),
        "{why}"
    );
    let m = scrape(&text);
    let label = [("dependency", "starrocks")];
    assert_eq!(metric(&m, "dbmazz_dependency_up", &label), 0.0);
    assert!(metric(&m, "dbmazz_dependency_failed_attempts", &label) >= 1.0);
    // Back: the outage is over once a load goes through.
    e.wait_for(LONG, "rows after the outage", converged).await;
    let s = api
        .wait_status(&e, LONG, "StarRocks reachable again", |s| {
            s.starrocks.as_ref().is_some_and(|d| d.reachable)
        })
        .await;
    assert_eq!(s.starrocks.unwrap().attempts, 0);
    let (ready, why) = api.get("/readyz").await;
    assert_eq!(ready, 200, "{why}");
}

/// Drain while changes are streaming in: whatever the reader received before it stopped
/// is loaded too, and the spool is empty at the exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_under_write_load_leaves_an_empty_spool() {
    let mut e = E2e::start(SCHEMA, "items", TARGETS).await;
    let api = started(&mut e).await;
    let conn = e.pg.socket_conn_string("postgres");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let writer = tokio::spawn(async move {
        let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut id = 1i64;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            client
                .batch_execute(&format!(
                    "INSERT INTO items SELECT g, 'w' || g FROM generate_series({id}, {}) g",
                    id + 49
                ))
                .await
                .unwrap();
            id += 50;
        }
    });
    api.wait_status(&e, LONG, "changes streaming", |s| {
        s.tables.iter().any(|t| t.rows_upserted > 500)
    })
    .await;
    let r = api.control(Ctl::Drain, None).await.expect("DrainAndStop");
    assert!(r.accepted);
    let st = e.wait_exit(LONG).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    assert!(st.success(), "drain exit: {st:?}");
    assert_eq!(e.slot_count(), 1);
    let spool = dbmazz::spool::Spool::open(e.spool_path(), Default::default()).unwrap();
    let stats = spool.stats();
    assert_eq!(
        (stats.pending_records, stats.pending_txns),
        (0, 0),
        "drain left records in the spool (durable seq {}, loaded seq {})",
        stats.durable.seq,
        stats.loaded.seq
    );
    drop(spool);
    // What was loaded is exactly what PostgreSQL had (a prefix of the writes).
    let target = target_pairs(&e, "items", "v");
    let source = source_pairs(&e, "SELECT id, v FROM items ORDER BY id");
    assert!(target.len() > 500);
    assert_eq!(
        target[..],
        source[..target.len()],
        "loaded rows differ from the source"
    );
}

/// Regression (a Pause during a load in retry used to let that load through once
/// StarRocks was back; fixed in a93a7f4): nothing is loaded while paused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_during_a_retried_load_stops_loading() {
    let mut e = E2e::start(SCHEMA, "items", TARGETS).await;
    let api = started(&mut e).await;
    let f =
        e.sr.set_fault(Fault::Down { node: Node::Be }, FaultDuration::Forever);
    let l = insert_txn(&e, 1, 11);
    api.wait_status(&e, LONG, "spooled", |s| lsn_of(&s.durable_lsn) >= l)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = api.control(Ctl::Pause, None).await.expect("Pause");
    assert_eq!(r.state, "paused");
    e.sr.remove_fault(f);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let s = api.status().await;
    assert_eq!(
        e.target("items").len(),
        0,
        "rows loaded while paused; stage {}",
        s.stage
    );
}
