//! In-progress streamed transactions (pgoutput protocol v2), kept on disk by xid until
//! Stream Commit (then their stored records are moved into the log, as they are, as one
//! contiguous transaction) or Stream Abort (dropped). Each transaction is a chain of chunk
//! databases under `<spool>/streams/` (`xid-<xid>-<n>-<first change index>`), each
//! holding blocks (like the log's, keyed by the index of their first change) up to
//! the log's segment size (`SpoolOptions::segment_bytes`); only the chunk being written is open. sled keeps every value written
//! to an open database in memory, so this is what keeps memory flat whatever the size of
//! a streamed transaction (invariant 10). Keeps invariant 4 (loadable only at Stream
//! Commit). Never made durable: after a crash or a reconnect PostgreSQL streams these
//! transactions again from their start. Dropping data is deferred to the writer's next
//! checkpoint, so rolling back to the last checkpoint (after a full disk) always finds
//! what the replayed events need.

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

/// What the writer knows of one streamed transaction (everything but its tree handle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamMeta {
    name: String,
    next: u64,
    pub bytes: u64,
    pub changes: u64,
    aborted: HashSet<Xid>,
    pub rels: BTreeSet<(RelationId, u32)>,
    /// First change index of each chunk, in order; the last one is written to.
    chunks: Vec<u64>,
    /// Bytes of blocks in the last chunk.
    chunk_bytes: u64,
}

/// The chunk being written (its tree is dropped before its database).
struct OpenChunk {
    first: u64,
    tree: Box<dyn Tree>,
    db: Box<dyn Database>,
}

pub(crate) struct StreamTxn {
    pub meta: StreamMeta,
    open: Option<OpenChunk>,
}

/// The streams' state at a checkpoint (see `StreamStore::restore`).
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamSnapshot {
    txns: BTreeMap<Xid, StreamMeta>,
    counter: u64,
}

pub(crate) struct StreamStore {
    store: Option<Arc<dyn Store>>,
    /// `<spool>/streams`: the chunk databases.
    dir: PathBuf,
    cache_bytes: u64,
    /// Bytes of blocks per chunk.
    chunk_bytes: u64,
    pub txns: BTreeMap<Xid, StreamTxn>,
    /// Makes chunk names unique, so a dropped (deferred) chunk never meets a new one.
    counter: u64,
    /// Chunk databases to remove at the next checkpoint.
    doomed: Vec<PathBuf>,
    /// The transaction whose block is being filled (`block`).
    open: Option<Xid>,
    block: BlockBuilder,
    /// Written since the last checkpoint.
    dirty: bool,
}

impl StreamStore {
    /// A fresh store; whatever a previous run left in `<dir>/streams` is discarded.
    pub(crate) fn open(
        store: Arc<dyn Store>,
        spool_dir: &Path,
        cache_bytes: u64,
        chunk_bytes: u64,
    ) -> Result<Self> {
        let dir = spool_dir.join("streams");
        if store.exists(&dir) {
            remove(store.as_ref(), &dir)?;
        }
        Ok(StreamStore {
            store: Some(store),
            dir,
            cache_bytes,
            chunk_bytes,
            txns: BTreeMap::new(),
            counter: 0,
            doomed: Vec::new(),
            open: None,
            block: BlockBuilder::new(0),
            dirty: false,
        })
    }

    /// A placeholder with nothing open (used while the real store is borrowed).
    pub(crate) fn empty() -> Self {
        StreamStore {
            store: None,
            dir: PathBuf::new(),
            cache_bytes: 0,
            chunk_bytes: 0,
            txns: BTreeMap::new(),
            counter: 0,
            doomed: Vec::new(),
            open: None,
            block: BlockBuilder::new(0),
            dirty: false,
        }
    }

    fn store(&self) -> Result<&Arc<dyn Store>> {
        self.store.as_ref().ok_or_else(|| SpoolError::Storage {
            context: "using the streams database".into(),
            message: "not available".into(),
        })
    }

    fn chunk_path(dir: &Path, meta: &StreamMeta, first: u64) -> PathBuf {
        dir.join(format!("{}-{first:020}", meta.name))
    }

