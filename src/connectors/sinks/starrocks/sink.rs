//! The StarRocks [`LoadSink`]: maps relations to target tables (through the PostgreSQL
//! type catalog), checks or creates the targets, encodes planned rows as Stream Load
//! bodies (JSON by default, CSV as an option) and loads them with retries.
//!
//! Construction needs PostgreSQL (the catalog: an unmapped type or a table without a
//! primary key is a permanent error found there) but not StarRocks: the targets are
//! checked by [`StarRocksLoadSink::check_targets`] and again before the first load, so a
//! StarRocks outage at start is waited out (invariant 13). Transient failures (StarRocks
//! or PostgreSQL unreachable, 5xx, back-pressure) are retried here with the project's
//! backoff for as long as it takes, shown through the [`RetryNote`]; what reaches the
//! loader is success or a typed permanent failure (invariant 6).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tracing::{debug, info};

use super::catalog::{Catalog, TableInfo};
use super::csv;
use super::stream_load::{LoadFormat, LoadRequest, LoadStatus, SinkError, StreamLoadClient};
use super::tables::{target_names, target_table_name, TableAdmin, TableError, SOFT_DELETE_COLUMN};
use super::types::{
    map_relation, to_csv_field, write_json_string, write_json_value, ColumnMapping,
};
use crate::config::{Config, DeleteMode, SinkConfig, SinkFormat, TableName};
use crate::core::retry::RetryPolicy;
use crate::core::{Relation, RelationId, Value};
use crate::pipeline::loader::{
    LoadBatch, LoadResult, LoadSink, PreparedTable, RejectedLoad, RetryNote, SinkFailure,
};
use crate::pipeline::plan::{ColumnSet, RowOp};

/// Column mappings per (relation, schema version).
type MappingCache = HashMap<(RelationId, u32), Arc<Vec<ColumnMapping>>>;

/// Whether a relation (from a Relation message) has exactly the columns the catalog
/// described: same names, types and modifiers, in the same order.
fn same_columns(described: &Relation, rel: &Relation) -> bool {
    described.columns.len() == rel.columns.len()
        && described.columns.iter().zip(&rel.columns).all(|(a, b)| {
            a.name == b.name && a.type_oid == b.type_oid && a.type_modifier == b.type_modifier
        })
}

/// The StarRocks implementation of [`LoadSink`].
pub struct StarRocksLoadSink {
    client: StreamLoadClient,
    admin: TableAdmin,
    catalog: Catalog,
    cfg: SinkConfig,
    names: BTreeMap<TableName, String>,
    retry: RetryPolicy,
    mappings: Mutex<MappingCache>,
    /// The catalog's description of every configured table, read once at construction.
    described: Vec<TableInfo>,
    /// Tables whose target `check_targets` found ready, with the description it was
    /// checked against: the first `prepare` of a relation with exactly those columns uses
    /// it instead of reading both catalogs again (one table at a time, that took seconds
    /// for a job of hundreds of tables). Used once; later relations are checked anew.
    checked: Mutex<HashMap<TableName, TableInfo>>,
}

/// A StarRocks table error as a sink failure: transient ones say that dbmazz retries.
fn table_failure(e: TableError) -> SinkFailure {
    if e.is_transient() {
        SinkFailure::transient(format!("{e}; dbmazz keeps retrying"))
    } else {
        SinkFailure::permanent(e.to_string())
    }
}

/// The configured-table name of a relation.
fn table_name(rel: &Relation) -> TableName {
    TableName {
        schema: rel.namespace.clone(),
        name: rel.name.clone(),
    }
}

/// Positions in `rel.columns` of the primary key columns `keys` (matched by name).
fn key_positions(rel: &Relation, keys: &[String]) -> Result<Vec<usize>, SinkFailure> {
    let table = rel.qualified_name();
    if keys.is_empty() {
        return Err(table_failure(TableError::NoKey(table)));
    }
    keys.iter()
        .map(|k| {
            rel.columns.iter().position(|c| &c.name == k).ok_or_else(|| {
                SinkFailure::permanent(format!(
                    "source table {table}: primary key column {k} is not replicated (the publication's column list must include every primary key column)"
                ))
            })
        })
        .collect()
}

