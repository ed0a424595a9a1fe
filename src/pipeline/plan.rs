//! Load planning: turns spool records (in sequence order) into per-table steps: loads of
//! rows that share one column set, and truncates, in the order they must run. Pure, no
//! I/O.
//!
//! Row semantics (architecture contract): INSERT/UPDATE → upsert (`__op` 0); DELETE →
//! `__op` 1; an UPDATE that changes the key deletes the old key first; an UPDATE whose
//! new tuple leaves TOASTed columns unchanged is completed from the old tuple when the
//! server sent it whole (REPLICA IDENTITY FULL), else it becomes a partial row listing
//! only the columns it has. Rows of different column sets never share a load, and the
//! order of changes per table is kept across loads; TRUNCATE is a step of its own.

use std::collections::BTreeMap;

use crate::core::{Change, ChangeOp, OldKind, Relation, RelationId, Value};

/// Whether a row upserts or deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOp {
    Upsert,
    Delete,
}

impl RowOp {
    /// StarRocks `__op` value.
    pub fn code(self) -> u8 {
        match self {
            RowOp::Upsert => 0,
            RowOp::Delete => 1,
        }
    }
}

/// The columns a load carries: all of them (a full row; deletes may carry keys only), or
/// a partial update listing column indexes (keys included).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ColumnSet {
    Full,
    Partial(Vec<usize>),
}

/// One row to load: column index → value (Null included), in relation column order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRow {
    pub op: RowOp,
    pub values: Vec<(usize, Value)>,
}

/// One step for one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Load {
        /// Relation schema version the rows were decoded with.
        rel_version: u32,
        columns: ColumnSet,
        rows: Vec<PlannedRow>,
        /// Spool sequence range of the rows (for the label).
        first_seq: u64,
        last_seq: u64,
        /// A truncate of this table ran earlier in the same unconfirmed window: the
        /// label must not be reused across runs (see `loader`).
        after_truncate: bool,
        /// Approximate payload bytes.
        bytes: usize,
    },
    Truncate {
        seq: u64,
    },
}

/// Planning errors: data the loader cannot express.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{table}: UPDATE/DELETE at seq {seq} without a key (REPLICA IDENTITY NOTHING?): cannot apply it to a primary key table")]
    NoKey { table: String, seq: u64 },
    #[error("{table}: change at seq {seq} has {got} values but the relation has {want} columns")]
    Arity {
        table: String,
        seq: u64,
        got: usize,
        want: usize,
    },
}

/// Accumulates the plan of a window of spool records.
#[derive(Debug, Default)]
pub struct Planner {
    /// Soft deletes (`SINK_DELETE_MODE=soft`): a delete that carries only the key becomes
    /// a partial row (keys only) so the row's other values stay in place.
    soft_deletes: bool,
    tables: BTreeMap<RelationId, Vec<Step>>,
    truncated: BTreeMap<RelationId, bool>,
    rows: usize,
    bytes: usize,
}

fn value_len(v: &Value) -> usize {
    match v {
        Value::Text(b) | Value::Binary(b) => b.len() + 4,
        _ => 4,
    }
}

impl Planner {
    pub fn new() -> Self {
        Self::default()
    }

    /// A planner for `SINK_DELETE_MODE=soft`.
    pub fn with_soft_deletes(soft_deletes: bool) -> Self {
        Planner {
            soft_deletes,
            ..Self::default()
        }
    }

    /// The column set of a delete row that carries only the key.
    fn key_delete_set(&self, key_idx: &[usize]) -> ColumnSet {
        if self.soft_deletes {
            ColumnSet::Partial(key_idx.to_vec())
        } else {
            ColumnSet::Full
        }
    }

    /// Rows planned so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Approximate payload bytes planned so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// Takes the planned steps, leaving the planner empty (truncate memory included:
    /// call at confirmed boundaries only, see [`Planner::take_keep_truncates`]).
    pub fn take(&mut self) -> BTreeMap<RelationId, Vec<Step>> {
        self.rows = 0;
        self.bytes = 0;
        self.truncated.clear();
        std::mem::take(&mut self.tables)
    }

    /// Takes the steps but remembers which tables were truncated, for a window that is
    /// executed in parts before its commit is confirmed.
    pub fn take_keep_truncates(&mut self) -> BTreeMap<RelationId, Vec<Step>> {
        self.rows = 0;
        self.bytes = 0;
        std::mem::take(&mut self.tables)
    }

