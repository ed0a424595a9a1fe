//! The loader's StarRocks sink: maps relations to target tables (through the PostgreSQL
//! type catalog), checks or creates the targets, encodes planned rows as Stream Load
//! bodies (JSON by default, CSV as an option) and loads them with retries.
//!
//! Transient failures (StarRocks or PostgreSQL unreachable, 5xx, back-pressure) are
//! retried here with capped backoff for as long as it takes; what reaches the loader is
//! success or a permanent error (invariant 6).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio_postgres::Client;
use tracing::info;

use super::loader::{LoadBatch, LoadResult, LoadSink, PreparedTable, RetryNote, SinkFailure};
use super::plan::{ColumnSet, RowOp};
use crate::config::{Config, DeleteMode, SinkConfig, SinkFormat, TableName};
use crate::connectors::sinks::starrocks::csv;
use crate::connectors::sinks::starrocks::tables::{
    target_names, target_table_name, SOFT_DELETE_COLUMN,
};
use crate::connectors::sinks::starrocks::types::{to_csv_field, write_json_string};
use crate::connectors::sinks::starrocks::{
    map_relation, write_json_value, ColumnMapping, LoadFormat, LoadRequest, LoadStatus,
    RetryPolicy, StreamLoadClient, TableAdmin,
};
use crate::connectors::sources::postgres::catalog::{primary_key, resolve_types};
use crate::connectors::sources::postgres::client;
use crate::core::{Column, Relation, RelationId, ReplicaIdentity, Value};

/// Column mappings per (relation, schema version).
type MappingCache = HashMap<(RelationId, u32), Arc<Vec<ColumnMapping>>>;

/// The StarRocks implementation of [`LoadSink`].
pub struct StarRocksLoadSink {
    client: StreamLoadClient,
    admin: TableAdmin,
    pg: Client,
    cfg: SinkConfig,
    names: BTreeMap<TableName, String>,
    retry: RetryPolicy,
    mappings: Mutex<MappingCache>,
}

fn fail(what: &str, e: impl std::fmt::Display) -> SinkFailure {
    SinkFailure::permanent(format!("{what}: {e}"))
}

impl StarRocksLoadSink {
    /// Connects to StarRocks (HTTP client, MySQL port) and PostgreSQL (catalog), and checks
    /// every configured table now: unmapped types, missing or incompatible targets and
    /// bad credentials are startup errors, not surprises at the first load.
    pub async fn connect(cfg: &Config, sink: &SinkConfig) -> Result<Self, SinkFailure> {
        let client = StreamLoadClient::new(sink).map_err(|e| fail("Stream Load client", e))?;
        let admin = TableAdmin::connect(sink)
            .await
            .map_err(|e| fail("StarRocks MySQL port", e))?;
        let pg = client::connect(&cfg.source.conn)
            .await
            .map_err(|e| fail("PostgreSQL catalog connection", e))?;
        let names = target_names(&sink.table_name_template, &cfg.source.tables)
            .map_err(|e| fail("target names", e))?;
        let me = StarRocksLoadSink {
            client,
            admin,
            pg,
            cfg: sink.clone(),
            names,
            retry: RetryPolicy::default(),
            mappings: Mutex::new(HashMap::new()),
        };
        for t in &cfg.source.tables {
            let rel = me.relation_from_catalog(t).await?;
            me.ensure_target(&rel).await?;
        }
        Ok(me)
    }

    /// The table as the catalog describes it now (for checks before any Relation message).
    async fn relation_from_catalog(&self, t: &TableName) -> Result<Relation, SinkFailure> {
        let rows = self
            .pg
            .query(
                "SELECT a.attname::text, a.atttypid, a.atttypmod
                 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
                 ORDER BY a.attnum",
                &[&t.schema, &t.name],
            )
            .await
            .map_err(|e| fail(&format!("columns of {t}"), e))?;
        let keys = primary_key(&self.pg, &t.schema, &t.name)
            .await
            .map_err(|e| fail(&format!("primary key of {t}"), e))?;
        let columns = rows
            .iter()
            .map(|r| {
                let name: String = r.get(0);
                Column {
                    is_key: keys.contains(&name),
                    name,
                    type_oid: r.get(1),
                    type_modifier: r.get(2),
                }
            })
            .collect();
        Ok(Relation {
            id: 0,
            namespace: t.schema.clone(),
            name: t.name.clone(),
            replica_identity: ReplicaIdentity::Default,
            columns,
        })
    }

