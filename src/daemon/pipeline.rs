//! The running pipeline: starts the reader, the spool writer, the loader and the task
//! that hands the acknowledged LSN to the reader; steers them as the lifecycle says
//! (pause, drain phases); supervises them; stops them in order.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::{JoinError, JoinHandle};
use tracing::{error, info, warn};

use super::supervisor::{Life, Supervisor};
use super::task_failed;
use crate::cli::CliError;
use crate::config::{AckPolicy, Config};
use crate::connectors::sources::postgres::reader::{
    Reader, ReaderControl, ReaderOptions, ReaderStatus,
};
use crate::connectors::sources::postgres::SourceError;
use crate::core::{Lsn, ReaderEvent};
use crate::grpc::state::PipelineViews;
use crate::lifecycle::{self, DaemonState, DrainPhase, DrainView, Event};
use crate::pipeline::loader::{LoadSink, Loader, LoaderControl, LoaderError, LoaderOptions};
use crate::pipeline::status::LoaderStatus;
use crate::spool::{writer, DurableMark, GroupCommit, Spool, SpoolError};

/// Capacity of the reader → spool-writer channel, in batches.
const READER_CHANNEL_BATCHES: usize = 8;
/// How often a drain looks at the reader and the writer.
const DRAIN_TICK: Duration = Duration::from_millis(100);
/// How long each part may take to stop.
const STOP_LIMIT: Duration = Duration::from_secs(30);

/// The running parts and the handles that steer them.
pub(super) struct Pipeline {
    spool: Spool,
    ack_policy: AckPolicy,
    reader: Option<JoinHandle<Result<(), SourceError>>>,
    reader_view: watch::Receiver<ReaderStatus>,
    reader_paused: watch::Sender<bool>,
    reader_stop: watch::Sender<bool>,
    writer: Option<JoinHandle<Result<(), SpoolError>>>,
    /// Only to see whether batches wait in the writer's channel (a strong sender would
    /// keep the writer from ending).
    writer_queue: mpsc::WeakSender<Vec<ReaderEvent>>,
    durable: watch::Receiver<DurableMark>,
    loader: Option<JoinHandle<Result<(), LoaderError>>>,
    loader_view: watch::Receiver<LoaderStatus>,
    loader_paused: watch::Sender<bool>,
    loader_drain: watch::Sender<bool>,
    loader_stop: watch::Sender<bool>,
    /// What the loader has loaded and marked.
    loaded: watch::Receiver<Lsn>,
    /// What the reader reports as flush_lsn.
    confirmed: Arc<watch::Sender<Lsn>>,
    ack: JoinHandle<()>,
}

impl Pipeline {
    pub(super) fn start<S: LoadSink>(cfg: &Config, spool: Spool, sink: Arc<S>) -> Pipeline {
        let durable_mark = spool.durable_mark();
        let loaded_mark = spool.loaded_mark();
        let policy = cfg.pipeline.ack_policy;

        // Reader → spool writer.
        let (tx, rx) = mpsc::channel(READER_CHANNEL_BATCHES);
        let writer_queue = tx.downgrade();
        let (writer_task, durable) = writer::spawn(spool.clone(), rx, GroupCommit::default());
        let mut ropts = ReaderOptions::new(
            cfg.source.conn.clone(),
            &cfg.source.slot_name,
            &cfg.source.publication_name,
        );
        ropts.streaming = cfg.source.streaming;
        ropts.status_interval = cfg.source.status_interval;
        let (reader, reader_view) = Reader::new(ropts, tx);
        let (confirmed, confirmed_rx) = watch::channel(lifecycle::acknowledged(
            policy,
            loaded_mark.confirmed_lsn,
            durable_mark.end_lsn,
        ));
        let confirmed = Arc::new(confirmed);
        let (reader_paused, reader_paused_rx) = watch::channel(false);
        let (reader_stop, reader_stop_rx) = watch::channel(false);
        let reader_task = tokio::spawn(reader.run(
            durable_mark.end_lsn,
            ReaderControl {
                confirmed: confirmed_rx,
                paused: reader_paused_rx,
                shutdown: reader_stop_rx,
            },
        ));

        // Loader: spool → sink. It reports what it loaded; which LSN is acknowledged is
        // the lifecycle's decision (`lifecycle::acknowledged`, both policies).
        let (loaded_tx, loaded) = watch::channel(loaded_mark.confirmed_lsn);
        let (loader, loader_view) = Loader::new(
            spool.clone(),
            sink,
            LoaderOptions {
                flush_rows: cfg.pipeline.flush_size,
                flush_bytes: usize::try_from(cfg.pipeline.flush_bytes).unwrap_or(usize::MAX),
                flush_interval: cfg.pipeline.flush_interval,
                ack_policy: AckPolicy::Loaded,
                read_chunk: 4096,
                max_concurrent_loads: cfg.pipeline.max_concurrent_loads,
                soft_deletes: cfg
                    .sink
                    .as_ref()
                    .is_some_and(|s| s.delete_mode == crate::config::DeleteMode::Soft),
            },
            loaded_tx,
        );
        let (loader_paused, loader_paused_rx) = watch::channel(false);
        let (loader_drain, loader_drain_rx) = watch::channel(false);
        let (loader_stop, loader_stop_rx) = watch::channel(false);
        let loader_task = tokio::spawn(loader.run(LoaderControl {
            durable: durable.clone(),
            paused: loader_paused_rx,
            drain: loader_drain_rx,
            shutdown: loader_stop_rx,
        }));
        let ack = tokio::spawn(acknowledge(
            policy,
            loaded.clone(),
            durable.clone(),
            confirmed.clone(),
        ));
        Pipeline {
            spool,
            ack_policy: policy,
            reader: Some(reader_task),
            reader_view,
            reader_paused,
            reader_stop,
            writer: Some(writer_task),
            writer_queue,
            durable,
            loader: Some(loader_task),
            loader_view,
            loader_paused,
            loader_drain,
            loader_stop,
            loaded,
            confirmed,
            ack,
        }
    }

