//! Counters of the spool, cheap to read (kept up to date by flush and mark_loaded, never
//! a scan): depth, bytes, oldest pending commit, pending changes per table, capacity.

use serde::Serialize;

use super::meta::{DurableMark, LoadedMark, PendingTxn};
use super::{lock, Spool};
use crate::core::{RelationId, PG_EPOCH_OFFSET_MICROS};

/// Pending change records of one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableCount {
    pub relation_id: RelationId,
    /// `schema.table` of the latest known version.
    pub name: String,
    pub records: u64,
}

/// A snapshot of the spool's state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpoolStats {
    pub spool_id: String,
    pub format_version: u32,
    pub dir: String,
    pub durable: DurableMark,
    pub loaded: LoadedMark,
    /// Durable records not yet loaded (changes and commit records).
    pub pending_records: u64,
    /// Durable transactions not yet loaded.
    pub pending_txns: u64,
    /// Framed bytes of durable records not yet loaded.
    pub pending_bytes: u64,
    /// Bytes appended and not yet durable.
    pub unflushed_bytes: u64,
    /// Open streamed transactions and their bytes.
    pub stream_txns: usize,
    pub stream_bytes: u64,
    pub oldest_pending: Option<PendingTxn>,
    /// Age in seconds of the oldest pending commit (from its commit time), if any.
    pub oldest_pending_age_secs: Option<f64>,
    pub per_table: Vec<TableCount>,
    pub segments: usize,
    /// Segments open (an open segment's written values stay in memory).
    pub open_segments: usize,
    /// Bytes of the spool directory on disk (refreshed at most every two seconds).
    pub disk_bytes: u64,
    pub max_bytes: u64,
    pub full: bool,
    /// The writer hit a full disk (ENOSPC) and waits for space (it retries on its own).
    pub disk_full: bool,
}

impl Spool {
    /// Bytes counted against `max_bytes`.
    fn used_bytes(&self) -> u64 {
        let sh = lock(&self.inner.shared);
        sh.state.counters.bytes + sh.unflushed_bytes + sh.stream_bytes
    }

    /// The spool reached `SPOOL_MAX_BYTES`.
    pub fn is_full(&self) -> bool {
        self.used_bytes() >= self.inner.opts.max_bytes
    }

    /// Full, and the loader can make room (there is durable data to load). When the
    /// spool is full of a single unfinished transaction, pausing would deadlock, so the
    /// writer goes on (over the limit, with a warning).
    pub fn should_pause(&self) -> bool {
        if !self.is_full() {
            return false;
        }
        let sh = lock(&self.inner.shared);
        sh.state.durable.seq > sh.state.loaded.seq
    }

    pub(crate) fn stats_brief(&self) -> (u64, u64) {
        (self.used_bytes(), self.inner.opts.max_bytes)
    }

    /// Current counters and marks.
    pub fn stats(&self) -> SpoolStats {
        let now = std::time::Instant::now();
        let mut sh = lock(&self.inner.shared);
        let disk = match sh.disk_bytes {
            Some((t, b)) if now.duration_since(t).as_secs_f64() < 2.0 => b,
            _ => {
                let b = self.inner.store.disk_bytes(&self.inner.dir);
                sh.disk_bytes = Some((now, b));
                b
            }
        };
        let st = &sh.state;
        let per_table = st
            .counters
            .per_table
            .iter()
            .map(|(id, n)| TableCount {
                relation_id: *id,
                name: sh
                    .latest
                    .get(id)
                    .and_then(|v| sh.relations.get(&(*id, *v)))
                    .map(|r| r.qualified_name())
                    .unwrap_or_else(|| format!("relation {id}")),
                records: *n,
            })
            .collect();
        let age = st.counters.oldest.map(|o| {
            let now_pg = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as i64)
                .unwrap_or(0)
                - PG_EPOCH_OFFSET_MICROS;
            ((now_pg - o.commit_time) as f64 / 1e6).max(0.0)
        });
        let used = st.counters.bytes + sh.unflushed_bytes + sh.stream_bytes;
        SpoolStats {
            spool_id: format!("{:016x}", st.spool_id),
            format_version: super::FORMAT_VERSION,
            dir: self.inner.dir.display().to_string(),
            durable: st.durable,
            loaded: st.loaded,
            pending_records: st.counters.records,
            pending_txns: st.counters.txns,
            pending_bytes: st.counters.bytes,
            unflushed_bytes: sh.unflushed_bytes,
            stream_txns: sh.stream_txns,
            stream_bytes: sh.stream_bytes,
            oldest_pending: st.counters.oldest,
            oldest_pending_age_secs: age,
            per_table,
            segments: sh.segments.len(),
            open_segments: sh.segments.values().filter(|s| s.open.is_some()).count(),
            disk_bytes: disk,
            max_bytes: self.inner.opts.max_bytes,
            full: used >= self.inner.opts.max_bytes,
            disk_full: sh.disk_full,
        }
    }
}
