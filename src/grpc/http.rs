//! The HTTP side of the control plane: `/metrics` (Prometheus text format 0.0.4, the
//! same figures as gRPC Status, built from [`status_snapshot`]), `/healthz` (200 while
//! the process is alive and not failed) and `/readyz` (200 when running, connected to
//! PostgreSQL and not waiting for StarRocks: [`LifecycleStatus::readiness`]).
//!
//! [`LifecycleStatus::readiness`]: crate::lifecycle::LifecycleStatus::readiness

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::proto;
use super::server::ServeError;
use super::service::{status_snapshot, wait_true};
use super::state::{DaemonHandle, DaemonState};
use crate::lifecycle::Dependency;

/// Content type of the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The router (exposed for tests and embedding).
pub fn router(handle: DaemonHandle) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(handle)
}

/// Serves the router on `listener` until `shutdown` is true.
pub async fn run(
    listener: TcpListener,
    handle: DaemonHandle,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let mut sd = Some(shutdown);
    axum::serve(listener, router(handle))
        .with_graceful_shutdown(async move { wait_true(&mut sd).await })
        .await
        .map_err(ServeError::Http)
}

async fn metrics(State(handle): State<DaemonHandle>) -> Response {
    match tokio::task::spawn_blocking(move || render_metrics(&handle)).await {
        Ok(text) => ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("metrics task: {e}\n"),
        )
            .into_response(),
    }
}

async fn healthz(State(handle): State<DaemonHandle>) -> Response {
    let life = handle.lifecycle();
    if life.state == DaemonState::Failed {
        let err = life.error.unwrap_or_default();
        (StatusCode::SERVICE_UNAVAILABLE, format!("failed: {err}\n")).into_response()
    } else {
        (StatusCode::OK, format!("ok: {}\n", life.state)).into_response()
    }
}

async fn readyz(State(handle): State<DaemonHandle>) -> Response {
    match handle.lifecycle().readiness(handle.reader().connected) {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

/// Escapes a label value: backslash, double quote and newline.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes HELP text: backslash and newline.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// Writes the text exposition; each family once, with its HELP and TYPE.
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str, samples: &[(Vec<(&str, &str)>, f64)]) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        for (labels, v) in samples {
            if labels.is_empty() {
                let _ = writeln!(self.out, "{name} {}", fmt_value(*v));
            } else {
                let l: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                    .collect();
                let _ = writeln!(self.out, "{name}{{{}}} {}", l.join(","), fmt_value(*v));
            }
        }
    }

    fn gauge(&mut self, name: &str, help: &str, v: f64) {
        self.family(name, "gauge", help, &[(vec![], v)]);
    }

    fn counter(&mut self, name: &str, help: &str, v: f64) {
        self.family(name, "counter", help, &[(vec![], v)]);
    }
}

fn lsn_value(l: &Option<proto::Lsn>) -> Option<f64> {
    l.as_ref().map(|l| l.value as f64)
}

fn b(v: bool) -> f64 {
    if v {
        1.0
    } else {
        0.0
    }
}

/// The metrics text for a handle.
pub fn render_metrics(handle: &DaemonHandle) -> String {
    render_snapshot(&status_snapshot(handle))
}

