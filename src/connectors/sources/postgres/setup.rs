//! Source preflight and setup: what `dbmazz check` reports and what `dbmazz run` ensures.
//!
//! [`inspect`] only reads (it is what `check` prints); [`ensure`] creates what is missing:
//! the publication (adding missing tables, never removing any) and the slot. An
//! existing slot, active or not, is reused and never dropped (invariant 7).

use std::fmt::Write as _;

use serde::Serialize;
use tokio_postgres::Client;
use tracing::{info, warn};

use super::error::SourceError;
use super::replication::ReplicationConnection;
use crate::config::{quote_ident, SourceConfig, TableName};
use crate::core::Lsn;

/// One replicated table as PostgreSQL sees it.
#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    pub table: String,
    pub exists: bool,
    /// default | nothing | full | index
    pub replica_identity: Option<String>,
    pub primary_key: Vec<String>,
    pub in_publication: bool,
    pub can_select: bool,
}

/// The slot as it is now.
#[derive(Debug, Clone, Serialize)]
pub struct SlotReport {
    pub name: String,
    pub plugin: Option<String>,
    pub slot_type: Option<String>,
    pub database: Option<String>,
    pub active: bool,
    pub confirmed_flush_lsn: Option<String>,
    pub restart_lsn: Option<String>,
    pub wal_status: Option<String>,
}

/// Everything `dbmazz check` reports.
#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    pub server_version: String,
    pub server_version_num: u32,
    pub wal_level: String,
    pub max_replication_slots: u32,
    pub replication_slots_used: u32,
    pub max_wal_senders: u32,
    pub wal_senders_used: u32,
    pub user: String,
    pub is_superuser: bool,
    pub has_replication: bool,
    pub can_create_publication: bool,
    pub database: String,
    pub slot: Option<SlotReport>,
    pub slot_name: String,
    pub publication_exists: bool,
    pub publication_all_tables: bool,
    /// Operations the publication publishes (insert, update, delete, truncate).
    pub publication_ops: Vec<String>,
    pub publication_name: String,
    pub tables: Vec<TableReport>,
}

/// A problem that stops replication, with how to fix it.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub what: String,
    pub fix: String,
}

impl SourceReport {
    /// Problems that prevent `run` from working (a missing slot or publication is not
    /// one: `run` creates them).
    pub fn problems(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        let mut add = |what: String, fix: &str| {
            p.push(Problem {
                what,
                fix: fix.to_string(),
            })
        };
        if self.server_version_num < 100_000 {
            add(
                format!("PostgreSQL {} is too old", self.server_version),
                "use PostgreSQL 10 or newer (pgoutput)",
            );
        }
        if self.wal_level != "logical" {
            add(
                format!(
                    "wal_level is '{}', logical replication needs 'logical'",
                    self.wal_level
                ),
                "run ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL",
            );
        }
        if !(self.is_superuser || self.has_replication) {
            add(
                format!("role {} has neither REPLICATION nor SUPERUSER", self.user),
                "run ALTER ROLE <user> WITH REPLICATION (as a superuser)",
            );
        }
        if self.slot.is_none() && self.replication_slots_used >= self.max_replication_slots {
            add(
                format!(
                    "all {} replication slots are in use and slot {} does not exist yet",
                    self.max_replication_slots, self.slot_name
                ),
                "raise max_replication_slots (restart needed) or drop a slot nobody uses",
            );
        }
        if self.wal_senders_used >= self.max_wal_senders {
            add(
                format!("all {} WAL senders are busy", self.max_wal_senders),
                "raise max_wal_senders (restart needed)",
            );
        }
        if let Some(slot) = &self.slot {
            if slot.plugin.as_deref() != Some("pgoutput")
                || slot.slot_type.as_deref() != Some("logical")
            {
                add(
                    format!(
                        "slot {} exists but is a {} slot with plugin {}",
                        slot.name,
                        slot.slot_type.as_deref().unwrap_or("?"),
                        slot.plugin.as_deref().unwrap_or("none")
                    ),
                    "choose another SOURCE_SLOT_NAME (dbmazz never drops slots on its own)",
                );
            }
            if slot.database.as_deref() != Some(self.database.as_str()) {
                add(
                    format!(
                        "slot {} belongs to database {}, not {}",
                        slot.name,
                        slot.database.as_deref().unwrap_or("?"),
                        self.database
                    ),
                    "choose another SOURCE_SLOT_NAME or connect to the slot's database",
                );
            }
            if slot.wal_status.as_deref() == Some("lost") {
                add(
                    format!("slot {} is lost: the WAL it needed was removed", slot.name),
                    "the changes in between are gone; drop the slot explicitly (dbmazz slot drop) and re-snapshot",
                );
            }
        }
        if !self.publication_exists && !self.can_create_publication {
            add(
                format!(
                    "publication {} does not exist and {} may not create it",
                    self.publication_name, self.user
                ),
                "create it as a table owner or superuser: CREATE PUBLICATION ... FOR TABLE ...",
            );
        }
        for t in &self.tables {
            if !t.exists {
                add(
                    format!("table {} does not exist", t.table),
                    "create it or remove it from TABLES",
                );
                continue;
            }
            let ident = t.replica_identity.as_deref().unwrap_or("default");
            if t.primary_key.is_empty() && ident != "index" {
                add(
                    format!(
                        "table {} has no primary key (replica identity {ident}); StarRocks needs a key and PostgreSQL would reject UPDATE/DELETE on a published table without replica identity",
                        t.table
                    ),
                    "add a primary key, or ALTER TABLE ... REPLICA IDENTITY USING INDEX <unique index>",
                );
            }
            if !t.can_select {
                add(
                    format!("role {} cannot SELECT from {}", self.user, t.table),
                    "GRANT SELECT ON <table> TO <user>",
                );
            }
        }
        p
    }

