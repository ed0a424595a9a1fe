//! Errors of the spool. Corruption always names the sequence number (invariant 9); a full
//! disk is its own variant so the writer can treat it as "full, retry later", never as
//! corruption.

use std::io;
use std::path::PathBuf;

use super::storage::StoreError;

/// Everything that can go wrong in the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A stored record failed its CRC or could not be decoded. Never skipped.
    #[error("spool record at sequence {seq} is corrupt: {reason}")]
    Corrupt { seq: u64, reason: String },
    /// The spool's bookkeeping (meta) is unreadable.
    #[error("spool meta entry {key:?} is corrupt: {reason}")]
    CorruptMeta { key: String, reason: String },
    /// The directory holds a spool of a format this build does not know.
    #[error(
        "spool at {dir} has format version {found}; this build reads version {supported} only \
         (drain it with the version that wrote it, or move it away)"
    )]
    UnsupportedFormat {
        dir: PathBuf,
        found: u32,
        supported: u32,
    },
    /// Another process (usually the running daemon) holds the spool open.
    #[error("spool at {dir} is locked by another process (is the daemon running?)")]
    Locked { dir: PathBuf },
    /// The filesystem is full (ENOSPC/EDQUOT). Nothing was lost: retry after space is freed.
    #[error("disk full while {context}: {source}")]
    DiskFull {
        context: String,
        #[source]
        source: io::Error,
    },
    /// Any other storage (sled or filesystem) failure.
    #[error("spool storage error while {context}: {message}")]
    Storage { context: String, message: String },
    /// A filesystem error outside sled.
    #[error("I/O error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// The event sequence broke the pgoutput protocol (e.g. a change outside a transaction).
    #[error("replication protocol violation seen by the spool: {0}")]
    Protocol(String),
    /// A record refers to a relation version the spool does not hold.
    #[error("relation {id} version {version} is not in the spool")]
    UnknownRelation { id: u32, version: u32 },
    /// `mark_loaded` must land on a durable commit record.
    #[error("cannot mark sequence {seq} loaded: {reason}")]
    BadLoadedMark { seq: u64, reason: String },
}

impl SpoolError {
    /// True when the error means "no space now, try again later" (the writer pauses).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, SpoolError::DiskFull { .. })
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        let context = context.into();
        if is_enospc(&source) {
            SpoolError::DiskFull { context, source }
        } else {
            SpoolError::Io { context, source }
        }
    }

    /// A storage failure, with what the spool was doing.
    pub(crate) fn store(context: impl Into<String>, e: StoreError) -> Self {
        let context = context.into();
        match e {
            StoreError::DiskFull(source) => SpoolError::DiskFull { context, source },
            StoreError::Locked { path } => SpoolError::Locked {
                // Every database lives directly in the spool directory.
                dir: path.parent().map(|p| p.to_path_buf()).unwrap_or(path),
            },
            StoreError::Io(source) => SpoolError::Io { context, source },
            StoreError::Other(message) => SpoolError::Storage { context, message },
        }
    }
}

/// ENOSPC or EDQUOT, possibly wrapped by sled in an `Other` error with the text only.
pub(crate) fn is_enospc(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || e.kind() == io::ErrorKind::StorageFull
        || e.to_string().contains("No space left on device")
}

pub type Result<T, E = SpoolError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_is_disk_full_not_corruption() {
        let e = SpoolError::io("appending", io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(e.is_disk_full());
        let e = SpoolError::store(
            "flushing",
            StoreError::from_io(io::Error::from_raw_os_error(libc::ENOSPC)),
        );
        assert!(e.is_disk_full());
        let e = SpoolError::io("reading", io::Error::from_raw_os_error(libc::EIO));
        assert!(!e.is_disk_full());
    }
}
