//! The reader: streams pgoutput from the slot, decodes it into [`ReaderEvent`]s and hands
//! them, in bounded batches, to the spool writer.
//!
//! Invariants kept here:
//! - 2, receipt is not confirmation: status updates carry `write_lsn` = received and
//!   `flush_lsn`/`apply_lsn` = the confirmed LSN handed in from outside (the loader), and a
//!   keepalive that asks for a reply is answered at once. While the consumer is slow or
//!   the spool is full, reading stops but an unprompted status update still goes out at
//!   least every second, so the walsender never times out.
//! - 1, no premature confirmation: see [`flush_to_report`] for the one case where more
//!   than the confirmed LSN is reported (an idle source, everything confirmed).
//! - 8, restart resumes exactly: after a connection loss the stream restarts at the end
//!   of the last complete transaction handed over, preceded by [`ReaderEvent::Restart`]
//!   so the consumer drops what was unfinished; PostgreSQL re-sends it whole.
//! - 13, unavailability is waited out: a server that ends the stream, shuts down,
//!   restarts, is starting up or fails over is reconnected with the project's
//!   [`RetryPolicy`] backoff for as long as it takes; only permanent errors end `run`.
//! - [`ReaderStatus::last_commit_end`] only ever counts what was handed to the consumer;
//!   a batch decoded but held back shows as [`ReaderStatus::pending_batch`].

use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::conninfo::PgConnInfo;
use super::error::SourceError;
use super::pgoutput::{Decoder, DecoderState};
use super::replication::{ReplicationConnection, ReplicationMessage};
use crate::core::retry::RetryPolicy;
use crate::core::{Lsn, ReaderEvent};

/// Reader settings.
#[derive(Debug, Clone)]
pub struct ReaderOptions {
    pub conn: PgConnInfo,
    pub slot: String,
    pub publication: String,
    /// Ask for protocol 2 (streaming of in-progress transactions) when the server has it.
    pub streaming: bool,
    /// Unprompted status update period (replies to keepalive requests are immediate).
    pub status_interval: Duration,
    /// A batch is handed over when it holds this many events...
    pub max_batch_events: usize,
    /// ...or this many payload bytes...
    pub max_batch_bytes: usize,
    /// ...or when its first event is this old. While catching up, the walsender sends a
    /// few messages at a time; handing each trickle over on its own cost a wakeup of the
    /// spool writer and a trip to the blocking pool per batch of a handful of events.
    pub batch_linger: Duration,
    /// Reconnect backoff (unbounded attempts by default: outages are waited out).
    pub retry: RetryPolicy,
}

impl ReaderOptions {
    pub fn new(conn: PgConnInfo, slot: &str, publication: &str) -> Self {
        ReaderOptions {
            conn,
            slot: slot.to_string(),
            publication: publication.to_string(),
            streaming: false,
            status_interval: Duration::from_secs(5),
            max_batch_events: 2048,
            max_batch_bytes: 4 << 20,
            batch_linger: Duration::from_millis(2),
            retry: RetryPolicy::new(Duration::from_millis(200), Duration::from_secs(30)),
        }
    }
}

/// What the reader is doing, for status and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReaderStatus {
    pub connected: bool,
    /// pgoutput protocol version in use.
    pub protocol_version: u32,
    /// Highest WAL position received (reported as write_lsn).
    pub received_lsn: Lsn,
    /// End of the last complete transaction handed to the consumer (never one that is
    /// only decoded and held back).
    pub last_commit_end: Lsn,
    /// Reading is held back: the consumer is slow, the spool is full, or paused (also
    /// while paused and disconnected).
    pub held_back: bool,
    /// A decoded batch is held back, not yet handed to the spool writer; false once it is
    /// handed over (or dropped with a lost connection, to be re-read after the reconnect).
    pub pending_batch: bool,
    pub reconnects: u64,
    pub keepalive_replies: u64,
    pub status_updates: u64,
    /// The confirmed LSN last reported as flush_lsn.
    pub reported_flush_lsn: Lsn,
    pub last_error: Option<String>,
}

