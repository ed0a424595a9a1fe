//! The writer side: `append` every reader event in WAL order, `flush` to make what was
//! appended durable (group commit; also the writer's checkpoint), `recover_writer` to
//! roll back to the checkpoint after a storage error, and the async writer task that does
//! all three by count, bytes and time bounds, stops consuming its channel while the spool
//! or the disk is full, and appends again what the checkpoint did not cover.
//! Keeps invariants 3 (the durable mark moves only after the records it covers were
//! synced, and only onto a commit), 4 (transactions are contiguous runs ending with a
//! commit record; streamed ones enter the log at Stream Commit), 10 and 13 (a full disk
//! is waited out, in-process).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::error::{Result, SpoolError};
use super::meta::DurableMark;
use super::record::{encode_change, encode_commit, ChangeHead, CommitRecord};
use super::segment::Segment;
use super::storage::WriteBatch;
use super::{lock, Checkpoint, OpenTxn, SegSlot, Spool, WriterState};
use crate::core::retry::RetryPolicy;
use crate::core::{Change, CommitInfo, ReaderEvent};

impl Spool {
    /// Appends one reader event. Events must come in WAL order from one writer.
    ///
    /// On a `Protocol` error nothing of this event is visible. After a storage error
    /// (`DiskFull`), the storage handles may keep failing: call
    /// [`Spool::recover_writer`], then append again every event since the last flush.
    pub fn append(&self, event: &ReaderEvent) -> Result<()> {
        let mut w = lock(&self.inner.writer);
        self.append_locked(&mut w, event)
            .inspect_err(|e| self.note_error(e))
    }

    /// Appends a batch of events (same as `append` for each, under one lock).
    pub fn append_all(&self, events: &[ReaderEvent]) -> Result<()> {
        let mut w = lock(&self.inner.writer);
        for e in events {
            self.append_locked(&mut w, e)
                .inspect_err(|e| self.note_error(e))?;
        }
        Ok(())
    }

    /// A full disk shows in `stats().disk_full` until a flush succeeds again.
    fn note_error(&self, e: &SpoolError) {
        if e.is_disk_full() {
            lock(&self.inner.shared).disk_full = true;
        }
    }

    fn append_locked(&self, w: &mut WriterState, event: &ReaderEvent) -> Result<()> {
        w.touched = true;
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
                    let len = w.streams.append(xid, rel_version, change)?;
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
                    w.streams.discard(*xid);
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
                w.streams.clear();
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
        let _m = lock(&self.inner.meta_lock);
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
        self.heal_ledger_locked()?;
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
            let seg = Arc::new(Segment::open(
                self.inner.store.as_ref(),
                &self.inner.dir,
                seq,
                self.seg_cache(),
            )?);
            if let Some(old) = w.current.take() {
                // Finished: synced now rather than at the next checkpoint, so it can be
                // closed at once (sled keeps an open database's values in memory, and a
                // Stream Commit copies a whole transaction in one append). Syncing early
                // publishes nothing: only the ledger's mark makes records durable.
                old.sync()?;
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
            super::close_idle_segments(&mut lock(&self.inner.shared));
            self.reclaim()?;
        }
        w.current.clone().ok_or_else(|| SpoolError::Storage {
            context: "choosing a log segment".into(),
            message: "no current segment".into(),
        })
    }

    /// Appends one record (written by `enc`) to the writer's block; the block goes to
    /// storage when full (not flushed) or at the next flush. Returns (seq, stored size).
    fn write_record(
        &self,
        w: &mut WriterState,
        enc: impl FnOnce(&mut Vec<u8>) -> Result<()>,
        commit: Option<CommitRecord>,
    ) -> Result<(u64, u64)> {
        let seq = w.next_seq;
        if w.block.is_empty() {
            self.segment_for_write(w, seq)?;
            w.block.reset(seq);
        }
        let len = w.block.push_with(enc)?;
        if let Some(c) = commit {
            w.block_commits.push((seq, c));
        }
        w.next_seq += 1;
        w.current_bytes += len;
        {
            let mut sh = lock(&self.inner.shared);
            if let Some(cur) = &w.current {
                if let Some(slot) = sh.segments.get_mut(&cur.first_seq) {
                    slot.last_seq = seq;
                }
            }
            sh.unflushed_bytes += len;
        }
        // A full block goes to storage; so does the last block of a full segment (the
        // next record then starts a new segment).
        if w.block.is_full() || w.current_bytes >= self.inner.opts.segment_bytes {
            self.close_block(w)?;
        }
        Ok((seq, len))
    }

