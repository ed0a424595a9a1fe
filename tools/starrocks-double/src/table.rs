//! PRIMARY KEY tables: schema (columns, key, distribution) and rows kept ordered by key.
//! Invariants: key columns are a prefix of the columns, NOT NULL, of key-capable types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::{convert, ColumnType, KeyPart, Raw, Value};

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDef {
    /// Name as declared.
    pub name: String,
    /// Type.
    pub ty: ColumnType,
    /// Whether NULL is allowed.
    pub nullable: bool,
    /// DEFAULT literal as written (`CURRENT_TIMESTAMP` allowed), if any.
    pub default: Option<String>,
    /// COMMENT.
    pub comment: String,
    /// Whether the column is part of the primary key.
    pub is_key: bool,
}

impl ColumnDef {
    /// The default value for this column, or None when it has no default.
    pub fn default_value(&self) -> Option<Value> {
        let d = self.default.as_deref()?;
        if d.eq_ignore_ascii_case("CURRENT_TIMESTAMP") {
            let now = chrono::Local::now().naive_local();
            return Some(match self.ty {
                ColumnType::Date => Value::Date(now.date()),
                _ => Value::DateTime(now),
            });
        }
        if d.eq_ignore_ascii_case("NULL") {
            return Some(Value::Null);
        }
        convert(&self.ty, Raw::Text(d)).ok()
    }

    /// Value for a column a load does not provide (DEFAULT, else NULL).
    pub fn missing_value(&self) -> Value {
        self.default_value().unwrap_or(Value::Null)
    }
}

/// A table's schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableSchema {
    /// Table name.
    pub name: String,
    /// Columns in order (key columns first).
    pub columns: Vec<ColumnDef>,
    /// Primary key column names in PRIMARY KEY order.
    pub key: Vec<String>,
    /// DISTRIBUTED BY HASH columns.
    pub distributed_by: Vec<String>,
    /// BUCKETS n, if given.
    pub buckets: Option<u32>,
    /// PROPERTIES.
    pub properties: Vec<(String, String)>,
    /// Table COMMENT.
    pub comment: String,
}

impl TableSchema {
    /// Index of a column by case-insensitive name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// Indices of the key columns in PRIMARY KEY order.
    pub fn key_indices(&self) -> Vec<usize> {
        self.key.iter().filter_map(|k| self.index_of(k)).collect()
    }

    /// Checks StarRocks's PRIMARY KEY rules; returns the error message if broken.
    pub fn validate(&self) -> Result<(), String> {
        if self.key.is_empty() {
            return Err("starrocks-double only emulates PRIMARY KEY tables".into());
        }
        let mut seen = std::collections::HashSet::new();
        for c in &self.columns {
            if !seen.insert(c.name.to_lowercase()) {
                return Err(format!("Duplicate column name '{}'", c.name));
            }
        }
        for (i, k) in self.key.iter().enumerate() {
            let Some(idx) = self.index_of(k) else {
                return Err(format!("Key column '{k}' does not exist"));
            };
            let col = &self.columns[idx];
            if !col.ty.can_be_key() {
                return Err(format!(
                    "Type {} can not be used as primary key column: {}",
                    col.ty.sql(),
                    col.name
                ));
            }
            if idx != i {
                return Err("Key columns should be a ordered prefix of the schema.".into());
            }
        }
        for d in &self.distributed_by {
            if !self.key.iter().any(|k| k.eq_ignore_ascii_case(d)) {
                return Err(format!("Distribution column[{d}] is not key column"));
            }
        }
        Ok(())
    }

