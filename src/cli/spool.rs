//! `dbmazz spool stats|list|show|tail|verify|export`: the spool inspection tool.
//!
//! Safe while the daemon runs: when the daemon serves `<dir>/inspect.sock` the request
//! goes there (sled locks the directory, so a second open is impossible); otherwise the
//! spool is opened directly. Output goes through the given writer: human text, or JSON
//! with `--json` (export is always JSON lines). `verify` fails when it finds a problem.

use std::io::Write;
use std::path::PathBuf;

use serde_json::Value as Json;

use crate::spool::inspect::{self, InspectRequest, VerifyReport};
use crate::spool::{Spool, SpoolError, SpoolOptions};

/// `dbmazz spool` arguments.
#[derive(Debug, clap::Args)]
pub struct SpoolArgs {
    /// The spool directory (required; also from SPOOL_DIR). Accepted before or after the
    /// subcommand.
    #[arg(long, env = "SPOOL_DIR", global = true)]
    pub dir: Option<PathBuf>,
    /// Machine-readable output (one JSON value per line).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: SpoolCommand,
}

/// Inspection commands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum SpoolCommand {
    /// Depth, bytes, marks, oldest pending commit, per-table counts, capacity.
    Stats,
    /// One line per durable record, from the first pending one (or --from).
    List {
        #[arg(long)]
        from: Option<u64>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One record in full (row images with column names).
    Show { seq: u64 },
    /// The last N durable records.
    Tail {
        #[arg(default_value_t = 20)]
        n: usize,
    },
    /// Check every pending record (CRC, decoding, continuity, commit index, relations).
    Verify,
    /// Pending records in full as JSON lines (optionally a range).
    Export {
        #[arg(long)]
        from: Option<u64>,
        #[arg(long)]
        to: Option<u64>,
    },
}

impl SpoolCommand {
    fn request(&self) -> InspectRequest {
        match self {
            SpoolCommand::Stats => InspectRequest::Stats,
            SpoolCommand::List { from, limit } => InspectRequest::List {
                from: *from,
                limit: *limit,
            },
            SpoolCommand::Show { seq } => InspectRequest::Show { seq: *seq },
            SpoolCommand::Tail { n } => InspectRequest::Tail { n: *n },
            SpoolCommand::Verify => InspectRequest::Verify,
            SpoolCommand::Export { from, to } => InspectRequest::Export {
                from: *from,
                to: *to,
            },
        }
    }
}

/// Runs an inspection command, writing its output to `out`.
pub fn run(args: &SpoolArgs, out: &mut dyn Write) -> Result<(), SpoolError> {
    let Some(dir) = args.dir.as_deref() else {
        return Err(SpoolError::io(
            "dbmazz spool".to_string(),
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no spool directory: pass --dir DIR or set SPOOL_DIR",
            ),
        ));
    };
    if !dir.join("meta").exists() {
        return Err(SpoolError::io(
            format!("opening the spool at {}", dir.display()),
            std::io::Error::new(std::io::ErrorKind::NotFound, "no spool in this directory"),
        ));
    }
    let req = args.command.request();
    let mut verify: Option<VerifyReport> = None;
    {
        let mut emit = |v: Json| -> std::io::Result<()> {
            if matches!(args.command, SpoolCommand::Verify) {
                verify = serde_json::from_value(v.clone()).ok();
            }
            write_item(&args.command, args.json, &v, out)
        };
        let served = inspect::request(dir, &req, &mut emit)?;
        if !served {
            let spool = Spool::open(
                dir,
                SpoolOptions {
                    cache_capacity: 8 << 20,
                    max_bytes: u64::MAX,
                    ..SpoolOptions::default()
                },
            )
            .map_err(|e| match e {
                SpoolError::Locked { dir } => SpoolError::Storage {
                    context: format!("opening the spool at {}", dir.display()),
                    message: "it is locked by a running process that does not serve \
                              inspect.sock; inspect it through the daemon"
                        .into(),
                },
                other => other,
            })?;
            inspect::handle(&spool, &req, &mut emit)?;
        }
    }
    out.flush()
        .map_err(|e| SpoolError::io("writing the output", e))?;
    if let Some(rep) = verify {
        if let Some(p) = rep.problems.first() {
            return Err(SpoolError::Corrupt {
                seq: p.seq,
                reason: format!(
                    "verify found {} problem(s); first: {}",
                    rep.problems.len(),
                    p.reason
                ),
            });
        }
    }
    Ok(())
}

