//! The gRPC services (`dbmazz.v1.Health`, `Status`, `Control`) implemented over a
//! [`DaemonHandle`], and [`status_snapshot`], the one place that turns the handle's views
//! into the status figures (the HTTP metrics use the same snapshot).
//!
//! Status calls only read watch channels and the spool's counters. Control calls check
//! the bearer token (when one is configured), ask the lifecycle whether the request is
//! legal now ([`lifecycle::on_request`]), hand it to the daemon and return at once (after
//! at most [`CONTROL_SETTLE`]) with the daemon's state.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::SecretString;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status as RpcStatus};
use tracing::{info, warn};

use super::proto;
use super::state::{ControlRequest, DaemonHandle};
use crate::core::Lsn;
use crate::lifecycle::{self, Decision, Dependency, LifecycleStatus};

/// How long a control call waits for the daemon to reach the requested state before it
/// returns the state it sees.
pub const CONTROL_SETTLE: Duration = Duration::from_millis(500);

/// Smallest period of the Watch stream.
pub const MIN_WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// How long the final Watch update at shutdown may wait for a slow client.
const FINAL_SEND: Duration = Duration::from_secs(1);

/// Default period of the Watch stream.
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_millis(1000);

fn lsn(l: Lsn) -> Option<proto::Lsn> {
    Some(proto::Lsn {
        value: l.0,
        text: l.to_string(),
    })
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn dependency(life: &LifecycleStatus, dep: Dependency, now: SystemTime) -> proto::DependencyStatus {
    match life.outages.get(dep) {
        None => proto::DependencyStatus {
            reachable: true,
            ..Default::default()
        },
        Some(o) => proto::DependencyStatus {
            reachable: false,
            unreachable_since_unix_ms: unix_ms(o.since),
            unreachable_seconds: now
                .duration_since(o.since)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            attempts: o.attempts,
            last_error: o.last_error.clone(),
        },
    }
}

/// The most relevant error: the permanent one, else the loader's, the reader's, an
/// outage found by the daemon itself (startup), the slot poller's (when given).
fn last_error(
    life: &LifecycleStatus,
    loader: &super::state::LoaderStatus,
    reader: &crate::connectors::sources::postgres::reader::ReaderStatus,
    slot: Option<&super::state::SlotHealth>,
) -> String {
    let outage = || {
        Dependency::ALL.into_iter().find_map(|d| {
            life.outages
                .get(d)
                .map(|o| format!("waiting for {d}: {}", o.last_error))
        })
    };
    life.error
        .clone()
        .or_else(|| loader.last_error.clone())
        .or_else(|| reader.last_error.clone())
        .or_else(outage)
        .or_else(|| slot.and_then(|s| s.error.clone()))
        .unwrap_or_default()
}

/// Reads every view of the handle into one status message.
pub fn status_snapshot(handle: &DaemonHandle) -> proto::StatusResponse {
    let inner = &handle.inner;
    let life = handle.lifecycle();
    let state = life.state;
    let reader = handle.reader();
    let loader = handle.loader();
    let slot = inner.slot.borrow().clone();
    let started = handle.pipeline().is_some();
    let spool = handle.spool_stats();
    let now = SystemTime::now();

    let confirmed = spool
        .as_ref()
        .map_or(Lsn::ZERO, |s| s.loaded.confirmed_lsn)
        .max(loader.confirmed_lsn);
    let lag_bytes = match (slot.lag_bytes, slot.error.is_none() && slot.exists) {
        (Some(b), true) => b,
        _ => reader.received_lsn.0.saturating_sub(confirmed.0),
    };
    let age = spool
        .as_ref()
        .and_then(|s| s.oldest_pending_age_secs)
        .unwrap_or(0.0);
    let reading_paused = spool.as_ref().is_some_and(|s| s.full) && reader.held_back;
    let per_table = spool
        .as_ref()
        .map(|s| s.per_table.as_slice())
        .unwrap_or(&[]);

    let mut tables: Vec<proto::TableStatus> = loader
        .tables
        .values()
        .map(|t| {
            let last = t.last_load.clone().unwrap_or_default();
            proto::TableStatus {
                target_table: t.target_table.clone(),
                source_table: t.source_table.clone(),
                rows_upserted: t.rows_upserted,
                rows_deleted: t.rows_deleted,
                truncates: t.truncates,
                loads: t.loads,
                pending_records: per_table
                    .iter()
                    .filter(|c| c.name == t.source_table)
                    .map(|c| c.records)
                    .sum(),
                last_load_label: last.label,
                last_load_unix_ms: last.at_unix_ms,
                last_load_outcome: last.outcome,
                last_load_rows: last.rows,
            }
        })
        .collect();
    // Tables with pending changes the loader has not reported on yet.
    for c in per_table {
        if c.records > 0 && !loader.tables.values().any(|t| t.source_table == c.name) {
            tables.push(proto::TableStatus {
                source_table: c.name.clone(),
                pending_records: c.records,
                ..Default::default()
            });
        }
    }

    let last_error = last_error(&life, &loader, &reader, Some(&slot));
    // Before the pipeline runs, the stage is the startup step.
    let stage = if started {
        loader.stage.to_string()
    } else {
        life.activity.clone()
    };
    let spool_status = spool.as_ref().map(|spool| proto::SpoolStatus {
        spool_id: spool.spool_id.clone(),
        dir: spool.dir.clone(),
        durable_seq: spool.durable.seq,
        durable_lsn: lsn(spool.durable.end_lsn),
        loaded_seq: spool.loaded.seq,
        confirmed_lsn: lsn(spool.loaded.confirmed_lsn),
        pending_records: spool.pending_records,
        pending_txns: spool.pending_txns,
        pending_bytes: spool.pending_bytes,
        unflushed_bytes: spool.unflushed_bytes,
        stream_txns: spool.stream_txns as u64,
        stream_bytes: spool.stream_bytes,
        oldest_pending_age_seconds: spool.oldest_pending_age_secs,
        oldest_pending_commit_lsn: spool.oldest_pending.and_then(|p| lsn(p.commit_lsn)),
        segments: spool.segments as u64,
        disk_bytes: spool.disk_bytes,
        capacity_bytes: spool.max_bytes,
        full: spool.full,
        reading_paused,
    });

    proto::StatusResponse {
        version: inner.version.to_string(),
        state: state.as_str().to_string(),
        stage,
        started_at_unix_ms: unix_ms(inner.started_at),
        uptime_seconds: now
            .duration_since(inner.started_at)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0),
        slot_name: inner.slot_name.clone(),
        received_lsn: lsn(reader.received_lsn),
        durable_lsn: spool.as_ref().and_then(|s| lsn(s.durable.end_lsn)),
        confirmed_lsn: lsn(confirmed),
        slot_confirmed_flush_lsn: slot.confirmed_flush_lsn.and_then(lsn),
        slot_restart_lsn: slot.restart_lsn.and_then(lsn),
        lag_bytes,
        lag_seconds: age,
        spool_records: spool.as_ref().map_or(0, |s| s.pending_records),
        spool_txns: spool.as_ref().map_or(0, |s| s.pending_txns),
        spool_bytes: spool.as_ref().map_or(0, |s| s.pending_bytes),
        oldest_pending_age_seconds: age,
        spool_capacity_bytes: spool.as_ref().map_or(0, |s| s.max_bytes),
        reading_paused,
        tables,
        last_error,
        reader: Some(proto::ReaderStatus {
            connected: reader.connected,
            protocol_version: reader.protocol_version,
            received_lsn: lsn(reader.received_lsn),
            last_commit_end_lsn: lsn(reader.last_commit_end),
            reported_flush_lsn: lsn(reader.reported_flush_lsn),
            held_back: reader.held_back,
            reconnects: reader.reconnects,
            keepalive_replies: reader.keepalive_replies,
            status_updates: reader.status_updates,
            last_error: reader.last_error.clone().unwrap_or_default(),
        }),
        slot: Some(proto::SlotStatus {
            name: if slot.slot_name.is_empty() {
                inner.slot_name.clone()
            } else {
                slot.slot_name.clone()
            },
            exists: slot.exists,
            active: slot.active,
            confirmed_flush_lsn: slot.confirmed_flush_lsn.and_then(lsn),
            restart_lsn: slot.restart_lsn.and_then(lsn),
            wal_status: slot.wal_status.clone().unwrap_or_default(),
            safe_wal_size: slot.safe_wal_size,
            lag_bytes: slot.lag_bytes,
            server_lsn: slot.server_lsn.and_then(lsn),
            checked_at_unix_ms: slot.checked_at_unix_ms,
            error: slot.error.clone().unwrap_or_default(),
        }),
        spool: spool_status,
        loader_retries: loader.retries,
        loader_error: loader.last_error.clone().unwrap_or_default(),
        postgres: Some(dependency(&life, Dependency::Postgres, now)),
        starrocks: Some(dependency(&life, Dependency::StarRocks, now)),
        activity: life.activity.clone(),
    }
}

