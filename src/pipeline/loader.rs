//! The loader task: reads durable spool records, plans them (`plan`), executes the steps
//! through a [`LoadSink`], then advances the loaded mark and the confirmed LSN.
//!
//! Invariants kept here:
//! - 1: the confirmed LSN only moves to the end of a transaction whose every row is
//!   loaded (with `ack_policy = loaded`);
//! - 3: only records at or below the durable mark are read (the spool enforces it);
//! - 4: the loaded mark and the confirmed LSN only land on commit records; a transaction
//!   larger than the batch bounds is loaded in parts but confirmed only at its commit;
//! - 5: labels are built from the spool id, the target table and the sequence range; a
//!   retry reuses them. Loads that follow a TRUNCATE of the same table in a window not
//!   yet confirmed carry this run's epoch instead, because a replay after a crash runs the
//!   TRUNCATE again and must then really reload them (a reused label would be skipped as
//!   "already loaded");
//! - 10: a window is bounded by rows and bytes; memory does not grow with the backlog.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::plan::{ColumnSet, PlanError, PlannedRow, Planner, RowOp, Step};
use crate::config::AckPolicy;
use crate::core::{Lsn, Relation, RelationId};
use crate::grpc::state::{LastLoad, LoaderStatus, TableCounters};
use crate::spool::{DurableMark, Spool, SpoolError, SpoolRecord};

/// One load for the sink: rows of one table and one column set, in order.
pub struct LoadBatch<'a> {
    pub relation: &'a Relation,
    pub rel_version: u32,
    pub columns: &'a ColumnSet,
    pub rows: &'a [PlannedRow],
    pub label: String,
    /// Where the sink reports its retries (they show in Status).
    pub note: &'a RetryNote,
}

/// Lets a sink report retries while it keeps trying, so Status shows `retrying`, the
/// retry count and the last error instead of a silent `loading`.
#[derive(Clone)]
pub struct RetryNote(Arc<watch::Sender<LoaderStatus>>);

impl RetryNote {
    /// A transient failure; the sink retries after `delay`.
    pub fn retrying(&self, what: &str, attempt: u32, delay: Duration, error: &str) {
        warn_retry(what, attempt, delay, error);
        self.0.send_modify(|s| {
            s.stage = "retrying".into();
            s.retries += 1;
            s.last_error = Some(format!("{what}: {error}"));
        });
    }

    /// The operation went through after retries: the error is over.
    pub fn recovered(&self) {
        self.0.send_if_modified(|s| {
            let changed = s.stage == "retrying" || s.last_error.is_some();
            if changed {
                s.stage = "loading".into();
                s.last_error = None;
            }
            changed
        });
    }

    /// A note that reports nowhere (tests).
    pub fn detached() -> Self {
        RetryNote(Arc::new(watch::channel(LoaderStatus::default()).0))
    }
}

/// How a load ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadResult {
    Loaded,
    /// The label was already loaded (a replay): nothing done twice.
    AlreadyLoaded,
}

/// What kind of sink failure it is: decides what the caller does with it. Decided where
/// the failure arises (from the target's reply or the driver's error kind), never by
/// reading an error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkFailureKind {
    /// Worth retrying as is (the target or the catalog is unreachable, back-pressure, an
    /// ambiguous outcome that the same label settles). `load`, `prepare` and `truncate`
    /// retry these themselves; only calls that do not retry (such as a start-up check)
    /// return them.
    Transient,
    /// Retrying cannot help until an operator acts (bad credentials, incompatible target
    /// schema, missing target table, unmapped type, no primary key). The pipeline stops,
    /// keeping the spool and the slot.
    Permanent,
    /// The target refused rows of this load (data quality: filtered rows, or row counts
    /// that do not add up). Permanent for this data; see [`RejectedLoad`] for what the
    /// loader must do with the label.
    Rejected(Box<RejectedLoad>),
}

