//! PostgreSQL → StarRocks type mapping and value conversion (PostgreSQL text output →
//! StarRocks JSON/CSV values). The mapping is exhaustive over the built-in types: an
//! unmapped type is an error naming table, column and type; values keep full fidelity
//! (architecture "Row semantics"); the policy for values StarRocks cannot represent is in
//! `docs/type-mapping.md`.

use std::collections::HashMap;
use std::fmt;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use tracing::warn;

use crate::connectors::sources::postgres::catalog::{PgType, PgTypeKind};
use crate::core::{Column, Relation};

/// VARCHAR maximum in StarRocks 2.1–4.1, in bytes.
pub const VARCHAR_MAX: u32 = 1_048_576;

/// A StarRocks column type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SrType {
    Boolean,
    SmallInt,
    Int,
    BigInt,
    LargeInt,
    Float,
    Double,
    Decimal(u8, u8),
    Varchar(u32),
    Date,
    DateTime,
    Json,
}

impl fmt::Display for SrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SrType::Boolean => f.write_str("BOOLEAN"),
            SrType::SmallInt => f.write_str("SMALLINT"),
            SrType::Int => f.write_str("INT"),
            SrType::BigInt => f.write_str("BIGINT"),
            SrType::LargeInt => f.write_str("LARGEINT"),
            SrType::Float => f.write_str("FLOAT"),
            SrType::Double => f.write_str("DOUBLE"),
            SrType::Decimal(p, s) => write!(f, "DECIMAL({p},{s})"),
            SrType::Varchar(n) => write!(f, "VARCHAR({n})"),
            SrType::Date => f.write_str("DATE"),
            SrType::DateTime => f.write_str("DATETIME"),
            SrType::Json => f.write_str("JSON"),
        }
    }
}

impl SrType {
    /// Whether StarRocks allows this type in a PRIMARY KEY (spec §7).
    pub fn key_capable(&self) -> bool {
        !matches!(
            self,
            SrType::Float | SrType::Double | SrType::Decimal(..) | SrType::Json
        )
    }
}

/// How a PostgreSQL text value becomes a StarRocks value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conv {
    Bool,
    /// An integer, sent as a JSON number (validated).
    Int,
    /// An integer too wide for i64 (xid8, numeric keys as LARGEINT), sent as a string.
    BigIntText,
    /// float4/float8: JSON number; NaN/±Infinity → NULL with a warning.
    Float,
    /// numeric into DECIMAL(p,s): exact decimal string; NaN/±Infinity → NULL with a warning.
    Decimal {
        precision: u8,
        scale: u8,
    },
    /// money text (`$1,234.56`, `-$1.00`, `($1.00)`) → decimal string with 2 digits.
    Money,
    /// `YYYY-MM-DD`; BC, infinity or beyond 9999 → NULL with a warning.
    Date,
    /// timestamp → `YYYY-MM-DD HH:MM:SS.ffffff`; out of range → NULL with a warning.
    Timestamp,
    /// timestamptz (any offset) → UTC `YYYY-MM-DD HH:MM:SS.ffffff`.
    TimestampTz,
    /// The PostgreSQL text as is (text types, uuid, time, interval, inet, ranges, ...).
    Text,
    /// json/jsonb: the document as nested JSON.
    Json,
    /// bytea → lower-case hex of the bytes (no `\x` prefix).
    ByteaHex,
    /// An array → a JSON array (nested for several dimensions, null for NULL elements),
    /// elements converted with the inner conversion.
    Array(Box<Conv>),
}

/// The mapping of one source column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMapping {
    /// Source table (`schema.table`), for messages.
    pub table: String,
    pub column: String,
    /// Readable source type (`numeric(12,2)`, `text[]`, `public.mood`).
    pub pg_type: String,
    pub is_key: bool,
    pub sr_type: SrType,
    pub conv: Conv,
}

/// A column whose type cannot be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("table {table}, column {column}: PostgreSQL type {pg_type} (OID {oid}) has no StarRocks mapping; exclude the column from the publication or cast it in a view")]
    Unmapped {
        table: String,
        column: String,
        pg_type: String,
        oid: u32,
    },
    #[error("table {table}, column {column}: type OID {oid} is unknown (not built in and not resolved from pg_type)")]
    UnknownOid {
        table: String,
        column: String,
        oid: u32,
    },
}