/// Retries of a Stream Load (and of the sink's DDL and catalog calls). The delay is
/// capped at 10 s rather than the default 60 s: while StarRocks is down a probe every 10 s
/// costs nothing, and once it is back the backlog starts loading within seconds instead
/// of idling up to a minute (a long outage reached the 60 s cap).
pub fn load_retry() -> RetryPolicy {
    RetryPolicy::new(Duration::from_millis(500), Duration::from_secs(10))
}

impl StarRocksLoadSink {
    /// Builds the sink without contacting StarRocks: the HTTP client, the (lazy) MySQL
    /// admin, and the PostgreSQL catalog connection, with which every configured table is
    /// mapped now (an unmapped type, a missing table or a table without a primary key is
    /// a permanent error here, not a surprise at the first load).
    pub async fn new(cfg: &Config, sink: &SinkConfig) -> Result<Self, SinkFailure> {
        Self::with_retry(cfg, sink, load_retry()).await
    }

    /// [`StarRocksLoadSink::new`] with a retry policy (tests use short delays).
    pub async fn with_retry(
        cfg: &Config,
        sink: &SinkConfig,
        retry: RetryPolicy,
    ) -> Result<Self, SinkFailure> {
        let client =
            StreamLoadClient::new(sink).map_err(|e| SinkFailure::permanent(e.to_string()))?;
        let admin = TableAdmin::new(sink);
        let names = target_names(&sink.table_name_template, &cfg.source.tables)
            .map_err(|e| SinkFailure::permanent(e.to_string()))?;
        let catalog =
            Catalog::connect(&cfg.source.conn, retry.clone(), sink.request_timeout).await?;
        let described = catalog.describe_all(&cfg.source.tables, None).await?;
        for info in &described {
            key_positions(&info.relation, &info.keys)?;
            map_relation(&info.relation, &info.types, Some(&info.keys))
                .map_err(|e| SinkFailure::permanent(e.to_string()))?;
        }
        Ok(StarRocksLoadSink {
            client,
            admin,
            catalog,
            cfg: sink.clone(),
            names,
            retry,
            mappings: Mutex::new(HashMap::new()),
            described,
            checked: Mutex::new(HashMap::new()),
        })
    }

    /// Checks (and with SINK_CREATE_TABLES creates) the target of every configured table,
    /// once, against the catalog description read at construction: one
    /// information_schema query for all targets, DDL only where something is created or
    /// added. Permanent problems (credentials, an incompatible target, a missing table
    /// with SINK_CREATE_TABLES=false) come back permanent; StarRocks being unreachable
    /// comes back transient, and the caller carries on: the loader checks each target
    /// again (retrying) before its first load.
    pub async fn check_targets(&self) -> Result<(), SinkFailure> {
        let targets: Vec<String> = self
            .described
            .iter()
            .map(|i| self.target_name(&i.relation))
            .collect();
        let refs: Vec<&str> = targets.iter().map(String::as_str).collect();
        let mut existing = self
            .admin
            .describe_all(&refs)
            .await
            .map_err(table_failure)?;
        for (info, target) in self.described.iter().zip(&targets) {
            let mappings = map_relation(&info.relation, &info.types, Some(&info.keys))
                .map_err(|e| SinkFailure::permanent(e.to_string()))?;
            let source = info.relation.qualified_name();
            let outcome = self
                .admin
                .ensure_described(
                    &source,
                    target,
                    &mappings,
                    &info.keys,
                    existing.remove(target),
                )
                .await
                .map_err(table_failure)?;
            debug!(source = %source, target = %target, ?outcome, "target table ready");
            self.checked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(table_name(&info.relation), info.clone());
        }
        info!(tables = self.described.len(), "target tables ready");
        Ok(())
    }

    /// Maps the relation's columns and checks / creates / extends its target, retrying
    /// transient failures through `note`.
    async fn ensure_target(
        &self,
        rel: &Relation,
        note: &RetryNote,
    ) -> Result<(Arc<Vec<ColumnMapping>>, Vec<usize>), SinkFailure> {
        let (keys, types) = self.catalog.key_and_types(rel, Some(note)).await?;
        let key_columns = key_positions(rel, &keys)?;
        let mappings = map_relation(rel, &types, Some(&keys))
            .map_err(|e| SinkFailure::permanent(e.to_string()))?;
        let target = self.target_name(rel);
        let source = rel.qualified_name();
        let outcome = self
            .retrying(&format!("preparing target table {target}"), note, || {
                self.admin.ensure_table(&source, &target, &mappings, &keys)
            })
            .await?;
        info!(source = %source, target = %target, ?outcome, "target table ready");
        Ok((Arc::new(mappings), key_columns))
    }

