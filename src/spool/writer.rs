//! The writer side: `append` every reader event in WAL order, `flush` to make what was
//! appended durable (group commit), and the async writer task that does both by count,
//! bytes and time bounds and stops consuming its channel while the spool is full.
//! Keeps invariants 3 (the durable mark moves only after the records it covers were
//! flushed, and only onto a commit), 4 (transactions are contiguous runs ending with a
//! commit record; streamed ones enter the log at Stream Commit) and 10.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use super::error::{Result, SpoolError};
use super::meta::DurableMark;
use super::record::{frame, seq_key, CommitRecord, SpoolRecord, StreamEntry};
use super::segment::Segment;
use super::{lock, OpenTxn, SegSlot, Spool, WriterState};
use crate::core::{Change, CommitInfo, ReaderEvent};

impl Spool {
    /// Appends one reader event. Events must come in WAL order from one writer.
    ///
    /// On error nothing of this event is visible and the event may be appended again
    /// (the writer retries after `SpoolError::DiskFull`).
    pub fn append(&self, event: &ReaderEvent) -> Result<()> {
        let mut w = lock(&self.inner.writer);
        self.append_locked(&mut w, event)
    }

    /// Appends a batch of events (same as `append` for each, under one lock).
    pub fn append_all(&self, events: &[ReaderEvent]) -> Result<()> {
        let mut w = lock(&self.inner.writer);
        for e in events {
            self.append_locked(&mut w, e)?;
        }
        Ok(())
    }

    fn append_locked(&self, w: &mut WriterState, event: &ReaderEvent) -> Result<()> {
        match event {
            ReaderEvent::Relation(rel) => self.put_relation(rel),
            ReaderEvent::Begin { xid, .. } => {
                if w.txn.is_some() {
                    warn!(
                        xid,
                        "Begin while a transaction is open: discarding the open one"
                    );
                    self.discard_open_txn(w)?;
                }
                w.txn = Some(OpenTxn {
                    first_seq: w.next_seq,
                    changes: 0,
                    bytes: 0,
                    tables: BTreeMap::new(),
                });
                Ok(())
            }
            ReaderEvent::Change(change) => {
                let rel_version = self.rel_version(change.relation)?;
                if let Some(xid) = w.in_stream {
                    let entry = StreamEntry {
                        rel_version,
                        change: change.clone(),
                    };
                    let len = w.streams.append(xid, &entry)?;
                    let mut sh = lock(&self.inner.shared);
                    sh.stream_bytes += len;
                    sh.stream_txns = w.streams.txns.len();
                    return Ok(());
                }
                if w.txn.is_none() {
                    return Err(SpoolError::Protocol(format!(
                        "change of xid {} at {} outside a transaction",
                        change.xid, change.lsn
                    )));
                }
                self.write_change(w, rel_version, change)
            }
            ReaderEvent::Commit(info) => {
                if w.txn.is_none() {
                    return Err(SpoolError::Protocol(format!(
                        "commit of xid {} at {} without Begin",
                        info.xid, info.commit_lsn
                    )));
                }
                self.write_commit(w, info, false)
            }
            ReaderEvent::StreamStart { xid, first_segment } => {
                if w.txn.is_some() {
                    return Err(SpoolError::Protocol(format!(
                        "Stream Start of xid {xid} inside a transaction"
                    )));
                }
                w.streams.start(*xid, *first_segment)?;
                w.in_stream = Some(*xid);
                lock(&self.inner.shared).stream_txns = w.streams.txns.len();
                Ok(())
            }
            ReaderEvent::StreamStop => {
                w.in_stream = None;
                Ok(())
            }
            ReaderEvent::StreamCommit(info) => self.stream_commit(w, info),
            ReaderEvent::StreamAbort { xid, subxid } => {
                if xid == subxid {
                    w.streams.discard(*xid)?;
                } else {
                    w.streams.abort_sub(*xid, *subxid);
                }
                let mut sh = lock(&self.inner.shared);
                sh.stream_bytes = w.streams.bytes();
                sh.stream_txns = w.streams.txns.len();
                Ok(())
            }
            ReaderEvent::Restart { from } => {
                debug!(%from, "replication restarted: discarding unfinished transactions");
                if w.txn.is_some() {
                    self.discard_open_txn(w)?;
                }
                w.streams.clear()?;
                w.in_stream = None;
                let mut sh = lock(&self.inner.shared);
                sh.stream_bytes = 0;
                sh.stream_txns = 0;
                Ok(())
            }
            ReaderEvent::Message {
                lsn,
                prefix,
                content,
                ..
            } => {
                debug!(%lsn, prefix, bytes = content.len(), "logical decoding message ignored");
                Ok(())
            }
        }
    }