/// A value that cannot be converted (malformed text for its type).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("table {table}, column {column} ({pg_type}): cannot convert value {excerpt:?}: {reason}")]
pub struct ConvertError {
    pub table: String,
    pub column: String,
    pub pg_type: String,
    /// The first characters of the value.
    pub excerpt: String,
    pub reason: String,
}

fn typmod_len(typmod: i32) -> Option<u32> {
    (typmod >= 4).then(|| (typmod - 4) as u32)
}

/// numeric typmod → (precision, scale); scale may be negative or exceed precision (PG 15+).
fn numeric_typmod(typmod: i32) -> Option<(i32, i32)> {
    if typmod < 4 {
        return None;
    }
    let t = typmod - 4;
    let p = (t >> 16) & 0xffff;
    let s = ((t & 0x7ff) ^ 1024) - 1024;
    Some((p, s))
}

fn varchar_bytes(chars: Option<u32>) -> u32 {
    chars
        .map(|n| n.saturating_mul(4).clamp(1, VARCHAR_MAX))
        .unwrap_or(VARCHAR_MAX)
}

/// Maps one column. `is_key` says whether it is part of the target's PRIMARY KEY (key
/// columns get key-capable types: numeric → BIGINT/LARGEINT/VARCHAR, float/json → VARCHAR).
pub fn map_column(
    table: &str,
    column: &str,
    pg: &PgType,
    typmod: i32,
    is_key: bool,
) -> Result<ColumnMapping, MappingError> {
    let unmapped = || MappingError::Unmapped {
        table: table.to_string(),
        column: column.to_string(),
        pg_type: pg.display_name(),
        oid: pg.oid,
    };
    let (sr_type, conv) = map_type(pg, typmod, is_key).ok_or_else(unmapped)?;
    Ok(ColumnMapping {
        table: table.to_string(),
        column: column.to_string(),
        pg_type: type_label(pg, typmod),
        is_key,
        sr_type,
        conv,
    })
}

fn type_label(pg: &PgType, typmod: i32) -> String {
    let base = pg.display_name();
    match pg.name.as_str() {
        "numeric" => match numeric_typmod(typmod) {
            Some((p, s)) => format!("numeric({p},{s})"),
            None => base,
        },
        "varchar" | "bpchar" => match typmod_len(typmod) {
            Some(n) => format!("{base}({n})"),
            None => base,
        },
        _ => base,
    }
}

fn text(n: u32) -> (SrType, Conv) {
    (SrType::Varchar(n), Conv::Text)
}

