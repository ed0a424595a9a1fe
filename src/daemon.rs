//! `dbmazz run`: wires the parts of the contract together and runs them until a signal.
//!
//! setup (publication, slot) → spool (open, resume point) → spool writer ← reader;
//! loader ← spool → sink; the confirmed LSN flows loader → reader (invariant 1, or the
//! spool's durable mark with `ACK_POLICY=spooled`). Control requests (pause, resume,
//! drain, stop) and SIGTERM/SIGINT end cleanly: reading stops, the spool is flushed, the
//! in-flight load finishes or is abandoned safely, exit 0. The slot always stays
//! (invariant 7).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::cli::CliError;
use crate::config::{AckPolicy, Config};
use crate::connectors::sources::postgres::reader::{Reader, ReaderControl, ReaderOptions};
use crate::connectors::sources::postgres::replication::ReplicationConnection;
use crate::connectors::sources::postgres::{client, setup};
use crate::core::Lsn;
use crate::grpc::state::{ControlRequest, DaemonHandle, DaemonState, HandleInner};
use crate::pipeline::loader::{LoadSink, Loader, LoaderControl, LoaderOptions, RetryNote};
use crate::spool::{writer, GroupCommit, Spool, SpoolOptions};

/// Capacity of the reader → spool-writer channel, in batches.
const READER_CHANNEL_BATCHES: usize = 8;

/// Runs the replication job until SIGTERM/SIGINT, Stop, DrainAndStop or a permanent
/// error.
pub async fn run(cfg: Config) -> Result<(), CliError> {
    info!(version = env!("CARGO_PKG_VERSION"), source = %cfg.source.conn.describe(), slot = %cfg.source.slot_name, tables = cfg.source.tables.len(), "starting dbmazz");
    let sink_cfg = cfg.sink.clone().ok_or_else(|| {
        CliError::Usage(
            "SINK_URL is not set: dbmazz run needs a StarRocks FE URL (see dbmazz run --help)"
                .into(),
        )
    })?;
    // Source problems first: they are the most common and need no sink to report.
    let pg = client::connect(&cfg.source.conn).await?;
    setup::inspect(&pg, &cfg.source).await?.ready()?;
    drop(pg);
    // The sink needs PostgreSQL (the catalog) but not StarRocks: an outage at start is
    // waited out (invariant 13); the loader checks each target again before loading.
    let sink = crate::connectors::sinks::starrocks::StarRocksLoadSink::new(&cfg, &sink_cfg)
        .await
        .map_err(|e| CliError::Other(format!("StarRocks sink: {e}")))?;
    match sink.check_targets(&RetryNote::detached()).await {
        Ok(()) => {}
        Err(e) if e.is_transient() => {
            warn!(error = %e, "the StarRocks targets could not be checked at start; changes are spooled and the targets are checked again before the first load")
        }
        Err(e) => return Err(CliError::Other(format!("StarRocks: {e}"))),
    }
    run_with_sink(cfg, Arc::new(sink)).await
}

