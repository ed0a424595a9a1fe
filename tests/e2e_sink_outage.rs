//! Issue 9, case 8: StarRocks unreachable when `dbmazz run` starts. The daemon must start
//! anyway, spool what PostgreSQL sends, show the sink retrying in Status and /metrics, and
//! load everything once StarRocks is back, without ever exiting.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use starrocks_double::{Fault, FaultDuration, Node};
use support::e2e::*;

const SCHEMA: &str = "CREATE TABLE items (id bigint PRIMARY KEY, v text);";
const TARGETS: &[&str] = &[
    "CREATE TABLE items (id BIGINT NOT NULL, v VARCHAR(1048576)) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 1",
];
const LONG: Duration = Duration::from_secs(90);

fn env_of(e: &E2e, k: &str) -> String {
    e.env
        .iter()
        .find(|(a, _)| a == k)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// `dbmazz status --json`, or None while the control plane is not up.
fn status(e: &E2e) -> Option<Value> {
    let out = Command::new(BIN)
        .args(["status", "--json"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GRPC_LISTEN", env_of(e, "GRPC_LISTEN"))
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

async fn metrics(e: &E2e) -> String {
    let url = format!("http://{}/metrics", env_of(e, "HTTP_LISTEN"));
    reqwest::get(&url).await.unwrap().text().await.unwrap()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_starts_while_starrocks_is_down_spools_and_loads_when_it_is_back() {
    let mut e = E2e::start(SCHEMA, "items", TARGETS).await;
    let down: Vec<_> = [Node::Fe, Node::Be, Node::Mysql]
        .into_iter()
        .map(|node| e.sr.set_fault(Fault::Down { node }, FaultDuration::Forever))
        .collect();
    e.spawn();
    // The daemon comes up (control plane answering) although StarRocks is down.
    let start = std::time::Instant::now();
    // Running = the slot exists and the reader streams: rows inserted before that belong
    // to the (not yet existing) snapshot, not to the stream.
    while !status(&e).is_some_and(|s| s["state"] == "running" && s["reader"]["connected"] == true) {
        assert!(
            e.running(),
            "dbmazz exited while StarRocks was down\n{}",
            e.log_tail()
        );
        assert!(
            start.elapsed() < LONG,
            "the control plane never came up\n{}",
            e.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 1..=20 {
        e.sql(&format!("INSERT INTO items VALUES ({i}, 'v{i}')"));
    }
    // Spooled, not loaded; the sink shows as retrying, with its error.
    let mut last = Value::Null;
    e.wait_for(
        LONG,
        "the spool holds the rows and Status shows the sink retrying",
        |e| match status(e) {
            Some(s) => {
                let ok = s["spool_txns"].as_u64() == Some(20)
                    && s["stage"] == "retrying"
                    && s["loader_retries"].as_u64().is_some_and(|n| n > 0)
                    && s["last_error"]
                        .as_str()
                        .is_some_and(|m| m.contains("StarRocks"));
                last = s;
                ok
            }
            None => false,
        },
    )
    .await;
    assert!(e.target("items").is_empty());
    let m = metrics(&e).await;
    assert!(metric(&m, "dbmazz_loader_retries_total") > 0.0, "{m}");
    assert_eq!(metric(&m, "dbmazz_error"), 1.0, "{m}");
    assert!(
        metric(&m, "dbmazz_spool_pending_transactions") >= 20.0,
        "{m}"
    );
    assert!(
        last["last_error"]
            .as_str()
            .is_some_and(|m| m.contains("cannot connect to the StarRocks FE MySQL port")),
        "{last:#}"
    );
    assert!(
        e.running(),
        "dbmazz exited during the outage\n{}",
        e.log_tail()
    );

    // StarRocks is back: every row arrives, the daemon never exited.
    for f in down {
        e.sr.remove_fault(f);
    }
    e.wait_for(LONG, "all 20 rows in StarRocks", |e| {
        e.target("items").len() == 20
    })
    .await;
    let rows = target_pairs(&e, "items", "v");
    assert_eq!(
        rows,
        (1..=20).map(|i| (i, format!("v{i}"))).collect::<Vec<_>>()
    );
    e.wait_for(LONG, "Status back to normal", |e| {
        status(e).is_some_and(|s| s["stage"] != "retrying" && s["last_error"] == "")
    })
    .await;
    assert!(e.running(), "dbmazz exited\n{}", e.log_tail());
    assert!(e.sigterm().await.success());
    let log = std::fs::read_to_string(e.log_path()).unwrap();
    assert!(
        log.contains("StarRocks is not reachable at start"),
        "{}",
        e.log_tail()
    );
}
