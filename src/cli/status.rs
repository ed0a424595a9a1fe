//! `dbmazz status|top|pause|resume|drain|stop`: gRPC clients of a running daemon's
//! control plane. Output goes through the writer passed in (a table, or JSON).

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use serde_json::{json, Value};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::Request;

use super::CliError;
use crate::grpc::proto;

/// Default gRPC address of a daemon (the default of GRPC_LISTEN).
pub const DEFAULT_ADDR: &str = "127.0.0.1:50051";

/// Where the daemon listens and how to authenticate.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// gRPC address of the daemon (host:port or http://host:port); defaults to
    /// GRPC_LISTEN, else 127.0.0.1:GRPC_PORT, else 127.0.0.1:50051.
    #[arg(long, value_name = "ADDR")]
    pub addr: Option<String>,
    /// Bearer token for control calls (CONTROL_TOKEN).
    #[arg(
        long,
        env = "CONTROL_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
}

/// `dbmazz status` options.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Machine-readable output (one JSON object; with --watch one per line).
    #[arg(long)]
    pub json: bool,
    /// Live view: refresh a compact table as the daemon reports.
    #[arg(long)]
    pub watch: bool,
    /// Refresh period of --watch, in milliseconds.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub interval_ms: u32,
    /// With --watch: stop after this many updates (default: until the daemon stops).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

/// A control command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlCommand {
    Pause,
    Resume,
    Drain,
    Stop,
}

impl ClientArgs {
    /// The endpoint URI.
    pub fn uri(&self) -> String {
        let addr = self
            .addr
            .clone()
            .filter(|a| !a.is_empty())
            .or_else(|| std::env::var("GRPC_LISTEN").ok().filter(|a| !a.is_empty()))
            .or_else(|| {
                std::env::var("GRPC_PORT")
                    .ok()
                    .filter(|p| !p.is_empty())
                    .map(|p| format!("127.0.0.1:{p}"))
            })
            .unwrap_or_else(|| DEFAULT_ADDR.to_string());
        let addr = addr
            .replace("0.0.0.0:", "127.0.0.1:")
            .replace("[::]:", "[::1]:");
        if addr.starts_with("http://") || addr.starts_with("https://") {
            addr
        } else {
            format!("http://{addr}")
        }
    }

    async fn channel(&self) -> Result<Channel, CliError> {
        let uri = self.uri();
        let ep = Endpoint::from_shared(uri.clone())
            .map_err(|e| CliError::Usage(format!("--addr {uri:?}: {e}")))?
            .connect_timeout(Duration::from_secs(5));
        ep.connect()
            .await
            .map_err(|e| CliError::Other(format!("cannot reach the daemon at {uri}: {e}")))
    }

    fn request<T>(&self, msg: T) -> Result<Request<T>, CliError> {
        self.request_with(msg, Some(Duration::from_secs(10)))
    }

    fn request_with<T>(&self, msg: T, timeout: Option<Duration>) -> Result<Request<T>, CliError> {
        let mut req = Request::new(msg);
        if let Some(t) = timeout {
            req.set_timeout(t);
        }
        if let Some(t) = self.token.as_deref().filter(|t| !t.is_empty()) {
            let v: MetadataValue<_> = format!("Bearer {t}")
                .parse()
                .map_err(|_| CliError::Usage("the control token has invalid characters".into()))?;
            req.metadata_mut().insert("authorization", v);
        }
        Ok(req)
    }
}

fn rpc_error(what: &str, s: tonic::Status) -> CliError {
    CliError::Other(format!("{what}: {} ({:?})", s.message(), s.code()))
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Io)
}

/// Runs `dbmazz status`.
pub fn status(args: &StatusArgs, clear_screen: bool, out: &mut dyn Write) -> Result<(), CliError> {
    runtime()?.block_on(status_async(args, clear_screen, out))
}

