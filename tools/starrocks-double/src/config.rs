//! Configuration of a double instance (ports, credentials, emulated limits and switches).

use std::path::PathBuf;

/// Configuration of a [`crate::StarRocksDouble`]. Port 0 picks a free port. Everything binds
/// 127.0.0.1 only.
#[derive(Debug, Clone)]
pub struct DoubleConfig {
    /// FE HTTP port (real default 8030).
    pub fe_http_port: u16,
    /// BE HTTP port (real default 8040).
    pub be_http_port: u16,
    /// FE MySQL port (real default 9030).
    pub mysql_port: u16,
    /// Control port (the double's own HTTP API).
    pub control_port: u16,
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
    /// Directory to persist tables and labels in (None = memory only).
    pub data_dir: Option<PathBuf>,
    /// Whether the FE requires `Expect: 100-continue` on HTTP/1.1 stream loads (StarRocks ≥
    /// 3.1.16/3.2.13/3.3.6). Set false to mimic older FEs.
    pub require_expect_continue: bool,
    /// Host written in the FE's 307 Location (the BE's "registered" host).
    pub be_host: String,
    /// BE `streaming_load_max_mb`.
    pub streaming_load_max_mb: u64,
    /// BE `streaming_load_max_batch_size_mb` (JSON body limit without `ignore_json_size`).
    pub json_max_mb: u64,
    /// FE `max_running_txn_num_per_db`.
    pub max_running_txn_num_per_db: usize,
    /// FE `label_keep_max_second`.
    pub label_keep_max_second: u64,
    /// Use the pre-3.x key `StreamLoadPutTimeMs` instead of `StreamLoadPlanTimeMs`.
    pub legacy_put_time_key: bool,
    /// Version returned by `current_version()`.
    pub version: String,
    /// Benchmark mode: Stream Load bodies are counted, not parsed row by row (see
    /// `stream_load::fast`); rows are not stored, only counted per table
    /// ([`crate::StarRocksDouble::loaded_rows`]). Auth, FE 307, headers, labels (dedup),
    /// faults other than the row faults, and the MySQL subset work as usual.
    pub fast_loads: bool,
}

impl Default for DoubleConfig {
    fn default() -> Self {
        DoubleConfig {
            fe_http_port: 0,
            be_http_port: 0,
            mysql_port: 0,
            control_port: 0,
            user: "root".into(),
            password: String::new(),
            data_dir: None,
            require_expect_continue: true,
            be_host: "127.0.0.1".into(),
            streaming_load_max_mb: 10240,
            json_max_mb: 100,
            max_running_txn_num_per_db: 1000,
            label_keep_max_second: 259_200,
            legacy_put_time_key: false,
            version: "3.3.5-starrocks-double".into(),
            fast_loads: false,
        }
    }
}
