//! The real storage: one sled (=0.34.7) database per path. sled's flush only hands data
//! to the OS on Linux (`sync_file_range`, no fsync; blob files never synced), so `sync`
//! adds real fsyncs of sled's files, and of the directories that hold a new database, as
//! docs/spool.md explains. Removing a database fsyncs its parent directory.

use std::fs;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{
    io_err, Database, KvIter, KvPair, Store, StoreError, StoreResult, Tree, WriteBatch,
    DEFAULT_TREE,
};

/// sled's own log segment size for a new database (a storage parameter fixed at
/// creation: an existing database is opened with the size it was created with). It is
/// also the size of each of sled's in-memory IO buffers, several per open database, so it
/// weighs on RSS: 2 MiB rather than 8 (−6 MiB per buffer; measured in
/// docs/performance.md). The blob threshold (segment/4) is 512 KiB, above a spool block
/// (128 KiB), so ordinary blocks stay inside sled's log file.
const SLED_SEGMENT_SIZE: usize = 2 << 20;

/// The segment size an existing database was created with (sled refuses another), from
/// the `segment_size: N` line of its `conf` file (text lines, then a binary crc).
fn created_segment_size(path: &Path) -> Option<usize> {
    let conf = fs::read(path.join("conf")).ok()?;
    String::from_utf8_lossy(&conf)
        .lines()
        .find_map(|l| l.strip_prefix("segment_size:"))
        .and_then(|v| v.trim().parse().ok())
}

/// How long an open waits for a handle of this process, being dropped on another thread,
/// to release sled's lock (a foreign process holds it for good).
const LOCK_WAIT: Duration = Duration::from_millis(500);

/// The real store: sled databases in directories of the local filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct SledStore;

fn sled_err(e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(io) => StoreError::from_io(io),
        other => StoreError::Other(other.to_string()),
    }
}

/// fsync of a directory, so entries created or removed in it survive a power loss.
pub(super) fn sync_dir(dir: &Path) -> StoreResult<()> {
    let f = fs::File::open(dir).map_err(|e| io_err("opening directory", dir, e))?;
    f.sync_all()
        .map_err(|e| io_err("fsync of directory", dir, e))
}