/// The metrics text for one status snapshot.
pub fn render_snapshot(s: &proto::StatusResponse) -> String {
    let mut e = Exposition { out: String::new() };
    let reader = s.reader.clone().unwrap_or_default();
    let slot = s.slot.clone().unwrap_or_default();
    let spool = s.spool.clone().unwrap_or_default();

    e.family(
        "dbmazz_info",
        "gauge",
        "Build and job information (always 1).",
        &[(
            vec![
                ("version", s.version.as_str()),
                ("slot", s.slot_name.as_str()),
                ("spool_id", spool.spool_id.as_str()),
            ],
            1.0,
        )],
    );
    let samples: Vec<(Vec<(&str, &str)>, f64)> = DaemonState::ALL
        .iter()
        .map(|st| (vec![("state", st.as_str())], b(s.state == st.as_str())))
        .collect();
    e.family(
        "dbmazz_state",
        "gauge",
        "Daemon state: 1 for the current state, 0 for the others.",
        &samples,
    );
    let deps: Vec<(&str, proto::DependencyStatus)> = Dependency::ALL
        .iter()
        .map(|d| {
            let st = match d {
                Dependency::Postgres => s.postgres.clone(),
                Dependency::StarRocks => s.starrocks.clone(),
            };
            // An absent message (an older daemon) means nothing is known to be wrong.
            let st = st.unwrap_or(proto::DependencyStatus {
                reachable: true,
                ..Default::default()
            });
            (d.key(), st)
        })
        .collect();
    let per_dep = |f: &dyn Fn(&proto::DependencyStatus) -> f64| -> Vec<(Vec<(&str, &str)>, f64)> {
        deps.iter()
            .map(|(k, d)| (vec![("dependency", *k)], f(d)))
            .collect()
    };
    e.family(
        "dbmazz_dependency_up",
        "gauge",
        "1 while the daemon reaches the dependency (postgresql, starrocks); 0 while it retries.",
        &per_dep(&|d| b(d.reachable)),
    );
    e.family(
        "dbmazz_dependency_unreachable_seconds",
        "gauge",
        "Seconds since the dependency became unreachable (0 while reachable).",
        &per_dep(&|d| d.unreachable_seconds),
    );
    e.family(
        "dbmazz_dependency_failed_attempts",
        "gauge",
        "Failed attempts to reach the dependency in the current outage (0 while reachable).",
        &per_dep(&|d| d.attempts as f64),
    );
    e.gauge(
        "dbmazz_uptime_seconds",
        "Seconds since the daemon started.",
        s.uptime_seconds,
    );
    e.gauge(
        "dbmazz_reader_connected",
        "1 when the reader holds a replication connection.",
        b(reader.connected),
    );
    e.counter(
        "dbmazz_reader_reconnects_total",
        "Reconnections of the replication connection.",
        reader.reconnects as f64,
    );
    e.gauge(
        "dbmazz_reader_held_back",
        "1 when reading is held back (slow loader, full spool or paused).",
        b(reader.held_back),
    );
    let lsns = [
        (
            "dbmazz_received_lsn",
            "Highest WAL position received (write_lsn), as a number.",
            &s.received_lsn,
        ),
        (
            "dbmazz_durable_lsn",
            "End LSN of the spool's durable high-water mark, as a number.",
            &s.durable_lsn,
        ),
        (
            "dbmazz_confirmed_lsn",
            "Confirmed LSN (loaded into StarRocks, reported as flush_lsn), as a number.",
            &s.confirmed_lsn,
        ),
        (
            "dbmazz_slot_confirmed_flush_lsn",
            "The slot's confirmed_flush_lsn in pg_replication_slots, as a number.",
            &s.slot_confirmed_flush_lsn,
        ),
        (
            "dbmazz_slot_restart_lsn",
            "The slot's restart_lsn in pg_replication_slots, as a number.",
            &s.slot_restart_lsn,
        ),
        (
            "dbmazz_server_lsn",
            "pg_current_wal_lsn() at the last slot poll, as a number.",
            &slot.server_lsn,
        ),
    ];
    for (name, help, l) in lsns {
        if let Some(v) = lsn_value(l) {
            e.gauge(name, help, v);
        }
    }
    e.gauge(
        "dbmazz_lag_bytes",
        "Bytes of WAL not yet confirmed (server LSN - slot confirmed_flush_lsn, else received - confirmed).",
        s.lag_bytes as f64,
    );
    e.gauge(
        "dbmazz_lag_seconds",
        "Age in seconds of the oldest change not yet loaded (0 when the spool is empty).",
        s.lag_seconds,
    );
    e.gauge(
        "dbmazz_slot_exists",
        "1 when the replication slot exists.",
        b(slot.exists),
    );
    e.gauge(
        "dbmazz_slot_active",
        "1 when the replication slot is active.",
        b(slot.active),
    );
    if let Some(v) = slot.safe_wal_size {
        e.gauge(
            "dbmazz_slot_safe_wal_size_bytes",
            "Bytes of WAL that can be written before the slot is in danger of being lost.",
            v as f64,
        );
    }
    if !slot.wal_status.is_empty() {
        let samples: Vec<(Vec<(&str, &str)>, f64)> = ["reserved", "extended", "unreserved", "lost"]
            .iter()
            .map(|w| (vec![("wal_status", *w)], b(slot.wal_status == *w)))
            .collect();
        e.family(
            "dbmazz_slot_wal_status",
            "gauge",
            "The slot's wal_status: 1 for the current value.",
            &samples,
        );
    }
    e.gauge(
        "dbmazz_spool_pending_records",
        "Durable spool records (changes and commits) not yet loaded.",
        s.spool_records as f64,
    );
    e.gauge(
        "dbmazz_spool_pending_transactions",
        "Durable transactions in the spool not yet loaded.",
        s.spool_txns as f64,
    );
    e.gauge(
        "dbmazz_spool_pending_bytes",
        "Framed bytes of durable spool records not yet loaded.",
        s.spool_bytes as f64,
    );
    e.gauge(
        "dbmazz_spool_unflushed_bytes",
        "Bytes appended to the spool and not yet durable.",
        spool.unflushed_bytes as f64,
    );
    e.gauge(
        "dbmazz_spool_stream_transactions",
        "Open streamed (in-progress) transactions in the spool.",
        spool.stream_txns as f64,
    );
    e.gauge(
        "dbmazz_spool_oldest_pending_age_seconds",
        "Age in seconds of the oldest pending commit in the spool (0 when empty).",
        s.oldest_pending_age_seconds,
    );
    e.gauge(
        "dbmazz_spool_capacity_bytes",
        "Spool capacity (SPOOL_MAX_BYTES).",
        s.spool_capacity_bytes as f64,
    );
    e.gauge(
        "dbmazz_spool_disk_bytes",
        "Bytes of the spool directory on disk.",
        spool.disk_bytes as f64,
    );
    e.gauge(
        "dbmazz_spool_segments",
        "Spool segments on disk.",
        spool.segments as f64,
    );
    e.gauge(
        "dbmazz_spool_full",
        "1 when the spool reached its capacity.",
        b(spool.full),
    );
    e.gauge(
        "dbmazz_reading_paused",
        "1 when reading is paused because the spool is full.",
        b(s.reading_paused),
    );
    e.gauge(
        "dbmazz_spool_durable_seq",
        "Sequence of the spool's durable high-water mark.",
        spool.durable_seq as f64,
    );
    e.gauge(
        "dbmazz_spool_loaded_seq",
        "Sequence of the spool's loaded mark.",
        spool.loaded_seq as f64,
    );
    e.counter(
        "dbmazz_loader_retries_total",
        "Load retries after transient errors.",
        s.loader_retries as f64,
    );
    e.gauge(
        "dbmazz_error",
        "1 when the daemon reports an error (see gRPC Status last_error).",
        b(!s.last_error.is_empty()),
    );

    // Per-table families.
    let tables: Vec<&proto::TableStatus> = s.tables.iter().collect();
    let name_of = |t: &proto::TableStatus| -> String {
        if t.target_table.is_empty() {
            t.source_table.clone()
        } else {
            t.target_table.clone()
        }
    };
    let names: Vec<String> = tables.iter().map(|t| name_of(t)).collect();
    let per = |f: &dyn Fn(&proto::TableStatus) -> f64| -> Vec<(Vec<(&str, &str)>, f64)> {
        tables
            .iter()
            .zip(&names)
            .map(|(t, n)| {
                (
                    vec![("table", n.as_str()), ("source", t.source_table.as_str())],
                    f(t),
                )
            })
            .collect()
    };
    if !tables.is_empty() {
        e.family(
            "dbmazz_table_rows_upserted_total",
            "counter",
            "Rows upserted into the target table.",
            &per(&|t| t.rows_upserted as f64),
        );
        e.family(
            "dbmazz_table_rows_deleted_total",
            "counter",
            "Rows deleted from the target table.",
            &per(&|t| t.rows_deleted as f64),
        );
        e.family(
            "dbmazz_table_truncates_total",
            "counter",
            "Truncates applied to the target table.",
            &per(&|t| t.truncates as f64),
        );
        e.family(
            "dbmazz_table_loads_total",
            "counter",
            "Stream Loads into the target table.",
            &per(&|t| t.loads as f64),
        );
        e.family(
            "dbmazz_table_pending_records",
            "gauge",
            "Change records of the table waiting in the spool.",
            &per(&|t| t.pending_records as f64),
        );
        e.family(
            "dbmazz_table_last_load_timestamp_seconds",
            "gauge",
            "Unix time of the table's last Stream Load (0 when none yet).",
            &per(&|t| t.last_load_unix_ms as f64 / 1000.0),
        );
    }
    e.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_escaping() {
        assert_eq!(
            escape_label(
                r#"a"b\c
d"#
            ),
            r#"a\"b\\c\nd"#
        );
        assert_eq!(fmt_value(f64::INFINITY), "+Inf");
        assert_eq!(fmt_value(3.0), "3");
        assert_eq!(fmt_value(0.5), "0.5");
    }

    #[test]
    fn snapshot_renders_each_family_once() {
        let s = proto::StatusResponse {
            state: "running".into(),
            tables: vec![proto::TableStatus {
                target_table: "t\"x".into(),
                source_table: "public.t".into(),
                rows_upserted: 7,
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = render_snapshot(&s);
        assert!(text.contains("dbmazz_state{state=\"running\"} 1\n"));
        assert!(text.contains(
            "dbmazz_table_rows_upserted_total{table=\"t\\\"x\",source=\"public.t\"} 7\n"
        ));
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        let mut dedup = types.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(types.len(), dedup.len());
    }
}