async fn status_async(
    args: &StatusArgs,
    clear_screen: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut client = proto::status_client::StatusClient::new(args.client.channel().await?);
    if !args.watch {
        let s = client
            .get(args.client.request(proto::StatusRequest {})?)
            .await
            .map_err(|e| rpc_error("status", e))?
            .into_inner();
        if args.json {
            serde_json::to_writer_pretty(&mut *out, &status_json(&s))?;
            writeln!(out)?;
        } else {
            write_table(&s, out)?;
        }
        return Ok(());
    }
    // A watch runs for as long as the user wants: no deadline.
    let req = args.client.request_with(
        proto::WatchRequest {
            interval_ms: args.interval_ms,
        },
        None,
    )?;
    let mut stream = client
        .watch(req)
        .await
        .map_err(|e| rpc_error("watch", e))?
        .into_inner();
    let mut n = 0u64;
    while let Some(s) = stream.message().await.map_err(|e| rpc_error("watch", e))? {
        if args.json {
            serde_json::to_writer(&mut *out, &status_json(&s))?;
            writeln!(out)?;
        } else {
            if clear_screen {
                write!(out, "\x1b[2J\x1b[H")?;
            }
            write_compact(&s, out)?;
            if !clear_screen {
                writeln!(out)?;
            }
        }
        out.flush()?;
        n += 1;
        if args.count.is_some_and(|c| n >= c) {
            return Ok(());
        }
    }
    writeln!(out, "the daemon ended the status stream")?;
    Ok(())
}

/// Runs a control command; prints the daemon's answer.
pub fn control(
    cmd: ControlCommand,
    args: &ClientArgs,
    json_out: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    runtime()?.block_on(async {
        let mut client = proto::control_client::ControlClient::new(args.channel().await?);
        let req = args.request(proto::ControlRequest {})?;
        let (name, r) = match cmd {
            ControlCommand::Pause => ("pause", client.pause(req).await),
            ControlCommand::Resume => ("resume", client.resume(req).await),
            ControlCommand::Drain => ("drain", client.drain_and_stop(req).await),
            ControlCommand::Stop => ("stop", client.stop(req).await),
        };
        let r = r.map_err(|e| rpc_error(name, e))?.into_inner();
        if json_out {
            let v = json!({
                "accepted": r.accepted,
                "state": r.state,
                "target_state": r.target_state,
                "message": r.message,
            });
            serde_json::to_writer(&mut *out, &v)?;
            writeln!(out)?;
        } else {
            writeln!(out, "{}: {} (state: {})", name, r.message, r.state)?;
        }
        Ok(())
    })
}

fn lsn_text(l: &Option<proto::Lsn>) -> String {
    l.as_ref()
        .map(|l| l.text.clone())
        .unwrap_or_else(|| "-".into())
}

fn dependency_json(d: &Option<proto::DependencyStatus>) -> Value {
    let d = d.clone().unwrap_or(proto::DependencyStatus {
        reachable: true,
        ..Default::default()
    });
    json!({
        "reachable": d.reachable,
        "unreachable_since_unix_ms": d.unreachable_since_unix_ms,
        "unreachable_seconds": d.unreachable_seconds,
        "attempts": d.attempts,
        "last_error": d.last_error,
    })
}

/// `reachable`, or how long it has been unreachable and why.
fn dependency_text(d: &Option<proto::DependencyStatus>) -> String {
    match d {
        Some(d) if !d.reachable => format!(
            "unreachable for {:.0}s, retrying ({} failed attempts): {}",
            d.unreachable_seconds, d.attempts, d.last_error
        ),
        _ => "reachable".into(),
    }
}

fn lsn_json(l: &Option<proto::Lsn>) -> Value {
    match l {
        Some(l) => json!({"value": l.value, "text": l.text}),
        None => Value::Null,
    }
}

