//! Turning source rows into typed PK-table operations (column mapping, `__op`, type
//! conversion, NOT NULL and strict-mode rules, filtered rows), and applying a batch to a
//! table atomically (in-batch last-wins per key, deletes, partial update, merge_condition).

use std::collections::HashMap;

use super::body::{json_path, CsvRow};
use super::headers::{ColumnItem, Expr, PlanOptions};
use crate::table::{Table, TableSchema};
use crate::types::{convert, display_for_log, KeyPart, Raw, Value};

/// Upsert or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `__op` = 0
    Upsert,
    /// `__op` = 1
    Delete,
}

/// A converted row.
#[derive(Debug, Clone)]
pub struct LoadRow {
    /// Operation.
    pub op: Op,
    /// Primary key.
    pub key: Vec<KeyPart>,
    /// Value per table column; None = not part of this load (partial update).
    pub values: Vec<Option<Value>>,
}

/// The outcome of converting a batch.
#[derive(Debug, Default)]
pub struct Converted {
    /// Valid rows in input order.
    pub rows: Vec<LoadRow>,
    /// Error-log lines of filtered rows.
    pub errors: Vec<String>,
}

/// One source value.
#[derive(Debug, Clone, Copy)]
enum Src<'a> {
    Missing,
    Null,
    Json(&'a serde_json::Value),
    Text(&'a str),
}

/// A source row: a lookup from source name to value.
enum SrcRow<'a> {
    /// Positional names → values.
    Named(Vec<(String, Src<'a>)>),
    /// A JSON object looked up by key.
    Object(&'a serde_json::Map<String, serde_json::Value>),
}

impl<'a> SrcRow<'a> {
    fn get(&self, name: &str) -> Src<'a> {
        match self {
            SrcRow::Named(v) => v
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, s)| *s)
                .unwrap_or(Src::Missing),
            SrcRow::Object(m) => {
                let v = m.get(name).or_else(|| {
                    m.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v)
                });
                match v {
                    None => Src::Missing,
                    Some(serde_json::Value::Null) => Src::Null,
                    Some(v) => Src::Json(v),
                }
            }
        }
    }
}

fn json_src(v: Option<&serde_json::Value>) -> Src<'_> {
    match v {
        None => Src::Missing,
        Some(serde_json::Value::Null) => Src::Null,
        Some(v) => Src::Json(v),
    }
}

/// Source (non-mapping) names of the `columns` header, or the table's columns.
fn source_names(schema: &TableSchema, columns: &Option<Vec<ColumnItem>>) -> Vec<String> {
    match columns {
        Some(items) => items
            .iter()
            .filter(|i| i.expr.is_none())
            .map(|i| i.name.clone())
            .collect(),
        None => schema.columns.iter().map(|c| c.name.clone()).collect(),
    }
}

fn parse_op(src: Src<'_>) -> Result<Op, String> {
    let text = match src {
        Src::Missing => return Ok(Op::Upsert),
        Src::Null => return Err("__op is NULL".into()),
        Src::Json(serde_json::Value::Number(n)) => n.to_string(),
        Src::Json(serde_json::Value::String(s)) => s.clone(),
        Src::Json(serde_json::Value::Bool(b)) => u8::from(*b).to_string(),
        Src::Json(v) => v.to_string(),
        Src::Text(t) => t.to_string(),
    };
    match text.trim().to_ascii_lowercase().as_str() {
        "0" | "upsert" => Ok(Op::Upsert),
        "1" | "delete" => Ok(Op::Delete),
        other => Err(format!("load op type string not supported: {other}")),
    }
}

/// Converts parsed rows. `inject_filtered` rows at the start are filtered by a fault.
pub fn convert_rows(
    schema: &TableSchema,
    o: &PlanOptions,
    csv: Option<&[CsvRow]>,
    json: Option<&[serde_json::Value]>,
    mut inject_filtered: u64,
) -> Converted {
    let mut out = Converted::default();
    let names = source_names(schema, &o.columns);
    let key_idx = schema.key_indices();
    let op_mapping = o.columns.as_ref().and_then(|items| {
        items
            .iter()
            .find(|i| i.name.eq_ignore_ascii_case("__op"))
            .cloned()
    });
    // Which table columns this load writes (None = all).
    let listed: Vec<bool> = schema
        .columns
        .iter()
        .map(|c| match &o.columns {
            None => true,
            Some(items) => items.iter().any(|i| i.name.eq_ignore_ascii_case(&c.name)),
        })
        .collect();

    let mut handle = |src: SrcRow<'_>, text: String, out: &mut Converted| {
        if inject_filtered > 0 {
            inject_filtered -= 1;
            out.errors.push(format!(
                "Error: starrocks-double injected data quality error. Row: {text}"
            ));
            return;
        }
        match convert_one(schema, o, &src, &listed, &key_idx, op_mapping.as_ref()) {
            Ok(r) => out.rows.push(r),
            Err(reason) => out.errors.push(format!("Error: {reason}. Row: {text}")),
        }
    };

    if let Some(rows) = csv {
        for r in rows {
            if r.fields.len() != names.len() {
                out.errors.push(format!(
                    "Error: Value count does not match column count. Expect {}, but got {}. Row: {}",
                    names.len(),
                    r.fields.len(),
                    r.text
                ));
                continue;
            }
            let named = names
                .iter()
                .zip(r.fields.iter())
                .map(|(n, f)| {
                    (
                        n.clone(),
                        match f {
                            None => Src::Null,
                            Some(s) => Src::Text(s.as_str()),
                        },
                    )
                })
                .collect();
            handle(SrcRow::Named(named), r.text.clone(), &mut out);
        }
    }
    if let Some(objs) = json {
        for v in objs {
            let text = v.to_string();
            if let Some(paths) = &o.jsonpaths {
                let mut named: Vec<(String, Src<'_>)> = names
                    .iter()
                    .zip(paths.iter())
                    .map(|(n, p)| (n.clone(), json_src(json_path(v, p))))
                    .collect();
                if let Some(obj) = v.as_object() {
                    if !names.iter().any(|n| n.eq_ignore_ascii_case("__op")) {
                        named.push(("__op".into(), json_src(obj.get("__op"))));
                    }
                }
                handle(SrcRow::Named(named), text, &mut out);
            } else {
                match v.as_object() {
                    Some(obj) => handle(SrcRow::Object(obj), text, &mut out),
                    None => out.errors.push(format!(
                        "Error: The JSON element does not have the requested type. Row: {text}"
                    )),
                }
            }
        }
    }
    out
}