    fn mapping(&self, id: RelationId, v: u32) -> Result<Arc<Vec<ColumnMapping>>, SinkFailure> {
        self.mappings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(id, v))
            .cloned()
            .ok_or_else(|| {
                SinkFailure::permanent(format!("relation {id} version {v} was not prepared"))
            })
    }

    /// Encodes the rows of one load; returns (body, columns header, partial).
    fn encode(
        &self,
        b: &LoadBatch<'_>,
        maps: &[ColumnMapping],
    ) -> Result<(Bytes, Option<Vec<String>>, bool), SinkFailure> {
        let soft = self.cfg.delete_mode == DeleteMode::Soft;
        let names: Vec<&str> = b.relation.columns.iter().map(|c| c.name.as_str()).collect();
        let (partial, listed): (bool, Option<&[usize]>) = match b.columns {
            ColumnSet::Full => (false, None),
            ColumnSet::Partial(cols) => (true, Some(cols)),
        };
        let op_of = |op: RowOp| -> (u8, Option<bool>) {
            match (op, soft) {
                (RowOp::Upsert, false) => (0, None),
                (RowOp::Delete, false) => (1, None),
                (RowOp::Upsert, true) => (0, Some(false)),
                (RowOp::Delete, true) => (0, Some(true)),
            }
        };
        let columns_header = |cols: &mut dyn Iterator<Item = usize>| -> Vec<String> {
            let mut v: Vec<String> = cols.map(|i| names[i].to_string()).collect();
            if soft {
                v.push(SOFT_DELETE_COLUMN.to_string());
            }
            v.push("__op".to_string());
            v
        };
        match self.cfg.format {
            SinkFormat::Json => {
                // `"name":` of every column, escaped once per load rather than per row.
                let keys: Vec<String> = names
                    .iter()
                    .map(|n| {
                        let mut k = String::with_capacity(n.len() + 3);
                        write_json_string(n, &mut k);
                        k.push(':');
                        k
                    })
                    .collect();
                let mut s = String::with_capacity(b.rows.len() * 64);
                s.push('[');
                for (n, row) in b.rows.iter().enumerate() {
                    if n > 0 {
                        s.push(',');
                    }
                    s.push('{');
                    for (i, v) in &row.values {
                        s.push_str(&keys[*i]);
                        match v {
                            Value::Null => s.push_str("null"),
                            Value::Text(t) => write_json_value(t, &maps[*i], &mut s)
                                .map_err(|e| SinkFailure::permanent(e.to_string()))?,
                            Value::Binary(_) | Value::UnchangedToast => {
                                return Err(SinkFailure::permanent(format!(
                                    "{}: column {} has a value the loader cannot encode ({v:?})",
                                    b.relation.qualified_name(),
                                    names[*i]
                                )))
                            }
                        }
                        s.push(',');
                    }
                    // No per-row formatting allocations: this is the hot path.
                    let (op, deleted) = op_of(row.op);
                    if let Some(d) = deleted {
                        s.push('"');
                        s.push_str(SOFT_DELETE_COLUMN);
                        s.push_str(if d { "\":true," } else { "\":false," });
                    }
                    s.push_str(if op == 0 {
                        "\"__op\":0}"
                    } else {
                        "\"__op\":1}"
                    });
                    if n == 0 {
                        // Size the body from its first row (+1/8) rather than doubling
                        // from a guess: fewer copies, and no buffer twice the body's size.
                        let per_row = s.len();
                        let rest = b.rows.len() - 1;
                        s.reserve(per_row.saturating_mul(rest) + per_row.saturating_mul(rest) / 8);
                    }
                }
                s.push(']');
                let header = listed.map(|c| columns_header(&mut c.iter().copied()));
                Ok((Bytes::from(s), header, partial))
            }
            SinkFormat::Csv => {
                // CSV is positional: every row of a load has the same columns.
                let cols: Vec<usize> = match listed {
                    Some(c) => c.to_vec(),
                    None => (0..names.len()).collect(),
                };
                let mut out = Vec::with_capacity(b.rows.len() * 64);
                let mut fields: Vec<Option<String>> = Vec::with_capacity(cols.len() + 2);
                for row in b.rows {
                    fields.clear();
                    // Row values are in column order (the planner builds them so): walk
                    // them alongside `cols` instead of indexing through a map per row.
                    let mut vals = row.values.iter().peekable();
                    for i in &cols {
                        while vals.next_if(|(j, _)| j < i).is_some() {}
                        let v = vals.next_if(|(j, _)| j == i).map(|(_, v)| v);
                        fields.push(match v {
                            None | Some(Value::Null) => None,
                            Some(Value::Text(t)) => to_csv_field(t, &maps[*i])
                                .map_err(|e| SinkFailure::permanent(e.to_string()))?,
                            Some(other) => {
                                return Err(SinkFailure::permanent(format!(
                                "{}: column {} has a value the loader cannot encode ({other:?})",
                                b.relation.qualified_name(),
                                names[*i]
                            )))
                            }
                        });
                    }
                    let (op, deleted) = op_of(row.op);
                    if let Some(d) = deleted {
                        fields.push(Some(d.to_string()));
                    }
                    fields.push(Some(if op == 0 { "0" } else { "1" }.to_string()));
                    csv::write_row(&fields, &mut out);
                }
                Ok((
                    Bytes::from(out),
                    Some(columns_header(&mut cols.into_iter())),
                    partial,
                ))
            }
        }
    }

    /// Runs a StarRocks table operation, retrying while it fails transiently (the MySQL
    /// port unreachable, the connection lost), with the project's backoff.
    async fn retrying<T, F, Fut>(
        &self,
        what: &str,
        note: &RetryNote,
        f: F,
    ) -> Result<T, SinkFailure>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, TableError>>,
    {
        let mut backoff = self.retry.backoff();
        loop {
            match f().await {
                Ok(v) => {
                    if backoff.attempts() > 0 {
                        note.recovered();
                    }
                    return Ok(v);
                }
                Err(e) if e.is_transient() => {
                    let Some(delay) = backoff.next_delay() else {
                        return Err(table_failure(e));
                    };
                    note.retrying(what, backoff.attempts(), delay, &e.to_string());
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(table_failure(e)),
            }
        }
    }
}