/// The health answer for a handle.
pub fn health(handle: &DaemonHandle) -> proto::HealthResponse {
    let life = handle.lifecycle();
    let reader = handle.reader();
    let loader = handle.loader();
    let stage = if handle.pipeline().is_some() {
        loader.stage.to_string()
    } else {
        life.activity.clone()
    };
    proto::HealthResponse {
        serving: life.state.is_serving(),
        state: life.state.as_str().to_string(),
        stage,
        error: last_error(&life, &loader, &reader, None),
        reader_connected: reader.connected,
    }
}

/// `dbmazz.v1.Health`.
#[derive(Clone)]
pub struct HealthService {
    handle: DaemonHandle,
}

impl HealthService {
    pub fn new(handle: DaemonHandle) -> Self {
        Self { handle }
    }
}

#[tonic::async_trait]
impl proto::health_server::Health for HealthService {
    async fn check(
        &self,
        _req: Request<proto::HealthRequest>,
    ) -> Result<Response<proto::HealthResponse>, RpcStatus> {
        Ok(Response::new(health(&self.handle)))
    }
}

/// Keeps count of the open Watch streams, so that a shutdown lets them deliver their
/// final update and end before the connections close (a connection closed under an
/// open stream can lose what was still on its way to the client).
#[derive(Clone)]
pub struct WatchStreams(Arc<watch::Sender<()>>);