/// The StarRocks type and conversion of a PostgreSQL type, or None when unmapped.
fn map_type(pg: &PgType, typmod: i32, is_key: bool) -> Option<(SrType, Conv)> {
    match &pg.kind {
        PgTypeKind::Domain { base, typmod: dm } => {
            let t = if typmod >= 0 { typmod } else { *dm };
            return map_type(base, t, is_key);
        }
        PgTypeKind::Enum => return Some(text(256)),
        PgTypeKind::Array { elem } => {
            // Arrays are not key-capable: a key array keeps its PostgreSQL text.
            if is_key {
                return Some(text(VARCHAR_MAX));
            }
            let (_, inner) = map_type(elem, typmod, false)?;
            return Some((SrType::Json, Conv::Array(Box::new(inner))));
        }
        PgTypeKind::Composite | PgTypeKind::Range | PgTypeKind::Multirange => {
            return Some(text(VARCHAR_MAX))
        }
        PgTypeKind::Pseudo => return None,
        PgTypeKind::Base => {}
    }
    let builtin = pg.schema == "pg_catalog";
    Some(match pg.name.as_str() {
        "bool" if builtin => (SrType::Boolean, Conv::Bool),
        "int2" if builtin => (SrType::SmallInt, Conv::Int),
        "int4" if builtin => (SrType::Int, Conv::Int),
        "int8" if builtin => (SrType::BigInt, Conv::Int),
        "oid" | "xid" | "cid" | "regproc" | "regprocedure" | "regoper" | "regoperator"
        | "regclass" | "regtype" | "regconfig" | "regdictionary" | "regnamespace" | "regrole"
        | "regcollation"
            if builtin =>
        {
            // oid-like types print as numbers, except the reg* ones which print names.
            if matches!(pg.name.as_str(), "oid" | "xid" | "cid") {
                (SrType::BigInt, Conv::Int)
            } else {
                text(256)
            }
        }
        "xid8" if builtin => (SrType::LargeInt, Conv::BigIntText),
        "float4" | "float8" if builtin => {
            if is_key {
                text(64)
            } else if pg.name == "float4" {
                (SrType::Float, Conv::Float)
            } else {
                (SrType::Double, Conv::Float)
            }
        }
        "numeric" if builtin => match numeric_typmod(typmod) {
            Some((p, s)) => {
                let (p, s) = if s < 0 {
                    (p - s, 0)
                } else if s > p {
                    (s, s)
                } else {
                    (p, s)
                };
                if is_key {
                    if s == 0 && p <= 18 {
                        (SrType::BigInt, Conv::Int)
                    } else if s == 0 && p <= 38 {
                        (SrType::LargeInt, Conv::BigIntText)
                    } else {
                        text((p + 3) as u32)
                    }
                } else if (1..=38).contains(&p) {
                    (
                        SrType::Decimal(p as u8, s as u8),
                        Conv::Decimal {
                            precision: p as u8,
                            scale: s as u8,
                        },
                    )
                } else {
                    text(VARCHAR_MAX)
                }
            }
            // Unconstrained numeric: no faithful DECIMAL; keep every digit as text.
            None => text(VARCHAR_MAX),
        },
        "money" if builtin => {
            if is_key {
                (SrType::Varchar(32), Conv::Money)
            } else {
                (SrType::Decimal(19, 2), Conv::Money)
            }
        }
        "date" if builtin => (SrType::Date, Conv::Date),
        "timestamp" if builtin => (SrType::DateTime, Conv::Timestamp),
        "timestamptz" if builtin => (SrType::DateTime, Conv::TimestampTz),
        "time" | "timetz" if builtin => text(32),
        "interval" if builtin => text(128),
        "uuid" if builtin => text(36),
        "json" | "jsonb" if builtin => {
            if is_key {
                text(VARCHAR_MAX)
            } else {
                (SrType::Json, Conv::Json)
            }
        }
        "bytea" if builtin => (SrType::Varchar(VARCHAR_MAX), Conv::ByteaHex),
        "bpchar" | "varchar" if builtin => text(varchar_bytes(typmod_len(typmod))),
        "char" if builtin => text(4),
        "name" if builtin => text(256),
        "text" | "xml" | "tsvector" | "tsquery" | "gtsvector" | "jsonpath" | "pg_node_tree"
        | "refcursor"
            if builtin =>
        {
            text(VARCHAR_MAX)
        }
        "inet" | "cidr" if builtin => text(64),
        "macaddr" | "macaddr8" if builtin => text(32),
        "bit" | "varbit" if builtin => {
            let n = (typmod > 0).then_some(typmod as u32);
            text(n.map(|n| n.clamp(1, VARCHAR_MAX)).unwrap_or(VARCHAR_MAX))
        }
        "pg_lsn" | "tid" if builtin => text(32),
        "point" | "line" | "lseg" | "box" | "path" | "polygon" | "circle" | "txid_snapshot"
        | "pg_snapshot" | "aclitem"
            if builtin =>
        {
            text(VARCHAR_MAX)
        }
        // Common extension types whose text output is their value.
        "citext" | "ltree" | "lquery" | "hstore" | "isbn" | "ean13" | "cube" | "seg" | "vector"
        | "halfvec" | "sparsevec" | "geometry" | "geography" => text(VARCHAR_MAX),
        _ => return None,
    })
}

