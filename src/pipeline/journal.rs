//! The load journal (invariant 5): before a window's loads are sent, the window's steps
//! (table, schema version, column set, sequence range, label) are made durable in the
//! spool's ledger. After a crash the loader re-sends exactly those loads, with the same
//! labels and content, before anything newer of their tables, so a body StarRocks received
//! before the crash and commits afterwards can only ever repeat what is re-sent, never
//! revert newer rows. Pure: the journal's types, labels and encoding.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::plan::ColumnSet;
use crate::core::{Lsn, RelationId};

/// Version of the encoded journal (a byte in front of the bincode payload).
const JOURNAL_VERSION: u8 = 1;

/// The steps of the window in flight: everything planned from the record after the loaded
/// mark up to `planned_through`, in the order each table must run them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// `SINK_DELETE_MODE=soft` when the window was planned (a replay plans the same rows).
    pub soft_deletes: bool,
    /// Records from the loaded mark up to here are covered by the steps.
    pub planned_through: u64,
    /// The commit the window ends on, `(seq, end_lsn)`; `None` while a transaction larger
    /// than a window is loaded in parts (its commit is marked with a later window).
    pub window_end: Option<(u64, Lsn)>,
    pub tables: BTreeMap<RelationId, TableJournal>,
}

/// One table's steps, in order, and the key columns each schema version was planned with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableJournal {
    pub keys: BTreeMap<u32, Vec<usize>>,
    pub steps: Vec<JournalStep>,
}

/// One step of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JournalStep {
    /// A Stream Load of this table's rows of `rel_version` with `columns` planned from
    /// records `first_seq..=last_seq`.
    Load {
        rel_version: u32,
        columns: ColumnSet,
        first_seq: u64,
        last_seq: u64,
        /// Bumped when StarRocks committed this label without every row (filtered rows):
        /// the label is spent, the rows are sent again under the next one.
        generation: u32,
        label: String,
    },
    /// A TRUNCATE; `done` once it ran, so a replay never truncates what followed it.
    Truncate { seq: u64, done: bool },
}

impl Journal {
    pub fn new(soft_deletes: bool) -> Self {
        Journal {
            soft_deletes,
            planned_through: 0,
            window_end: None,
            tables: BTreeMap::new(),
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, JournalError> {
        let mut out = vec![JOURNAL_VERSION];
        bincode::serialize_into(&mut out, self).map_err(|e| JournalError(e.to_string()))?;
        Ok(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, JournalError> {
        match bytes.split_first() {
            Some((&JOURNAL_VERSION, rest)) => {
                bincode::deserialize(rest).map_err(|e| JournalError(e.to_string()))
            }
            Some((v, _)) => Err(JournalError(format!(
                "journal version {v}, this build reads {JOURNAL_VERSION}"
            ))),
            None => Err(JournalError("empty journal".into())),
        }
    }

    /// Every load step, for tests and inspection.
    pub fn loads(&self) -> impl Iterator<Item = (RelationId, &JournalStep)> {
        self.tables.iter().flat_map(|(id, t)| {
            t.steps
                .iter()
                .filter(|s| matches!(s, JournalStep::Load { .. }))
                .map(move |s| (*id, s))
        })
    }
}

/// An unreadable journal (the ledger's CRC passed, the content does not decode).
#[derive(Debug, thiserror::Error)]
#[error("the spool's load journal cannot be read ({0}); it was written by another version of dbmazz or is damaged")]
pub struct JournalError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_versioned() {
        let mut j = Journal::new(true);
        j.planned_through = 42;
        j.window_end = Some((42, Lsn(0x1000)));
        let t = j.tables.entry(7).or_default();
        t.keys.insert(1, vec![0, 2]);
        t.steps.push(JournalStep::Load {
            rel_version: 1,
            columns: ColumnSet::Partial(vec![0, 1]),
            first_seq: 3,
            last_seq: 40,
            generation: 0,
            label: "dbmazz_x".into(),
        });
        t.steps.push(JournalStep::Truncate {
            seq: 41,
            done: true,
        });
        let bytes = j.encode().unwrap();
        assert_eq!(Journal::decode(&bytes).unwrap(), j);
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(Journal::decode(&other)
            .unwrap_err()
            .to_string()
            .contains("version 9"));
        assert!(Journal::decode(&bytes[..bytes.len() / 2]).is_err());
        assert_eq!(j.loads().count(), 1);
    }
}
