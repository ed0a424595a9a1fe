//! In-progress streamed transactions (pgoutput protocol v2), kept on disk by xid until
//! Stream Commit (then their stored records are moved into the log, as they are, as one
//! contiguous transaction) or Stream Abort (dropped). Each transaction is a tree of blocks
//! (like the log's, keyed by the index of their first change); one block is filled at a
//! time, so memory does not grow with the number or size of streamed transactions. Keeps invariant 4 (loadable only at Stream Commit) and 10 (a streamed
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
use super::record::{
    change_head, encode_change, key_seq, seq_key, Block, BlockBuilder, ChangeHead,
};
use super::segment::remove;
use super::storage::{Database, Store, Tree};
use crate::core::{Change, RelationId, Xid};

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
    /// The transaction whose block is being filled (`block`).
    open: Option<Xid>,
    block: BlockBuilder,
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
            open: None,
            block: BlockBuilder::new(0),
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
            open: None,
            block: BlockBuilder::new(0),
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

    /// Appends a change to its streamed transaction; returns its stored size.
    pub(crate) fn append(&mut self, xid: Xid, rel_version: u32, change: &Change) -> Result<u64> {
        if !self.txns.contains_key(&xid) {
            self.start(xid, false)?;
        }
        if self.open != Some(xid) {
            self.close_block()?;
        }
        let txn = self
            .txns
            .get_mut(&xid)
            .ok_or_else(|| SpoolError::Protocol(format!("no streamed transaction {xid}")))?;
        if self.block.is_empty() {
            self.block.reset(txn.meta.next);
            self.open = Some(xid);
        }
        let len = self.block.push_with(|out| {
            encode_change(rel_version, change, out);
            Ok(())
        })?;
        self.dirty = true;
        txn.meta.next += 1;
        txn.meta.bytes += len;
        txn.meta.changes += 1;
        txn.meta.rels.insert((change.relation, rel_version));
        self.written += len;
        if self.block.is_full() {
            self.close_block()?;
        }
        Ok(len)
    }

    /// Writes the block being filled to its transaction's tree (not flushed).
    pub(crate) fn close_block(&mut self) -> Result<()> {
        let Some(xid) = self.open.take() else {
            return Ok(());
        };
        if self.block.is_empty() {
            return Ok(());
        }
        let first = self.block.first_seq;
        if let Some(txn) = self.txns.get(&xid) {
            txn.tree
                .insert(&seq_key(first), self.block.finish())
                .map_err(|e| SpoolError::store("appending to a streamed transaction", e))?;
        }
        self.block.reset(0);
        Ok(())
    }

    /// Records a subtransaction abort: its changes are skipped at commit.
    pub(crate) fn abort_sub(&mut self, xid: Xid, subxid: Xid) {
        if let Some(t) = self.txns.get_mut(&xid) {
            t.meta.aborted.insert(subxid);
        }
    }

    /// Calls `f` with the stored bytes of every change of `xid` not aborted, in arrival
    /// order (no decoding: the head gives relation and subtransaction).
    pub(crate) fn for_each(
        &mut self,
        xid: Xid,
        mut f: impl FnMut(&[u8], ChangeHead) -> Result<()>,
    ) -> Result<()> {
        if self.open == Some(xid) {
            self.close_block()?;
        }
        let Some(t) = self.txns.get(&xid) else {
            return Ok(());
        };
        let end = seq_key(t.meta.next);
        let corrupt = |i: u64, e: SpoolError| SpoolError::Corrupt {
            seq: 0,
            reason: format!("streamed transaction {xid}, change {i}: {e}"),
        };
        let mut expected = 0u64;
        for kv in t.tree.range(Bound::Unbounded, Bound::Excluded(&end[..])) {
            let (k, v) = kv.map_err(|e| SpoolError::store("reading a streamed transaction", e))?;
            let first = key_seq(&k)?;
            let block =
                Block::parse(first, bytes::Bytes::from(v)).map_err(|e| corrupt(first, e))?;
            if first != expected {
                return Err(corrupt(
                    expected,
                    SpoolError::Protocol("changes missing from the stored stream".into()),
                ));
            }
            expected = block.last_seq() + 1;
            for (i, rec) in block.records_from(first) {
                let head = change_head(i, &rec)
                    .map_err(|e| corrupt(i, e))?
                    .ok_or_else(|| {
                        corrupt(
                            i,
                            SpoolError::Protocol("a commit record in a stream".into()),
                        )
                    })?;
                if t.meta.aborted.contains(&head.subxid) {
                    continue;
                }
                f(&rec, head)?;
            }
        }
        if expected != t.meta.next {
            return Err(corrupt(
                expected,
                SpoolError::Protocol("changes missing from the stored stream".into()),
            ));
        }
        Ok(())
    }

    /// Drops the streamed transaction `xid` (after commit or abort); its data goes at the
    /// next checkpoint.
    pub(crate) fn discard(&mut self, xid: Xid) {
        if self.open == Some(xid) {
            self.open = None;
            self.block.reset(0);
        }
        if let Some(t) = self.txns.remove(&xid) {
            self.doomed.push(t.meta.name);
        }
    }

    /// Drops every streamed transaction (a reconnect: they will be sent again).
    pub(crate) fn clear(&mut self) {
        self.open = None;
        self.block.reset(0);
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
        self.close_block()?;
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
        self.open = None;
        self.block.reset(0);
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
