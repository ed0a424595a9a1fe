//! What the control plane sees and steers: a handle on the running daemon's parts.
//!
//! The daemon builds one [`DaemonHandle`]; the gRPC service, the metrics endpoint and
//! the health checks only read it (watch channels, spool stats) and send control
//! requests through it. Nothing here blocks the data path.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::watch;

use crate::connectors::sources::postgres::reader::ReaderStatus;
use crate::core::Lsn;
use crate::spool::{Spool, SpoolStats};

/// Lifecycle of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub enum DaemonState {
    #[default]
    Starting,
    Running,
    Paused,
    /// Reading stopped; the loader empties the spool, then the daemon exits.
    Draining,
    Stopping,
    /// A permanent error stopped the pipeline; spool and slot are kept.
    Failed,
}

impl DaemonState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Draining => "draining",
            Self::Stopping => "stopping",
            Self::Failed => "failed",
        }
    }
}

/// Outcome of a table's last load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct LastLoad {
    pub label: String,
    /// Unix time in milliseconds.
    pub at_unix_ms: u64,
    /// `success`, `already_loaded`, `retrying: <error>`, `failed: <error>`.
    pub outcome: String,
    pub rows: u64,
}

/// Per-target-table counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct TableCounters {
    pub source_table: String,
    pub target_table: String,
    pub rows_upserted: u64,
    pub rows_deleted: u64,
    pub truncates: u64,
    pub loads: u64,
    pub last_load: Option<LastLoad>,
}

/// What the loader is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct LoaderStatus {
    /// `idle`, `loading`, `retrying`, `paused`, `stopped`, `failed`.
    pub stage: String,
    pub loaded_seq: u64,
    pub confirmed_lsn: Lsn,
    pub retries: u64,
    pub last_error: Option<String>,
    /// Keyed by target table name.
    pub tables: BTreeMap<String, TableCounters>,
}

/// The slot as PostgreSQL reports it (polled periodically).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct SlotHealth {
    pub slot_name: String,
    pub exists: bool,
    pub active: bool,
    pub confirmed_flush_lsn: Option<Lsn>,
    pub restart_lsn: Option<Lsn>,
    /// `reserved`, `extended`, `unreserved`, `lost`.
    pub wal_status: Option<String>,
    pub safe_wal_size: Option<i64>,
    /// pg_current_wal_lsn() - confirmed_flush_lsn, in bytes.
    pub lag_bytes: Option<u64>,
    pub server_lsn: Option<Lsn>,
    pub checked_at_unix_ms: u64,
    pub error: Option<String>,
}

/// A control request to the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRequest {
    Pause,
    Resume,
    /// Stop reading, load everything in the spool, confirm, exit.
    DrainAndStop,
    Stop,
}

/// Shared, cheap-to-clone view of the running daemon.
#[derive(Clone)]
pub struct DaemonHandle {
    pub inner: Arc<HandleInner>,
}

pub struct HandleInner {
    pub started_at: SystemTime,
    pub version: &'static str,
    pub slot_name: String,
    pub state: watch::Receiver<DaemonState>,
    pub state_error: watch::Receiver<Option<String>>,
    pub reader: watch::Receiver<ReaderStatus>,
    pub loader: watch::Receiver<LoaderStatus>,
    pub slot: watch::Receiver<SlotHealth>,
    pub spool: Spool,
    /// Control requests go here; the daemon acts on them.
    pub control: tokio::sync::mpsc::Sender<ControlRequest>,
}

impl DaemonHandle {
    pub fn state(&self) -> DaemonState {
        *self.inner.state.borrow()
    }

    pub fn spool_stats(&self) -> SpoolStats {
        self.inner.spool.stats()
    }
}