    /// Maps the relation's columns and checks / creates / extends its target.
    async fn ensure_target(
        &self,
        rel: &Relation,
    ) -> Result<(Arc<Vec<ColumnMapping>>, Vec<usize>), SinkFailure> {
        let oids: Vec<u32> = rel.columns.iter().map(|c| c.type_oid).collect();
        let types = resolve_types(&self.pg, &oids)
            .await
            .map_err(|e| fail("PostgreSQL type catalog", e))?;
        let keys = primary_key(&self.pg, &rel.namespace, &rel.name)
            .await
            .map_err(|e| fail(&format!("primary key of {}", rel.qualified_name()), e))?;
        let mappings = map_relation(rel, &types, Some(&keys))
            .map_err(|e| SinkFailure::permanent(e.to_string()))?;
        let target = self.target_name(rel);
        let outcome = self
            .admin
            .ensure_table(&rel.qualified_name(), &target, &mappings, &keys)
            .await
            .map_err(|e| SinkFailure::permanent(e.to_string()))?;
        info!(source = %rel.qualified_name(), target = %target, ?outcome, "target table ready");
        let positions = rel
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| keys.contains(&c.name))
            .map(|(i, _)| i)
            .collect();
        Ok((Arc::new(mappings), positions))
    }

    fn mapping(&self, id: RelationId, v: u32) -> Result<Arc<Vec<ColumnMapping>>, SinkFailure> {
        self.mappings
            .lock()
            .map_err(|_| SinkFailure::permanent("mapping cache poisoned"))?
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
                let mut s = String::with_capacity(b.rows.len() * 64);
                s.push('[');
                for (n, row) in b.rows.iter().enumerate() {
                    if n > 0 {
                        s.push(',');
                    }
                    s.push('{');
                    for (i, v) in &row.values {
                        write_json_string(names[*i], &mut s);
                        s.push(':');
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

    /// Retries `f` while its error is worth retrying (connection problems).
    async fn retrying<T, F, Fut>(
        &self,
        what: &str,
        note: &RetryNote,
        transient: impl Fn(&SinkFailure) -> bool,
        mut f: F,
    ) -> Result<T, SinkFailure>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, SinkFailure>>,
    {
        let mut attempt = 1u32;
        loop {
            match f().await {
                Ok(v) => {
                    if attempt > 1 {
                        note.recovered();
                    }
                    return Ok(v);
                }
                Err(e) if transient(&e) => {
                    let delay = self.retry.delay(attempt);
                    note.retrying(what, attempt, delay, &e.message);
                    tokio::time::sleep(delay).await;
                    attempt = attempt.saturating_add(1);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Connection-level failures of the catalog or the MySQL port: worth a retry.
fn looks_transient(e: &SinkFailure) -> bool {
    let m = e.message.to_ascii_lowercase();
    [
        "connection",
        "timed out",
        "refused",
        "reset",
        "broken pipe",
        "io error",
        "closed",
    ]
    .iter()
    .any(|p| m.contains(p))
}

impl LoadSink for StarRocksLoadSink {
    fn target_name(&self, relation: &Relation) -> String {
        let key = TableName {
            schema: relation.namespace.clone(),
            name: relation.name.clone(),
        };
        self.names.get(&key).cloned().unwrap_or_else(|| {
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
        // Catalog queries and DDL are bounded: a hang becomes a logged, retried failure.
        let limit = self.cfg.request_timeout;
        let (maps, key_columns) = self
            .retrying("preparing target table", note, looks_transient, || async {
                tokio::time::timeout(limit, self.ensure_target(relation))
                    .await
                    .unwrap_or_else(|_| {
                        Err(SinkFailure::permanent(format!(
                            "preparing the target of {} timed out after {limit:?}",
                            relation.qualified_name()
                        )))
                    })
            })
            .await?;
        self.mappings
            .lock()
            .map_err(|_| SinkFailure::permanent("mapping cache poisoned"))?
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
        let outcome = self
            .client
            .load_with_retry(&req, &self.retry, |e, attempt, delay| {
                batch.note.retrying(&target, attempt, delay, &e.to_string())
            })
            .await
            .map_err(|e| {
                let rejected = matches!(
                    e,
                    crate::connectors::sinks::starrocks::SinkError::Filtered(_)
                );
                let f = if rejected {
                    SinkFailure::rejected
                } else {
                    SinkFailure::permanent
                };
                f(format!(
                    "loading {} into {target} (label {}): {e}",
                    batch.relation.qualified_name(),
                    batch.label
                ))
            })?;
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
        self.retrying("TRUNCATE TABLE", note, looks_transient, || async {
            self.admin.truncate(&target).await.map_err(|e| {
                let transient = e.is_transient();
                let f = SinkFailure::permanent(format!("TRUNCATE TABLE {target}: {e}"));
                if transient && !looks_transient(&f) {
                    SinkFailure::permanent(format!("connection problem: {}", f.message))
                } else {
                    f
                }
            })
        })
        .await
    }
}
