//! StarRocks Stream Load client: FE 307 followed by hand (keeping `Authorization`), full
//! response checks, failure classification and retries with the same label.
//!
//! Keeps invariant 5 (deterministic labels, reused on every retry), 6 (HTTP 200 is not
//! success: `Status` decides; filtered rows are errors; connect and total timeouts on every
//! call; transient failures retried with capped backoff for as long as it takes) and 11
//! (the password and the `Authorization` header never reach an error, a log or `Debug`).

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, EXPECT, LOCATION};
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use crate::config::SinkConfig;

/// Most redirects followed by hand for one request (FE → BE is one; a non-leader FE adds one).
const MAX_REDIRECTS: usize = 4;
/// At most this many bytes of an error log are put into an error message.
const ERROR_LOG_EXCERPT: usize = 2048;
/// At most this many bytes of an unexpected HTTP body are put into an error message.
const BODY_EXCERPT: usize = 512;

/// Body format of a load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadFormat {
    /// A JSON array of objects (`strip_outer_array: true`).
    Json,
    /// CSV as written by [`super::csv`]: `,` separated, `\n` delimited, every value
    /// enclosed in `"` (doubled inside), `\N` for NULL.
    Csv,
}

/// One Stream Load: a body for one table under one label.
#[derive(Clone)]
pub struct LoadRequest {
    pub database: String,
    pub table: String,
    pub label: String,
    pub body: Bytes,
    pub format: LoadFormat,
    /// The `columns` header (required for partial updates and for CSV).
    pub columns: Option<Vec<String>>,
    pub partial_update: bool,
    /// Rows in the body (for logs and sanity checks).
    pub rows: usize,
}

impl fmt::Debug for LoadRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadRequest")
            .field("database", &self.database)
            .field("table", &self.table)
            .field("label", &self.label)
            .field("body_bytes", &self.body.len())
            .field("format", &self.format)
            .field("columns", &self.columns)
            .field("partial_update", &self.partial_update)
            .field("rows", &self.rows)
            .finish()
    }
}

/// How a successful load ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadStatus {
    /// `Success`: committed and visible.
    Success,
    /// `Publish Timeout`: committed, visible soon.
    PublishTimeout,
    /// `Label Already Exists` with a finished job, or a running one that then finished: an
    /// earlier attempt with this label loaded the data.
    AlreadyLoaded,
}

/// The outcome of a load that succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOutcome {
    pub status: LoadStatus,
    pub txn_id: i64,
    pub loaded_rows: u64,
    /// Rows filtered within a configured `max_filter_ratio` (always 0 with the default 0).
    pub filtered_rows: u64,
    pub load_time_ms: u64,
    /// Attempts it took (1 = first try), set by [`StreamLoadClient::load_with_retry`].
    pub attempts: u32,
}

/// Why a load failed. [`SinkError::is_transient`] tells whether a retry (same label, same
/// body) may succeed. No variant ever carries the password or the `Authorization` header.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("invalid sink configuration: {0}")]
    Config(String),
    #[error("stream load {table} (label {label}): {what} failed: {message}")]
    Transport {
        table: String,
        label: String,
        what: &'static str,
        message: String,
        timed_out: bool,
    },
    #[error("stream load {table} (label {label}): HTTP {status} from {what}: {body}")]
    Http {
        table: String,
        label: String,
        what: &'static str,
        status: u16,
        body: String,
    },
    #[error("stream load {table}: StarRocks refused the credentials of user `{user}` (HTTP {status}): {message}")]
    Auth {
        table: String,
        user: String,
        status: u16,
        message: String,
    },
    #[error("stream load {table} (label {label}): {what} answered an unreadable body: {message}")]
    BadResponse {
        table: String,
        label: String,
        what: &'static str,
        message: String,
    },
    #[error("stream load {table} (label {label}) failed ({}): Status {status}: {message}", if *.transient { "transient" } else { "permanent" })]
    Rejected {
        table: String,
        label: String,
        status: String,
        message: String,
        transient: bool,
    },
    #[error("{0}")]
    Filtered(Box<FilteredLoad>),
    #[error("stream load {table} (label {label}): an earlier attempt with this label is {state}; retrying with the same label")]
    LabelPending {
        table: String,
        label: String,
        state: String,
    },
}

/// A load that StarRocks refused because rows failed its data-quality checks.
#[derive(Debug, thiserror::Error)]
#[error("stream load {table} (label {label}): {filtered} of {total} rows were filtered by StarRocks (data does not fit the target columns): {message}; error log {}{}", error_url.as_deref().unwrap_or("(none)"), first_errors.as_deref().map(|e| format!(": {e}")).unwrap_or_default())]
pub struct FilteredLoad {
    pub table: String,
    pub label: String,
    pub message: String,
    pub total: u64,
    pub filtered: u64,
    pub error_url: Option<String>,
    /// The first lines of the error log, when it could be fetched.
    pub first_errors: Option<String>,
}