    /// Adds one change (decoded with `rel` at `rel_version`) read at `seq`.
    pub fn add(
        &mut self,
        seq: u64,
        rel: &Relation,
        rel_version: u32,
        change: &Change,
    ) -> Result<(), PlanError> {
        let n = rel.columns.len();
        let check = |t: &[Value]| -> Result<(), PlanError> {
            if t.len() != n {
                return Err(PlanError::Arity {
                    table: rel.qualified_name(),
                    seq,
                    got: t.len(),
                    want: n,
                });
            }
            Ok(())
        };
        let key_idx: Vec<usize> = rel
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_key)
            .map(|(i, _)| i)
            .collect();
        match &change.op {
            ChangeOp::Insert { new } => {
                check(new)?;
                self.push_row(
                    seq,
                    rel.id,
                    rel_version,
                    full_or_partial(new, &key_idx, RowOp::Upsert),
                );
            }
            ChangeOp::Update { old, new } => {
                check(new)?;
                if let Some((_, o)) = old {
                    check(o)?;
                }
                // Key change: delete the old key first.
                if let Some((kind, o)) = old {
                    let changed = key_idx
                        .iter()
                        .any(|&i| o[i] != new[i] && o[i] != Value::UnchangedToast);
                    if changed && *kind == OldKind::Key && new.contains(&Value::UnchangedToast) {
                        // The new key's row cannot get the unchanged TOASTed values: they
                        // were not sent and the old row is deleted. Say so loudly.
                        tracing::warn!(
                            table = %rel.qualified_name(),
                            seq,
                            "key-changing UPDATE left TOASTed columns unchanged: without REPLICA IDENTITY FULL their values cannot follow the new key and stay NULL in the target"
                        );
                    }
                    if changed {
                        self.push_row(
                            seq,
                            rel.id,
                            rel_version,
                            (
                                self.key_delete_set(&key_idx),
                                key_row(o, &key_idx, RowOp::Delete),
                            ),
                        );
                    }
                }
                let mut new = new.clone();
                if let Some((OldKind::Full, o)) = old {
                    for (i, v) in new.iter_mut().enumerate() {
                        if *v == Value::UnchangedToast && o[i] != Value::UnchangedToast {
                            *v = o[i].clone();
                        }
                    }
                }
                self.push_row(
                    seq,
                    rel.id,
                    rel_version,
                    full_or_partial(&new, &key_idx, RowOp::Upsert),
                );
            }
            ChangeOp::Delete { old: (kind, o) } => {
                check(o)?;
                if key_idx.is_empty() && *kind == OldKind::Key {
                    return Err(PlanError::NoKey {
                        table: rel.qualified_name(),
                        seq,
                    });
                }
                let (set, row) = match kind {
                    // The full old row: keep the values (harmless, helps NOT NULL targets).
                    OldKind::Full => full_or_partial(o, &key_idx, RowOp::Delete),
                    OldKind::Key => (
                        self.key_delete_set(&key_idx),
                        key_row(o, &key_idx, RowOp::Delete),
                    ),
                };
                self.push_row(seq, rel.id, rel_version, (set, row));
            }
            ChangeOp::Truncate { relations, .. } => {
                for r in relations {
                    self.tables
                        .entry(*r)
                        .or_default()
                        .push(Step::Truncate { seq });
                    self.truncated.insert(*r, true);
                }
            }
        }
        Ok(())
    }

    fn push_row(
        &mut self,
        seq: u64,
        rel: RelationId,
        rel_version: u32,
        (columns, row): (ColumnSet, PlannedRow),
    ) {
        let bytes: usize = row.values.iter().map(|(_, v)| value_len(v)).sum::<usize>() + 8;
        self.rows += 1;
        self.bytes += bytes;
        let after_truncate = self.truncated.get(&rel).copied().unwrap_or(false);
        let steps = self.tables.entry(rel).or_default();
        if let Some(Step::Load {
            rel_version: v,
            columns: c,
            rows,
            last_seq,
            bytes: b,
            ..
        }) = steps.last_mut()
        {
            if *v == rel_version && *c == columns {
                rows.push(row);
                *last_seq = seq;
                *b += bytes;
                return;
            }
        }
        steps.push(Step::Load {
            rel_version,
            columns,
            rows: vec![row],
            first_seq: seq,
            last_seq: seq,
            after_truncate,
            bytes,
        });
    }
}