    /// Stores `rel` as a new version when it differs from the latest one for its id.
    fn put_relation(&self, rel: &crate::core::Relation) -> Result<()> {
        let latest = {
            let sh = lock(&self.inner.shared);
            sh.latest
                .get(&rel.id)
                .map(|v| (*v, sh.relations.get(&(rel.id, *v)) == Some(rel)))
        };
        let version = match latest {
            Some((_, true)) => return Ok(()),
            Some((v, false)) => v + 1,
            None => 1,
        };
        self.inner.ledger.put_relation(version, rel)?;
        let mut sh = lock(&self.inner.shared);
        sh.relations.insert((rel.id, version), rel.clone());
        sh.latest.insert(rel.id, version);
        Ok(())
    }

    fn rel_version(&self, id: crate::core::RelationId) -> Result<u32> {
        lock(&self.inner.shared)
            .latest
            .get(&id)
            .copied()
            .ok_or_else(|| {
                SpoolError::Protocol(format!(
                    "change for relation {id} before its Relation message"
                ))
            })
    }

    /// The segment to write `seq` into, rolling to a new one when the current is full.
    fn segment_for_write(&self, w: &mut WriterState, seq: u64) -> Result<Arc<Segment>> {
        let roll = match &w.current {
            None => true,
            Some(_) => w.current_bytes >= self.inner.opts.segment_bytes,
        };
        if roll {
            let seg = Arc::new(Segment::open(&self.inner.dir, seq, self.seg_cache())?);
            if let Some(old) = w.current.take() {
                w.pending.dirty.push(old);
            }
            {
                let mut sh = lock(&self.inner.shared);
                sh.segments.insert(
                    seq,
                    SegSlot {
                        path: seg.path.clone(),
                        last_seq: 0,
                        open: Some(seg.clone()),
                        last_use: 0,
                    },
                );
                sh.disk_bytes = None;
            }
            w.current = Some(seg);
            w.current_bytes = 0;
            self.reclaim()?;
        }
        w.current.clone().ok_or_else(|| SpoolError::Storage {
            context: "choosing a log segment".into(),
            message: "no current segment".into(),
        })
    }

    fn write_record(&self, w: &mut WriterState, value: &[u8], commit: bool) -> Result<u64> {
        let seq = w.next_seq;
        let seg = self.segment_for_write(w, seq)?;
        seg.log
            .insert(seq_key(seq), value)
            .map_err(|e| SpoolError::sled(format!("appending record {seq}"), e))?;
        if commit {
            seg.txns
                .insert(seq_key(seq), value)
                .map_err(|e| SpoolError::sled(format!("indexing commit {seq}"), e))?;
        }
        w.next_seq += 1;
        w.current_bytes += value.len() as u64;
        let mut sh = lock(&self.inner.shared);
        if let Some(slot) = sh.segments.get_mut(&seg.first_seq) {
            slot.last_seq = seq;
        }
        sh.unflushed_bytes += value.len() as u64;
        Ok(seq)
    }

    fn write_change(&self, w: &mut WriterState, rel_version: u32, change: &Change) -> Result<()> {
        let value = frame(&SpoolRecord::Change {
            rel_version,
            change: change.clone(),
        })?;
        let seq = self.write_record(w, &value, false)?;
        {
            let mut sh = lock(&self.inner.shared);
            let used = sh
                .rel_live
                .entry((change.relation, rel_version))
                .or_default();
            *used = (*used).max(seq);
        }
        if let Some(t) = w.txn.as_mut() {
            t.changes += 1;
            t.bytes += value.len() as u64;
            *t.tables.entry(change.relation).or_default() += 1;
        }
        Ok(())
    }

