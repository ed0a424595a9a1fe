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
//!   retry reuses them. Before a window's loads are sent, its steps and labels are made
//!   durable in the spool's ledger (the load journal, `journal`); after a restart exactly
//!   those loads are re-sent, same labels and content, before anything newer, and a
//!   TRUNCATE that already ran is not run again;
//! - 10: a window is bounded by rows and bytes; memory does not grow with the backlog.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use tokio::sync::{watch, Mutex};
use tracing::{debug, info, warn};

use super::journal::{Journal, JournalError, JournalStep};
use super::plan::{ColumnSet, PlanError, PlannedRow, Planner, RowOp, Step};
use super::status::{LastLoad, LoaderStage, LoaderStatus, TableCounters};
use crate::config::AckPolicy;
use crate::core::{ChangeOp, Lsn, Relation, RelationId};
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
            s.stage = LoaderStage::Retrying;
            s.retries += 1;
            s.last_error = Some(format!("{what}: {error}"));
        });
    }

    /// The operation went through after retries: the error is over.
    pub fn recovered(&self) {
        self.0.send_if_modified(|s| {
            let changed = s.stage == LoaderStage::Retrying || s.last_error.is_some();
            if changed {
                s.stage = LoaderStage::Loading;
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
    #[error("{0}")]
    Journal(#[from] JournalError),
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
    /// Tables loading at once (`MAX_CONCURRENT_LOADS`); the others wait for a free turn.
    pub max_concurrent_loads: usize,
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

/// Whether the loader goes on or was stopped (shutdown) in the middle of something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Go,
    Stopped,
}

/// The loader.
pub struct Loader<S: LoadSink> {
    spool: Spool,
    sink: Arc<S>,
    opts: LoaderOptions,
    status: Arc<watch::Sender<LoaderStatus>>,
    confirmed: watch::Sender<Lsn>,
    relations: HashMap<(RelationId, u32), Arc<Relation>>,
    prepared: HashMap<(RelationId, u32), Arc<PreparedTable>>,
}

/// A window of records planned but not yet loaded.
struct Window {
    planner: Planner,
    /// Last commit record in the window: (seq, end_lsn).
    last_commit: Option<(u64, Lsn)>,
    /// Last record planned.
    last_read: u64,
    started: Option<Instant>,
    /// Latest schema version seen per relation (for truncates).
    versions: HashMap<RelationId, u32>,
    /// Steps already sent of a window loaded in parts (a transaction larger than a window).
    journal: Option<Journal>,
}

/// One step to run, with what the journal says about it.
enum Exec {
    Load {
        rel_version: u32,
        columns: ColumnSet,
        rows: Vec<PlannedRow>,
        label: String,
        /// Position of the step in its table's journal.
        index: usize,
    },
    Truncate {
        seq: u64,
        index: usize,
    },
}

/// One table's work: its relation versions and its steps, run in order.
struct TableWork {
    id: RelationId,
    rels: HashMap<u32, Arc<Relation>>,
    steps: Vec<Exec>,
    done: AtomicUsize,
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
            stage: LoaderStage::Idle,
            loaded_seq: loaded.seq,
            confirmed_lsn: loaded.confirmed_lsn,
            ..LoaderStatus::default()
        });
        (
            Loader {
                spool,
                sink,
                opts,
                status: Arc::new(status),
                confirmed,
                relations: HashMap::new(),
                prepared: HashMap::new(),
            },
            rx,
        )
    }

    fn stage(&self, stage: LoaderStage) {
        self.status.send_if_modified(|s| {
            let changed = s.stage != stage;
            s.stage = stage;
            changed
        });
    }

    /// Runs until shutdown, until drained (with `drain`), or a permanent error.
    pub async fn run(mut self, mut control: LoaderControl) -> Result<(), LoaderError> {
        let mut next = self.spool.loaded_mark().seq + 1;
        let mut window = Window {
            planner: Planner::with_soft_deletes(self.opts.soft_deletes),
            last_commit: None,
            last_read: 0,
            started: None,
            versions: HashMap::new(),
            journal: None,
        };
        // Relations already known to the spool (restart): their latest versions.
        for (id, v, _) in self.spool.relations() {
            let e = window.versions.entry(id).or_insert(v);
            *e = (*e).max(v);
        }
        // The window in flight when the last run ended: re-send it exactly first.
        if let Some(bytes) = self.spool.loader_journal() {
            let journal = Journal::decode(&bytes)?;
            if journal.planned_through < next {
                // Already marked (cannot happen: the mark clears it atomically).
                self.persist_journal(None).await?;
            } else {
                info!(
                    from_seq = next,
                    through_seq = journal.planned_through,
                    loads = journal.loads().count(),
                    "re-sending the loads that were in flight when dbmazz last stopped, with their labels"
                );
                let through = journal.planned_through;
                let end = journal.window_end;
                let Some(journal) = self.replay(journal, &mut control).await? else {
                    self.stage(LoaderStage::Stopped);
                    return Ok(());
                };
                next = through + 1;
                window.last_read = through;
                match end {
                    Some((seq, end_lsn)) => self.mark(seq, end_lsn).await?,
                    None => window.journal = Some(journal),
                }
            }
        }
        loop {
            if *control.shutdown.borrow() {
                self.stage(LoaderStage::Stopped);
                return Ok(());
            }
            if *control.paused.borrow() && !*control.drain.borrow() {
                self.stage(LoaderStage::Paused);
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
                            if let ChangeOp::Truncate { relations, .. } = &change.op {
                                // Every truncated table needs a known, prepared target,
                                // also one whose first change this is.
                                for r in relations {
                                    let v = self.version_of(&mut window, *r)?;
                                    if self.prepare(*r, v, &mut control).await?.is_none() {
                                        self.stage(LoaderStage::Stopped);
                                        return Ok(());
                                    }
                                }
                            }
                            let Some(prepared) =
                                self.prepare(rel.id, rel_version, &mut control).await?
                            else {
                                self.stage(LoaderStage::Stopped);
                                return Ok(());
                            };
                            window.planner.add(
                                seq,
                                &rel,
                                rel_version,
                                &prepared.key_columns,
                                &change,
                            )?;
                            window.last_read = seq;
                        }
                        SpoolRecord::Commit(c) => {
                            window.last_read = seq;
                            window.last_commit = Some((seq, c.info.end_lsn));
                            let full = window.planner.rows() >= self.opts.flush_rows
                                || window.planner.bytes() >= self.opts.flush_bytes;
                            if full
                                && self.flush(&mut window, true, &mut control).await?
                                    == Flow::Stopped
                            {
                                self.stage(LoaderStage::Stopped);
                                return Ok(());
                            }
                        }
                    }
                    // A transaction far larger than a batch: load it in parts (bounded
                    // memory); it is confirmed at its commit only.
                    let huge = window.planner.rows()
                        >= self.opts.flush_rows.saturating_mul(PARTS_FACTOR)
                        || window.planner.bytes()
                            >= self.opts.flush_bytes.saturating_mul(PARTS_FACTOR);
                    if huge && self.flush(&mut window, false, &mut control).await? == Flow::Stopped
                    {
                        self.stage(LoaderStage::Stopped);
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
                if self.flush(&mut window, true, &mut control).await? == Flow::Stopped {
                    self.stage(LoaderStage::Stopped);
                    return Ok(());
                }
                continue;
            }
            // Everything durable is loaded, but empty transactions (no records) may have
            // moved the durable LSN past the last confirmed commit: confirm it too.
            if window.last_commit.is_none() && window.planner.is_empty() && window.journal.is_none()
            {
                self.confirm_empty_tail().await?;
            }
            if *control.drain.borrow() && window.last_commit.is_none() {
                self.stage(LoaderStage::Drained);
                return Ok(());
            }
            self.stage(LoaderStage::Idle);
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

    /// The schema version to use for a truncated table: the latest seen in the log so
    /// far, else the latest the spool holds (its Relation message preceded the TRUNCATE).
    fn version_of(&mut self, window: &mut Window, id: RelationId) -> Result<u32, LoaderError> {
        if let Some(v) = window.versions.get(&id) {
            return Ok(*v);
        }
        let v = self.latest_version(id)?;
        window.versions.insert(id, v);
        Ok(v)
    }

    /// The latest schema version of a relation the spool holds (a TRUNCATE's Relation
    /// message precedes it, so there is one).
    fn latest_version(&self, id: RelationId) -> Result<u32, LoaderError> {
        self.spool
            .relations()
            .into_iter()
            .filter(|(r, _, _)| *r == id)
            .map(|(_, v, _)| v)
            .max()
            .ok_or_else(|| {
                LoaderError::Internal(format!(
                    "TRUNCATE of relation {id} whose schema the spool does not hold"
                ))
            })
    }

    /// The prepared target of a relation version (prepared once per run). `None` when a
    /// shutdown came while the sink was still retrying.
    async fn prepare(
        &mut self,
        id: RelationId,
        version: u32,
        control: &mut LoaderControl,
    ) -> Result<Option<Arc<PreparedTable>>, LoaderError> {
        if let Some(p) = self.prepared.get(&(id, version)) {
            return Ok(Some(p.clone()));
        }
        let rel = self.relation(id, version)?;
        let note = RetryNote(self.status.clone());
        let sink = self.sink.clone();
        let prepared = tokio::select! {
            r = sink.prepare(&rel, version, &note) => r?,
            _ = wait_for_shutdown(&mut control.shutdown) => return Ok(None),
        };
        let prepared = Arc::new(prepared);
        self.prepared.insert((id, version), prepared.clone());
        Ok(Some(prepared))
    }

    /// Journals, then executes the planned steps; with `at_commit`, then marks the
    /// window's last commit loaded and confirms its end LSN.
    async fn flush(
        &mut self,
        window: &mut Window,
        at_commit: bool,
        control: &mut LoaderControl,
    ) -> Result<Flow, LoaderError> {
        let steps = window.planner.take();
        let end = if at_commit {
            window.last_commit.take()
        } else {
            None
        };
        if steps.is_empty() && window.journal.is_none() {
            if let Some((seq, end_lsn)) = end {
                self.mark(seq, end_lsn).await?;
            }
            window.started = None;
            return Ok(Flow::Go);
        }
        let spool_id = self.spool.id();
        let mut journal = window
            .journal
            .take()
            .unwrap_or_else(|| Journal::new(self.opts.soft_deletes));
        journal.planned_through = window.last_read;
        journal.window_end = end;
        let mut work = Vec::new();
        for (id, steps) in steps {
            let tj = journal.tables.entry(id).or_default();
            let mut rels = HashMap::new();
            let mut execs = Vec::new();
            for step in steps {
                let index = tj.steps.len();
                match step {
                    Step::Load {
                        rel_version,
                        columns,
                        rows,
                        first_seq,
                        last_seq,
                        ..
                    } => {
                        let rel = match rels.get(&rel_version) {
                            Some(r) => Arc::clone(r),
                            None => {
                                let r = self.relation(id, rel_version)?;
                                rels.insert(rel_version, r.clone());
                                r
                            }
                        };
                        let keys = self
                            .prepared
                            .get(&(id, rel_version))
                            .map(|p| p.key_columns.clone())
                            .unwrap_or_default();
                        tj.keys.insert(rel_version, keys);
                        let label = super::label::label(
                            &spool_id,
                            &self.sink.target_name(&rel),
                            first_seq,
                            last_seq,
                            0,
                            &columns,
                        );
                        tj.steps.push(JournalStep::Load {
                            rel_version,
                            columns: columns.clone(),
                            first_seq,
                            last_seq,
                            generation: 0,
                            label: label.clone(),
                        });
                        execs.push(Exec::Load {
                            rel_version,
                            columns,
                            rows,
                            label,
                            index,
                        });
                    }
                    Step::Truncate { seq } => {
                        if rels.is_empty() {
                            let v = self.version_of(window, id)?;
                            rels.insert(v, self.relation(id, v)?);
                        }
                        tj.steps.push(JournalStep::Truncate { seq, done: false });
                        execs.push(Exec::Truncate { seq, index });
                    }
                }
            }
            work.push(TableWork {
                id,
                rels,
                steps: execs,
                done: AtomicUsize::new(0),
            });
        }
        // Durable before the first body leaves (issue: labels must not change).
        self.persist_journal(Some(&journal)).await?;
        let cell = Mutex::new(journal);
        let flow = self.execute(work, &cell, control).await;
        let journal = cell.into_inner();
        if flow? == Flow::Stopped {
            return Ok(Flow::Stopped);
        }
        match end {
            Some((seq, end_lsn)) => {
                crate::failpoints::crash(crate::failpoints::LOADER_LOADED_NOT_MARKED);
                self.mark(seq, end_lsn).await?;
                window.started = None;
            }
            None => window.journal = Some(journal),
        }
        Ok(Flow::Go)
    }

    /// Re-sends the journal's loads (same labels, same rows, planned again from the
    /// spool) and runs its truncates that did not run yet, table by table, step by step
    /// (bounded memory). Returns the journal (truncates marked done) or `None` when a
    /// shutdown interrupted it.
    async fn replay(
        &mut self,
        journal: Journal,
        control: &mut LoaderControl,
    ) -> Result<Option<Journal>, LoaderError> {
        let tables: Vec<RelationId> = journal.tables.keys().copied().collect();
        let soft = journal.soft_deletes;
        let cell = Mutex::new(journal);
        for id in tables {
            let (steps, keys) = {
                let j = cell.lock().await;
                let tj = &j.tables[&id];
                (tj.steps.clone(), tj.keys.clone())
            };
            for (index, step) in steps.into_iter().enumerate() {
                let (exec, rels) = match step {
                    JournalStep::Load {
                        rel_version,
                        columns,
                        first_seq,
                        last_seq,
                        label,
                        ..
                    } => {
                        let rel = self.relation(id, rel_version)?;
                        let keys = keys.get(&rel_version).cloned().unwrap_or_default();
                        let rows = self
                            .regenerate(
                                &rel,
                                rel_version,
                                &keys,
                                &columns,
                                first_seq,
                                last_seq,
                                soft,
                            )
                            .await?;
                        if self.prepare(id, rel_version, control).await?.is_none() {
                            return Ok(None);
                        }
                        (
                            Exec::Load {
                                rel_version,
                                columns,
                                rows,
                                label,
                                index,
                            },
                            HashMap::from([(rel_version, rel)]),
                        )
                    }
                    JournalStep::Truncate { done: true, .. } => continue,
                    JournalStep::Truncate { seq, done: false } => {
                        let v = self.latest_version(id)?;
                        let rel = self.relation(id, v)?;
                        if self.prepare(id, v, control).await?.is_none() {
                            return Ok(None);
                        }
                        (Exec::Truncate { seq, index }, HashMap::from([(v, rel)]))
                    }
                };
                let work = vec![TableWork {
                    id,
                    rels,
                    steps: vec![exec],
                    done: AtomicUsize::new(0),
                }];
                if self.execute(work, &cell, control).await? == Flow::Stopped {
                    return Ok(None);
                }
            }
        }
        Ok(Some(cell.into_inner()))
    }

    /// The rows of one journaled load: the changes of `rel` at `version` in records
    /// `first..=last`, planned as before, keeping those of the load's column set.
    #[allow(clippy::too_many_arguments)]
    async fn regenerate(
        &mut self,
        rel: &Arc<Relation>,
        version: u32,
        keys: &[usize],
        columns: &ColumnSet,
        first: u64,
        last: u64,
        soft: bool,
    ) -> Result<Vec<PlannedRow>, LoaderError> {
        let mut planner = Planner::with_soft_deletes(soft);
        let mut next = first;
        while next <= last {
            let spool = self.spool.clone();
            let max = usize::try_from(last - next + 1)
                .unwrap_or(usize::MAX)
                .min(self.opts.read_chunk.max(1));
            let from = next;
            let records = tokio::task::spawn_blocking(move || spool.read_from(from, max))
                .await
                .map_err(|e| LoaderError::Internal(format!("spool read task: {e}")))??;
            if records.is_empty() {
                return Err(LoaderError::Internal(format!(
                    "journal: records {next}..={last} are not in the spool"
                )));
            }
            for (seq, rec) in records {
                if seq > last {
                    break;
                }
                next = seq + 1;
                if let SpoolRecord::Change {
                    rel_version,
                    change,
                } = rec
                {
                    if change.relation == rel.id
                        && rel_version == version
                        && !matches!(change.op, ChangeOp::Truncate { .. })
                    {
                        planner.add(seq, rel, version, keys, &change)?;
                    }
                }
            }
        }
        let mut rows = Vec::new();
        for step in planner.take().remove(&rel.id).unwrap_or_default() {
            if let Step::Load {
                rel_version,
                columns: c,
                rows: r,
                ..
            } = step
            {
                if rel_version == version && c == *columns {
                    rows.extend(r.into_iter().filter(|r| r.seq >= first && r.seq <= last));
                }
            }
        }
        Ok(rows)
    }

    /// Makes the journal durable (`None` clears it).
    async fn persist_journal(&self, journal: Option<&Journal>) -> Result<(), LoaderError> {
        persist(&self.spool, journal, &RetryNote(self.status.clone())).await
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

    /// Marks everything up to the commit record `seq` loaded (clearing the journal in the
    /// same ledger write) and confirms `end_lsn`.
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
        let note = RetryNote(self.status.clone());
        spool_write(&spool, &note, "writing the loaded mark", move |s| {
            s.mark_loaded_with_journal(seq, confirm, None)
        })
        .await?;
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

    /// Runs the steps, tables in parallel, each table's steps in order. A pause (outside
    /// a drain) or a shutdown interrupts it: loads in flight are abandoned (their labels
    /// are journaled, so a replay re-sends them); after a pause it continues from each
    /// table's first unfinished step. TRUNCATEs that ran are recorded in the journal.
    async fn execute(
        &mut self,
        work: Vec<TableWork>,
        journal: &Mutex<Journal>,
        control: &mut LoaderControl,
    ) -> Result<Flow, LoaderError> {
        if work.is_empty() {
            return Ok(Flow::Go);
        }
        self.stage(LoaderStage::Loading);
        let note = RetryNote(self.status.clone());
        let spool_id = self.spool.id();
        loop {
            let futs: Vec<_> = work
                .iter()
                .map(|w| {
                    run_table(
                        &*self.sink,
                        &self.spool,
                        &spool_id,
                        w,
                        journal,
                        &self.status,
                        &note,
                    )
                })
                .collect();
            // At most `max_concurrent_loads` tables at once: a window touching hundreds of
            // tables must not open as many Stream Load transactions at the same time.
            let all = futures_util::stream::iter(futs)
                .buffer_unordered(self.opts.max_concurrent_loads.max(1))
                .collect::<Vec<_>>();
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
                        info!("stopping: the load in flight is abandoned (journaled: re-sent with the same label)");
                        return Ok(Flow::Stopped);
                    }
                    self.stage(LoaderStage::Paused);
                    info!("paused in the middle of a window; resumes where each table stopped");
                    loop {
                        if *control.shutdown.borrow() {
                            return Ok(Flow::Stopped);
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
                    self.stage(LoaderStage::Loading);
                    continue;
                }
            };
            if let Some(e) = results.into_iter().find_map(Result::err) {
                self.status.send_modify(|s| {
                    s.stage = LoaderStage::Failed;
                    s.last_error = Some(e.to_string());
                });
                return Err(e);
            }
            return Ok(Flow::Go);
        }
    }
}

/// A window past this many times the batch bounds is loaded in parts before its
/// transaction commits. 2 rather than 4: the window of a huge transaction holds its
/// planned rows, the blocks they are sliced from and the bodies at once (heaptrack, one
/// 1M-row transaction: about 23 MB at 4); a transaction up to twice a batch still loads
/// in one piece.
const PARTS_FACTOR: usize = 2;

/// Resolves once `shutdown` is (or becomes) true, or its sender is gone.
async fn wait_for_shutdown(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

async fn persist(
    spool: &Spool,
    journal: Option<&Journal>,
    note: &RetryNote,
) -> Result<(), LoaderError> {
    let bytes = journal.map(Journal::encode).transpose()?;
    spool_write(spool, note, "writing the load journal", move |s| {
        s.set_loader_journal(bytes.as_deref())
    })
    .await
}

/// Runs a write to the spool's ledger (the load journal, the loaded mark), waiting out a
/// full disk for as long as it takes (invariant 13): the spool reopens its ledger at the
/// next call, and the retries show in Status. Other storage errors stop the loader.
async fn spool_write(
    spool: &Spool,
    note: &RetryNote,
    what: &'static str,
    f: impl Fn(&Spool) -> Result<(), SpoolError> + Send + Sync + Clone + 'static,
) -> Result<(), LoaderError> {
    let mut backoff =
        crate::core::retry::RetryPolicy::new(Duration::from_millis(200), Duration::from_secs(30))
            .backoff();
    loop {
        let (s, g) = (spool.clone(), f.clone());
        let r = tokio::task::spawn_blocking(move || g(&s))
            .await
            .map_err(|e| LoaderError::Internal(format!("spool task ({what}): {e}")))?;
        match r {
            Ok(()) => {
                if backoff.attempts() > 0 {
                    note.recovered();
                }
                return Ok(());
            }
            Err(e) if e.is_disk_full() => {
                let delay = backoff.next_delay().unwrap_or(Duration::from_secs(30));
                note.retrying(what, backoff.attempts(), delay, &e.to_string());
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Runs one table's steps in order from `w.done`, advancing it after each step and
/// counting into the loader status as it goes.
async fn run_table<S: LoadSink>(
    sink: &S,
    spool: &Spool,
    spool_id: &str,
    w: &TableWork,
    journal: &Mutex<Journal>,
    status: &watch::Sender<LoaderStatus>,
    note: &RetryNote,
) -> Result<(), LoaderError> {
    let count = |rel: &Relation, target: &str, f: &dyn Fn(&mut TableCounters)| {
        status.send_modify(|s| {
            let c = s.tables.entry(target.to_string()).or_default();
            c.source_table = rel.qualified_name();
            c.target_table = target.to_string();
            f(c);
        })
    };
    for (i, step) in w
        .steps
        .iter()
        .enumerate()
        .skip(w.done.load(Ordering::SeqCst))
    {
        match step {
            Exec::Load {
                rel_version,
                columns,
                rows,
                label,
                index,
            } => {
                let rel = w.rels.get(rel_version).ok_or_else(|| {
                    LoaderError::Internal(format!("no schema for version {rel_version}"))
                })?;
                let target = sink.target_name(rel);
                let result = sink
                    .load(LoadBatch {
                        relation: rel,
                        rel_version: *rel_version,
                        columns,
                        rows,
                        label: label.clone(),
                        note,
                    })
                    .await;
                let result = match result {
                    Ok(r) => r,
                    Err(e) if e.rejected_load().is_some_and(|r| r.label_committed) => {
                        // The label is spent: the next attempt (after the cause is fixed
                        // and dbmazz restarted) sends the same rows under a new one.
                        let mut j = journal.lock().await;
                        if let Some(JournalStep::Load {
                            generation,
                            label: l,
                            first_seq,
                            last_seq,
                            columns,
                            ..
                        }) = j
                            .tables
                            .get_mut(&w.id)
                            .and_then(|t| t.steps.get_mut(*index))
                        {
                            *generation += 1;
                            *l = super::label::label(
                                spool_id,
                                &target,
                                *first_seq,
                                *last_seq,
                                *generation,
                                columns,
                            );
                        }
                        persist(spool, Some(&j), note).await?;
                        return Err(e.into());
                    }
                    Err(e) => return Err(e.into()),
                };
                let (ups, dels) = rows.iter().fold((0u64, 0u64), |(u, d), r| match r.op {
                    RowOp::Upsert => (u + 1, d),
                    RowOp::Delete => (u, d + 1),
                });
                let last = LastLoad {
                    label: label.clone(),
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
            Exec::Truncate { seq, index } => {
                let rel = w
                    .rels
                    .values()
                    .next()
                    .ok_or_else(|| LoaderError::Internal("truncate without a schema".into()))?;
                let target = sink.target_name(rel);
                info!(table = %rel.qualified_name(), target = %target, seq, "applying TRUNCATE");
                sink.truncate(rel, note).await?;
                {
                    let mut j = journal.lock().await;
                    if let Some(JournalStep::Truncate { done, .. }) = j
                        .tables
                        .get_mut(&w.id)
                        .and_then(|t| t.steps.get_mut(*index))
                    {
                        *done = true;
                    }
                    persist(spool, Some(&j), note).await?;
                }
                count(rel, &target, &|c| c.truncates += 1);
            }
        }
        w.done.store(i + 1, Ordering::SeqCst);
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