/// A row of every column, or a partial row when some columns are unchanged TOAST.
fn full_or_partial(t: &[Value], key_idx: &[usize], op: RowOp) -> (ColumnSet, PlannedRow) {
    let present: Vec<usize> = (0..t.len())
        .filter(|&i| t[i] != Value::UnchangedToast || key_idx.contains(&i))
        .collect();
    let values = present.iter().map(|&i| (i, t[i].clone())).collect();
    let set = if present.len() == t.len() {
        ColumnSet::Full
    } else {
        ColumnSet::Partial(present)
    };
    (set, PlannedRow { op, values })
}

fn key_row(t: &[Value], key_idx: &[usize], op: RowOp) -> PlannedRow {
    PlannedRow {
        op,
        values: key_idx.iter().map(|&i| (i, t[i].clone())).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Column, Lsn, ReplicaIdentity};

    fn rel() -> Relation {
        let col = |name: &str, is_key| Column {
            name: name.into(),
            is_key,
            type_oid: 25,
            type_modifier: -1,
        };
        Relation {
            id: 7,
            namespace: "public".into(),
            name: "t".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: vec![col("id", true), col("a", false), col("big", false)],
        }
    }

    fn t(s: &str) -> Value {
        Value::Text(s.as_bytes().to_vec())
    }

    fn change(op: ChangeOp) -> Change {
        Change {
            xid: 1,
            subxid: 1,
            relation: 7,
            lsn: Lsn(1),
            op,
        }
    }

    fn loads(steps: &[Step]) -> Vec<(ColumnSet, Vec<PlannedRow>)> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Load { columns, rows, .. } => Some((columns.clone(), rows.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn toast_unchanged_updates_become_partial_loads_never_mixed_with_full_rows() {
        let r = rel();
        let mut p = Planner::new();
        p.add(
            1,
            &r,
            1,
            &change(ChangeOp::Insert {
                new: vec![t("1"), t("x"), t("BIG")],
            }),
        )
        .unwrap();
        p.add(
            2,
            &r,
            1,
            &change(ChangeOp::Update {
                old: None,
                new: vec![t("1"), t("y"), Value::UnchangedToast],
            }),
        )
        .unwrap();
        p.add(
            3,
            &r,
            1,
            &change(ChangeOp::Update {
                old: None,
                new: vec![t("1"), t("z"), Value::UnchangedToast],
            }),
        )
        .unwrap();
        p.add(
            4,
            &r,
            1,
            &change(ChangeOp::Insert {
                new: vec![t("2"), t("q"), t("B2")],
            }),
        )
        .unwrap();
        let steps = p.take().remove(&7).unwrap();
        let l = loads(&steps);
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].0, ColumnSet::Full);
        assert_eq!(l[1].0, ColumnSet::Partial(vec![0, 1]));
        assert_eq!(l[1].1.len(), 2);
        assert_eq!(l[1].1[1].values, vec![(0, t("1")), (1, t("z"))]);
        assert_eq!(l[2].0, ColumnSet::Full);
        match &steps[1] {
            Step::Load {
                first_seq,
                last_seq,
                ..
            } => assert_eq!((*first_seq, *last_seq), (2, 3)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn full_old_tuple_fills_unchanged_toast() {
        let r = rel();
        let mut p = Planner::new();
        p.add(
            1,
            &r,
            1,
            &change(ChangeOp::Update {
                old: Some((OldKind::Full, vec![t("1"), t("x"), t("BIG")])),
                new: vec![t("1"), t("y"), Value::UnchangedToast],
            }),
        )
        .unwrap();
        let l = loads(&p.take()[&7]);
        assert_eq!(l[0].0, ColumnSet::Full);
        assert_eq!(
            l[0].1[0].values,
            vec![(0, t("1")), (1, t("y")), (2, t("BIG"))]
        );
    }

    #[test]
    fn key_change_deletes_the_old_key_first() {
        let r = rel();
        let mut p = Planner::new();
        p.add(
            1,
            &r,
            1,
            &change(ChangeOp::Update {
                old: Some((OldKind::Key, vec![t("1"), Value::Null, Value::Null])),
                new: vec![t("2"), t("y"), t("b")],
            }),
        )
        .unwrap();
        let l = loads(&p.take()[&7]);
        assert_eq!(l.len(), 1);
        assert_eq!(
            l[0].1[0],
            PlannedRow {
                op: RowOp::Delete,
                values: vec![(0, t("1"))]
            }
        );
        assert_eq!(l[0].1[1].op, RowOp::Upsert);
    }

    #[test]
    fn truncate_is_a_step_and_marks_later_loads() {
        let r = rel();
        let mut p = Planner::new();
        p.add(
            1,
            &r,
            1,
            &change(ChangeOp::Insert {
                new: vec![t("1"), t("x"), t("b")],
            }),
        )
        .unwrap();
        p.add(
            2,
            &r,
            1,
            &change(ChangeOp::Truncate {
                relations: vec![7, 8],
                cascade: false,
                restart_identity: false,
            }),
        )
        .unwrap();
        p.add(
            3,
            &r,
            1,
            &change(ChangeOp::Insert {
                new: vec![t("2"), t("x"), t("b")],
            }),
        )
        .unwrap();
        let first = p.take_keep_truncates();
        assert!(matches!(first[&8][..], [Step::Truncate { seq: 2 }]));
        let steps = &first[&7];
        assert!(matches!(
            steps[0],
            Step::Load {
                after_truncate: false,
                ..
            }
        ));
        assert!(matches!(steps[1], Step::Truncate { seq: 2 }));
        assert!(matches!(
            steps[2],
            Step::Load {
                after_truncate: true,
                ..
            }
        ));
        // Executed in parts before the commit: still "after truncate".
        p.add(
            4,
            &r,
            1,
            &change(ChangeOp::Insert {
                new: vec![t("3"), t("x"), t("b")],
            }),
        )
        .unwrap();
        assert!(matches!(
            p.take()[&7][0],
            Step::Load {
                after_truncate: true,
                ..
            }
        ));
        // After a confirmed boundary, labels are deterministic again.
        p.add(
            5,
            &r,
            1,
            &change(ChangeOp::Insert {
                new: vec![t("4"), t("x"), t("b")],
            }),
        )
        .unwrap();
        assert!(matches!(
            p.take()[&7][0],
            Step::Load {
                after_truncate: false,
                ..
            }
        ));
    }

    #[test]
    fn schema_versions_split_loads_and_arity_is_checked() {
        let r = rel();
        let mut p = Planner::new();
        p.add(
            1,
            &r,
            1,
            &change(ChangeOp::Insert {
                new: vec![t("1"), t("x"), t("b")],
            }),
        )
        .unwrap();
        p.add(
            2,
            &r,
            2,
            &change(ChangeOp::Insert {
                new: vec![t("2"), t("x"), t("b")],
            }),
        )
        .unwrap();
        assert_eq!(loads(&p.take()[&7]).len(), 2);
        let e = p
            .add(3, &r, 1, &change(ChangeOp::Insert { new: vec![t("1")] }))
            .unwrap_err();
        assert!(e.to_string().contains("public.t"));
    }

    #[test]
    fn soft_deletes_are_partial_rows_of_the_key() {
        let r = rel();
        let del = change(ChangeOp::Delete {
            old: (OldKind::Key, vec![t("1"), Value::Null, Value::Null]),
        });
        let mut hard = Planner::new();
        hard.add(1, &r, 1, &del).unwrap();
        assert_eq!(loads(&hard.take()[&7])[0].0, ColumnSet::Full);
        let mut soft = Planner::with_soft_deletes(true);
        soft.add(1, &r, 1, &del).unwrap();
        let l = loads(&soft.take()[&7]);
        assert_eq!(l[0].0, ColumnSet::Partial(vec![0]));
        assert_eq!(
            l[0].1[0],
            PlannedRow {
                op: RowOp::Delete,
                values: vec![(0, t("1"))]
            }
        );
    }

    #[test]
    fn deletes_without_any_key_are_refused() {
        let mut r = rel();
        for c in &mut r.columns {
            c.is_key = false;
        }
        let mut p = Planner::new();
        let e = p
            .add(
                9,
                &r,
                1,
                &change(ChangeOp::Delete {
                    old: (OldKind::Key, vec![Value::Null, Value::Null, Value::Null]),
                }),
            )
            .unwrap_err();
        assert!(matches!(e, PlanError::NoKey { seq: 9, .. }));
    }
}