    /// Ok when nothing prevents replication, else one error listing every problem and
    /// its fix.
    pub fn ready(&self) -> Result<(), SourceError> {
        let problems = self.problems();
        if problems.is_empty() {
            return Ok(());
        }
        let text = problems
            .iter()
            .map(|p| format!("{} (fix: {})", p.what, p.fix))
            .collect::<Vec<_>>()
            .join("; ");
        Err(SourceError::Setup(format!("source is not ready: {text}")))
    }

    /// Human-readable report for `dbmazz check`.
    pub fn render(&self, problems: &[Problem]) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "PostgreSQL      {} ({})",
            self.server_version, self.server_version_num
        );
        let _ = writeln!(s, "database        {}", self.database);
        let _ = writeln!(s, "wal_level       {}", self.wal_level);
        let _ = writeln!(
            s,
            "slots           {}/{} used   wal senders {}/{} used",
            self.replication_slots_used,
            self.max_replication_slots,
            self.wal_senders_used,
            self.max_wal_senders
        );
        let _ = writeln!(
            s,
            "role            {} (superuser: {}, replication: {})",
            self.user, self.is_superuser, self.has_replication
        );
        match &self.slot {
            Some(sl) => {
                let _ = writeln!(
                    s,
                    "slot            {} ({} / {}) active: {} confirmed_flush_lsn: {} restart_lsn: {} wal_status: {}",
                    sl.name,
                    sl.slot_type.as_deref().unwrap_or("?"),
                    sl.plugin.as_deref().unwrap_or("?"),
                    sl.active,
                    sl.confirmed_flush_lsn.as_deref().unwrap_or("-"),
                    sl.restart_lsn.as_deref().unwrap_or("-"),
                    sl.wal_status.as_deref().unwrap_or("-"),
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "slot            {} (missing: run will create it)",
                    self.slot_name
                );
            }
        }
        let _ = writeln!(
            s,
            "publication     {} ({})",
            self.publication_name,
            if !self.publication_exists {
                "missing: run will create it".to_string()
            } else if self.publication_all_tables {
                format!(
                    "FOR ALL TABLES; publishes {}",
                    self.publication_ops.join(", ")
                )
            } else {
                format!("publishes {}", self.publication_ops.join(", "))
            }
        );
        let _ = writeln!(s, "tables:");
        for t in &self.tables {
            let _ = writeln!(
                s,
                "  {:<30} {}",
                t.table,
                if !t.exists {
                    "MISSING".to_string()
                } else {
                    format!(
                        "replica identity {:<8} primary key ({}) {} select: {}",
                        t.replica_identity.as_deref().unwrap_or("?"),
                        t.primary_key.join(", "),
                        if t.in_publication {
                            "published"
                        } else {
                            "not yet published"
                        },
                        if t.can_select { "yes" } else { "NO" },
                    )
                }
            );
        }
        if problems.is_empty() {
            let _ = writeln!(s, "\nOK: ready to replicate");
        } else {
            let _ = writeln!(s, "\n{} problem(s):", problems.len());
            for p in problems {
                let _ = writeln!(s, "  - {}\n    fix: {}", p.what, p.fix);
            }
        }
        s
    }
}

async fn one_string(client: &Client, sql: &str) -> Result<String, SourceError> {
    let row = client.query_one(sql, &[]).await?;
    Ok(row.try_get::<_, String>(0)?)
}