/// Runs the job with any sink (tests use in-memory ones).
pub async fn run_with_sink<S: LoadSink>(cfg: Config, sink: Arc<S>) -> Result<(), CliError> {
    if cfg.source.do_snapshot {
        return Err(CliError::Usage(
            "DO_SNAPSHOT=true: the initial snapshot is not implemented yet; load existing rows separately and start with DO_SNAPSHOT=false".into(),
        ));
    }

    // Source setup: checks, publication, slot (never dropped).
    let pg = client::connect(&cfg.source.conn).await?;
    let mut repl = ReplicationConnection::connect(&cfg.source.conn).await?;
    let (_report, outcome) = setup::ensure(&pg, &mut repl, &cfg.source).await?;
    repl.close().await;

    // The spool decides where replication resumes (invariant 8).
    let spool_opts = SpoolOptions {
        cache_capacity: cfg.spool.cache_bytes,
        max_bytes: cfg.spool.max_bytes,
        ..SpoolOptions::default()
    };
    let dir = cfg.spool.dir.clone();
    let spool = tokio::task::spawn_blocking(move || Spool::open(dir, spool_opts))
        .await
        .map_err(|e| CliError::Other(format!("spool open task: {e}")))?
        .map_err(|e| CliError::Other(format!("spool: {e}")))?;
    let durable = spool.durable_mark();
    let loaded = spool.loaded_mark();
    let slot_confirmed = setup::slot_confirmed_flush(&pg, &cfg.source.slot_name).await?;
    if outcome.created_slot && durable.end_lsn > Lsn::ZERO {
        warn!(spool_durable = %durable.end_lsn, "the slot was just created but the spool already holds data from an earlier slot; changes between them are not in PostgreSQL anymore");
    }
    // `dbmazz spool ...` reaches a running daemon's spool through this socket.
    let _inspect = crate::spool::inspect::serve(spool.clone())
        .map_err(|e| CliError::Other(format!("spool inspection socket: {e}")))?;
    let start = durable.end_lsn;
    info!(spool_id = %spool.id(), resume_at = %start, slot_confirmed = ?slot_confirmed, loaded_seq = loaded.seq, "spool opened");

    // Reader → spool writer.
    let (tx, rx) = mpsc::channel(READER_CHANNEL_BATCHES);
    let (writer_task, durable_rx) = writer::spawn(spool.clone(), rx, GroupCommit::default());
    let mut writer_task = Some(writer_task);
    let mut ropts = ReaderOptions::new(
        cfg.source.conn.clone(),
        &cfg.source.slot_name,
        &cfg.source.publication_name,
    );
    ropts.streaming = cfg.source.streaming;
    ropts.status_interval = cfg.source.status_interval;
    let (reader, reader_status) = Reader::new(ropts, tx);
    let (confirmed_tx, confirmed_rx) = watch::channel(loaded.confirmed_lsn);
    let (paused_tx, paused_rx) = watch::channel(false);
    let (reader_stop_tx, reader_stop_rx) = watch::channel(false);
    let mut reader_task = tokio::spawn(reader.run(
        start,
        ReaderControl {
            confirmed: confirmed_rx,
            paused: paused_rx.clone(),
            shutdown: reader_stop_rx,
        },
    ));

    // Loader: spool → sink; drives the confirmed LSN with ack_policy = loaded.
    let (loader, loader_status) = Loader::new(
        spool.clone(),
        sink,
        LoaderOptions {
            flush_rows: cfg.pipeline.flush_size,
            flush_bytes: usize::try_from(cfg.pipeline.flush_bytes).unwrap_or(usize::MAX),
            flush_interval: cfg.pipeline.flush_interval,
            ack_policy: cfg.pipeline.ack_policy,
            read_chunk: 4096,
            soft_deletes: cfg
                .sink
                .as_ref()
                .is_some_and(|s| s.delete_mode == crate::config::DeleteMode::Soft),
        },
        confirmed_tx.clone(),
    );
    let (drain_tx, drain_rx) = watch::channel(false);
    let (loader_stop_tx, loader_stop_rx) = watch::channel(false);
    let mut loader_task = tokio::spawn(loader.run(LoaderControl {
        durable: durable_rx.clone(),
        paused: paused_rx,
        drain: drain_rx,
        shutdown: loader_stop_rx,
    }));

    // With `spooled`, the durable mark is what PostgreSQL may forget.
    let ack_task = (cfg.pipeline.ack_policy == AckPolicy::Spooled).then(|| {
        let mut durable_rx = durable_rx.clone();
        let confirmed_tx = confirmed_tx.clone();
        tokio::spawn(async move {
            while durable_rx.changed().await.is_ok() {
                let end = durable_rx.borrow().end_lsn;
                confirmed_tx.send_if_modified(|c| {
                    let advance = end > *c;
                    if advance {
                        *c = end;
                    }
                    advance
                });
            }
        })
    });

    // Control plane view.
    let (state_tx, state_rx) = watch::channel(DaemonState::Running);
    let (error_tx, error_rx) = watch::channel(None::<String>);
    let (control_tx, mut control_rx) = mpsc::channel::<ControlRequest>(16);
    let (plane_stop_tx, plane_stop_rx) = watch::channel(false);
    let (slot_rx, slot_task) = crate::grpc::slot::spawn(
        cfg.source.conn.clone(),
        &cfg.source.slot_name,
        crate::grpc::slot::SlotPollerOptions::default(),
        plane_stop_rx.clone(),
    );
    let handle = DaemonHandle {
        inner: Arc::new(HandleInner {
            started_at: SystemTime::now(),
            version: env!("CARGO_PKG_VERSION"),
            slot_name: cfg.source.slot_name.clone(),
            state: state_rx,
            state_error: error_rx,
            reader: reader_status,
            loader: loader_status,
            slot: slot_rx,
            spool: spool.clone(),
            control: control_tx,
        }),
    };
    let serving = crate::grpc::serve(
        handle.clone(),
        cfg.control.grpc_listen,
        cfg.control.http_listen,
        cfg.control.token.clone(),
        plane_stop_rx,
    )
    .await
    .map_err(|e| CliError::Other(format!("control plane: {e}")))?;

    // Supervise.
    let mut result: Result<(), CliError> = Ok(());
    let mut loader_done = false;
    let mut reader_done = false;
    let mut signals = Box::pin(shutdown_signal());
    let mut drain_tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = drain_tick.tick(), if *state_tx.borrow() == DaemonState::Draining && !*drain_tx.borrow() => {
                // Quiesced: the reader holds back and every transaction it handed over
                // is durable in the spool.
                let reader = handle.inner.reader.borrow().clone();
                if reader.held_back && durable_rx.borrow().end_lsn >= reader.last_commit_end {
                    info!(durable = %durable_rx.borrow().end_lsn, "reading has stopped; loading what the spool holds");
                    let _ = drain_tx.send(true);
                }
            }
            sig = &mut signals => {
                info!(signal = sig, "shutting down: stopping the reader, flushing the spool, finishing the load in flight");
                break;
            }
            req = control_rx.recv() => match req {
                Some(ControlRequest::Pause) => {
                    let _ = paused_tx.send(true);
                    let _ = state_tx.send(DaemonState::Paused);
                    info!("paused: reading and loading stop; keepalives are still answered");
                }
                Some(ControlRequest::Resume) => {
                    let _ = paused_tx.send(false);
                    let _ = state_tx.send(DaemonState::Running);
                    info!("resumed");
                }
                Some(ControlRequest::DrainAndStop) => {
                    info!("draining: reading stops, the spool is loaded and confirmed, then the daemon exits");
                    let _ = state_tx.send(DaemonState::Draining);
                    // The reader holds back but stays connected, so that the confirmed
                    // LSN of the drained loads reaches PostgreSQL; the loader is told to
                    // drain once everything handed over is durable (`drain_tick`).
                    let _ = paused_tx.send(true);
                }
                Some(ControlRequest::Stop) | None => {
                    info!("stop requested");
                    break;
                }
            },
            r = &mut reader_task, if !reader_done => {
                reader_done = true;
                match r {
                    Ok(Ok(())) => break,
                    Ok(Err(e)) => {
                        error!(error = %e, "the reader stopped on a permanent error; the slot and the spool are kept");
                        let _ = error_tx.send(Some(e.to_string()));
                        result = Err(CliError::Source(e));
                        break;
                    }
                    Err(e) => { result = Err(CliError::Other(format!("reader task: {e}"))); break; }
                }
            }
            r = &mut loader_task, if !loader_done => {
                loader_done = true;
                match r {
                    Ok(Ok(())) => {
                        info!("the spool is drained");
                        break;
                    }
                    Ok(Err(e)) => {
                        error!(error = %e, "the loader stopped on a permanent error; the slot and the spool are kept, nothing past the last load is confirmed");
                        let _ = error_tx.send(Some(e.to_string()));
                        let _ = state_tx.send(DaemonState::Failed);
                        result = Err(CliError::Other(format!("loader: {e}")));
                        break;
                    }
                    Err(e) => { result = Err(CliError::Other(format!("loader task: {e}"))); break; }
                }
            }
        }
    }

    // Orderly stop: reader first (it flushes its last status), then the writer flushes,
    // then the loader finishes its window or is abandoned (its labels make a replay safe).
    if *state_tx.borrow() != DaemonState::Failed {
        let _ = state_tx.send(DaemonState::Stopping);
    }
    let _ = reader_stop_tx.send(true);
    if !reader_done {
        match tokio::time::timeout(Duration::from_secs(30), &mut reader_task).await {
            Ok(Ok(Err(e))) => warn!(error = %e, "reader ended with an error while stopping"),
            Err(_) => {
                warn!("the reader did not stop within 30 s; abandoning it");
                reader_task.abort();
            }
            _ => {}
        }
    }
    finish_writer(&mut writer_task).await;
    let _ = loader_stop_tx.send(true);
    if !loader_done {
        match tokio::time::timeout(Duration::from_secs(30), &mut loader_task).await {
            Ok(Ok(Err(e))) => warn!(error = %e, "loader ended with an error while stopping"),
            Err(_) => {
                warn!("the load in flight did not finish within 30 s; abandoning it (it is replayed with the same label)");
                loader_task.abort();
            }
            _ => {}
        }
    }
    if let Some(t) = ack_task {
        t.abort();
    }
    let _ = plane_stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(6), serving.wait()).await;
    slot_task.abort();
    info!(durable = %spool.durable_mark().end_lsn, loaded = %spool.loaded_mark().confirmed_lsn, "stopped; the replication slot is kept");
    result
}

/// Waits for the spool writer to flush what it has and end (its input closed when the
/// reader stopped). While the spool is full it may wait for room, so it is abandoned after
/// a while: nothing past the durable mark was confirmed, PostgreSQL sends it again.
async fn finish_writer(
    task: &mut Option<tokio::task::JoinHandle<Result<(), crate::spool::SpoolError>>>,
) {
    let Some(mut t) = task.take() else { return };
    match tokio::time::timeout(Duration::from_secs(30), &mut t).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => error!(error = %e, "spool writer failed"),
        Ok(Err(e)) => error!(error = %e, "spool writer task"),
        Err(_) => {
            warn!("the spool writer did not finish within 30 s (spool full?); abandoning unflushed batches");
            t.abort();
        }
    }
}

/// Resolves on SIGTERM or SIGINT, naming it.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => tokio::select! {
            _ = t.recv() => "SIGTERM",
            _ = i.recv() => "SIGINT",
        },
        _ => {
            // Without signal handlers, only Ctrl-C through tokio's fallback remains.
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}