    fn write_commit(&self, w: &mut WriterState, info: &CommitInfo, streamed: bool) -> Result<()> {
        let Some(t) = w.txn.as_ref() else {
            return Err(SpoolError::Protocol(
                "commit without an open transaction".into(),
            ));
        };
        if t.changes == 0 {
            // No log record, but the durable LSN still advances at the next flush.
            let seq = w.pending.mark.map(|m| m.seq).unwrap_or(w.last_commit_seq);
            w.pending.mark = Some(DurableMark {
                seq,
                commit_lsn: info.commit_lsn,
                end_lsn: info.end_lsn,
            });
            w.txn = None;
            return Ok(());
        }
        let rec = CommitRecord {
            info: *info,
            first_seq: t.first_seq,
            changes: t.changes,
            bytes: t.bytes,
            tables: t.tables.iter().map(|(k, v)| (*k, *v)).collect(),
            streamed,
        };
        let value = frame(&SpoolRecord::Commit(rec.clone()))?;
        let seq = self.write_record(w, &value, true)?;
        w.pending.counters.add_txn(
            seq,
            info,
            rec.changes,
            rec.bytes + value.len() as u64,
            &rec.tables,
        );
        w.pending.mark = Some(DurableMark {
            seq,
            commit_lsn: info.commit_lsn,
            end_lsn: info.end_lsn,
        });
        w.last_commit_seq = seq;
        w.txn = None;
        Ok(())
    }

    fn stream_commit(&self, w: &mut WriterState, info: &CommitInfo) -> Result<()> {
        if w.txn.is_some() {
            return Err(SpoolError::Protocol(format!(
                "Stream Commit of xid {} inside a transaction",
                info.xid
            )));
        }
        w.in_stream = None;
        let start_seq = w.next_seq;
        w.txn = Some(OpenTxn {
            first_seq: start_seq,
            changes: 0,
            bytes: 0,
            tables: BTreeMap::new(),
        });
        // Copy the stream into the log; on failure undo so the event can be retried.
        let result = (|| -> Result<()> {
            let streams = std::mem::replace(&mut w.streams, super::stream::StreamStore::empty());
            let r = streams.for_each(info.xid, |entry| {
                self.write_change(w, entry.rel_version, &entry.change)
            });
            w.streams = streams;
            r?;
            self.write_commit(w, info, true)
        })();
        if let Err(e) = result {
            w.txn = Some(OpenTxn {
                first_seq: start_seq,
                changes: 0,
                bytes: 0,
                tables: BTreeMap::new(),
            });
            self.discard_open_txn(w)?;
            return Err(e);
        }
        if let Err(e) = w.streams.discard(info.xid) {
            warn!(xid = info.xid, error = %e, "could not drop a committed streamed transaction");
        }
        let mut sh = lock(&self.inner.shared);
        sh.stream_bytes = w.streams.bytes();
        sh.stream_txns = w.streams.txns.len();
        Ok(())
    }

