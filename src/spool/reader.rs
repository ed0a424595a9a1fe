//! The loader side: read durable records in order (never past the durable mark), look up
//! relation versions, and `mark_loaded` (durably, then reclaim disk). Keeps invariants 3
//! (reads stop at the durable mark), 8 (the loaded mark and confirmed LSN are durable
//! before anything is deleted) and 9 (a missing, mismatching or undecodable record is an
//! error naming its sequence).

use std::ops::Bound;
use std::sync::Arc;

use super::error::{Result, SpoolError};
use super::meta::{rel_key, KEY_JOURNAL};
use super::record::{decode_record, frame, key_seq, seq_key, Block, CommitRecord, SpoolRecord};
use super::storage::WriteBatch;
use super::{lock, Spool};
use crate::core::{Lsn, Relation, RelationId};

impl Spool {
    /// Up to `max_records` durable records from `from` on (clamped to after the loaded
    /// mark), in sequence order, never past the durable mark.
    pub fn read_from(&self, from: u64, max_records: usize) -> Result<Vec<(u64, SpoolRecord)>> {
        let (durable, loaded) = {
            let sh = lock(&self.inner.shared);
            (sh.state.durable.seq, sh.state.loaded.seq)
        };
        let start = from.max(loaded + 1);
        self.read_range(start, durable, max_records)
    }

