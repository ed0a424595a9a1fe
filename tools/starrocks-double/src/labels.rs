//! Per-database label store: the state of every transaction by label, as the FE's
//! DatabaseTransactionMgr keeps it. Aborted labels may be reused; finished labels are kept
//! for `label_keep_max_second` and then forgotten.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Transaction state of a label (the names `get_load_state` reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TxnState {
    /// Begun, not finished.
    Prepare,
    /// Committed, not yet visible.
    Committed,
    /// Visible.
    Visible,
    /// Aborted (the label may be reused).
    Aborted,
}

impl TxnState {
    /// Name as in `get_load_state`.
    pub fn as_str(&self) -> &'static str {
        match self {
            TxnState::Prepare => "PREPARE",
            TxnState::Committed => "COMMITTED",
            TxnState::Visible => "VISIBLE",
            TxnState::Aborted => "ABORTED",
        }
    }

    /// `ExistingJobStatus` for a label conflict, None if the label is reusable.
    pub fn existing_job_status(&self) -> Option<&'static str> {
        match self {
            TxnState::Prepare => Some("RUNNING"),
            TxnState::Committed | TxnState::Visible => Some("FINISHED"),
            TxnState::Aborted => None,
        }
    }
}

/// What is remembered about a label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelEntry {
    /// Transaction id.
    pub txn_id: i64,
    /// Table loaded.
    pub table: String,
    /// State.
    pub state: TxnState,
    /// Abort reason, if aborted.
    pub reason: String,
    /// Unix ms when the transaction ended (for retention).
    pub finished_at_ms: Option<i64>,
}

/// Labels of one database.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LabelStore {
    entries: HashMap<String, LabelEntry>,
}

/// Checks the label format (`^[-\w]{1,128}$`, ASCII).
pub fn check_label_format(label: &str) -> Result<(), String> {
    let ok = !label.is_empty()
        && label.len() <= 128
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "Label format error. regex: ^[-\\w]{{1,128}}$, label: {label}"
        ))
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl LabelStore {
    /// Forgets finished labels older than `keep_secs`.
    pub fn evict(&mut self, keep_secs: u64) {
        let limit = now_ms() - (keep_secs as i64).saturating_mul(1000);
        self.entries
            .retain(|_, e| e.finished_at_ms.is_none_or(|t| t >= limit));
    }

    /// The entry of a label.
    pub fn get(&self, label: &str) -> Option<&LabelEntry> {
        self.entries.get(label)
    }

    /// If the label is held by a non-aborted transaction: its `ExistingJobStatus`.
    pub fn conflict(&self, label: &str) -> Option<&'static str> {
        self.entries
            .get(label)
            .and_then(|e| e.state.existing_job_status())
    }

    /// Registers a new transaction in PREPARE.
    pub fn begin(&mut self, label: &str, txn_id: i64, table: &str) {
        self.entries.insert(
            label.to_string(),
            LabelEntry {
                txn_id,
                table: table.to_string(),
                state: TxnState::Prepare,
                reason: String::new(),
                finished_at_ms: None,
            },
        );
    }

    /// Moves a label to a new state (only if it still belongs to `txn_id`).
    pub fn set_state(&mut self, label: &str, txn_id: i64, state: TxnState, reason: &str) {
        if let Some(e) = self.entries.get_mut(label) {
            if e.txn_id == txn_id {
                e.state = state;
                e.reason = reason.to_string();
                if state != TxnState::Prepare {
                    e.finished_at_ms = Some(now_ms());
                }
            }
        }
    }

    /// Number of transactions still running.
    pub fn running(&self) -> usize {
        self.entries
            .values()
            .filter(|e| e.state == TxnState::Prepare)
            .count()
    }

    /// All labels (for read-back).
    pub fn all(&self) -> impl Iterator<Item = (&String, &LabelEntry)> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_format() {
        assert!(check_label_format("cdc_a-b_01").is_ok());
        assert!(check_label_format(&"a".repeat(128)).is_ok());
        let e = check_label_format(&"a".repeat(129)).expect_err("too long");
        assert!(e.starts_with("Label format error. regex: ^[-\\w]{1,128}$, label: aaa"));
        assert!(check_label_format("a:b").is_err());
        assert!(check_label_format("").is_err());
    }

    #[test]
    fn lifecycle_and_reuse() {
        let mut s = LabelStore::default();
        s.begin("l1", 1, "t");
        assert_eq!(s.conflict("l1"), Some("RUNNING"));
        assert_eq!(s.running(), 1);
        s.set_state("l1", 1, TxnState::Aborted, "x");
        assert_eq!(s.conflict("l1"), None, "aborted label reusable");
        s.begin("l1", 2, "t");
        s.set_state("l1", 1, TxnState::Visible, "");
        assert_eq!(s.conflict("l1"), Some("RUNNING"), "stale txn id ignored");
        s.set_state("l1", 2, TxnState::Visible, "");
        assert_eq!(s.conflict("l1"), Some("FINISHED"));
        s.evict(0);
        std::thread::sleep(std::time::Duration::from_millis(5));
        s.evict(0);
        assert_eq!(s.conflict("l1"), None, "evicted after retention");
    }
}
