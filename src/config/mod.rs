//! Configuration: an optional TOML file overridden by environment variables.
//!
//! Every value is validated here: a value that does not parse is an error naming the
//! variable (and where it came from), never a silent default. Secrets are
//! [`SecretString`]s and the `Debug` output of every config type redacts them.

pub mod settings;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::connectors::sources::postgres::conninfo::{ConnInfoError, PgConnInfo};
pub use settings::{help_table, Setting, SETTINGS};

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Toml { path: PathBuf, message: String },
    #[error("config file {path}: unknown key `{key}` (see `dbmazz run --help` for the keys)")]
    UnknownKey { path: PathBuf, key: String },
    #[error(
        "config file {path}: key `{key}` must be a string, number, boolean or array of strings"
    )]
    BadTomlValue { path: PathBuf, key: String },
    #[error("{name} is not set; it is required ({help})")]
    Missing {
        name: &'static str,
        help: &'static str,
    },
    #[error("{name} (from {origin}): invalid value {value}: {expected}")]
    Invalid {
        name: &'static str,
        origin: Origin,
        /// Already redacted for secrets.
        value: String,
        expected: String,
    },
    #[error("SOURCE_URL (from {origin}): {source}")]
    SourceUrl {
        origin: Origin,
        source: ConnInfoError,
    },
}

/// Where a raw value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Environment,
    File(PathBuf),
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Environment => f.write_str("the environment"),
            Origin::File(p) => write!(f, "config file {}", p.display()),
            Origin::Default => f.write_str("the default"),
        }
    }
}

/// Raw text values per environment-variable name, with their origin.
#[derive(Default)]
pub struct RawValues {
    values: BTreeMap<&'static str, (String, Origin)>,
}

impl RawValues {
    /// Reads the TOML file (if any), then overlays the environment as given by `env`.
    pub fn gather(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut raw = RawValues::default();
        if let Some(path) = file {
            raw.read_file(path)?;
        }
        for s in SETTINGS {
            if let Some(v) = env(s.env) {
                raw.values.insert(s.env, (v, Origin::Environment));
            }
        }
        Ok(raw)
    }

    fn read_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Toml {
                path: path.to_path_buf(),
                message: e.message().to_string(),
            })?;
        let mut leaves = Vec::new();
        flatten("", &table, &mut leaves);
        for (key, value) in leaves {
            let setting =
                SETTINGS
                    .iter()
                    .find(|s| s.toml == key)
                    .ok_or_else(|| ConfigError::UnknownKey {
                        path: path.to_path_buf(),
                        key: key.clone(),
                    })?;
            let text = toml_text(&value).ok_or_else(|| ConfigError::BadTomlValue {
                path: path.to_path_buf(),
                key: key.clone(),
            })?;
            self.values
                .insert(setting.env, (text, Origin::File(path.to_path_buf())));
        }
        Ok(())
    }

    /// The raw value and its origin, falling back to the setting's default.
    pub fn get(&self, name: &'static str) -> Option<(String, Origin)> {
        if let Some((v, o)) = self.values.get(name) {
            return Some((v.clone(), o.clone()));
        }
        settings::setting(name)
            .and_then(|s| s.default)
            .map(|d| (d.to_string(), Origin::Default))
    }

    fn required(&self, name: &'static str) -> Result<(String, Origin), ConfigError> {
        match self.get(name) {
            Some((v, o)) if !v.trim().is_empty() => Ok((v, o)),
            _ => Err(ConfigError::Missing {
                name,
                help: settings::setting(name).map(|s| s.help).unwrap_or(""),
            }),
        }
    }

    /// Parses a value with `parse`, turning failures into an error naming the variable.
    fn parse<T>(
        &self,
        name: &'static str,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, ConfigError> {
        let Some((v, origin)) = self.get(name) else {
            return Ok(None);
        };
        match parse(v.trim()) {
            Some(t) => Ok(Some(t)),
            None => Err(self.invalid(name, origin, &v, expected)),
        }
    }

    fn parse_required<T>(
        &self,
        name: &'static str,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<T, ConfigError> {
        let (v, origin) = self.required(name)?;
        parse(v.trim()).ok_or_else(|| self.invalid(name, origin, &v, expected))
    }

    fn invalid(
        &self,
        name: &'static str,
        origin: Origin,
        value: &str,
        expected: &str,
    ) -> ConfigError {
        let secret = settings::setting(name).is_some_and(|s| s.secret);
        ConfigError::Invalid {
            name,
            origin,
            value: if secret {
                "[REDACTED]".to_string()
            } else {
                format!("{value:?}")
            },
            expected: expected.to_string(),
        }
    }
}

fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            other => out.push((key, other.clone())),
        }
    }
}

fn toml_text(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .map(|v| v.join(",")),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Value parsers (pure, each returns None when the text is not acceptable).

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn parse_positive<T: std::str::FromStr + PartialOrd + Default>(s: &str) -> Option<T> {
    s.parse::<T>().ok().filter(|v| *v > T::default())
}

/// Bytes with an optional unit: `1048576`, `64MiB`, `10 GB`, `512k`.
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult).filter(|v| *v > 0)
}

fn parse_millis(s: &str) -> Option<Duration> {
    parse_positive::<u64>(s).map(Duration::from_millis)
}

/// A table to replicate, schema-qualified.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl TableName {
    /// `schema.table`, `table` (schema public), with optional double quotes around parts.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if s.is_empty() {
            return None;
        }
        let parts = split_ident(s)?;
        match parts.as_slice() {
            [t] => Some(TableName {
                schema: "public".into(),
                name: t.clone(),
            }),
            [sch, t] => Some(TableName {
                schema: sch.clone(),
                name: t.clone(),
            }),
            _ => None,
        }
    }

    /// Quoted SQL form: `"schema"."table"`.
    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// PostgreSQL identifier quoting.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Splits `a.b` / `"a.x"."b"` into unquoted parts; unquoted parts are lower-cased like
/// PostgreSQL does.
fn split_ident(s: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    '"' => break,
                    c => part.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                part.push(c.to_ascii_lowercase());
                chars.next();
            }
            if part.is_empty() {
                return None;
            }
        }
        parts.push(part);
        match chars.next() {
            None => return Some(parts),
            Some('.') => continue,
            Some(_) => return None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Typed configuration.

/// When a transaction's commit LSN may be confirmed to PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckPolicy {
    /// After it is loaded into StarRocks (default; PostgreSQL keeps WAL until then).
    Loaded,
    /// After it is durable in the local spool (the durability point moves to local disk).
    Spooled,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Some(Self::Text),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// The PostgreSQL source.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub conn: PgConnInfo,
    pub slot_name: String,
    pub publication_name: String,
    pub tables: Vec<TableName>,
    pub streaming: bool,
    pub set_replica_identity_full: bool,
    pub status_interval: Duration,
    pub do_snapshot: bool,
}

/// The StarRocks sink.
#[derive(Clone)]
pub struct SinkConfig {
    pub fe_url: url::Url,
    pub be_url: Option<url::Url>,
    pub mysql_port: u16,
    pub database: String,
    pub user: String,
    pub password: SecretString,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub format: SinkFormat,
    /// Stream Load `max_filter_ratio` (0 = any filtered row fails the load).
    pub max_filter_ratio: f64,
    pub create_tables: bool,
    pub add_columns: bool,
    /// Target table name template: `{schema}`, `{table}`, `{schema_prefix}`.
    pub table_name_template: String,
    pub delete_mode: DeleteMode,
    pub replication_num: u32,
}

/// Stream Load body format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkFormat {
    Json,
    Csv,
}

/// How a source DELETE is applied to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteMode {
    /// `__op = 1`: the row is removed (default).
    Hard,
    /// The row is upserted with `_dbmazz_deleted = true`.
    Soft,
}

impl fmt::Debug for SinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SinkConfig")
            .field("fe_url", &self.fe_url.as_str())
            .field("be_url", &self.be_url.as_ref().map(|u| u.as_str()))
            .field("mysql_port", &self.mysql_port)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &"[REDACTED]")
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("format", &self.format)
            .field("max_filter_ratio", &self.max_filter_ratio)
            .field("create_tables", &self.create_tables)
            .field("add_columns", &self.add_columns)
            .field("table_name_template", &self.table_name_template)
            .field("delete_mode", &self.delete_mode)
            .field("replication_num", &self.replication_num)
            .finish()
    }
}

/// Loader batching and acknowledgement.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub flush_size: usize,
    pub flush_bytes: u64,
    pub flush_interval: Duration,
    pub ack_policy: AckPolicy,
    /// Stream Loads (tables) in flight at once.
    pub max_concurrent_loads: usize,
}

/// The local spool.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub cache_bytes: u64,
    /// `ACCEPT_SLOT_GAP`: start even though the slot lost changes the spool never
    /// received (the slot is missing or confirmed past the spool's resume point);
    /// `crate::spool::identity::check_source` refuses such a start otherwise.
    pub accept_slot_gap: bool,
}

