//! The sink's PostgreSQL catalog connection (columns of configured tables, type
//! resolution, primary keys), used to map relations to StarRocks types.
//!
//! Opened at construction; reopened when PostgreSQL closed it (a restart, a failover) and
//! retried with the project's backoff while the failure is transient, reported through a
//! [`RetryNote`]. Errors are classified here, from tokio-postgres's error kinds and
//! SQLSTATEs, never from their text. Every attempt has a timeout.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;
use tracing::{debug, info};

use crate::config::TableName;
use crate::connectors::sources::postgres::catalog::{
    primary_key, primary_keys, resolve_types, CatalogError, PgType,
};
use crate::connectors::sources::postgres::client;
use crate::connectors::sources::postgres::conninfo::PgConnInfo;
use crate::connectors::sources::postgres::error::SourceError;
use crate::core::retry::RetryPolicy;
use crate::core::{Column, Relation, ReplicaIdentity};
use crate::pipeline::loader::{RetryNote, SinkFailure};

/// A catalog failure, classified where it arose.
#[derive(Debug, Clone)]
struct PgFailure {
    transient: bool,
    /// The connection is gone: open a new one before the next attempt.
    closed: bool,
    message: String,
}

/// SQLSTATE classes worth a retry: connection exceptions (08), operator intervention such
/// as a shutdown or crash (57P01..57P05), insufficient resources (53), serialization
/// failures and deadlocks (40).
fn transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("57P0")
        || code.starts_with("53")
        || code.starts_with("40")
}

fn query_failure(e: &tokio_postgres::Error) -> PgFailure {
    let closed = e.is_closed();
    let io = {
        let mut src = std::error::Error::source(e);
        let mut found = false;
        while let Some(s) = src {
            if s.downcast_ref::<std::io::Error>().is_some() {
                found = true;
            }
            src = s.source();
        }
        found
    };
    let (transient, message) = match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            let what = if code.starts_with("28") {
                "PostgreSQL refused the credentials (check SOURCE_URL)"
            } else {
                "PostgreSQL error"
            };
            (
                transient_sqlstate(code),
                format!("{what}: {} {code}: {}", db.severity(), db.message()),
            )
        }
        None if closed || io => (true, format!("connection to PostgreSQL lost: {e}")),
        None => (false, e.to_string()),
    };
    PgFailure {
        transient,
        closed: closed || io,
        message,
    }
}

fn catalog_failure(e: CatalogError) -> PgFailure {
    match e {
        CatalogError::Query(q) => query_failure(&q),
        other => PgFailure {
            transient: false,
            closed: false,
            message: other.to_string(),
        },
    }
}

fn connect_failure(e: SourceError) -> PgFailure {
    PgFailure {
        transient: e.is_transient(),
        closed: true,
        message: e.to_string(),
    }
}

/// The columns, primary key and column types of a table, read from the catalog.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// The table as the catalog describes it now (id 0, replica identity unknown).
    pub relation: Relation,
    /// Primary key columns in key order (empty: no primary key).
    pub keys: Vec<String>,
    pub types: HashMap<u32, PgType>,
}

/// The catalog connection.
pub struct Catalog {
    conn: PgConnInfo,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
    retry: RetryPolicy,
    timeout: Duration,
}

impl Catalog {
    /// Opens the connection (one attempt; the caller decides about a failure).
    pub async fn connect(
        conn: &PgConnInfo,
        retry: RetryPolicy,
        timeout: Duration,
    ) -> Result<Self, SinkFailure> {
        let c = Catalog {
            conn: conn.clone(),
            client: tokio::sync::Mutex::new(None),
            retry,
            timeout,
        };
        c.client()
            .await
            .map_err(|f| c.sink_failure("connecting to the PostgreSQL catalog", f))?;
        Ok(c)
    }

    fn sink_failure(&self, what: &str, f: PgFailure) -> SinkFailure {
        if f.transient {
            SinkFailure::transient(format!("{what}: {}", f.message))
        } else {
            SinkFailure::permanent(format!("{what}: {}", f.message))
        }
    }