    /// SHOW CREATE TABLE text, in StarRocks style.
    pub fn create_sql(&self, db: &str) -> String {
        let _ = db;
        let mut s = format!("CREATE TABLE `{}` (\n", self.name);
        let cols: Vec<String> = self
            .columns
            .iter()
            .map(|c| {
                let mut l = format!(
                    "  `{}` {} {}",
                    c.name,
                    c.ty.sql().to_lowercase(),
                    if c.nullable { "NULL" } else { "NOT NULL" }
                );
                if let Some(d) = &c.default {
                    if d.eq_ignore_ascii_case("CURRENT_TIMESTAMP") {
                        l.push_str(" DEFAULT CURRENT_TIMESTAMP");
                    } else {
                        l.push_str(&format!(" DEFAULT \"{}\"", d.replace('"', "\\\"")));
                    }
                }
                l.push_str(&format!(" COMMENT \"{}\"", c.comment.replace('"', "\\\"")));
                l
            })
            .collect();
        s.push_str(&cols.join(",\n"));
        s.push_str("\n) ENGINE=OLAP \n");
        let quoted = |v: &[String]| {
            v.iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        s.push_str(&format!("PRIMARY KEY({})\n", quoted(&self.key)));
        s.push_str(&format!(
            "COMMENT \"{}\"\n",
            self.comment.replace('"', "\\\"")
        ));
        let dist = if self.distributed_by.is_empty() {
            &self.key
        } else {
            &self.distributed_by
        };
        s.push_str(&format!("DISTRIBUTED BY HASH({})", quoted(dist)));
        if let Some(b) = self.buckets {
            s.push_str(&format!(" BUCKETS {b}"));
        }
        s.push_str(" \nPROPERTIES (\n");
        let mut props = self.properties.clone();
        if !props.iter().any(|(k, _)| k == "replication_num") {
            props.insert(0, ("replication_num".into(), "1".into()));
        }
        let p: Vec<String> = props
            .iter()
            .map(|(k, v)| format!("\"{k}\" = \"{v}\""))
            .collect();
        s.push_str(&p.join(",\n"));
        s.push_str("\n);");
        s
    }
}

/// A table: schema and rows ordered by primary key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Table {
    /// Schema.
    pub schema: TableSchema,
    /// Numeric id.
    pub id: u64,
    /// Bumped on every schema change, so a load planned against an older schema is refused.
    pub schema_version: u64,
    /// Rows keyed by primary key.
    #[serde(with = "rows_serde")]
    pub rows: BTreeMap<Vec<KeyPart>, Vec<Value>>,
}

mod rows_serde {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        rows: &BTreeMap<Vec<KeyPart>, Vec<Value>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(rows.iter())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<Vec<KeyPart>, Vec<Value>>, D::Error> {
        let v: Vec<(Vec<KeyPart>, Vec<Value>)> = Vec::deserialize(d)?;
        Ok(v.into_iter().collect())
    }
}

impl Table {
    /// A new empty table.
    pub fn new(schema: TableSchema, id: u64) -> Self {
        Table {
            schema,
            id,
            schema_version: 1,
            rows: BTreeMap::new(),
        }
    }

    /// Rows as JSON objects (column name → value), in key order.
    pub fn rows_json(&self) -> Vec<serde_json::Map<String, serde_json::Value>> {
        self.rows
            .values()
            .map(|row| {
                self.schema
                    .columns
                    .iter()
                    .zip(row.iter())
                    .map(|(c, v)| (c.name.clone(), v.to_json(&c.ty)))
                    .collect()
            })
            .collect()
    }

    /// Adds a column (ALTER TABLE ADD COLUMN); existing rows get its default or NULL.
    pub fn add_column(&mut self, col: ColumnDef, position: Option<usize>) -> Result<(), String> {
        if self.schema.index_of(&col.name).is_some() {
            return Err(format!("Duplicate column name '{}'", col.name));
        }
        if !col.nullable && col.default.is_none() {
            return Err(format!(
                "Can not add column which is NOT NULL and has no default value. column: {}",
                col.name
            ));
        }
        let fill = col.missing_value();
        let pos = position
            .unwrap_or(self.schema.columns.len())
            .max(self.schema.key.len());
        self.schema.columns.insert(pos, col);
        for row in self.rows.values_mut() {
            row.insert(pos, fill.clone());
        }
        self.schema_version += 1;
        Ok(())
    }
}
