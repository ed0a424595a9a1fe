//! `dbmazz check`: a read-only preflight report of the source (and what `run` would do).

use std::io::Write;

use crate::config::Config;
use crate::connectors::sources::postgres::{client, setup};

use super::CliError;

/// Prints the report; returns whether the source is ready.
pub async fn run(cfg: &Config, json: bool, out: &mut dyn Write) -> Result<bool, CliError> {
    let client = client::connect(&cfg.source.conn).await?;
    let report = setup::inspect(&client, &cfg.source).await?;
    let problems = report.problems();
    if json {
        let v = serde_json::json!({
            "ok": problems.is_empty(),
            "source": report,
            "problems": problems,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        write!(out, "{}", report.render(&problems))?;
    }
    Ok(problems.is_empty())
}