/// Inputs that steer a running reader.
pub struct ReaderControl {
    /// The confirmed LSN (driven by the loader): reported as flush_lsn/apply_lsn.
    pub confirmed: watch::Receiver<Lsn>,
    /// `true` asks the reader to stop reading (keepalives still answered).
    pub paused: watch::Receiver<bool>,
    /// `true` asks the reader to end cleanly.
    pub shutdown: watch::Receiver<bool>,
}

/// The reader task.
pub struct Reader {
    opts: ReaderOptions,
    out: mpsc::Sender<Vec<ReaderEvent>>,
    status: watch::Sender<ReaderStatus>,
}

enum Ended {
    /// Shutdown requested; the stream was closed cleanly.
    Shutdown,
}

impl Reader {
    pub fn new(
        opts: ReaderOptions,
        out: mpsc::Sender<Vec<ReaderEvent>>,
    ) -> (Self, watch::Receiver<ReaderStatus>) {
        let (status, rx) = watch::channel(ReaderStatus::default());
        (Reader { opts, out, status }, rx)
    }

    /// Runs until shutdown (Ok) or a permanent error. Transient errors reconnect with the
    /// [`RetryPolicy`] backoff, resuming after the last complete transaction.
    pub async fn run(self, start: Lsn, mut control: ReaderControl) -> Result<(), SourceError> {
        let mut resume = start;
        let mut backoff = self.opts.retry.backoff();
        let mut first = true;
        let mut paused_open = true;
        loop {
            if *control.shutdown.borrow() {
                return Ok(());
            }
            let attempt_started = Instant::now();
            match self.session(resume, !first, &mut control).await {
                Ok(Ended::Shutdown) => return Ok(()),
                Err((e, last_commit)) => {
                    resume = resume.max(last_commit);
                    let paused = *control.paused.borrow();
                    self.status.send_modify(|s| {
                        s.connected = false;
                        // A held batch died with the connection; PostgreSQL re-sends it.
                        s.pending_batch = false;
                        s.held_back = paused;
                        s.last_commit_end = s.last_commit_end.max(last_commit);
                        s.last_error = Some(e.to_string());
                    });
                    if !e.is_transient() {
                        return Err(e);
                    }
                    // A session that streamed for a while starts the schedule over.
                    if attempt_started.elapsed() > Duration::from_secs(30) {
                        backoff.reset();
                    }
                    let Some(delay) = backoff.next_delay() else {
                        return Err(e);
                    };
                    warn!(error = %e, retry_in = ?delay, attempt = backoff.attempts(), resume_at = %resume, "replication connection lost; reconnecting");
                    let sleep = tokio::time::sleep(delay);
                    tokio::pin!(sleep);
                    loop {
                        tokio::select! {
                            _ = &mut sleep => break,
                            _ = control.shutdown.changed() => return Ok(()),
                            changed = control.paused.changed(), if paused_open => {
                                if changed.is_err() {
                                    paused_open = false;
                                    continue;
                                }
                                let paused = *control.paused.borrow();
                                self.status.send_modify(|s| s.held_back = paused);
                            }
                        }
                    }
                    first = false;
                    self.status.send_modify(|s| s.reconnects += 1);
                }
            }
        }
    }

    /// One connection's life. On error, returns it with the end LSN of the last complete
    /// transaction handed over (a held-back batch is dropped: PostgreSQL re-sends it),
    /// where the next session resumes.
    /// Hands a batch to the spool writer right away; when its channel is full, holds it
    /// in `pending` (reading stops until it goes).
    fn hand_over(
        &self,
        b: Vec<ReaderEvent>,
        pending: &mut Option<Vec<ReaderEvent>>,
        last_commit: &mut Lsn,
        pending_commit: Lsn,
    ) -> Result<(), SourceError> {
        match self.out.try_send(b) {
            Ok(()) => {
                *last_commit = pending_commit;
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(b)) => {
                debug!("consumer is behind: holding a batch, reading paused");
                *pending = Some(b);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                Err(SourceError::Setup("the spool writer is gone".into()))
            }
        }
    }

