//! Stream Load replies as pure data (no I/O): parses what the FE and the BE answer (the
//! BE's load JSON, the FE's `{"Status":"FAILED","Message":…}` TransactionResult, the
//! RestBaseResult shapes of 401/500 replies, `get_load_state`) and classifies each into a
//! typed verdict following the spec's §3 and §9.
//!
//! Keeps invariant 6: HTTP 200 is not success, the JSON `Status` decides; a `Success` with
//! filtered rows beyond `max_filter_ratio`, or whose row counts do not add up to the rows
//! sent, is a failure (the label is then committed, see [`FailureKind::Rejected`]). A reply
//! that cannot be read is never taken for success. Never panics, whatever the bytes.

use std::fmt;

use serde_json::{Map, Value as Json};

/// At most this many bytes of an unexpected body are kept for an error message.
pub const BODY_EXCERPT: usize = 512;

/// How a load that went through ended.
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

/// The row counters of a load reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowCounts {
    /// `NumberTotalRows`.
    pub total: u64,
    /// `NumberLoadedRows`.
    pub loaded: u64,
    /// `NumberFilteredRows`: rows that failed StarRocks's data-quality checks.
    pub filtered: u64,
    /// `NumberUnselectedRows`: rows removed by a `where` header (dbmazz sends none).
    pub unselected: u64,
}

/// A Stream Load reply body, read leniently: the BE's keys (`Status`, `Message`, …) or the
/// FE's lower-case RestBaseResult keys (`status`, `msg`, `message`). Missing or malformed
/// counters read as 0 (which the count check then catches on a `Success`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReply {
    pub txn_id: i64,
    pub label: String,
    pub status: String,
    pub existing_job_status: Option<String>,
    pub message: String,
    pub counts: RowCounts,
    pub load_time_ms: u64,
    pub error_url: Option<String>,
}

fn text_field(o: &Map<String, Json>, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| match o.get(*k) {
        Some(Json::String(s)) => Some(s.clone()),
        Some(Json::Number(n)) => Some(n.to_string()),
        Some(Json::Bool(b)) => Some(b.to_string()),
        _ => None,
    })
}

fn count_field(o: &Map<String, Json>, key: &str) -> u64 {
    match o.get(key) {
        Some(Json::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Json::String(s)) => s.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

fn int_field(o: &Map<String, Json>, key: &str) -> i64 {
    match o.get(key) {
        Some(Json::Number(n)) => n.as_i64().unwrap_or(-1),
        Some(Json::String(s)) => s.trim().parse().unwrap_or(-1),
        _ => -1,
    }
}

impl LoadReply {
    /// Parses a reply body; `Err` says why it is not a Stream Load reply.
    pub fn parse(body: &[u8]) -> Result<LoadReply, String> {
        let v: Json = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let Json::Object(o) = v else {
            return Err("not a JSON object".into());
        };
        let status = text_field(&o, &["Status", "status"]).unwrap_or_default();
        if status.is_empty() {
            return Err("no Status".into());
        }
        Ok(LoadReply {
            txn_id: int_field(&o, "TxnId"),
            label: text_field(&o, &["Label"]).unwrap_or_default(),
            status,
            existing_job_status: text_field(&o, &["ExistingJobStatus"]),
            message: text_field(&o, &["Message", "message", "msg"]).unwrap_or_default(),
            counts: RowCounts {
                total: count_field(&o, "NumberTotalRows"),
                loaded: count_field(&o, "NumberLoadedRows"),
                filtered: count_field(&o, "NumberFilteredRows"),
                unselected: count_field(&o, "NumberUnselectedRows"),
            },
            load_time_ms: count_field(&o, "LoadTimeMs"),
            error_url: text_field(&o, &["ErrorURL"]).filter(|u| !u.is_empty()),
        })
    }
}

/// What was sent, against which the reply's counts are checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sent {
    /// Rows in the body.
    pub rows: u64,
    /// The `max_filter_ratio` header sent (SINK_MAX_FILTER_RATIO).
    pub max_filter_ratio: f64,
}

/// Why StarRocks's answer means rows are missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Rows failed StarRocks's data-quality checks (`NumberFilteredRows`).
    Filtered,
    /// Rows were counted as unselected, although dbmazz sends no `where` header.
    Unselected,
    /// `NumberLoadedRows + NumberFilteredRows + NumberUnselectedRows` is not the number of
    /// rows sent.
    CountMismatch,
}