/// The status as JSON (stable field names, LSNs as `{value, text}`).
pub fn status_json(s: &proto::StatusResponse) -> Value {
    let reader = s.reader.clone().unwrap_or_default();
    let slot = s.slot.clone().unwrap_or_default();
    let spool = s.spool.clone().unwrap_or_default();
    let tables: Vec<Value> = s
        .tables
        .iter()
        .map(|t| {
            json!({
                "target_table": t.target_table,
                "source_table": t.source_table,
                "rows_upserted": t.rows_upserted,
                "rows_deleted": t.rows_deleted,
                "truncates": t.truncates,
                "loads": t.loads,
                "pending_records": t.pending_records,
                "last_load_label": t.last_load_label,
                "last_load_unix_ms": t.last_load_unix_ms,
                "last_load_outcome": t.last_load_outcome,
                "last_load_rows": t.last_load_rows,
            })
        })
        .collect();
    let reader = json!({
        "connected": reader.connected,
        "protocol_version": reader.protocol_version,
        "received_lsn": lsn_json(&reader.received_lsn),
        "last_commit_end_lsn": lsn_json(&reader.last_commit_end_lsn),
        "reported_flush_lsn": lsn_json(&reader.reported_flush_lsn),
        "held_back": reader.held_back,
        "reconnects": reader.reconnects,
        "keepalive_replies": reader.keepalive_replies,
        "status_updates": reader.status_updates,
        "last_error": reader.last_error,
    });
    let slot = json!({
        "name": slot.name,
        "exists": slot.exists,
        "active": slot.active,
        "confirmed_flush_lsn": lsn_json(&slot.confirmed_flush_lsn),
        "restart_lsn": lsn_json(&slot.restart_lsn),
        "wal_status": slot.wal_status,
        "safe_wal_size": slot.safe_wal_size,
        "lag_bytes": slot.lag_bytes,
        "server_lsn": lsn_json(&slot.server_lsn),
        "checked_at_unix_ms": slot.checked_at_unix_ms,
        "error": slot.error,
    });
    let spool = json!({
        "spool_id": spool.spool_id,
        "dir": spool.dir,
        "durable_seq": spool.durable_seq,
        "durable_lsn": lsn_json(&spool.durable_lsn),
        "loaded_seq": spool.loaded_seq,
        "confirmed_lsn": lsn_json(&spool.confirmed_lsn),
        "pending_records": spool.pending_records,
        "pending_txns": spool.pending_txns,
        "pending_bytes": spool.pending_bytes,
        "unflushed_bytes": spool.unflushed_bytes,
        "stream_txns": spool.stream_txns,
        "stream_bytes": spool.stream_bytes,
        "oldest_pending_age_seconds": spool.oldest_pending_age_seconds,
        "oldest_pending_commit_lsn": lsn_json(&spool.oldest_pending_commit_lsn),
        "segments": spool.segments,
        "disk_bytes": spool.disk_bytes,
        "capacity_bytes": spool.capacity_bytes,
        "full": spool.full,
        "reading_paused": spool.reading_paused,
    });
    json!({
        "version": s.version,
        "state": s.state,
        "stage": s.stage,
        "activity": s.activity,
        "postgres": dependency_json(&s.postgres),
        "starrocks": dependency_json(&s.starrocks),
        "started_at_unix_ms": s.started_at_unix_ms,
        "uptime_seconds": s.uptime_seconds,
        "slot_name": s.slot_name,
        "received_lsn": lsn_json(&s.received_lsn),
        "durable_lsn": lsn_json(&s.durable_lsn),
        "confirmed_lsn": lsn_json(&s.confirmed_lsn),
        "slot_confirmed_flush_lsn": lsn_json(&s.slot_confirmed_flush_lsn),
        "slot_restart_lsn": lsn_json(&s.slot_restart_lsn),
        "lag_bytes": s.lag_bytes,
        "lag_seconds": s.lag_seconds,
        "spool_records": s.spool_records,
        "spool_txns": s.spool_txns,
        "spool_bytes": s.spool_bytes,
        "oldest_pending_age_seconds": s.oldest_pending_age_seconds,
        "spool_capacity_bytes": s.spool_capacity_bytes,
        "reading_paused": s.reading_paused,
        "last_error": s.last_error,
        "loader_retries": s.loader_retries,
        "loader_error": s.loader_error,
        "tables": tables,
        "reader": reader,
        "slot": slot,
        "spool": spool,
    })
}