impl SinkError {
    /// Whether a retry with the same label and body may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            SinkError::Config(_) | SinkError::Auth { .. } | SinkError::Filtered(_) => false,
            SinkError::Transport { .. }
            | SinkError::BadResponse { .. }
            | SinkError::LabelPending { .. } => true,
            SinkError::Http { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            SinkError::Rejected { transient, .. } => *transient,
        }
    }
}

/// Retry schedule for [`StreamLoadClient::load_with_retry`]: the project's one policy.
pub use crate::core::retry::RetryPolicy;

/// A deterministic Stream Load label (invariant 5): only `[-_A-Za-z0-9]`, at most 128
/// characters, a function of the spool id, the target table, the sequence range and the
/// part number. A table name that is long or has other characters is shortened and
/// completed with a hash of the full name, so distinct tables never share a label.
pub fn label(spool_id: &str, table: &str, first_seq: u64, last_seq: u64, part: u32) -> String {
    fn clean(s: &str) -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }
    fn hashed(s: &str, keep: usize) -> String {
        let digest = Sha256::digest(s.as_bytes());
        let prefix: String = clean(s).chars().take(keep).collect();
        format!("{prefix}_h{}", hex::encode(&digest[..8]))
    }
    let valid = |s: &str, max: usize| {
        !s.is_empty()
            && s.len() <= max
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    let spool = if valid(spool_id, 32) {
        spool_id.to_string()
    } else {
        hashed(spool_id, 12)
    };
    let table = if valid(table, 40) && !looks_hashed(table) {
        table.to_string()
    } else {
        hashed(table, 20)
    };
    format!("dbmazz_{spool}_{table}_{first_seq:016x}_{last_seq:016x}_{part}")
}

/// A clean table name shaped like our hashed form is hashed too, so it cannot collide.
fn looks_hashed(s: &str) -> bool {
    s.len() >= 18
        && s.as_bytes()[s.len() - 18..s.len() - 16] == *b"_h"
        && s[s.len() - 16..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// What the BE (or FE) answered to a stream load, parsed leniently.
#[derive(Debug, Default, Deserialize)]
struct LoadReply {
    #[serde(rename = "TxnId", default)]
    txn_id: i64,
    #[serde(rename = "Status", default)]
    status: String,
    #[serde(rename = "ExistingJobStatus", default)]
    existing_job_status: Option<String>,
    #[serde(rename = "Message", default)]
    message: String,
    #[serde(rename = "NumberTotalRows", default)]
    total_rows: u64,
    #[serde(rename = "NumberLoadedRows", default)]
    loaded_rows: u64,
    #[serde(rename = "NumberFilteredRows", default)]
    filtered_rows: u64,
    #[serde(rename = "LoadTimeMs", default)]
    load_time_ms: u64,
    #[serde(rename = "ErrorURL", default)]
    error_url: Option<String>,
}

/// `GET get_load_state` reply.
#[derive(Debug, Default, Deserialize)]
struct LoadStateReply {
    #[serde(default)]
    state: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    msg: String,
}

/// The class of a `Status: Fail` message (spec §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailClass {
    /// Retry with the same label (back-pressure, outages, ambiguous commits).
    Transient,
    /// Retrying cannot help (configuration, client bug, schema or data).
    Permanent,
    /// Rows failed data-quality checks: permanent, with the error log.
    Filtered,
    /// Credentials or privileges: permanent.
    Auth,
}

/// Classifies a failure message per the spec's error catalogue (§9). Unknown messages are
/// treated as transient (retried with warnings): a wrong "permanent" would stop the
/// pipeline on a passing problem, a wrong "transient" only keeps retrying loudly.
pub fn classify_fail(message: &str) -> FailClass {
    let m = message.to_ascii_lowercase();
    const AUTH: &[&str] = &[
        "no valid basic authorization",
        "access denied",
        "need auth information",
        "password",
        "privilege",
    ];
    const FILTERED: &[&str] = &["too many filtered rows"];
    const PERMANENT: &[&str] = &[
        "there is no 100-continue header",
        "unknown database",
        "unknown table",
        "does not exist",
        "not exist",
        "no database selected",
        "no table selected",
        "label format error",
        "invalid timeout",
        "invalid strict mode",
        "unknown data format",
        "invalid partial update flag",
        "only one of http header content-encoding and compression",
        "unsupported compression type",
        "only primary key table support partial update",
        "not in partial update columns",
        "merge condition column",
        "conditional update only support",
        "does not support negative load",
        "primary key size exceed the limit",
        "exceed the max size",
        "failed to iterate document stream",
        "beyond parser limit",
        "failed to parse json",
        "value count does not match column count",
        "convert csv string",
        "too long than schema",
        "column number is less than schema",
        "column number is more than schema",
        "no corresponding partition",
        "null value in non-nullable column",
        "data size exceeds quota",
        "duplicate column",
        "mapping column is not in table",
        "can not be specified",
        "parse columns header failed",
        "load op type",
        "txn_not_exists",
    ];
    const TRANSIENT_FIRST: &[&str] = &[
        // "body size N exceed limit" is permanent, but these contain "exceed" too.
        "transaction status unknown",
        "current running txns on db",
        "txn num per be exceeds limit",
        "too many versions",
    ];
    if AUTH.iter().any(|p| m.contains(p)) {
        return FailClass::Auth;
    }
    if FILTERED.iter().any(|p| m.contains(p)) {
        return FailClass::Filtered;
    }
    if TRANSIENT_FIRST.iter().any(|p| m.contains(p)) {
        return FailClass::Transient;
    }
    if m.contains("body size") && m.contains("exceed limit") {
        return FailClass::Permanent;
    }
    if PERMANENT.iter().any(|p| m.contains(p)) {
        return FailClass::Permanent;
    }
    // Known transient ones (back-pressure, memory, timeouts, truncated body, concurrency
    // limit, shutdown, no backend, leader change, quorum) and anything unknown.
    FailClass::Transient
}

/// Stream Load client: one `reqwest::Client` (connections reused), redirects by hand.
pub struct StreamLoadClient {
    http: reqwest::Client,
    fe_url: url::Url,
    be_url: Option<url::Url>,
    user: String,
    /// `Basic …`, marked sensitive so reqwest never shows it.
    auth: HeaderValue,
    request_timeout: Duration,
    max_filter_ratio: f64,
}

impl fmt::Debug for StreamLoadClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamLoadClient")
            .field("fe_url", &self.fe_url.as_str())
            .field("be_url", &self.be_url.as_ref().map(|u| u.as_str()))
            .field("user", &self.user)
            .field("auth", &"[REDACTED]")
            .finish()
    }
}