impl Default for WatchStreams {
    fn default() -> Self {
        Self::new()
    }
}

impl WatchStreams {
    pub fn new() -> Self {
        WatchStreams(Arc::new(watch::channel(()).0))
    }

    /// Held by a stream for as long as it is open.
    fn enter(&self) -> watch::Receiver<()> {
        self.0.subscribe()
    }

    /// Resolves once no Watch stream is open.
    pub async fn ended(&self) {
        self.0.closed().await
    }
}

/// `dbmazz.v1.Status`.
#[derive(Clone)]
pub struct StatusService {
    handle: DaemonHandle,
    shutdown: Option<watch::Receiver<bool>>,
    streams: WatchStreams,
}

impl StatusService {
    pub fn new(handle: DaemonHandle) -> Self {
        Self {
            handle,
            shutdown: None,
            streams: WatchStreams::new(),
        }
    }

    /// Counts the Watch streams in `streams`.
    pub fn with_streams(mut self, streams: WatchStreams) -> Self {
        self.streams = streams;
        self
    }

    /// Ends Watch streams when `shutdown` turns true (so a graceful stop does not wait
    /// for clients that watch forever).
    pub fn with_shutdown(mut self, shutdown: watch::Receiver<bool>) -> Self {
        self.shutdown = Some(shutdown);
        self
    }
}

/// Resolves once the flag is true or its sender is gone; never with `None`.
pub(crate) async fn wait_true(rx: &mut Option<watch::Receiver<bool>>) {
    match rx {
        Some(r) => {
            let _ = r.wait_for(|v| *v).await;
        }
        None => std::future::pending::<()>().await,
    }
}

type StatusStream = Pin<Box<dyn Stream<Item = Result<proto::StatusResponse, RpcStatus>> + Send>>;