    /// Removes the records of the open (uncommitted) transaction.
    fn discard_open_txn(&self, w: &mut WriterState) -> Result<()> {
        let Some(t) = w.txn.take() else { return Ok(()) };
        let keep = w.last_commit_seq;
        if w.next_seq > t.first_seq {
            let slots: Vec<(u64, Option<Arc<Segment>>)> = {
                let sh = lock(&self.inner.shared);
                sh.segments
                    .iter()
                    .filter(|(_, s)| s.last_seq > keep)
                    .map(|(f, s)| (*f, s.open.clone()))
                    .collect()
            };
            for (first, open) in slots {
                if first > keep {
                    // The whole segment holds only discarded records: drop it.
                    if w.current.as_ref().is_some_and(|c| c.first_seq == first) {
                        w.current = None;
                        w.current_bytes = 0;
                    }
                    w.pending.dirty.retain(|d| d.first_seq != first);
                    drop(open);
                    let path = lock(&self.inner.shared)
                        .segments
                        .remove(&first)
                        .map(|s| s.path);
                    if let Some(p) = path {
                        super::segment::remove(&self.inner.dir, &p)?;
                    }
                    continue;
                }
                let seg = match open {
                    Some(s) => s,
                    None => self.segment(first)?,
                };
                seg.truncate_after(keep)?;
                let mut sh = lock(&self.inner.shared);
                if let Some(slot) = sh.segments.get_mut(&first) {
                    slot.last_seq = keep;
                }
            }
            let mut sh = lock(&self.inner.shared);
            sh.unflushed_bytes = sh.unflushed_bytes.saturating_sub(t.bytes);
        }
        w.next_seq = keep + 1;
        Ok(())
    }

    /// Makes everything appended so far durable and returns the new durable mark.
    /// Group commit: any number of transactions cost one flush.
    pub fn flush(&self) -> Result<DurableMark> {
        let mut w = lock(&self.inner.writer);
        self.flush_locked(&mut w)
    }

    fn flush_locked(&self, w: &mut WriterState) -> Result<DurableMark> {
        let Some(mark) = w.pending.mark else {
            return Ok(self.durable_mark());
        };
        // 1. the records: every segment written since the last flush.
        for seg in &w.pending.dirty {
            seg.flush()?;
        }
        if let Some(cur) = &w.current {
            cur.flush()?;
        }
        crate::failpoints::crash(crate::failpoints::SPOOL_FLUSH_BEFORE_LEDGER);
        // 2. the mark, counters and relation versions: one atomic insert, then a flush.
        let _m = lock(&self.inner.meta_lock);
        let new_state = {
            let sh = lock(&self.inner.shared);
            let mut st = sh.state.clone();
            st.durable = mark;
            let c = &w.pending.counters;
            st.counters.records += c.records;
            st.counters.txns += c.txns;
            st.counters.bytes += c.bytes;
            for (t, n) in &c.per_table {
                *st.counters.per_table.entry(*t).or_default() += n;
            }
            if st.counters.oldest.is_none() {
                st.counters.oldest = c.oldest;
            }
            st.rel_last_used = sh.rel_live.clone();
            st
        };
        self.inner.ledger.store_state(&new_state)?;
        let open_bytes = w.txn.as_ref().map(|t| t.bytes).unwrap_or(0);
        {
            let mut sh = lock(&self.inner.shared);
            sh.state = new_state;
            sh.unflushed_bytes = open_bytes;
        }
        w.pending = Default::default();
        Ok(mark)
    }

    /// Removes segments whose records are all loaded (never the writer's current one).
    pub(crate) fn reclaim(&self) -> Result<()> {
        let doomed: Vec<(u64, std::path::PathBuf)> = {
            let mut sh = lock(&self.inner.shared);
            let loaded = sh.state.loaded.seq;
            let last_first = sh.segments.keys().next_back().copied();
            let firsts: Vec<u64> = sh.segments.keys().copied().collect();
            let mut doomed = Vec::new();
            for (i, f) in firsts.iter().enumerate() {
                if Some(*f) == last_first {
                    break;
                }
                let end = firsts.get(i + 1).map(|n| n - 1).unwrap_or(u64::MAX);
                if end <= loaded {
                    if let Some(slot) = sh.segments.remove(f) {
                        doomed.push((*f, slot.path));
                    }
                }
            }
            if !doomed.is_empty() {
                sh.disk_bytes = None;
            }
            doomed
        };
        for (first, path) in doomed {
            debug!(first_seq = first, "dropping a fully loaded log segment");
            super::segment::remove(&self.inner.dir, &path)?;
        }
        Ok(())
    }

