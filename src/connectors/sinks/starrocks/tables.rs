//! Target tables over the FE's MySQL port: naming (schemas kept apart), checks that each
//! target is a PRIMARY KEY table with the source's key and compatible columns, optional
//! creation, ADD COLUMN for new source columns, TRUNCATE.
//!
//! The connection is opened lazily on first use, checked before reuse and reopened after a
//! loss; every connect and statement has a timeout (invariant 6). Errors are classified
//! here, from the driver's error kinds and the server's error codes (transient: the port
//! is unreachable or the connection broke; permanent: credentials, refused statements,
//! schema differences). The password never reaches an error or log (invariant 11).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use secrecy::ExposeSecret;
use tracing::{debug, info, warn};

use super::types::{ColumnMapping, SrType};
use crate::config::{DeleteMode, SinkConfig, TableName};

/// Column added to every target in `SINK_DELETE_MODE=soft`.
pub const SOFT_DELETE_COLUMN: &str = "_dbmazz_deleted";

/// Table administration errors. [`TableError::is_transient`] says whether a retry may help.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The MySQL port cannot be reached (refused, unreachable, connect timeout).
    #[error("cannot connect to the StarRocks FE MySQL port {host}:{port} (SINK_URL host, SINK_PORT): {cause}")]
    Connect {
        host: String,
        port: u16,
        cause: String,
    },
    /// A statement got no answer in time (the connection is dropped and reopened).
    #[error("the StarRocks FE MySQL port {host}:{port} did not answer {what} within {after:?} (SINK_REQUEST_TIMEOUT_MS)")]
    Timeout {
        host: String,
        port: u16,
        what: String,
        after: Duration,
    },
    /// The connection broke during a statement (it is reopened on the next call).
    #[error(
        "the connection to the StarRocks FE MySQL port {host}:{port} broke during {what}: {cause}"
    )]
    Lost {
        host: String,
        port: u16,
        what: String,
        cause: String,
    },
    /// Credentials or privileges refused.
    #[error("StarRocks refused user `{user}` on the FE MySQL port {host}:{port} (ERROR {code}: {message}); check SINK_USER and SINK_PASSWORD and the user's privileges")]
    Auth {
        user: String,
        host: String,
        port: u16,
        code: u16,
        message: String,
    },
    /// The server refused a statement.
    #[error("StarRocks refused {what}: ERROR {code} ({state}): {message}")]
    Server {
        what: String,
        code: u16,
        state: String,
        message: String,
        transient: bool,
    },
    /// The MySQL client cannot talk to this server (protocol, plugin).
    #[error(
        "the MySQL client cannot talk to the StarRocks FE MySQL port {host}:{port}: {message}"
    )]
    Client {
        host: String,
        port: u16,
        message: String,
    },
    #[error("target table {database}.{table} does not exist (set SINK_CREATE_TABLES=true to create it); expected: {ddl}")]
    Missing {
        database: String,
        table: String,
        ddl: String,
    },
    #[error("target table {database}.{table} does not match the source {source_table}: {}", differences.join("; "))]
    Incompatible {
        database: String,
        table: String,
        source_table: String,
        differences: Vec<String>,
    },
    #[error("source tables {a} and {b} would both load into target table {target}; change SINK_TABLE_NAME_TEMPLATE")]
    NameCollision {
        a: String,
        b: String,
        target: String,
    },
    #[error("source table {0} has no primary key; StarRocks PRIMARY KEY tables need one (add a primary key to the source table, or remove it from TABLES)")]
    NoKey(String),
}

impl TableError {
    /// Whether retrying may help (the port unreachable, the connection lost, a server
    /// error of the kind that passes), as opposed to credentials or schema problems.
    pub fn is_transient(&self) -> bool {
        match self {
            TableError::Connect { .. } | TableError::Timeout { .. } | TableError::Lost { .. } => {
                true
            }
            TableError::Server { transient, .. } => *transient,
            TableError::Auth { .. }
            | TableError::Client { .. }
            | TableError::Missing { .. }
            | TableError::Incompatible { .. }
            | TableError::NameCollision { .. }
            | TableError::NoKey(_) => false,
        }
    }
}