    /// Writes the writer's block (if it holds records) to its segment (not flushed).
    pub(super) fn close_block(&self, w: &mut WriterState) -> Result<()> {
        if w.block.is_empty() {
            return Ok(());
        }
        let seg = w.current.clone().ok_or_else(|| SpoolError::Storage {
            context: "writing a block of records".into(),
            message: "no current segment".into(),
        })?;
        seg.put_block(&mut w.block, &w.block_commits)?;
        w.block_commits.clear();
        w.block.reset(w.next_seq);
        Ok(())
    }

    fn write_change(&self, w: &mut WriterState, rel_version: u32, change: &Change) -> Result<()> {
        let (seq, len) = self.write_record(
            w,
            |out| {
                encode_change(rel_version, change, out);
                Ok(())
            },
            None,
        )?;
        self.count_change(w, seq, len, change.relation, rel_version);
        Ok(())
    }

    fn count_change(
        &self,
        w: &mut WriterState,
        seq: u64,
        len: u64,
        relation: crate::core::RelationId,
        rel_version: u32,
    ) {
        {
            let mut sh = lock(&self.inner.shared);
            let used = sh.rel_live.entry((relation, rel_version)).or_default();
            *used = (*used).max(seq);
        }
        if let Some(t) = w.txn.as_mut() {
            t.changes += 1;
            t.bytes += len;
            *t.tables.entry(relation).or_default() += 1;
        }
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
        let (seq, len) = self.write_record(w, |out| encode_commit(&rec, out), Some(rec.clone()))?;
        w.pending
            .counters
            .add_txn(seq, info, rec.changes, rec.bytes + len, &rec.tables);
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
        // Move the stream's records into the log as they are stored (no decoding); on
        // failure undo so the event can be retried. A huge transaction does not pile up
        // in memory: each segment it fills is synced and closed as the writer rolls past.
        let result = (|| -> Result<()> {
            let mut streams =
                std::mem::replace(&mut w.streams, super::stream::StreamStore::empty());
            let r = streams.for_each(info.xid, |rec: &[u8], head: ChangeHead| {
                let (seq, len) = self.write_record(
                    w,
                    |out| {
                        out.extend_from_slice(rec);
                        Ok(())
                    },
                    None,
                )?;
                self.count_change(w, seq, len, head.relation, head.rel_version);
                Ok(())
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
        w.streams.discard(info.xid);
        let mut sh = lock(&self.inner.shared);
        sh.stream_bytes = w.streams.bytes();
        sh.stream_txns = w.streams.txns.len();
        Ok(())
    }

    /// Removes the records of the open (uncommitted) transaction.
    fn discard_open_txn(&self, w: &mut WriterState) -> Result<()> {
        let Some(t) = w.txn.take() else { return Ok(()) };
        let keep = w.last_commit_seq;
        // The records still in the writer's block are cut there.
        if !w.block.is_empty() {
            if w.block.first_seq > keep {
                w.block.reset(keep + 1);
                w.block_commits.clear();
            } else {
                w.block.truncate(keep + 1 - w.block.first_seq);
                w.block_commits.retain(|(s, _)| *s <= keep);
            }
        }
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
                        super::segment::remove(self.inner.store.as_ref(), &p)?;
                    }
                    continue;
                }
                let seg = match open {
                    Some(s) => s,
                    None => self.segment(first)?,
                };
                seg.truncate_after(keep)?;
                // The cut must reach the OS with the next checkpoint.
                let is_current = w.current.as_ref().is_some_and(|c| c.first_seq == first);
                if !is_current && !w.pending.dirty.iter().any(|d| d.first_seq == first) {
                    w.pending.dirty.push(seg.clone());
                }
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
    ///
    /// Also a checkpoint: everything appended so far (an open transaction's records and
    /// streamed transactions included) is handed to the OS, so after a storage error
    /// [`Spool::recover_writer`] rolls back to here and only the events appended after
    /// this call need appending again.
    pub fn flush(&self) -> Result<DurableMark> {
        let mut w = lock(&self.inner.writer);
        self.flush_locked(&mut w)
            .inspect_err(|e| self.note_error(e))
    }

    fn flush_locked(&self, w: &mut WriterState) -> Result<DurableMark> {
        if !w.touched {
            return Ok(self.durable_mark());
        }
        let mark = w.pending.mark;
        // 1. streamed transactions: to the OS (they are never durable).
        w.streams.flush()?;
        // 2. the records: the writer's block is written; segments finished since the
        //    last sync are synced (and let go); the writer's segment is synced when a new
        //    mark will cover it, else flushed.
        self.close_block(w)?;
        for seg in &w.pending.dirty {
            seg.sync()?;
        }
        if !w.pending.dirty.is_empty() {
            w.pending.dirty.clear();
            // The finished segments are durable: close them unless a reader holds one.
            super::close_idle_segments(&mut lock(&self.inner.shared));
        }
        if let Some(cur) = &w.current {
            if mark.is_some() {
                cur.sync()?;
            } else {
                cur.flush()?;
            }
        }
        // 3. the mark, counters and relation versions: one atomic batch, then a sync.
        if let Some(mark) = mark {
            crate::failpoints::crash(crate::failpoints::SPOOL_FLUSH_BEFORE_LEDGER);
            let _m = lock(&self.inner.meta_lock);
            self.heal_ledger_locked()?;
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
            self.inner.ledger.commit(&new_state, WriteBatch::new())?;
            crate::failpoints::crash(crate::failpoints::SPOOL_FLUSH_AFTER_LEDGER);
            let open_bytes = w.txn.as_ref().map(|t| t.bytes).unwrap_or(0);
            let mut sh = lock(&self.inner.shared);
            sh.state = new_state;
            sh.unflushed_bytes = open_bytes;
        }
        // 4. the checkpoint.
        w.pending = Default::default();
        w.checkpoint = Checkpoint {
            next_seq: w.next_seq,
            last_commit_seq: w.last_commit_seq,
            current: w.current.as_ref().map(|c| c.first_seq),
            current_bytes: w.current_bytes,
            txn: w.txn.clone(),
            in_stream: w.in_stream,
            streams: w.streams.snapshot(),
            unflushed_bytes: lock(&self.inner.shared).unflushed_bytes,
        };
        w.touched = false;
        lock(&self.inner.shared).disk_full = false;
        // 5. what was dropped before the checkpoint can go now.
        w.streams.collect_garbage();
        Ok(self.durable_mark())
    }

    /// After an `append` or `flush` error (a full disk: the storage engine's handles may
    /// keep failing until reopened), rolls the writer back to its last checkpoint (the
    /// end of the last successful [`Spool::flush`], or the open): every database it
    /// wrote is reopened and cut back to what it held then. The caller must then append
    /// again every event it appended since that flush, in the same order. Nothing
    /// durable is touched. Fails (and may be called again) while the disk is still full.
    pub fn recover_writer(&self) -> Result<()> {
        let mut w = lock(&self.inner.writer);
        let ck = w.checkpoint.clone();
        lock(&self.inner.shared).disk_full = true;
        // Let go of every handle the writer used, then reopen from storage.
        w.current = None;
        w.pending = Default::default();
        w.block.reset(ck.next_seq);
        w.block_commits.clear();
        {
            let mut sh = lock(&self.inner.shared);
            for slot in sh.segments.values_mut() {
                slot.open = None;
            }
        }
        {
            let _m = lock(&self.inner.meta_lock);
            self.heal_ledger_locked()?;
        }
        let loaded = self.loaded_mark().seq;
        let segments = super::rebuild_segments(
            self.inner.store.as_ref(),
            &self.inner.dir,
            self.seg_cache(),
            ck.next_seq - 1,
            loaded,
        )?;
        let current = ck.current.filter(|f| segments.contains_key(f));
        {
            let mut sh = lock(&self.inner.shared);
            sh.segments = segments;
            sh.disk_bytes = None;
        }
        w.current = match current {
            Some(first) => Some(self.segment(first)?),
            None => None,
        };
        w.current_bytes = if current.is_some() {
            ck.current_bytes
        } else {
            0
        };
        w.streams.restore(&ck.streams)?;
        w.next_seq = ck.next_seq;
        w.last_commit_seq = ck.last_commit_seq;
        w.txn = ck.txn.clone();
        w.in_stream = ck.in_stream;
        w.touched = false;
        let mut sh = lock(&self.inner.shared);
        sh.unflushed_bytes = ck.unflushed_bytes;
        sh.stream_bytes = w.streams.bytes();
        sh.stream_txns = w.streams.txns.len();
        info!(
            resume_seq = ck.next_seq,
            "spool writer reopened its storage after an error"
        );
        Ok(())
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
                // A handle held elsewhere (the writer's unsynced list, a reader): later.
                let busy = sh
                    .segments
                    .get(f)
                    .and_then(|s| s.open.as_ref())
                    .is_some_and(|a| Arc::strong_count(a) > 1);
                if end <= loaded && !busy {
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
            super::segment::remove(self.inner.store.as_ref(), &path)?;
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
            super::segment::remove(self.inner.store.as_ref(), &p)?;
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
            super::segment::remove(self.inner.store.as_ref(), &p)?;
        }
        self.reclaim()
    }
}

/// Group-commit bounds of the writer task: flush after this many transactions, this many
/// appended bytes, or this long after the first unflushed event, whichever comes first.
/// `max_bytes` also bounds what the task keeps in memory to append again after a storage
/// error (every flush is a checkpoint, inside a transaction too).
#[derive(Debug, Clone)]
pub struct GroupCommit {
    pub max_txns: usize,
    pub max_bytes: u64,
    pub max_delay: Duration,
    /// Backoff between recovery attempts after a full disk (retried for as long as it
    /// takes unless the policy bounds the attempts).
    pub retry: RetryPolicy,
}

impl Default for GroupCommit {
    fn default() -> Self {
        GroupCommit {
            max_txns: 1000,
            // Also what the task keeps to append again after a full disk.
            max_bytes: 2 << 20,
            max_delay: Duration::from_millis(50),
            retry: RetryPolicy::new(Duration::from_millis(200), Duration::from_secs(10)),
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

/// How long the writer waits before looking again while the spool is full.
const FULL_RETRY: Duration = Duration::from_millis(200);

/// Batches appended since the last successful flush (the writer's checkpoint), kept to
/// be appended again after a storage error.
type Replay = Vec<Arc<Vec<ReaderEvent>>>;

/// The writer task body (see [`spawn`]). Storage calls are blocking: each batch and each
/// flush runs on the blocking pool.
///
/// A full disk (or any `DiskFull` from the storage) stops consumption: the task waits
/// with `gc.retry`'s backoff, reopens the spool's storage rolled back to the last flush
/// ([`Spool::recover_writer`]) and appends again the batches it received since, until
/// that works; then it goes on. Nothing is lost or written twice, and the reader, whose
/// channel fills meanwhile, keeps answering keepalives.
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
    let mut replay: Replay = Vec::new();
    loop {
        // Capacity: stop consuming while full and the loader can make room.
        if spool.should_pause() {
            if !full_logged {
                warn!(stats = ?spool.stats_brief(), "spool full: pausing the reader until the loader frees space");
                full_logged = true;
            }
            if first_unflushed.is_some() {
                flush_or_recover(&spool, &marks, &mut replay, &gc.retry).await?;
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
                    flush_or_recover(&spool, &marks, &mut replay, &gc.retry).await?;
                    first_unflushed = None;
                    txns_since_flush = 0;
                    bytes_since_flush = 0;
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let Some(batch) = next else {
            flush_or_recover(&spool, &marks, &mut replay, &gc.retry).await?;
            return Ok(());
        };
        txns_since_flush += batch
            .iter()
            .filter(|e| matches!(e, ReaderEvent::Commit(_) | ReaderEvent::StreamCommit(_)))
            .count();
        bytes_since_flush += batch.iter().map(approx_size).sum::<u64>();
        let batch = Arc::new(batch);
        replay.push(batch.clone());
        if let Err(e) = append_blocking(&spool, batch).await {
            if !recoverable(&e) {
                return Err(e);
            }
            recover(&spool, &replay, &gc.retry, e).await?;
        }
        first_unflushed.get_or_insert_with(Instant::now);
        if txns_since_flush >= gc.max_txns || bytes_since_flush >= gc.max_bytes {
            flush_or_recover(&spool, &marks, &mut replay, &gc.retry).await?;
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

/// Errors the writer waits out: a full disk, and (while reopening) a handle of this
/// process not yet released.
fn recoverable(e: &SpoolError) -> bool {
    e.is_disk_full() || matches!(e, SpoolError::Locked { .. })
}

fn join_error(what: &str, e: tokio::task::JoinError) -> SpoolError {
    SpoolError::Storage {
        context: format!("{what} on the blocking pool"),
        message: e.to_string(),
    }
}

async fn append_blocking(spool: &Spool, batch: Arc<Vec<ReaderEvent>>) -> Result<()> {
    let s = spool.clone();
    tokio::task::spawn_blocking(move || s.append_all(&batch))
        .await
        .map_err(|e| join_error("appending", e))?
}

/// Waits (backoff), rolls the spool back to its last checkpoint and appends `replay`
/// again, until that works or an error that is not waited out.
async fn recover(
    spool: &Spool,
    replay: &Replay,
    retry: &RetryPolicy,
    first: SpoolError,
) -> Result<()> {
    let mut backoff = retry.backoff();
    let mut err = first;
    loop {
        let Some(delay) = backoff.next_delay() else {
            return Err(err);
        };
        warn!(
            error = %err,
            retry_in = ?delay,
            attempt = backoff.attempts(),
            "spool storage full: the writer stops reading, then reopens its storage and \
             appends again what was not flushed (free disk space to go on)"
        );
        tokio::time::sleep(delay).await;
        let s = spool.clone();
        let batches = replay.clone();
        let r = tokio::task::spawn_blocking(move || {
            s.recover_writer()?;
            for b in &batches {
                s.append_all(b)?;
            }
            Ok::<(), SpoolError>(())
        })
        .await
        .map_err(|e| join_error("recovering", e))?;
        match r {
            Ok(()) => {
                info!(
                    attempts = backoff.attempts(),
                    batches = replay.len(),
                    "spool writer recovered from a full disk"
                );
                return Ok(());
            }
            Err(e) if recoverable(&e) => err = e,
            Err(e) => return Err(e),
        }
    }
}

/// Flushes (a checkpoint), recovering from a full disk first if needed; publishes the
/// durable mark and forgets the batches the checkpoint covers.
async fn flush_or_recover(
    spool: &Spool,
    marks: &watch::Sender<DurableMark>,
    replay: &mut Replay,
    retry: &RetryPolicy,
) -> Result<()> {
    loop {
        let s = spool.clone();
        let r = tokio::task::spawn_blocking(move || s.flush())
            .await
            .map_err(|e| join_error("flushing", e))?;
        match r {
            Ok(mark) => {
                replay.clear();
                marks.send_if_modified(|m| {
                    let changed = *m != mark;
                    *m = mark;
                    changed
                });
                return Ok(());
            }
            Err(e) if recoverable(&e) => recover(spool, replay, retry, e).await?,
            Err(e) => return Err(e),
        }
    }
}