    /// When the writer is idle and everything it wrote is loaded, retire its segment so
    /// its disk space comes back now rather than at the next roll.
    pub(crate) fn retire_idle_segment(&self) -> Result<()> {
        let Ok(mut w) = self.inner.writer.try_lock() else {
            return Ok(());
        };
        let loaded = self.loaded_mark().seq;
        if w.txn.is_some() || w.pending.mark.is_some() || w.next_seq - 1 > loaded {
            return Ok(());
        }
        if !w.streams.txns.is_empty() {
            return Ok(());
        }
        let Some(cur) = w.current.take() else {
            // Possibly a fully loaded last segment left from a previous run.
            return self.retire_last_slot(loaded);
        };
        w.pending.dirty.clear();
        let first = cur.first_seq;
        drop(cur);
        let path = {
            let mut sh = lock(&self.inner.shared);
            sh.disk_bytes = None;
            sh.segments.remove(&first).map(|s| s.path)
        };
        if let Some(p) = path {
            super::segment::remove(&self.inner.dir, &p)?;
        }
        self.reclaim()
    }

    fn retire_last_slot(&self, loaded: u64) -> Result<()> {
        let path = {
            let mut sh = lock(&self.inner.shared);
            let Some((&first, slot)) = sh.segments.iter().next_back() else {
                return Ok(());
            };
            if slot.last_seq > loaded {
                return Ok(());
            }
            if slot.open.as_ref().is_some_and(|a| Arc::strong_count(a) > 1) {
                return Ok(());
            }
            sh.disk_bytes = None;
            sh.segments.remove(&first).map(|s| s.path)
        };
        if let Some(p) = path {
            super::segment::remove(&self.inner.dir, &p)?;
        }
        self.reclaim()
    }
}

/// Group-commit bounds of the writer task: flush after this many transactions, this many
/// appended bytes, or this long after the first unflushed event, whichever comes first.
#[derive(Debug, Clone, Copy)]
pub struct GroupCommit {
    pub max_txns: usize,
    pub max_bytes: u64,
    pub max_delay: Duration,
}

impl Default for GroupCommit {
    fn default() -> Self {
        GroupCommit {
            max_txns: 1000,
            max_bytes: 16 << 20,
            max_delay: Duration::from_millis(50),
        }
    }
}

/// Starts the writer task: appends every batch from `rx`, flushes by the group-commit
/// bounds, publishes each new durable mark on the returned watch channel. The task ends
/// when `rx` closes (after a last flush) or on an error other than a full disk.
pub fn spawn(
    spool: Spool,
    rx: mpsc::Receiver<Vec<ReaderEvent>>,
    gc: GroupCommit,
) -> (
    tokio::task::JoinHandle<Result<()>>,
    watch::Receiver<DurableMark>,
) {
    let (tx, mark_rx) = watch::channel(spool.durable_mark());
    let handle = tokio::spawn(run(spool, rx, gc, tx));
    (handle, mark_rx)
}

/// How long the writer waits before retrying after the spool or the disk was full.
const FULL_RETRY: Duration = Duration::from_millis(200);

