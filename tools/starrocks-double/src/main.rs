//! The `starrocks-double` binary: starts the double on the given ports and prints the chosen
//! ports as one JSON line on stdout (so a test can spawn it with port 0). A test tool.

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use starrocks_double::{DoubleConfig, StarRocksDouble};

/// StarRocks test double (FE HTTP + BE HTTP + FE MySQL). A test tool, not a database.
#[derive(Debug, Parser)]
#[command(name = "starrocks-double", version)]
struct Args {
    /// FE HTTP port (0 = pick a free one).
    #[arg(long, default_value_t = 8030)]
    fe_http_port: u16,
    /// BE HTTP port (0 = pick a free one).
    #[arg(long, default_value_t = 8040)]
    be_http_port: u16,
    /// FE MySQL port (0 = pick a free one).
    #[arg(long, default_value_t = 9030)]
    mysql_port: u16,
    /// Control API port (0 = pick a free one).
    #[arg(long, default_value_t = 8099)]
    control_port: u16,
    /// User name.
    #[arg(long, default_value = "root")]
    user: String,
    /// Password.
    #[arg(long, default_value = "")]
    password: String,
    /// Directory to persist tables and labels in.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Mimic an FE older than 3.1.16/3.2.13/3.3.6 (no `Expect: 100-continue` check).
    #[arg(long)]
    no_require_expect: bool,
    /// Use the pre-3.x key `StreamLoadPutTimeMs` in replies.
    #[arg(long)]
    legacy_put_time_key: bool,
    /// FE `max_running_txn_num_per_db`.
    #[arg(long, default_value_t = 1000)]
    max_running_txn_num_per_db: usize,
    /// Benchmark mode: count the rows of Stream Load bodies instead of parsing and storing
    /// them (the control API's `/tables` shows `loaded_rows`).
    #[arg(long)]
    fast_loads: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let a = Args::parse();
    let config = DoubleConfig {
        fe_http_port: a.fe_http_port,
        be_http_port: a.be_http_port,
        mysql_port: a.mysql_port,
        control_port: a.control_port,
        user: a.user,
        password: a.password,
        data_dir: a.data_dir,
        require_expect_continue: !a.no_require_expect,
        legacy_put_time_key: a.legacy_put_time_key,
        max_running_txn_num_per_db: a.max_running_txn_num_per_db,
        fast_loads: a.fast_loads,
        ..DoubleConfig::default()
    };
    let sr = match StarRocksDouble::start(config).await {
        Ok(sr) => sr,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return std::process::ExitCode::FAILURE;
        }
    };
    let line = match serde_json::to_string(&sr.ports()) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot render ports");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
        tracing::warn!("stdout closed; serving anyway");
    }
    drop(out);
    if let Err(e) = tokio::signal::ctrl_c().await {
        tracing::error!(error = %e, "cannot wait for ctrl-c");
    }
    sr.stop().await;
    std::process::ExitCode::SUCCESS
}