fn write_item(
    cmd: &SpoolCommand,
    json: bool,
    v: &Json,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    if json || matches!(cmd, SpoolCommand::Export { .. }) {
        return writeln!(out, "{v}");
    }
    match cmd {
        SpoolCommand::Stats => write_stats(v, out),
        SpoolCommand::Show { .. } => {
            let s = serde_json::to_string_pretty(v).map_err(std::io::Error::other)?;
            writeln!(out, "{s}")
        }
        SpoolCommand::Verify => write_verify(v, out),
        SpoolCommand::List { .. } | SpoolCommand::Tail { .. } | SpoolCommand::Export { .. } => {
            writeln!(out, "{}", record_line(v))
        }
    }
}

fn s(v: &Json, k: &str) -> String {
    match v.get(k) {
        Some(Json::String(s)) => s.clone(),
        Some(Json::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

fn record_line(v: &Json) -> String {
    if s(v, "type") == "commit" {
        format!(
            "{:>12}  COMMIT   xid {} commit {} end {} changes {} bytes {}{}",
            s(v, "seq"),
            s(v, "xid"),
            s(v, "commit_lsn"),
            s(v, "end_lsn"),
            s(v, "changes"),
            s(v, "bytes"),
            if v.get("streamed") == Some(&Json::Bool(true)) {
                " (streamed)"
            } else {
                ""
            }
        )
    } else {
        format!(
            "{:>12}  {:<8} xid {} lsn {} {} (relation {} v{})",
            s(v, "seq"),
            s(v, "op").to_uppercase(),
            s(v, "xid"),
            s(v, "lsn"),
            s(v, "relation"),
            s(v, "relation_id"),
            s(v, "rel_version"),
        )
    }
}

fn write_stats(v: &Json, out: &mut dyn Write) -> std::io::Result<()> {
    let g = |a: &str, b: &str| v.get(a).map(|x| s(x, b)).unwrap_or_else(|| "-".into());
    writeln!(out, "spool id:        {}", s(v, "spool_id"))?;
    writeln!(out, "directory:       {}", s(v, "dir"))?;
    writeln!(out, "format version:  {}", s(v, "format_version"))?;
    writeln!(
        out,
        "durable mark:    seq {}  commit {:?}  resume at {:?}",
        g("durable", "seq"),
        v.pointer("/durable/commit_lsn"),
        v.pointer("/durable/end_lsn")
    )?;
    writeln!(
        out,
        "loaded mark:     seq {}  confirmed {:?}",
        g("loaded", "seq"),
        v.pointer("/loaded/confirmed_lsn")
    )?;
    writeln!(
        out,
        "pending:         {} records, {} transactions, {} bytes",
        s(v, "pending_records"),
        s(v, "pending_txns"),
        s(v, "pending_bytes")
    )?;
    match v.get("oldest_pending") {
        Some(o) if !o.is_null() => writeln!(
            out,
            "oldest pending:  commit seq {} (lsn {:?}), age {} s",
            s(o, "commit_seq"),
            o.get("commit_lsn"),
            s(v, "oldest_pending_age_secs")
        )?,
        _ => writeln!(out, "oldest pending:  none")?,
    }
    writeln!(
        out,
        "unflushed:       {} bytes; streamed in progress: {} transactions, {} bytes",
        s(v, "unflushed_bytes"),
        s(v, "stream_txns"),
        s(v, "stream_bytes")
    )?;
    writeln!(
        out,
        "disk:            {} bytes in {} segments; capacity {} bytes{}",
        s(v, "disk_bytes"),
        s(v, "segments"),
        s(v, "max_bytes"),
        if v.get("full") == Some(&Json::Bool(true)) {
            " (FULL)"
        } else {
            ""
        }
    )?;
    if let Some(Json::Array(tables)) = v.get("per_table") {
        writeln!(out, "pending per table:")?;
        for t in tables {
            writeln!(
                out,
                "  {:<40} {:>12}",
                format!("{} ({})", s(t, "name"), s(t, "relation_id")),
                s(t, "records")
            )?;
        }
    }
    Ok(())
}

fn write_verify(v: &Json, out: &mut dyn Write) -> std::io::Result<()> {
    let problems = v
        .get("problems")
        .and_then(|p| p.as_array())
        .cloned()
        .unwrap_or_default();
    writeln!(
        out,
        "verify: {} records checked (seq {}..={}): {}",
        s(v, "checked"),
        s(v, "first_seq"),
        s(v, "last_seq"),
        if problems.is_empty() {
            "OK".to_string()
        } else {
            format!("{} problem(s)", problems.len())
        }
    )?;
    for p in problems {
        writeln!(out, "  seq {}: {}", s(&p, "seq"), s(&p, "reason"))?;
    }
    Ok(())
}