/// A Stream Load error as a sink failure, with the source table named once.
fn load_failure(source: &str, e: SinkError) -> SinkFailure {
    match e {
        SinkError::Rejected(r) => {
            let message = format!("source table {source}: {r}");
            SinkFailure::rejected(
                RejectedLoad {
                    table: r.table,
                    label: r.label,
                    error_url: r.error_url,
                    rows_sent: r.rows_sent,
                    rows_loaded: r.counts.loaded,
                    rows_filtered: r.counts.filtered,
                    rows_unselected: r.counts.unselected,
                    label_committed: r.label_committed,
                },
                message,
            )
        }
        e if e.is_transient() => SinkFailure::transient(format!("source table {source}: {e}")),
        e => SinkFailure::permanent(format!("source table {source}: {e}")),
    }
}

impl LoadSink for StarRocksLoadSink {
    fn target_name(&self, relation: &Relation) -> String {
        self.names
            .get(&table_name(relation))
            .cloned()
            .unwrap_or_else(|| {
                target_table_name(
                    &self.cfg.table_name_template,
                    &relation.namespace,
                    &relation.name,
                )
            })
    }

    async fn prepare(
        &self,
        relation: &Relation,
        rel_version: u32,
        note: &RetryNote,
    ) -> Result<PreparedTable, SinkFailure> {
        let checked = {
            let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
            let name = table_name(relation);
            match checked.get(&name) {
                Some(info) if same_columns(&info.relation, relation) => checked.remove(&name),
                _ => None,
            }
        };
        let (maps, key_columns) = match checked {
            Some(info) => {
                let key_columns = key_positions(relation, &info.keys)?;
                let maps = map_relation(relation, &info.types, Some(&info.keys))
                    .map_err(|e| SinkFailure::permanent(e.to_string()))?;
                (Arc::new(maps), key_columns)
            }
            None => self.ensure_target(relation, note).await?,
        };
        self.mappings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((relation.id, rel_version), maps);
        Ok(PreparedTable { key_columns })
    }