/// Human-readable byte count.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn ago(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return "-".into();
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    format!("{:.1}s ago", now.saturating_sub(unix_ms) as f64 / 1000.0)
}

fn table_name(t: &proto::TableStatus) -> &str {
    if t.target_table.is_empty() {
        &t.source_table
    } else {
        &t.target_table
    }
}

/// The full status as an aligned table.
pub fn write_table(s: &proto::StatusResponse, out: &mut dyn Write) -> std::io::Result<()> {
    let reader = s.reader.clone().unwrap_or_default();
    let slot = s.slot.clone().unwrap_or_default();
    let spool = s.spool.clone().unwrap_or_default();
    let mut rows: Vec<(&str, String)> = vec![
        ("state", s.state.clone()),
        ("stage", s.stage.clone()),
        ("PostgreSQL", dependency_text(&s.postgres)),
        ("StarRocks", dependency_text(&s.starrocks)),
        ("version", s.version.clone()),
        ("uptime", format!("{:.0}s", s.uptime_seconds)),
        (
            "reader",
            format!(
                "{} (protocol v{}, reconnects {}){}",
                if reader.connected {
                    "connected"
                } else {
                    "disconnected"
                },
                reader.protocol_version,
                reader.reconnects,
                if reader.held_back { ", held back" } else { "" }
            ),
        ),
        ("received LSN", lsn_text(&s.received_lsn)),
        ("durable LSN", lsn_text(&s.durable_lsn)),
        ("confirmed LSN", lsn_text(&s.confirmed_lsn)),
        (
            "slot",
            format!(
                "{} ({}{}{})",
                slot.name,
                if slot.exists {
                    if slot.active {
                        "active"
                    } else {
                        "inactive"
                    }
                } else {
                    "missing"
                },
                if slot.wal_status.is_empty() {
                    String::new()
                } else {
                    format!(", wal_status {}", slot.wal_status)
                },
                slot.safe_wal_size
                    .map(|v| format!(", safe_wal_size {}", human_bytes(v.max(0) as u64)))
                    .unwrap_or_default(),
            ),
        ),
        (
            "slot confirmed_flush",
            lsn_text(&s.slot_confirmed_flush_lsn),
        ),
        ("slot restart_lsn", lsn_text(&s.slot_restart_lsn)),
        (
            "lag",
            format!("{} / {:.1}s", human_bytes(s.lag_bytes), s.lag_seconds),
        ),
        (
            "spool depth",
            format!(
                "{} records, {} txns, {}",
                s.spool_records,
                s.spool_txns,
                human_bytes(s.spool_bytes)
            ),
        ),
        (
            "spool capacity",
            format!(
                "{} ({} on disk){}",
                human_bytes(s.spool_capacity_bytes),
                human_bytes(spool.disk_bytes),
                if s.reading_paused {
                    ", FULL: reading paused"
                } else {
                    ""
                }
            ),
        ),
        (
            "oldest pending",
            format!("{:.1}s", s.oldest_pending_age_seconds),
        ),
        ("spool id", spool.spool_id.clone()),
        ("loader retries", s.loader_retries.to_string()),
        (
            "last error",
            if s.last_error.is_empty() {
                "-".into()
            } else {
                s.last_error.clone()
            },
        ),
    ];
    if !s.activity.is_empty() && s.activity != s.stage {
        rows.insert(2, ("activity", s.activity.clone()));
    }
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in &rows {
        writeln!(out, "{k:<w$}  {v}")?;
    }
    if !s.tables.is_empty() {
        writeln!(out)?;
        let name_w = s
            .tables
            .iter()
            .map(|t| table_name(t).len())
            .max()
            .unwrap_or(5)
            .max(5);
        writeln!(
            out,
            "{:<name_w$}  {:>12}  {:>12}  {:>8}  {:>10}  {:<12}  LAST LOAD",
            "TABLE", "UPSERTED", "DELETED", "LOADS", "PENDING", "WHEN"
        )?;
        for t in &s.tables {
            writeln!(
                out,
                "{:<name_w$}  {:>12}  {:>12}  {:>8}  {:>10}  {:<12}  {}{}",
                table_name(t),
                t.rows_upserted,
                t.rows_deleted,
                t.loads,
                t.pending_records,
                ago(t.last_load_unix_ms),
                if t.last_load_outcome.is_empty() {
                    "-"
                } else {
                    &t.last_load_outcome
                },
                if t.last_load_label.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", t.last_load_label)
                },
            )?;
        }
    }
    Ok(())
}

