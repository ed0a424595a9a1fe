//! Load planning: turns spool records (in sequence order) into per-table steps: loads of
//! rows that share one column set, and truncates, in the order they must run. Pure, no
//! I/O.
//!
//! Row semantics (architecture contract): INSERT/UPDATE → upsert (`__op` 0); DELETE →
//! `__op` 1. Keys are the table's catalog primary key (given by the caller), never
//! pgoutput's replica identity flags, which mark every column under REPLICA IDENTITY
//! FULL. An UPDATE that changes the key deletes the old key first; one that keeps it is
//! one upsert. An UPDATE whose new tuple leaves TOASTed columns unchanged is completed
//! from the old tuple when the server sent it (REPLICA IDENTITY FULL, or the old key of
//! a TOASTed key column), else it becomes a partial row listing only the columns it has.
//! Rows of different column sets never share a load, and the order of changes per table
//! is kept across loads; TRUNCATE is a step of its own.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ColumnSet {
    Full,
    Partial(Vec<usize>),
}

/// One row to load: column index → value (Null included), in relation column order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRow {
    /// Spool sequence of the change the row comes from (a key change gives two rows).
    pub seq: u64,
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
        /// Spool sequence range of the rows (for the label and the load journal).
        first_seq: u64,
        last_seq: u64,
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
    #[error("{table}: UPDATE at seq {seq} left its TOASTed key column {column} unchanged and the server sent no old key to take it from; PostgreSQL releases from February 2022 on always send it: upgrade the source server or set REPLICA IDENTITY FULL")]
    ToastedKey {
        table: String,
        seq: u64,
        column: String,
    },
    #[error("{table}: key column position {column} at seq {seq} is outside the relation's {want} columns (the target's primary key does not match the source)")]
    BadKey {
        table: String,
        seq: u64,
        column: usize,
        want: usize,
    },
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

    /// Whether deletes are soft (`SINK_DELETE_MODE=soft`).
    pub fn soft_deletes(&self) -> bool {
        self.soft_deletes
    }

    /// Takes the planned steps, leaving the planner empty.
    pub fn take(&mut self) -> BTreeMap<RelationId, Vec<Step>> {
        self.rows = 0;
        self.bytes = 0;
        std::mem::take(&mut self.tables)
    }

    /// Adds one change (decoded with `rel` at `rel_version`) read at `seq`. `keys` are the
    /// positions of the table's primary key columns in `rel.columns`.
    pub fn add(
        &mut self,
        seq: u64,
        rel: &Relation,
        rel_version: u32,
        keys: &[usize],
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
        let key_idx = keys;
        if let Some(&k) = key_idx.iter().find(|&&k| k >= n) {
            return Err(PlanError::BadKey {
                table: rel.qualified_name(),
                seq,
                column: k,
                want: n,
            });
        }
        match &change.op {
            ChangeOp::Insert { new } => {
                check(new)?;
                self.push_row(
                    rel.id,
                    rel_version,
                    full_or_partial(seq, new, key_idx, RowOp::Upsert),
                );
            }
            ChangeOp::Update { old, new } => {
                check(new)?;
                if let Some((_, o)) = old {
                    check(o)?;
                }
                // An unchanged TOASTed key value: the server sends the old key then.
                let mut new = new.clone();
                for &i in key_idx {
                    if new[i] == Value::UnchangedToast {
                        match old {
                            Some((_, o)) if o[i] != Value::UnchangedToast => new[i] = o[i].clone(),
                            _ => {
                                return Err(PlanError::ToastedKey {
                                    table: rel.qualified_name(),
                                    seq,
                                    column: rel.columns[i].name.clone(),
                                })
                            }
                        }
                    }
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
                            rel.id,
                            rel_version,
                            (
                                self.key_delete_set(key_idx),
                                key_row(seq, o, key_idx, RowOp::Delete),
                            ),
                        );
                    }
                }
                if let Some((OldKind::Full, o)) = old {
                    for (i, v) in new.iter_mut().enumerate() {
                        if *v == Value::UnchangedToast && o[i] != Value::UnchangedToast {
                            *v = o[i].clone();
                        }
                    }
                }
                self.push_row(
                    rel.id,
                    rel_version,
                    full_or_partial(seq, &new, key_idx, RowOp::Upsert),
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
                    OldKind::Full => full_or_partial(seq, o, key_idx, RowOp::Delete),
                    OldKind::Key => (
                        self.key_delete_set(key_idx),
                        key_row(seq, o, key_idx, RowOp::Delete),
                    ),
                };
                self.push_row(rel.id, rel_version, (set, row));
            }
            ChangeOp::Truncate { relations, .. } => {
                for r in relations {
                    self.tables
                        .entry(*r)
                        .or_default()
                        .push(Step::Truncate { seq });
                }
            }
        }
        Ok(())
    }

    fn push_row(
        &mut self,
        rel: RelationId,
        rel_version: u32,
        (columns, row): (ColumnSet, PlannedRow),
    ) {
        let bytes: usize = row.values.iter().map(|(_, v)| value_len(v)).sum::<usize>() + 8;
        let seq = row.seq;
        self.rows += 1;
        self.bytes += bytes;
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
            bytes,
        });
    }
}

