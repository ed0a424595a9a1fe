//! The command line: `dbmazz run|check|spool|status|pause|resume|drain|stop|slot drop`.
//!
//! Command output goes through a writer (stdout), logs through tracing (stderr).

pub mod check;
pub mod slot;
pub mod spool;
pub mod status;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{help_table, Config, ConfigError, LogFormat};
use crate::connectors::sources::postgres::SourceError;
use crate::grpc::ServeError;
use crate::pipeline::loader::{LoaderError, SinkFailure};
use crate::spool::identity::RefusedSpool;
use crate::spool::SpoolError;

/// Errors of a CLI command, with a clear message for the operator. Each layer adds its
/// context once: the errors of the source, the spool, the sink and the loader already say
/// which part failed and what it was doing, so they are shown as they are.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Source(#[from] SourceError),
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("{0}")]
    Spool(#[from] SpoolError),
    /// The spool belongs to another source, or the slot lost changes it holds no record
    /// of (invariant 12); the message says whose spool it is and what to do.
    #[error("{0}")]
    RefusedSpool(Box<RefusedSpool>),
    /// The sink's startup checks (targets, credentials).
    #[error("{0}")]
    Sink(#[from] SinkFailure),
    /// The loader stopped on a permanent error.
    #[error("{0}")]
    Loader(#[from] LoaderError),
    #[error("control plane: {0}")]
    ControlPlane(#[from] ServeError),
    #[error("{0}")]
    Usage(String),
    #[error("output: {0}")]
    Io(#[from] std::io::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A bug: a task panicked or was cancelled.
    #[error("internal error: {0}")]
    Internal(String),
    #[error("{0}")]
    Other(String),
}

#[derive(Debug, Parser)]
#[command(
    name = "dbmazz",
    version,
    about = "Streams PostgreSQL changes into StarRocks through a durable local spool",
    after_long_help = help_table(),
)]
pub struct Cli {
    /// TOML configuration file; environment variables override it.
    #[arg(long, global = true, env = "DBMAZZ_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log format (overrides LOG_FORMAT): text or json.
    #[arg(long, global = true, value_name = "FORMAT")]
    pub log_format: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the replication job: PostgreSQL → spool → StarRocks (configuration: see --help).
    Run,
    /// Check the source (wal_level, slots, privileges, publication, tables) without
    /// changing anything; exits non-zero when something must be fixed.
    Check {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Inspect a spool directory (safe while the daemon runs).
    Spool(spool::SpoolArgs),
    /// Replication slot administration.
    Slot {
        #[command(subcommand)]
        command: SlotCommand,
    },
    /// Status of a running daemon over gRPC (a table, --json, or a live --watch view).
    Status(status::StatusArgs),
    /// Live view of a running daemon (same as `status --watch`).
    Top(status::StatusArgs),
    /// Pause reading of a running daemon (keepalives are still answered).
    Pause(ControlArgs),
    /// Resume reading after `pause`.
    Resume(ControlArgs),
    /// Stop reading, load everything spooled, confirm it, then exit.
    Drain(ControlArgs),
    /// Stop a running daemon (the spool keeps the backlog).
    Stop(ControlArgs),
}

/// Options of the control commands (pause, resume, drain, stop).
#[derive(Debug, Clone, clap::Args)]
pub struct ControlArgs {
    #[command(flatten)]
    pub client: status::ClientArgs,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SlotCommand {
    /// Drop the configured slot (SOURCE_SLOT_NAME). The daemon never does this itself.
    Drop {
        /// Repeat the slot name to confirm.
        #[arg(long, value_name = "SLOT")]
        confirm: String,
    },
}

/// Entry point used by `main`: parses arguments, runs the command, maps the outcome to
/// an exit code (0 ok, 1 error, 2 check found problems).
pub fn main() -> ExitCode {
    // Named failpoints from FAILPOINTS (only in builds with the `failpoints` feature).
    let _failpoints = crate::failpoints::setup();
    let cli = Cli::parse();
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    match run(cli, &mut out) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(err, "dbmazz: {e}");
            ExitCode::from(1)
        }
    }
}

fn load_config(cli: &Cli) -> Result<Config, CliError> {
    let mut cfg = Config::load(cli.config.as_deref())?;
    if let Some(f) = &cli.log_format {
        cfg.log.format = LogFormat::parse(f)
            .ok_or_else(|| CliError::Usage(format!("--log-format {f:?}: expected text or json")))?;
    }
    Ok(cfg)
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Io)
}

/// Runs one parsed command, writing its output to `out`.
pub fn run(cli: Cli, out: &mut dyn Write) -> Result<ExitCode, CliError> {
    match &cli.command {
        Command::Spool(args) => {
            crate::logging::init(LogFormat::Text, "warn");
            spool::run(args, out).map_err(|e| CliError::Other(e.to_string()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { json } => {
            let cfg = load_config(&cli)?;
            crate::logging::init(cfg.log.format, "warn");
            let ok = runtime()?.block_on(check::run(&cfg, *json, out))?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Command::Slot {
            command: SlotCommand::Drop { confirm },
        } => {
            let cfg = load_config(&cli)?;
            crate::logging::init(cfg.log.format, &cfg.log.filter);
            runtime()?.block_on(slot::drop_slot(&cfg, confirm, out))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status(args) | Command::Top(args) => {
            crate::logging::init(LogFormat::Text, "warn");
            let mut args = args.clone();
            if matches!(cli.command, Command::Top(_)) {
                args.watch = true;
            }
            let clear =
                args.watch && !args.json && std::io::IsTerminal::is_terminal(&std::io::stdout());
            status::status(&args, clear, out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Pause(a) | Command::Resume(a) | Command::Drain(a) | Command::Stop(a) => {
            crate::logging::init(LogFormat::Text, "warn");
            let cmd = match &cli.command {
                Command::Pause(_) => status::ControlCommand::Pause,
                Command::Resume(_) => status::ControlCommand::Resume,
                Command::Drain(_) => status::ControlCommand::Drain,
                _ => status::ControlCommand::Stop,
            };
            status::control(cmd, &a.client, a.json, out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run => {
            let cfg = load_config(&cli)?;
            crate::logging::init(cfg.log.format, &cfg.log.filter);
            // The daemon logs its fatal error through tracing itself (JSON log pipelines
            // see it); `main` prints it once more for the person at the terminal.
            runtime()?.block_on(crate::daemon::run(cfg))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each layer adds its context once: no "spool: spool ...", no "loader: sink: ...".
    #[test]
    fn errors_are_worded_once() {
        let e = CliError::from(SpoolError::Locked {
            dir: PathBuf::from("/var/lib/dbmazz/spool"),
        });
        assert_eq!(
            e.to_string(),
            "spool at /var/lib/dbmazz/spool is locked by another process (is the daemon running?)"
        );
        let e = CliError::from(SinkFailure::permanent(
            "StarRocks MySQL port: Access denied for user 'root'",
        ));
        assert_eq!(
            e.to_string(),
            "StarRocks MySQL port: Access denied for user 'root'"
        );
        let e = CliError::from(LoaderError::Sink(SinkFailure::permanent(
            "loading public.items into items (label l1): 1 of 3 rows were filtered",
        )));
        assert_eq!(
            e.to_string(),
            "sink: loading public.items into items (label l1): 1 of 3 rows were filtered"
        );
    }
}
