//! What the control plane sees and steers: a handle on the running daemon's parts.
//!
//! The daemon builds one [`DaemonHandle`]; the gRPC service, the metrics endpoint and
//! the health checks only read it (watch channels, spool stats) and send control
//! requests through it. The pipeline's views appear once the daemon has started; until
//! then only the lifecycle (state, activity, outages) and the slot poller are there.
//! Nothing here blocks the data path.

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::watch;

use crate::connectors::sources::postgres::reader::ReaderStatus;
use crate::core::Lsn;
use crate::spool::{Spool, SpoolStats};

/// The states and requests are the lifecycle's ([`crate::lifecycle`]); re-exported here
/// for the control plane's users.
pub use crate::lifecycle::{ControlRequest, DaemonState, LifecycleStatus};
/// The loader's status is the loader's ([`crate::pipeline::status`]); re-exported here
/// for the control plane's users.
pub use crate::pipeline::status::{LastLoad, LoaderStage, LoaderStatus, TableCounters};

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

/// Shared, cheap-to-clone view of the running daemon.
#[derive(Clone)]
pub struct DaemonHandle {
    pub inner: Arc<HandleInner>,
}

pub struct HandleInner {
    pub started_at: SystemTime,
    pub version: &'static str,
    pub slot_name: String,
    /// State, activity, permanent error and outages, as the daemon publishes them.
    pub lifecycle: watch::Receiver<LifecycleStatus>,
    /// The running pipeline's views; empty while the daemon is starting.
    pub pipeline: OnceLock<PipelineViews>,
    pub slot: watch::Receiver<SlotHealth>,
    /// Control requests go here; the daemon acts on them.
    pub control: tokio::sync::mpsc::Sender<ControlRequest>,
}

/// What the running pipeline shows: the reader, the loader and the spool.
pub struct PipelineViews {
    pub reader: watch::Receiver<ReaderStatus>,
    pub loader: watch::Receiver<LoaderStatus>,
    pub spool: Spool,
}

impl DaemonHandle {
    pub fn state(&self) -> DaemonState {
        self.inner.lifecycle.borrow().state
    }

    pub fn lifecycle(&self) -> LifecycleStatus {
        self.inner.lifecycle.borrow().clone()
    }

    pub fn pipeline(&self) -> Option<&PipelineViews> {
        self.inner.pipeline.get()
    }

    /// The reader's status (the default one while starting).
    pub fn reader(&self) -> ReaderStatus {
        self.pipeline()
            .map(|p| p.reader.borrow().clone())
            .unwrap_or_default()
    }

    /// The loader's status (the default one while starting).
    pub fn loader(&self) -> LoaderStatus {
        self.pipeline()
            .map(|p| p.loader.borrow().clone())
            .unwrap_or_default()
    }

    /// The spool's figures (none before the spool is open).
    pub fn spool_stats(&self) -> Option<SpoolStats> {
        self.pipeline().map(|p| p.spool.stats())
    }
}