fn eval<'a>(src: &SrcRow<'a>, item: &'a ColumnItem) -> Src<'a> {
    match &item.expr {
        None => src.get(&item.name),
        Some(Expr::Column(c)) => src.get(c),
        Some(Expr::Literal(l)) => Src::Text(l.as_str()),
    }
}

fn convert_one<'a>(
    schema: &TableSchema,
    o: &'a PlanOptions,
    src: &SrcRow<'a>,
    listed: &[bool],
    key_idx: &[usize],
    op_mapping: Option<&'a ColumnItem>,
) -> Result<LoadRow, String> {
    let op = match op_mapping {
        Some(item) => parse_op(eval(src, item))?,
        None => match src {
            SrcRow::Object(_) => parse_op(src.get("__op"))?,
            SrcRow::Named(v) if v.iter().any(|(n, _)| n == "__op") => parse_op(src.get("__op"))?,
            _ => Op::Upsert,
        },
    };
    let mut values = Vec::with_capacity(schema.columns.len());
    for (i, col) in schema.columns.iter().enumerate() {
        if !listed[i] {
            if o.partial_update {
                values.push(None);
            } else {
                values.push(Some(col.missing_value()));
            }
            continue;
        }
        let s = match &o.columns {
            Some(items) => match items
                .iter()
                .rev()
                .find(|it| it.name.eq_ignore_ascii_case(&col.name))
            {
                Some(it) => eval(src, it),
                None => Src::Missing,
            },
            None => src.get(&col.name),
        };
        let v = match s {
            // A missing JSON key loads NULL, not the DEFAULT.
            Src::Missing | Src::Null => Value::Null,
            Src::Json(j) => match convert(&col.ty, Raw::Json(j)) {
                Ok(v) => v,
                Err(e) if o.strict_mode || !col.nullable => return Err(e),
                Err(_) => Value::Null,
            },
            Src::Text(t) => match convert(&col.ty, Raw::Text(t)) {
                Ok(v) => v,
                Err(e) if o.strict_mode || !col.nullable => return Err(e),
                Err(_) => Value::Null,
            },
        };
        if v.is_null() && !col.nullable {
            return Err(format!("NULL value in non-nullable column '{}'", col.name));
        }
        values.push(Some(v));
    }
    let mut key = Vec::with_capacity(key_idx.len());
    for &k in key_idx {
        match values[k].as_ref().and_then(Value::key_part) {
            Some(p) => key.push(p),
            None => {
                return Err(format!(
                    "NULL value in non-nullable column '{}'",
                    schema.columns[k].name
                ))
            }
        }
    }
    Ok(LoadRow { op, key, values })
}

/// Applies a batch to a table: last row per key wins; deletes ignore `merge_condition`.
pub fn apply(table: &mut Table, rows: &[LoadRow], merge_condition: Option<usize>) {
    let mut last: HashMap<&[KeyPart], usize> = HashMap::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        last.insert(r.key.as_slice(), i);
    }
    for (i, r) in rows.iter().enumerate() {
        if last.get(r.key.as_slice()) != Some(&i) {
            continue;
        }
        match r.op {
            Op::Delete => {
                table.rows.remove(&r.key);
            }
            Op::Upsert => {
                let existing = table.rows.get(&r.key);
                if let (Some(mc), Some(old)) = (merge_condition, existing) {
                    if let Some(Some(new_v)) = r.values.get(mc) {
                        if new_v.compare(&old[mc]) == Some(std::cmp::Ordering::Less) {
                            continue;
                        }
                    }
                }
                let full: Vec<Value> = r
                    .values
                    .iter()
                    .enumerate()
                    .map(|(ci, v)| match v {
                        Some(v) => v.clone(),
                        None => match existing {
                            Some(old) => old[ci].clone(),
                            None => {
                                let c = &table.schema.columns[ci];
                                match c.default_value() {
                                    Some(d) => d,
                                    None if c.nullable => Value::Null,
                                    None => c.ty.zero_value(),
                                }
                            }
                        },
                    })
                    .collect();
                table.rows.insert(r.key.clone(), full);
            }
        }
    }
}

/// Renders a converted row for logs (used by tests and debugging).
pub fn describe(schema: &TableSchema, r: &LoadRow) -> String {
    schema
        .columns
        .iter()
        .zip(r.values.iter())
        .map(|(c, v)| match v {
            Some(v) => format!("{}={}", c.name, display_for_log(v, &c.ty)),
            None => format!("{}=<unchanged>", c.name),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