/// Reads everything `check` reports. Changes nothing.
pub async fn inspect(client: &Client, cfg: &SourceConfig) -> Result<SourceReport, SourceError> {
    let server_version = one_string(client, "SHOW server_version").await?;
    let server_version_num: u32 = one_string(client, "SHOW server_version_num")
        .await?
        .parse()
        .unwrap_or(0);
    let wal_level = one_string(client, "SHOW wal_level").await?;
    let int = |s: String| s.parse::<u32>().unwrap_or(0);
    let max_replication_slots = int(one_string(client, "SHOW max_replication_slots").await?);
    let max_wal_senders = int(one_string(client, "SHOW max_wal_senders").await?);
    let replication_slots_used: i64 = client
        .query_one("SELECT count(*) FROM pg_replication_slots", &[])
        .await?
        .try_get(0)?;
    let wal_senders_used: i64 = client
        .query_one("SELECT count(*) FROM pg_stat_replication", &[])
        .await?
        .try_get(0)?;
    let role = client
        .query_one(
            "SELECT current_user::text, rolsuper, rolreplication, current_database()::text,
                    has_database_privilege(current_database(), 'CREATE')
             FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await?;
    let user: String = role.try_get(0)?;
    let is_superuser: bool = role.try_get(1)?;
    let has_replication: bool = role.try_get(2)?;
    let database: String = role.try_get(3)?;
    let can_create: bool = role.try_get(4)?;

    let slot = client
        .query_opt(
            "SELECT plugin::text, slot_type, database::text, active,
                    confirmed_flush_lsn::text, restart_lsn::text, wal_status
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&cfg.slot_name],
        )
        .await?
        .map(|r| -> Result<SlotReport, SourceError> {
            Ok(SlotReport {
                name: cfg.slot_name.clone(),
                plugin: r.try_get(0)?,
                slot_type: r.try_get(1)?,
                database: r.try_get(2)?,
                active: r.try_get(3)?,
                confirmed_flush_lsn: r.try_get(4)?,
                restart_lsn: r.try_get(5)?,
                wal_status: r.try_get(6)?,
            })
        })
        .transpose()?;

    let publication = client
        .query_opt(
            "SELECT puballtables, pubinsert, pubupdate, pubdelete, pubtruncate
             FROM pg_publication WHERE pubname = $1",
            &[&cfg.publication_name],
        )
        .await?;
    let (publication_exists, publication_all_tables, publication_ops) = match &publication {
        None => (false, false, Vec::new()),
        Some(r) => {
            let mut ops = Vec::new();
            for (i, name) in [(1, "insert"), (2, "update"), (3, "delete"), (4, "truncate")] {
                if r.try_get::<_, bool>(i)? {
                    ops.push(name.to_string());
                }
            }
            (true, r.try_get(0)?, ops)
        }
    };

    let mut tables = Vec::new();
    for t in &cfg.tables {
        tables.push(inspect_table(client, cfg, t).await?);
    }
    Ok(SourceReport {
        server_version,
        server_version_num,
        wal_level,
        max_replication_slots,
        replication_slots_used: replication_slots_used as u32,
        max_wal_senders,
        wal_senders_used: wal_senders_used as u32,
        user,
        is_superuser,
        has_replication,
        can_create_publication: can_create || is_superuser,
        database,
        slot,
        slot_name: cfg.slot_name.clone(),
        publication_exists,
        publication_all_tables,
        publication_ops,
        publication_name: cfg.publication_name.clone(),
        tables,
    })
}

async fn inspect_table(
    client: &Client,
    cfg: &SourceConfig,
    t: &TableName,
) -> Result<TableReport, SourceError> {
    let row = client
        .query_opt(
            "SELECT c.oid, c.relreplident::text,
                    has_table_privilege(c.oid, 'SELECT'),
                    EXISTS (SELECT 1 FROM pg_publication_tables p
                            WHERE p.pubname = $3 AND p.schemaname = n.nspname AND p.tablename = c.relname)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&t.schema, &t.name, &cfg.publication_name],
        )
        .await?;
    let Some(row) = row else {
        return Ok(TableReport {
            table: t.to_string(),
            exists: false,
            replica_identity: None,
            primary_key: Vec::new(),
            in_publication: false,
            can_select: false,
        });
    };
    let oid: u32 = row.try_get(0)?;
    let ident: String = row.try_get(1)?;
    let pk = client
        .query(
            "SELECT a.attname::text FROM pg_index i
             JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord",
            &[&oid],
        )
        .await?
        .iter()
        .map(|r| r.try_get::<_, String>(0))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TableReport {
        table: t.to_string(),
        exists: true,
        replica_identity: Some(
            match ident.as_str() {
                "d" => "default",
                "n" => "nothing",
                "f" => "full",
                "i" => "index",
                other => other,
            }
            .to_string(),
        ),
        primary_key: pk,
        can_select: row.try_get(2)?,
        in_publication: row.try_get(3)?,
    })
}

