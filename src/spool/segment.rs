//! Log segments: the log is split into segments, each a separate database in
//! `<dir>/seg-<first seq>/` holding a `log` tree (seq → framed record) and a `txns` index
//! (commit seq → framed commit record). A fully loaded segment is removed as a whole,
//! which gives its disk space back at once whatever the engine's own space reclamation
//! does. A segment is durable only after `sync` (contents and its directory entry).

use std::fs;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use super::error::{Result, SpoolError};
use super::record::{key_seq, seq_key};
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
            .open(&path, cache_bytes)
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

    /// Highest sequence stored in the log, if any.
    pub(crate) fn last_seq(&self) -> Result<Option<u64>> {
        match self
            .log
            .last()
            .map_err(|e| SpoolError::store("reading a segment's last key", e))?
        {
            Some((k, _)) => Ok(Some(key_seq(&k)?)),
            None => Ok(None),
        }
    }

    /// Removes every log and index entry after `seq` (not flushed).
    pub(crate) fn truncate_after(&self, seq: u64) -> Result<u64> {
        let mut removed = 0;
        let start = seq_key(seq.saturating_add(1));
        for tree in [&self.log, &self.txns] {
            let keys: Vec<Vec<u8>> = tree
                .range(Bound::Included(&start[..]), Bound::Unbounded)
                .map(|kv| kv.map(|(k, _)| k))
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| SpoolError::store("scanning a segment tail", e))?;
            for k in keys {
                tree.remove(&k)
                    .map_err(|e| SpoolError::store("removing a segment tail", e))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Total size of the files under `path` (allocated blocks, so sparse files count as used).
pub fn dir_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let Ok(rd) = fs::read_dir(path) else { return 0 };
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