/// Maps every column of a relation. `keys` are the target's PRIMARY KEY columns (from the
/// source's primary key); `None` uses the Relation's key flags (only right when the
/// replica identity is the primary key). Types come from `types` or the built-in table.
pub fn map_relation(
    rel: &Relation,
    types: &HashMap<u32, PgType>,
    keys: Option<&[String]>,
) -> Result<Vec<ColumnMapping>, MappingError> {
    let table = rel.qualified_name();
    rel.columns
        .iter()
        .map(|c: &Column| {
            let pg = types
                .get(&c.type_oid)
                .cloned()
                .or_else(|| PgType::builtin(c.type_oid))
                .ok_or_else(|| MappingError::UnknownOid {
                    table: table.clone(),
                    column: c.name.clone(),
                    oid: c.type_oid,
                })?;
            let is_key = match keys {
                Some(k) => k.iter().any(|k| k == &c.name),
                None => c.is_key,
            };
            map_column(&table, &c.name, &pg, c.type_modifier, is_key)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Value conversion.

impl ColumnMapping {
    fn error(&self, value: &[u8], reason: impl Into<String>) -> ConvertError {
        let s = String::from_utf8_lossy(value);
        let excerpt: String = s.chars().take(40).collect();
        ConvertError {
            table: self.table.clone(),
            column: self.column.clone(),
            pg_type: self.pg_type.clone(),
            excerpt,
            reason: reason.into(),
        }
    }

    fn unrepresentable(&self, value: &str, why: &str) -> Out {
        warn!(table = %self.table, column = %self.column, pg_type = %self.pg_type, value, why,
              "value not representable in StarRocks: loaded as NULL");
        Out::Null
    }
}

/// A converted value: JSON text fragments are produced without an intermediate tree so
/// json/jsonb documents keep every digit.
#[derive(Debug, Clone, PartialEq)]
enum Out {
    Null,
    /// A JSON string value (unquoted content).
    Str(String),
    /// Raw JSON text (number, true/false, document).
    Raw(String),
    /// An array of converted elements.
    Array(Vec<Out>),
}

/// Converts one PostgreSQL text value to a JSON value for a Stream Load JSON body.
/// Numbers in json/jsonb documents beyond f64 precision are only exact through
/// [`write_json_value`], which writes the document text unchanged.
pub fn to_json(
    value_text: &[u8],
    mapping: &ColumnMapping,
) -> Result<serde_json::Value, ConvertError> {
    let mut s = String::new();
    write_json_value(value_text, mapping, &mut s)?;
    serde_json::from_str(&s)
        .map_err(|e| mapping.error(value_text, format!("internal JSON error: {e}")))
}

/// Appends the JSON text of one converted value to `out` (exact for every type).
///
/// Hot path (one call per column per row): the common conversions write straight into
/// `out` with no allocation (text escaped in one pass, integers validated and copied,
/// timestamps parsed and printed by hand); the rest go through [`convert`]. The fast
/// paths are checked against [`convert`] in the tests.
pub fn write_json_value(
    value_text: &[u8],
    mapping: &ColumnMapping,
    out: &mut String,
) -> Result<(), ConvertError> {
    let s = utf8(value_text, mapping)?;
    let fast = match &mapping.conv {
        Conv::Text => {
            write_json_string(s, out);
            true
        }
        Conv::Int => {
            if s.parse::<i64>().is_err() {
                return Err(mapping.error(value_text, "not a 64-bit integer"));
            }
            out.push_str(s);
            true
        }
        Conv::Bool => match s {
            "t" | "true" => {
                out.push_str("true");
                true
            }
            "f" | "false" => {
                out.push_str("false");
                true
            }
            _ => false,
        },
        Conv::Decimal { precision, scale } if check_decimal(s, *precision, *scale).is_ok() => {
            // Digits, '-' and '.' only: nothing to escape.
            out.push('"');
            out.push_str(s);
            out.push('"');
            true
        }
        Conv::Timestamp | Conv::TimestampTz => {
            let tz = matches!(mapping.conv, Conv::TimestampTz);
            match fast_timestamp(s, tz) {
                Some(t) => {
                    out.push('"');
                    push_datetime(&t, out);
                    out.push('"');
                    true
                }
                None => false,
            }
        }
        _ => false,
    };
    if !fast {
        let v = convert_str(s, &mapping.conv, mapping)?;
        write_out(&v, out);
    }
    Ok(())
}

fn utf8<'a>(value: &'a [u8], m: &ColumnMapping) -> Result<&'a str, ConvertError> {
    std::str::from_utf8(value).map_err(|_| {
        m.error(
            value,
            "not valid UTF-8 (StarRocks stores UTF-8 only; use a UTF8 source database)",
        )
    })
}

/// Two ASCII digits at `at`.
fn digits2(b: &[u8], at: usize) -> Option<u32> {
    let (x, y) = (*b.get(at)?, *b.get(at + 1)?);
    (x.is_ascii_digit() && y.is_ascii_digit())
        .then(|| u32::from(x - b'0') * 10 + u32::from(y - b'0'))
}

/// The canonical ISO output of PostgreSQL (`YYYY-MM-DD HH:MM:SS[.f{1,6}]`, with
/// `tz` an offset `+HH[:MM[:SS]]`), as UTC when `tz`; `None` for anything else (4-digit
/// years only; BC, infinity, other forms and out-of-range results take the general path).
fn fast_timestamp(s: &str, tz: bool) -> Option<NaiveDateTime> {
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b' '
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let year = digits2(b, 0)? * 100 + digits2(b, 2)?;
    let (month, day) = (digits2(b, 5)?, digits2(b, 8)?);
    let (h, mi, sec) = (digits2(b, 11)?, digits2(b, 14)?, digits2(b, 17)?);
    let mut i = 19;
    let mut micros = 0u32;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() && i - start < 6 {
            micros = micros * 10 + u32::from(b[i] - b'0');
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        micros *= 10u32.pow((6 - n) as u32);
    }
    let mut offset = 0i64;
    if tz {
        let sign = match b.get(i)? {
            b'+' => 1i64,
            b'-' => -1,
            _ => return None,
        };
        let oh = digits2(b, i + 1)?;
        i += 3;
        let mut om = 0;
        let mut os = 0;
        if b.get(i) == Some(&b':') {
            om = digits2(b, i + 1)?;
            i += 3;
            if b.get(i) == Some(&b':') {
                os = digits2(b, i + 1)?;
                i += 3;
            }
        }
        offset = sign * i64::from(oh * 3600 + om * 60 + os);
    }
    if i != b.len() {
        return None;
    }
    let d = NaiveDate::from_ymd_opt(year as i32, month, day)?;
    let t = NaiveTime::from_hms_micro_opt(h, mi, sec, micros)?;
    let utc = d
        .and_time(t)
        .checked_sub_signed(chrono::Duration::seconds(offset))?;
    use chrono::Datelike;
    (0..=9999).contains(&utc.year()).then_some(utc)
}

/// `YYYY-MM-DD HH:MM:SS.ffffff` (what `%Y-%m-%d %H:%M:%S%.6f` gives for years 0..=9999).
fn push_datetime(t: &NaiveDateTime, out: &mut String) {
    use chrono::{Datelike, Timelike};
    let mut buf = *b"0000-00-00 00:00:00.000000";
    let put = |buf: &mut [u8; 26], at: usize, width: usize, mut v: u32| {
        for k in (0..width).rev() {
            buf[at + k] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(&mut buf, 0, 4, t.year().clamp(0, 9999) as u32);
    put(&mut buf, 5, 2, t.month());
    put(&mut buf, 8, 2, t.day());
    put(&mut buf, 11, 2, t.hour());
    put(&mut buf, 14, 2, t.minute());
    put(&mut buf, 17, 2, t.second());
    put(&mut buf, 20, 6, t.nanosecond() / 1000);
    // Only ASCII digits and separators were written.
    out.push_str(std::str::from_utf8(&buf).unwrap_or_default());
}

/// The value as CSV field content (None = NULL), see [`super::csv`].
pub fn to_csv_field(
    value_text: &[u8],
    mapping: &ColumnMapping,
) -> Result<Option<String>, ConvertError> {
    Ok(match convert(value_text, &mapping.conv, mapping)? {
        Out::Null => None,
        Out::Str(s) | Out::Raw(s) => Some(s),
        a @ Out::Array(_) => {
            let mut s = String::new();
            write_out(&a, &mut s);
            Some(s)
        }
    })
}

fn write_out(v: &Out, out: &mut String) {
    match v {
        Out::Null => out.push_str("null"),
        Out::Raw(s) => out.push_str(s),
        Out::Str(s) => write_json_string(s, out),
        Out::Array(items) => {
            out.push('[');
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_out(it, out);
            }
            out.push(']');
        }
    }
}

/// Appends `s` as a JSON string literal: runs without anything to escape are copied
/// whole (one pass, no allocation).
pub fn write_json_string(s: &str, out: &mut String) {
    out.push('"');
    let b = s.as_bytes();
    let mut run = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &str = match c {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            c if c < 0x20 => "",
            _ => continue,
        };
        // `i` is at an ASCII byte, so both slices are on char boundaries.
        out.push_str(&s[run..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(HEX[usize::from(c >> 4)] as char);
            out.push(HEX[usize::from(c & 15)] as char);
        } else {
            out.push_str(esc);
        }
        run = i + 1;
    }
    out.push_str(&s[run..]);
    out.push('"');
}

fn convert(value: &[u8], conv: &Conv, m: &ColumnMapping) -> Result<Out, ConvertError> {
    convert_str(utf8(value, m)?, conv, m)
}

fn convert_str(s: &str, conv: &Conv, m: &ColumnMapping) -> Result<Out, ConvertError> {
    let err = |reason: &str| m.error(s.as_bytes(), reason);
    Ok(match conv {
        Conv::Text => Out::Str(s.to_string()),
        Conv::Bool => match s {
            "t" | "true" => Out::Raw("true".into()),
            "f" | "false" => Out::Raw("false".into()),
            _ => return Err(err("not a boolean (t/f)")),
        },
        Conv::Int => {
            s.parse::<i64>().map_err(|_| err("not a 64-bit integer"))?;
            Out::Raw(s.to_string())
        }
        Conv::BigIntText => {
            s.parse::<i128>()
                .map_err(|_| err("not an integer within LARGEINT"))?;
            Out::Str(s.to_string())
        }
        Conv::Float => match s {
            "NaN" | "Infinity" | "-Infinity" => {
                m.unrepresentable(s, "NaN/Infinity in a FLOAT/DOUBLE column")
            }
            _ => {
                let f: f64 = s.parse().map_err(|_| err("not a floating-point number"))?;
                let n =
                    serde_json::Number::from_f64(f).ok_or_else(|| err("not a finite number"))?;
                Out::Raw(n.to_string())
            }
        },
        Conv::Decimal { precision, scale } => match s {
            "NaN" | "Infinity" | "-Infinity" => {
                m.unrepresentable(s, "NaN/Infinity in a DECIMAL column")
            }
            _ => {
                check_decimal(s, *precision, *scale).map_err(|r| err(&r))?;
                Out::Str(s.to_string())
            }
        },
        Conv::Money => Out::Str(parse_money(s).map_err(|r| err(&r))?),
        Conv::Date => match parse_date(s).map_err(|r| err(&r))? {
            Some(d) => Out::Str(d.format("%Y-%m-%d").to_string()),
            None => m.unrepresentable(
                s,
                "date outside 0000-01-01..9999-12-31 (infinity, BC or year > 9999)",
            ),
        },
        Conv::Timestamp => match parse_timestamp(s, false).map_err(|r| err(&r))? {
            Some(t) => Out::Str(format_datetime(&t)),
            None => m.unrepresentable(
                s,
                "timestamp outside 0000..9999 (infinity, BC or year > 9999)",
            ),
        },
        Conv::TimestampTz => match parse_timestamp(s, true).map_err(|r| err(&r))? {
            Some(t) => Out::Str(format_datetime(&t)),
            None => m.unrepresentable(
                s,
                "timestamp outside 0000..9999 UTC (infinity, BC or year > 9999)",
            ),
        },
        Conv::Json => {
            // Validate, then send the document text unchanged (exact numbers).
            serde_json::from_str::<serde::de::IgnoredAny>(s)
                .map_err(|e| err(&format!("not valid JSON: {e}")))?;
            Out::Raw(s.to_string())
        }
        Conv::ByteaHex => Out::Str(bytea_to_hex(s).map_err(|r| err(&r))?),
        Conv::Array(inner) => {
            let parsed = parse_array(s).map_err(|r| err(&r))?;
            array_out(&parsed, inner, m)?
        }
    })
}

fn array_out(a: &ArrayItem, inner: &Conv, m: &ColumnMapping) -> Result<Out, ConvertError> {
    Ok(match a {
        ArrayItem::Null => Out::Null,
        ArrayItem::Value(v) => convert_str(v, inner, m)?,
        ArrayItem::List(items) => Out::Array(
            items
                .iter()
                .map(|i| array_out(i, inner, m))
                .collect::<Result<_, _>>()?,
        ),
    })
}

fn format_datetime(t: &NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

/// Checks a numeric text against DECIMAL(p,s): syntax and digit counts.
fn check_decimal(s: &str, p: u8, sc: u8) -> Result<(), String> {
    let body = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err("not a decimal number".into());
    }
    let int_digits = int.trim_start_matches('0').len();
    let frac_digits = frac.trim_end_matches('0').len();
    if frac_digits > sc as usize || int_digits > (p - sc) as usize {
        return Err(format!("does not fit DECIMAL({p},{sc})"));
    }
    Ok(())
}

/// Parses PostgreSQL money output into a decimal string with 2 fraction digits. Accepts
/// `$1,234.56`, `-$1,234.56`, `($1,234.56)`, `1.234,56 €` (a final `,` followed by exactly
/// two digits is taken as the decimal separator).
pub fn parse_money(s: &str) -> Result<String, String> {
    let t = s.trim();
    let negative = t.contains('-') || (t.starts_with('(') && t.ends_with(')'));
    let kept: String = t
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '.' || *c == ',')
        .collect();
    if !kept.bytes().any(|b| b.is_ascii_digit()) {
        return Err("not a money amount".into());
    }
    // The last separator is the decimal point when 1 or 2 digits follow it; otherwise
    // every separator groups thousands.
    let dec_pos = kept
        .rfind(['.', ','])
        .filter(|&i| (1..=2).contains(&(kept.len() - i - 1)));
    let (int, frac) = match dec_pos {
        Some(i) => (&kept[..i], &kept[i + 1..]),
        None => (kept.as_str(), ""),
    };
    let int: String = int.chars().filter(|c| c.is_ascii_digit()).collect();
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    if int.len() > 17 {
        return Err("does not fit DECIMAL(19,2)".into());
    }
    let mut out = String::new();
    if negative && (int != "0" || !frac.trim_end_matches('0').is_empty()) {
        out.push('-');
    }
    out.push_str(int);
    out.push('.');
    out.push_str(frac);
    for _ in frac.len()..2 {
        out.push('0');
    }
    Ok(out)
}

/// Parses a PostgreSQL ISO date. `Ok(None)`: valid in PostgreSQL but outside StarRocks's
/// DATE range (infinity, BC, year > 9999).
pub fn parse_date(s: &str) -> Result<Option<NaiveDate>, String> {
    if s == "infinity" || s == "-infinity" || s.ends_with(" BC") {
        return Ok(None);
    }
    let (y, rest) = s
        .split_once('-')
        .ok_or("not an ISO date (set DateStyle to ISO)")?;
    let year: i32 = y
        .parse()
        .map_err(|_| "not an ISO date (set DateStyle to ISO)")?;
    if year > 9999 {
        return Ok(None);
    }
    NaiveDate::parse_from_str(&format!("{year:04}-{rest}"), "%Y-%m-%d")
        .map(Some)
        .map_err(|e| format!("not an ISO date (set DateStyle to ISO): {e}"))
}

/// Parses a PostgreSQL ISO timestamp, with an offset when `tz` (`+05:30`, `-03`,
/// `+05:53:28`), returning it as naive UTC (or as is without `tz`). `Ok(None)`: outside
/// StarRocks's DATETIME range.
pub fn parse_timestamp(s: &str, tz: bool) -> Result<Option<NaiveDateTime>, String> {
    if s == "infinity" || s == "-infinity" || s.ends_with(" BC") {
        return Ok(None);
    }
    let bad = |why: &str| format!("not an ISO timestamp (set DateStyle to ISO): {why}");
    let (date, time) = s.split_once(' ').ok_or_else(|| bad("no time part"))?;
    let (time, offset_secs) = if tz {
        let i = time.rfind(['+', '-']).ok_or_else(|| bad("no UTC offset"))?;
        (
            &time[..i],
            parse_offset(&time[i..]).ok_or_else(|| bad("bad UTC offset"))?,
        )
    } else {
        (time, 0)
    };
    let (y, rest) = date.split_once('-').ok_or_else(|| bad("bad date"))?;
    let year: i32 = y.parse().map_err(|_| bad("bad year"))?;
    if year > 9999 {
        return Ok(None);
    }
    let d = NaiveDate::parse_from_str(&format!("{year:04}-{rest}"), "%Y-%m-%d")
        .map_err(|e| bad(&e.to_string()))?;
    let t = NaiveTime::parse_from_str(time, "%H:%M:%S%.f").map_err(|e| bad(&e.to_string()))?;
    let local = d.and_time(t);
    let utc = local
        .checked_sub_signed(chrono::Duration::seconds(offset_secs))
        .ok_or_else(|| bad("out of range"))?;
    use chrono::Datelike;
    if !(0..=9999).contains(&utc.year()) {
        return Ok(None);
    }
    Ok(Some(utc))
}

/// `+HH`, `+HH:MM`, `+HH:MM:SS` (and without colons) → seconds east of UTC.
fn parse_offset(s: &str) -> Option<i64> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let parts: Vec<&str> = if rest.contains(':') {
        rest.split(':').collect()
    } else {
        rest.as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap_or("x"))
            .collect()
    };
    if parts.is_empty()
        || parts.len() > 3
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let mut secs = 0i64;
    for (i, p) in parts.iter().enumerate() {
        let v: i64 = p.parse().ok()?;
        secs += v * [3600, 60, 1][i];
    }
    Some(sign * secs)
}

