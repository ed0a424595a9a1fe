//! `dbmazz-bench`: drains the same PostgreSQL backlog with pg_recvlogical (the limit) and
//! with `dbmazz run` into the StarRocks double in fast mode, side by side in one run, and
//! prints wall time, × limit, CPU per row, peak RSS, the busiest thread and the spool's disk.
//! Speed is measured here, never asserted in tests. See docs/performance.md.

mod consumer;
mod error;
mod metrics;
mod pg;
mod procfs;
mod report;
mod run;
mod stats;
mod steady;
mod tables;
mod workload;

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::error::{BenchError, Context as _, Result};
use crate::workload::Workload;

/// Catch-up benchmark: dbmazz against pg_recvlogical on the same backlog.
#[derive(Debug, Parser)]
#[command(name = "dbmazz-bench", version)]
struct Cli {
    /// Workloads to run (comma-separated); all by default.
    #[arg(long, value_delimiter = ',', value_enum)]
    workload: Vec<Workload>,
    /// Repetitions of each workload (medians are reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Scales the backlogs (transactions; rows of the one big transaction). 0.1 for a
    /// quick try.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// The dbmazz binary (a release build: `cargo build --release -p dbmazz`). Default:
    /// `$CARGO_TARGET_DIR/release/dbmazz`, else `target/release/dbmazz`.
    #[arg(long)]
    dbmazz: Option<PathBuf>,
    /// Extra environment for `dbmazz run` (`KEY=VALUE`, repeatable), e.g. FLUSH_BYTES=16MiB.
    #[arg(long = "dbmazz-env", value_parser = parse_kv)]
    dbmazz_env: Vec<(String, String)>,
    /// PostgreSQL's logical_decoding_work_mem (when protocol 2 streams a transaction).
    #[arg(long, default_value = "64MB")]
    decoding_work_mem: String,
    /// Where the work directories (spools, logs) go.
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    work_dir: PathBuf,
    /// Keep each run's work directory (daemon logs, spool).
    #[arg(long)]
    keep: bool,
    /// Give up on one drain after this many seconds.
    #[arg(long, default_value_t = 1800)]
    drain_timeout_s: u64,
    /// Steady workload: transactions per second (one row each).
    #[arg(long, default_value_t = 5000)]
    steady_rate: u64,
    /// Steady workload: seconds of traffic.
    #[arg(long, default_value_t = 30)]
    steady_secs: u64,
    /// Tables workload: how many tables.
    #[arg(long, default_value_t = 200)]
    tables: usize,
    /// Print the results as JSON (every run and the medians) instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write the JSON to this file (the table still goes to stdout).
    #[arg(long)]
    json_out: Option<PathBuf>,
}

fn parse_kv(s: &str) -> std::result::Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

fn default_dbmazz() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("release")
        .join("dbmazz")
}

/// Path, size and modification time of the binary; an error when it is missing.
fn describe_binary(path: &std::path::Path) -> Result<serde_json::Value> {
    let meta = std::fs::metadata(path).ctx(format!(
        "the dbmazz binary {} (build it with `cargo build --release -p dbmazz` or pass --dbmazz)",
        path.display()
    ))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let text = path.display().to_string();
    Ok(serde_json::json!({
        "path": std::fs::canonicalize(path).map(|p| p.display().to_string()).unwrap_or(text.clone()),
        "bytes": meta.len(),
        "mtime_unix": mtime,
        "release_path": text.contains("/release/"),
    }))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "dbmazz_bench=info,warn".into()),
        )
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(bench(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn bench(cli: Cli) -> Result<()> {
    let dbmazz = cli.dbmazz.clone().unwrap_or_else(default_dbmazz);
    let binary = describe_binary(&dbmazz)?;
    tracing::info!(%binary, "dbmazz binary");
    if binary["release_path"] != true {
        tracing::warn!(
            "{} is not under a release/ directory: a debug build (or one with failpoints) measures nothing useful",
            dbmazz.display()
        );
    }
    if cli.runs == 0 || cli.scale.is_nan() || cli.scale <= 0.0 {
        return Err(BenchError::Other(
            "--runs must be at least 1 and --scale above 0".into(),
        ));
    }
    let opts = run::Options {
        dbmazz,
        dbmazz_env: cli.dbmazz_env.clone(),
        decoding_work_mem: cli.decoding_work_mem.clone(),
        work_root: cli.work_dir.clone(),
        drain_timeout: Duration::from_secs(cli.drain_timeout_s),
        keep: cli.keep,
    };
    let workloads = if cli.workload.is_empty() {
        Workload::ALL.to_vec()
    } else {
        cli.workload.clone()
    };
    let mut out = std::io::stdout().lock();
    let mut all_lines = Vec::new();
    let mut results = Vec::new();
    let mut steady_results = Vec::new();
    let mut tables_results = Vec::new();
    for w in workloads {
        if w == Workload::Steady {
            let mut runs = Vec::new();
            for i in 0..cli.runs {
                tracing::info!(workload = ?w, run = i + 1, of = cli.runs, "run");
                runs.push(steady::run_once(&opts, cli.steady_rate, cli.steady_secs).await?);
            }
            let summary = steady::summarize(&runs);
            if !cli.json {
                steady::write(&mut out, &summary).ctx("write the table")?;
                out.flush().ctx("write the table")?;
            }
            steady_results.push(serde_json::json!({"runs": runs, "summary": summary}));
            continue;
        }
        if w == Workload::Tables {
            let mut runs = Vec::new();
            for i in 0..cli.runs {
                tracing::info!(workload = ?w, run = i + 1, of = cli.runs, tables = cli.tables, "run");
                runs.push(tables::run_once(&opts, cli.tables).await?);
            }
            let summary = tables::summarize(&runs)?;
            if !cli.json {
                tables::write(&mut out, &summary).ctx("write the table")?;
                out.flush().ctx("write the table")?;
            }
            tables_results.push(serde_json::json!({"runs": runs, "summary": summary}));
            continue;
        }
        let mut runs = Vec::new();
        for i in 0..cli.runs {
            tracing::info!(workload = ?w, run = i + 1, of = cli.runs, scale = cli.scale, "run");
            runs.push(run::run_once(w, cli.scale, &opts).await?);
        }
        let lines = report::lines(w, cli.scale, &runs);
        if !cli.json {
            report::write_table(&mut out, &lines).ctx("write the table")?;
            report::write_threads(&mut out, &lines).ctx("write the table")?;
            writeln!(out).ctx("write the table")?;
            out.flush().ctx("write the table")?;
        }
        results.push(serde_json::json!({"workload": w, "runs": runs, "lines": lines}));
        all_lines.extend(lines);
    }
    let doc = serde_json::json!({
        "binary": binary,
        "runs": cli.runs,
        "scale": cli.scale,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "workloads": results,
        "steady": steady_results,
        "tables": tables_results,
    });
    if let Some(path) = &cli.json_out {
        let text = serde_json::to_string_pretty(&doc)
            .map_err(|e| BenchError::Other(format!("write the JSON: {e}")))?;
        std::fs::write(path, text).ctx(format!("write {}", path.display()))?;
    }
    if cli.json {
        serde_json::to_writer_pretty(&mut out, &doc)
            .map_err(|e| BenchError::Other(format!("write the JSON: {e}")))?;
        writeln!(out).ctx("write the JSON")?;
    } else if all_lines.len() > 1 {
        writeln!(out, "All backlog workloads (medians of {}):", cli.runs).ctx("write")?;
        report::write_table(&mut out, &all_lines).ctx("write the table")?;
    }
    Ok(())
}