/// gRPC and HTTP control plane.
#[derive(Clone)]
pub struct ControlConfig {
    pub grpc_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub token: Option<SecretString>,
}

impl fmt::Debug for ControlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlConfig")
            .field("grpc_listen", &self.grpc_listen)
            .field("http_listen", &self.http_listen)
            .field("token", &self.token.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

/// Logging.
#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub filter: String,
}

/// The whole configuration of one replication job.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: SourceConfig,
    /// `None` when SINK_URL is not set (enough for `check` and `slot drop`).
    pub sink: Option<SinkConfig>,
    pub pipeline: PipelineConfig,
    pub spool: SpoolConfig,
    pub control: ControlConfig,
    pub log: LogConfig,
}

impl Config {
    /// Loads from the file (if any) and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with(file, &|k| std::env::var(k).ok())
    }

    /// Loads with an explicit environment lookup (tests use this; no global state).
    pub fn load_with(
        file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let raw = RawValues::gather(file, env)?;
        Self::from_raw(&raw)
    }

    fn from_raw(raw: &RawValues) -> Result<Self, ConfigError> {
        Ok(Config {
            source: source_config(raw)?,
            sink: sink_config(raw)?,
            pipeline: PipelineConfig {
                flush_size: raw.parse_required(
                    "FLUSH_SIZE",
                    "a positive integer",
                    parse_positive,
                )?,
                flush_bytes: raw.parse_required(
                    "FLUSH_BYTES",
                    "a positive size in bytes (e.g. 67108864 or 64MiB)",
                    parse_bytes,
                )?,
                flush_interval: raw.parse_required(
                    "FLUSH_INTERVAL_MS",
                    "a positive number of milliseconds",
                    parse_millis,
                )?,
                ack_policy: raw.parse_required(
                    "ACK_POLICY",
                    "`loaded` or `spooled`",
                    |s| match s.to_ascii_lowercase().as_str() {
                        "loaded" => Some(AckPolicy::Loaded),
                        "spooled" => Some(AckPolicy::Spooled),
                        _ => None,
                    },
                )?,
                max_concurrent_loads: raw.parse_required(
                    "MAX_CONCURRENT_LOADS",
                    "a positive integer",
                    parse_positive,
                )?,
            },
            spool: SpoolConfig {
                dir: raw
                    .parse_required("SPOOL_DIR", "a directory path", |s| Some(PathBuf::from(s)))?,
                max_bytes: raw.parse_required(
                    "SPOOL_MAX_BYTES",
                    "a positive size in bytes (e.g. 10GiB)",
                    parse_bytes,
                )?,
                cache_bytes: raw.parse_required(
                    "SPOOL_CACHE_BYTES",
                    "a positive size in bytes (e.g. 64MiB)",
                    parse_bytes,
                )?,
                accept_slot_gap: raw.parse_required(
                    "ACCEPT_SLOT_GAP",
                    "true or false",
                    parse_bool,
                )?,
            },
            control: control_config(raw)?,
            log: LogConfig {
                format: raw.parse_required("LOG_FORMAT", "`text` or `json`", LogFormat::parse)?,
                filter: raw
                    .get("RUST_LOG")
                    .map(|(v, _)| v)
                    .unwrap_or_else(|| "info".into()),
            },
        })
    }
}