/// The class of a failure: what the client does about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Retry with the same label and body (back-pressure, outages, 5xx).
    Transient,
    /// The load may or may not have committed (`Transaction status unknown`, an unreadable
    /// reply to a load): retry with the same label, which settles it.
    Ambiguous,
    /// Retrying cannot help (configuration, client bug, missing table, schema).
    Permanent,
    /// Credentials or privileges: permanent.
    Auth,
    /// Rows of this load are missing. `label_committed`: StarRocks committed the label
    /// anyway (a `Success` with filtered rows or bad counts), so a retry with the same
    /// label would be answered "already loaded" and lose the rows silently; when false the
    /// transaction was aborted and the label may be reused.
    Rejected {
        reason: RejectReason,
        label_committed: bool,
    },
}

impl FailureKind {
    /// Whether a retry with the same label and body may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, FailureKind::Transient | FailureKind::Ambiguous)
    }

    fn describe(&self) -> &'static str {
        match self {
            FailureKind::Transient => "transient, retried with the same label",
            FailureKind::Ambiguous => "outcome unknown, retried with the same label",
            FailureKind::Permanent => "permanent",
            FailureKind::Auth => "credentials refused",
            FailureKind::Rejected { .. } => "rows rejected",
        }
    }
}

/// A classified failure reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub kind: FailureKind,
    /// HTTP status of the reply.
    pub http_status: u16,
    /// The reply's `Status` (empty when the body had none).
    pub status: String,
    /// StarRocks's message, or an excerpt of an unexpected body.
    pub message: String,
    pub counts: RowCounts,
    pub error_url: Option<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.status.is_empty() {
            write!(f, "HTTP {}", self.http_status)?;
        } else {
            write!(f, "Status {:?}", self.status)?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        write!(f, " ({})", self.kind.describe())
    }
}

/// A load that StarRocks committed.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    /// `Success` or `PublishTimeout`.
    pub status: LoadStatus,
    pub txn_id: i64,
    pub counts: RowCounts,
    pub load_time_ms: u64,
    /// Set when rows were filtered within a configured `max_filter_ratio` > 0.
    pub error_url: Option<String>,
}

/// What a Stream Load reply means.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Committed by this attempt. `counts.filtered` > 0 only within a configured ratio.
    Loaded(Committed),
    /// `Label Already Exists` + `FINISHED`: an earlier attempt with this label committed.
    AlreadyLoaded { txn_id: i64 },
    /// `Label Already Exists` with a job still running (or of unknown state): poll
    /// `get_load_state` until it ends.
    LabelRunning { existing_job_status: String },
    /// Not loaded (or rows missing): see the failure's kind.
    Failed(Failure),
}

/// The class of a `Status: Fail` (or FE `FAILED`) message, per the spec's catalogue (§9).
/// These are StarRocks's own messages; the catalogue is the only source of their meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailClass {
    /// Retry with the same label (back-pressure, outages, leader changes).
    Transient,
    /// The commit's outcome is unknown: retry with the same label.
    Ambiguous,
    /// Retrying cannot help (configuration, client bug, schema or data).
    Permanent,
    /// Rows failed data-quality checks: permanent, with the error log.
    Filtered,
    /// Credentials or privileges: permanent.
    Auth,
}