/// What `ensure` did, for the log and the status.
#[derive(Debug, Clone)]
pub struct SetupOutcome {
    pub created_publication: bool,
    pub added_tables: Vec<String>,
    pub created_slot: bool,
    /// The slot's consistent point when it was just created.
    pub slot_consistent_point: Option<Lsn>,
}

/// Makes the source ready: fails with every problem found, else creates the
/// publication / adds missing tables / sets REPLICA IDENTITY FULL if asked / creates the
/// slot. Never drops or removes anything.
pub async fn ensure(
    client: &Client,
    repl: &mut ReplicationConnection,
    cfg: &SourceConfig,
) -> Result<(SourceReport, SetupOutcome), SourceError> {
    let report = inspect(client, cfg).await?;
    report.ready()?;
    let mut outcome = SetupOutcome {
        created_publication: false,
        added_tables: Vec::new(),
        created_slot: false,
        slot_consistent_point: None,
    };
    let list = |ts: &[&TableName]| ts.iter().map(|t| t.quoted()).collect::<Vec<_>>().join(", ");
    let pub_ident = quote_ident(&cfg.publication_name);
    if !report.publication_exists {
        let all: Vec<&TableName> = cfg.tables.iter().collect();
        client
            .batch_execute(&format!(
                "CREATE PUBLICATION {pub_ident} FOR TABLE {}",
                list(&all)
            ))
            .await?;
        info!(publication = %cfg.publication_name, tables = %list(&all), "created publication");
        outcome.created_publication = true;
    } else if !report.publication_all_tables {
        let missing: Vec<&TableName> = cfg
            .tables
            .iter()
            .zip(&report.tables)
            .filter(|(_, r)| !r.in_publication)
            .map(|(t, _)| t)
            .collect();
        if !missing.is_empty() {
            client
                .batch_execute(&format!(
                    "ALTER PUBLICATION {pub_ident} ADD TABLE {}",
                    list(&missing)
                ))
                .await?;
            info!(publication = %cfg.publication_name, tables = %list(&missing), "added tables to the publication");
            outcome.added_tables = missing.iter().map(|t| t.to_string()).collect();
        }
    }
    if report.publication_exists {
        for op in ["insert", "update", "delete", "truncate"] {
            if !report.publication_ops.iter().any(|o| o == op) {
                warn!(publication = %cfg.publication_name, op, "the publication does not publish this operation: such changes will not be replicated");
            }
        }
    }
    for (t, r) in cfg.tables.iter().zip(&report.tables) {
        let ident = r.replica_identity.as_deref().unwrap_or("default");
        if ident == "full" {
            continue;
        }
        if cfg.set_replica_identity_full {
            client
                .batch_execute(&format!("ALTER TABLE {} REPLICA IDENTITY FULL", t.quoted()))
                .await?;
            info!(table = %t, "set REPLICA IDENTITY FULL (SOURCE_SET_REPLICA_IDENTITY_FULL)");
        } else {
            info!(table = %t, replica_identity = ident, "replica identity is not FULL: updates that leave TOASTed columns unchanged will be loaded as partial updates");
        }
    }
    if report.slot.is_none() {
        let rows = repl
            .simple_query(&format!(
                "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput NOEXPORT_SNAPSHOT",
                quote_ident(&cfg.slot_name)
            ))
            .await?;
        let point = rows
            .first()
            .and_then(|r| r.get(1).cloned().flatten())
            .and_then(|l| l.parse::<Lsn>().ok());
        info!(slot = %cfg.slot_name, consistent_point = ?point, "created replication slot");
        outcome.created_slot = true;
        outcome.slot_consistent_point = point;
    } else {
        info!(slot = %cfg.slot_name, "reusing existing replication slot");
    }
    Ok((report, outcome))
}

/// The slot's confirmed_flush_lsn, if the slot exists.
pub async fn slot_confirmed_flush(client: &Client, slot: &str) -> Result<Option<Lsn>, SourceError> {
    let row = client
        .query_opt(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    Ok(row
        .and_then(|r| r.try_get::<_, Option<String>>(0).ok().flatten())
        .and_then(|s| s.parse().ok()))
}
