//! In-progress streamed transactions (pgoutput protocol v2), kept on disk by xid until
//! Stream Commit (then copied into the log as one contiguous transaction) or Stream Abort
//! (dropped). Keeps invariant 4 (loadable only at Stream Commit) and 10 (a streamed
//! transaction's size never lives in memory). Never made durable: after a crash or a
//! reconnect PostgreSQL streams these transactions again from their start. Dropping
//! data is deferred to the writer's next checkpoint, so rolling back to the last
//! checkpoint (after a full disk) always finds what the replayed events need.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{debug, warn};

use super::error::{Result, SpoolError};
use super::record::{frame, seq_key, unframe, StreamEntry};
use super::segment::remove;
use super::storage::{Database, Store, Tree};
use crate::core::{RelationId, Xid};

/// After this many bytes went through the streams database, it is recreated as soon as no
/// streamed transaction is open, so its disk space comes back.
const RECREATE_AFTER_BYTES: u64 = 64 << 20;

/// What the writer knows of one streamed transaction (everything but its tree handle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamMeta {
    name: String,
    next: u64,
    pub bytes: u64,
    pub changes: u64,
    aborted: HashSet<Xid>,
    pub rels: BTreeSet<(RelationId, u32)>,
}

pub(crate) struct StreamTxn {
    pub meta: StreamMeta,
    tree: Box<dyn Tree>,
}

/// The streams' state at a checkpoint (see `StreamStore::restore`).
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamSnapshot {
    txns: BTreeMap<Xid, StreamMeta>,
    written: u64,
    counter: u64,
}

pub(crate) struct StreamStore {
    store: Option<Arc<dyn Store>>,
    path: PathBuf,
    cache_bytes: u64,
    pub txns: BTreeMap<Xid, StreamTxn>,
    written: u64,
    /// Makes tree names unique, so a dropped (deferred) tree never meets a new one.
    counter: u64,
    /// Trees to drop at the next checkpoint.
    doomed: Vec<String>,
    /// Written since the last checkpoint.
    dirty: bool,
    // Declared last: the trees are dropped before the database.
    db: Option<Box<dyn Database>>,
}

impl StreamStore {
    /// A fresh store; whatever a previous run left in `<dir>/streams` is discarded.
    pub(crate) fn open(store: Arc<dyn Store>, spool_dir: &Path, cache_bytes: u64) -> Result<Self> {
        let path = spool_dir.join("streams");
        if store.exists(&path) {
            remove(store.as_ref(), &path)?;
        }
        Ok(StreamStore {
            store: Some(store),
            path,
            cache_bytes,
            txns: BTreeMap::new(),
            written: 0,
            counter: 0,
            doomed: Vec::new(),
            dirty: false,
            db: None,
        })
    }

    /// A placeholder with nothing open (used while the real store is borrowed).
    pub(crate) fn empty() -> Self {
        StreamStore {
            store: None,
            path: PathBuf::new(),
            cache_bytes: 0,
            txns: BTreeMap::new(),
            written: 0,
            counter: 0,
            doomed: Vec::new(),
            dirty: false,
            db: None,
        }
    }

    fn store(&self) -> Result<&Arc<dyn Store>> {
        self.store.as_ref().ok_or_else(|| SpoolError::Storage {
            context: "using the streams database".into(),
            message: "not available".into(),
        })
    }

