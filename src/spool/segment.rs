//! Log segments: the log is split into segments, each a separate database in
//! `<dir>/seg-<first seq>/` holding a `log` tree (first seq of a block → block of records,
//! see `record`) and a `txns` index (first seq of a block → framed list of the commit
//! records in that block, only for blocks that hold commits). A fully loaded segment is removed as a whole,
//! which gives its disk space back at once whatever the engine's own space reclamation
//! does. A segment is durable only after `sync` (contents and its directory entry).

use std::fs;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tracing::warn;

use super::error::{Result, SpoolError};
use super::record::{frame, key_seq, seq_key, unframe, Block, BlockBuilder, CommitRecord};
use super::storage::{Database, Store, Tree};

const PREFIX: &str = "seg-";

pub(crate) fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{first_seq:020}"))
}

/// Segment databases in `dir`, by first sequence.
pub(crate) fn list(store: &dyn Store, dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let names = store
        .list(dir)
        .map_err(|e| SpoolError::store(format!("listing {}", dir.display()), e))?;
    for name in names {
        if let Some(n) = name.strip_prefix(PREFIX) {
            if let Ok(first) = n.parse::<u64>() {
                out.push((first, dir.join(&name)));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Removes a database (durable when it returns).
pub(crate) fn remove(store: &dyn Store, path: &Path) -> Result<()> {
    store
        .remove(path)
        .map_err(|e| SpoolError::store(format!("removing {}", path.display()), e))
}

/// One open segment.
pub(crate) struct Segment {
    pub first_seq: u64,
    pub path: PathBuf,
    pub log: Box<dyn Tree>,
    pub txns: Box<dyn Tree>,
    // Declared last: the trees are dropped before the database.
    db: Box<dyn Database>,
}

impl Segment {
    /// Creates (or opens) the segment starting at `first_seq`.
    pub(crate) fn open(
        store: &dyn Store,
        spool_dir: &Path,
        first_seq: u64,
        cache_bytes: u64,
    ) -> Result<Segment> {
        let path = segment_path(spool_dir, first_seq);
        let db = store
            .open_log(&path, cache_bytes)
            .map_err(|e| SpoolError::store(format!("opening segment {}", path.display()), e))?;
        let log = db
            .tree("log")
            .map_err(|e| SpoolError::store("opening a segment log", e))?;
        let txns = db
            .tree("txns")
            .map_err(|e| SpoolError::store("opening a segment index", e))?;
        Ok(Segment {
            first_seq,
            path,
            log,
            txns,
            db,
        })
    }

    /// Hands the segment's writes to the OS (a checkpoint, not durability).
    pub(crate) fn flush(&self) -> Result<()> {
        self.db
            .flush()
            .map_err(|e| SpoolError::store(format!("flushing {}", self.path.display()), e))
    }

    /// Makes the segment's writes durable (see `storage::Database::sync`).
    pub(crate) fn sync(&self) -> Result<()> {
        self.db
            .sync()
            .map_err(|e| SpoolError::store(format!("syncing {}", self.path.display()), e))
    }

    /// The stored block holding `seq`, if any (the block with the greatest first sequence
    /// not after `seq`, when it reaches `seq`).
    pub(crate) fn block_at(&self, seq: u64) -> Result<Option<Block>> {
        let found = self
            .log
            .floor(&seq_key(seq))
            .map_err(|e| SpoolError::Corrupt {
                seq,
                reason: format!("storage error reading the record: {e}"),
            })?;
        let Some((k, v)) = found else {
            return Ok(None);
        };
        let first = key_seq(&k)?;
        // A damaged block makes every record in it unreadable: the error names the
        // record asked for (and the block).
        let block = Block::parse(first, Bytes::from(v)).map_err(|e| match e {
            SpoolError::Corrupt { seq: s, reason } if s < seq => SpoolError::Corrupt {
                seq,
                reason: format!("{reason} (the block of records from {first} holding it)"),
            },
            other => other,
        })?;
        Ok(block.contains(seq).then_some(block))
    }

    /// The last stored block, if any.
    pub(crate) fn last_block(&self) -> Result<Option<Block>> {
        match self
            .log
            .last()
            .map_err(|e| SpoolError::store("reading a segment's last block", e))?
        {
            Some((k, v)) => Ok(Some(Block::parse(key_seq(&k)?, Bytes::from(v))?)),
            None => Ok(None),
        }
    }

    /// Highest sequence stored in the log, if any.
    pub(crate) fn last_seq(&self) -> Result<Option<u64>> {
        Ok(self.last_block()?.map(|b| b.last_seq()))
    }

    /// The commit records of the block starting at `first` (its index entry).
    pub(crate) fn commits_of(&self, first: u64, value: &[u8]) -> Result<Vec<(u64, CommitRecord)>> {
        unframe(first, value)
    }

    /// Writes a block and, when it holds commits, its index entry (not flushed).
    pub(crate) fn put_block(
        &self,
        block: &mut BlockBuilder,
        commits: &[(u64, CommitRecord)],
    ) -> Result<()> {
        let first = block.first_seq;
        let key = seq_key(first);
        self.log
            .insert(&key, block.finish())
            .map_err(|e| SpoolError::store(format!("appending records from {first}"), e))?;
        if !commits.is_empty() {
            self.txns.insert(&key, &frame(&commits)?).map_err(|e| {
                SpoolError::store(format!("indexing the commits of block {first}"), e)
            })?;
        }
        Ok(())
    }

    /// Removes every record after `seq` (not flushed): later blocks and index entries go,
    /// a block holding `seq` and later records is rewritten without them. Returns the
    /// number of records removed.
    pub(crate) fn truncate_after(&self, seq: u64) -> Result<u64> {
        let mut removed = 0;
        // The block straddling `seq`, if any, is cut first.
        // A damaged block cannot be cut: it stays as it is (reading it fails loudly, and
        // `verify` reports it), so opening the spool still works for inspection.
        let straddling = match self.block_at(seq) {
            Ok(b) => b,
            Err(SpoolError::Corrupt { seq: at, reason }) => {
                warn!(seq = at, %reason, "a damaged block at the end of the log is kept as it is");
                None
            }
            Err(e) => return Err(e),
        };
        if let Some(b) = straddling {
            if b.last_seq() > seq {
                let mut cut = BlockBuilder::new(b.first_seq);
                let mut commits = Vec::new();
                for (s, rec) in b.records_from(b.first_seq) {
                    if s > seq {
                        break;
                    }
                    cut.push_raw(&rec)?;
                }
                let key = seq_key(b.first_seq);
                if let Some(v) = self
                    .txns
                    .get(&key)
                    .map_err(|e| SpoolError::store("reading the commit index", e))?
                {
                    commits = self.commits_of(b.first_seq, &v)?;
                    commits.retain(|(s, _)| *s <= seq);
                }
                if commits.is_empty() {
                    self.txns
                        .remove(&key)
                        .map_err(|e| SpoolError::store("cutting the commit index", e))?;
                }
                self.put_block(&mut cut, &commits)?;
                removed += b.last_seq() - seq;
            }
        }
        let start = seq_key(seq.saturating_add(1));
        for (i, tree) in [&self.log, &self.txns].into_iter().enumerate() {
            let entries: Vec<(Vec<u8>, Vec<u8>)> = tree
                .range(Bound::Included(&start[..]), Bound::Unbounded)
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| SpoolError::store("scanning a segment tail", e))?;
            for (k, v) in entries {
                if i == 0 {
                    removed += Block::parse(key_seq(&k)?, Bytes::from(v))
                        .map(|b| b.count())
                        .unwrap_or(1);
                }
                tree.remove(&k)
                    .map_err(|e| SpoolError::store("removing a segment tail", e))?;
            }
        }
        Ok(removed)
    }
}

/// Total size of the files under `path` (allocated blocks, so sparse files count as used).
pub fn dir_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let Ok(rd) = fs::read_dir(path) else {
        return fs::metadata(path).map(|m| m.blocks() * 512).unwrap_or(0);
    };
    for entry in rd.flatten() {
        let Ok(md) = entry.metadata() else { continue };
        if md.is_dir() {
            total += dir_bytes(&entry.path());
        } else {
            total += md.blocks() * 512;
        }
    }
    total
}