    pub(super) fn views(&self) -> PipelineViews {
        PipelineViews {
            reader: self.reader_view.clone(),
            loader: self.loader_view.clone(),
            spool: self.spool.clone(),
        }
    }

    /// Tells the reader and the loader what the lifecycle says for `state`.
    fn steer(&self, state: DaemonState) {
        let c = lifecycle::controls(state);
        let set = |tx: &watch::Sender<bool>, v: bool| {
            tx.send_if_modified(|p| {
                let changed = *p != v;
                *p = v;
                changed
            });
        };
        set(&self.reader_paused, c.reader_paused);
        set(&self.loader_paused, c.loader_paused);
    }

    fn drain_view(&self) -> DrainView {
        let queue_empty = self
            .writer_queue
            .upgrade()
            .is_none_or(|s| s.capacity() == s.max_capacity());
        DrainView::new(
            &self.reader_view.borrow(),
            self.durable.borrow().end_lsn,
            queue_empty,
        )
    }

    /// Hands the acknowledged LSN to the reader now (the ack task may lag behind).
    fn sync_ack(&self) {
        let next = lifecycle::acknowledged(
            self.ack_policy,
            *self.loaded.borrow(),
            self.durable.borrow().end_lsn,
        );
        self.confirmed
            .send_if_modified(|c| lifecycle::advance_ack(c, next));
    }

