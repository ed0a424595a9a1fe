//! Source preflight and setup: what `dbmazz check` reports and what `dbmazz run` ensures.
//!
//! [`inspect`] only reads (it is what `check` prints); [`ensure`] creates what is missing:
//! the publication (adding missing tables, never removing any) and the slot. An
//! existing slot, active or not, is reused and never dropped (invariant 7).
//!
//! Nothing may be lost silently: a publication that leaves out an operation, a row
//! filter or column list, a partitioned table not published through its root, and a
//! replica identity whose deletes cannot be matched by primary key are refused (by
//! `check` and `run`) with the fix, not warned about.

use std::fmt::Write as _;

use serde::Serialize;
use tokio_postgres::Client;
use tracing::info;

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
    /// With `index`: the index (None when it was dropped: then PostgreSQL sends no key).
    pub replica_identity_index: Option<String>,
    /// The key columns of that index.
    pub replica_identity_columns: Vec<String>,
    pub primary_key: Vec<String>,
    pub in_publication: bool,
    pub can_select: bool,
    /// A partitioned table (relkind 'p'): its rows live in partitions.
    pub partitioned: bool,
    /// For a partitioned table, the replica identity of every leaf partition (the old
    /// key of an update or delete comes from the partition the row is in).
    pub partitions: Vec<PartitionIdentity>,
    /// When this table is a partition: its ancestors, nearest first.
    pub partition_of: Vec<String>,
    /// The ancestor this publication publishes this partition's changes under (when it
    /// publishes through the partition root).
    pub published_through: Option<String>,
    /// The publication's row filter on this table (PostgreSQL 15+).
    pub row_filter: Option<String>,
    /// The publication publishes only some columns of this table (PostgreSQL 15+).
    pub column_list: bool,
}

/// The replica identity of one leaf partition.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionIdentity {
    pub table: String,
    pub replica_identity: String,
    pub replica_identity_index: Option<String>,
    pub replica_identity_columns: Vec<String>,
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
    /// `publish_via_partition_root` (PostgreSQL 13+).
    pub publication_via_root: bool,
    pub publication_name: String,
    pub tables: Vec<TableReport>,
    /// `run` will set REPLICA IDENTITY FULL (SOURCE_SET_REPLICA_IDENTITY_FULL), which
    /// resolves replica identity problems other than a missing primary key.
    pub will_set_replica_identity_full: bool,
}

/// Every operation the job needs published.
pub const PUBLISH_ALL: &str = "insert, update, delete, truncate";