    fn db(&mut self) -> Result<&dyn Database> {
        if self.db.is_none() {
            let db = self
                .store()?
                .open(&self.path, self.cache_bytes)
                .map_err(|e| SpoolError::store("opening the streams database", e))?;
            self.db = Some(db);
        }
        self.db.as_deref().ok_or_else(|| SpoolError::Storage {
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
            self.discard(xid);
        }
        if !self.txns.contains_key(&xid) {
            self.counter += 1;
            let name = format!("xid-{xid}-{}", self.counter);
            self.dirty = true;
            let tree = self
                .db()?
                .tree(&name)
                .map_err(|e| SpoolError::store("opening a streamed transaction", e))?;
            self.txns.insert(
                xid,
                StreamTxn {
                    meta: StreamMeta {
                        name,
                        next: 0,
                        bytes: 0,
                        changes: 0,
                        aborted: HashSet::new(),
                        rels: BTreeSet::new(),
                    },
                    tree,
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
        self.dirty = true;
        txn.tree
            .insert(&seq_key(txn.meta.next), &value)
            .map_err(|e| SpoolError::store("appending to a streamed transaction", e))?;
        txn.meta.next += 1;
        txn.meta.bytes += len;
        txn.meta.changes += 1;
        txn.meta
            .rels
            .insert((entry.change.relation, entry.rel_version));
        self.written += len;
        Ok(len)
    }

    /// Records a subtransaction abort: its changes are skipped at commit.
    pub(crate) fn abort_sub(&mut self, xid: Xid, subxid: Xid) {
        if let Some(t) = self.txns.get_mut(&xid) {
            t.meta.aborted.insert(subxid);
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
        let end = seq_key(t.meta.next);
        let iter = t.tree.range(Bound::Unbounded, Bound::Excluded(&end[..]));
        for (i, kv) in iter.enumerate() {
            let (_, v) = kv.map_err(|e| SpoolError::store("reading a streamed transaction", e))?;
            let entry: StreamEntry = unframe(i as u64, &v).map_err(|e| SpoolError::Corrupt {
                seq: 0,
                reason: format!("streamed transaction {xid}, change {i}: {e}"),
            })?;
            if t.meta.aborted.contains(&entry.change.subxid) {
                continue;
            }
            f(entry)?;
        }
        Ok(())
    }

    /// Drops the streamed transaction `xid` (after commit or abort); its data goes at the
    /// next checkpoint.
    pub(crate) fn discard(&mut self, xid: Xid) {
        if let Some(t) = self.txns.remove(&xid) {
            self.doomed.push(t.meta.name);
        }
    }

    /// Drops every streamed transaction (a reconnect: they will be sent again).
    pub(crate) fn clear(&mut self) {
        let names: Vec<String> = std::mem::take(&mut self.txns)
            .into_values()
            .map(|t| t.meta.name)
            .collect();
        self.doomed.extend(names);
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.txns.values().map(|t| t.meta.bytes).sum()
    }

    /// Part of a checkpoint: hands what was written to the OS.
    pub(crate) fn flush(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        if let Some(db) = &self.db {
            db.flush()
                .map_err(|e| SpoolError::store("flushing the streams database", e))?;
        }
        self.dirty = false;
        Ok(())
    }

    /// The state to roll back to (taken at each checkpoint, after `flush`).
    pub(crate) fn snapshot(&self) -> StreamSnapshot {
        StreamSnapshot {
            txns: self
                .txns
                .iter()
                .map(|(x, t)| (*x, t.meta.clone()))
                .collect(),
            written: self.written,
            counter: self.counter,
        }
    }

    /// After a checkpoint: drops what was discarded before it, and recreates the
    /// database when it has no open transaction and has carried a lot. Failures are only
    /// logged (this is garbage collection; it is tried again at the next checkpoint).
    pub(crate) fn collect_garbage(&mut self) {
        if self.db.is_none() {
            self.doomed.clear();
            return;
        }
        if self.txns.is_empty() && (!self.doomed.is_empty() || self.written >= RECREATE_AFTER_BYTES)
        {
            // Nothing open: removing the whole database is cheaper than dropping trees,
            // and gives its disk space back.
            self.doomed.clear();
            self.db = None;
            self.written = 0;
            if let Some(store) = self.store.clone() {
                if let Err(e) = remove(store.as_ref(), &self.path) {
                    warn!(error = %e, "could not remove the streams database");
                }
            }
            return;
        }
        while let Some(name) = self.doomed.pop() {
            let r = match &self.db {
                Some(db) => db.drop_tree(&name),
                None => Ok(()),
            };
            if let Err(e) = r {
                warn!(error = %e, tree = name, "could not drop a finished streamed transaction");
                self.doomed.push(name);
                return;
            }
        }
    }

    /// Rolls back to `snap` after a storage error: reopens the database, cuts each open
    /// transaction back to what it held at the snapshot and drops every other tree.
    pub(crate) fn restore(&mut self, snap: &StreamSnapshot) -> Result<()> {
        self.txns.clear();
        self.db = None;
        self.doomed.clear();
        self.written = snap.written;
        self.counter = snap.counter;
        self.dirty = false;
        let store = self.store()?.clone();
        if snap.txns.is_empty() {
            if store.exists(&self.path) {
                remove(store.as_ref(), &self.path)?;
            }
            return Ok(());
        }
        let keep: BTreeMap<&str, u64> = snap
            .txns
            .values()
            .map(|m| (m.name.as_str(), m.next))
            .collect();
        let db = self.db()?;
        let names = db
            .tree_names()
            .map_err(|e| SpoolError::store("listing streamed transactions", e))?;
        for name in names {
            match keep.get(name.as_str()) {
                None => db
                    .drop_tree(&name)
                    .map_err(|e| SpoolError::store("dropping a streamed transaction", e))?,
                Some(next) => {
                    let tree = db
                        .tree(&name)
                        .map_err(|e| SpoolError::store("opening a streamed transaction", e))?;
                    let start = seq_key(*next);
                    let tail: Vec<Vec<u8>> = tree
                        .range(Bound::Included(&start[..]), Bound::Unbounded)
                        .map(|kv| kv.map(|(k, _)| k))
                        .collect::<std::result::Result<_, _>>()
                        .map_err(|e| SpoolError::store("reading a streamed transaction", e))?;
                    for k in tail {
                        tree.remove(&k).map_err(|e| {
                            SpoolError::store("cutting back a streamed transaction", e)
                        })?;
                    }
                }
            }
        }
        let mut txns = BTreeMap::new();
        for (xid, meta) in &snap.txns {
            let tree = db
                .tree(&meta.name)
                .map_err(|e| SpoolError::store("opening a streamed transaction", e))?;
            txns.insert(
                *xid,
                StreamTxn {
                    meta: meta.clone(),
                    tree,
                },
            );
        }
        db.flush()
            .map_err(|e| SpoolError::store("flushing the streams database", e))?;
        self.txns = txns;
        Ok(())
    }
}
