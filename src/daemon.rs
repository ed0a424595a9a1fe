//! `dbmazz run`: wires the parts of the contract together and runs them until a signal.
//!
//! setup (publication, slot) → spool (open, resume point) → spool writer ← reader, and
//! the acknowledgement path that drives the confirmed LSN the reader reports
//! (invariant 1). SIGTERM/SIGINT stop reading, flush the spool and exit 0; the slot
//! always stays (invariant 7).

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::cli::CliError;
use crate::config::{AckPolicy, Config};
use crate::connectors::sources::postgres::reader::{Reader, ReaderControl, ReaderOptions};
use crate::connectors::sources::postgres::replication::ReplicationConnection;
use crate::connectors::sources::postgres::{client, setup};
use crate::core::Lsn;
use crate::spool::{writer, GroupCommit, Spool, SpoolOptions};

/// Capacity of the reader → spool-writer channel, in batches.
const READER_CHANNEL_BATCHES: usize = 8;

/// Runs the replication job until SIGTERM/SIGINT or a permanent error.
pub async fn run(cfg: Config) -> Result<(), CliError> {
    if cfg.source.do_snapshot {
        return Err(CliError::Usage(
            "DO_SNAPSHOT=true: the initial snapshot is not implemented yet; load existing rows separately and start with DO_SNAPSHOT=false".into(),
        ));
    }
    info!(source = %cfg.source.conn.describe(), slot = %cfg.source.slot_name, tables = cfg.source.tables.len(), "starting dbmazz");

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
    let start = durable.end_lsn;
    info!(spool_id = %spool.id(), resume_at = %start, slot_confirmed = ?slot_confirmed, loaded_seq = loaded.seq, "spool opened");

    // Reader → spool writer.
    let (tx, rx) = mpsc::channel(READER_CHANNEL_BATCHES);
    let (writer_task, mut durable_rx) = writer::spawn(spool.clone(), rx, GroupCommit::default());
    let mut ropts = ReaderOptions::new(
        cfg.source.conn.clone(),
        &cfg.source.slot_name,
        &cfg.source.publication_name,
    );
    ropts.streaming = cfg.source.streaming;
    ropts.status_interval = cfg.source.status_interval;
    let (reader, _reader_status) = Reader::new(ropts, tx);
    let (confirmed_tx, confirmed_rx) = watch::channel(loaded.confirmed_lsn);
    let (_paused_tx, paused_rx) = watch::channel(false);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut reader_task = tokio::spawn(reader.run(
        start,
        ReaderControl {
            confirmed: confirmed_rx,
            paused: paused_rx,
            shutdown: shutdown_rx,
        },
    ));

    // Acknowledgement: with `spooled`, the durable mark is confirmed; with `loaded`, the
    // loader advances the confirmed LSN after each successful load.
    let ack_task = match cfg.pipeline.ack_policy {
        AckPolicy::Spooled => {
            let confirmed_tx = confirmed_tx.clone();
            Some(tokio::spawn(async move {
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
            }))
        }
        AckPolicy::Loaded => None,
    };

    let outcome = tokio::select! {
        r = &mut reader_task => {
            match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => {
                    error!(error = %e, "the reader stopped on a permanent error; the slot and the spool are kept");
                    Err(CliError::Source(e))
                }
                Err(e) => Err(CliError::Other(format!("reader task: {e}"))),
            }
        }
        sig = shutdown_signal() => {
            info!(signal = sig, "shutting down: stopping the reader and flushing the spool");
            let _ = shutdown_tx.send(true);
            match tokio::time::timeout(Duration::from_secs(30), &mut reader_task).await {
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err(e))) => Err(CliError::Source(e)),
                Ok(Err(e)) => Err(CliError::Other(format!("reader task: {e}"))),
                Err(_) => {
                    warn!("the reader did not stop within 30 s; abandoning it (the spool stays consistent)");
                    reader_task.abort();
                    Ok(())
                }
            }
        }
    };
    // The reader's sender is gone now: the writer flushes what it has and ends.
    match writer_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => error!(error = %e, "spool writer failed"),
        Err(e) => error!(error = %e, "spool writer task"),
    }
    if let Some(t) = ack_task {
        t.abort();
    }
    info!(durable = %spool.durable_mark().end_lsn, "stopped; the replication slot is kept");
    outcome
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
