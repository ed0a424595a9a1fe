//! The control plane over the network: every rpc with the tonic client (values checked
//! against the handle), the token guarding control calls only, the Watch stream, the
//! Prometheus metrics parsed by a text-format parser, /healthz and /readyz flipping with
//! the state, and the CLI (`status --json`, `pause`) against the test server.

mod grpc_support;

use std::time::Duration;

use dbmazz::core::Lsn;
use dbmazz::grpc::proto;
use dbmazz::grpc::proto::control_client::ControlClient;
use dbmazz::grpc::proto::health_client::HealthClient;
use dbmazz::grpc::proto::status_client::StatusClient;
use dbmazz::grpc::state::{ControlRequest, DaemonState};
use grpc_support::{Harness, TOKEN};
use tonic::Code;

fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn lsn(l: &Option<proto::Lsn>) -> (u64, String) {
    let l = l.as_ref().expect("lsn present");
    (l.value, l.text.clone())
}

#[tokio::test]
async fn health_and_status_values_match_the_handle() {
    let h = Harness::start(Some(TOKEN)).await;
    let mut health = HealthClient::connect(h.grpc_uri()).await.unwrap();
    let r = health
        .check(proto::HealthRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(r.serving);
    assert_eq!(r.state, "running");
    assert_eq!(r.stage, "loading");
    assert!(r.reader_connected);
    assert_eq!(r.error, "");

    let mut status = StatusClient::connect(h.grpc_uri()).await.unwrap();
    // No token needed for status.
    let s = status
        .get(proto::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let stats = h.spool.stats();
    assert_eq!(s.state, "running");
    assert_eq!(s.stage, "loading");
    assert_eq!(s.version, "0.1.0-test");
    assert_eq!(s.slot_name, "dbmazz_slot");
    assert_eq!(lsn(&s.received_lsn), (0x1_0000_0400, "1/400".into()));
    assert_eq!(
        s.durable_lsn.as_ref().unwrap().value,
        stats.durable.end_lsn.0
    );
    assert_eq!(lsn(&s.durable_lsn).1, stats.durable.end_lsn.to_string());
    assert_eq!(stats.durable.end_lsn, Lsn(0x1_0000_0300 + 4 + 9));
    assert_eq!(lsn(&s.confirmed_lsn), (0x1_0000_0010, "1/10".into()));
    assert_eq!(
        lsn(&s.slot_confirmed_flush_lsn),
        (0x1_0000_0010, "1/10".into())
    );
    assert_eq!(lsn(&s.slot_restart_lsn), (0x1_0000_0008, "1/8".into()));
    assert_eq!(s.lag_bytes, 4096);
    assert!(
        s.lag_seconds >= 1.5 && s.lag_seconds < 60.0,
        "{}",
        s.lag_seconds
    );
    // 3 transactions: 9 changes + 3 commits.
    assert_eq!(s.spool_records, 12);
    assert_eq!(s.spool_records, stats.pending_records);
    assert_eq!(s.spool_txns, 3);
    assert_eq!(s.spool_bytes, stats.pending_bytes);
    assert!(s.spool_bytes > 0);
    assert_eq!(s.spool_capacity_bytes, stats.max_bytes);
    assert!(!s.reading_paused);
    assert_eq!(s.last_error, "");
    assert_eq!(s.loader_retries, 3);

    let orders = s
        .tables
        .iter()
        .find(|t| t.target_table == "orders")
        .unwrap();
    assert_eq!(orders.source_table, "public.orders");
    assert_eq!(orders.rows_upserted, 1234);
    assert_eq!(orders.rows_deleted, 56);
    assert_eq!(orders.truncates, 1);
    assert_eq!(orders.loads, 7);
    assert_eq!(orders.pending_records, 5);
    assert_eq!(orders.last_load_label, "dbmazz-abc-orders-1-20");
    assert_eq!(orders.last_load_unix_ms, 1_700_000_000_000);
    assert_eq!(orders.last_load_outcome, "success");
    assert_eq!(orders.last_load_rows, 20);
    // A table with pending changes the loader has not reported yet.
    let items = s
        .tables
        .iter()
        .find(|t| t.source_table == "public.items")
        .unwrap();
    assert_eq!(items.pending_records, 4);
    assert_eq!(items.rows_upserted, 0);

    let slot = s.slot.as_ref().unwrap();
    assert!(slot.exists && slot.active);
    assert_eq!(slot.wal_status, "reserved");
    assert_eq!(slot.safe_wal_size, Some(5 << 30));
    assert_eq!(lsn(&slot.server_lsn), (0x1_0000_1010, "1/1010".into()));
    let reader = s.reader.as_ref().unwrap();
    assert!(reader.connected);
    assert_eq!(reader.protocol_version, 2);
    assert_eq!(reader.reconnects, 2);
    let spool = s.spool.as_ref().unwrap();
    assert_eq!(spool.spool_id, stats.spool_id);
    assert_eq!(spool.durable_seq, stats.durable.seq);
    assert_eq!(spool.pending_txns, 3);

    // Errors and spool pressure show up.
    h.loader
        .send_modify(|l| l.last_error = Some("StarRocks: connection refused".into()));
    h.reader.send_modify(|r| r.held_back = true);
    let s = status
        .get(proto::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.last_error, "StarRocks: connection refused");
    assert_eq!(s.loader_error, "StarRocks: connection refused");
    assert!(!s.reading_paused, "held back but the spool is not full");
    h.set_error("permanent: schema mismatch");
    h.set_state(DaemonState::Failed);
    let s = status
        .get(proto::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.state, "failed");
    assert_eq!(s.last_error, "permanent: schema mismatch");
    let r = health
        .check(proto::HealthRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!r.serving);
    assert_eq!(r.state, "failed");
    assert_eq!(r.error, "permanent: schema mismatch");

    // Without a slot poll, lag falls back to received - confirmed.
    h.slot.send_replace(Default::default());
    let s = status
        .get(proto::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.lag_bytes, 0x400 - 0x10);
    assert!(s.slot_confirmed_flush_lsn.is_none());
    h.stop().await;
}

#[tokio::test]
async fn control_calls_need_the_token_and_reach_the_daemon() {
    let h = Harness::start(Some(TOKEN)).await;
    let mut c = ControlClient::connect(h.grpc_uri()).await.unwrap();

    let e = c.pause(proto::ControlRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(!e.message().contains(TOKEN));
    let e = c
        .pause(with_token(proto::ControlRequest {}, "wrong-token"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = c
        .stop(with_token(proto::ControlRequest {}, &format!("{TOKEN}x")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(h.requests().is_empty(), "refused calls reach nobody");
    assert_eq!(h.handle.state(), DaemonState::Running);

    let r = c
        .pause(with_token(proto::ControlRequest {}, TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert!(r.accepted);
    assert_eq!(r.state, "paused");
    assert_eq!(r.target_state, "paused");
    assert_eq!(h.requests(), vec![ControlRequest::Pause]);

    // Paused twice: answered without bothering the daemon.
    let r = c
        .pause(with_token(proto::ControlRequest {}, TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.state, "paused");
    assert_eq!(h.requests().len(), 1);

    let r = c
        .resume(with_token(proto::ControlRequest {}, TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.state, "running");
    let r = c
        .drain_and_stop(with_token(proto::ControlRequest {}, TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.state, "draining");
    // Pause makes no sense while draining.
    let e = c
        .pause(with_token(proto::ControlRequest {}, TOKEN))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let r = c
        .stop(with_token(proto::ControlRequest {}, TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.state, "stopping");
    assert_eq!(
        h.requests(),
        vec![
            ControlRequest::Pause,
            ControlRequest::Resume,
            ControlRequest::DrainAndStop,
            ControlRequest::Stop
        ]
    );
    // Status and health stay open without a token.
    let mut s = StatusClient::connect(h.grpc_uri()).await.unwrap();
    assert_eq!(
        s.get(proto::StatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .state,
        "stopping"
    );
    h.stop().await;
}

#[tokio::test]
async fn without_a_token_control_is_open() {
    let h = Harness::start(None).await;
    let mut c = ControlClient::connect(h.grpc_uri()).await.unwrap();
    let r = c
        .pause(proto::ControlRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.state, "paused");
    assert_eq!(h.requests(), vec![ControlRequest::Pause]);
    h.stop().await;
}

#[tokio::test]
async fn watch_streams_updates_on_change_and_ends_at_shutdown() {
    let h = Harness::start(None).await;
    let mut s = StatusClient::connect(h.grpc_uri()).await.unwrap();
    // A long period: the second update must come from the change, not the clock.
    let mut stream = s
        .watch(proto::WatchRequest {
            interval_ms: 60_000,
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.state, "running");
    h.loader.send_modify(|l| {
        l.tables.get_mut("orders").unwrap().rows_upserted = 2000;
    });
    let second = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("an update on change")
        .unwrap()
        .unwrap();
    let orders = second
        .tables
        .iter()
        .find(|t| t.target_table == "orders")
        .unwrap();
    assert_eq!(orders.rows_upserted, 2000);
    h.set_state(DaemonState::Paused);
    let third = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(third.state, "paused");

    // Periodic updates with a short period.
    let mut fast = s
        .watch(proto::WatchRequest { interval_ms: 150 })
        .await
        .unwrap()
        .into_inner();
    let t0 = std::time::Instant::now();
    for _ in 0..4 {
        fast.message().await.unwrap().unwrap();
    }
    assert!(t0.elapsed() < Duration::from_secs(3));

    // Shutdown ends the streams (and the servers stop).
    h.shutdown.send_replace(true);
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = stream.message().await {}
    })
    .await;
    assert!(end.is_ok(), "the watch stream ends at shutdown");
    h.stop().await;
}

fn scrape(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
}

fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<_> = s
        .samples
        .iter()
        .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    match found[0].value {
        prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{name}: {other:?}"),
    }
}

#[tokio::test]
async fn metrics_match_the_handle_and_health_endpoints_flip() {
    let h = Harness::start(Some(TOKEN)).await;
    let http = reqwest::Client::new();
    let resp = http.get(h.http_url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = resp.text().await.unwrap();
    let s = scrape(&text);
    let stats = h.spool.stats();
    assert_eq!(value(&s, "dbmazz_state", &[("state", "running")]), 1.0);
    assert_eq!(value(&s, "dbmazz_state", &[("state", "paused")]), 0.0);
    assert_eq!(
        value(
            &s,
            "dbmazz_info",
            &[("version", "0.1.0-test"), ("slot", "dbmazz_slot")]
        ),
        1.0
    );
    assert_eq!(
        value(&s, "dbmazz_received_lsn", &[]),
        0x1_0000_0400u64 as f64
    );
    assert_eq!(
        value(&s, "dbmazz_durable_lsn", &[]),
        stats.durable.end_lsn.0 as f64
    );
    assert_eq!(
        value(&s, "dbmazz_confirmed_lsn", &[]),
        0x1_0000_0010u64 as f64
    );
    assert_eq!(
        value(&s, "dbmazz_slot_confirmed_flush_lsn", &[]),
        0x1_0000_0010u64 as f64
    );
    assert_eq!(
        value(&s, "dbmazz_slot_restart_lsn", &[]),
        0x1_0000_0008u64 as f64
    );
    assert_eq!(
        value(&s, "dbmazz_slot_safe_wal_size_bytes", &[]),
        (5u64 << 30) as f64
    );
    assert_eq!(
        value(&s, "dbmazz_slot_wal_status", &[("wal_status", "reserved")]),
        1.0
    );
    assert_eq!(value(&s, "dbmazz_lag_bytes", &[]), 4096.0);
    assert_eq!(value(&s, "dbmazz_spool_pending_records", &[]), 12.0);
    assert_eq!(value(&s, "dbmazz_spool_pending_transactions", &[]), 3.0);
    assert_eq!(
        value(&s, "dbmazz_spool_pending_bytes", &[]),
        stats.pending_bytes as f64
    );
    assert_eq!(
        value(&s, "dbmazz_spool_capacity_bytes", &[]),
        stats.max_bytes as f64
    );
    assert_eq!(value(&s, "dbmazz_reading_paused", &[]), 0.0);
    assert_eq!(value(&s, "dbmazz_reader_connected", &[]), 1.0);
    assert_eq!(value(&s, "dbmazz_reader_reconnects_total", &[]), 2.0);
    assert_eq!(value(&s, "dbmazz_loader_retries_total", &[]), 3.0);
    let age = value(&s, "dbmazz_spool_oldest_pending_age_seconds", &[]);
    assert!((1.5..60.0).contains(&age), "{age}");
    assert_eq!(
        value(
            &s,
            "dbmazz_table_rows_upserted_total",
            &[("table", "orders")]
        ),
        1234.0
    );
    assert_eq!(
        value(
            &s,
            "dbmazz_table_rows_deleted_total",
            &[("table", "orders")]
        ),
        56.0
    );
    assert_eq!(
        value(&s, "dbmazz_table_loads_total", &[("table", "orders")]),
        7.0
    );
    assert_eq!(
        value(&s, "dbmazz_table_pending_records", &[("table", "orders")]),
        5.0
    );
    assert_eq!(
        value(
            &s,
            "dbmazz_table_pending_records",
            &[("source", "public.items")]
        ),
        4.0
    );
    assert_eq!(
        value(
            &s,
            "dbmazz_table_last_load_timestamp_seconds",
            &[("table", "orders")]
        ),
        1_700_000_000.0
    );
    // HELP and TYPE for every family, each once; types as declared.
    let mut typed = std::collections::HashMap::new();
    for l in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut p = l[7..].split(' ');
        let (n, t) = (p.next().unwrap(), p.next().unwrap());
        assert!(
            typed.insert(n.to_string(), t.to_string()).is_none(),
            "{n} typed twice"
        );
    }
    for sample in &s.samples {
        assert!(
            typed.contains_key(&sample.metric),
            "{} has no TYPE",
            sample.metric
        );
        assert!(
            s.docs.contains_key(&sample.metric),
            "{} has no HELP",
            sample.metric
        );
    }
    assert_eq!(typed["dbmazz_table_rows_upserted_total"], "counter");
    assert_eq!(typed["dbmazz_spool_pending_records"], "gauge");
    // No secret in the metrics.
    assert!(!text.contains(TOKEN));

    // Health endpoints.
    let get = |p: &str| http.get(h.http_url(p)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    h.reader.send_modify(|r| r.connected = false);
    assert_eq!(get("/readyz").await.unwrap().status(), 503);
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    h.reader.send_modify(|r| r.connected = true);
    h.set_state(DaemonState::Paused);
    assert_eq!(get("/readyz").await.unwrap().status(), 503);
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    h.set_state(DaemonState::Running);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    h.set_error("permanent: auth");
    h.set_state(DaemonState::Failed);
    let r = get("/healthz").await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("permanent: auth"));
    assert_eq!(get("/readyz").await.unwrap().status(), 503);
    let s = scrape(
        &http
            .get(h.http_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(value(&s, "dbmazz_state", &[("state", "failed")]), 1.0);
    assert_eq!(value(&s, "dbmazz_state", &[("state", "running")]), 0.0);
    assert_eq!(value(&s, "dbmazz_error", &[]), 1.0);
    h.stop().await;
}

#[tokio::test]
async fn labels_with_quotes_and_backslashes_are_escaped() {
    let h = Harness::start(None).await;
    h.loader.send_modify(|l| {
        let mut t = l.tables["orders"].clone();
        t.target_table = "we\"ird\\name".into();
        l.tables.insert("weird".into(), t);
    });
    let text = reqwest::get(h.http_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            r#"dbmazz_table_rows_upserted_total{table="we\"ird\\name",source="public.orders"} 1234"#
        ),
        "{text}"
    );
    h.stop().await;
}

fn cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_dbmazz"))
        .args(args)
        .env_remove("CONTROL_TOKEN")
        .env_remove("GRPC_LISTEN")
        .env_remove("GRPC_PORT")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_status_json_and_pause() {
    let h = Harness::start(Some(TOKEN)).await;
    let addr = h.grpc.to_string();
    let a = addr.clone();
    let out = tokio::task::spawn_blocking(move || cli(&["status", "--json", "--addr", &a]))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "running");
    assert_eq!(v["received_lsn"]["text"], "1/400");
    assert_eq!(v["received_lsn"]["value"], 0x1_0000_0400u64);
    assert_eq!(v["confirmed_lsn"]["text"], "1/10");
    assert_eq!(v["spool_records"], 12);
    assert_eq!(v["spool_txns"], 3);
    assert_eq!(v["slot"]["wal_status"], "reserved");
    let orders = v["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target_table"] == "orders")
        .unwrap();
    assert_eq!(orders["rows_upserted"], 1234);
    assert_eq!(orders["last_load_outcome"], "success");

    // The readable table.
    let a = addr.clone();
    let out = tokio::task::spawn_blocking(move || cli(&["status", "--addr", &a]))
        .await
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("confirmed LSN"), "{text}");
    assert!(text.contains("1/10"));
    assert!(text.contains("orders"));
    assert!(text.contains("1234"));

    // The live view, two frames.
    let a = addr.clone();
    let out = tokio::task::spawn_blocking(move || {
        cli(&["top", "--addr", &a, "--interval-ms", "100", "--count", "2"])
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.matches("state running").count(), 2, "{text}");

    // pause without a token is refused, with it the daemon gets the request.
    let a = addr.clone();
    let out = tokio::task::spawn_blocking(move || cli(&["pause", "--addr", &a]))
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Unauthenticated"), "{err}");
    assert!(h.requests().is_empty());

    let a = addr.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_dbmazz"))
            .args(["pause", "--addr", &a])
            .env("CONTROL_TOKEN", TOKEN)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("state: paused"));
    assert_eq!(h.requests(), vec![ControlRequest::Pause]);
    assert_eq!(h.handle.state(), DaemonState::Paused);

    let a = addr.clone();
    let out = tokio::task::spawn_blocking(move || {
        cli(&["resume", "--addr", &a, "--token", TOKEN, "--json"])
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "running");
    assert_eq!(
        h.requests(),
        vec![ControlRequest::Pause, ControlRequest::Resume]
    );
    h.stop().await;
}

#[tokio::test]
async fn serve_reports_an_address_in_use() {
    let h = Harness::start(None).await;
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let e = dbmazz::grpc::serve(
        h.handle.clone(),
        h.grpc,
        "127.0.0.1:0".parse().unwrap(),
        None,
        rx,
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains(&h.grpc.to_string()), "{e}");
    h.stop().await;
}

/// An outage the daemon reports (here StarRocks, found by a retrying load) shows in
/// Status (`starrocks` reachable false, since, attempts, error), in /metrics and makes
/// /readyz answer 503 with the reason; over, everything is back to reachable.
#[tokio::test]
async fn outages_show_in_status_metrics_and_readyz() {
    let h = Harness::start(None).await;
    let http = reqwest::Client::new();
    let get = |p: &str| http.get(h.http_url(p)).send();
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let since = std::time::SystemTime::now() - Duration::from_secs(30);
    h.life.send_modify(|l| {
        l.outages.failed(
            dbmazz::lifecycle::Dependency::StarRocks,
            since,
            "items: connection refused".into(),
        );
        l.outages.failed(
            dbmazz::lifecycle::Dependency::StarRocks,
            since,
            "items: connection refused again".into(),
        );
    });
    let mut status = StatusClient::connect(h.grpc_uri()).await.unwrap();
    let s = status
        .get(proto::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let sr = s.starrocks.clone().unwrap();
    assert!(!sr.reachable, "{sr:?}");
    assert_eq!(sr.attempts, 2);
    assert_eq!(sr.last_error, "items: connection refused again");
    assert!(sr.unreachable_seconds >= 30.0, "{sr:?}");
    assert_eq!(
        sr.unreachable_since_unix_ms,
        since
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    );
    assert!(s.postgres.unwrap().reachable);
    let r = get("/readyz").await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.text().await.unwrap().trim(),
        "not ready: StarRocks is unreachable, retrying (failed attempts: 2): items: connection refused again"
    );
    assert_eq!(get("/healthz").await.unwrap().status(), 200, "alive");
    let m = scrape(&get("/metrics").await.unwrap().text().await.unwrap());
    let sr = [("dependency", "starrocks")];
    let pg = [("dependency", "postgresql")];
    assert_eq!(value(&m, "dbmazz_dependency_up", &sr), 0.0);
    assert_eq!(value(&m, "dbmazz_dependency_up", &pg), 1.0);
    assert_eq!(value(&m, "dbmazz_dependency_failed_attempts", &sr), 2.0);
    assert!(value(&m, "dbmazz_dependency_unreachable_seconds", &sr) >= 30.0);
    assert_eq!(value(&m, "dbmazz_dependency_unreachable_seconds", &pg), 0.0);

    h.life
        .send_modify(|l| drop(l.outages.reached(dbmazz::lifecycle::Dependency::StarRocks)));
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let m = scrape(&get("/metrics").await.unwrap().text().await.unwrap());
    assert_eq!(value(&m, "dbmazz_dependency_up", &sr), 1.0);
    h.stop().await;
}

/// Regression: at shutdown the HTTP server (no open connections) ends at once; taking
/// that for the end of the control plane aborted the gRPC server, and the daemon exited
/// with Watch streams cut ("broken pipe") before their final update: its last state
/// (e.g. `failed`) never reached watchers. Here the server runs in its own runtime that
/// is dropped as soon as `serve` says it is done, as the process exit does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_get_the_final_state_before_the_server_is_done() {
    for round in 0..20 {
        let (uri_tx, uri_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let h = Harness::start(None).await;
                uri_tx.send(h.grpc_uri()).unwrap();
                tokio::task::spawn_blocking(move || go_rx.recv())
                    .await
                    .unwrap()
                    .unwrap();
                // The daemon fails and stops its control plane right after.
                h.set_error("permanent: schema mismatch");
                h.set_state(DaemonState::Failed);
                h.stop().await;
            });
            // Dropping the runtime ends every task, as the process exit does.
        });
        let uri = tokio::task::spawn_blocking(move || uri_rx.recv().unwrap())
            .await
            .unwrap();
        let mut s = StatusClient::connect(uri).await.unwrap();
        let mut stream = s
            .watch(proto::WatchRequest {
                interval_ms: 60_000,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(stream.message().await.unwrap().unwrap().state, "running");
        go_tx.send(()).unwrap();
        let mut last = None;
        let end = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match stream.message().await {
                    Ok(Some(m)) => last = Some(m),
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        })
        .await
        .expect("the stream ends");
        tokio::task::spawn_blocking(move || server.join().unwrap())
            .await
            .unwrap();
        assert!(end.is_ok(), "round {round}: the stream was cut: {end:?}");
        let last = last.expect("a final update");
        assert_eq!(last.state, "failed", "round {round}");
        assert_eq!(last.last_error, "permanent: schema mismatch");
    }
}