/// A row of every column, or a partial row when some columns are unchanged TOAST.
fn full_or_partial(seq: u64, t: &[Value], key_idx: &[usize], op: RowOp) -> (ColumnSet, PlannedRow) {
    let omitted = |i: usize| t[i] == Value::UnchangedToast && !key_idx.contains(&i);
    if !(0..t.len()).any(omitted) {
        // The common case, without the list of present columns (one allocation a row).
        let values = t.iter().cloned().enumerate().collect();
        return (ColumnSet::Full, PlannedRow { seq, op, values });
    }
    let present: Vec<usize> = (0..t.len())
        .filter(|&i| t[i] != Value::UnchangedToast || key_idx.contains(&i))
        .collect();
    let values = present.iter().map(|&i| (i, t[i].clone())).collect();
    let set = if present.len() == t.len() {
        ColumnSet::Full
    } else {
        ColumnSet::Partial(present)
    };
    (set, PlannedRow { seq, op, values })
}

fn key_row(seq: u64, t: &[Value], key_idx: &[usize], op: RowOp) -> PlannedRow {
    PlannedRow {
        seq,
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
        Value::Text(s.as_bytes().to_vec().into())
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

    /// Adds with the keys the test relation flags (the catalog's primary key).
    fn add(p: &mut Planner, seq: u64, r: &Relation, v: u32, c: &Change) -> Result<(), PlanError> {
        let keys: Vec<usize> = (0..r.columns.len())
            .filter(|&i| r.columns[i].is_key)
            .collect();
        p.add(seq, r, v, &keys, c)
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
        add(
            &mut p,
            1,
            &r,
            1,
            &change(ChangeOp::Insert {
                new: vec![t("1"), t("x"), t("BIG")],
            }),
        )
        .unwrap();
        add(
            &mut p,
            2,
            &r,
            1,
            &change(ChangeOp::Update {
                old: None,
                new: vec![t("1"), t("y"), Value::UnchangedToast],
            }),
        )
        .unwrap();
        add(
            &mut p,
            3,
            &r,
            1,
            &change(ChangeOp::Update {
                old: None,
                new: vec![t("1"), t("z"), Value::UnchangedToast],
            }),
        )
        .unwrap();
        add(
            &mut p,
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
        add(
            &mut p,
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
        add(
            &mut p,
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
                seq: 1,
                op: RowOp::Delete,
                values: vec![(0, t("1"))]
            }
        );
        assert_eq!(l[0].1[1].op, RowOp::Upsert);
    }

    #[test]
    fn truncate_is_a_step_of_every_truncated_table() {
        let r = rel();
        let mut p = Planner::new();
        let ins = |id: &str| {
            change(ChangeOp::Insert {
                new: vec![t(id), t("x"), t("b")],
            })
        };
        add(&mut p, 1, &r, 1, &ins("1")).unwrap();
        add(
            &mut p,
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
        add(&mut p, 3, &r, 1, &ins("2")).unwrap();
        let steps = p.take();
        assert!(matches!(steps[&8][..], [Step::Truncate { seq: 2 }]));
        let t7 = &steps[&7];
        assert_eq!(t7.len(), 3);
        assert!(matches!(t7[0], Step::Load { first_seq: 1, .. }));
        assert!(matches!(t7[1], Step::Truncate { seq: 2 }));
        assert!(matches!(t7[2], Step::Load { first_seq: 3, .. }));
    }

    #[test]
    fn replica_identity_full_update_keeping_the_key_is_one_upsert() {
        // Under REPLICA IDENTITY FULL pgoutput flags every column as key; the catalog key
        // is column 0 only.
        let mut r = rel();
        r.replica_identity = crate::core::ReplicaIdentity::Full;
        for c in &mut r.columns {
            c.is_key = true;
        }
        let mut p = Planner::new();
        p.add(
            1,
            &r,
            1,
            &[0],
            &change(ChangeOp::Update {
                old: Some((OldKind::Full, vec![t("1"), t("x"), t("BIG")])),
                new: vec![t("1"), t("y"), Value::UnchangedToast],
            }),
        )
        .unwrap();
        p.add(
            2,
            &r,
            1,
            &[0],
            &change(ChangeOp::Update {
                old: Some((OldKind::Full, vec![t("2"), t("x"), t("B2")])),
                new: vec![t("2"), t("z"), t("B2")],
            }),
        )
        .unwrap();
        let l = loads(&p.take()[&7]);
        assert_eq!(l.len(), 1, "{l:?}");
        assert_eq!(l[0].0, ColumnSet::Full);
        assert_eq!(l[0].1.len(), 2, "two updates must be two upserts: {l:?}");
        assert!(l[0].1.iter().all(|r| r.op == RowOp::Upsert));
        assert_eq!(l[0].1[0].values[2], (2, t("BIG")));
    }

    #[test]
    fn an_unchanged_toasted_key_is_taken_from_the_old_key() {
        let r = rel();
        let mut p = Planner::new();
        p.add(
            5,
            &r,
            1,
            &[0],
            &change(ChangeOp::Update {
                old: Some((OldKind::Key, vec![t("K"), Value::Null, Value::Null])),
                new: vec![Value::UnchangedToast, t("y"), t("b")],
            }),
        )
        .unwrap();
        let l = loads(&p.take()[&7]);
        assert_eq!(l.len(), 1, "{l:?}");
        assert_eq!(l[0].0, ColumnSet::Full);
        assert_eq!(
            l[0].1,
            vec![PlannedRow {
                seq: 5,
                op: RowOp::Upsert,
                values: vec![(0, t("K")), (1, t("y")), (2, t("b"))]
            }],
            "not a key change, one full upsert"
        );
        // Without an old key there is nothing to take it from: a clear error.
        let e = p
            .add(
                6,
                &r,
                1,
                &[0],
                &change(ChangeOp::Update {
                    old: None,
                    new: vec![Value::UnchangedToast, t("y"), t("b")],
                }),
            )
            .unwrap_err();
        assert!(matches!(e, PlanError::ToastedKey { seq: 6, .. }), "{e}");
    }

    #[test]
    fn schema_versions_split_loads_and_arity_is_checked() {
        let r = rel();
        let mut p = Planner::new();
        add(
            &mut p,
            1,
            &r,
            1,
            &change(ChangeOp::Insert {
                new: vec![t("1"), t("x"), t("b")],
            }),
        )
        .unwrap();
        add(
            &mut p,
            2,
            &r,
            2,
            &change(ChangeOp::Insert {
                new: vec![t("2"), t("x"), t("b")],
            }),
        )
        .unwrap();
        assert_eq!(loads(&p.take()[&7]).len(), 2);
        let e = add(
            &mut p,
            3,
            &r,
            1,
            &change(ChangeOp::Insert { new: vec![t("1")] }),
        )
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
        add(&mut hard, 1, &r, 1, &del).unwrap();
        assert_eq!(loads(&hard.take()[&7])[0].0, ColumnSet::Full);
        let mut soft = Planner::with_soft_deletes(true);
        add(&mut soft, 1, &r, 1, &del).unwrap();
        let l = loads(&soft.take()[&7]);
        assert_eq!(l[0].0, ColumnSet::Partial(vec![0]));
        assert_eq!(
            l[0].1[0],
            PlannedRow {
                seq: 1,
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
        let e = add(
            &mut p,
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