/// Why a replica identity cannot resolve deletes and key changes through the primary
/// key, if it cannot. `columns` are the identity index's key columns.
fn identity_problem(
    ident: &str,
    index: Option<&str>,
    columns: &[String],
    primary_key: &[String],
) -> Option<String> {
    match ident {
        "nothing" => Some(
            "REPLICA IDENTITY NOTHING: PostgreSQL sends no key with updates and deletes (and refuses them on a published table), so deletes cannot reach StarRocks".to_string(),
        ),
        "index" => match index {
            None => Some(
                "REPLICA IDENTITY USING INDEX on an index that no longer exists, which PostgreSQL treats as NOTHING: no key is sent with updates and deletes".to_string(),
            ),
            Some(idx) => {
                let missing: Vec<&str> = primary_key
                    .iter()
                    .filter(|k| !columns.contains(k))
                    .map(String::as_str)
                    .collect();
                (!missing.is_empty()).then(|| {
                    format!(
                        "REPLICA IDENTITY USING INDEX {idx} ({}), which lacks primary key column(s) {}: a delete or key change arrives with only the index's columns and cannot be matched to a row by the primary key StarRocks uses",
                        columns.join(", "),
                        missing.join(", ")
                    )
                })
            }
        },
        _ => None,
    }
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
        let publication = quote_ident(&self.publication_name);
        if self.publication_exists {
            let missing: Vec<&str> = ["insert", "update", "delete", "truncate"]
                .into_iter()
                .filter(|op| !self.publication_ops.iter().any(|o| o == op))
                .collect();
            if !missing.is_empty() {
                let what = format!(
                    "publication {} does not publish {}: those changes would never reach StarRocks",
                    self.publication_name,
                    missing.join(", ")
                );
                add(
                    what,
                    &format!("ALTER PUBLICATION {publication} SET (publish = '{PUBLISH_ALL}')"),
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
            let (table, pubname) = (&t.table, &self.publication_name);
            if t.primary_key.is_empty() {
                let what = format!(
                    "table {table} has no primary key: StarRocks applies updates and deletes by primary key (the target is a PRIMARY KEY table)"
                );
                let fix = format!(
                    "add one: ALTER TABLE {} ADD PRIMARY KEY (<columns>)",
                    quote_table(table)
                );
                add(what, &fix);
            } else if !self.will_set_replica_identity_full {
                // A partitioned table's rows live in its leaves: their identities count.
                let ident = t.replica_identity.as_deref().unwrap_or("default");
                let own = (!t.partitioned).then_some((
                    table.as_str(),
                    ident,
                    t.replica_identity_index.as_deref(),
                    t.replica_identity_columns.as_slice(),
                ));
                let leaves = t.partitions.iter().map(|l| {
                    (
                        l.table.as_str(),
                        l.replica_identity.as_str(),
                        l.replica_identity_index.as_deref(),
                        l.replica_identity_columns.as_slice(),
                    )
                });
                for (rel, ident, index, columns) in own.into_iter().chain(leaves) {
                    if let Some(why) = identity_problem(ident, index, columns, &t.primary_key) {
                        let of = if rel == table {
                            String::new()
                        } else {
                            format!(" (a partition of {table})")
                        };
                        let fix = format!(
                            "ALTER TABLE {} REPLICA IDENTITY DEFAULT (the primary key), or REPLICA IDENTITY FULL (or set SOURCE_SET_REPLICA_IDENTITY_FULL=true)",
                            quote_table(rel)
                        );
                        add(format!("table {rel}{of} has {why}"), &fix);
                    }
                }
            }
            if t.partitioned && self.server_version_num < 130_000 {
                let what = format!(
                    "table {table} is partitioned and PostgreSQL {} cannot publish a partitioned table through its root",
                    self.server_version
                );
                add(what, "use PostgreSQL 13 or newer");
            } else if t.partitioned && self.publication_exists && !self.publication_via_root {
                let what = format!(
                    "table {table} is partitioned and publication {pubname} does not publish through the partition root: its changes would arrive under each partition's name instead of {table}"
                );
                let fix = format!(
                    "ALTER PUBLICATION {publication} SET (publish_via_partition_root = true)"
                );
                add(what, &fix);
            }
            let beside_root = t
                .partition_of
                .iter()
                .find(|a| self.tables.iter().any(|o| &o.table == *a));
            if let Some(root) = beside_root {
                let what = format!(
                    "table {table} is a partition of {root}, which is also in TABLES: its changes arrive under {root} (one target table per source table)"
                );
                add(
                    what,
                    &format!("remove {table} from TABLES; {root} covers all its partitions"),
                );
            } else if let Some(root) = &t.published_through {
                let what = format!(
                    "table {table} is a partition of {root}, which publication {pubname} publishes through its root: the changes of {table} arrive under {root}"
                );
                let fix = format!(
                    "replicate {root} instead (put it in TABLES in place of {table}), or use a publication that does not publish {root}"
                );
                add(what, &fix);
            }
            if let Some(filter) = &t.row_filter {
                let what = format!(
                    "publication {pubname} has a row filter on {table} (WHERE {filter}): rows it filters out would never reach StarRocks"
                );
                let fix = format!(
                    "ALTER PUBLICATION {publication} SET TABLE ... without the WHERE clause for {table} (or use another publication)"
                );
                add(what, &fix);
            }
            if t.column_list {
                let what = format!(
                    "publication {pubname} publishes only some columns of {table}: the others would never reach StarRocks"
                );
                let fix = format!(
                    "ALTER PUBLICATION {publication} SET TABLE ... without a column list for {table} (or use another publication)"
                );
                add(what, &fix);
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
            } else {
                format!(
                    "{}publishes {}{}",
                    if self.publication_all_tables {
                        "FOR ALL TABLES; "
                    } else {
                        ""
                    },
                    self.publication_ops.join(", "),
                    if self.publication_via_root {
                        "; through partition roots"
                    } else {
                        ""
                    }
                )
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
                        "{}replica identity {:<8} primary key ({}) {} select: {}",
                        if t.partitioned { "partitioned, " } else { "" },
                        match &t.replica_identity_index {
                            Some(idx) =>
                                format!("index {idx} ({})", t.replica_identity_columns.join(", ")),
                            None => t.replica_identity.clone().unwrap_or_else(|| "?".into()),
                        },
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

/// `"schema"."table"` for a report's `schema.table` name.
fn quote_table(name: &str) -> String {
    match name.split_once('.') {
        Some((schema, table)) => format!("{}.{}", quote_ident(schema), quote_ident(table)),
        None => quote_ident(name),
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

    // pubtruncate is 11+, pubviaroot 13+.
    let publication = client
        .query_opt(
            &format!(
                "SELECT puballtables, pubinsert, pubupdate, pubdelete, {}, {}
                 FROM pg_publication WHERE pubname = $1",
                if server_version_num >= 110_000 {
                    "pubtruncate"
                } else {
                    "false"
                },
                if server_version_num >= 130_000 {
                    "pubviaroot"
                } else {
                    "false"
                },
            ),
            &[&cfg.publication_name],
        )
        .await?;
    let (publication_exists, publication_all_tables, publication_ops, publication_via_root) =
        match &publication {
            None => (false, false, Vec::new(), false),
            Some(r) => {
                let mut ops = Vec::new();
                for (i, name) in [(1, "insert"), (2, "update"), (3, "delete"), (4, "truncate")] {
                    if r.try_get::<_, bool>(i)? {
                        ops.push(name.to_string());
                    }
                }
                (true, r.try_get(0)?, ops, r.try_get(5)?)
            }
        };

    let mut tables = Vec::new();
    for t in &cfg.tables {
        tables.push(inspect_table(client, cfg, server_version_num, t).await?);
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
        publication_via_root,
        publication_name: cfg.publication_name.clone(),
        tables,
        will_set_replica_identity_full: cfg.set_replica_identity_full,
    })
}

fn identity_name(code: &str) -> String {
    match code {
        "d" => "default",
        "n" => "nothing",
        "f" => "full",
        "i" => "index",
        other => other,
    }
    .to_string()
}

/// The replica identity index of a relation and its key columns, if it has one.
async fn identity_index(
    client: &Client,
    oid: u32,
) -> Result<(Option<String>, Vec<String>), SourceError> {
    let row = client
        .query_opt(
            "SELECT ic.relname::text,
                    array(SELECT a.attname::text
                          FROM unnest(i.indkey[0:i.indnkeyatts - 1]) WITH ORDINALITY AS k(attnum, ord)
                          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                          ORDER BY k.ord)
             FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
             WHERE i.indrelid = $1 AND i.indisreplident",
            &[&oid],
        )
        .await?;
    Ok(match row {
        Some(r) => (Some(r.try_get(0)?), r.try_get(1)?),
        None => (None, Vec::new()),
    })
}

async fn inspect_table(
    client: &Client,
    cfg: &SourceConfig,
    server_version_num: u32,
    t: &TableName,
) -> Result<TableReport, SourceError> {
    // Membership: listed by pg_publication_tables (which also resolves FOR ALL TABLES,
    // schemas and partition roots), or named in pg_publication_rel itself (a partitioned
    // table in a publication without publish_via_partition_root is listed as its leaves).
    let row = client
        .query_opt(
            "SELECT c.oid, c.relreplident::text,
                    has_table_privilege(c.oid, 'SELECT'),
                    EXISTS (SELECT 1 FROM pg_publication_tables p
                            WHERE p.pubname = $3 AND p.schemaname = n.nspname AND p.tablename = c.relname)
                    OR EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication pb ON pb.oid = pr.prpubid
                               WHERE pb.pubname = $3 AND pr.prrelid = c.oid),
                    c.relkind = 'p'
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
            replica_identity_index: None,
            replica_identity_columns: Vec::new(),
            primary_key: Vec::new(),
            in_publication: false,
            can_select: false,
            partitioned: false,
            partitions: Vec::new(),
            partition_of: Vec::new(),
            published_through: None,
            row_filter: None,
            column_list: false,
        });
    };
    let oid: u32 = row.try_get(0)?;
    let ident: String = row.try_get(1)?;
    let partitioned: bool = row.try_get(4)?;
    let (replica_identity_index, replica_identity_columns) = if ident == "i" {
        identity_index(client, oid).await?
    } else {
        (None, Vec::new())
    };

    // Leaf partitions of a partitioned table, with their replica identities.
    let mut partitions = Vec::new();
    if partitioned {
        let leaves = client
            .query(
                "WITH RECURSIVE tree(relid) AS (
                     SELECT $1::oid
                     UNION ALL
                     SELECT i.inhrelid FROM tree t JOIN pg_inherits i ON i.inhparent = t.relid)
                 SELECT c.oid, n.nspname::text || '.' || c.relname::text, c.relreplident::text
                 FROM tree t JOIN pg_class c ON c.oid = t.relid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind = 'r' ORDER BY 2",
                &[&oid],
            )
            .await?;
        for leaf in leaves {
            let leaf_oid: u32 = leaf.try_get(0)?;
            let leaf_ident: String = leaf.try_get(2)?;
            let (index, columns) = if leaf_ident == "i" {
                identity_index(client, leaf_oid).await?
            } else {
                (None, Vec::new())
            };
            partitions.push(PartitionIdentity {
                table: leaf.try_get(1)?,
                replica_identity: identity_name(&leaf_ident),
                replica_identity_index: index,
                replica_identity_columns: columns,
            });
        }
    }

    // Ancestors of a partition, nearest first, and whether the publication publishes
    // one of them (then, through the root, this partition's changes arrive as its).
    let ancestors = client
        .query(
            "WITH RECURSIVE anc(relid, depth) AS (
                 SELECT i.inhparent, 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhrelid = $1 AND c.relispartition
                 UNION ALL
                 SELECT i.inhparent, a.depth + 1 FROM anc a
                 JOIN pg_inherits i ON i.inhrelid = a.relid
                 JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE c.relispartition)
             SELECT n.nspname::text || '.' || c.relname::text,
                    EXISTS (SELECT 1 FROM pg_publication_tables p
                            WHERE p.pubname = $2 AND p.schemaname = n.nspname AND p.tablename = c.relname)
             FROM anc a JOIN pg_class c ON c.oid = a.relid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             ORDER BY a.depth",
            &[&oid, &cfg.publication_name],
        )
        .await?;
    let mut partition_of = Vec::new();
    let mut published_through = None;
    for a in ancestors {
        let name: String = a.try_get(0)?;
        if a.try_get::<_, bool>(1)? {
            // The topmost published ancestor is the one the changes arrive under.
            published_through = Some(name.clone());
        }
        partition_of.push(name);
    }

    // Row filters and column lists (PostgreSQL 15+).
    let (row_filter, column_list) = if server_version_num >= 150_000 {
        match client
            .query_opt(
                "SELECT pg_get_expr(pr.prqual, pr.prrelid), pr.prattrs IS NOT NULL
                 FROM pg_publication_rel pr JOIN pg_publication pb ON pb.oid = pr.prpubid
                 WHERE pb.pubname = $1 AND pr.prrelid = $2",
                &[&cfg.publication_name, &oid],
            )
            .await?
        {
            Some(r) => (r.try_get(0)?, r.try_get(1)?),
            None => (None, false),
        }
    } else {
        (None, false)
    };
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
        replica_identity: Some(identity_name(&ident)),
        replica_identity_index,
        replica_identity_columns,
        primary_key: pk,
        can_select: row.try_get(2)?,
        in_publication: row.try_get(3)?,
        partitioned,
        partitions,
        partition_of,
        published_through,
        row_filter,
        column_list,
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
    let outcome = apply(client, repl, cfg, &report).await?;
    Ok((report, outcome))
}

