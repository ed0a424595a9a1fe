//! End to end: PostgreSQL → dbmazz (child process) → StarRocks double, under the
//! invariants of the architecture contract and the failure modes of the double.

mod support;

use std::time::Duration;

use starrocks_double::{Fault, FaultDuration, Node};
use support::e2e::*;

const SCHEMA: &str = "
CREATE TABLE items (id bigint PRIMARY KEY, v text, n int, big text);
ALTER TABLE items ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE other (id bigint PRIMARY KEY, v text);
";
const TARGETS: &[&str] = &[
    "CREATE TABLE items (id BIGINT NOT NULL, v VARCHAR(1048576), n INT, big VARCHAR(1048576)) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 1",
    "CREATE TABLE other (id BIGINT NOT NULL, v VARCHAR(1048576)) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 1",
];
const LONG: Duration = Duration::from_secs(60);

fn items_source(e: &E2e) -> Vec<(i64, String)> {
    source_pairs(e, "SELECT id, coalesce(v, '') FROM items ORDER BY id")
}

fn converged(e: &E2e) -> bool {
    items_source(e) == target_pairs(e, "items", "v")
}

async fn started() -> E2e {
    let mut e = E2e::start(SCHEMA, "items,other", TARGETS).await;
    e.spawn();
    // The slot exists once setup is done.
    e.wait_for(LONG, "slot created", |e| e.slot_count() == 1)
        .await;
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_arrive_with_upserts_deletes_truncate_and_toast_unchanged_updates() {
    let mut e = started().await;
    let big = "B".repeat(20_000);
    e.sql(&format!(
        "INSERT INTO items VALUES (1, 'a', 1, '{big}'), (2, 'b', 2, '{big}'), (3, 'c', 3, NULL);
         INSERT INTO other VALUES (1, 'o1'), (2, 'o2');"
    ));
    e.wait_for(LONG, "first rows", |e| {
        e.target("items").len() == 3 && e.target("other").len() == 2
    })
    .await;
    // TOAST-unchanged updates mixed with inserts in the same batch; a delete; a key change.
    e.sql(
        "BEGIN;
         UPDATE items SET v = 'a2' WHERE id = 1;
         INSERT INTO items VALUES (4, 'd', 4, 'small');
         UPDATE items SET n = 20 WHERE id = 2;
         DELETE FROM items WHERE id = 3;
         UPDATE items SET id = 5 WHERE id = 4;
         COMMIT;
         TRUNCATE other;
         INSERT INTO other VALUES (3, 'after truncate');",
    );
    e.wait_for(LONG, "converged", |e| {
        converged(e) && e.target("other").len() == 1
    })
    .await;
    let rows = e.target("items");
    let by_id = |id: i64| {
        rows.iter()
            .find(|r| r["id"].as_i64() == Some(id))
            .cloned()
            .unwrap()
    };
    assert_eq!(by_id(1)["v"], "a2");
    assert_eq!(
        by_id(1)["big"].as_str().map(str::len),
        Some(20_000),
        "TOASTed value lost"
    );
    assert_eq!(by_id(2)["n"], 20);
    assert_eq!(
        by_id(2)["big"].as_str().map(str::len),
        Some(20_000),
        "TOASTed value lost"
    );
    assert!(
        rows.iter().all(|r| r["id"] != 3 && r["id"] != 4),
        "delete or key change not applied: {rows:?}"
    );
    assert_eq!(e.target("other")[0]["v"], "after truncate");

    // Every load carried a deterministic label, never a filter ratio above 0, and full-row
    // loads ran in strict mode (no silent NULLs); the TOAST updates were partial loads.
    let loads = e.sr.loads();
    assert!(
        loads.iter().any(|l| l
            .headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("partial_update") && v == "true")),
        "no partial update load for the TOAST-unchanged updates"
    );
    for l in &loads {
        let partial = l
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("partial_update"));
        let strict = l
            .headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("strict_mode") && v == "true");
        assert_eq!(
            strict, !partial,
            "strict_mode must be on for full-row loads only: {:?}",
            l.headers
        );
        assert!(
            l.label.starts_with("dbmazz_"),
            "load without our label: {}",
            l.label
        );
        assert!(l.label.len() <= 128);
        for (k, v) in &l.headers {
            if k.eq_ignore_ascii_case("max_filter_ratio") {
                assert_eq!(v.parse::<f64>().unwrap(), 0.0);
            }
            if k.eq_ignore_ascii_case("partial_update") {
                assert_eq!(v, "true");
            }
            if k.eq_ignore_ascii_case("authorization") {
                assert!(
                    !v.contains("Basic"),
                    "authorization leaked into the load log"
                );
            }
        }
    }
    assert!(e.sigterm().await.success());
    assert_eq!(e.slot_count(), 1, "slot dropped on stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_flush_lsn_waits_for_the_load() {
    let mut e = started().await;
    e.sql("INSERT INTO items VALUES (1, 'a', 1, NULL)");
    e.wait_for(LONG, "first row", |e| e.target("items").len() == 1)
        .await;
    e.wait_for(LONG, "confirmed after the first load", |e| {
        !e.confirmed_flush().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = e.confirmed_flush();

    // StarRocks down (FE and BE refuse connections).
    let f1 =
        e.sr.set_fault(Fault::Down { node: Node::Fe }, FaultDuration::Forever);
    let f2 =
        e.sr.set_fault(Fault::Down { node: Node::Be }, FaultDuration::Forever);
    e.sql(
        "INSERT INTO items VALUES (2, 'b', 2, NULL); INSERT INTO items VALUES (3, 'c', 3, NULL);",
    );
    // Several status periods (500 ms) and keepalives: the slot must not move.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        e.confirmed_flush(),
        before,
        "confirmed_flush_lsn moved while StarRocks was down"
    );
    assert!(e.running(), "the daemon died during the outage");

    e.sr.remove_fault(f1);
    e.sr.remove_fault(f2);
    e.wait_for(LONG, "rows after recovery", converged).await;
    e.wait_for(LONG, "confirmed_flush_lsn moves after the load", |e| {
        e.confirmed_flush() != before
    })
    .await;
    assert!(e.sigterm().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigkill_at_several_points_end_exact() {
    let mut e = started().await;
    let mut next = 1i64;
    let mut step = |e: &E2e, n: i64| {
        // Inserts, updates and deletes, several transactions.
        for _ in 0..n {
            let id = next;
            next += 1;
            e.sql(&format!(
                "INSERT INTO items VALUES ({id}, 'v{id}', {id}, NULL);
                 UPDATE items SET v = v || '+' WHERE id = {};
                 DELETE FROM items WHERE id = {};",
                id / 2,
                id - 5
            ));
        }
    };
    step(&e, 30);
    e.sigkill().await;
    step(&e, 20);
    e.spawn();
    step(&e, 20);
    // SIGTERM while StarRocks is down.
    let f =
        e.sr.set_fault(Fault::Down { node: Node::Be }, FaultDuration::Forever);
    step(&e, 10);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        e.sigterm().await.success(),
        "exit code on SIGTERM during an outage"
    );
    step(&e, 10);
    e.spawn();
    step(&e, 10);
    e.sr.remove_fault(f);
    // SIGKILL while loading.
    step(&e, 20);
    e.sigkill().await;
    e.spawn();
    step(&e, 10);
    e.wait_for(LONG, "target equals source", converged).await;
    assert!(e.sigterm().await.success());
    assert_eq!(e.slot_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_with_the_same_label() {
    let mut e = started().await;
    for (i, fault) in [
        Fault::Http5xx { node: Node::Be, status: 503 },
        Fault::StatusFail { message: "current running txns on db 10001 is 1000, larger than limit 1000".into(), commit: false },
        Fault::StatusFail { message: "Commit transaction fail cause timeout, Transaction status unknown, you can retry with same label.".into(), commit: true },
        Fault::PublishTimeout { visible_after_ms: 300 },
        Fault::Hang { node: Node::Be },
        Fault::LabelRunning { hold_ms: 500 },
        Fault::TooManyTxns,
        Fault::DropConnection { commit: true },
    ]
    .into_iter()
    .enumerate()
    {
        let id = i as i64 + 1;
        e.sr.set_fault(fault.clone(), FaultDuration::Count(2));
        e.sql(&format!("INSERT INTO items VALUES ({id}, 'v{id}', {id}, NULL)"));
        e.wait_for(LONG, &format!("row {id} after {fault:?}"), converged).await;
        assert!(e.running(), "daemon died on {fault:?}");
    }
    // Loads that were retried reused their label: no label was loaded with two bodies.
    let loads = e.sr.loads();
    let mut by_label = std::collections::BTreeMap::<String, usize>::new();
    for l in loads.iter().filter(|l| l.committed) {
        *by_label.entry(l.label.clone()).or_default() += 1;
    }
    assert!(
        by_label.values().all(|n| *n == 1),
        "a label committed twice: {by_label:?}"
    );
    assert!(e.sigterm().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_rows_stop_the_pipeline_keeping_slot_and_spool() {
    let mut e = started().await;
    e.sql("INSERT INTO items VALUES (1, 'a', 1, NULL)");
    e.wait_for(LONG, "first row", converged).await;
    let confirmed = e.confirmed_flush();
    e.sr.set_fault(Fault::FilterRows { rows: 1 }, FaultDuration::Forever);
    e.sql("INSERT INTO items VALUES (2, 'b', 2, NULL)");
    let status = e.wait_exit(LONG).await;
    assert!(!status.success(), "filtered rows must stop the pipeline");
    assert_eq!(e.slot_count(), 1);
    assert_eq!(e.confirmed_flush(), confirmed);
    // Fixed: a restart loads the row (it was kept in the spool).
    e.sr.clear_faults();
    e.spawn();
    e.wait_for(LONG, "row after the fix", converged).await;
    assert!(e.sigterm().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_a_permanent_error() {
    let mut e = E2e::start(SCHEMA, "items", TARGETS).await;
    e.set_env("SINK_PASSWORD", "wrong-password");
    e.set_env("LOG_FORMAT", "json");
    e.spawn();
    let status = e.wait_exit(LONG).await;
    assert!(!status.success());
    // JSON lines, and the password appears nowhere in the log or the final error.
    let log = std::fs::read_to_string(e.log_path()).unwrap();
    assert!(
        !log.contains("wrong-password"),
        "the sink password leaked into the log"
    );
    let json_lines = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a log line that is not JSON"))
        .filter(|v| v["level"].is_string())
        .count();
    assert!(json_lines > 0, "no JSON log lines:\n{log}");
    assert!(
        log.contains("Authenticate failed")
            || log.contains("Access denied")
            || log.contains("auth"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_is_absorbed_by_the_spool() {
    let secs: u64 = std::env::var("DBMAZZ_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    // Several times wal_sender_timeout: the walsender must be kept alive by status updates
    // while nothing can be confirmed (DBMAZZ_OUTAGE_SECS=7200 for a real long outage).
    let pg = pg_scratch::Options::default().setting("wal_sender_timeout", "4s");
    let mut e = E2e::start_with_options(pg, SCHEMA, "items", TARGETS).await;
    e.spawn();
    e.wait_for(LONG, "slot created", |e| e.slot_count() == 1)
        .await;
    e.sql("INSERT INTO items VALUES (0, 'first', 0, NULL)");
    e.wait_for(LONG, "first row", converged).await;
    let fe =
        e.sr.set_fault(Fault::Down { node: Node::Fe }, FaultDuration::Forever);
    let be =
        e.sr.set_fault(Fault::Down { node: Node::Be }, FaultDuration::Forever);
    let spool_before = dir_size(&e.spool_path());
    let start = std::time::Instant::now();
    let mut id = 1;
    while start.elapsed() < Duration::from_secs(secs) {
        e.sql(&format!(
            "INSERT INTO items SELECT g, repeat('x', 200), g, NULL FROM generate_series({}, {}) g",
            id * 100,
            id * 100 + 99
        ));
        id += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(e.running(), "the daemon died during the outage");
    }
    let spool_during = dir_size(&e.spool_path());
    // The inspection tool works while the daemon holds the spool (through its socket).
    let out = std::process::Command::new(BIN)
        .args(["spool", "stats", "--json", "--dir"])
        .arg(e.spool_path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        stats["pending_records"].as_u64().unwrap_or(0) > 100,
        "spool stats during the outage: {stats}"
    );
    assert!(
        spool_during > spool_before,
        "the spool did not grow: {spool_before} -> {spool_during}"
    );
    assert_eq!(e.target("items").len(), 1);
    assert!(
        !e.pg.log().contains("replication timeout"),
        "walsender timed out"
    );
    e.sr.remove_fault(fe);
    e.sr.remove_fault(be);
    e.wait_for(
        Duration::from_secs(120),
        "everything after the outage",
        converged,
    )
    .await;
    assert!(e.sigterm().await.success());
}

fn dir_size(p: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let m = e.metadata().unwrap();
            total += if m.is_dir() {
                dir_size(&e.path())
            } else {
                m.len()
            };
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_delete_keeps_the_row_and_flags_it() {
    let mut e = E2e::start(
        "CREATE TABLE items (id bigint PRIMARY KEY, v text, n int, big text);",
        "items",
        &["CREATE TABLE items (id BIGINT NOT NULL, v VARCHAR(1048576), n INT, big VARCHAR(1048576), _dbmazz_deleted BOOLEAN) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 1"],
    )
    .await;
    e.set_env("SINK_DELETE_MODE", "soft");
    e.spawn();
    e.wait_for(LONG, "slot created", |e| e.slot_count() == 1)
        .await;
    e.sql("INSERT INTO items VALUES (1, 'keep me', 7, NULL), (2, 'live', 8, NULL); DELETE FROM items WHERE id = 1;");
    e.wait_for(LONG, "soft delete applied", |e| {
        e.target("items")
            .iter()
            .any(|r| r["id"] == 1 && r["_dbmazz_deleted"] == true)
    })
    .await;
    let rows = e.target("items");
    assert_eq!(
        rows.len(),
        2,
        "soft delete must not remove the row: {rows:?}"
    );
    let one = rows.iter().find(|r| r["id"] == 1).unwrap();
    assert_eq!(
        one["v"], "keep me",
        "soft delete overwrote the row's values: {one:?}"
    );
    assert_eq!(one["n"], 7);
    let two = rows.iter().find(|r| r["id"] == 2).unwrap();
    assert_eq!(two["_dbmazz_deleted"], false);
    assert!(e.sigterm().await.success());
}