enum Body {
    Empty,
    Full(Bytes),
}

impl StreamLoadClient {
    /// Builds the client (no network I/O).
    pub fn new(cfg: &SinkConfig) -> Result<Self, SinkError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.request_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_keepalive(Duration::from_secs(30))
            .build()
            .map_err(|e| SinkError::Config(format!("cannot build the HTTP client: {e}")))?;
        let raw = format!("{}:{}", cfg.user, cfg.password.expose_secret());
        let token = base64::engine::general_purpose::STANDARD.encode(raw.as_bytes());
        let mut auth = HeaderValue::from_str(&format!("Basic {token}"))
            .map_err(|_| SinkError::Config("SINK_USER cannot be sent in a header".into()))?;
        auth.set_sensitive(true);
        Ok(StreamLoadClient {
            http,
            fe_url: cfg.fe_url.clone(),
            be_url: cfg.be_url.clone(),
            user: cfg.user.clone(),
            auth,
            request_timeout: cfg.request_timeout,
            max_filter_ratio: cfg.max_filter_ratio,
        })
    }

    fn load_url(base: &url::Url, db: &str, table: &str) -> Result<url::Url, SinkError> {
        let mut url = base.clone();
        {
            let mut segs = url
                .path_segments_mut()
                .map_err(|_| SinkError::Config(format!("{base} cannot be a base URL")))?;
            segs.pop_if_empty()
                .extend(["api", db, table, "_stream_load"]);
        }
        Ok(url)
    }

    fn headers(&self, req: &LoadRequest) -> Result<HeaderMap, SinkError> {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, self.auth.clone());
        let mut put = |name: &'static str, value: String| -> Result<(), SinkError> {
            let v = HeaderValue::from_str(&value)
                .map_err(|_| SinkError::Config(format!("header {name} cannot carry {value:?}")))?;
            h.insert(HeaderName::from_static(name), v);
            Ok(())
        };
        put("label", req.label.clone())?;
        // StarRocks's txn timeout, in whole seconds within [1, 259200].
        let secs = self.request_timeout.as_secs().clamp(1, 259_200);
        put("timeout", secs.to_string())?;
        put("max_filter_ratio", format!("{}", self.max_filter_ratio))?;
        // Without strict mode StarRocks turns a value it cannot convert into NULL and
        // counts the row as loaded: silent loss. Strict mode filters the row instead, and
        // with max_filter_ratio 0 the load fails loudly. Not for partial updates: there
        // (as in Doris, unverified for StarRocks) strict mode also rejects rows whose key
        // does not exist yet, which a partial update may legitimately carry.
        if !req.partial_update {
            put("strict_mode", "true".into())?;
        }
        match req.format {
            LoadFormat::Json => {
                put("format", "json".into())?;
                put("strip_outer_array", "true".into())?;
                put("ignore_json_size", "true".into())?;
            }
            LoadFormat::Csv => {
                put("format", "csv".into())?;
                put(
                    "column_separator",
                    super::csv::COLUMN_SEPARATOR_HEADER.into(),
                )?;
                put("enclose", super::csv::ENCLOSE.to_string())?;
            }
        }
        if let Some(cols) = &req.columns {
            let list = cols
                .iter()
                .map(|c| format!("`{}`", c.replace('`', "``")))
                .collect::<Vec<_>>()
                .join(",");
            put("columns", list)?;
        }
        if req.partial_update {
            put("partial_update", "true".into())?;
            put("partial_update_mode", "row".into())?;
        }
        Ok(h)
    }

    fn transport(req: &LoadRequest, what: &'static str, e: &reqwest::Error) -> SinkError {
        // reqwest's own Display names the URL (which could hold user info if someone put
        // it there): describe the kind and the causes instead. Headers never appear.
        let mut message = String::from(if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "cannot connect"
        } else if e.is_body() || e.is_decode() {
            "reading the reply"
        } else if e.is_request() {
            "sending the request"
        } else {
            "HTTP error"
        });
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            message.push_str(": ");
            message.push_str(&s.to_string());
            src = s.source();
        }
        SinkError::Transport {
            table: req.table.clone(),
            label: req.label.clone(),
            what,
            message,
            timed_out: e.is_timeout(),
        }
    }

    async fn put(
        &self,
        req: &LoadRequest,
        url: &url::Url,
        headers: &HeaderMap,
        body: Body,
        what: &'static str,
    ) -> Result<reqwest::Response, SinkError> {
        let mut rb = self.http.put(url.clone()).headers(headers.clone());
        rb = match body {
            Body::Empty => rb
                .header(EXPECT, "100-continue")
                .header(reqwest::header::CONTENT_LENGTH, "0")
                .body(Vec::<u8>::new()),
            Body::Full(b) => rb.body(b),
        };
        rb.send().await.map_err(|e| Self::transport(req, what, &e))
    }

    /// Where the body goes: the configured BE, or the BE the FE redirects to (learned with
    /// an empty-body probe carrying `Expect: 100-continue`, spec §1.5).
    async fn resolve_target(
        &self,
        req: &LoadRequest,
        headers: &HeaderMap,
    ) -> Result<url::Url, SinkError> {
        if let Some(be) = &self.be_url {
            return Self::load_url(be, &req.database, &req.table);
        }
        let mut url = Self::load_url(&self.fe_url, &req.database, &req.table)?;
        for _ in 0..MAX_REDIRECTS {
            let resp = self
                .put(req, &url, headers, Body::Empty, "FE probe")
                .await?;
            let status = resp.status();
            if status.is_redirection() {
                url = self.location(req, &url, &resp, "FE probe")?;
                if url.port_or_known_default() != self.fe_url.port_or_known_default()
                    || url.host_str() != self.fe_url.host_str()
                {
                    return Ok(url);
                }
                continue; // FE → other FE (leader): probe again.
            }
            return Err(self.unexpected(req, resp, "FE probe").await);
        }
        Err(SinkError::BadResponse {
            table: req.table.clone(),
            label: req.label.clone(),
            what: "FE probe",
            message: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    fn location(
        &self,
        req: &LoadRequest,
        base: &url::Url,
        resp: &reqwest::Response,
        what: &'static str,
    ) -> Result<url::Url, SinkError> {
        let bad = |message: String| SinkError::BadResponse {
            table: req.table.clone(),
            label: req.label.clone(),
            what,
            message,
        };
        let loc = resp
            .headers()
            .get(LOCATION)
            .ok_or_else(|| bad(format!("HTTP {} without Location", resp.status())))?;
        let loc = loc
            .to_str()
            .map_err(|_| bad("Location is not ASCII".into()))?;
        base.join(loc)
            .map_err(|e| bad(format!("Location {loc:?} is not a URL: {e}")))
    }

    /// Turns a non-redirect reply to a probe/PUT that is not a load reply into an error.
    async fn unexpected(
        &self,
        req: &LoadRequest,
        resp: reqwest::Response,
        what: &'static str,
    ) -> SinkError {
        let status = resp.status();
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) => return Self::transport(req, what, &e),
        };
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return SinkError::Auth {
                table: req.table.clone(),
                user: self.user.clone(),
                status: status.as_u16(),
                message: excerpt(&text, BODY_EXCERPT),
            };
        }
        if status == StatusCode::OK {
            // FE DdlException shape: {"Status":"FAILED","Message":"…"}.
            return match serde_json::from_str::<LoadReply>(&text) {
                Ok(r) => self.fail(req, &r).await,
                Err(e) => SinkError::BadResponse {
                    table: req.table.clone(),
                    label: req.label.clone(),
                    what,
                    message: format!("{e}: {}", excerpt(&text, BODY_EXCERPT)),
                },
            };
        }
        SinkError::Http {
            table: req.table.clone(),
            label: req.label.clone(),
            what,
            status: status.as_u16(),
            body: excerpt(&text, BODY_EXCERPT),
        }
    }

    /// One load attempt with full response checks (invariant 6). `Ok` means the data of this
    /// label is (or will shortly be) visible in StarRocks.
    pub async fn load(&self, req: &LoadRequest) -> Result<LoadOutcome, SinkError> {
        let headers = self.headers(req)?;
        let mut url = self.resolve_target(req, &headers).await?;
        let mut hops = 0;
        let resp = loop {
            let resp = self
                .put(req, &url, &headers, Body::Full(req.body.clone()), "BE load")
                .await?;
            if resp.status().is_redirection() && hops < MAX_REDIRECTS {
                hops += 1;
                url = self.location(req, &url, &resp, "BE load")?;
                continue;
            }
            break resp;
        };
        if resp.status() != StatusCode::OK {
            return Err(self.unexpected(req, resp, "BE load").await);
        }
        let text = resp
            .text()
            .await
            .map_err(|e| Self::transport(req, "BE load", &e))?;
        let reply: LoadReply = serde_json::from_str(&text).map_err(|e| SinkError::BadResponse {
            table: req.table.clone(),
            label: req.label.clone(),
            what: "BE load",
            message: format!("{e}: {}", excerpt(&text, BODY_EXCERPT)),
        })?;
        debug!(table = %req.table, label = %req.label, status = %reply.status, message = %reply.message, "stream load reply");
        match reply.status.as_str() {
            "Success" | "Publish Timeout" => {
                if reply.filtered_rows > 0 {
                    if self.max_filter_ratio == 0.0 {
                        // Cannot happen with ratio 0; if it does, the data is committed, so
                        // report loudly rather than loop (a retry would be "FINISHED").
                        warn!(table = %req.table, label = %req.label, filtered = reply.filtered_rows,
                              error_url = reply.error_url.as_deref().unwrap_or(""),
                              "StarRocks committed a load with filtered rows although max_filter_ratio is 0");
                    } else {
                        warn!(table = %req.table, label = %req.label, filtered = reply.filtered_rows,
                              error_url = reply.error_url.as_deref().unwrap_or(""),
                              "rows were dropped by StarRocks within SINK_MAX_FILTER_RATIO");
                    }
                }
                let status = if reply.status == "Success" {
                    LoadStatus::Success
                } else {
                    info!(table = %req.table, label = %req.label, "Publish Timeout: committed, visible shortly");
                    LoadStatus::PublishTimeout
                };
                Ok(LoadOutcome {
                    status,
                    txn_id: reply.txn_id,
                    loaded_rows: reply.loaded_rows,
                    filtered_rows: reply.filtered_rows,
                    load_time_ms: reply.load_time_ms,
                    attempts: 1,
                })
            }
            "Label Already Exists" => {
                let job = reply.existing_job_status.as_deref().unwrap_or("");
                if job == "FINISHED" {
                    info!(table = %req.table, label = %req.label, "label already loaded: counted as done");
                    return Ok(self.already_loaded(reply.txn_id));
                }
                // RUNNING (or unknown): wait for the first attempt.
                self.wait_label(req).await
            }
            _ => Err(self.fail(req, &reply).await),
        }
    }

    fn already_loaded(&self, txn_id: i64) -> LoadOutcome {
        LoadOutcome {
            status: LoadStatus::AlreadyLoaded,
            txn_id,
            loaded_rows: 0,
            filtered_rows: 0,
            load_time_ms: 0,
            attempts: 1,
        }
    }

    /// Builds the error for a `Fail`/`FAILED` reply.
    async fn fail(&self, req: &LoadRequest, reply: &LoadReply) -> SinkError {
        let class = if reply.filtered_rows > 0 {
            FailClass::Filtered
        } else {
            classify_fail(&reply.message)
        };
        match class {
            FailClass::Filtered => {
                let first_errors = match &reply.error_url {
                    Some(u) => self.fetch_error_log(u).await,
                    None => None,
                };
                SinkError::Filtered(Box::new(FilteredLoad {
                    table: req.table.clone(),
                    label: req.label.clone(),
                    message: reply.message.clone(),
                    total: reply.total_rows,
                    filtered: reply.filtered_rows,
                    error_url: reply.error_url.clone(),
                    first_errors,
                }))
            }
            FailClass::Auth => SinkError::Auth {
                table: req.table.clone(),
                user: self.user.clone(),
                status: 200,
                message: reply.message.clone(),
            },
            FailClass::Permanent | FailClass::Transient => SinkError::Rejected {
                table: req.table.clone(),
                label: req.label.clone(),
                status: reply.status.clone(),
                message: reply.message.clone(),
                transient: class == FailClass::Transient,
            },
        }
    }

    /// First lines of the BE error log behind `ErrorURL` (best effort, bounded).
    async fn fetch_error_log(&self, url: &str) -> Option<String> {
        let resp = self.http.get(url).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let text = resp.text().await.ok()?;
        let lines: Vec<&str> = text.lines().take(5).collect();
        Some(excerpt(&lines.join(" | "), ERROR_LOG_EXCERPT))
    }

    /// Polls `get_load_state` after `Label Already Exists / RUNNING` until the earlier
    /// attempt is VISIBLE/COMMITTED (done) or ABORTED (transient: retry the same label),
    /// for at most about the load timeout.
    async fn wait_label(&self, req: &LoadRequest) -> Result<LoadOutcome, SinkError> {
        let deadline =
            tokio::time::Instant::now() + self.request_timeout.max(Duration::from_secs(5));
        let mut pause = Duration::from_millis(200);
        let mut last_state = String::from("RUNNING");
        loop {
            match self.load_state(req).await {
                Ok(state) => match state.as_str() {
                    "VISIBLE" | "COMMITTED" => {
                        info!(table = %req.table, label = %req.label, %state, "earlier attempt finished: counted as done");
                        return Ok(self.already_loaded(-1));
                    }
                    "ABORTED" | "UNKNOWN" => {
                        return Err(SinkError::LabelPending {
                            table: req.table.clone(),
                            label: req.label.clone(),
                            state,
                        })
                    }
                    _ => last_state = state,
                },
                Err(e) if e.is_transient() => {
                    debug!(error = %e, "get_load_state failed; polling again");
                }
                Err(e) => return Err(e),
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Err(SinkError::LabelPending {
                    table: req.table.clone(),
                    label: req.label.clone(),
                    state: format!("still {last_state}"),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    async fn load_state(&self, req: &LoadRequest) -> Result<String, SinkError> {
        let mut url = self.fe_url.clone();
        url.path_segments_mut()
            .map_err(|_| SinkError::Config(format!("{} cannot be a base URL", self.fe_url)))?
            .pop_if_empty()
            .extend(["api", &req.database, "get_load_state"]);
        url.query_pairs_mut().append_pair("label", &req.label);
        for _ in 0..MAX_REDIRECTS {
            let resp = self
                .http
                .get(url.clone())
                .header(AUTHORIZATION, self.auth.clone())
                .send()
                .await
                .map_err(|e| Self::transport(req, "get_load_state", &e))?;
            if resp.status().is_redirection() {
                url = self.location(req, &url, &resp, "get_load_state")?;
                continue;
            }
            if resp.status() != StatusCode::OK {
                return Err(self.unexpected(req, resp, "get_load_state").await);
            }
            let text = resp
                .text()
                .await
                .map_err(|e| Self::transport(req, "get_load_state", &e))?;
            let r: LoadStateReply =
                serde_json::from_str(&text).map_err(|e| SinkError::BadResponse {
                    table: req.table.clone(),
                    label: req.label.clone(),
                    what: "get_load_state",
                    message: format!("{e}: {}", excerpt(&text, BODY_EXCERPT)),
                })?;
            if !r.status.is_empty() && !r.status.eq_ignore_ascii_case("OK") {
                return Err(SinkError::Rejected {
                    table: req.table.clone(),
                    label: req.label.clone(),
                    status: r.status,
                    message: r.msg.clone(),
                    transient: classify_fail(&r.msg) == FailClass::Transient,
                });
            }
            return Ok(r.state);
        }
        Err(SinkError::BadResponse {
            table: req.table.clone(),
            label: req.label.clone(),
            what: "get_load_state",
            message: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    /// Loads, retrying transient failures with the same label and body (capped exponential
    /// backoff with jitter, no attempt limit unless the policy sets one). Returns at once on
    /// a permanent error. `on_retry(error, attempt, delay)` is called before each wait.
    pub async fn load_with_retry(
        &self,
        req: &LoadRequest,
        policy: &RetryPolicy,
        on_retry: impl Fn(&SinkError, u32, Duration),
    ) -> Result<LoadOutcome, SinkError> {
        let mut attempt: u32 = 1;
        loop {
            match self.load(req).await {
                Ok(mut o) => {
                    o.attempts = attempt;
                    return Ok(o);
                }
                Err(e) if e.is_transient() => {
                    if policy.max_attempts.is_some_and(|m| attempt >= m) {
                        return Err(e);
                    }
                    let delay = policy.delay(attempt);
                    on_retry(&e, attempt, delay);
                    tokio::time::sleep(delay).await;
                    attempt = attempt.saturating_add(1);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// At most `max` bytes of `s`, cut on a character boundary, single line.
fn excerpt(s: &str, max: usize) -> String {
    let s = s.trim();
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = s[..end].replace(['\n', '\r'], " ");
    if end < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_label(l: &str) -> bool {
        !l.is_empty()
            && l.len() <= 128
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }

    #[test]
    fn labels_are_deterministic_and_valid() {
        let a = label("00ff00ff00ff00ff", "orders", 1, 99, 0);
        assert_eq!(a, label("00ff00ff00ff00ff", "orders", 1, 99, 0));
        assert_eq!(
            a,
            "dbmazz_00ff00ff00ff00ff_orders_0000000000000001_0000000000000063_0"
        );
        assert!(valid_label(&a));
        assert_ne!(a, label("00ff00ff00ff00fe", "orders", 1, 99, 0));
        assert_ne!(a, label("00ff00ff00ff00ff", "orders", 1, 99, 1));
        assert_ne!(a, label("00ff00ff00ff00ff", "orders", 2, 99, 0));
        assert_ne!(a, label("00ff00ff00ff00ff", "orders", 1, 98, 0));
        assert_ne!(a, label("00ff00ff00ff00ff", "orders2", 1, 99, 0));
    }

    #[test]
    fn labels_stay_valid_for_odd_and_long_names() {
        let long = "t".repeat(1000);
        let cases = [
            long.as_str(),
            "other.t",
            "other__t",
            "naïve täble",
            "a:b",
            "a_b",
            "\"quoted\"",
            "x_h0123456789abcdef",
        ];
        let mut seen = std::collections::HashSet::new();
        for t in cases {
            let l = label(&"s".repeat(200), t, u64::MAX, u64::MAX, u32::MAX);
            assert!(valid_label(&l), "{l}");
            assert!(!l.contains(':'));
            assert!(seen.insert(l.clone()), "collision for {t}: {l}");
        }
        // a:b and a_b sanitise alike but must not share a label
        assert_ne!(label("s", "a:b", 1, 2, 0), label("s", "a_b", 1, 2, 0));
        // long names differing only at the end differ
        let l1 = format!("{}x", "t".repeat(300));
        let l2 = format!("{}y", "t".repeat(300));
        assert_ne!(label("s", &l1, 1, 2, 0), label("s", &l2, 1, 2, 0));
        assert!(label("s", &long, u64::MAX, u64::MAX, u32::MAX).len() <= 128);
    }

    #[test]
    fn every_catalogue_message_is_classified() {
        use FailClass::*;
        let cases: &[(&str, FailClass)] = &[
            ("Commit transaction fail cause RPC failed, Transaction status unknown, you can retry with same label.", Transient),
            ("too many filtered rows", Filtered),
            ("current running txns on db 10002 is 1000, larger than limit 1000", Transient),
            ("streamload txn num per be exceeds limit, be: 10.0.0.1, txn_num: 5, limit: 4", Transient),
            ("Too many versions. tablet_id: 123, version_count: 1001, limit: 1000", Transient),
            ("Failed to load data into tablet 123, because of too many versions", Transient),
            ("close index channel failed", Transient),
            ("Memory of process exceed limit. QUERY Backend: 10.0.0.1", Transient),
            ("Memory of Fragment abc exceed limit. Mem usage has exceed the limit of single query", Transient),
            ("Mem usage has exceed the limit of BE", Transient),
            ("cancelled", Transient),
            ("timeout by txn manager", Transient),
            ("[E1008]Reached timeout=300000ms", Transient),
            ("receive body don't equal with body bytes", Transient),
            ("Stream Load exceed http cuncurrent limit 47, please try again later", Transient),
            ("Service is shutting down, please retry later!", Transient),
            ("No backend alive.", Transient),
            ("class com.starrocks.common.DdlException: No backend or compute node alive.", Transient),
            ("current fe is not master", Transient),
            ("Failed to commit txn 5. Tablet [7] success replica num 0 is less then quorum replica num 1 while error backends 10001", Transient),
            ("no valid Basic authorization", Auth),
            ("Access denied for root@127.0.0.1", Auth),
            ("Need auth information.", Auth),
            ("class com.starrocks.common.DdlException: There is no 100-continue header", Permanent),
            ("unknown database, database=db1", Permanent),
            ("Database[db1] does not exist", Permanent),
            ("unknown table \"db1.t\"", Permanent),
            ("Label format error. regex: ^[-\\w]{1,128}$, label: a:b", Permanent),
            ("Invalid timeout. Timeout should between 1 and 259200 seconds", Permanent),
            ("Invalid timeout format", Permanent),
            ("Invalid strict mode format. Must be bool type", Permanent),
            ("unknown data format, format=xml", Permanent),
            ("Invalid partial update flag format. Must be bool type", Permanent),
            ("Only one of http header content-encoding and compression can be set", Permanent),
            ("Unsupported compression type: foo", Permanent),
            ("Only primary key table support partial update", Permanent),
            ("key column id not in partial update columns", Permanent),
            ("Merge condition column v does not exist. If you are doing partial update", Permanent),
            ("Conditional update only support primary key table t", Permanent),
            ("Primary key table does not support negative load", Permanent),
            ("primary key size exceed the limit.", Permanent),
            ("body size 20000 exceed limit: 10000, id=1. You can increase the limit by setting streaming_load_max_mb in be.conf.", Permanent),
            ("The size of this batch exceed the max size [104857600]  of json type data  data [ 200000000 ]. Set ignore_json_size to skip the check", Permanent),
            ("Failed to iterate document stream as object. error: The JSON element does not have the requested type.", Permanent),
            ("The input payload size is beyond parser limit. Please set strip_outer_array true if you want to load json array", Permanent),
            ("Failed to parse json as array", Permanent),
            ("Value count does not match column count. Expect 3, but got 1.", Permanent),
            ("convert csv string to INT failed.", Permanent),
            ("the length of input is too long than schema.", Permanent),
            ("actual column number is less than schema column number.", Permanent),
            ("actual column number is more than schema column number.", Permanent),
            ("there is no corresponding partition for this key.", Permanent),
            ("NULL value in non-nullable column", Permanent),
            ("Database[db1] data size exceeds quota[1GB]", Permanent),
            ("TXN_IN_PROCESSING", Transient),
            ("TXN_NOT_EXISTS", Permanent),
            ("something nobody has seen before", Transient),
        ];
        for (m, want) in cases {
            assert_eq!(classify_fail(m), *want, "{m}");
        }
    }

    #[test]
    fn transient_or_permanent_errors() {
        let r = |transient| SinkError::Rejected {
            table: "t".into(),
            label: "l".into(),
            status: "Fail".into(),
            message: "m".into(),
            transient,
        };
        assert!(r(true).is_transient());
        assert!(!r(false).is_transient());
        let http = |status| SinkError::Http {
            table: "t".into(),
            label: "l".into(),
            what: "BE load",
            status,
            body: String::new(),
        };
        assert!(http(500).is_transient());
        assert!(http(503).is_transient());
        assert!(!http(404).is_transient());
        assert!(!SinkError::Auth {
            table: "t".into(),
            user: "u".into(),
            status: 401,
            message: String::new()
        }
        .is_transient());
    }

    #[test]
    fn backoff_is_capped_and_grows() {
        let p = RetryPolicy {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            jitter: 0.0,
            max_attempts: None,
        };
        assert_eq!(p.delay(1), Duration::from_millis(100));
        assert_eq!(p.delay(2), Duration::from_millis(200));
        assert_eq!(p.delay(5), Duration::from_millis(1600));
        assert_eq!(p.delay(6), Duration::from_secs(2));
        assert_eq!(p.delay(u32::MAX), Duration::from_secs(2));
        let j = RetryPolicy {
            jitter: 0.5,
            ..p.clone()
        };
        for a in 1..20 {
            let d = j.delay(a);
            assert!(d <= p.delay(a) && d >= p.delay(a) / 2, "{a}: {d:?}");
        }
    }

    #[test]
    fn excerpt_cuts_on_char_boundaries() {
        assert_eq!(excerpt("ab\ncd", 10), "ab cd");
        assert_eq!(excerpt("ééé", 3), "é…");
    }
}
