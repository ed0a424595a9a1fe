//! `dbmazz check`: a read-only preflight report of the source (and what `run` would do).
//!
//! It also reports whether `run` would accept the spool in `SPOOL_DIR` with this source
//! (invariant 12, the same decision `run` takes): reported as a problem, never refused
//! here. The spool is only read, and not at all while a daemon holds it.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::Config;
use crate::connectors::sources::postgres::replication::ReplicationConnection;
use crate::connectors::sources::postgres::setup::{Problem, SourceReport};
use crate::connectors::sources::postgres::{client, setup};
use crate::spool::identity::ACCEPT_GAP_SETTING;
use crate::spool::{check_source, SourceDecision, Spool, SpoolError, SpoolOptions};

use super::CliError;

/// What `check` found of the spool.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SpoolFinding {
    /// No spool in the directory yet: `run` creates one.
    Missing { dir: PathBuf },
    /// A daemon holds it: not checked.
    InUse { dir: PathBuf },
    /// It could not be read, or the source could not be identified: not checked.
    NotChecked { dir: PathBuf, reason: String },
    /// `run` would use it.
    Usable {
        dir: PathBuf,
        recorded: Option<String>,
        decision: String,
    },
    /// `run` would refuse it.
    Refused { dir: PathBuf, error: String },
}

impl SpoolFinding {
    fn line(&self) -> String {
        match self {
            SpoolFinding::Missing { dir } => {
                format!("{}: none yet (run will create it)", dir.display())
            }
            SpoolFinding::InUse { dir } => format!(
                "{}: in use by a running dbmazz (not checked)",
                dir.display()
            ),
            SpoolFinding::NotChecked { dir, reason } => {
                format!("{}: not checked ({reason})", dir.display())
            }
            SpoolFinding::Usable { dir, decision, .. } => {
                format!("{}: {decision}", dir.display())
            }
            SpoolFinding::Refused { dir, .. } => {
                format!("{}: REFUSED by run (see the problems)", dir.display())
            }
        }
    }
}

/// Prints the report; returns whether the source is ready.
pub async fn run(cfg: &Config, json: bool, out: &mut dyn Write) -> Result<bool, CliError> {
    let client = client::connect(&cfg.source.conn).await?;
    let report = setup::inspect(&client, &cfg.source).await?;
    let mut problems = report.problems();
    let spool = spool_finding(cfg, &report).await;
    if let SpoolFinding::Refused { error, .. } = &spool {
        problems.push(Problem {
            what: format!("run refuses the spool: {error}"),
            fix: "see the message: another source's spool needs its own SPOOL_DIR; a gap needs a re-snapshot or ACCEPT_SLOT_GAP=true".into(),
        });
    }
    if json {
        let v = serde_json::json!({
            "ok": problems.is_empty(),
            "source": report,
            "spool": spool,
            "problems": problems,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        write!(out, "{}", report.render(&problems))?;
        writeln!(out, "spool           {}", spool.line())?;
    }
    Ok(problems.is_empty())
}

/// Whether `run` would accept the spool with this source.
async fn spool_finding(cfg: &Config, report: &SourceReport) -> SpoolFinding {
    let dir = cfg.spool.dir.clone();
    if !dir.join("meta").exists() {
        return SpoolFinding::Missing { dir };
    }
    let opened = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || open_to_read(&dir)).await
    };
    let spool = match opened {
        Ok(Ok(s)) => s,
        Ok(Err(SpoolError::Locked { .. })) => return SpoolFinding::InUse { dir },
        Ok(Err(e)) => {
            return SpoolFinding::NotChecked {
                dir,
                reason: e.to_string(),
            }
        }
        Err(e) => {
            return SpoolFinding::NotChecked {
                dir,
                reason: format!("the spool open task failed: {e}"),
            }
        }
    };
    let observed = async {
        let mut repl = ReplicationConnection::connect(&cfg.source.conn).await?;
        let o = crate::daemon::observe_source(&mut repl, report).await;
        repl.close().await;
        o
    }
    .await;
    let (observed, slot) = match observed {
        Ok(o) => o,
        Err(e) => {
            return SpoolFinding::NotChecked {
                dir,
                reason: format!("could not identify the source: {e}"),
            }
        }
    };
    let recorded = spool.source_identity();
    let position = crate::daemon::spool_position(cfg, &spool);
    drop(spool);
    match check_source(
        recorded.as_ref(),
        position,
        &observed,
        slot,
        cfg.spool.accept_slot_gap,
    ) {
        Ok(decision) => SpoolFinding::Usable {
            dir,
            recorded: recorded.as_ref().map(ToString::to_string),
            decision: describe(&decision),
        },
        Err(refused) => SpoolFinding::Refused {
            dir,
            error: refused.to_string(),
        },
    }
}

fn open_to_read(dir: &Path) -> Result<Spool, SpoolError> {
    Spool::open(
        dir,
        SpoolOptions {
            cache_capacity: 8 << 20,
            max_bytes: u64::MAX,
            ..SpoolOptions::default()
        },
    )
}

fn describe(d: &SourceDecision) -> String {
    match d {
        SourceDecision::Proceed => "belongs to this source; the slot lines up".into(),
        SourceDecision::Bind => "empty; run records this source".into(),
        SourceDecision::Adopt => {
            "written before sources were recorded; the slot lines up; run records this source"
                .into()
        }
        SourceDecision::Failover { from, to } => format!(
            "belongs to this source on timeline {from}, now {to} (a failover; run records it)"
        ),
        SourceDecision::AcceptGap(gap) => {
            format!("{gap}; {ACCEPT_GAP_SETTING} is set: run accepts this gap")
        }
    }
}