/// Classifies a StarRocks failure message (spec §9). Unknown messages are transient
/// (retried, visibly): a wrong "permanent" would stop the pipeline on a passing problem,
/// a wrong "transient" only keeps retrying loudly.
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
    const AMBIGUOUS: &[&str] = &["transaction status unknown"];
    const TRANSIENT_FIRST: &[&str] = &[
        // "body size N exceed limit" is permanent, but these contain "exceed" too.
        "current running txns on db",
        "txn num per be exceeds limit",
        "too many versions",
    ];
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
    if AUTH.iter().any(|p| m.contains(p)) {
        return FailClass::Auth;
    }
    if FILTERED.iter().any(|p| m.contains(p)) {
        return FailClass::Filtered;
    }
    if AMBIGUOUS.iter().any(|p| m.contains(p)) {
        return FailClass::Ambiguous;
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

/// At most `max` bytes of `s`, cut on a character boundary, on one line.
pub fn excerpt(s: &str, max: usize) -> String {
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

fn body_excerpt(body: &[u8]) -> String {
    excerpt(&String::from_utf8_lossy(body), BODY_EXCERPT)
}

/// A reply that is not HTTP 200 (and not a redirect the client follows).
fn http_failure(http_status: u16, body: &[u8]) -> Failure {
    let parsed = LoadReply::parse(body).ok();
    let message = parsed
        .as_ref()
        .map(|r| r.message.clone())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| body_excerpt(body));
    let kind = match http_status {
        401 | 403 => FailureKind::Auth,
        408 | 429 | 500..=599 => FailureKind::Transient,
        _ => FailureKind::Permanent,
    };
    Failure {
        kind,
        http_status,
        status: parsed.map(|r| r.status).unwrap_or_default(),
        message,
        counts: RowCounts::default(),
        error_url: None,
    }
}

fn fail_class_kind(class: FailClass, counts: &RowCounts) -> FailureKind {
    if counts.filtered > 0 {
        // The filter-ratio check aborts the transaction: the label is reusable.
        return FailureKind::Rejected {
            reason: RejectReason::Filtered,
            label_committed: false,
        };
    }
    match class {
        FailClass::Transient => FailureKind::Transient,
        FailClass::Ambiguous => FailureKind::Ambiguous,
        FailClass::Permanent => FailureKind::Permanent,
        FailClass::Auth => FailureKind::Auth,
        FailClass::Filtered => FailureKind::Rejected {
            reason: RejectReason::Filtered,
            label_committed: false,
        },
    }
}

/// The rows a committed load is missing, if any (the count and filter-ratio checks).
fn missing_rows(c: &RowCounts, sent: &Sent) -> Option<RejectReason> {
    let accounted = u128::from(c.loaded) + u128::from(c.filtered) + u128::from(c.unselected);
    if accounted != u128::from(sent.rows) {
        return Some(RejectReason::CountMismatch);
    }
    if c.unselected > 0 {
        return Some(RejectReason::Unselected);
    }
    if c.filtered > 0 {
        let ratio = sent.max_filter_ratio;
        // StarRocks's own rule: filtered / (total - unselected) > max_filter_ratio fails.
        let considered = c.total.saturating_sub(c.unselected).max(c.filtered);
        let within = ratio > 0.0 && (c.filtered as f64) / (considered as f64) <= ratio;
        if !within {
            return Some(RejectReason::Filtered);
        }
    }
    None
}

/// Classifies a parsed Stream Load reply (HTTP 200).
pub fn classify_reply(r: &LoadReply, sent: &Sent) -> Verdict {
    let status = r.status.trim();
    let committed = |status: LoadStatus| match missing_rows(&r.counts, sent) {
        None => Verdict::Loaded(Committed {
            status,
            txn_id: r.txn_id,
            counts: r.counts,
            load_time_ms: r.load_time_ms,
            error_url: r.error_url.clone(),
        }),
        Some(reason) => Verdict::Failed(Failure {
            kind: FailureKind::Rejected {
                reason,
                label_committed: true,
            },
            http_status: 200,
            status: r.status.clone(),
            message: r.message.clone(),
            counts: r.counts,
            error_url: r.error_url.clone(),
        }),
    };
    if status.eq_ignore_ascii_case("Success") {
        return committed(LoadStatus::Success);
    }
    if status.eq_ignore_ascii_case("Publish Timeout") {
        return committed(LoadStatus::PublishTimeout);
    }
    if status.eq_ignore_ascii_case("Label Already Exists") {
        let job = r.existing_job_status.as_deref().unwrap_or("").trim();
        if job.eq_ignore_ascii_case("FINISHED") {
            return Verdict::AlreadyLoaded { txn_id: r.txn_id };
        }
        return Verdict::LabelRunning {
            existing_job_status: job.to_string(),
        };
    }
    // `Fail` (BE), `FAILED` (FE), or anything unknown: the message decides.
    let class = classify_fail(&r.message);
    Verdict::Failed(Failure {
        kind: fail_class_kind(class, &r.counts),
        http_status: 200,
        status: r.status.clone(),
        message: r.message.clone(),
        counts: r.counts,
        error_url: r.error_url.clone(),
    })
}

/// Classifies the reply to a Stream Load PUT (to the BE, or a final FE reply).
pub fn classify_load(http_status: u16, body: &[u8], sent: &Sent) -> Verdict {
    if http_status != 200 {
        return Verdict::Failed(http_failure(http_status, body));
    }
    match LoadReply::parse(body) {
        Ok(r) => classify_reply(&r, sent),
        // The BE may have committed before the reply got mangled: the label settles it.
        Err(why) => Verdict::Failed(Failure {
            kind: FailureKind::Ambiguous,
            http_status,
            status: String::new(),
            message: format!("unreadable reply ({why}): {}", body_excerpt(body)),
            counts: RowCounts::default(),
            error_url: None,
        }),
    }
}

/// Classifies the FE's answer to the empty-body redirect probe when it is not a 307: it is
/// always a failure. A load result there means SINK_URL reached a BE, not an FE.
pub fn classify_probe(http_status: u16, body: &[u8]) -> Failure {
    let not_fe = |status: String, message: String| {
        Failure {
        kind: FailureKind::Permanent,
        http_status,
        status,
        message: format!(
            "SINK_URL answered the redirect probe with a load result instead of a 307 ({message}): it must be the FE's HTTP address; to load straight into a BE set SINK_BE_URL"
        ),
        counts: RowCounts::default(),
        error_url: None,
    }
    };
    if http_status != 200 {
        return http_failure(http_status, body);
    }
    match LoadReply::parse(body) {
        Ok(r) => match classify_reply(
            &r,
            &Sent {
                rows: 0,
                max_filter_ratio: 0.0,
            },
        ) {
            Verdict::Failed(mut f) => {
                if matches!(f.kind, FailureKind::Rejected { .. }) {
                    // An empty body cannot have rows: this was a BE's load reply.
                    return not_fe(r.status, r.message);
                }
                f.kind = match f.kind {
                    // The probe loads nothing, so nothing is ambiguous about it.
                    FailureKind::Ambiguous => FailureKind::Transient,
                    k => k,
                };
                f
            }
            _ => not_fe(r.status, r.message),
        },
        Err(why) => Failure {
            kind: FailureKind::Transient,
            http_status,
            status: String::new(),
            message: format!("unreadable reply ({why}): {}", body_excerpt(body)),
            counts: RowCounts::default(),
            error_url: None,
        },
    }
}

/// A transaction state as `get_load_state` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadState {
    /// No such label (never begun, or forgotten after `label_keep_max_second`).
    Unknown,
    Prepare,
    Prepared,
    Committed,
    Visible,
    Aborted,
    /// A state this client does not know (treated as still running).
    Other(String),
}