/// The writer task body (see [`spawn`]). sled calls are blocking: each batch and each
/// flush runs on the blocking pool.
pub async fn run(
    spool: Spool,
    mut rx: mpsc::Receiver<Vec<ReaderEvent>>,
    gc: GroupCommit,
    marks: watch::Sender<DurableMark>,
) -> Result<()> {
    let mut txns_since_flush = 0usize;
    let mut bytes_since_flush = 0u64;
    let mut first_unflushed: Option<Instant> = None;
    let mut full_logged = false;
    loop {
        // Capacity: stop consuming while full and the loader can make room.
        if spool.should_pause() {
            if !full_logged {
                warn!(stats = ?spool.stats_brief(), "spool full: pausing the reader until the loader frees space");
                full_logged = true;
            }
            if first_unflushed.is_some() {
                flush_blocking(&spool, &marks).await?;
                first_unflushed = None;
                txns_since_flush = 0;
                bytes_since_flush = 0;
            }
            if rx.is_closed() && rx.is_empty() {
                // Shutting down while full: nothing left to append.
                return Ok(());
            }
            tokio::time::sleep(FULL_RETRY).await;
            continue;
        }
        full_logged = false;
        let deadline = first_unflushed.map(|t| t + gc.max_delay);
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d.into(), rx.recv()).await {
                Ok(v) => v,
                Err(_) => {
                    flush_blocking(&spool, &marks).await?;
                    first_unflushed = None;
                    txns_since_flush = 0;
                    bytes_since_flush = 0;
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let Some(batch) = next else {
            flush_blocking(&spool, &marks).await?;
            return Ok(());
        };
        txns_since_flush += batch
            .iter()
            .filter(|e| matches!(e, ReaderEvent::Commit(_) | ReaderEvent::StreamCommit(_)))
            .count();
        bytes_since_flush += batch.iter().map(approx_size).sum::<u64>();
        append_blocking(&spool, batch).await?;
        first_unflushed.get_or_insert_with(Instant::now);
        if txns_since_flush >= gc.max_txns || bytes_since_flush >= gc.max_bytes {
            flush_blocking(&spool, &marks).await?;
            first_unflushed = None;
            txns_since_flush = 0;
            bytes_since_flush = 0;
        }
    }
}

fn approx_size(e: &ReaderEvent) -> u64 {
    match e {
        ReaderEvent::Change(c) => {
            let tuple = |t: &crate::core::Tuple| -> u64 {
                t.iter()
                    .map(|v| match v {
                        crate::core::Value::Text(b) | crate::core::Value::Binary(b) => {
                            b.len() as u64 + 8
                        }
                        _ => 4,
                    })
                    .sum()
            };
            64 + match &c.op {
                crate::core::ChangeOp::Insert { new } => tuple(new),
                crate::core::ChangeOp::Update { old, new } => {
                    tuple(new) + old.as_ref().map(|(_, o)| tuple(o)).unwrap_or(0)
                }
                crate::core::ChangeOp::Delete { old } => tuple(&old.1),
                crate::core::ChangeOp::Truncate { relations, .. } => relations.len() as u64 * 4,
            }
        }
        _ => 64,
    }
}

/// Appends a batch on the blocking pool, retrying the rest of it after a full disk.
async fn append_blocking(spool: &Spool, batch: Vec<ReaderEvent>) -> Result<()> {
    let mut done = 0usize;
    let batch = Arc::new(batch);
    loop {
        let s = spool.clone();
        let b = batch.clone();
        let r = tokio::task::spawn_blocking(move || {
            let mut n = done;
            while n < b.len() {
                if let Err(e) = s.append(&b[n]) {
                    return Err((n, e));
                }
                n += 1;
            }
            Ok::<usize, (usize, SpoolError)>(n)
        })
        .await;
        let r = match r {
            Ok(r) => r,
            Err(join) => {
                return Err(SpoolError::Storage {
                    context: "appending on the blocking pool".into(),
                    message: join.to_string(),
                })
            }
        };
        match r {
            Ok(_) => return Ok(()),
            Err((n, e)) if e.is_disk_full() => {
                warn!(error = %e, "disk full while appending to the spool: retrying");
                done = n;
                tokio::time::sleep(FULL_RETRY).await;
            }
            Err((_, e)) => return Err(e),
        }
    }
}

async fn flush_blocking(spool: &Spool, marks: &watch::Sender<DurableMark>) -> Result<()> {
    loop {
        let s = spool.clone();
        let r = tokio::task::spawn_blocking(move || s.flush()).await;
        match r {
            Ok(Ok(mark)) => {
                marks.send_if_modified(|m| {
                    let changed = *m != mark;
                    *m = mark;
                    changed
                });
                return Ok(());
            }
            Ok(Err(e)) if e.is_disk_full() => {
                warn!(error = %e, "disk full while flushing the spool: retrying");
                tokio::time::sleep(FULL_RETRY).await;
            }
            Ok(Err(e)) => return Err(e),
            Err(join) => {
                return Err(SpoolError::Storage {
                    context: "flushing on the blocking pool".into(),
                    message: join.to_string(),
                })
            }
        }
    }
}