/// The second half of [`ensure`], for a caller that inspected the source (and checked
/// [`SourceReport::ready`]) itself, e.g. to decide about a missing slot before it is
/// created: creates what `report` shows missing. Never drops or removes anything.
pub async fn apply(
    client: &Client,
    repl: &mut ReplicationConnection,
    cfg: &SourceConfig,
    report: &SourceReport,
) -> Result<SetupOutcome, SourceError> {
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
        // Every operation, and partitioned tables through their root (13+): changes of
        // every partition arrive under the root's relation, one target table.
        let with = if report.server_version_num >= 130_000 {
            format!("publish = '{PUBLISH_ALL}', publish_via_partition_root = true")
        } else {
            format!("publish = '{PUBLISH_ALL}'")
        };
        client
            .batch_execute(&format!(
                "CREATE PUBLICATION {pub_ident} FOR TABLE {} WITH ({with})",
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
    let mut not_full = Vec::new();
    for (t, r) in cfg.tables.iter().zip(&report.tables) {
        let ident = r.replica_identity.as_deref().unwrap_or("default");
        let leaves_full = r.partitions.iter().all(|l| l.replica_identity == "full");
        if ident == "full" && leaves_full {
            continue;
        }
        if cfg.set_replica_identity_full {
            // A partition's own identity decides what its updates and deletes carry.
            let mut targets = Vec::new();
            if ident != "full" {
                targets.push(t.quoted());
            }
            targets.extend(
                r.partitions
                    .iter()
                    .filter(|l| l.replica_identity != "full")
                    .map(|l| quote_table(&l.table)),
            );
            for target in targets {
                client
                    .batch_execute(&format!("ALTER TABLE {target} REPLICA IDENTITY FULL"))
                    .await?;
            }
            info!(table = %t, "set REPLICA IDENTITY FULL (SOURCE_SET_REPLICA_IDENTITY_FULL)");
        } else {
            not_full.push(format!("{t} ({ident})"));
        }
    }
    if !not_full.is_empty() {
        // One line for all of them: a job of hundreds of tables would print hundreds.
        info!(count = not_full.len(), tables = %not_full.join(", "), "replica identity is not FULL: updates that leave TOASTed columns unchanged will be loaded as partial updates");
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
    Ok(outcome)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_identity_index_must_cover_the_primary_key() {
        let pk = cols(&["id", "region"]);
        assert_eq!(identity_problem("default", None, &[], &pk), None);
        assert_eq!(identity_problem("full", None, &[], &pk), None);
        // Covers the key (and more): deletes carry every key column.
        assert_eq!(
            identity_problem("index", Some("i"), &cols(&["region", "id", "x"]), &pk),
            None
        );
        assert_eq!(
            identity_problem("index", Some("code_idx"), &cols(&["code", "id"]), &pk).unwrap(),
            "REPLICA IDENTITY USING INDEX code_idx (code, id), which lacks primary key column(s) region: a delete or key change arrives with only the index's columns and cannot be matched to a row by the primary key StarRocks uses"
        );
        assert!(identity_problem("index", None, &[], &pk)
            .unwrap()
            .contains("no longer exists"));
        assert!(identity_problem("nothing", None, &[], &pk)
            .unwrap()
            .starts_with("REPLICA IDENTITY NOTHING"));
    }
}
