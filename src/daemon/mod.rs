//! `dbmazz run`: wires the parts together and carries out what the lifecycle
//! ([`crate::lifecycle`]) decides; the decisions (states, legal requests, drain readiness,
//! the acknowledged LSN, outages) live there, not here.
//!
//! Order: the control plane first (a start that waits is visible) → spool → source setup
//! (PostgreSQL being unreachable is waited out; the spool is checked against the source
//! before a missing slot is created, invariant 12: [`startup`]) → sink → the running
//! [`pipeline`] (reader → spool writer → loader, the acknowledged LSN back to the reader),
//! steered by signals and control requests ([`supervisor`]). The slot always stays
//! (invariant 7).

mod pipeline;
mod startup;
mod supervisor;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::task::{JoinError, JoinHandle};
use tracing::{error, info, warn};

use crate::cli::CliError;
use crate::config::{Config, SinkConfig};
use crate::grpc::state::{DaemonHandle, HandleInner, SlotHealth};
use crate::lifecycle::{ControlRequest, Event};

use pipeline::Pipeline;
pub use startup::{observe_source, probe_sink, spool_position};
use startup::{open_spool, start_sink, wait_for_source};
pub use supervisor::Life;
use supervisor::Supervisor;

/// Runs the replication job until SIGTERM/SIGINT, Stop, DrainAndStop or a permanent
/// error. The fatal error is logged here, once.
pub async fn run(cfg: Config) -> Result<(), CliError> {
    info!(version = env!("CARGO_PKG_VERSION"), source = %cfg.source.conn.describe(), slot = %cfg.source.slot_name, tables = cfg.source.tables.len(), "starting dbmazz");
    let result = run_job(cfg).await;
    if let Err(e) = &result {
        error!(error = %e, "dbmazz stopped on an error; the replication slot and the spool are kept");
    }
    result
}

async fn run_job(cfg: Config) -> Result<(), CliError> {
    let sink_cfg = cfg.sink.clone().ok_or_else(|| {
        CliError::Usage(
            "SINK_URL is not set: dbmazz run needs a StarRocks FE URL (see dbmazz run --help)"
                .into(),
        )
    })?;
    if cfg.source.do_snapshot {
        return Err(CliError::Usage(
            "DO_SNAPSHOT=true: the initial snapshot is not implemented yet; load existing rows separately and start with DO_SNAPSHOT=false".into(),
        ));
    }

    // The control plane comes up first, so that a start waiting for PostgreSQL shows.
    let life = Life::new();
    let (control_tx, control_rx) = mpsc::channel::<ControlRequest>(16);
    let (slot_tx, slot_rx) = watch::channel(SlotHealth {
        slot_name: cfg.source.slot_name.clone(),
        ..SlotHealth::default()
    });
    let handle = DaemonHandle {
        inner: Arc::new(HandleInner {
            started_at: SystemTime::now(),
            version: env!("CARGO_PKG_VERSION"),
            slot_name: cfg.source.slot_name.clone(),
            lifecycle: life.subscribe(),
            pipeline: OnceLock::new(),
            slot: slot_rx,
            control: control_tx,
        }),
    };
    let (plane_stop_tx, plane_stop_rx) = watch::channel(false);
    let serving = crate::grpc::serve(
        handle.clone(),
        cfg.control.grpc_listen,
        cfg.control.http_listen,
        cfg.control.token.clone(),
        plane_stop_rx.clone(),
    )
    .await?;

    let mut sup = Supervisor::new(life, control_rx);
    let result =
        start_and_supervise(&cfg, &sink_cfg, &mut sup, &handle, slot_tx, plane_stop_rx).await;
    // The final state (failed with its error, or stopping) is published before the
    // control plane goes: Watch streams send it as their last message.
    match &result {
        Err(e) => sup.life.fail(e.to_string()),
        Ok(()) => {
            sup.life.apply(Event::Shutdown);
        }
    }
    let _ = plane_stop_tx.send(true);
    match tokio::time::timeout(Duration::from_secs(6), serving.wait()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "the control plane ended with an error"),
        Err(_) => warn!("the control plane did not stop within 6 s"),
    }
    result
}

/// Startup steps, then the running pipeline until it ends.
async fn start_and_supervise(
    cfg: &Config,
    sink_cfg: &SinkConfig,
    sup: &mut Supervisor,
    handle: &DaemonHandle,
    slot_tx: watch::Sender<SlotHealth>,
    plane_stop: watch::Receiver<bool>,
) -> Result<(), CliError> {
    // The spool decides where replication resumes (invariant 8) and which source it
    // belongs to (invariant 12): it is opened before the source is touched.
    sup.life.activity("opening the spool");
    let spool = open_spool(cfg).await?;
    // `dbmazz spool ...` reaches a running daemon's spool through this socket.
    let _inspect = crate::spool::inspect::serve(spool.clone())?;
    let Some(source) = wait_for_source(cfg, &spool, sup).await? else {
        return Ok(());
    };
    let _slot_poller = AbortOnDrop(tokio::spawn(crate::grpc::slot::run(
        cfg.source.conn.clone(),
        cfg.source.slot_name.clone(),
        crate::grpc::slot::SlotPollerOptions::default(),
        slot_tx,
        plane_stop,
    )));
    let durable = spool.durable_mark();
    info!(spool_id = %spool.id(), source = %source.source, resume_at = %durable.end_lsn, slot_confirmed = ?source.slot_confirmed, loaded_seq = spool.loaded_mark().seq, "spool opened");

    sup.life.activity("checking the StarRocks targets");
    let Some((sink, probe)) = start_sink(cfg, sink_cfg, sup).await? else {
        return Ok(());
    };
    let _probe = probe.map(AbortOnDrop);

    let mut pipeline = Pipeline::start(cfg, spool, sink);
    let _ = handle.inner.pipeline.set(pipeline.views());
    sup.life.activity("");
    sup.life.apply(Event::Started);
    info!("running");
    let result = pipeline.supervise(sup).await;
    if let Err(e) = &result {
        // Published at once, while the parts are still being stopped.
        sup.life.fail(e.to_string());
    }
    pipeline.stop(&sup.life).await;
    result
}

pub(crate) fn task_failed(what: &str, e: JoinError) -> CliError {
    CliError::Internal(format!("the {what} task failed: {e}"))
}

/// Aborts a background task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