    async fn session(
        &self,
        resume: Lsn,
        restarted: bool,
        control: &mut ReaderControl,
    ) -> Result<Ended, (SourceError, Lsn)> {
        let mut last_commit = resume;
        let fail = |e: SourceError, at: Lsn| (e, at);
        let mut conn = ReplicationConnection::connect(&self.opts.conn)
            .await
            .map_err(|e| fail(e, last_commit))?;
        let proto = if self.opts.streaming && conn.server_major_version().unwrap_or(0) >= 14 {
            2
        } else {
            1
        };
        if restarted {
            // Tell the consumer to drop unfinished work before anything new arrives.
            self.out
                .send(vec![ReaderEvent::Restart { from: resume }])
                .await
                .map_err(|_| {
                    fail(
                        SourceError::Setup("the spool writer is gone".into()),
                        last_commit,
                    )
                })?;
        }
        let mut options = vec![
            ("proto_version", proto.to_string()),
            (
                "publication_names",
                crate::config::quote_ident(&self.opts.publication),
            ),
            ("messages", "true".to_string()),
        ];
        if proto >= 2 {
            options.push(("streaming", "true".to_string()));
        }
        conn.start_replication(&self.opts.slot, resume, &options)
            .await
            .map_err(|e| fail(e, last_commit))?;
        info!(slot = %self.opts.slot, start = %resume, protocol = proto, target = conn.target(), "replication started");
        self.status.send_modify(|s| {
            s.connected = true;
            s.protocol_version = proto;
            s.received_lsn = s.received_lsn.max(resume);
            s.pending_batch = false;
            s.last_error = None;
        });

        let mut decoder = Decoder::new();
        let mut received = resume;
        let mut batch: Vec<ReaderEvent> = Vec::new();
        let mut batch_bytes = 0usize;
        // When the first event of `batch` arrived (None while it is empty).
        let mut batch_started: Option<Instant> = None;
        let mut pending: Option<Vec<ReaderEvent>> = None;
        let mut pending_commit = last_commit;
        let mut last_status = Instant::now();
        let mut confirmed_open = true;
        // The server's position from its last keepalive.
        let mut server_end = resume;
        // The flush position this connection last carried (see `flush_field`).
        let mut flush_sent = Lsn::ZERO;
        let mut paused_open = true;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_published: Option<Instant> = None;

        loop {
            let paused = *control.paused.borrow();
            let reading = pending.is_none() && !paused;
            let held_back = !reading;
            // One consistent picture: a batch is either pending or counted in
            // last_commit_end, never both and never neither.
            let pending_batch = pending.is_some();
            // Positions alone are published at most every STATUS_EVERY (the tick runs the
            // loop while idle, so a quiet stream still shows its last position within
            // that); a change of state at once. Publishing after every batch woke the
            // supervisor once per batch (thousands of times a second while catching up).
            let now = Instant::now();
            let due = last_published.is_none_or(|t| now.duration_since(t) >= STATUS_EVERY);
            let published = self.status.send_if_modified(|s| {
                let received = s.received_lsn.max(received);
                let state_changed = s.held_back != held_back || s.pending_batch != pending_batch;
                let moved = s.last_commit_end != last_commit || s.received_lsn != received;
                let changed = state_changed || (moved && due);
                if !changed {
                    return false;
                }
                s.held_back = held_back;
                s.pending_batch = pending_batch;
                s.last_commit_end = last_commit;
                s.received_lsn = received;
                true
            });
            if published {
                last_published = Some(now);
            }
            tokio::select! {
                biased;
                changed = control.shutdown.changed() => {
                    // A dropped sender also means: stop.
                    if changed.is_err() || *control.shutdown.borrow() {
                        // Hand over what was read, report, and end the stream cleanly.
                        let mut handed = true;
                        if let Some(p) = pending.take() {
                            handed &= self.out.send(p).await.is_ok();
                        }
                        if !batch.is_empty() {
                            handed &= self.out.send(std::mem::take(&mut batch)).await.is_ok();
                        }
                        if handed {
                            last_commit = pending_commit;
                        }
                        self.status.send_modify(|s| {
                            s.pending_batch = false;
                            s.last_commit_end = last_commit;
                        });
                        let flush = *control.confirmed.borrow();
                        let mut fresh = Lsn::ZERO;
                        let _ = send_status(&mut conn, received, flush, &mut fresh).await;
                        let _ = conn.stop_replication().await;
                        conn.close().await;
                        info!("replication stopped");
                        return Ok(Ended::Shutdown);
                    }
                }
                permit = self.out.reserve(), if pending.is_some() => {
                    let permit = permit.map_err(|_| fail(SourceError::Setup("the spool writer is gone".into()), last_commit))?;
                    if let Some(p) = pending.take() {
                        permit.send(p);
                        last_commit = pending_commit;
                        self.status.send_modify(|s| {
                            s.pending_batch = false;
                            s.last_commit_end = last_commit;
                        });
                    }
                }
                msg = conn.next_message(), if reading => {
                    let msg = msg.map_err(|e| fail(e, last_commit))?;
                    let Some(mut msg) = msg else {
                        return Err(fail(stream_ended(&conn), last_commit));
                    };
                    // Take everything already buffered in one go (natural batching).
                    loop {
                        match msg {
                            ReplicationMessage::XLogData { wal_start, wal_end, data, .. } => {
                                received = received.max(wal_end).max(wal_start);
                                batch_bytes += data.len();
                                let ev = decoder.decode_bytes(wal_start, &data).map_err(|e| {
                                    fail(SourceError::Decode { lsn: wal_start, reason: e.to_string() }, last_commit)
                                })?;
                                if let Some(ev) = ev {
                                    if let ReaderEvent::Commit(c) | ReaderEvent::StreamCommit(c) = &ev {
                                        pending_commit = pending_commit.max(c.end_lsn);
                                    }
                                    batch_started.get_or_insert_with(Instant::now);
                                    batch.push(ev);
                                }
                            }
                            ReplicationMessage::Keepalive { wal_end, reply_requested, .. } => {
                                received = received.max(wal_end);
                                server_end = server_end.max(wal_end);
                                if reply_requested {
                                    let idle = pending.is_none() && batch.is_empty() && decoder.state() == DecoderState::Idle;
                                    let flush = flush_to_report(*control.confirmed.borrow(), last_commit, idle, server_end);
                                    send_status(&mut conn, received, flush, &mut flush_sent).await.map_err(|e| fail(e, last_commit))?;
                                    last_status = Instant::now();
                                    self.status.send_modify(|s| {
                                        s.keepalive_replies += 1;
                                        s.reported_flush_lsn = flush;
                                    });
                                }
                            }
                        }
                        if batch.len() >= self.opts.max_batch_events || batch_bytes >= self.opts.max_batch_bytes {
                            break;
                        }
                        match conn.next_message().now_or_never() {
                            Some(Ok(Some(m))) => msg = m,
                            // The end of the stream is seen (again) by the next read,
                            // after this batch is handed over.
                            Some(Ok(None)) | None => break,
                            Some(Err(e)) => return Err(fail(e, last_commit)),
                        }
                    }
                    let full = batch.len() >= self.opts.max_batch_events
                        || batch_bytes >= self.opts.max_batch_bytes;
                    let aged = batch_started.is_some_and(|t| t.elapsed() >= self.opts.batch_linger);
                    if !batch.is_empty() && (full || aged) {
                        batch_started = None;
                        batch_bytes = 0;
                        self.hand_over(std::mem::take(&mut batch), &mut pending, &mut last_commit, pending_commit)
                            .map_err(|e| fail(e, last_commit))?;
                    }
                }
                _ = sleep_until(batch_started.map(|t| t + self.opts.batch_linger)), if batch_started.is_some() && pending.is_none() => {
                    batch_started = None;
                    batch_bytes = 0;
                    if !batch.is_empty() {
                        self.hand_over(std::mem::take(&mut batch), &mut pending, &mut last_commit, pending_commit)
                            .map_err(|e| fail(e, last_commit))?;
                    }
                }
                changed = control.confirmed.changed(), if confirmed_open => {
                    if changed.is_err() { confirmed_open = false; continue; }
                    let idle = pending.is_none() && batch.is_empty() && decoder.state() == DecoderState::Idle;
                    let flush = flush_to_report(*control.confirmed.borrow(), last_commit, idle, server_end);
                    if flush > self.status.borrow().reported_flush_lsn {
                        send_status(&mut conn, received, flush, &mut flush_sent).await.map_err(|e| fail(e, last_commit))?;
                        last_status = Instant::now();
                        self.status.send_modify(|s| { s.status_updates += 1; s.reported_flush_lsn = flush; });
                    }
                }
                changed = control.paused.changed(), if paused_open => {
                    if changed.is_err() { paused_open = false; }
                }
                _ = tick.tick() => {
                    // Unprompted status: at the configured interval, and every second
                    // while held back (we are not reading keepalive requests then).
                    let every = if held_back { self.opts.status_interval.min(Duration::from_secs(1)) } else { self.opts.status_interval };
                    if last_status.elapsed() >= every {
                        let idle = pending.is_none() && batch.is_empty() && decoder.state() == DecoderState::Idle;
                        let flush = flush_to_report(*control.confirmed.borrow(), last_commit, idle, server_end);
                        send_status(&mut conn, received, flush, &mut flush_sent).await.map_err(|e| fail(e, last_commit))?;
                        last_status = Instant::now();
                        self.status.send_modify(|s| { s.status_updates += 1; s.reported_flush_lsn = flush; });
                    }
                }
            }
        }
    }
}

