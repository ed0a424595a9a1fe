//! StarRocks Stream Load client: the I/O of a load (FE 307 followed by hand, keeping
//! `Authorization`; the body to the BE; `get_load_state`; the error log), retries with the
//! same label, and deterministic labels. What a reply means is decided by the pure
//! [`super::reply`] module; this module only turns transport failures into typed errors.
//!
//! Keeps invariant 5 (deterministic labels, reused on every retry), 6 (HTTP 200 is not
//! success; filtered rows and row counts that do not add up are errors; connect and total
//! timeouts on every call; transient failures retried with capped backoff for as long as
//! it takes) and 11 (the password and the `Authorization` header never reach an error, a
//! log or `Debug`).

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, EXPECT, LOCATION};
use secrecy::ExposeSecret;
use tracing::{debug, info, warn};

use super::reply::{self, Failure, FailureKind, LoadState, RejectReason, RowCounts, Sent, Verdict};
pub use super::reply::{classify_fail, FailClass, LoadStatus};
use crate::config::SinkConfig;

/// Retry schedule for [`StreamLoadClient::load_with_retry`]: the project's one policy.
pub use crate::core::retry::RetryPolicy;

/// Most redirects followed by hand for one request (FE → BE is one; a non-leader FE adds one).
const MAX_REDIRECTS: usize = 4;
/// At most this many bytes of an error log are put into an error message.
const ERROR_LOG_EXCERPT: usize = 2048;

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
    /// Rows in the body: the reply's counts must add up to this (invariant 6).
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

/// Why a load failed. [`SinkError::kind`] says what to do about it. No variant ever
/// carries the password or the `Authorization` header.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("invalid sink configuration: {0}")]
    Config(String),
    /// No usable reply: connection refused or broken, timeout.
    #[error("stream load into {table} (label {label}): {message}")]
    Transport {
        table: String,
        label: String,
        message: String,
        timed_out: bool,
    },
    /// StarRocks refused the credentials or the privilege.
    #[error("stream load into {table}: StarRocks refused the credentials of user `{user}` ({failure}); check SINK_USER and SINK_PASSWORD and the user's INSERT privilege")]
    Auth {
        table: String,
        user: String,
        failure: Box<Failure>,
    },
    /// A reply that says the load did not happen (or may not have): see `failure.kind`.
    #[error("stream load into {table} (label {label}): {what} answered {failure}")]
    Refused {
        table: String,
        label: String,
        what: &'static str,
        failure: Box<Failure>,
    },
    /// Rows of the load are missing: filtered by StarRocks, or counts that do not add up.
    #[error("{0}")]
    Rejected(Box<RejectedRows>),
    /// An earlier attempt with this label is still running or was aborted.
    #[error("stream load into {table} (label {label}): an earlier attempt with this label is {state}; retrying with the same label")]
    LabelPending {
        table: String,
        label: String,
        state: String,
    },
}

/// A load of which StarRocks refused rows (data quality), or whose counts do not add up.
#[derive(Debug, Clone)]
pub struct RejectedRows {
    pub table: String,
    pub label: String,
    pub reason: RejectReason,
    /// StarRocks's message (`too many filtered rows`, `OK`, …).
    pub message: String,
    pub rows_sent: u64,
    pub counts: RowCounts,
    pub error_url: Option<String>,
    /// The first lines of the error log, when it could be fetched.
    pub first_errors: Option<String>,
    /// StarRocks committed the label: a retry with it would be "already loaded".
    pub label_committed: bool,
}

impl fmt::Display for RejectedRows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        let what = if self.label_committed {
            format!(
                "StarRocks committed the load into {} (label {}) without all its rows",
                self.table, self.label
            )
        } else {
            format!(
                "StarRocks refused the load into {} (label {})",
                self.table, self.label
            )
        };
        match self.reason {
            RejectReason::Filtered => write!(
                f,
                "{what}: {} of {} rows failed its data checks (Status message {:?})",
                c.filtered, self.rows_sent, self.message
            )?,
            RejectReason::Unselected => write!(
                f,
                "{what}: {} of {} rows were counted as unselected although no `where` was sent",
                c.unselected, self.rows_sent
            )?,
            RejectReason::CountMismatch => write!(
                f,
                "{what}: its row counts do not add up: {} rows sent, {} loaded + {} filtered + {} unselected",
                self.rows_sent, c.loaded, c.filtered, c.unselected
            )?,
        }
        write!(
            f,
            "; error log: {}",
            self.error_url.as_deref().unwrap_or("(none)")
        )?;
        if let Some(e) = &self.first_errors {
            write!(f, ": {e}")?;
        }
        if self.label_committed {
            write!(f, ". The label is used up: fix the target table or the data, then this window must be loaded again under a new label")
        } else {
            write!(f, ". Nothing of this load was committed: fix the target table or the data, then restart")
        }
    }
}

