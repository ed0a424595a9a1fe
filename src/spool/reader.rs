//! The loader side: read durable records in order (never past the durable mark), look up
//! relation versions, and `mark_loaded` (durably, then reclaim disk). Keeps invariants 3
//! (reads stop at the durable mark), 8 (the loaded mark and confirmed LSN are durable
//! before anything is deleted) and 9 (a missing, mismatching or undecodable record is an
//! error naming its sequence).

use super::error::{Result, SpoolError};
use super::record::{key_seq, seq_key, unframe, CommitRecord, SpoolRecord};
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
        let mut next = start;
        while next <= end && out.len() < max {
            let first = self.segment_of(next).ok_or_else(|| SpoolError::Corrupt {
                seq: next,
                reason: "no log segment holds this durable record".into(),
            })?;
            let seg = self.segment(first)?;
            let mut progressed = false;
            for kv in seg.log.range(seq_key(next)..=seq_key(end)) {
                let (k, v) = kv.map_err(|e| SpoolError::Corrupt {
                    seq: next,
                    reason: format!("storage error reading the record: {e}"),
                })?;
                let seq = key_seq(&k)?;
                if seq != next {
                    return Err(SpoolError::Corrupt {
                        seq: next,
                        reason: format!("record missing (next stored record is {seq})"),
                    });
                }
                out.push((seq, unframe::<SpoolRecord>(seq, &v)?));
                next += 1;
                progressed = true;
                if out.len() >= max {
                    break;
                }
            }
            if !progressed {
                return Err(SpoolError::Corrupt {
                    seq: next,
                    reason: "record missing from its log segment".into(),
                });
            }
        }
        Ok(out)
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
    /// commit index: one entry per transaction, not per record).
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
            for kv in seg.txns.range(seq_key(after + 1)..=seq_key(to)) {
                let (k, v) = kv.map_err(|e| SpoolError::sled("reading the commit index", e))?;
                let seq = key_seq(&k)?;
                match unframe::<SpoolRecord>(seq, &v)? {
                    SpoolRecord::Commit(c) => {
                        if !f(seq, c)? {
                            return Ok(());
                        }
                    }
                    SpoolRecord::Change { .. } => {
                        return Err(SpoolError::Corrupt {
                            seq,
                            reason: "commit index entry is not a commit record".into(),
                        })
                    }
                }
            }
        }
        Ok(())
    }

    /// Records that everything up to `up_to_seq` (a durable commit record) is loaded and
    /// that `confirmed_lsn` may be confirmed to PostgreSQL. Durable when it returns; then
    /// fully loaded segments are deleted so disk space comes back.
    pub fn mark_loaded(&self, up_to_seq: u64, confirmed_lsn: Lsn) -> Result<()> {
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
            for k in &doomed {
                st.rel_last_used.remove(k);
                self.inner.ledger.remove_relation(k.0, k.1)?;
            }
            self.inner.ledger.store_state(&st)?;
            let mut sh = lock(&self.inner.shared);
            sh.state = st;
            for k in &doomed {
                sh.relations.remove(k);
                sh.rel_live.remove(k);
            }
        }
        self.reclaim()?;
        self.retire_idle_segment()
    }
}