    async fn load(&self, batch: LoadBatch<'_>) -> Result<LoadResult, SinkFailure> {
        let maps = self.mapping(batch.relation.id, batch.rel_version)?;
        let (body, columns, partial_update) = self.encode(&batch, &maps)?;
        let target = self.target_name(batch.relation);
        let req = LoadRequest {
            database: self.cfg.database.clone(),
            table: target.clone(),
            label: batch.label.clone(),
            body,
            format: match self.cfg.format {
                SinkFormat::Json => LoadFormat::Json,
                SinkFormat::Csv => LoadFormat::Csv,
            },
            columns,
            partial_update,
            rows: batch.rows.len(),
        };
        // The error names the target and the label; the note adds the source table.
        let source = batch.relation.qualified_name();
        let outcome = self
            .client
            .load_with_retry(&req, &self.retry, |e, attempt, delay| {
                batch.note.retrying(&source, attempt, delay, &e.to_string())
            })
            .await
            .map_err(|e| load_failure(&source, e))?;
        if outcome.attempts > 1 {
            batch.note.recovered();
            info!(target = %target, label = %batch.label, attempts = outcome.attempts, "load succeeded after retries");
        }
        Ok(match outcome.status {
            LoadStatus::AlreadyLoaded => LoadResult::AlreadyLoaded,
            LoadStatus::Success | LoadStatus::PublishTimeout => LoadResult::Loaded,
        })
    }

    async fn truncate(&self, relation: &Relation, note: &RetryNote) -> Result<(), SinkFailure> {
        let target = self.target_name(relation);
        self.retrying(&format!("TRUNCATE TABLE {target}"), note, || {
            self.admin.truncate(&target)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Column, ReplicaIdentity};

    /// However long StarRocks stays down, a load is retried at least every 10 s, so the
    /// backlog starts moving within seconds of its return.
    #[test]
    fn load_retries_never_wait_more_than_ten_seconds() {
        let mut b = load_retry().backoff();
        let delays: Vec<Duration> = (0..200).map_while(|_| b.next_delay()).collect();
        assert_eq!(delays.len(), 200, "retried for as long as it takes");
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(10)),
            "{delays:?}"
        );
        assert!(
            delays[100..].iter().all(|d| *d >= Duration::from_secs(5)),
            "the cap is reached (jitter shortens by at most 30%): {delays:?}"
        );
    }

    fn rel(cols: &[&str]) -> Relation {
        Relation {
            id: 1,
            namespace: "public".into(),
            name: "t".into(),
            replica_identity: ReplicaIdentity::Full,
            columns: cols
                .iter()
                .map(|c| Column {
                    name: (*c).into(),
                    // REPLICA IDENTITY FULL: pgoutput flags every column as key.
                    is_key: true,
                    type_oid: 23,
                    type_modifier: -1,
                })
                .collect(),
        }
    }

    #[test]
    fn key_positions_come_from_the_catalog_key_by_name() {
        let r = rel(&["a", "id2", "b", "id1"]);
        assert_eq!(
            key_positions(&r, &["id1".into(), "id2".into()]).unwrap(),
            vec![3, 1]
        );
        let e = key_positions(&r, &[]).unwrap_err();
        assert_eq!(e.kind, crate::pipeline::loader::SinkFailureKind::Permanent);
        assert_eq!(
            e.message,
            "source table public.t has no primary key; StarRocks PRIMARY KEY tables need one (add a primary key to the source table, or remove it from TABLES)"
        );
        let e = key_positions(&r, &["zz".into()]).unwrap_err();
        assert!(!e.is_transient());
        assert!(
            e.message.contains("zz") && e.message.contains("public.t"),
            "{e}"
        );
    }

    #[test]
    fn transient_table_errors_say_that_dbmazz_retries() {
        let f = table_failure(TableError::Connect {
            host: "127.0.0.1".into(),
            port: 1,
            cause: "connection refused".into(),
        });
        assert!(f.is_transient());
        assert_eq!(
            f.message,
            "cannot connect to the StarRocks FE MySQL port 127.0.0.1:1 (SINK_URL host, SINK_PORT): connection refused; dbmazz keeps retrying"
        );
        let f = table_failure(TableError::NoKey("public.t".into()));
        assert!(!f.is_transient());
    }
}