impl SinkError {
    /// What kind of failure this is.
    pub fn kind(&self) -> FailureKind {
        match self {
            SinkError::Config(_) => FailureKind::Permanent,
            SinkError::Transport { .. } | SinkError::LabelPending { .. } => FailureKind::Transient,
            SinkError::Auth { .. } => FailureKind::Auth,
            SinkError::Refused { failure, .. } => failure.kind,
            SinkError::Rejected(r) => FailureKind::Rejected {
                reason: r.reason,
                label_committed: r.label_committed,
            },
        }
    }

    /// Whether a retry with the same label and body may succeed.
    pub fn is_transient(&self) -> bool {
        self.kind().is_retryable()
    }
}

/// Stream Load client: one `reqwest::Client` (connections reused), redirects by hand.
pub struct StreamLoadClient {
    http: reqwest::Client,
    fe_url: url::Url,
    be_url: Option<url::Url>,
    user: String,
    /// `Basic …`, marked sensitive so reqwest never shows it.
    auth: HeaderValue,
    connect_timeout: Duration,
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

/// `host:port` of a URL, for messages (never the user info or the path).
fn host_port(u: &url::Url) -> String {
    format!(
        "{}:{}",
        u.host_str().unwrap_or("?"),
        u.port_or_known_default().unwrap_or(0)
    )
}

fn same_origin(a: &url::Url, b: &url::Url) -> bool {
    a.host_str() == b.host_str() && a.port_or_known_default() == b.port_or_known_default()
}

/// The root cause of a transport error, said once: the deepest I/O error by its kind, else
/// the deepest cause's own text. reqwest's own text is not used: it names the whole URL.
fn root_cause(e: &reqwest::Error) -> String {
    let mut deepest: Option<&(dyn std::error::Error + 'static)> = None;
    let mut io: Option<&std::io::Error> = None;
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(i) = s.downcast_ref::<std::io::Error>() {
            io = Some(i);
        }
        deepest = Some(s);
        src = s.source();
    }
    if let Some(i) = io {
        use std::io::ErrorKind::*;
        return match i.kind() {
            ConnectionRefused => "connection refused".into(),
            ConnectionReset => "connection reset".into(),
            ConnectionAborted | BrokenPipe | UnexpectedEof => "the connection was closed".into(),
            TimedOut => "timed out".into(),
            _ => i.to_string(),
        };
    }
    match deepest {
        Some(d) => d.to_string(),
        None if e.is_body() => "the body could not be sent".into(),
        None if e.is_decode() => "the reply could not be read".into(),
        None => "the request failed".into(),
    }
}

fn failure(kind: FailureKind, http_status: u16, message: impl Into<String>) -> Failure {
    Failure {
        kind,
        http_status,
        status: String::new(),
        message: message.into(),
        counts: RowCounts::default(),
        error_url: None,
    }
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
            connect_timeout: cfg.connect_timeout,
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

    /// Which node a URL reaches, for messages.
    fn node(&self, url: &url::Url) -> String {
        let hp = host_port(url);
        if same_origin(url, &self.fe_url) {
            format!("the StarRocks FE at {hp} (SINK_URL)")
        } else if self.be_url.as_ref().is_some_and(|b| same_origin(url, b)) {
            format!("the StarRocks BE at {hp} (SINK_BE_URL)")
        } else {
            format!("the StarRocks BE at {hp} (from the FE's redirect)")
        }
    }

    fn transport(&self, req: &LoadRequest, url: &url::Url, e: &reqwest::Error) -> SinkError {
        let node = self.node(url);
        let message = if e.is_connect() && e.is_timeout() {
            format!(
                "cannot connect to {node}: no answer within {:?} (SINK_CONNECT_TIMEOUT_MS)",
                self.connect_timeout
            )
        } else if e.is_connect() {
            format!("cannot connect to {node}: {}", root_cause(e))
        } else if e.is_timeout() {
            format!(
                "{node} did not answer within {:?} (SINK_REQUEST_TIMEOUT_MS)",
                self.request_timeout
            )
        } else {
            format!("the exchange with {node} broke off: {}", root_cause(e))
        };
        SinkError::Transport {
            table: req.table.clone(),
            label: req.label.clone(),
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
    ) -> Result<reqwest::Response, SinkError> {
        let mut rb = self.http.put(url.clone()).headers(headers.clone());
        rb = match body {
            Body::Empty => rb
                .header(EXPECT, "100-continue")
                .header(reqwest::header::CONTENT_LENGTH, "0")
                .body(Vec::<u8>::new()),
            Body::Full(b) => rb.body(b),
        };
        rb.send().await.map_err(|e| self.transport(req, url, &e))
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
            let resp = self.put(req, &url, headers, Body::Empty).await?;
            let status = resp.status();
            if status.is_redirection() {
                url = self.location(req, &url, &resp, "the FE's redirect probe")?;
                if !same_origin(&url, &self.fe_url) {
                    return Ok(url);
                }
                continue; // FE → other FE (leader): probe again.
            }
            let body = resp
                .bytes()
                .await
                .map_err(|e| self.transport(req, &url, &e))?;
            let f = reply::classify_probe(status.as_u16(), &body);
            return Err(self.refused(req, "the FE's redirect probe", f).await);
        }
        Err(self.too_many_redirects(req, "the FE's redirect probe"))
    }

    fn too_many_redirects(&self, req: &LoadRequest, what: &'static str) -> SinkError {
        SinkError::Refused {
            table: req.table.clone(),
            label: req.label.clone(),
            what,
            failure: Box::new(failure(
                FailureKind::Permanent,
                307,
                format!("more than {MAX_REDIRECTS} redirects in a row; check SINK_URL"),
            )),
        }
    }

    fn location(
        &self,
        req: &LoadRequest,
        base: &url::Url,
        resp: &reqwest::Response,
        what: &'static str,
    ) -> Result<url::Url, SinkError> {
        let status = resp.status().as_u16();
        let bad = |kind, message: String| SinkError::Refused {
            table: req.table.clone(),
            label: req.label.clone(),
            what,
            failure: Box::new(failure(kind, status, message)),
        };
        let loc = resp
            .headers()
            .get(LOCATION)
            .ok_or_else(|| bad(FailureKind::Transient, "a redirect without Location".into()))?;
        let loc = loc
            .to_str()
            .map_err(|_| bad(FailureKind::Permanent, "Location is not ASCII".into()))?;
        base.join(loc).map_err(|e| {
            bad(
                FailureKind::Permanent,
                format!("Location {loc:?} is not a URL: {e}"),
            )
        })
    }

    /// The error for a classified failure reply (fetching the error log of rejected rows).
    async fn refused(&self, req: &LoadRequest, what: &'static str, f: Failure) -> SinkError {
        match f.kind {
            FailureKind::Auth => SinkError::Auth {
                table: req.table.clone(),
                user: self.user.clone(),
                failure: Box::new(f),
            },
            FailureKind::Rejected {
                reason,
                label_committed,
            } => {
                let first_errors = match &f.error_url {
                    Some(u) => self.fetch_error_log(u).await,
                    None => None,
                };
                SinkError::Rejected(Box::new(RejectedRows {
                    table: req.table.clone(),
                    label: req.label.clone(),
                    reason,
                    message: f.message,
                    rows_sent: req.rows as u64,
                    counts: f.counts,
                    error_url: f.error_url,
                    first_errors,
                    label_committed,
                }))
            }
            _ => SinkError::Refused {
                table: req.table.clone(),
                label: req.label.clone(),
                what,
                failure: Box::new(f),
            },
        }
    }

    /// One load attempt with full reply checks (invariant 6). `Ok` means the data of this
    /// label is (or will shortly be) visible in StarRocks.
    pub async fn load(&self, req: &LoadRequest) -> Result<LoadOutcome, SinkError> {
        let headers = self.headers(req)?;
        let mut url = self.resolve_target(req, &headers).await?;
        let mut hops = 0;
        let resp = loop {
            let resp = self
                .put(req, &url, &headers, Body::Full(req.body.clone()))
                .await?;
            if resp.status().is_redirection() {
                if hops >= MAX_REDIRECTS {
                    return Err(self.too_many_redirects(req, "the BE"));
                }
                hops += 1;
                url = self.location(req, &url, &resp, "the BE")?;
                continue;
            }
            break resp;
        };
        // Failpoint: the BE has received the whole body and answered (its reply head is
        // here), but the reply body, which says how the load ended, is not read yet. A
        // crash here leaves a load whose outcome only its label can tell.
        crate::failpoints::crash(crate::failpoints::SINK_AFTER_BODY);
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .map_err(|e| self.transport(req, &url, &e))?;
        let sent = Sent {
            rows: req.rows as u64,
            max_filter_ratio: self.max_filter_ratio,
        };
        let verdict = reply::classify_load(status, &body, &sent);
        debug!(table = %req.table, label = %req.label, ?verdict, "stream load reply");
        match verdict {
            Verdict::Loaded(c) => {
                if c.counts.filtered > 0 {
                    warn!(table = %req.table, label = %req.label, filtered = c.counts.filtered,
                          rows = req.rows, error_url = c.error_url.as_deref().unwrap_or(""),
                          "StarRocks dropped rows of this load that failed its data checks, within SINK_MAX_FILTER_RATIO; they are NOT in the target");
                }
                if c.status == LoadStatus::PublishTimeout {
                    info!(table = %req.table, label = %req.label, "Publish Timeout: committed, visible shortly");
                }
                Ok(LoadOutcome {
                    status: c.status,
                    txn_id: c.txn_id,
                    loaded_rows: c.counts.loaded,
                    filtered_rows: c.counts.filtered,
                    load_time_ms: c.load_time_ms,
                    attempts: 1,
                })
            }
            Verdict::AlreadyLoaded { txn_id } => {
                info!(table = %req.table, label = %req.label, "label already loaded: counted as done");
                Ok(Self::already_loaded(txn_id))
            }
            Verdict::LabelRunning { .. } => self.wait_label(req).await,
            Verdict::Failed(f) => Err(self.refused(req, "the BE", f).await),
        }
    }

    fn already_loaded(txn_id: i64) -> LoadOutcome {
        LoadOutcome {
            status: LoadStatus::AlreadyLoaded,
            txn_id,
            loaded_rows: 0,
            filtered_rows: 0,
            load_time_ms: 0,
            attempts: 1,
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
        Some(reply::excerpt(&lines.join(" | "), ERROR_LOG_EXCERPT))
    }

    /// Polls `get_load_state` after `Label Already Exists / RUNNING` until the earlier
    /// attempt is VISIBLE/COMMITTED (done) or ABORTED/UNKNOWN (transient: retry the same
    /// label), for at most about the load timeout.
    async fn wait_label(&self, req: &LoadRequest) -> Result<LoadOutcome, SinkError> {
        let deadline =
            tokio::time::Instant::now() + self.request_timeout.max(Duration::from_secs(5));
        let mut backoff =
            RetryPolicy::new(Duration::from_millis(200), Duration::from_secs(5)).backoff();
        let mut last = LoadState::Prepare;
        loop {
            match self.load_state(req).await {
                Ok(state) if state.is_committed() => {
                    info!(table = %req.table, label = %req.label, %state, "earlier attempt finished: counted as done");
                    return Ok(Self::already_loaded(-1));
                }
                Ok(state) if state.is_free() => {
                    return Err(SinkError::LabelPending {
                        table: req.table.clone(),
                        label: req.label.clone(),
                        state: state.to_string(),
                    })
                }
                Ok(state) => last = state,
                Err(e) if e.is_transient() => {
                    debug!(error = %e, "get_load_state failed; polling again");
                }
                Err(e) => return Err(e),
            }
            let pause = backoff.next_delay().unwrap_or(Duration::from_secs(5));
            if tokio::time::Instant::now() + pause > deadline {
                return Err(SinkError::LabelPending {
                    table: req.table.clone(),
                    label: req.label.clone(),
                    state: format!("still {last}"),
                });
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// The state of the request's label (`GET /api/{db}/get_load_state`).
    pub async fn load_state(&self, req: &LoadRequest) -> Result<LoadState, SinkError> {
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
                .map_err(|e| self.transport(req, &url, &e))?;
            if resp.status().is_redirection() {
                url = self.location(req, &url, &resp, "get_load_state")?;
                continue;
            }
            let status = resp.status().as_u16();
            let body = resp
                .bytes()
                .await
                .map_err(|e| self.transport(req, &url, &e))?;
            return match reply::classify_load_state(status, &body) {
                Ok(s) => Ok(s),
                Err(f) => Err(self.refused(req, "get_load_state", f).await),
            };
        }
        Err(self.too_many_redirects(req, "get_load_state"))
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
        let mut backoff = policy.backoff();
        loop {
            match self.load(req).await {
                Ok(mut o) => {
                    o.attempts = backoff.attempts() + 1;
                    return Ok(o);
                }
                Err(e) if e.is_transient() => {
                    let Some(delay) = backoff.next_delay() else {
                        return Err(e);
                    };
                    on_retry(&e, backoff.attempts(), delay);
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_or_permanent_errors() {
        let refused = |kind| SinkError::Refused {
            table: "t".into(),
            label: "l".into(),
            what: "the BE",
            failure: Box::new(failure(kind, 200, "m")),
        };
        assert!(refused(FailureKind::Transient).is_transient());
        assert!(refused(FailureKind::Ambiguous).is_transient());
        assert!(!refused(FailureKind::Permanent).is_transient());
        assert!(!SinkError::Auth {
            table: "t".into(),
            user: "u".into(),
            failure: Box::new(failure(FailureKind::Auth, 401, "no")),
        }
        .is_transient());
        assert!(SinkError::LabelPending {
            table: "t".into(),
            label: "l".into(),
            state: "ABORTED".into()
        }
        .is_transient());
    }
}
