//! The control plane of a running `dbmazz run` child, as clients see it: gRPC (tonic),
//! the CLI, the HTTP endpoints, and the helpers the e2e tests share (LSNs, the `items`
//! table, Prometheus scrapes).
#![allow(dead_code)]

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use dbmazz::grpc::proto;
use proto::control_client::ControlClient;
use proto::health_client::HealthClient;
use proto::status_client::StatusClient;
use tonic::transport::{Channel, Endpoint};

use super::e2e::*;

/// How long e2e steps may take.
pub const LONG: Duration = Duration::from_secs(60);

/// PostgreSQL's `X/Y` LSN text as a number.
pub fn parse_lsn(text: &str) -> u64 {
    let (hi, lo) = text
        .trim()
        .split_once('/')
        .unwrap_or_else(|| panic!("not an LSN: {text:?}"));
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

pub fn lsn_of(l: &Option<proto::Lsn>) -> u64 {
    l.as_ref().map(|l| l.value).unwrap_or(0)
}

/// Inserts ids `from..to` in one transaction; returns the WAL insert position after the
/// last change (before its commit): the LSN of the transaction's last change.
pub fn insert_txn(e: &E2e, from: i64, to: i64) -> u64 {
    let out = e.sql(&format!(
        "BEGIN;
         INSERT INTO items SELECT g, 'v' || g FROM generate_series({from}, {}) g;
         SELECT pg_current_wal_insert_lsn();
         COMMIT;",
        to - 1
    ));
    parse_lsn(&out)
}

pub fn converged(e: &E2e) -> bool {
    source_pairs(e, "SELECT id, coalesce(v, '') FROM items ORDER BY id")
        == target_pairs(e, "items", "v")
}

pub fn slot_confirmed(e: &E2e) -> u64 {
    parse_lsn(&e.confirmed_flush())
}

pub fn env_of(e: &E2e, k: &str) -> String {
    e.env
        .iter()
        .find(|(a, _)| a == k)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("{k} not in the harness env"))
}

/// The running daemon's control plane, as a client sees it.
pub struct Api {
    pub ch: Channel,
    pub http: String,
    pub grpc: String,
}

#[derive(Clone, Copy, Debug)]
pub enum Ctl {
    Pause,
    Resume,
    Drain,
    Stop,
}

pub fn with_token<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(Duration::from_secs(10));
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

impl Api {
    /// Connects to the daemon's gRPC port (retrying while it starts) and waits until
    /// Health answers.
    pub async fn connect(e: &E2e) -> Api {
        let grpc = env_of(e, "GRPC_LISTEN");
        let http = format!("http://{}", env_of(e, "HTTP_LISTEN"));
        let ep = Endpoint::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(2));
        let start = Instant::now();
        loop {
            if let Ok(ch) = ep.connect().await {
                let api = Api {
                    ch,
                    http: http.clone(),
                    grpc: grpc.clone(),
                };
                match api.try_health().await {
                    Ok(_) => return api,
                    Err(err) => eprintln!("Health/Check at {grpc} not answered yet: {err}"),
                }
            }
            assert!(
                start.elapsed() < LONG,
                "the control plane did not come up at {grpc}\n{}",
                e.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn try_health(&self) -> Result<proto::HealthResponse, tonic::Status> {
        let mut req = with_token(proto::HealthRequest {}, None);
        req.set_timeout(Duration::from_secs(3));
        HealthClient::new(self.ch.clone())
            .check(req)
            .await
            .map(|r| r.into_inner())
    }

    pub async fn health(&self) -> proto::HealthResponse {
        self.try_health().await.expect("Health/Check")
    }

    pub async fn status(&self) -> proto::StatusResponse {
        StatusClient::new(self.ch.clone())
            .get(with_token(proto::StatusRequest {}, None))
            .await
            .expect("Status/Get")
            .into_inner()
    }

    pub async fn control(
        &self,
        what: Ctl,
        token: Option<&str>,
    ) -> Result<proto::ControlResponse, tonic::Status> {
        let mut c = ControlClient::new(self.ch.clone());
        let req = with_token(proto::ControlRequest {}, token);
        match what {
            Ctl::Pause => c.pause(req).await,
            Ctl::Resume => c.resume(req).await,
            Ctl::Drain => c.drain_and_stop(req).await,
            Ctl::Stop => c.stop(req).await,
        }
        .map(|r| r.into_inner())
    }

    /// Polls Status/Get until `f` holds; panics after `timeout` with the last status.
    pub async fn wait_status(
        &self,
        e: &E2e,
        timeout: Duration,
        what: &str,
        f: impl Fn(&proto::StatusResponse) -> bool,
    ) -> proto::StatusResponse {
        let start = Instant::now();
        loop {
            let s = self.status().await;
            if f(&s) {
                return s;
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for: {what}\nlast status: {s:#?}\n--- daemon log tail ---\n{}",
                    e.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("{}{path}", self.http))
            .await
            .unwrap_or_else(|err| panic!("GET {path}: {err}"));
        let code = r.status().as_u16();
        (code, r.text().await.unwrap())
    }
}

/// `dbmazz <args>` against the daemon (GRPC_LISTEN from the harness env), with only the
/// environment given here.
pub fn cli(e: &E2e, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GRPC_LISTEN", env_of(e, "GRPC_LISTEN"));
    for (k, v) in extra_env {
        c.env(k, v);
    }
    c.output().expect("run the dbmazz CLI")
}

pub fn cli_ok(e: &E2e, args: &[&str], extra_env: &[(&str, &str)]) -> String {
    let out = cli(e, args, extra_env);
    assert!(
        out.status.success(),
        "dbmazz {args:?} failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn scrape(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("/metrics parses as Prometheus text")
}

pub fn metric(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let sample = s
        .samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no sample {name}{labels:?} in /metrics"));
    match sample.value {
        prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Untyped(v) => v,
        ref other => panic!("{name}: unexpected value {other:?}"),
    }
}

/// How many times the daemon log says the control plane listens (runs append to it).
pub fn listening_lines(e: &E2e) -> usize {
    std::fs::read_to_string(e.log_path())
        .unwrap_or_default()
        .matches("control plane listening")
        .count()
}

pub async fn started(e: &mut E2e) -> Api {
    let before = listening_lines(e);
    e.spawn();
    e.wait_for(LONG, "slot created", |e| e.slot_count() == 1)
        .await;
    // Connect only once the port is bound: a connect to a free local port can pick
    // that same port as its source and connect to itself.
    e.wait_for(LONG, "control plane listening", |e| {
        listening_lines(e) > before
    })
    .await;
    let api = Api::connect(e).await;
    api.wait_status(e, LONG, "reader connected", |s| {
        s.reader.as_ref().is_some_and(|r| r.connected)
    })
    .await;
    api
}

/// Collects a Status/Watch stream in the background until it ends (or `limit` passes).
pub fn watch_until_end(
    api: &Api,
    interval_ms: u32,
    limit: Duration,
) -> tokio::task::JoinHandle<(Vec<proto::StatusResponse>, Option<String>)> {
    let mut client = StatusClient::new(api.ch.clone());
    tokio::spawn(async move {
        let mut out = Vec::new();
        let resp = match client.watch(proto::WatchRequest { interval_ms }).await {
            Ok(r) => r,
            Err(e) => return (out, Some(format!("{e:?}"))),
        };
        let mut stream = resp.into_inner();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, stream.message()).await {
                Ok(Ok(Some(m))) => out.push(m),
                Ok(Ok(None)) => break,
                Ok(Err(e)) => return (out, Some(format!("{e:?}"))),
                Err(_) => break,
            }
        }
        (out, None)
    })
}