/// The compact live view of `status --watch` / `top`.
pub fn write_compact(s: &proto::StatusResponse, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "dbmazz {}  state {}  stage {}  confirmed {}  received {}",
        s.version,
        s.state,
        s.stage,
        lsn_text(&s.confirmed_lsn),
        lsn_text(&s.received_lsn)
    )?;
    writeln!(
        out,
        "lag {} / {:.1}s   spool {} records, {} txns, {} of {}{}",
        human_bytes(s.lag_bytes),
        s.lag_seconds,
        s.spool_records,
        s.spool_txns,
        human_bytes(s.spool_bytes),
        human_bytes(s.spool_capacity_bytes),
        if s.reading_paused {
            "  FULL (reading paused)"
        } else {
            ""
        }
    )?;
    for (name, d) in [("PostgreSQL", &s.postgres), ("StarRocks", &s.starrocks)] {
        if d.as_ref().is_some_and(|d| !d.reachable) {
            writeln!(out, "{name} {}", dependency_text(d))?;
        }
    }
    if !s.activity.is_empty() && s.activity != s.stage {
        writeln!(out, "{}", s.activity)?;
    }
    if !s.last_error.is_empty() {
        writeln!(out, "error: {}", s.last_error)?;
    }
    let name_w = s
        .tables
        .iter()
        .map(|t| table_name(t).len())
        .max()
        .unwrap_or(5)
        .max(5);
    writeln!(
        out,
        "{:<name_w$}  {:>12}  {:>12}  {:>10}  LAST LOAD",
        "TABLE", "UPSERTED", "DELETED", "PENDING"
    )?;
    for t in &s.tables {
        writeln!(
            out,
            "{:<name_w$}  {:>12}  {:>12}  {:>10}  {}",
            table_name(t),
            t.rows_upserted,
            t.rows_deleted,
            t.pending_records,
            if t.last_load_outcome.is_empty() {
                "-"
            } else {
                &t.last_load_outcome
            },
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_forms() {
        let a = ClientArgs {
            addr: Some("127.0.0.1:6000".into()),
            token: None,
        };
        assert_eq!(a.uri(), "http://127.0.0.1:6000");
        let a = ClientArgs {
            addr: Some("0.0.0.0:6000".into()),
            token: None,
        };
        assert_eq!(a.uri(), "http://127.0.0.1:6000");
        let a = ClientArgs {
            addr: Some("http://h:1".into()),
            token: None,
        };
        assert_eq!(a.uri(), "http://h:1");
    }

    #[test]
    fn outages_show_in_the_table() {
        let s = proto::StatusResponse {
            state: "starting".into(),
            stage: "waiting for PostgreSQL".into(),
            activity: "waiting for PostgreSQL".into(),
            postgres: Some(proto::DependencyStatus {
                reachable: false,
                unreachable_seconds: 12.4,
                attempts: 3,
                last_error: "connection refused".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut out = Vec::new();
        write_table(&s, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(
                "PostgreSQL            unreachable for 12s, retrying (3 failed attempts): connection refused\n"
            ),
            "{text}"
        );
        assert!(text.contains("StarRocks             reachable\n"), "{text}");
        assert!(!text.contains("activity"), "same as the stage: {text}");
        let j = status_json(&s);
        assert_eq!(j["postgres"]["attempts"], 3);
        assert_eq!(j["starrocks"]["reachable"], true);
        assert_eq!(j["activity"], "waiting for PostgreSQL");
    }

    #[test]
    fn bytes() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