/// A load whose rows the target refused, in full or in part.
///
/// When `label_committed` is true the target COMMITTED the label (for example StarRocks
/// answered `Success` with `NumberFilteredRows > 0`, or with counts that do not add up):
/// a retry or a restart with the same label is answered "already loaded" and would lose
/// the refused rows silently. The loader must record the label as rejected and, once the
/// operator has fixed the target, reload that window under a new label. When false, the
/// target aborted the transaction and the label may be reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedLoad {
    /// Target table.
    pub table: String,
    pub label: String,
    /// Where the target keeps the refused rows and why (StarRocks `ErrorURL`).
    pub error_url: Option<String>,
    /// Rows in the body sent.
    pub rows_sent: u64,
    pub rows_loaded: u64,
    pub rows_filtered: u64,
    pub rows_unselected: u64,
    /// Whether the label is used up at the target (see the type's docs).
    pub label_committed: bool,
}

/// A sink error: its kind, and a message that says what is wrong and what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SinkFailure {
    pub kind: SinkFailureKind,
    pub message: String,
}

impl SinkFailure {
    /// A failure worth retrying.
    pub fn transient(message: impl Into<String>) -> Self {
        SinkFailure {
            kind: SinkFailureKind::Transient,
            message: message.into(),
        }
    }

    /// A failure that needs an operator.
    pub fn permanent(message: impl Into<String>) -> Self {
        SinkFailure {
            kind: SinkFailureKind::Permanent,
            message: message.into(),
        }
    }

    /// Rows refused by the target.
    pub fn rejected(load: RejectedLoad, message: impl Into<String>) -> Self {
        SinkFailure {
            kind: SinkFailureKind::Rejected(Box::new(load)),
            message: message.into(),
        }
    }

    /// Whether retrying as is may succeed.
    pub fn is_transient(&self) -> bool {
        self.kind == SinkFailureKind::Transient
    }

    /// The refused load, for [`SinkFailureKind::Rejected`].
    pub fn rejected_load(&self) -> Option<&RejectedLoad> {
        match &self.kind {
            SinkFailureKind::Rejected(r) => Some(r),
            _ => None,
        }
    }
}

/// What the sink knows about a prepared relation version that the loader needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PreparedTable {
    /// Positions in `relation.columns` of the source table's primary key columns (from
    /// the catalog, not from pgoutput's key flags, which follow the replica identity), in
    /// key order.
    pub key_columns: Vec<usize>,
}

/// Where the loader puts rows. The StarRocks implementation retries transient failures
/// itself (for as long as it takes) and returns only success or a permanent failure.
pub trait LoadSink: Send + Sync + 'static {
    /// Target table name for a relation (for labels and counters).
    fn target_name(&self, relation: &Relation) -> String;
    /// Makes the target ready for this relation version (check / create / add columns),
    /// and says where the relation's primary key columns are.
    fn prepare(
        &self,
        relation: &Relation,
        rel_version: u32,
        note: &RetryNote,
    ) -> impl Future<Output = Result<PreparedTable, SinkFailure>> + Send;
    fn load(
        &self,
        batch: LoadBatch<'_>,
    ) -> impl Future<Output = Result<LoadResult, SinkFailure>> + Send;
    fn truncate(
        &self,
        relation: &Relation,
        note: &RetryNote,
    ) -> impl Future<Output = Result<(), SinkFailure>> + Send;
}