/// MySQL server error codes for credentials and privileges.
fn is_auth_code(code: u16) -> bool {
    matches!(code, 1044 | 1045 | 1142 | 1143 | 1227 | 1698)
}

/// Target tables named in one information_schema query.
const DESCRIBE_CHUNK: usize = 500;

/// MySQL server errors that pass: too many connections, shutdown in progress, lock wait
/// timeout, deadlock, interrupted query, network read/write errors on the server side,
/// killed connection, statement timeout; SQLSTATE classes 08 (connection exception) and
/// 40 (transaction rollback); and SQLSTATE HY000, the general error under which the
/// StarRocks FE reports its internal failures (no backend alive during a restart, a
/// leader change, a timeout): retried loudly rather than stopping on a passing problem.
/// Syntax and access errors (class 42) and the codes above stay permanent.
fn is_transient_server_error(code: u16, state: &str) -> bool {
    matches!(
        code,
        1040 | 1053 | 1205 | 1213 | 1317 | 1158 | 1159 | 1160 | 1161 | 1927 | 3024
    ) || state.starts_with("08")
        || state.starts_with("40")
        || state == "HY000"
}

/// An I/O error said once, by its kind.
fn describe_io(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset".into(),
        ConnectionAborted | BrokenPipe | UnexpectedEof => "the connection was closed".into(),
        TimedOut => "timed out".into(),
        _ => e.to_string(),
    }
}

/// The target table name: `{schema}`, `{table}` and `{schema_prefix}` (empty for
/// `public`, else `schema__`) in the template. Default `{schema_prefix}{table}`:
/// `public.t` → `t`, `other.t` → `other__t`.
pub fn target_table_name(template: &str, schema: &str, table: &str) -> String {
    let prefix = if schema == "public" {
        String::new()
    } else {
        format!("{schema}__")
    };
    template
        .replace("{schema_prefix}", &prefix)
        .replace("{schema}", schema)
        .replace("{table}", table)
}

/// Target names for every source table, failing on two sources sharing a target
/// (StarRocks table names are compared case-insensitively here to be safe).
pub fn target_names(
    template: &str,
    tables: &[TableName],
) -> Result<BTreeMap<TableName, String>, TableError> {
    let mut seen: HashMap<String, &TableName> = HashMap::new();
    let mut out = BTreeMap::new();
    for t in tables {
        let target = target_table_name(template, &t.schema, &t.name);
        if let Some(prev) = seen.insert(target.to_ascii_lowercase(), t) {
            if prev != t {
                return Err(TableError::NameCollision {
                    a: prev.to_string(),
                    b: t.to_string(),
                    target,
                });
            }
        }
        out.insert(t.clone(), target);
    }
    Ok(out)
}

/// MySQL identifier quoting with back-quotes.
pub fn quote(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// A column of an existing target table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetColumn {
    pub name: String,
    /// `data_type` (lower case: `int`, `varchar`, `decimal`, ...).
    pub data_type: String,
    /// `column_type` (`varchar(65533)`, `decimal(12,2)`, ...).
    pub column_type: String,
    pub is_key: bool,
    pub nullable: bool,
}

/// What [`TableAdmin::ensure_table`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnsureOutcome {
    /// The table existed and matches.
    Ok,
    /// The table was created.
    Created,
    /// Columns were added.
    AddedColumns(Vec<String>),
}

/// Administration of target tables over the FE's MySQL port (one connection, opened on
/// first use, reopened after a loss).
pub struct TableAdmin {
    opts: mysql_async::Opts,
    host: String,
    port: u16,
    user: String,
    database: String,
    connect_timeout: Duration,
    request_timeout: Duration,
    create_tables: bool,
    add_columns: bool,
    replication_num: u32,
    delete_mode: DeleteMode,
    conn: tokio::sync::Mutex<Option<mysql_async::Conn>>,
}

impl std::fmt::Debug for TableAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableAdmin")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

/// Where a driver error happened: opening the connection or running a statement.
#[derive(Clone, Copy)]
enum Phase<'a> {
    Connect,
    Statement(&'a str),
}

