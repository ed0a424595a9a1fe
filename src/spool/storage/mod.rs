//! The storage seam under the spool: named databases (the ledger, log segments, the
//! streams store), each holding named ordered trees of byte keys and values. The spool
//! only talks to these traits; [`SledStore`] is the real implementation, [`SimStore`] an
//! in-memory one for tests that can lose unsynced writes (power loss) and fail like a full
//! disk. Contract kept by both: `flush` hands writes to the OS (they survive the handle
//! being reopened and a process crash); only `sync` makes a database's contents and its
//! existence durable (they survive a power loss); `Store::remove` is durable on return.

mod logfile;
mod sim;
mod sled_store;

use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};

pub use sim::{PowerLoss, SimFault, SimStore};
pub use sled_store::SledStore;

/// A key and its value.
pub type KvPair = (Vec<u8>, Vec<u8>);

/// Entries of a range, in key order.
pub type KvIter<'a> = Box<dyn Iterator<Item = Result<KvPair, StoreError>> + 'a>;

/// Name of the default tree of a database (sled's own default tree for [`SledStore`]).
pub const DEFAULT_TREE: &str = "";

/// A storage failure, as the backend saw it. The spool adds what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No space (ENOSPC/EDQUOT). The handle that failed may keep failing until reopened.
    #[error("no space left on the device: {0}")]
    DiskFull(#[source] io::Error),
    /// Another handle (usually another process) holds the database.
    #[error("{} is locked by another handle", path.display())]
    Locked { path: PathBuf },
    /// Any other I/O failure.
    #[error("{0}")]
    Io(#[source] io::Error),
    /// A failure inside the storage engine.
    #[error("{0}")]
    Other(String),
}

impl StoreError {
    /// Classifies an I/O error (ENOSPC and EDQUOT are `DiskFull`).
    pub fn from_io(e: io::Error) -> Self {
        if crate::spool::error::is_enospc(&e) {
            StoreError::DiskFull(e)
        } else {
            StoreError::Io(e)
        }
    }
}

/// An I/O error of `what` on `path`, with both in its message (ENOSPC and EDQUOT are
/// `DiskFull`).
pub(crate) fn io_err(what: &str, path: &Path, e: io::Error) -> StoreError {
    StoreError::from_io(io::Error::new(
        e.kind(),
        format!("{what} {}: {e}", path.display()),
    ))
}

/// Result of a storage call.
pub type StoreResult<T> = Result<T, StoreError>;

/// An atomic group of writes to one tree: all of them or none survive a crash.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), Some(value.into())));
    }

    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), None));
    }

    /// The writes in order: `(key, Some(value))` inserts, `(key, None)` removes.
    pub fn ops(&self) -> &[(Vec<u8>, Option<Vec<u8>>)] {
        &self.ops
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// The "filesystem": where databases live, by path.
pub trait Store: Send + Sync {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> StoreResult<()>;
    /// Names of the entries (databases, files) directly inside `dir`.
    fn list(&self, dir: &Path) -> StoreResult<Vec<String>>;
    /// Whether a database (or anything) exists at `path`.
    fn exists(&self, path: &Path) -> bool;
    /// Opens the database at `path`, creating it if missing. A new database exists
    /// durably only after its first `sync`. One handle per path at a time
    /// (`StoreError::Locked` otherwise).
    fn open(&self, path: &Path, cache_bytes: u64) -> StoreResult<Box<dyn Database>>;
    /// Opens a log database (log segments, streamed-transaction chunks: written once in
    /// key order, read back, removed whole); same contract as [`Store::open`]. The real
    /// store keeps these in append-only files instead of sled.
    fn open_log(&self, path: &Path, cache_bytes: u64) -> StoreResult<Box<dyn Database>> {
        self.open(path, cache_bytes)
    }
    /// Removes the database at `path` (nothing if missing); durable when it returns.
    /// No handle of it may be open.
    fn remove(&self, path: &Path) -> StoreResult<()>;
    /// Bytes used on disk under `dir` (best effort, 0 when unknown).
    fn disk_bytes(&self, dir: &Path) -> u64;
}

/// One open database: a set of named trees.
pub trait Database: Send + Sync {
    /// The tree `name` (created if missing); [`DEFAULT_TREE`] is the default tree.
    fn tree(&self, name: &str) -> StoreResult<Box<dyn Tree>>;
    /// Drops a tree and its contents.
    fn drop_tree(&self, name: &str) -> StoreResult<()>;
    /// Names of the trees besides the default one.
    fn tree_names(&self) -> StoreResult<Vec<String>>;
    /// Hands every write so far to the OS: they survive reopening the database and a
    /// process crash, not a power loss.
    fn flush(&self) -> StoreResult<()>;
    /// Makes every write so far, and the database's existence, durable (power loss).
    fn sync(&self) -> StoreResult<()>;
}

/// An ordered tree of byte keys and values.
pub trait Tree: Send + Sync {
    fn insert(&self, key: &[u8], value: &[u8]) -> StoreResult<()>;
    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>>;
    fn remove(&self, key: &[u8]) -> StoreResult<()>;
    /// Applies every write of `batch` atomically.
    fn apply_batch(&self, batch: &WriteBatch) -> StoreResult<()>;
    /// Entries with keys between the bounds, in key order.
    fn range<'a>(&'a self, from: Bound<&[u8]>, to: Bound<&[u8]>) -> KvIter<'a>;
    /// The entry with the greatest key.
    fn last(&self) -> StoreResult<Option<KvPair>>;
    /// The entry with the greatest key `<= key` (block layouts keyed by first sequence).
    fn floor(&self, key: &[u8]) -> StoreResult<Option<KvPair>>;
    /// Removes every entry.
    fn clear(&self) -> StoreResult<()>;
}

impl dyn Tree + '_ {
    /// Entries whose key starts with `prefix`.
    pub fn scan_prefix<'a>(&'a self, prefix: &'a [u8]) -> KvIter<'a> {
        Box::new(
            self.range(Bound::Included(prefix), Bound::Unbounded)
                .take_while(move |kv| match kv {
                    Ok((k, _)) => k.starts_with(prefix),
                    Err(_) => true,
                }),
        )
    }
}