    /// Records `start..=end` (at most `max`), checking that none is missing.
    pub(crate) fn read_range(
        &self,
        start: u64,
        end: u64,
        max: usize,
    ) -> Result<Vec<(u64, SpoolRecord)>> {
        let mut out = Vec::new();
        self.each_record(start, end, max, &mut |seq, rec| {
            out.push((seq, decode_record(seq, rec)?));
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `f` with the stored bytes of records `start..=end` (at most `max`), in
    /// order, checking that none is missing. The bytes are slices of a checked block.
    pub(crate) fn each_record(
        &self,
        start: u64,
        end: u64,
        max: usize,
        f: &mut dyn FnMut(u64, &bytes::Bytes) -> Result<()>,
    ) -> Result<()> {
        let mut next = start;
        let mut n = 0usize;
        while next <= end && n < max {
            let block = self.block_at(next)?;
            for (seq, rec) in block.records_from(next) {
                if seq > end || n >= max {
                    break;
                }
                f(seq, &rec)?;
                next = seq + 1;
                n += 1;
            }
        }
        Ok(())
    }

    /// The stored block holding `seq` (a durable record): from the one-block cache when
    /// it is there. Only blocks wholly at or below the durable mark are cached: they are
    /// never rewritten (cuts only ever remove records past the durable mark).
    pub(crate) fn block_at(&self, seq: u64) -> Result<Arc<Block>> {
        if let Some(b) = lock(&self.inner.last_block).as_ref() {
            if b.contains(seq) {
                return Ok(b.clone());
            }
        }
        let first = self.segment_of(seq).ok_or_else(|| SpoolError::Corrupt {
            seq,
            reason: "no log segment holds this durable record".into(),
        })?;
        let seg = self.segment(first)?;
        let block = seg.block_at(seq)?.ok_or_else(|| SpoolError::Corrupt {
            seq,
            reason: "record missing from its log segment".into(),
        })?;
        let block = Arc::new(block);
        if block.last_seq() <= self.durable_mark().seq {
            *lock(&self.inner.last_block) = Some(block.clone());
        }
        Ok(block)
    }

    /// One durable record (or any stored one up to the durable mark).
    pub fn get(&self, seq: u64) -> Result<SpoolRecord> {
        let durable = self.durable_mark().seq;
        if seq == 0 || seq > durable {
            return Err(SpoolError::Corrupt {
                seq,
                reason: format!("not a durable record (durable mark is {durable})"),
            });
        }
        let mut v = self.read_range(seq, seq, 1)?;
        v.pop().map(|(_, r)| r).ok_or_else(|| SpoolError::Corrupt {
            seq,
            reason: "record missing".into(),
        })
    }

    /// The relation (schema) version a change record was decoded with.
    pub fn relation(&self, id: RelationId, version: u32) -> Result<Relation> {
        lock(&self.inner.shared)
            .relations
            .get(&(id, version))
            .cloned()
            .ok_or(SpoolError::UnknownRelation { id, version })
    }

    /// Every relation version the spool holds, `(id, version, relation)`.
    pub fn relations(&self) -> Vec<(RelationId, u32, Relation)> {
        lock(&self.inner.shared)
            .relations
            .iter()
            .map(|((id, v), r)| (*id, *v, r.clone()))
            .collect()
    }

    /// Commit records with sequence in `after+1..=to`, in order (through the per-segment
    /// commit index: one entry per block that holds commits, not per record).
    pub(crate) fn commits_between(
        &self,
        after: u64,
        to: u64,
        mut f: impl FnMut(u64, CommitRecord) -> Result<bool>,
    ) -> Result<()> {
        let firsts: Vec<u64> = {
            let sh = lock(&self.inner.shared);
            sh.segments
                .iter()
                .filter(|(first, slot)| **first <= to && slot.last_seq > after)
                .map(|(f, _)| *f)
                .collect()
        };
        for first in firsts {
            let seg = self.segment(first)?;
            // The index entry of the block holding `after + 1` is keyed at or before it.
            let lo = match seg
                .txns
                .floor(&seq_key(after + 1))
                .map_err(|e| SpoolError::store("reading the commit index", e))?
            {
                Some((k, _)) => k,
                None => seq_key(after + 1).to_vec(),
            };
            let hi = seq_key(to);
            for kv in seg
                .txns
                .range(Bound::Included(&lo[..]), Bound::Included(&hi[..]))
            {
                let (k, v) = kv.map_err(|e| SpoolError::store("reading the commit index", e))?;
                let block_first = key_seq(&k)?;
                for (seq, c) in seg.commits_of(block_first, &v)? {
                    if seq <= after || seq > to {
                        continue;
                    }
                    if !f(seq, c)? {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// Records that everything up to `up_to_seq` (a durable commit record) is loaded and
    /// that `confirmed_lsn` may be confirmed to PostgreSQL. Durable when it returns; then
    /// fully loaded segments are deleted so disk space comes back. The loader journal is
    /// left as it is (see [`Spool::mark_loaded_with_journal`]).
    pub fn mark_loaded(&self, up_to_seq: u64, confirmed_lsn: Lsn) -> Result<()> {
        self.mark_loaded_inner(up_to_seq, confirmed_lsn, None)
    }

    /// [`Spool::mark_loaded`] that also replaces the loader journal (`None` removes it),
    /// in the same atomic ledger write: after a crash either both changed or neither.
    pub fn mark_loaded_with_journal(
        &self,
        up_to_seq: u64,
        confirmed_lsn: Lsn,
        journal: Option<&[u8]>,
    ) -> Result<()> {
        self.mark_loaded_inner(up_to_seq, confirmed_lsn, Some(journal))
    }

    /// The loader's journal (an opaque blob the loader owns), as last stored.
    pub fn loader_journal(&self) -> Option<Vec<u8>> {
        lock(&self.inner.shared).journal.clone()
    }

    /// Replaces the loader journal (`None` removes it); durable (synced) when it returns.
    pub fn set_loader_journal(&self, journal: Option<&[u8]>) -> Result<()> {
        let _m = lock(&self.inner.meta_lock);
        self.heal_ledger_locked()?;
        let mut batch = WriteBatch::new();
        journal_op(&mut batch, journal)?;
        self.inner
            .ledger
            .commit_batch("writing the loader journal", &batch)?;
        lock(&self.inner.shared).journal = journal.map(<[u8]>::to_vec);
        Ok(())
    }

    fn mark_loaded_inner(
        &self,
        up_to_seq: u64,
        confirmed_lsn: Lsn,
        journal: Option<Option<&[u8]>>,
    ) -> Result<()> {
        {
            let _m = lock(&self.inner.meta_lock);
            let mut st = lock(&self.inner.shared).state.clone();
            if up_to_seq < st.loaded.seq {
                return Err(SpoolError::BadLoadedMark {
                    seq: up_to_seq,
                    reason: format!("already loaded up to {}", st.loaded.seq),
                });
            }
            if up_to_seq > st.durable.seq {
                return Err(SpoolError::BadLoadedMark {
                    seq: up_to_seq,
                    reason: format!("past the durable mark {}", st.durable.seq),
                });
            }
            if up_to_seq > st.loaded.seq {
                let mut last_commit = None;
                let mut counters = st.counters.clone();
                self.commits_between(st.loaded.seq, up_to_seq, |seq, c| {
                    counters.remove_txn(c.changes, c.bytes, &c.tables);
                    last_commit = Some(seq);
                    Ok(true)
                })?;
                if last_commit != Some(up_to_seq) {
                    return Err(SpoolError::BadLoadedMark {
                        seq: up_to_seq,
                        reason: "not a commit record (load batches end on commits)".into(),
                    });
                }
                counters.oldest = None;
                let durable = st.durable.seq;
                self.commits_between(up_to_seq, durable, |seq, c| {
                    counters.oldest = Some(super::meta::PendingTxn {
                        commit_seq: seq,
                        commit_lsn: c.info.commit_lsn,
                        commit_time: c.info.commit_time,
                    });
                    Ok(false)
                })?;
                if durable == up_to_seq {
                    counters.records = 0;
                    counters.txns = 0;
                    counters.bytes = 0;
                    counters.per_table.clear();
                }
                st.counters = counters;
            }
            st.loaded.seq = up_to_seq;
            st.loaded.confirmed_lsn = confirmed_lsn;
            // Relation versions no longer needed: superseded and last used by loaded records.
            let (doomed, in_streams) = {
                let sh = lock(&self.inner.shared);
                let doomed: Vec<(RelationId, u32)> = sh
                    .relations
                    .keys()
                    .filter(|(id, v)| sh.latest.get(id) != Some(v))
                    .filter(|k| sh.rel_live.get(k).copied().unwrap_or(0) <= up_to_seq)
                    .copied()
                    .collect();
                (doomed, sh.stream_txns > 0)
            };
            let doomed = if in_streams { Vec::new() } else { doomed };
            let mut batch = WriteBatch::new();
            for k in &doomed {
                st.rel_last_used.remove(k);
                batch.remove(rel_key(k.0, k.1));
            }
            if let Some(j) = journal {
                journal_op(&mut batch, j)?;
            }
            crate::failpoints::crash(crate::failpoints::SPOOL_MARK_LOADED);
            self.heal_ledger_locked()?;
            self.inner.ledger.commit(&st, batch)?;
            let mut sh = lock(&self.inner.shared);
            sh.state = st;
            for k in &doomed {
                sh.relations.remove(k);
                sh.rel_live.remove(k);
            }
            if let Some(j) = journal {
                sh.journal = j.map(<[u8]>::to_vec);
            }
        }
        self.reclaim()?;
        self.retire_idle_segment()
    }
}

fn journal_op(batch: &mut WriteBatch, journal: Option<&[u8]>) -> Result<()> {
    match journal {
        Some(j) => batch.insert(KEY_JOURNAL, frame(&j)?),
        None => batch.remove(KEY_JOURNAL),
    }
    Ok(())
}