impl TableAdmin {
    /// The admin for a sink configuration. No I/O: the connection opens on first use.
    pub fn new(cfg: &SinkConfig) -> Self {
        let host = cfg.fe_url.host_str().unwrap_or("localhost").to_string();
        let opts: mysql_async::Opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(host.clone())
            .tcp_port(cfg.mysql_port)
            .user(Some(cfg.user.clone()))
            .pass(Some(cfg.password.expose_secret().to_string()))
            .prefer_socket(false)
            .into();
        TableAdmin {
            opts,
            host,
            port: cfg.mysql_port,
            user: cfg.user.clone(),
            database: cfg.database.clone(),
            connect_timeout: cfg.connect_timeout,
            request_timeout: cfg.request_timeout,
            create_tables: cfg.create_tables,
            add_columns: cfg.add_columns,
            replication_num: cfg.replication_num,
            delete_mode: cfg.delete_mode,
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// Classifies a driver error where it arises (kind and server code, never its text).
    fn classify(&self, phase: Phase<'_>, e: mysql_async::Error) -> TableError {
        use mysql_async::{DriverError, Error, IoError};
        let broken = |cause: String| match phase {
            Phase::Connect => TableError::Connect {
                host: self.host.clone(),
                port: self.port,
                cause,
            },
            Phase::Statement(what) => TableError::Lost {
                host: self.host.clone(),
                port: self.port,
                what: what.to_string(),
                cause,
            },
        };
        match e {
            Error::Server(s) if is_auth_code(s.code) => TableError::Auth {
                user: self.user.clone(),
                host: self.host.clone(),
                port: self.port,
                code: s.code,
                message: s.message,
            },
            Error::Server(s) => TableError::Server {
                what: match phase {
                    Phase::Connect => "the connection".to_string(),
                    Phase::Statement(w) => w.to_string(),
                },
                transient: is_transient_server_error(s.code, &s.state),
                code: s.code,
                state: s.state,
                message: s.message,
            },
            Error::Io(IoError::Io(io)) => broken(describe_io(&io)),
            #[allow(unreachable_patterns)] // IoError::Tls exists with a TLS feature only.
            Error::Io(other) => broken(other.to_string()),
            Error::Driver(
                d @ (DriverError::ConnectionClosed
                | DriverError::PacketOutOfOrder
                | DriverError::UnexpectedPacket { .. }
                | DriverError::BadCompressedPacketHeader
                | DriverError::PoolDisconnected),
            ) => broken(d.to_string()),
            Error::Driver(d) => TableError::Client {
                host: self.host.clone(),
                port: self.port,
                message: d.to_string(),
            },
            Error::Url(u) => TableError::Client {
                host: self.host.clone(),
                port: self.port,
                message: u.to_string(),
            },
            Error::Other(o) => broken(o.to_string()),
        }
    }

    async fn open(&self) -> Result<mysql_async::Conn, TableError> {
        match tokio::time::timeout(
            self.connect_timeout,
            mysql_async::Conn::new(self.opts.clone()),
        )
        .await
        {
            Ok(Ok(c)) => {
                debug!(host = %self.host, port = self.port, "connected to the StarRocks FE MySQL port");
                Ok(c)
            }
            Ok(Err(e)) => Err(self.classify(Phase::Connect, e)),
            Err(_) => Err(TableError::Connect {
                host: self.host.clone(),
                port: self.port,
                cause: format!(
                    "no answer within {:?} (SINK_CONNECT_TIMEOUT_MS)",
                    self.connect_timeout
                ),
            }),
        }
    }

    /// Runs one statement on the shared connection: opens it if needed, checks a reused
    /// one with a ping first (so a statement is never sent twice after a loss), and drops
    /// it after a connection-level failure or a timeout (its state is unknown then).
    async fn query(&self, sql: &str, what: &str) -> Result<Vec<mysql_async::Row>, TableError> {
        let mut slot = self.conn.lock().await;
        if let Some(mut c) = slot.take() {
            match tokio::time::timeout(self.connect_timeout, c.ping()).await {
                Ok(Ok(())) => *slot = Some(c),
                _ => debug!("the StarRocks MySQL connection was lost; reconnecting"),
            }
        }
        let mut conn = match slot.take() {
            Some(c) => c,
            None => self.open().await?,
        };
        match tokio::time::timeout(self.request_timeout, conn.query::<mysql_async::Row, _>(sql))
            .await
        {
            Ok(Ok(rows)) => {
                *slot = Some(conn);
                Ok(rows)
            }
            Ok(Err(e)) => {
                let server_side = matches!(e, mysql_async::Error::Server(_));
                if server_side {
                    *slot = Some(conn);
                }
                Err(self.classify(Phase::Statement(what), e))
            }
            Err(_) => Err(TableError::Timeout {
                host: self.host.clone(),
                port: self.port,
                what: what.to_string(),
                after: self.request_timeout,
            }),
        }
    }

    /// Checks reachability and credentials (`SELECT 1`).
    pub async fn ping(&self) -> Result<(), TableError> {
        self.query("SELECT 1", "SELECT 1").await.map(|_| ())
    }

    fn qualified(&self, table: &str) -> String {
        format!("{}.{}", quote(&self.database), quote(table))
    }

    /// The columns of `table`, or None when it does not exist.
    pub async fn describe(&self, table: &str) -> Result<Option<Vec<TargetColumn>>, TableError> {
        let mut all = self.describe_all(&[table]).await?;
        Ok(all.remove(table))
    }

    /// The columns of each of `tables` that exists, in as few queries as possible (one per
    /// 500 tables): one query per table made a job of 200 tables take seconds to start.
    pub async fn describe_all(
        &self,
        tables: &[&str],
    ) -> Result<HashMap<String, Vec<TargetColumn>>, TableError> {
        let mut out: HashMap<String, Vec<TargetColumn>> = HashMap::new();
        for chunk in tables.chunks(DESCRIBE_CHUNK) {
            let list = chunk
                .iter()
                .map(|t| sql_string(t))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "SELECT table_name, column_name, data_type, column_type, column_key, is_nullable \
                 FROM information_schema.columns WHERE table_schema = {} AND table_name IN ({list}) \
                 ORDER BY table_name, ordinal_position",
                sql_string(&self.database),
            );
            let rows = self.query(&sql, "information_schema.columns").await?;
            let text = |r: &mysql_async::Row, i: usize| -> String {
                r.get_opt::<String, usize>(i)
                    .and_then(|v| v.ok())
                    .unwrap_or_default()
            };
            for r in &rows {
                let found = text(r, 0);
                // information_schema may spell a name in another case than asked.
                let name = chunk
                    .iter()
                    .find(|t| **t == found)
                    .or_else(|| chunk.iter().find(|t| t.eq_ignore_ascii_case(&found)))
                    .map(|t| t.to_string())
                    .unwrap_or(found);
                out.entry(name).or_default().push(TargetColumn {
                    name: text(r, 1),
                    data_type: text(r, 2).to_ascii_lowercase(),
                    column_type: text(r, 3).to_ascii_lowercase(),
                    is_key: text(r, 4).eq_ignore_ascii_case("PRI"),
                    nullable: text(r, 5).eq_ignore_ascii_case("YES"),
                });
            }
        }
        for (table, cols) in out.iter_mut() {
            if cols.iter().any(|c| c.is_key) {
                continue;
            }
            // column_key may be empty on some versions: read the key from the DDL.
            let ddl_rows = self
                .query(
                    &format!("SHOW CREATE TABLE {}", self.qualified(table)),
                    "SHOW CREATE TABLE",
                )
                .await?;
            let ddl = ddl_rows
                .first()
                .and_then(|r| r.get_opt::<String, usize>(1))
                .and_then(|v| v.ok());
            if let Some(keys) = ddl.as_deref().and_then(primary_key_of_ddl) {
                for c in cols.iter_mut() {
                    c.is_key = keys.iter().any(|k| k.eq_ignore_ascii_case(&c.name));
                }
            }
        }
        Ok(out)
    }

    /// `CREATE TABLE` for a source table: key columns first (NOT NULL), the others
    /// nullable (deletes carry only the key under REPLICA IDENTITY DEFAULT, spec §4.3).
    pub fn create_table_sql(&self, table: &str, cols: &[ColumnMapping], keys: &[String]) -> String {
        let mut defs = Vec::new();
        for k in keys {
            if let Some(c) = cols.iter().find(|c| &c.column == k) {
                defs.push(format!("{} {} NOT NULL", quote(&c.column), c.sr_type));
            }
        }
        for c in cols.iter().filter(|c| !keys.contains(&c.column)) {
            defs.push(format!("{} {} NULL", quote(&c.column), c.sr_type));
        }
        if self.delete_mode == DeleteMode::Soft {
            defs.push(format!("{} BOOLEAN NULL", quote(SOFT_DELETE_COLUMN)));
        }
        let key_list = keys.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ");
        format!(
            "CREATE TABLE IF NOT EXISTS {} ({}) PRIMARY KEY({key_list}) DISTRIBUTED BY HASH({key_list}) PROPERTIES(\"replication_num\" = \"{}\")",
            self.qualified(table),
            defs.join(", "),
            self.replication_num
        )
    }

    /// Checks (and per configuration creates or extends) the target of one source table.
    /// `source` is `schema.table` for messages; `keys` the source's primary key columns.
    pub async fn ensure_table(
        &self,
        source: &str,
        table: &str,
        cols: &[ColumnMapping],
        keys: &[String],
    ) -> Result<EnsureOutcome, TableError> {
        if keys.is_empty() {
            return Err(TableError::NoKey(source.to_string()));
        }
        let existing = self.describe(table).await?;
        self.ensure_described(source, table, cols, keys, existing)
            .await
    }

    /// [`TableAdmin::ensure_table`] with the target's columns already read (`None`: it
    /// does not exist), e.g. by [`TableAdmin::describe_all`].
    pub async fn ensure_described(
        &self,
        source: &str,
        table: &str,
        cols: &[ColumnMapping],
        keys: &[String],
        existing: Option<Vec<TargetColumn>>,
    ) -> Result<EnsureOutcome, TableError> {
        if keys.is_empty() {
            return Err(TableError::NoKey(source.to_string()));
        }
        let Some(existing) = existing else {
            let ddl = self.create_table_sql(table, cols, keys);
            if !self.create_tables {
                return Err(TableError::Missing {
                    database: self.database.clone(),
                    table: table.to_string(),
                    ddl,
                });
            }
            self.query(
                &format!("CREATE DATABASE IF NOT EXISTS {}", quote(&self.database)),
                "CREATE DATABASE",
            )
            .await?;
            self.query(&ddl, "CREATE TABLE").await?;
            info!(target_table = %table, source = %source, %ddl, "created target table");
            return Ok(EnsureOutcome::Created);
        };
        let mut diffs = Vec::new();
        let target_keys: Vec<&str> = existing
            .iter()
            .filter(|c| c.is_key)
            .map(|c| c.name.as_str())
            .collect();
        if target_keys.is_empty() {
            diffs.push("it is not a PRIMARY KEY table".to_string());
        } else {
            let same = target_keys.len() == keys.len()
                && keys
                    .iter()
                    .all(|k| target_keys.iter().any(|t| t.eq_ignore_ascii_case(k)));
            if !same {
                diffs.push(format!(
                    "primary key is ({}) but the source key is ({})",
                    target_keys.join(", "),
                    keys.join(", ")
                ));
            }
        }
        let mut missing = Vec::new();
        for c in cols {
            match existing
                .iter()
                .find(|t| t.name.eq_ignore_ascii_case(&c.column))
            {
                None => missing.push(c),
                Some(t) => {
                    if let Some(why) = incompatible(&c.sr_type, t) {
                        diffs.push(format!(
                            "column {}: source {} needs {} but the target is {} ({why})",
                            c.column, c.pg_type, c.sr_type, t.column_type
                        ));
                    }
                }
            }
        }
        if self.delete_mode == DeleteMode::Soft
            && !existing
                .iter()
                .any(|t| t.name.eq_ignore_ascii_case(SOFT_DELETE_COLUMN))
        {
            diffs.push(format!(
                "SINK_DELETE_MODE=soft needs a column {SOFT_DELETE_COLUMN} BOOLEAN"
            ));
        }
        if !missing.is_empty() && !self.add_columns {
            for c in &missing {
                diffs.push(format!(
                    "column {} ({}) is missing (set SINK_ADD_COLUMNS=true to add it)",
                    c.column, c.pg_type
                ));
            }
        }
        for t in &existing {
            let known = cols.iter().any(|c| c.column.eq_ignore_ascii_case(&t.name))
                || t.name.eq_ignore_ascii_case(SOFT_DELETE_COLUMN);
            if !known && !t.nullable {
                diffs.push(format!(
                    "target column {} is NOT NULL but has no source column (loads would fail)",
                    t.name
                ));
            }
        }
        if !diffs.is_empty() {
            return Err(TableError::Incompatible {
                database: self.database.clone(),
                table: table.to_string(),
                source_table: source.to_string(),
                differences: diffs,
            });
        }
        if missing.is_empty() {
            return Ok(EnsureOutcome::Ok);
        }
        let mut added = Vec::new();
        for c in missing {
            let sql = format!(
                "ALTER TABLE {} ADD COLUMN {} {} NULL",
                self.qualified(table),
                quote(&c.column),
                c.sr_type
            );
            warn!(target_table = %table, column = %c.column, %sql, "adding a new source column to the target");
            self.query(&sql, "ALTER TABLE ADD COLUMN").await?;
            added.push(c.column.clone());
        }
        Ok(EnsureOutcome::AddedColumns(added))
    }

    /// `TRUNCATE TABLE db.t`.
    pub async fn truncate(&self, table: &str) -> Result<(), TableError> {
        let sql = format!("TRUNCATE TABLE {}", self.qualified(table));
        self.query(&sql, "TRUNCATE TABLE").await?;
        info!(target_table = %table, "truncated target table");
        Ok(())
    }
}

/// A SQL string literal.
fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// `PRIMARY KEY(a, b)` columns from a CREATE TABLE text.
fn primary_key_of_ddl(ddl: &str) -> Option<Vec<String>> {
    let upper = ddl.to_ascii_uppercase();
    let i = upper.find("PRIMARY KEY")?;
    let rest = &ddl[i + "PRIMARY KEY".len()..];
    let open = rest.find('(')?;
    let close = rest.find(')')?;
    Some(
        rest[open + 1..close]
            .split(',')
            .map(|k| k.trim().trim_matches('`').to_string())
            .filter(|k| !k.is_empty())
            .collect(),
    )
}

fn int_width(t: &str) -> Option<u8> {
    Some(match t {
        "tinyint" => 1,
        "smallint" => 2,
        "int" | "integer" => 4,
        "bigint" => 8,
        "largeint" => 16,
        _ => return None,
    })
}

fn varchar_len(column_type: &str) -> Option<u64> {
    let open = column_type.find('(')?;
    let close = column_type.find(')')?;
    column_type[open + 1..close].trim().parse().ok()
}

/// Why a target column cannot hold the mapped values (None = compatible).
fn incompatible(want: &SrType, t: &TargetColumn) -> Option<String> {
    let dt = t.data_type.as_str();
    let stringy = matches!(dt, "varchar" | "string" | "char");
    let ok = match want {
        SrType::Boolean => matches!(dt, "boolean" | "tinyint") || int_width(dt).is_some(),
        SrType::SmallInt | SrType::Int | SrType::BigInt | SrType::LargeInt => {
            let need = match want {
                SrType::SmallInt => 2,
                SrType::Int => 4,
                SrType::BigInt => 8,
                _ => 16,
            };
            int_width(dt).is_some_and(|w| w >= need) || stringy
        }
        SrType::Float => matches!(dt, "float" | "double"),
        SrType::Double => dt == "double",
        SrType::Decimal(p, s) => {
            if dt.starts_with("decimal") {
                // column_type: decimal(p,s)
                let inner = t
                    .column_type
                    .split_once('(')
                    .and_then(|(_, r)| r.strip_suffix(')'))
                    .map(|r| {
                        r.split(',')
                            .map(|x| x.trim().parse::<u8>().ok())
                            .collect::<Vec<_>>()
                    });
                match inner.as_deref() {
                    Some([Some(tp), Some(ts)]) => *ts == *s && tp - ts >= p - s,
                    _ => true,
                }
            } else {
                stringy
            }
        }
        SrType::Varchar(n) => {
            stringy
                && (dt != "varchar"
                    || varchar_len(&t.column_type).is_none_or(|l| l >= u64::from(*n)))
        }
        SrType::Date => matches!(dt, "date" | "datetime"),
        SrType::DateTime => dt == "datetime",
        SrType::Json => dt == "json",
    };
    (!ok).then(|| {
        if stringy && matches!(want, SrType::Varchar(_)) {
            "too short: values may be rejected".to_string()
        } else {
            "types differ".to_string()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_schemas_apart() {
        let tpl = "{schema_prefix}{table}";
        assert_eq!(target_table_name(tpl, "public", "t"), "t");
        assert_eq!(target_table_name(tpl, "other", "t"), "other__t");
        assert_eq!(
            target_table_name("{schema}_{table}", "public", "t"),
            "public_t"
        );
        let t = |s: &str| TableName::parse(s).unwrap();
        let m = target_names(tpl, &[t("a"), t("other.a"), t("b")]).unwrap();
        assert_eq!(m[&t("other.a")], "other__a");
        let e = target_names("{table}", &[t("a"), t("other.a")]).unwrap_err();
        assert!(
            e.to_string().contains("public.a") && e.to_string().contains("other.a"),
            "{e}"
        );
        let e = target_names(tpl, &[t("x__a"), t("x.a")]).unwrap_err();
        assert!(matches!(e, TableError::NameCollision { .. }));
    }

    #[test]
    fn primary_key_is_read_from_ddl() {
        assert_eq!(
            primary_key_of_ddl(
                "CREATE TABLE `t` (`a` int) PRIMARY KEY(`a`, `b`) DISTRIBUTED BY HASH(`a`)"
            ),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(
            primary_key_of_ddl("CREATE TABLE t (a int) DUPLICATE KEY(a)"),
            None
        );
    }

    #[test]
    fn compatibility_rules() {
        let col = |dt: &str, ct: &str| TargetColumn {
            name: "c".into(),
            data_type: dt.into(),
            column_type: ct.into(),
            is_key: false,
            nullable: true,
        };
        assert!(incompatible(&SrType::Int, &col("bigint", "bigint")).is_none());
        assert!(incompatible(&SrType::BigInt, &col("int", "int")).is_some());
        assert!(incompatible(&SrType::Decimal(12, 2), &col("decimal", "decimal(18,2)")).is_none());
        assert!(incompatible(&SrType::Decimal(12, 2), &col("decimal", "decimal(12,4)")).is_some());
        assert!(incompatible(&SrType::Varchar(400), &col("varchar", "varchar(100)")).is_some());
        assert!(incompatible(&SrType::Varchar(400), &col("varchar", "varchar(65533)")).is_none());
        assert!(incompatible(&SrType::Json, &col("varchar", "varchar(10)")).is_some());
        assert!(incompatible(&SrType::DateTime, &col("datetime", "datetime")).is_none());
    }

    #[test]
    fn server_errors_are_classified_by_code_and_sqlstate() {
        assert!(is_auth_code(1045) && is_auth_code(1698) && !is_auth_code(1064));
        assert!(is_transient_server_error(1040, "08004"));
        assert!(
            is_transient_server_error(1064, "HY000"),
            "StarRocks's general error"
        );
        assert!(is_transient_server_error(9999, "08S01"));
        assert!(!is_transient_server_error(1064, "42000"), "syntax");
        assert!(
            !is_transient_server_error(1060, "42S21"),
            "duplicate column"
        );
        assert!(
            !is_transient_server_error(1049, "42000"),
            "unknown database"
        );
    }

    #[test]
    fn sql_quoting() {
        assert_eq!(quote("a`b"), "`a``b`");
        assert_eq!(sql_string("it's"), "'it''s'");
    }
}