/// Resolves at `at` (never when None).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// How often positions alone (received, last commit handed over) are published.
const STATUS_EVERY: Duration = Duration::from_millis(50);

/// The flush LSN to report. Normally the confirmed LSN. When the source is idle (no
/// transaction open, nothing held back, everything handed over confirmed), the server's
/// keepalive position instead: nothing before it is still owed to the sink, and a quiet
/// database's slot would otherwise hold WAL forever. A transaction still in progress on
/// the server is safe: it commits after that position and is sent in full later.
fn flush_to_report(confirmed: Lsn, last_commit: Lsn, idle: bool, server_end: Lsn) -> Lsn {
    if idle && confirmed >= last_commit {
        confirmed.max(server_end)
    } else {
        confirmed
    }
}

/// What a status update carries as flush/apply: `flush` when it is news (beyond what
/// this connection last carried), else nothing (`0/0`, "no flush information").
///
/// A walsender at a fast shutdown waits until the client's flush position reaches what
/// it sent, or, when the client reports none, its write position. With the sink down the
/// confirmed LSN does not move, so repeating it would hold a PostgreSQL shutdown until
/// StarRocks is back; PostgreSQL ignores an invalid flush position for the slot (it
/// never moves the slot back), and `write` = received still tells it what arrived.
fn flush_field(flush: Lsn, sent: &mut Lsn) -> Lsn {
    if flush > *sent {
        *sent = flush;
        flush
    } else {
        Lsn::ZERO
    }
}