    /// A live client: the current one, or a new connection when there is none or
    /// PostgreSQL closed it.
    async fn client(&self) -> Result<Arc<Client>, PgFailure> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
            debug!("the PostgreSQL catalog connection is closed; reconnecting");
        }
        *slot = None;
        let c = match tokio::time::timeout(self.timeout, client::connect(&self.conn)).await {
            Ok(r) => Arc::new(r.map_err(connect_failure)?),
            Err(_) => {
                return Err(PgFailure {
                    transient: true,
                    closed: true,
                    message: format!(
                        "cannot connect to PostgreSQL at {}: no answer within {:?}",
                        self.conn.describe(),
                        self.timeout
                    ),
                })
            }
        };
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn forget(&self, used: &Arc<Client>) {
        let mut slot = self.client.lock().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, used)) {
            *slot = None;
        }
    }

    /// Runs `op` with a live client. Transient failures are retried with backoff while a
    /// `note` is given (reported there), reconnecting when the connection is gone; without
    /// a note the first failure is returned.
    async fn run<T, F, Fut>(
        &self,
        what: &str,
        note: Option<&RetryNote>,
        op: F,
    ) -> Result<T, SinkFailure>
    where
        F: Fn(Arc<Client>) -> Fut,
        Fut: Future<Output = Result<T, PgFailure>>,
    {
        let mut backoff = self.retry.backoff();
        loop {
            let attempt = async {
                let c = self.client().await?;
                match tokio::time::timeout(self.timeout, op(c.clone())).await {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(f)) => {
                        if f.closed {
                            self.forget(&c).await;
                        }
                        Err(f)
                    }
                    Err(_) => {
                        // The connection's state is unknown: start over with a new one.
                        self.forget(&c).await;
                        Err(PgFailure {
                            transient: true,
                            closed: true,
                            message: format!("no answer from PostgreSQL within {:?}", self.timeout),
                        })
                    }
                }
            };
            match attempt.await {
                Ok(v) => {
                    if backoff.attempts() > 0 {
                        info!(
                            what,
                            attempts = backoff.attempts() + 1,
                            "the PostgreSQL catalog answered again"
                        );
                        if let Some(n) = note {
                            n.recovered();
                        }
                    }
                    return Ok(v);
                }
                Err(f) if f.transient => {
                    let Some(note) = note else {
                        return Err(self.sink_failure(what, f));
                    };
                    let Some(delay) = backoff.next_delay() else {
                        return Err(self.sink_failure(what, f));
                    };
                    note.retrying(what, backoff.attempts(), delay, &f.message);
                    tokio::time::sleep(delay).await;
                }
                Err(f) => return Err(self.sink_failure(what, f)),
            }
        }
    }

    /// Columns, primary key and types of every configured table, in three queries
    /// whatever their number (one per table made a job of 200 tables take seconds to
    /// start). In the order of `tables`; a table missing in PostgreSQL is a permanent
    /// error naming it.
    pub async fn describe_all(
        &self,
        tables: &[TableName],
        note: Option<&RetryNote>,
    ) -> Result<Vec<TableInfo>, SinkFailure> {
        let what = "reading the PostgreSQL catalog for the configured tables";
        let pairs: Vec<(String, String)> = tables
            .iter()
            .map(|t| (t.schema.clone(), t.name.clone()))
            .collect();
        let pairs = &pairs;
        let (mut columns, mut keys, types) = self
            .run(what, note, |c| async move {
                let schemas: Vec<&str> = pairs.iter().map(|(s, _)| s.as_str()).collect();
                let names: Vec<&str> = pairs.iter().map(|(_, t)| t.as_str()).collect();
                let rows = c
                    .query(
                        "SELECT n.nspname::text, c.relname::text, a.attname::text, a.atttypid, a.atttypmod
                         FROM unnest($1::text[], $2::text[]) AS w(s, r)
                         JOIN pg_namespace n ON n.nspname = w.s
                         JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = w.r
                         JOIN pg_attribute a ON a.attrelid = c.oid
                         WHERE a.attnum > 0 AND NOT a.attisdropped
                         ORDER BY n.nspname, c.relname, a.attnum",
                        &[&schemas, &names],
                    )
                    .await
                    .map_err(|e| query_failure(&e))?;
                let mut columns: HashMap<(String, String), Vec<Column>> = HashMap::new();
                for r in &rows {
                    let at = |i: usize| r.try_get::<_, String>(i).map_err(|e| query_failure(&e));
                    columns.entry((at(0)?, at(1)?)).or_default().push(Column {
                        is_key: false,
                        name: at(2)?,
                        type_oid: r.try_get(3).map_err(|e| query_failure(&e))?,
                        type_modifier: r.try_get(4).map_err(|e| query_failure(&e))?,
                    });
                }
                let keys = primary_keys(&c, pairs).await.map_err(catalog_failure)?;
                let mut oids: Vec<u32> = columns.values().flatten().map(|c| c.type_oid).collect();
                oids.sort_unstable();
                oids.dedup();
                let types = resolve_types(&c, &oids).await.map_err(catalog_failure)?;
                Ok((columns, keys, types))
            })
            .await?;
        let mut out = Vec::with_capacity(tables.len());
        for t in tables {
            let key = (t.schema.clone(), t.name.clone());
            let Some(mut cols) = columns.remove(&key) else {
                return Err(SinkFailure::permanent(format!(
                    "source table {t} does not exist in PostgreSQL (check TABLES)"
                )));
            };
            let keys = keys.remove(&key).unwrap_or_default();
            for c in &mut cols {
                c.is_key = keys.contains(&c.name);
            }
            let types = cols
                .iter()
                .filter_map(|c| types.get(&c.type_oid).map(|ty| (c.type_oid, ty.clone())))
                .collect();
            out.push(TableInfo {
                relation: Relation {
                    id: 0,
                    namespace: t.schema.clone(),
                    name: t.name.clone(),
                    replica_identity: ReplicaIdentity::Default,
                    columns: cols,
                },
                keys,
                types,
            });
        }
        Ok(out)
    }

    /// The primary key and the column types of a relation (from a Relation message).
    pub async fn key_and_types(
        &self,
        rel: &Relation,
        note: Option<&RetryNote>,
    ) -> Result<(Vec<String>, HashMap<u32, PgType>), SinkFailure> {
        let what = format!(
            "reading the PostgreSQL catalog for {}",
            rel.qualified_name()
        );
        let oids: Vec<u32> = rel.columns.iter().map(|c| c.type_oid).collect();
        let oids = &oids;
        self.run(&what, note, |c| async move {
            let keys = primary_key(&c, &rel.namespace, &rel.name)
                .await
                .map_err(catalog_failure)?;
            let types = resolve_types(&c, oids).await.map_err(catalog_failure)?;
            Ok((keys, types))
        })
        .await
    }
}