/// bytea text (hex `\x…` or the escape format) → lower-case hex of the bytes.
pub fn bytea_to_hex(s: &str) -> Result<String, String> {
    if let Some(h) = s.strip_prefix("\\x") {
        let bytes = hex::decode(h).map_err(|e| format!("bad bytea hex: {e}"))?;
        return Ok(hex::encode(bytes));
    }
    // Escape format: `\\` is a backslash, `\ooo` an octal byte, everything else literal.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if b.get(i + 1) == Some(&b'\\') {
                out.push(b'\\');
                i += 2;
                continue;
            }
            let oct = b.get(i + 1..i + 4).ok_or("bad bytea escape")?;
            if !oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                return Err("bad bytea escape".into());
            }
            let v = u32::from(oct[0] - b'0') * 64
                + u32::from(oct[1] - b'0') * 8
                + u32::from(oct[2] - b'0');
            out.push(u8::try_from(v).map_err(|_| "bad bytea escape")?);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(hex::encode(out))
}

/// A parsed PostgreSQL array literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArrayItem {
    Null,
    Value(String),
    List(Vec<ArrayItem>),
}

/// Parses PostgreSQL array text output: `{1,2,NULL}`, `{{a,b},{c,d}}`, `{"a b","x\"y",""}`,
/// with an optional dimension prefix `[0:1]={…}`. The delimiter is `,` (all built-in types
/// except `box`, whose arrays use `;`; box arrays therefore map through text).
pub fn parse_array(s: &str) -> Result<ArrayItem, String> {
    let s = if s.starts_with('[') {
        s.split_once('=')
            .map(|(_, r)| r)
            .ok_or("bad array dimensions")?
    } else {
        s
    };
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    let item = parse_list(&b, &mut i)?;
    if i != b.len() {
        return Err("trailing characters after the array".into());
    }
    Ok(item)
}