    /// Opens the chunk database of `meta` starting at change `first`.
    fn open_chunk(&self, meta: &StreamMeta, first: u64) -> Result<OpenChunk> {
        let store = self.store()?;
        store
            .create_dir_all(&self.dir)
            .map_err(|e| SpoolError::store("creating the streams directory", e))?;
        let db = store
            .open_log(&Self::chunk_path(&self.dir, meta, first), self.cache_bytes)
            .map_err(|e| SpoolError::store("opening a streamed transaction's chunk", e))?;
        let tree = db
            .tree(super::storage::DEFAULT_TREE)
            .map_err(|e| SpoolError::store("opening a streamed transaction's chunk", e))?;
        Ok(OpenChunk { first, tree, db })
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
                        chunks: Vec::new(),
                        chunk_bytes: 0,
                    },
                    open: None,
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
        if self.block.is_full() {
            self.close_block()?;
        }
        Ok(len)
    }

    /// Writes the block being filled to its transaction's last chunk (not flushed),
    /// starting a new chunk when the last one is full (the full one is handed to the OS
    /// and closed: its values leave memory).
    pub(crate) fn close_block(&mut self) -> Result<()> {
        let Some(xid) = self.open.take() else {
            return Ok(());
        };
        if self.block.is_empty() {
            return Ok(());
        }
        let first = self.block.first_seq;
        let Some(mut txn) = self.txns.remove(&xid) else {
            self.block.reset(0);
            return Ok(());
        };
        let r = self.write_block(&mut txn, first);
        self.txns.insert(xid, txn);
        self.block.reset(0);
        r
    }

    fn write_block(&mut self, txn: &mut StreamTxn, first: u64) -> Result<()> {
        let full = txn.meta.chunks.is_empty() || txn.meta.chunk_bytes >= self.chunk_bytes;
        if full {
            if let Some(c) = txn.open.take() {
                c.db.flush()
                    .map_err(|e| SpoolError::store("flushing a streamed transaction's chunk", e))?;
            }
            let chunk = self.open_chunk(&txn.meta, first)?;
            txn.meta.chunks.push(first);
            txn.meta.chunk_bytes = 0;
            txn.open = Some(chunk);
        } else if txn.open.is_none() {
            let last = txn.meta.chunks.last().copied().unwrap_or(first);
            txn.open = Some(self.open_chunk(&txn.meta, last)?);
        }
        let data = self.block.finish();
        let len = data.len() as u64;
        if let Some(c) = &txn.open {
            c.tree
                .insert(&seq_key(first), data)
                .map_err(|e| SpoolError::store("appending to a streamed transaction", e))?;
        }
        txn.meta.chunk_bytes += len;
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
        for &chunk_first in &t.meta.chunks {
            // The open chunk is read through its handle; the others are opened in turn.
            let opened;
            let tree: &dyn Tree = match &t.open {
                Some(c) if c.first == chunk_first => c.tree.as_ref(),
                _ => {
                    opened = self.open_chunk(&t.meta, chunk_first)?;
                    opened.tree.as_ref()
                }
            };
            for kv in tree.range(Bound::Unbounded, Bound::Excluded(&end[..])) {
                let (k, v) =
                    kv.map_err(|e| SpoolError::store("reading a streamed transaction", e))?;
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
            self.doom(t);
        }
    }

    /// Its chunks go at the next checkpoint (closed now).
    fn doom(&mut self, t: StreamTxn) {
        let StreamTxn { meta, open } = t;
        drop(open);
        for first in &meta.chunks {
            self.doomed.push(Self::chunk_path(&self.dir, &meta, *first));
        }
    }

    /// Drops every streamed transaction (a reconnect: they will be sent again).
    pub(crate) fn clear(&mut self) {
        self.open = None;
        self.block.reset(0);
        for (_, t) in std::mem::take(&mut self.txns) {
            self.doom(t);
        }
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
        for t in self.txns.values() {
            if let Some(c) = &t.open {
                c.db.flush()
                    .map_err(|e| SpoolError::store("flushing the streams database", e))?;
            }
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
            counter: self.counter,
        }
    }

    /// After a checkpoint: removes the chunks of what was discarded before it. Failures
    /// are only logged (this is garbage collection; it is tried again at the next
    /// checkpoint).
    pub(crate) fn collect_garbage(&mut self) {
        let Some(store) = self.store.clone() else {
            self.doomed.clear();
            return;
        };
        while let Some(path) = self.doomed.pop() {
            if let Err(e) = remove(store.as_ref(), &path) {
                warn!(error = %e, chunk = %path.display(), "could not remove a finished streamed transaction");
                self.doomed.push(path);
                return;
            }
        }
    }

    /// Rolls back to `snap` after a storage error: closes everything, cuts each open
    /// transaction's last chunk back to what it held at the snapshot and removes every
    /// other chunk.
    pub(crate) fn restore(&mut self, snap: &StreamSnapshot) -> Result<()> {
        self.open = None;
        self.block.reset(0);
        self.txns.clear();
        self.doomed.clear();
        self.counter = snap.counter;
        self.dirty = false;
        let store = self.store()?.clone();
        if snap.txns.is_empty() {
            if store.exists(&self.dir) {
                remove(store.as_ref(), &self.dir)?;
            }
            return Ok(());
        }
        let dir = self.dir.clone();
        let keep: BTreeMap<PathBuf, (&StreamMeta, u64)> = snap
            .txns
            .values()
            .flat_map(|m| {
                let dir = &dir;
                m.chunks
                    .iter()
                    .map(move |f| (Self::chunk_path(dir, m, *f), (m, *f)))
            })
            .collect();
        let names = if store.exists(&self.dir) {
            store
                .list(&self.dir)
                .map_err(|e| SpoolError::store("listing streamed transactions", e))?
        } else {
            Vec::new()
        };
        for name in names {
            let path = self.dir.join(&name);
            match keep.get(&path) {
                None => remove(store.as_ref(), &path)?,
                Some((meta, first)) if meta.chunks.last() == Some(first) => {
                    let c = self.open_chunk(meta, *first)?;
                    let start = seq_key(meta.next);
                    let tail: Vec<Vec<u8>> = c
                        .tree
                        .range(Bound::Included(&start[..]), Bound::Unbounded)
                        .map(|kv| kv.map(|(k, _)| k))
                        .collect::<std::result::Result<_, _>>()
                        .map_err(|e| SpoolError::store("reading a streamed transaction", e))?;
                    for k in tail {
                        c.tree.remove(&k).map_err(|e| {
                            SpoolError::store("cutting back a streamed transaction", e)
                        })?;
                    }
                    c.db.flush()
                        .map_err(|e| SpoolError::store("flushing the streams database", e))?;
                }
                Some(_) => {}
            }
        }
        self.txns = snap
            .txns
            .iter()
            .map(|(xid, meta)| {
                (
                    *xid,
                    StreamTxn {
                        meta: meta.clone(),
                        open: None,
                    },
                )
            })
            .collect();
        Ok(())
    }
}