/// Loader errors: all stop the pipeline, keeping the spool and the slot.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("spool: {0}")]
    Spool(#[from] SpoolError),
    #[error("{0}")]
    Plan(#[from] PlanError),
    #[error("sink: {0}")]
    Sink(#[from] SinkFailure),
    #[error("internal: {0}")]
    Internal(String),
}

/// Batch bounds and acknowledgement.
#[derive(Debug, Clone)]
pub struct LoaderOptions {
    pub flush_rows: usize,
    pub flush_bytes: usize,
    pub flush_interval: Duration,
    pub ack_policy: AckPolicy,
    /// Records per spool read.
    pub read_chunk: usize,
    /// `SINK_DELETE_MODE=soft` (see `Planner::with_soft_deletes`).
    pub soft_deletes: bool,
}

/// Inputs that steer the loader.
pub struct LoaderControl {
    pub durable: watch::Receiver<DurableMark>,
    pub paused: watch::Receiver<bool>,
    /// `true`: load what is durable, then return.
    pub drain: watch::Receiver<bool>,
    /// `true`: return at the next window boundary.
    pub shutdown: watch::Receiver<bool>,
}

/// The loader.
pub struct Loader<S: LoadSink> {
    spool: Spool,
    sink: Arc<S>,
    opts: LoaderOptions,
    status: Arc<watch::Sender<LoaderStatus>>,
    confirmed: watch::Sender<Lsn>,
    epoch: u32,
    relations: HashMap<(RelationId, u32), Arc<Relation>>,
    prepared: HashMap<(RelationId, u32), PreparedTable>,
}

/// A window of records planned but not yet loaded.
struct Window {
    planner: Planner,
    /// Last commit record in the window: (seq, end_lsn).
    last_commit: Option<(u64, Lsn)>,
    started: Option<Instant>,
    /// Latest schema version seen per relation (for truncates).
    versions: HashMap<RelationId, u32>,
}

impl<S: LoadSink> Loader<S> {
    /// `confirmed` is the channel the reader reports as flush_lsn.
    pub fn new(
        spool: Spool,
        sink: Arc<S>,
        opts: LoaderOptions,
        confirmed: watch::Sender<Lsn>,
    ) -> (Self, watch::Receiver<LoaderStatus>) {
        let loaded = spool.loaded_mark();
        let (status, rx) = watch::channel(LoaderStatus {
            stage: "idle".into(),
            loaded_seq: loaded.seq,
            confirmed_lsn: loaded.confirmed_lsn,
            ..LoaderStatus::default()
        });
        // Non-zero: part 0 is the deterministic label.
        let epoch = rand::random::<u32>().max(1);
        (
            Loader {
                spool,
                sink,
                opts,
                status: Arc::new(status),
                confirmed,
                epoch,
                relations: HashMap::new(),
                prepared: HashMap::new(),
            },
            rx,
        )
    }

    fn stage(&self, stage: &str) {
        self.status.send_if_modified(|s| {
            let changed = s.stage != stage;
            s.stage = stage.to_string();
            changed
        });
    }

    /// Runs until shutdown, until drained (with `drain`), or a permanent error.
    pub async fn run(mut self, mut control: LoaderControl) -> Result<(), LoaderError> {
        let mut next = self.spool.loaded_mark().seq + 1;
        let mut window = Window {
            planner: Planner::with_soft_deletes(self.opts.soft_deletes),
            last_commit: None,
            started: None,
            versions: HashMap::new(),
        };
        // Relations already known to the spool (restart): their latest versions.
        for (id, v, _) in self.spool.relations() {
            let e = window.versions.entry(id).or_insert(v);
            *e = (*e).max(v);
        }
        loop {
            if *control.shutdown.borrow() {
                self.stage("stopped");
                return Ok(());
            }
            if *control.paused.borrow() && !*control.drain.borrow() {
                self.stage("paused");
                tokio::select! {
                    _ = control.paused.changed() => {}
                    _ = control.shutdown.changed() => {}
                    _ = control.drain.changed() => {}
                }
                continue;
            }
            let durable = control.durable.borrow().seq;
            if next <= durable {
                let spool = self.spool.clone();
                let chunk = self.opts.read_chunk;
                let from = next;
                let records = tokio::task::spawn_blocking(move || spool.read_from(from, chunk))
                    .await
                    .map_err(|e| LoaderError::Internal(format!("spool read task: {e}")))??;
                if records.is_empty() {
                    return Err(LoaderError::Internal(format!(
                        "the spool returned nothing from {from} although it is durable up to {durable}"
                    )));
                }
                for (seq, rec) in records {
                    next = seq + 1;
                    window.started.get_or_insert_with(Instant::now);
                    match rec {
                        SpoolRecord::Change {
                            rel_version,
                            change,
                        } => {
                            let rel = self.relation(change.relation, rel_version)?;
                            window.versions.insert(rel.id, rel_version);
                            window.planner.add(seq, &rel, rel_version, &change)?;
                        }
                        SpoolRecord::Commit(c) => {
                            window.last_commit = Some((seq, c.info.end_lsn));
                            let full = window.planner.rows() >= self.opts.flush_rows
                                || window.planner.bytes() >= self.opts.flush_bytes;
                            if full && !self.flush(&mut window, true, &mut control).await? {
                                self.stage("stopped");
                                return Ok(());
                            }
                        }
                    }
                    // A transaction far larger than a batch: load it in parts (bounded
                    // memory); it is confirmed at its commit only.
                    let huge = window.planner.rows() >= self.opts.flush_rows.saturating_mul(4)
                        || window.planner.bytes() >= self.opts.flush_bytes.saturating_mul(4);
                    if huge && !self.flush(&mut window, false, &mut control).await? {
                        self.stage("stopped");
                        return Ok(());
                    }
                }
                continue;
            }
            // Everything durable is read: load the window when it is old enough, when
            // draining, or when the source is idle.
            let due = window
                .started
                .map(|t| t.elapsed() >= self.opts.flush_interval)
                .unwrap_or(false);
            if window.last_commit.is_some() && (due || *control.drain.borrow()) {
                if !self.flush(&mut window, true, &mut control).await? {
                    self.stage("stopped");
                    return Ok(());
                }
                continue;
            }
            // Everything durable is loaded, but empty transactions (no records) may have
            // moved the durable LSN past the last confirmed commit: confirm it too.
            if window.last_commit.is_none() && window.planner.is_empty() {
                self.confirm_empty_tail().await?;
            }
            if *control.drain.borrow() && window.last_commit.is_none() {
                self.stage("drained");
                return Ok(());
            }
            self.stage("idle");
            let wait = window
                .started
                .map(|t| self.opts.flush_interval.saturating_sub(t.elapsed()))
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                _ = control.durable.changed() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = control.shutdown.changed() => {}
                _ = control.drain.changed() => {}
                _ = control.paused.changed() => {}
            }
        }
    }

    fn relation(&mut self, id: RelationId, version: u32) -> Result<Arc<Relation>, LoaderError> {
        if let Some(r) = self.relations.get(&(id, version)) {
            return Ok(r.clone());
        }
        let r = Arc::new(self.spool.relation(id, version)?);
        self.relations.insert((id, version), r.clone());
        Ok(r)
    }

    /// Executes the planned steps; with `at_commit`, then marks the window's last commit
    /// loaded and confirms its end LSN.
    /// Returns false when a shutdown interrupted it (nothing is marked then).
    async fn flush(
        &mut self,
        window: &mut Window,
        at_commit: bool,
        control: &mut LoaderControl,
    ) -> Result<bool, LoaderError> {
        let steps = if at_commit {
            window.planner.take()
        } else {
            window.planner.take_keep_truncates()
        };
        if !self.execute(steps, &window.versions, control).await? {
            return Ok(false);
        }
        if at_commit {
            if let Some((seq, end_lsn)) = window.last_commit.take() {
                self.mark(seq, end_lsn).await?;
            }
            window.started = None;
        }
        Ok(true)
    }

    /// Confirms the durable LSN when every durable record is loaded and only empty
    /// transactions lie beyond the last confirmed commit.
    async fn confirm_empty_tail(&mut self) -> Result<(), LoaderError> {
        let durable = self.spool.durable_mark();
        let loaded = self.spool.loaded_mark();
        if loaded.seq == durable.seq && durable.end_lsn > loaded.confirmed_lsn {
            self.mark(durable.seq, durable.end_lsn).await?;
        }
        Ok(())
    }

    async fn mark(&mut self, seq: u64, end_lsn: Lsn) -> Result<(), LoaderError> {
        let spool = self.spool.clone();
        // When everything durable is loaded, empty transactions after the last commit
        // record (durable.end_lsn) are confirmed too.
        let durable = spool.durable_mark();
        let confirm = if durable.seq == seq {
            end_lsn.max(durable.end_lsn)
        } else {
            end_lsn
        };
        tokio::task::spawn_blocking(move || spool.mark_loaded(seq, confirm))
            .await
            .map_err(|e| LoaderError::Internal(format!("spool mark task: {e}")))??;
        if self.opts.ack_policy == AckPolicy::Loaded {
            self.confirmed.send_if_modified(|c| {
                let adv = confirm > *c;
                if adv {
                    *c = confirm;
                }
                adv
            });
        }
        self.status.send_modify(|s| {
            s.loaded_seq = seq;
            s.confirmed_lsn = confirm;
        });
        debug!(seq, confirmed = %confirm, "window loaded");
        Ok(())
    }

    /// Runs the steps: prepares targets, then loads tables in parallel, each table's steps
    /// in order. A pause (outside a drain) or a shutdown interrupts it: loads in flight
    /// are abandoned (their labels make a replay safe); after a pause it continues from
    /// each table's first unfinished step, so a finished TRUNCATE never runs twice in a
    /// run. Returns false when a shutdown interrupted it.
    async fn execute(
        &mut self,
        steps: BTreeMap<RelationId, Vec<Step>>,
        versions: &HashMap<RelationId, u32>,
        control: &mut LoaderControl,
    ) -> Result<bool, LoaderError> {
        if steps.is_empty() {
            return Ok(true);
        }
        self.stage("loading");
        let note = RetryNote(self.status.clone());
        // Resolve relations and prepare targets first (sequentially: DDL).
        let mut work = Vec::new();
        for (id, steps) in steps {
            let mut rels = HashMap::new();
            for s in &steps {
                let v = match s {
                    Step::Load { rel_version, .. } => *rel_version,
                    Step::Truncate { .. } => match versions.get(&id) {
                        Some(v) => *v,
                        None => {
                            return Err(LoaderError::Internal(format!(
                                "TRUNCATE of relation {id} without a known schema"
                            )))
                        }
                    },
                };
                if let std::collections::hash_map::Entry::Vacant(e) = rels.entry(v) {
                    let r = self.relation(id, v)?;
                    if !self.prepared.contains_key(&(id, v)) {
                        let prepared = self.sink.prepare(&r, v, &note).await?;
                        self.prepared.insert((id, v), prepared);
                    }
                    e.insert(r);
                }
            }
            work.push((rels, steps, AtomicUsize::new(0)));
        }
        let spool_id = self.spool.id();
        loop {
            let futs = work.iter().map(|(rels, steps, done)| {
                run_table(
                    &*self.sink,
                    &spool_id,
                    self.epoch,
                    rels,
                    steps,
                    done,
                    &self.status,
                    &note,
                )
            });
            let all = futures_util::future::join_all(futs);
            let interrupt = async {
                loop {
                    if *control.shutdown.borrow() {
                        return true;
                    }
                    if *control.paused.borrow() && !*control.drain.borrow() {
                        return false;
                    }
                    tokio::select! {
                        r = control.shutdown.changed() => if r.is_err() { return true },
                        r = control.paused.changed() => if r.is_err() { std::future::pending::<()>().await },
                        _ = control.drain.changed() => {}
                    }
                }
            };
            let results = tokio::select! {
                results = all => results,
                shutdown = interrupt => {
                    if shutdown {
                        info!("stopping: the load in flight is abandoned (replayed with the same label)");
                        return Ok(false);
                    }
                    self.stage("paused");
                    info!("paused in the middle of a window; resumes where each table stopped");
                    loop {
                        if *control.shutdown.borrow() {
                            return Ok(false);
                        }
                        if !*control.paused.borrow() || *control.drain.borrow() {
                            break;
                        }
                        tokio::select! {
                            r = control.paused.changed() => if r.is_err() { break },
                            _ = control.shutdown.changed() => {}
                            _ = control.drain.changed() => {}
                        }
                    }
                    self.stage("loading");
                    continue;
                }
            };
            if let Some(e) = results.into_iter().find_map(Result::err) {
                self.status.send_modify(|s| {
                    s.stage = "failed".into();
                    s.last_error = Some(e.to_string());
                });
                return Err(e.into());
            }
            return Ok(true);
        }
    }
}

/// Runs one table's steps in order from `done`, advancing `done` after each step and
/// counting into the loader status as it goes.
#[allow(clippy::too_many_arguments)]
async fn run_table<S: LoadSink>(
    sink: &S,
    spool_id: &str,
    epoch: u32,
    rels: &HashMap<u32, Arc<Relation>>,
    steps: &[Step],
    done: &AtomicUsize,
    status: &watch::Sender<LoaderStatus>,
    note: &RetryNote,
) -> Result<(), SinkFailure> {
    let count = |rel: &Relation, target: &str, f: &dyn Fn(&mut TableCounters)| {
        status.send_modify(|s| {
            let c = s.tables.entry(target.to_string()).or_default();
            c.source_table = rel.qualified_name();
            c.target_table = target.to_string();
            f(c);
        })
    };
    for (i, step) in steps.iter().enumerate().skip(done.load(Ordering::SeqCst)) {
        match step {
            Step::Load {
                rel_version,
                columns,
                rows,
                first_seq,
                last_seq,
                after_truncate,
                ..
            } => {
                let rel = rels.get(rel_version).ok_or_else(|| {
                    SinkFailure::permanent(format!("no schema for version {rel_version}"))
                })?;
                let target = sink.target_name(rel);
                // See the module docs: after a truncate, not reusable across runs on purpose.
                let label = crate::connectors::sinks::starrocks::label(
                    spool_id,
                    &target,
                    *first_seq,
                    *last_seq,
                    if *after_truncate { epoch } else { 0 },
                );
                let result = sink
                    .load(LoadBatch {
                        relation: rel,
                        rel_version: *rel_version,
                        columns,
                        rows,
                        label: label.clone(),
                        note,
                    })
                    .await?;
                let (ups, dels) = rows.iter().fold((0u64, 0u64), |(u, d), r| match r.op {
                    RowOp::Upsert => (u + 1, d),
                    RowOp::Delete => (u, d + 1),
                });
                let last = LastLoad {
                    label,
                    at_unix_ms: now_ms(),
                    outcome: match result {
                        LoadResult::Loaded => "success".into(),
                        LoadResult::AlreadyLoaded => "already_loaded".into(),
                    },
                    rows: rows.len() as u64,
                };
                count(rel, &target, &|c| {
                    c.loads += 1;
                    c.rows_upserted += ups;
                    c.rows_deleted += dels;
                    c.last_load = Some(last.clone());
                });
            }
            Step::Truncate { seq } => {
                let rel = rels
                    .values()
                    .next()
                    .ok_or_else(|| SinkFailure::permanent("truncate without a schema"))?;
                let target = sink.target_name(rel);
                info!(table = %rel.qualified_name(), target = %target, seq, "applying TRUNCATE");
                sink.truncate(rel, note).await?;
                count(rel, &target, &|c| c.truncates += 1);
            }
        }
        done.store(i + 1, Ordering::SeqCst);
    }
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Logs the first of a burst of equal warnings (used by sinks while retrying).
pub fn warn_retry(what: &str, attempt: u32, delay: Duration, error: &str) {
    if attempt <= 3 || attempt.is_power_of_two() {
        warn!(what, attempt, retry_in = ?delay, error, "load failed, retrying with the same label");
    }
}