fn parse_list(b: &[char], i: &mut usize) -> Result<ArrayItem, String> {
    if b.get(*i) != Some(&'{') {
        return Err("expected '{'".into());
    }
    *i += 1;
    let mut items = Vec::new();
    if b.get(*i) == Some(&'}') {
        *i += 1;
        return Ok(ArrayItem::List(items));
    }
    loop {
        match b.get(*i) {
            Some('{') => items.push(parse_list(b, i)?),
            Some('"') => {
                *i += 1;
                let mut v = String::new();
                loop {
                    match b.get(*i) {
                        Some('\\') => {
                            v.push(*b.get(*i + 1).ok_or("unterminated escape")?);
                            *i += 2;
                        }
                        Some('"') => {
                            *i += 1;
                            break;
                        }
                        Some(c) => {
                            v.push(*c);
                            *i += 1;
                        }
                        None => return Err("unterminated quoted element".into()),
                    }
                }
                items.push(ArrayItem::Value(v));
            }
            Some(_) => {
                let mut v = String::new();
                while let Some(c) = b.get(*i) {
                    match c {
                        ',' | '}' => break,
                        '\\' => {
                            v.push(*b.get(*i + 1).ok_or("unterminated escape")?);
                            *i += 2;
                        }
                        c => {
                            v.push(*c);
                            *i += 1;
                        }
                    }
                }
                let t = v.trim();
                items.push(if t.eq_ignore_ascii_case("NULL") {
                    ArrayItem::Null
                } else {
                    ArrayItem::Value(t.to_string())
                });
            }
            None => return Err("unterminated array".into()),
        }
        match b.get(*i) {
            Some(',') => *i += 1,
            Some('}') => {
                *i += 1;
                return Ok(ArrayItem::List(items));
            }
            _ => return Err("expected ',' or '}'".into()),
        }
    }
}

#[cfg(test)]
mod tests;