    /// Runs until a signal, a Stop, the end of a drain, or a permanent error.
    pub(super) async fn supervise(&mut self, sup: &mut Supervisor) -> Result<(), CliError> {
        let mut drain: Option<DrainPhase> = None;
        let mut tick = tokio::time::interval(DRAIN_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reader_view = self.reader_view.clone();
        let mut loader_view = self.loader_view.clone();
        let (mut reader_view_open, mut loader_view_open) = (true, true);
        loop {
            tokio::select! {
                sig = &mut sup.signals => {
                    info!(signal = sig, "shutting down: stopping the reader, flushing the spool, finishing the load in flight");
                    return Ok(());
                }
                req = sup.control.recv() => {
                    let Some(r) = req else { return Ok(()) };
                    let before = sup.life.state();
                    let Some(state) = sup.life.apply(Event::Request(r)) else {
                        warn!(request = r.verb(), state = %before, "control request refused");
                        continue;
                    };
                    match state {
                        DaemonState::Stopping => {
                            info!("stop requested");
                            return Ok(());
                        }
                        DaemonState::Paused => info!("paused: reading and loading stop; keepalives are still answered"),
                        DaemonState::Running => info!("resumed"),
                        DaemonState::Draining if drain.is_none() => {
                            info!("draining: reading stops, what was read is made durable, loaded and confirmed, then the daemon exits");
                            drain = Some(DrainPhase::Settling);
                            sup.life.activity(DrainPhase::Settling.describe());
                        }
                        _ => {}
                    }
                    self.steer(state);
                }
                _ = tick.tick(), if drain == Some(DrainPhase::Settling) => {
                    let next = lifecycle::advance(DrainPhase::Settling, &self.drain_view());
                    if next == DrainPhase::Loading {
                        info!(durable = %self.durable.borrow().end_lsn, "reading has stopped and what was read is durable; loading what the spool holds");
                        drain = Some(next);
                        sup.life.activity(next.describe());
                        let _ = self.loader_drain.send(true);
                    }
                }
                r = join(&mut self.reader) => match r {
                    Ok(Ok(())) => {
                        warn!("the reader ended on its own; stopping");
                        return Ok(());
                    }
                    Ok(Err(e)) => {
                        // A writer that failed first explains why the reader lost it.
                        if let Some(Err(w)) = finished(&mut self.writer).await {
                            return Err(w);
                        }
                        error!("the reader stopped on a permanent error; the slot and the spool are kept");
                        return Err(CliError::Source(e));
                    }
                    Err(e) => return Err(task_failed("reader", e)),
                },
                r = join(&mut self.writer) => match r {
                    Ok(Ok(())) => {
                        warn!("the spool writer ended on its own; stopping");
                        return Ok(());
                    }
                    Ok(Err(e)) => {
                        error!("the spool writer failed; nothing past the durable mark was confirmed");
                        return Err(CliError::Spool(e));
                    }
                    Err(e) => return Err(task_failed("spool writer", e)),
                },
                r = join(&mut self.loader) => match r {
                    Ok(Ok(())) => {
                        if drain == Some(DrainPhase::Loading) {
                            sup.life.apply(Event::Drained);
                            info!(confirmed = %*self.loaded.borrow(), "the spool is drained and confirmed");
                        } else {
                            warn!("the loader ended on its own; stopping");
                        }
                        return Ok(());
                    }
                    Ok(Err(e)) => {
                        error!("the loader stopped on a permanent error; the slot and the spool are kept, nothing past the last load is confirmed");
                        return Err(CliError::Loader(e));
                    }
                    Err(e) => return Err(task_failed("loader", e)),
                },
                r = reader_view.changed(), if reader_view_open => {
                    if r.is_err() {
                        reader_view_open = false;
                    } else {
                        sup.life.observe_reader(&reader_view.borrow_and_update());
                    }
                }
                r = loader_view.changed(), if loader_view_open => {
                    if r.is_err() {
                        loader_view_open = false;
                    } else {
                        sup.life.observe_loader(&loader_view.borrow_and_update());
                    }
                }
            }
        }
    }

    /// Orderly stop: the last acknowledgement goes to the reader, the reader stops (it
    /// reports once more), the writer flushes, then the loader finishes its window or is
    /// abandoned (its labels make a replay safe).
    pub(super) async fn stop(mut self, life: &Life) {
        life.apply(Event::Shutdown);
        self.sync_ack();
        let _ = self.reader_stop.send(true);
        if let Some(t) = self.reader.take() {
            match stop_within(t, "reader").await {
                Some(Ok(Err(e))) => {
                    warn!(error = %e, "the reader ended with an error while stopping")
                }
                Some(Err(e)) => warn!(error = %e, "the reader task failed while stopping"),
                _ => {}
            }
        }
        if let Some(t) = self.writer.take() {
            // Its input closed with the reader; it flushes what it has and ends. While the
            // spool is full it may wait for room, so it is abandoned after a while:
            // nothing past the durable mark was confirmed, PostgreSQL sends it again.
            match stop_within(t, "spool writer").await {
                Some(Ok(Err(e))) => error!(error = %e, "the spool writer failed while stopping"),
                Some(Err(e)) => error!(error = %e, "the spool writer task failed while stopping"),
                _ => {}
            }
        }
        let _ = self.loader_stop.send(true);
        if let Some(t) = self.loader.take() {
            match stop_within(t, "loader").await {
                Some(Ok(Err(e))) => {
                    warn!(error = %e, "the loader ended with an error while stopping")
                }
                Some(Err(e)) => warn!(error = %e, "the loader task failed while stopping"),
                _ => {}
            }
        }
        self.ack.abort();
        info!(durable = %self.spool.durable_mark().end_lsn, loaded = %self.spool.loaded_mark().confirmed_lsn, "stopped; the replication slot is kept");
    }
}

/// Forwards the acknowledged LSN (per the ack policy) to the reader as it moves.
async fn acknowledge(
    policy: AckPolicy,
    mut loaded: watch::Receiver<Lsn>,
    mut durable: watch::Receiver<DurableMark>,
    confirmed: Arc<watch::Sender<Lsn>>,
) {
    let mut durable_open = policy == AckPolicy::Spooled;
    loop {
        let next = lifecycle::acknowledged(
            policy,
            *loaded.borrow_and_update(),
            durable.borrow_and_update().end_lsn,
        );
        confirmed.send_if_modified(|c| lifecycle::advance_ack(c, next));
        tokio::select! {
            r = loaded.changed() => if r.is_err() { return },
            r = durable.changed(), if durable_open => if r.is_err() { durable_open = false },
        }
    }
}

/// Awaits a task held in an option (pending forever when there is none); empties the
/// option once the task ended.
async fn join<T>(task: &mut Option<JoinHandle<T>>) -> Result<T, JoinError> {
    match task {
        Some(t) => {
            let r = t.await;
            *task = None;
            r
        }
        None => std::future::pending().await,
    }
}

/// The writer's result if it has already ended (the reason a reader lost its writer).
async fn finished(
    task: &mut Option<JoinHandle<Result<(), SpoolError>>>,
) -> Option<Result<(), CliError>> {
    if !task.as_ref().is_some_and(|t| t.is_finished()) {
        return None;
    }
    let t = task.take()?;
    Some(match t.await {
        Ok(r) => r.map_err(CliError::Spool),
        Err(e) => Err(task_failed("spool writer", e)),
    })
}

/// Waits up to [`STOP_LIMIT`] for a part to end; abandons it after that.
async fn stop_within<T>(mut t: JoinHandle<T>, what: &str) -> Option<Result<T, JoinError>> {
    match tokio::time::timeout(STOP_LIMIT, &mut t).await {
        Ok(r) => Some(r),
        Err(_) => {
            warn!(
                part = what,
                "did not stop within {}s; abandoning it",
                STOP_LIMIT.as_secs()
            );
            t.abort();
            None
        }
    }
}