/// Waits for a change of a watch receiver; pends forever once its sender is gone, so a
/// dropped view never turns the select loop into a busy loop.
async fn changed<T>(rx: &mut Option<watch::Receiver<T>>) {
    match rx {
        Some(r) => {
            if r.changed().await.is_err() {
                *rx = None;
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

#[tonic::async_trait]
impl proto::status_server::Status for StatusService {
    async fn get(
        &self,
        _req: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::StatusResponse>, RpcStatus> {
        let handle = self.handle.clone();
        // The spool's disk figure may walk the directory: keep it off the reactor.
        let snap = tokio::task::spawn_blocking(move || status_snapshot(&handle))
            .await
            .map_err(|e| RpcStatus::internal(format!("status task: {e}")))?;
        Ok(Response::new(snap))
    }

    type WatchStream = StatusStream;

    async fn watch(
        &self,
        req: Request<proto::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, RpcStatus> {
        let interval = match req.get_ref().interval_ms {
            0 => DEFAULT_WATCH_INTERVAL,
            ms => Duration::from_millis(u64::from(ms)).max(MIN_WATCH_INTERVAL),
        };
        let handle = self.handle.clone();
        let mut shutdown = self.shutdown.clone();
        let open = self.streams.enter();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let _open = open;
            let mut life = Some(handle.inner.lifecycle.clone());
            // The loader's view appears once the pipeline runs.
            let mut loader = None;
            let mut slot = Some(handle.inner.slot.clone());
            // The first snapshot goes out at once; the clock starts after it.
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let h = handle.clone();
                let snap = match tokio::task::spawn_blocking(move || status_snapshot(&h)).await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx
                            .send(Err(RpcStatus::internal(format!("status task: {e}"))))
                            .await;
                        return;
                    }
                };
                if tx.send(Ok(snap)).await.is_err() {
                    return; // client went away
                }
                if shutdown.as_ref().is_some_and(|r| *r.borrow()) {
                    return; // that was the final state
                }
                let sent_at = tokio::time::Instant::now();
                if loader.is_none() {
                    loader = handle.pipeline().map(|p| p.loader.clone());
                }
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = changed(&mut life) => {}
                    _ = changed(&mut loader) => {}
                    _ = changed(&mut slot) => {}
                    _ = tx.closed() => return,
                    _ = wait_true(&mut shutdown) => {
                        // The daemon is stopping: the final state (e.g. the drained
                        // spool) goes out before the stream ends, rate limit or not.
                        let h = handle.clone();
                        if let Ok(s) = tokio::task::spawn_blocking(move || status_snapshot(&h)).await {
                            let _ = tokio::time::timeout(FINAL_SEND, tx.send(Ok(s))).await;
                        }
                        return;
                    }
                }
                // Rate limit: at most one update per MIN_WATCH_INTERVAL.
                tokio::time::sleep_until(sent_at + MIN_WATCH_INTERVAL).await;
                if life.is_none() {
                    // The daemon dropped its lifecycle: it is gone. One last update, then end.
                    let h = handle.clone();
                    if let Ok(s) = tokio::task::spawn_blocking(move || status_snapshot(&h)).await {
                        let _ = tx.send(Ok(s)).await;
                    }
                    return;
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(stream)))
    }
}

/// `dbmazz.v1.Control`.
#[derive(Clone)]
pub struct ControlService {
    handle: DaemonHandle,
    token: Option<Arc<SecretString>>,
}

impl ControlService {
    pub fn new(handle: DaemonHandle, token: Option<SecretString>) -> Self {
        Self {
            handle,
            token: token.map(Arc::new),
        }
    }

    /// Checks `authorization: Bearer <token>` in constant time; never logs the token.
    fn authorize<T>(&self, req: &Request<T>) -> Result<(), RpcStatus> {
        let Some(expected) = &self.token else {
            return Ok(());
        };
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            });
        match given {
            Some(t) if crate::config::secret_eq(expected, t.trim()) => Ok(()),
            Some(_) => {
                warn!("control call refused: wrong bearer token");
                Err(RpcStatus::unauthenticated("wrong control token"))
            }
            None => {
                warn!("control call refused: no bearer token");
                Err(RpcStatus::unauthenticated(
                    "control calls need `authorization: Bearer <CONTROL_TOKEN>`",
                ))
            }
        }
    }

    async fn control<T>(
        &self,
        req: Request<T>,
        what: ControlRequest,
    ) -> Result<Response<proto::ControlResponse>, RpcStatus> {
        self.authorize(&req)?;
        let current = self.handle.state();
        let target = what.target();
        match lifecycle::on_request(current, what) {
            Err(refused) => return Err(RpcStatus::failed_precondition(refused.to_string())),
            Ok(Decision::Already(state)) => {
                return Ok(Response::new(proto::ControlResponse {
                    accepted: true,
                    state: state.as_str().to_string(),
                    target_state: target.as_str().to_string(),
                    message: format!("already {state}"),
                }))
            }
            Ok(Decision::Go(_)) => {}
        }
        match tokio::time::timeout(Duration::from_secs(2), self.handle.inner.control.send(what))
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return Err(RpcStatus::unavailable(
                    "the daemon no longer accepts control requests",
                ))
            }
            Err(_) => {
                return Err(RpcStatus::unavailable(
                    "the daemon's control queue is full; try again",
                ))
            }
        }
        info!(request = what.verb(), "control request accepted");
        let mut rx = self.handle.inner.lifecycle.clone();
        let reached =
            tokio::time::timeout(CONTROL_SETTLE, rx.wait_for(|s| s.state == target)).await;
        let state = match reached {
            Ok(Ok(s)) => s.state,
            _ => self.handle.state(),
        };
        Ok(Response::new(proto::ControlResponse {
            accepted: true,
            state: state.as_str().to_string(),
            target_state: target.as_str().to_string(),
            message: format!("{} requested", what.verb()),
        }))
    }
}

#[tonic::async_trait]
impl proto::control_server::Control for ControlService {
    async fn pause(
        &self,
        req: Request<proto::ControlRequest>,
    ) -> Result<Response<proto::ControlResponse>, RpcStatus> {
        self.control(req, ControlRequest::Pause).await
    }

    async fn resume(
        &self,
        req: Request<proto::ControlRequest>,
    ) -> Result<Response<proto::ControlResponse>, RpcStatus> {
        self.control(req, ControlRequest::Resume).await
    }

    async fn drain_and_stop(
        &self,
        req: Request<proto::ControlRequest>,
    ) -> Result<Response<proto::ControlResponse>, RpcStatus> {
        self.control(req, ControlRequest::DrainAndStop).await
    }

    async fn stop(
        &self,
        req: Request<proto::ControlRequest>,
    ) -> Result<Response<proto::ControlResponse>, RpcStatus> {
        self.control(req, ControlRequest::Stop).await
    }
}
