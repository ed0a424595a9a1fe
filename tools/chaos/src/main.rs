//! `dbmazz-chaos`: see the library docs. Exit 0 when the run passed.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// Chaos run for dbmazz: a mixed workload under kills, PostgreSQL restarts, StarRocks
/// outages and faults and a full disk, then a row-by-row comparison.
#[derive(Parser)]
struct Args {
    /// The dbmazz binary (build it with `--features failpoints` for disk-full faults).
    #[arg(long, default_value = "target/debug/dbmazz")]
    dbmazz: PathBuf,
    /// Seconds of chaos.
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    /// Random seed (random when absent; printed in the report).
    #[arg(long)]
    seed: Option<u64>,
    /// Do not inject disk-full (for a dbmazz built without failpoints).
    #[arg(long)]
    no_disk_full: bool,
    /// No faults: the workload alone.
    #[arg(long)]
    calm: bool,
    /// Protocol 2: most transactions arrive streamed (logical_decoding_work_mem 64kB).
    #[arg(long)]
    streaming: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mut opts = dbmazz_chaos::Options::new(args.dbmazz, Duration::from_secs(args.seconds));
    if let Some(s) = args.seed {
        opts.seed = s;
    }
    opts.disk_full = !args.no_disk_full;
    opts.calm = args.calm;
    opts.streaming = args.streaming;
    let mut out = std::io::stdout();
    match dbmazz_chaos::run(opts).await {
        Ok(report) => {
            let _ = if args.json {
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                )
            } else {
                write!(out, "{report}")
            };
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "dbmazz-chaos: {e}");
            ExitCode::from(2)
        }
    }
}