fn sync_file(path: &Path) -> StoreResult<()> {
    match fs::File::open(path) {
        Ok(f) => f.sync_all().map_err(|e| io_err("fsync of", path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("opening", path, e)),
    }
}

impl Store for SledStore {
    fn create_dir_all(&self, dir: &Path) -> StoreResult<()> {
        fs::create_dir_all(dir).map_err(|e| io_err("creating", dir, e))
    }

    fn list(&self, dir: &Path) -> StoreResult<Vec<String>> {
        let rd = fs::read_dir(dir).map_err(|e| io_err("listing", dir, e))?;
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| io_err("listing", dir, e))?;
            if let Some(name) = entry.file_name().to_str() {
                out.push(name.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn open(&self, path: &Path, cache_bytes: u64) -> StoreResult<Box<dyn Database>> {
        let created = !path.exists();
        let segment_size = created_segment_size(path).unwrap_or(SLED_SEGMENT_SIZE);
        let started = std::time::Instant::now();
        let db = loop {
            let cfg = sled::Config::new()
                .path(path)
                .cache_capacity(cache_bytes.max(1 << 20))
                // The spool decides when to flush (group commit): no background flusher.
                .flush_every_ms(None)
                .segment_size(segment_size)
                .mode(sled::Mode::HighThroughput);
            match cfg.open() {
                Ok(db) => break db,
                Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                    if started.elapsed() > LOCK_WAIT {
                        return Err(StoreError::Locked {
                            path: path.to_path_buf(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(sled_err(e)),
            }
        };
        Ok(Box::new(SledDb {
            db_file: fs::File::open(path.join("db")).ok(),
            path: path.to_path_buf(),
            db,
            // A database that existed was synced by the run that created it (the spool
            // removes, at open, a segment a crashed run never synced: it lies past the
            // durable mark).
            dirs_synced: AtomicBool::new(!created),
        }))
    }

    /// A log database is an append-only file (`logfile.rs`); a directory at `path` is a
    /// segment written by an earlier build as a sled database, opened as such.
    fn open_log(&self, path: &Path, cache_bytes: u64) -> StoreResult<Box<dyn Database>> {
        if path.is_dir() {
            return self.open(path, cache_bytes);
        }
        Ok(Box::new(super::logfile::LogFileDb::open(path)?))
    }

    fn remove(&self, path: &Path) -> StoreResult<()> {
        let removed = if path.is_dir() {
            fs::remove_dir_all(path)
        } else {
            fs::remove_file(path)
        };
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("removing", path, e)),
        }
        match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
            _ => Ok(()),
        }
    }

    fn disk_bytes(&self, dir: &Path) -> u64 {
        crate::spool::segment::dir_bytes(dir)
    }
}

struct SledDb {
    path: PathBuf,
    db: sled::Db,
    db_file: Option<fs::File>,
    /// The database directory and its entry in the parent are known to be durable.
    dirs_synced: AtomicBool,
}

impl Database for SledDb {
    fn tree(&self, name: &str) -> StoreResult<Box<dyn Tree>> {
        let tree = if name == DEFAULT_TREE {
            (*self.db).clone()
        } else {
            self.db.open_tree(name).map_err(sled_err)?
        };
        Ok(Box::new(SledTree(tree)))
    }

    fn drop_tree(&self, name: &str) -> StoreResult<()> {
        self.db.drop_tree(name).map_err(sled_err).map(|_| ())
    }

    fn tree_names(&self) -> StoreResult<Vec<String>> {
        Ok(self
            .db
            .tree_names()
            .into_iter()
            .filter(|n| n.as_ref() != b"__sled__default")
            .map(|n| String::from_utf8_lossy(&n).into_owned())
            .collect())
    }

    fn flush(&self) -> StoreResult<()> {
        self.db.flush().map_err(sled_err).map(|_| ())
    }

    /// sled flush, then fdatasync of sled's log file, fsync of its blob files, and (at
    /// the first sync of a database this handle created) of sled's other files and the
    /// directories holding them.
    fn sync(&self) -> StoreResult<()> {
        injected_disk_full()?;
        self.db.flush().map_err(sled_err)?;
        if let Some(f) = &self.db_file {
            // fdatasync: the data and the file size, without a journal commit for mtime.
            f.sync_data()
                .map_err(|e| io_err("fdatasync of", &self.path.join("db"), e))?;
        }
        let blobs = self.path.join("blobs");
        if let Ok(rd) = fs::read_dir(&blobs) {
            let mut any = false;
            for entry in rd.flatten() {
                any = true;
                sync_file(&entry.path())?;
            }
            if any {
                sync_dir(&blobs)?;
            }
        }
        if !self.dirs_synced.load(Ordering::Acquire) {
            sync_file(&self.path.join("conf"))?;
            if blobs.exists() {
                sync_dir(&blobs)?;
            }
            sync_dir(&self.path)?;
            if let Some(parent) = self.path.parent() {
                if !parent.as_os_str().is_empty() {
                    sync_dir(parent)?;
                }
            }
            self.dirs_synced.store(true, Ordering::Release);
        }
        Ok(())
    }
}

/// The `spool::disk-full` failpoint (tests and the chaos tool): the write fails with
/// ENOSPC, as a full disk would.
#[inline]
pub(super) fn injected_disk_full() -> StoreResult<()> {
    match crate::failpoints::error(crate::failpoints::SPOOL_DISK_FULL) {
        Some(_) => Err(StoreError::DiskFull(std::io::Error::from_raw_os_error(
            libc::ENOSPC,
        ))),
        None => Ok(()),
    }
}

struct SledTree(sled::Tree);

fn pair(kv: sled::Result<(sled::IVec, sled::IVec)>) -> StoreResult<KvPair> {
    kv.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(sled_err)
}

fn owned(b: Bound<&[u8]>) -> Bound<Vec<u8>> {
    match b {
        Bound::Included(k) => Bound::Included(k.to_vec()),
        Bound::Excluded(k) => Bound::Excluded(k.to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl Tree for SledTree {
    fn insert(&self, key: &[u8], value: &[u8]) -> StoreResult<()> {
        injected_disk_full()?;
        self.0.insert(key, value).map_err(sled_err).map(|_| ())
    }

    fn get(&self, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        self.0
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(sled_err)
    }

    fn remove(&self, key: &[u8]) -> StoreResult<()> {
        self.0.remove(key).map_err(sled_err).map(|_| ())
    }

    fn apply_batch(&self, batch: &WriteBatch) -> StoreResult<()> {
        let mut b = sled::Batch::default();
        for (k, v) in batch.ops() {
            match v {
                Some(v) => b.insert(k.as_slice(), v.as_slice()),
                None => b.remove(k.as_slice()),
            }
        }
        self.0.apply_batch(b).map_err(sled_err)
    }

    fn range<'a>(&'a self, from: Bound<&[u8]>, to: Bound<&[u8]>) -> KvIter<'a> {
        Box::new(self.0.range((owned(from), owned(to))).map(pair))
    }

    fn last(&self) -> StoreResult<Option<KvPair>> {
        self.0
            .last()
            .map_err(sled_err)
            .map(|o| o.map(|(k, v)| (k.to_vec(), v.to_vec())))
    }

    fn floor(&self, key: &[u8]) -> StoreResult<Option<KvPair>> {
        self.0
            .range(..=key)
            .next_back()
            .transpose()
            .map_err(sled_err)
            .map(|o| o.map(|(k, v)| (k.to_vec(), v.to_vec())))
    }

    fn clear(&self) -> StoreResult<()> {
        self.0.clear().map_err(sled_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A segment written by a build that created databases with another sled segment
    /// size (8 MiB before) still opens: sled refuses a changed size ("cannot change the io
    /// buffer size across restarts"), so the store must open it with the size it has.
    #[test]
    fn a_database_created_with_another_segment_size_still_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        {
            let old = sled::Config::new()
                .path(&path)
                .segment_size(8 << 20)
                .open()
                .unwrap();
            old.open_tree("log").unwrap().insert(b"k", b"v").unwrap();
            old.flush().unwrap();
        }
        assert_ne!(
            SLED_SEGMENT_SIZE,
            8 << 20,
            "the test needs a different size"
        );
        assert_eq!(created_segment_size(&path), Some(8 << 20));
        let db = SledStore.open(&path, 1 << 20).unwrap();
        let log = db.tree("log").unwrap();
        assert_eq!(log.get(b"k").unwrap(), Some(b"v".to_vec()));
    }

    #[test]
    fn a_new_database_gets_the_current_segment_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let db = SledStore.open(&path, 1 << 20).unwrap();
        db.sync().unwrap();
        assert_eq!(created_segment_size(&path), Some(SLED_SEGMENT_SIZE));
    }
}