impl LoadState {
    fn parse(s: &str) -> LoadState {
        match s.trim().to_ascii_uppercase().as_str() {
            "UNKNOWN" => LoadState::Unknown,
            "PREPARE" => LoadState::Prepare,
            "PREPARED" => LoadState::Prepared,
            "COMMITTED" => LoadState::Committed,
            "VISIBLE" => LoadState::Visible,
            "ABORTED" => LoadState::Aborted,
            _ => LoadState::Other(s.to_string()),
        }
    }

    /// The data of the label is (or will shortly be) visible.
    pub fn is_committed(&self) -> bool {
        matches!(self, LoadState::Committed | LoadState::Visible)
    }

    /// The label's transaction is over without data: the label may be loaded again.
    pub fn is_free(&self) -> bool {
        matches!(self, LoadState::Aborted | LoadState::Unknown)
    }
}

impl fmt::Display for LoadState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            LoadState::Unknown => "UNKNOWN",
            LoadState::Prepare => "PREPARE",
            LoadState::Prepared => "PREPARED",
            LoadState::Committed => "COMMITTED",
            LoadState::Visible => "VISIBLE",
            LoadState::Aborted => "ABORTED",
            LoadState::Other(s) => s,
        };
        f.write_str(s)
    }
}

/// Classifies a `GET /api/{db}/get_load_state?label=` reply.
pub fn classify_load_state(http_status: u16, body: &[u8]) -> Result<LoadState, Failure> {
    if http_status != 200 {
        return Err(http_failure(http_status, body));
    }
    let bad = |message: String| Failure {
        kind: FailureKind::Transient,
        http_status,
        status: String::new(),
        message,
        counts: RowCounts::default(),
        error_url: None,
    };
    let v: Json = serde_json::from_slice(body)
        .map_err(|e| bad(format!("unreadable reply ({e}): {}", body_excerpt(body))))?;
    let Json::Object(o) = v else {
        return Err(bad(format!("not a JSON object: {}", body_excerpt(body))));
    };
    let status = text_field(&o, &["status", "Status"]).unwrap_or_default();
    if !status.is_empty() && !status.eq_ignore_ascii_case("OK") {
        let message = text_field(&o, &["msg", "message", "Message"]).unwrap_or_default();
        let kind = match classify_fail(&message) {
            FailClass::Auth => FailureKind::Auth,
            FailClass::Permanent => FailureKind::Permanent,
            _ => FailureKind::Transient,
        };
        return Err(Failure {
            kind,
            http_status,
            status,
            message,
            counts: RowCounts::default(),
            error_url: None,
        });
    }
    match text_field(&o, &["state"]) {
        Some(s) if !s.trim().is_empty() => Ok(LoadState::parse(&s)),
        _ => Err(bad(format!("no state: {}", body_excerpt(body)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SENT3: Sent = Sent {
        rows: 3,
        max_filter_ratio: 0.0,
    };

    fn be(status: &str, loaded: u64, filtered: u64, extra: &str) -> String {
        format!(
            r#"{{
    "TxnId": 42,
    "Label": "l",
    "Status": "{status}",{extra}
    "Message": "OK",
    "NumberTotalRows": {},
    "NumberLoadedRows": {loaded},
    "NumberFilteredRows": {filtered},
    "NumberUnselectedRows": 0,
    "LoadBytes": 10,
    "LoadTimeMs": 7
}}"#,
            loaded + filtered
        )
    }

    #[test]
    fn success_with_every_row_is_loaded() {
        let v = classify_load(200, be("Success", 3, 0, "").as_bytes(), &SENT3);
        let Verdict::Loaded(c) = v else {
            panic!("{v:?}")
        };
        assert_eq!(c.status, LoadStatus::Success);
        assert_eq!(c.txn_id, 42);
        assert_eq!(c.load_time_ms, 7);
        let v = classify_load(200, be("Publish Timeout", 3, 0, "").as_bytes(), &SENT3);
        assert!(
            matches!(
                v,
                Verdict::Loaded(Committed {
                    status: LoadStatus::PublishTimeout,
                    ..
                })
            ),
            "{v:?}"
        );
    }

    #[test]
    fn success_with_filtered_rows_is_a_committed_rejection() {
        for status in ["Success", "Publish Timeout"] {
            let body = be(status, 2, 1, "").replace(
                "\"LoadTimeMs\": 7",
                "\"LoadTimeMs\": 7,\n    \"ErrorURL\": \"http://be/api/_load_error_log?file=x\"",
            );
            let v = classify_load(200, body.as_bytes(), &SENT3);
            let Verdict::Failed(f) = v else {
                panic!("{v:?}")
            };
            assert_eq!(
                f.kind,
                FailureKind::Rejected {
                    reason: RejectReason::Filtered,
                    label_committed: true
                }
            );
            assert_eq!(
                f.error_url.as_deref(),
                Some("http://be/api/_load_error_log?file=x")
            );
            assert_eq!(f.counts.filtered, 1);
            assert!(!f.kind.is_retryable());
        }
    }

    #[test]
    fn filtered_rows_within_a_configured_ratio_are_loaded_beyond_it_rejected() {
        let sent = Sent {
            rows: 4,
            max_filter_ratio: 0.25,
        };
        let body = be("Success", 3, 1, "");
        assert!(matches!(
            classify_load(200, body.as_bytes(), &sent),
            Verdict::Loaded(Committed {
                counts: RowCounts { filtered: 1, .. },
                ..
            })
        ));
        let body = be("Success", 2, 2, "");
        assert!(matches!(
            classify_load(200, body.as_bytes(), &sent),
            Verdict::Failed(Failure {
                kind: FailureKind::Rejected {
                    reason: RejectReason::Filtered,
                    label_committed: true
                },
                ..
            })
        ));
    }

    #[test]
    fn counts_that_do_not_add_up_are_rejected_whatever_the_ratio() {
        for ratio in [0.0, 0.9] {
            let sent = Sent {
                rows: 5,
                max_filter_ratio: ratio,
            };
            let v = classify_load(200, be("Success", 3, 1, "").as_bytes(), &sent);
            assert!(
                matches!(
                    v,
                    Verdict::Failed(Failure {
                        kind: FailureKind::Rejected {
                            reason: RejectReason::CountMismatch,
                            label_committed: true
                        },
                        ..
                    })
                ),
                "{v:?}"
            );
        }
        // Success without any counters: nothing says the rows arrived.
        let v = classify_load(200, br#"{"Status":"Success","Message":"OK"}"#, &SENT3);
        assert!(matches!(
            v,
            Verdict::Failed(Failure {
                kind: FailureKind::Rejected {
                    reason: RejectReason::CountMismatch,
                    ..
                },
                ..
            })
        ));
        // Unselected rows although no `where` was sent.
        let body = be("Success", 2, 0, "")
            .replace("\"NumberUnselectedRows\": 0", "\"NumberUnselectedRows\": 1");
        assert!(matches!(
            classify_load(200, body.as_bytes(), &SENT3),
            Verdict::Failed(Failure {
                kind: FailureKind::Rejected {
                    reason: RejectReason::Unselected,
                    ..
                },
                ..
            })
        ));
    }

    #[test]
    fn label_already_exists() {
        let fin = be(
            "Label Already Exists",
            0,
            0,
            "\n    \"ExistingJobStatus\": \"FINISHED\",",
        );
        assert_eq!(
            classify_load(200, fin.as_bytes(), &SENT3),
            Verdict::AlreadyLoaded { txn_id: 42 }
        );
        let run = fin.replace("FINISHED", "RUNNING");
        assert_eq!(
            classify_load(200, run.as_bytes(), &SENT3),
            Verdict::LabelRunning {
                existing_job_status: "RUNNING".into()
            }
        );
        let none = be("Label Already Exists", 0, 0, "");
        assert!(matches!(
            classify_load(200, none.as_bytes(), &SENT3),
            Verdict::LabelRunning { .. }
        ));
    }

    #[test]
    fn fail_replies_follow_the_catalogue() {
        let fail = |m: &str| {
            format!(r#"{{"TxnId": -1, "Label": "l", "Status": "Fail", "Message": "{m}"}}"#)
        };
        let kind = |body: String| match classify_load(200, body.as_bytes(), &SENT3) {
            Verdict::Failed(f) => f.kind,
            v => panic!("{v:?}"),
        };
        assert_eq!(kind(fail("too many versions")), FailureKind::Transient);
        assert_eq!(
            kind(fail("Commit transaction fail cause x, Transaction status unknown, you can retry with same label.")),
            FailureKind::Ambiguous
        );
        assert_eq!(
            kind(fail("unknown table \\\"db.t\\\"")),
            FailureKind::Permanent
        );
        assert_eq!(
            kind(fail("no valid Basic authorization")),
            FailureKind::Auth
        );
        assert_eq!(
            kind(fail("too many filtered rows")),
            FailureKind::Rejected {
                reason: RejectReason::Filtered,
                label_committed: false
            }
        );
        // FE TransactionResult shape.
        let fe = r#"{
  "Status": "FAILED",
  "Message": "class com.starrocks.common.DdlException: No backend alive."
}"#;
        assert_eq!(kind(fe.into()), FailureKind::Transient);
        let fe = fe.replace("No backend alive.", "There is no 100-continue header");
        assert_eq!(kind(fe), FailureKind::Permanent);
    }

    #[test]
    fn http_errors_and_unreadable_bodies() {
        let rest = br#"{"status":"FAILED","code":"1","msg":"Access denied for root@127.0.0.1","message":"Access denied for root@127.0.0.1"}"#;
        let Verdict::Failed(f) = classify_load(401, rest, &SENT3) else {
            panic!()
        };
        assert_eq!(f.kind, FailureKind::Auth);
        assert_eq!(f.message, "Access denied for root@127.0.0.1");
        let Verdict::Failed(f) = classify_load(503, b"<html>503</html>", &SENT3) else {
            panic!()
        };
        assert_eq!(f.kind, FailureKind::Transient);
        assert_eq!(
            f.to_string(),
            "HTTP 503: <html>503</html> (transient, retried with the same label)"
        );
        let Verdict::Failed(f) = classify_load(404, b"Not Found", &SENT3) else {
            panic!()
        };
        assert_eq!(f.kind, FailureKind::Permanent);
        let Verdict::Failed(f) = classify_load(200, b"{\"Status\": \"Succ", &SENT3) else {
            panic!()
        };
        assert_eq!(f.kind, FailureKind::Ambiguous);
        let Verdict::Failed(f) = classify_load(200, b"[1,2]", &SENT3) else {
            panic!()
        };
        assert_eq!(f.kind, FailureKind::Ambiguous);
    }

    #[test]
    fn probe_replies() {
        let be_reply = be("Success", 0, 0, "");
        assert_eq!(
            classify_probe(200, be_reply.as_bytes()).kind,
            FailureKind::Permanent
        );
        assert!(classify_probe(200, be_reply.as_bytes())
            .message
            .contains("SINK_BE_URL"));
        let fe = br#"{"Status":"FAILED","Message":"class com.starrocks.common.DdlException: No backend alive."}"#;
        assert_eq!(classify_probe(200, fe).kind, FailureKind::Transient);
        assert_eq!(classify_probe(401, b"{}").kind, FailureKind::Auth);
    }

    #[test]
    fn load_state_replies() {
        let ok = |s: &str| {
            format!(
                r#"{{"state":"{s}","reason":"","status":"OK","code":"0","msg":"Success","message":"OK"}}"#
            )
        };
        assert_eq!(
            classify_load_state(200, ok("VISIBLE").as_bytes()),
            Ok(LoadState::Visible)
        );
        assert_eq!(
            classify_load_state(200, ok("PREPARE").as_bytes()),
            Ok(LoadState::Prepare)
        );
        assert_eq!(
            classify_load_state(200, ok("UNKNOWN").as_bytes()),
            Ok(LoadState::Unknown)
        );
        assert_eq!(
            classify_load_state(200, ok("LATER").as_bytes()),
            Ok(LoadState::Other("LATER".into()))
        );
        assert!(LoadState::Committed.is_committed() && LoadState::Aborted.is_free());
        let failed = br#"{"status":"FAILED","code":"1","msg":"unknown database, database=x","message":"unknown database, database=x"}"#;
        assert_eq!(
            classify_load_state(200, failed).unwrap_err().kind,
            FailureKind::Permanent
        );
        assert_eq!(
            classify_load_state(401, b"").unwrap_err().kind,
            FailureKind::Auth
        );
        assert_eq!(
            classify_load_state(200, b"nope").unwrap_err().kind,
            FailureKind::Transient
        );
    }

    #[test]
    fn every_catalogue_message_is_classified() {
        use FailClass::*;
        let cases: &[(&str, FailClass)] = &[
            ("Commit transaction fail cause RPC failed, Transaction status unknown, you can retry with same label.", Ambiguous),
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
    fn excerpt_cuts_on_char_boundaries() {
        assert_eq!(excerpt("ab\ncd", 10), "ab cd");
        assert_eq!(excerpt("ééé", 3), "é…");
    }
}