/// Sends a standby status update (write = received, flush/apply = `flush` when it is
/// news, see [`flush_field`]).
async fn send_status(
    conn: &mut ReplicationConnection,
    received: Lsn,
    flush: Lsn,
    sent: &mut Lsn,
) -> Result<(), SourceError> {
    conn.send_status(received, flush_field(flush, sent), false)
        .await?;
    crate::failpoints::crash(crate::failpoints::READER_AFTER_STATUS);
    Ok(())
}

/// The transient error for a stream the server ended on its own.
fn stream_ended(conn: &ReplicationConnection) -> SourceError {
    SourceError::StreamEnded {
        target: conn.target().to_string(),
        how: conn.stream_end().unwrap_or("end of stream"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_is_sent_only_when_it_moved() {
        let mut sent = Lsn::ZERO;
        assert_eq!(flush_field(Lsn(100), &mut sent), Lsn(100));
        assert_eq!(flush_field(Lsn(100), &mut sent), Lsn::ZERO, "repeated");
        assert_eq!(
            flush_field(Lsn(90), &mut sent),
            Lsn::ZERO,
            "never backwards"
        );
        assert_eq!(flush_field(Lsn(150), &mut sent), Lsn(150));
        assert_eq!(sent, Lsn(150));
    }

    #[test]
    fn flush_follows_the_server_only_when_idle_and_everything_is_confirmed() {
        let (c, last, srv) = (Lsn(100), Lsn(100), Lsn(500));
        assert_eq!(flush_to_report(c, last, true, srv), srv);
        assert_eq!(flush_to_report(c, last, false, srv), c, "open transaction");
        assert_eq!(
            flush_to_report(Lsn(90), last, true, srv),
            Lsn(90),
            "unloaded commit"
        );
        assert_eq!(
            flush_to_report(c, last, true, Lsn(50)),
            c,
            "never backwards"
        );
    }
}
