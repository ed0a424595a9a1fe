//! Log segments: the log is split into segments, each a separate sled database in
//! `<dir>/seg-<first seq>/` holding a `log` tree (seq → framed record) and a `txns` index
//! (commit seq → framed commit record). A fully loaded segment is deleted as a directory,
//! which gives its disk space back at once whatever sled's own space reclamation does.

use std::fs;
use std::path::{Path, PathBuf};

use super::error::{Result, SpoolError};
use super::record::{key_seq, seq_key};

const PREFIX: &str = "seg-";
/// sled's own log segment size (a storage parameter fixed at creation). 8 MiB keeps the
/// blob threshold (segment/4) at 2 MiB so ordinary records stay inside sled's log file.
const SLED_SEGMENT_SIZE: usize = 8 << 20;

pub(crate) fn sled_config(path: &Path, cache_bytes: u64) -> sled::Config {
    sled::Config::new()
        .path(path)
        .cache_capacity(cache_bytes.max(1 << 20))
        // We decide when to flush (group commit); no background flusher thread.
        .flush_every_ms(None)
        .segment_size(SLED_SEGMENT_SIZE)
        .mode(sled::Mode::HighThroughput)
}

/// Opens a sled database, mapping lock failures to `Locked`.
pub(crate) fn open_db(path: &Path, cache_bytes: u64, lock_dir: &Path) -> Result<sled::Db> {
    let mut attempts = 0;
    loop {
        match sled_config(path, cache_bytes).open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                // A handle of ours being dropped on another thread may still hold the lock
                // for a moment; a foreign process holds it for good.
                attempts += 1;
                if attempts > 20 {
                    return Err(SpoolError::Locked {
                        dir: lock_dir.to_path_buf(),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => {
                return Err(SpoolError::sled(
                    format!("opening sled database {}", path.display()),
                    e,
                ))
            }
        }
    }
}

/// fsync a directory so entries created or removed in it survive a power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    let f = fs::File::open(dir)
        .map_err(|e| SpoolError::io(format!("opening {} to fsync it", dir.display()), e))?;
    f.sync_all()
        .map_err(|e| SpoolError::io(format!("fsync of {}", dir.display()), e))
}

pub(crate) fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{first_seq:020}"))
}

/// Segment directories in `dir`, by first sequence.
pub(crate) fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let rd =
        fs::read_dir(dir).map_err(|e| SpoolError::io(format!("listing {}", dir.display()), e))?;
    for entry in rd {
        let entry = entry.map_err(|e| SpoolError::io(format!("listing {}", dir.display()), e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name.strip_prefix(PREFIX) {
            if let Ok(first) = n.parse::<u64>() {
                out.push((first, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Removes a segment directory and makes the removal durable.
pub(crate) fn remove(dir: &Path, path: &Path) -> Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(SpoolError::io(format!("removing {}", path.display()), e)),
    }
    sync_dir(dir)
}

/// One open segment.
pub(crate) struct Segment {
    pub first_seq: u64,
    pub path: PathBuf,
    db: sled::Db,
    pub log: sled::Tree,
    pub txns: sled::Tree,
    db_file: Option<fs::File>,
}

impl Segment {
    /// Creates (or opens) the segment starting at `first_seq`.
    pub(crate) fn open(spool_dir: &Path, first_seq: u64, cache_bytes: u64) -> Result<Segment> {
        let path = segment_path(spool_dir, first_seq);
        let existed = path.exists();
        let db = open_db(&path, cache_bytes, spool_dir)?;
        if !existed {
            sync_dir(spool_dir)?;
        }
        let log = db
            .open_tree("log")
            .map_err(|e| SpoolError::sled("opening a segment log", e))?;
        let txns = db
            .open_tree("txns")
            .map_err(|e| SpoolError::sled("opening a segment index", e))?;
        let db_file = fs::File::open(path.join("db")).ok();
        Ok(Segment {
            first_seq,
            path,
            db,
            log,
            txns,
            db_file,
        })
    }

    /// sled flush, then an fsync of sled's files: sled 0.34.7 syncs its log with
    /// `sync_file_range` (no file-size metadata, no disk cache flush) and never syncs
    /// blob files; see docs/spool.md.
    pub(crate) fn flush(&self) -> Result<()> {
        self.db
            .flush()
            .map_err(|e| SpoolError::sled(format!("flushing {}", self.path.display()), e))?;
        if let Some(f) = &self.db_file {
            f.sync_all()
                .map_err(|e| SpoolError::io(format!("fsync of {}", self.path.display()), e))?;
        }
        let blobs = self.path.join("blobs");
        if let Ok(rd) = fs::read_dir(&blobs) {
            let mut any = false;
            for entry in rd.flatten() {
                any = true;
                if let Ok(f) = fs::File::open(entry.path()) {
                    f.sync_all().map_err(|e| {
                        SpoolError::io(format!("fsync of {}", entry.path().display()), e)
                    })?;
                }
            }
            if any {
                sync_dir(&blobs)?;
            }
        }
        Ok(())
    }

    /// Highest sequence stored in the log, if any.
    pub(crate) fn last_seq(&self) -> Result<Option<u64>> {
        match self
            .log
            .last()
            .map_err(|e| SpoolError::sled("reading a segment's last key", e))?
        {
            Some((k, _)) => Ok(Some(key_seq(&k)?)),
            None => Ok(None),
        }
    }

    /// Removes every log and index entry after `seq` (not flushed).
    pub(crate) fn truncate_after(&self, seq: u64) -> Result<u64> {
        let mut removed = 0;
        for tree in [&self.log, &self.txns] {
            let start = seq_key(seq.saturating_add(1));
            let keys: Vec<sled::IVec> = tree
                .range(start..)
                .keys()
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| SpoolError::sled("scanning a segment tail", e))?;
            for k in keys {
                tree.remove(k)
                    .map_err(|e| SpoolError::sled("removing a segment tail", e))?;
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
