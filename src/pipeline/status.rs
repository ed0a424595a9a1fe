//! What the loader reports while it works: its stage, marks, retries and per-table
//! counters. The loader publishes it on a watch channel; the lifecycle and the control
//! plane only read it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::core::Lsn;

/// What the loader is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LoaderStage {
    /// Waiting for durable records.
    #[default]
    Idle,
    /// Loading a window.
    Loading,
    /// A load (or a target check) failed transiently and is retried.
    Retrying,
    /// Paused by a control request.
    Paused,
    /// Stopped (shutdown).
    Stopped,
    /// Drained: everything durable was loaded (drain request).
    Drained,
    /// Stopped on a permanent error.
    Failed,
}

impl LoaderStage {
    /// The stage as shown in Status, metrics and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            LoaderStage::Idle => "idle",
            LoaderStage::Loading => "loading",
            LoaderStage::Retrying => "retrying",
            LoaderStage::Paused => "paused",
            LoaderStage::Stopped => "stopped",
            LoaderStage::Drained => "drained",
            LoaderStage::Failed => "failed",
        }
    }
}

impl std::fmt::Display for LoaderStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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
    pub stage: LoaderStage,
    pub loaded_seq: u64,
    pub confirmed_lsn: Lsn,
    pub retries: u64,
    pub last_error: Option<String>,
    /// Keyed by target table name.
    pub tables: BTreeMap<String, TableCounters>,
}
