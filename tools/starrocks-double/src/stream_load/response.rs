//! The BE's Stream Load reply (`StreamLoadContext::to_json`): field names and order as
//! StarRocks writes them, pretty-printed with a 4-space indent.

use serde::{Deserialize, Serialize};

/// Status strings.
pub mod status {
    /// Loaded and visible.
    pub const SUCCESS: &str = "Success";
    /// Committed, visible later.
    pub const PUBLISH_TIMEOUT: &str = "Publish Timeout";
    /// Duplicate label.
    pub const LABEL_EXISTS: &str = "Label Already Exists";
    /// Anything else.
    pub const FAIL: &str = "Fail";
}

/// A Stream Load response body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadResponse {
    /// Transaction id, -1 when no transaction was begun.
    #[serde(rename = "TxnId")]
    pub txn_id: i64,
    /// Label.
    #[serde(rename = "Label")]
    pub label: String,
    /// Status.
    #[serde(rename = "Status")]
    pub status: String,
    /// Only for "Label Already Exists": RUNNING / FINISHED.
    #[serde(
        rename = "ExistingJobStatus",
        skip_serializing_if = "Option::is_none",
        default
    )]
    pub existing_job_status: Option<String>,
    /// Message ("OK" on success).
    #[serde(rename = "Message")]
    pub message: String,
    /// loaded + filtered + unselected.
    #[serde(rename = "NumberTotalRows")]
    pub number_total_rows: u64,
    /// Rows loaded.
    #[serde(rename = "NumberLoadedRows")]
    pub number_loaded_rows: u64,
    /// Rows rejected by data-quality checks.
    #[serde(rename = "NumberFilteredRows")]
    pub number_filtered_rows: u64,
    /// Rows removed by `where`.
    #[serde(rename = "NumberUnselectedRows")]
    pub number_unselected_rows: u64,
    /// Bytes received.
    #[serde(rename = "LoadBytes")]
    pub load_bytes: u64,
    /// Total time.
    #[serde(rename = "LoadTimeMs")]
    pub load_time_ms: u64,
    /// Begin txn time.
    #[serde(rename = "BeginTxnTimeMs")]
    pub begin_txn_time_ms: u64,
    /// Plan time.
    #[serde(rename = "StreamLoadPlanTimeMs")]
    pub stream_load_plan_time_ms: u64,
    /// Read time.
    #[serde(rename = "ReadDataTimeMs")]
    pub read_data_time_ms: u64,
    /// Write time.
    #[serde(rename = "WriteDataTimeMs")]
    pub write_data_time_ms: u64,
    /// Commit and publish time.
    #[serde(rename = "CommitAndPublishTimeMs")]
    pub commit_and_publish_time_ms: u64,
    /// Error log URL, when rows were filtered.
    #[serde(rename = "ErrorURL", skip_serializing_if = "Option::is_none", default)]
    pub error_url: Option<String>,
}

impl LoadResponse {
    /// A response with zero counters.
    pub fn new(txn_id: i64, label: &str, status: &str, message: impl Into<String>) -> Self {
        LoadResponse {
            txn_id,
            label: label.to_string(),
            status: status.to_string(),
            existing_job_status: None,
            message: message.into(),
            number_total_rows: 0,
            number_loaded_rows: 0,
            number_filtered_rows: 0,
            number_unselected_rows: 0,
            load_bytes: 0,
            load_time_ms: 0,
            begin_txn_time_ms: 0,
            stream_load_plan_time_ms: 0,
            read_data_time_ms: 0,
            write_data_time_ms: 0,
            commit_and_publish_time_ms: 0,
            error_url: None,
        }
    }

    /// A `Fail` response.
    pub fn fail(txn_id: i64, label: &str, message: impl Into<String>) -> Self {
        Self::new(txn_id, label, status::FAIL, message)
    }

    /// Pretty JSON (4-space indent) as RapidJSON's PrettyWriter writes it.
    pub fn render(&self, legacy_put_time_key: bool) -> String {
        let mut buf = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
        let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
        let text = match self.serialize(&mut ser) {
            Ok(()) => String::from_utf8_lossy(&buf).into_owned(),
            Err(e) => format!("{{\"Status\": \"Fail\", \"Message\": \"{e}\"}}"),
        };
        if legacy_put_time_key {
            text.replacen("\"StreamLoadPlanTimeMs\"", "\"StreamLoadPutTimeMs\"", 1)
        } else {
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_and_optional_fields() {
        let mut r = LoadResponse::new(
            -1,
            "l",
            status::LABEL_EXISTS,
            "Label [l] has already been used.",
        );
        r.existing_job_status = Some("FINISHED".into());
        let text = r.render(false);
        let keys: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix('"'))
            .filter_map(|l| l.split('"').next())
            .collect();
        assert_eq!(
            keys,
            [
                "TxnId",
                "Label",
                "Status",
                "ExistingJobStatus",
                "Message",
                "NumberTotalRows",
                "NumberLoadedRows",
                "NumberFilteredRows",
                "NumberUnselectedRows",
                "LoadBytes",
                "LoadTimeMs",
                "BeginTxnTimeMs",
                "StreamLoadPlanTimeMs",
                "ReadDataTimeMs",
                "WriteDataTimeMs",
                "CommitAndPublishTimeMs"
            ]
        );
        assert!(text.contains("\n    \"TxnId\": -1,"));
        let legacy = LoadResponse::new(1, "l", status::SUCCESS, "OK").render(true);
        assert!(legacy.contains("StreamLoadPutTimeMs") && !legacy.contains("ExistingJobStatus"));
    }
}