fn source_config(raw: &RawValues) -> Result<SourceConfig, ConfigError> {
    let (url, origin) = raw.required("SOURCE_URL")?;
    let mut conn = PgConnInfo::parse(&SecretString::from(url))
        .map_err(|source| ConfigError::SourceUrl { origin, source })?;
    if let Some((pw, _)) = raw.get("SOURCE_PASSWORD") {
        conn.password = Some(SecretString::from(pw));
    }
    let tables = raw.parse_required(
        "TABLES",
        "a comma-separated list of tables (schema.table or table)",
        |s| {
            let v = s
                .split(',')
                .map(TableName::parse)
                .collect::<Option<Vec<_>>>()?;
            (!v.is_empty()).then_some(v)
        },
    )?;
    let ident = |s: &str| {
        (!s.is_empty()
            && s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
        .then(|| s.to_string())
    };
    Ok(SourceConfig {
        conn,
        slot_name: raw.parse_required(
            "SOURCE_SLOT_NAME",
            "a slot name: lower-case letters, digits and _ (at most 63)",
            ident,
        )?,
        publication_name: raw.parse_required(
            "SOURCE_PUBLICATION_NAME",
            "a publication name: lower-case letters, digits and _ (at most 63)",
            ident,
        )?,
        tables,
        streaming: raw.parse_required("SOURCE_STREAMING", "true or false", parse_bool)?,
        set_replica_identity_full: raw.parse_required(
            "SOURCE_SET_REPLICA_IDENTITY_FULL",
            "true or false",
            parse_bool,
        )?,
        status_interval: raw.parse_required(
            "SOURCE_STATUS_INTERVAL_MS",
            "a positive number of milliseconds",
            parse_millis,
        )?,
        do_snapshot: raw.parse_required("DO_SNAPSHOT", "true or false", parse_bool)?,
    })
}

fn sink_config(raw: &RawValues) -> Result<Option<SinkConfig>, ConfigError> {
    let http_url = |s: &str| {
        url::Url::parse(s)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
    };
    let Some(fe_url) = raw.parse(
        "SINK_URL",
        "an http(s) URL such as http://fe:8030",
        http_url,
    )?
    else {
        return Ok(None);
    };
    Ok(Some(SinkConfig {
        fe_url,
        be_url: raw.parse(
            "SINK_BE_URL",
            "an http(s) URL such as http://be:8040",
            http_url,
        )?,
        mysql_port: raw.parse_required("SINK_PORT", "a port number 1-65535", parse_positive)?,
        database: raw
            .parse_required("SINK_DATABASE", "a database name", |s| Some(s.to_string()))?,
        user: raw.parse_required("SINK_USER", "a user name", |s| Some(s.to_string()))?,
        password: SecretString::from(raw.get("SINK_PASSWORD").map(|(v, _)| v).unwrap_or_default()),
        connect_timeout: raw.parse_required(
            "SINK_CONNECT_TIMEOUT_MS",
            "a positive number of milliseconds",
            parse_millis,
        )?,
        request_timeout: raw.parse_required(
            "SINK_REQUEST_TIMEOUT_MS",
            "a positive number of milliseconds",
            parse_millis,
        )?,
        format: raw.parse_required("SINK_FORMAT", "`json` or `csv`", |s| {
            match s.to_ascii_lowercase().as_str() {
                "json" => Some(SinkFormat::Json),
                "csv" => Some(SinkFormat::Csv),
                _ => None,
            }
        })?,
        max_filter_ratio: raw.parse_required(
            "SINK_MAX_FILTER_RATIO",
            "a number from 0 to 1",
            |s| s.parse::<f64>().ok().filter(|v| (0.0..=1.0).contains(v)),
        )?,
        create_tables: raw.parse_required("SINK_CREATE_TABLES", "true or false", parse_bool)?,
        add_columns: raw.parse_required("SINK_ADD_COLUMNS", "true or false", parse_bool)?,
        table_name_template: raw.parse_required(
            "SINK_TABLE_NAME_TEMPLATE",
            "a template containing {table} (placeholders {schema}, {table}, {schema_prefix})",
            |s| s.contains("{table}").then(|| s.to_string()),
        )?,
        delete_mode: raw.parse_required("SINK_DELETE_MODE", "`hard` or `soft`", |s| {
            match s.to_ascii_lowercase().as_str() {
                "hard" => Some(DeleteMode::Hard),
                "soft" => Some(DeleteMode::Soft),
                _ => None,
            }
        })?,
        replication_num: raw.parse_required(
            "SINK_REPLICATION_NUM",
            "a positive integer",
            parse_positive,
        )?,
    }))
}

fn control_config(raw: &RawValues) -> Result<ControlConfig, ConfigError> {
    let addr = |s: &str| s.parse::<SocketAddr>().ok();
    let explicit_listen = raw.values.contains_key("GRPC_LISTEN");
    let port: Option<u16> = raw.parse("GRPC_PORT", "a port number 1-65535", parse_positive)?;
    let grpc_listen = match (explicit_listen, port) {
        (false, Some(p)) => SocketAddr::from(([127, 0, 0, 1], p)),
        _ => raw.parse_required("GRPC_LISTEN", "an address such as 127.0.0.1:50051", addr)?,
    };
    Ok(ControlConfig {
        grpc_listen,
        http_listen: raw.parse_required(
            "HTTP_LISTEN",
            "an address such as 127.0.0.1:9187",
            addr,
        )?,
        token: raw
            .get("CONTROL_TOKEN")
            .filter(|(v, _)| !v.is_empty())
            .map(|(v, _)| SecretString::from(v)),
    })
}

/// True when two secrets are equal (for the control token check).
pub fn secret_eq(a: &SecretString, b: &str) -> bool {
    let a = a.expose_secret().as_bytes();
    let b = b.as_bytes();
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
