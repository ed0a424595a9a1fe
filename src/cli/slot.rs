//! `dbmazz slot drop`: the one and only place that drops a replication slot (invariant 7).
//! It is never called by the daemon itself; an operator runs it on purpose.

use std::io::Write;

use crate::config::Config;
use crate::connectors::sources::postgres::client;

use super::CliError;

/// Drops the configured slot after the operator confirmed its name.
pub async fn drop_slot(cfg: &Config, confirm: &str, out: &mut dyn Write) -> Result<(), CliError> {
    let slot = &cfg.source.slot_name;
    if confirm != slot {
        return Err(CliError::Usage(format!(
            "refusing to drop slot {slot}: pass --confirm {slot} to say you mean it (PostgreSQL then forgets the position; changes not yet loaded are lost unless the spool holds them)"
        )));
    }
    let client = client::connect(&cfg.source.conn).await?;
    let row = client
        .query_opt(
            "SELECT active, active_pid FROM pg_replication_slots WHERE slot_name = $1",
            &[slot],
        )
        .await?;
    let Some(row) = row else {
        return Err(CliError::Usage(format!("slot {slot} does not exist")));
    };
    let active: bool = row.try_get(0)?;
    if active {
        let pid: Option<i32> = row.try_get(1)?;
        return Err(CliError::Usage(format!(
            "slot {slot} is in use by process {}; stop the daemon first",
            pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into())
        )));
    }
    client
        .execute("SELECT pg_drop_replication_slot($1)", &[slot])
        .await?;
    writeln!(out, "dropped replication slot {slot}")?;
    Ok(())
}
