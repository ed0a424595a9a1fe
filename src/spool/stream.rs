//! In-progress streamed transactions (pgoutput protocol v2), kept on disk by xid until
//! Stream Commit (then copied into the log as one contiguous transaction) or Stream Abort
//! (dropped). Keeps invariant 4 (loadable only at Stream Commit) and 10 (a streamed
//! transaction's size never lives in memory). Never made durable: after a crash or a
//! reconnect PostgreSQL streams these transactions again from their start.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use tracing::debug;

use super::error::{Result, SpoolError};
use super::record::{frame, seq_key, unframe, StreamEntry};
use super::segment::{open_db, remove};
use crate::core::{RelationId, Xid};

/// After this many bytes went through the streams database, it is recreated as soon as no
/// streamed transaction is open, so its disk space comes back.
const RECREATE_AFTER_BYTES: u64 = 64 << 20;

pub(crate) struct StreamTxn {
    name: Vec<u8>,
    tree: sled::Tree,
    next: u64,
    pub bytes: u64,
    pub changes: u64,
    aborted: HashSet<Xid>,
    pub rels: BTreeSet<(RelationId, u32)>,
}

pub(crate) struct StreamStore {
    spool_dir: PathBuf,
    path: PathBuf,
    cache_bytes: u64,
    db: Option<sled::Db>,
    pub txns: BTreeMap<Xid, StreamTxn>,
    written: u64,
}

impl StreamStore {
    /// A fresh store; whatever a previous run left in `<dir>/streams` is discarded.
    pub(crate) fn open(spool_dir: &Path, cache_bytes: u64) -> Result<Self> {
        let path = spool_dir.join("streams");
        if path.exists() {
            remove(spool_dir, &path)?;
        }
        Ok(StreamStore {
            spool_dir: spool_dir.to_path_buf(),
            path,
            cache_bytes,
            db: None,
            txns: BTreeMap::new(),
            written: 0,
        })
    }

    /// A placeholder with nothing open (used while the real store is borrowed).
    pub(crate) fn empty() -> Self {
        StreamStore {
            spool_dir: PathBuf::new(),
            path: PathBuf::new(),
            cache_bytes: 0,
            db: None,
            txns: BTreeMap::new(),
            written: 0,
        }
    }

    fn db(&mut self) -> Result<&sled::Db> {
        if self.db.is_none() {
            self.db = Some(open_db(&self.path, self.cache_bytes, &self.spool_dir)?);
        }
        self.db.as_ref().ok_or_else(|| SpoolError::Storage {
            context: "opening the streams database".into(),
            message: "not open".into(),
        })
    }

    /// Starts (or continues) the streamed transaction `xid`.
    pub(crate) fn start(&mut self, xid: Xid, first_segment: bool) -> Result<()> {
        if first_segment && self.txns.contains_key(&xid) {
            debug!(
                xid,
                "first stream segment for an xid already open: restarting it"
            );
            self.discard(xid)?;
        }
        if !self.txns.contains_key(&xid) {
            let name = format!("xid-{xid}").into_bytes();
            let tree = self
                .db()?
                .open_tree(&name)
                .map_err(|e| SpoolError::sled("opening a streamed transaction", e))?;
            tree.clear()
                .map_err(|e| SpoolError::sled("clearing a streamed transaction", e))?;
            self.txns.insert(
                xid,
                StreamTxn {
                    name,
                    tree,
                    next: 0,
                    bytes: 0,
                    changes: 0,
                    aborted: HashSet::new(),
                    rels: BTreeSet::new(),
                },
            );
        }
        Ok(())
    }

    /// Appends a change to its streamed transaction; returns the framed size.
    pub(crate) fn append(&mut self, xid: Xid, entry: &StreamEntry) -> Result<u64> {
        if !self.txns.contains_key(&xid) {
            self.start(xid, false)?;
        }
        let value = frame(entry)?;
        let len = value.len() as u64;
        let txn = self
            .txns
            .get_mut(&xid)
            .ok_or_else(|| SpoolError::Protocol(format!("no streamed transaction {xid}")))?;
        txn.tree
            .insert(seq_key(txn.next), value)
            .map_err(|e| SpoolError::sled("appending to a streamed transaction", e))?;
        txn.next += 1;
        txn.bytes += len;
        txn.changes += 1;
        txn.rels.insert((entry.change.relation, entry.rel_version));
        self.written += len;
        Ok(len)
    }

    /// Records a subtransaction abort: its changes are skipped at commit.
    pub(crate) fn abort_sub(&mut self, xid: Xid, subxid: Xid) {
        if let Some(t) = self.txns.get_mut(&xid) {
            t.aborted.insert(subxid);
        }
    }

    /// Calls `f` for every change of `xid` not aborted, in arrival order.
    pub(crate) fn for_each(
        &self,
        xid: Xid,
        mut f: impl FnMut(StreamEntry) -> Result<()>,
    ) -> Result<()> {
        let Some(t) = self.txns.get(&xid) else {
            return Ok(());
        };
        for (i, kv) in t.tree.iter().enumerate() {
            let (_, v) = kv.map_err(|e| SpoolError::sled("reading a streamed transaction", e))?;
            let entry: StreamEntry = unframe(i as u64, &v).map_err(|e| SpoolError::Corrupt {
                seq: 0,
                reason: format!("streamed transaction {xid}, change {i}: {e}"),
            })?;
            if t.aborted.contains(&entry.change.subxid) {
                continue;
            }
            f(entry)?;
        }
        Ok(())
    }

    /// Drops the streamed transaction `xid` (after commit or abort).
    pub(crate) fn discard(&mut self, xid: Xid) -> Result<()> {
        if let Some(t) = self.txns.remove(&xid) {
            if let Some(db) = &self.db {
                db.drop_tree(&t.name)
                    .map_err(|e| SpoolError::sled("dropping a streamed transaction", e))?;
            }
        }
        self.maybe_recreate()
    }

    /// Drops every streamed transaction (a reconnect: they will be sent again).
    pub(crate) fn clear(&mut self) -> Result<()> {
        self.txns.clear();
        if self.db.take().is_some() {
            remove(&self.spool_dir, &self.path)?;
        }
        self.written = 0;
        Ok(())
    }

    fn maybe_recreate(&mut self) -> Result<()> {
        if self.txns.is_empty() && self.written >= RECREATE_AFTER_BYTES {
            self.clear()?;
        }
        Ok(())
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.txns.values().map(|t| t.bytes).sum()
    }
}
