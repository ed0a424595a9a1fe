//! StarRocks column types and typed values: type names as SQL/DESC/information_schema show
//! them, conversion of loaded input (JSON values or CSV text) into typed values with
//! StarRocks's data-quality rules, and rendering for read-back (JSON and MySQL text).

use std::cmp::Ordering;
use std::str::FromStr;

use bigdecimal::BigDecimal;
use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use serde::{Deserialize, Serialize};

/// Maximum VARCHAR length in bytes (StarRocks 2.1–4.1).
pub const MAX_VARCHAR: u32 = 1_048_576;
/// Length of STRING (an alias of VARCHAR(65533)).
pub const STRING_LEN: u32 = 65_533;
/// Maximum size of one JSON value (16 MB).
pub const MAX_JSON_BYTES: usize = 16 * 1024 * 1024;

/// A StarRocks column type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ColumnType {
    /// BOOLEAN
    Boolean,
    /// TINYINT (1 byte)
    TinyInt,
    /// SMALLINT (2 bytes)
    SmallInt,
    /// INT (4 bytes)
    Int,
    /// BIGINT (8 bytes)
    BigInt,
    /// LARGEINT (16 bytes)
    LargeInt,
    /// FLOAT
    Float,
    /// DOUBLE
    Double,
    /// DECIMAL(precision, scale), precision 1..=38
    Decimal {
        /// Total digits.
        precision: u32,
        /// Fraction digits.
        scale: u32,
    },
    /// CHAR(len), len in bytes
    Char {
        /// Length in bytes.
        len: u32,
    },
    /// VARCHAR(len), len in bytes
    Varchar {
        /// Length in bytes.
        len: u32,
    },
    /// STRING (VARCHAR(65533))
    String,
    /// DATE
    Date,
    /// DATETIME (microseconds)
    DateTime,
    /// JSON
    Json,
    /// VARBINARY(len) / BINARY(len)
    VarBinary {
        /// Maximum length in bytes.
        len: u32,
    },
    /// ARRAY<element>
    Array {
        /// Element type.
        element: Box<ColumnType>,
    },
}

impl ColumnType {
    /// Maximum byte length of a string type.
    fn max_len(&self) -> Option<u32> {
        match self {
            ColumnType::Char { len } | ColumnType::Varchar { len } => Some(*len),
            ColumnType::String => Some(STRING_LEN),
            ColumnType::VarBinary { len } => Some(*len),
            _ => None,
        }
    }

    /// Whether StarRocks allows this type in a PRIMARY KEY.
    pub fn can_be_key(&self) -> bool {
        matches!(
            self,
            ColumnType::Boolean
                | ColumnType::TinyInt
                | ColumnType::SmallInt
                | ColumnType::Int
                | ColumnType::BigInt
                | ColumnType::LargeInt
                | ColumnType::Varchar { .. }
                | ColumnType::String
                | ColumnType::Date
                | ColumnType::DateTime
        )
    }

    /// Whether the type is allowed as a `merge_condition` column.
    pub fn can_be_merge_condition(&self) -> bool {
        matches!(
            self,
            ColumnType::Boolean
                | ColumnType::TinyInt
                | ColumnType::SmallInt
                | ColumnType::Int
                | ColumnType::BigInt
                | ColumnType::LargeInt
                | ColumnType::Float
                | ColumnType::Double
                | ColumnType::Decimal { .. }
                | ColumnType::Date
                | ColumnType::DateTime
        )
    }

    /// The type as StarRocks SQL (SHOW CREATE TABLE).
    pub fn sql(&self) -> String {
        match self {
            ColumnType::Boolean => "BOOLEAN".into(),
            ColumnType::TinyInt => "TINYINT(4)".into(),
            ColumnType::SmallInt => "SMALLINT(6)".into(),
            ColumnType::Int => "INT(11)".into(),
            ColumnType::BigInt => "BIGINT(20)".into(),
            ColumnType::LargeInt => "LARGEINT(40)".into(),
            ColumnType::Float => "FLOAT".into(),
            ColumnType::Double => "DOUBLE".into(),
            ColumnType::Decimal { precision, scale } => format!("DECIMAL({precision}, {scale})"),
            ColumnType::Char { len } => format!("CHAR({len})"),
            ColumnType::Varchar { len } => format!("VARCHAR({len})"),
            ColumnType::String => format!("VARCHAR({STRING_LEN})"),
            ColumnType::Date => "DATE".into(),
            ColumnType::DateTime => "DATETIME".into(),
            ColumnType::Json => "JSON".into(),
            ColumnType::VarBinary { len } => format!("VARBINARY({len})"),
            ColumnType::Array { element } => format!("ARRAY<{}>", element.sql()),
        }
    }

    /// information_schema.columns.data_type (lower case, no parameters).
    pub fn data_type(&self) -> String {
        match self {
            ColumnType::Boolean => "boolean",
            ColumnType::TinyInt => "tinyint",
            ColumnType::SmallInt => "smallint",
            ColumnType::Int => "int",
            ColumnType::BigInt => "bigint",
            ColumnType::LargeInt => "largeint",
            ColumnType::Float => "float",
            ColumnType::Double => "double",
            ColumnType::Decimal { .. } => "decimal",
            ColumnType::Char { .. } => "char",
            ColumnType::Varchar { .. } | ColumnType::String => "varchar",
            ColumnType::Date => "date",
            ColumnType::DateTime => "datetime",
            ColumnType::Json => "json",
            ColumnType::VarBinary { .. } => "varbinary",
            ColumnType::Array { .. } => "array",
        }
        .to_string()
    }

    /// information_schema.columns.column_type and DESC's Type (lower case, with parameters).
    pub fn column_type(&self) -> String {
        match self {
            ColumnType::Decimal { precision, scale } => format!("decimal({precision},{scale})"),
            ColumnType::Array { element } => format!("array<{}>", element.column_type()),
            other => other.sql().to_lowercase(),
        }
    }

    /// The primitive type name reported by `GET /api/{db}/{table}/_schema`.
    pub fn schema_type_name(&self) -> String {
        match self {
            ColumnType::Decimal { precision, .. } if *precision <= 9 => "DECIMAL32".into(),
            ColumnType::Decimal { precision, .. } if *precision <= 18 => "DECIMAL64".into(),
            ColumnType::Decimal { .. } => "DECIMAL128".into(),
            ColumnType::String | ColumnType::Varchar { .. } => "VARCHAR".into(),
            ColumnType::Array { .. } => "ARRAY".into(),
            ColumnType::VarBinary { .. } => "VARBINARY".into(),
            other => {
                let s = other.sql();
                s.split('(').next().unwrap_or(&s).to_string()
            }
        }
    }

    /// The MySQL protocol column type used in result sets.
    pub fn mysql_type(&self) -> opensrv_mysql::ColumnType {
        use opensrv_mysql::ColumnType as M;
        match self {
            ColumnType::Boolean | ColumnType::TinyInt => M::MYSQL_TYPE_TINY,
            ColumnType::SmallInt => M::MYSQL_TYPE_SHORT,
            ColumnType::Int => M::MYSQL_TYPE_LONG,
            ColumnType::BigInt => M::MYSQL_TYPE_LONGLONG,
            ColumnType::LargeInt => M::MYSQL_TYPE_VAR_STRING,
            ColumnType::Float => M::MYSQL_TYPE_FLOAT,
            ColumnType::Double => M::MYSQL_TYPE_DOUBLE,
            ColumnType::Decimal { .. } => M::MYSQL_TYPE_NEWDECIMAL,
            ColumnType::Date => M::MYSQL_TYPE_DATE,
            ColumnType::DateTime => M::MYSQL_TYPE_DATETIME,
            ColumnType::VarBinary { .. } => M::MYSQL_TYPE_BLOB,
            _ => M::MYSQL_TYPE_VAR_STRING,
        }
    }

    /// The zero value used for a NOT NULL column without default in a partial update of a new key.
    pub fn zero_value(&self) -> Value {
        match self {
            ColumnType::Boolean => Value::Bool(false),
            ColumnType::TinyInt
            | ColumnType::SmallInt
            | ColumnType::Int
            | ColumnType::BigInt
            | ColumnType::LargeInt => Value::Int(0),
            ColumnType::Float | ColumnType::Double => Value::Float(0.0),
            ColumnType::Decimal { scale, .. } => {
                Value::Decimal(BigDecimal::from(0).with_scale(i64::from(*scale)))
            }
            ColumnType::Char { .. } | ColumnType::Varchar { .. } | ColumnType::String => {
                Value::Str(String::new())
            }
            ColumnType::Date => Value::Date(NaiveDate::default()),
            ColumnType::DateTime => Value::DateTime(NaiveDateTime::default()),
            ColumnType::Json => Value::Json(serde_json::Value::Null),
            ColumnType::VarBinary { .. } => Value::Bytes(Vec::new()),
            ColumnType::Array { .. } => Value::Array(Vec::new()),
        }
    }
}

/// A typed cell value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// SQL NULL
    Null,
    /// BOOLEAN
    Bool(bool),
    /// Any integer type (stored as text in persistence to keep LARGEINT exact).
    Int(#[serde(with = "i128_text")] i128),
    /// FLOAT / DOUBLE
    Float(f64),
    /// DECIMAL, already at the column's scale
    Decimal(BigDecimal),
    /// CHAR / VARCHAR / STRING
    Str(String),
    /// DATE
    Date(NaiveDate),
    /// DATETIME
    DateTime(NaiveDateTime),
    /// JSON
    Json(serde_json::Value),
    /// VARBINARY
    Bytes(Vec<u8>),
    /// ARRAY
    Array(Vec<Value>),
}

mod i128_text {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &i128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i128, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A part of a primary key: the types allowed in a key, totally ordered.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum KeyPart {
    /// BOOLEAN
    Bool(bool),
    /// integer types
    Int(#[serde(with = "i128_text")] i128),
    /// VARCHAR / STRING
    Str(String),
    /// DATE
    Date(NaiveDate),
    /// DATETIME
    DateTime(NaiveDateTime),
}

impl Value {
    /// The key form of this value, if it is of a key type.
    pub fn key_part(&self) -> Option<KeyPart> {
        match self {
            Value::Bool(b) => Some(KeyPart::Bool(*b)),
            Value::Int(i) => Some(KeyPart::Int(*i)),
            Value::Str(s) => Some(KeyPart::Str(s.clone())),
            Value::Date(d) => Some(KeyPart::Date(*d)),
            Value::DateTime(d) => Some(KeyPart::DateTime(*d)),
            _ => None,
        }
    }

    /// Whether this is NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Order used by `merge_condition` and ORDER BY (NULL first). None if not comparable.
    pub fn compare(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Null, Value::Null) => Some(Ordering::Equal),
            (Value::Null, _) => Some(Ordering::Less),
            (_, Value::Null) => Some(Ordering::Greater),
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
            (Value::Float(a), Value::Float(b)) => a.partial_cmp(b),
            (Value::Decimal(a), Value::Decimal(b)) => Some(a.cmp(b)),
            (Value::Str(a), Value::Str(b)) => Some(a.cmp(b)),
            (Value::Date(a), Value::Date(b)) => Some(a.cmp(b)),
            (Value::DateTime(a), Value::DateTime(b)) => Some(a.cmp(b)),
            (Value::Bytes(a), Value::Bytes(b)) => Some(a.cmp(b)),
            (Value::Json(a), Value::Json(b)) => Some(a.to_string().cmp(&b.to_string())),
            _ => None,
        }
    }

    /// The value as read back over HTTP / the Rust API.
    ///
    /// Integers are JSON numbers (LARGEINT beyond i64/u64 is a string), DECIMAL is a string at
    /// the column scale, DATE/DATETIME are strings, JSON is nested JSON, VARBINARY is lower-case
    /// hex, ARRAY is a JSON array.
    pub fn to_json(&self, ty: &ColumnType) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => {
                if let Ok(v) = i64::try_from(*i) {
                    J::from(v)
                } else if let Ok(v) = u64::try_from(*i) {
                    J::from(v)
                } else {
                    J::String(i.to_string())
                }
            }
            Value::Float(f) => {
                if matches!(ty, ColumnType::Float) {
                    serde_json::Number::from_f64(f64::from(*f as f32))
                        .map(J::Number)
                        .unwrap_or(J::Null)
                } else {
                    serde_json::Number::from_f64(*f)
                        .map(J::Number)
                        .unwrap_or(J::Null)
                }
            }
            Value::Array(items) => {
                let el = match ty {
                    ColumnType::Array { element } => element.as_ref().clone(),
                    other => other.clone(),
                };
                J::Array(items.iter().map(|v| v.to_json(&el)).collect())
            }
            Value::Json(j) => j.clone(),
            Value::Bytes(b) => J::String(hex_encode(b)),
            other => match other.to_text(ty) {
                Some(t) => J::String(String::from_utf8_lossy(&t).into_owned()),
                None => J::Null,
            },
        }
    }

    /// The value in MySQL text-protocol form (None for NULL).
    pub fn to_text(&self, ty: &ColumnType) -> Option<Vec<u8>> {
        let s = match self {
            Value::Null => return None,
            Value::Bool(b) => if *b { "1" } else { "0" }.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => {
                if matches!(ty, ColumnType::Float) {
                    (*f as f32).to_string()
                } else {
                    f.to_string()
                }
            }
            Value::Decimal(d) => d.to_plain_string(),
            Value::Str(s) => s.clone(),
            Value::Date(d) => d.format("%Y-%m-%d").to_string(),
            Value::DateTime(d) => format_datetime(d),
            Value::Json(j) => j.to_string(),
            Value::Bytes(b) => {
                if matches!(ty, ColumnType::VarBinary { .. }) {
                    return Some(b.clone());
                }
                hex_encode(b)
            }
            Value::Array(_) => self.to_json(ty).to_string(),
        };
        Some(s.into_bytes())
    }

    /// For read-back of VARBINARY as JSON text: hex.
    fn bytes_hex(&self) -> Option<String> {
        match self {
            Value::Bytes(b) => Some(hex_encode(b)),
            _ => None,
        }
    }
}

/// Renders a DATETIME the way StarRocks ≥ 3.3.5 shows it (fraction only when non-zero).
pub fn format_datetime(d: &NaiveDateTime) -> String {
    let micros = d.and_utc().timestamp_subsec_micros();
    if micros == 0 {
        d.format("%Y-%m-%d %H:%M:%S").to_string()
    } else {
        format!("{}.{micros:06}", d.format("%Y-%m-%d %H:%M:%S"))
    }
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

/// One input cell, before conversion.
#[derive(Debug, Clone, Copy)]
pub enum Raw<'a> {
    /// A JSON value from a JSON load (never JSON null; NULL is handled by the caller).
    Json(&'a serde_json::Value),
    /// A CSV field (never `\N`).
    Text(&'a str),
}

impl Raw<'_> {
    /// The input as it appears in the error log.
    pub fn display(&self) -> String {
        match self {
            Raw::Json(serde_json::Value::String(s)) => s.clone(),
            Raw::Json(v) => v.to_string(),
            Raw::Text(t) => t.to_string(),
        }
    }

    fn as_text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Raw::Json(serde_json::Value::String(s)) => std::borrow::Cow::Borrowed(s.as_str()),
            Raw::Json(v) => std::borrow::Cow::Owned(v.to_string()),
            Raw::Text(t) => std::borrow::Cow::Borrowed(t),
        }
    }
}

/// Converts one input cell to the column type. `Err` carries the data-quality reason.
pub fn convert(ty: &ColumnType, raw: Raw<'_>) -> Result<Value, String> {
    match ty {
        ColumnType::Boolean => convert_bool(raw),
        ColumnType::TinyInt => convert_int(raw, i128::from(i8::MIN), i128::from(i8::MAX), ty),
        ColumnType::SmallInt => convert_int(raw, i128::from(i16::MIN), i128::from(i16::MAX), ty),
        ColumnType::Int => convert_int(raw, i128::from(i32::MIN), i128::from(i32::MAX), ty),
        ColumnType::BigInt => convert_int(raw, i128::from(i64::MIN), i128::from(i64::MAX), ty),
        ColumnType::LargeInt => convert_int(raw, i128::MIN + 1, i128::MAX, ty),
        ColumnType::Float | ColumnType::Double => {
            let f = match raw {
                Raw::Json(serde_json::Value::Number(n)) => n.as_f64(),
                _ => raw.as_text().trim().parse::<f64>().ok(),
            };
            match f {
                Some(f) if f.is_finite() => {
                    if matches!(ty, ColumnType::Float) {
                        let g = f as f32;
                        if g.is_finite() {
                            Ok(Value::Float(f64::from(g)))
                        } else {
                            Err(format!(
                                "Value '{}' is out of range of FLOAT",
                                raw.display()
                            ))
                        }
                    } else {
                        Ok(Value::Float(f))
                    }
                }
                _ => Err(format!(
                    "convert string to {} failed. input: '{}'",
                    ty.data_type().to_uppercase(),
                    raw.display()
                )),
            }
        }
        ColumnType::Decimal { precision, scale } => convert_decimal(raw, *precision, *scale),
        ColumnType::Char { .. } | ColumnType::Varchar { .. } | ColumnType::String => {
            let s = raw.as_text().into_owned();
            let max = ty.max_len().unwrap_or(STRING_LEN) as usize;
            if s.len() > max {
                return Err(format!(
                    "the length of input is too long than schema. input_str: '{}', schema length: {max}, actual length: {}",
                    truncate_for_log(&s),
                    s.len()
                ));
            }
            Ok(Value::Str(s))
        }
        ColumnType::Date => {
            let t = raw.as_text();
            parse_date(t.trim())
                .map(Value::Date)
                .ok_or_else(|| format!("convert string to DATE failed. input: '{}'", raw.display()))
        }
        ColumnType::DateTime => {
            let t = raw.as_text();
            parse_datetime(t.trim())
                .map(Value::DateTime)
                .ok_or_else(|| {
                    format!(
                        "convert string to DATETIME failed. input: '{}'",
                        raw.display()
                    )
                })
        }
        ColumnType::Json => {
            let v = match raw {
                Raw::Json(v) => v.clone(),
                Raw::Text(t) => serde_json::from_str(t).map_err(|e| {
                    format!("parse json failed: {e}. input: '{}'", truncate_for_log(t))
                })?,
            };
            if v.to_string().len() > MAX_JSON_BYTES {
                return Err("json value is larger than 16MB".into());
            }
            Ok(Value::Json(v))
        }
        ColumnType::VarBinary { len } => {
            let bytes = match raw {
                Raw::Text(t) => hex_decode(t).ok_or_else(|| {
                    format!(
                        "invalid hex string for VARBINARY. input: '{}'",
                        truncate_for_log(t)
                    )
                })?,
                Raw::Json(serde_json::Value::String(s)) => s.as_bytes().to_vec(),
                Raw::Json(v) => v.to_string().into_bytes(),
            };
            if bytes.len() > *len as usize {
                return Err(format!(
                    "the length of input is too long than schema. schema length: {len}, actual length: {}",
                    bytes.len()
                ));
            }
            Ok(Value::Bytes(bytes))
        }
        ColumnType::Array { element } => {
            let parsed;
            let items = match raw {
                Raw::Json(serde_json::Value::Array(a)) => a,
                _ => {
                    let t = raw.as_text();
                    parsed = serde_json::from_str::<serde_json::Value>(&t).map_err(|_| {
                        format!("convert string to ARRAY failed. input: '{}'", raw.display())
                    })?;
                    match &parsed {
                        serde_json::Value::Array(a) => a,
                        _ => {
                            return Err(format!(
                                "convert string to ARRAY failed. input: '{}'",
                                raw.display()
                            ))
                        }
                    }
                }
            };
            let mut out = Vec::with_capacity(items.len());
            for it in items {
                if it.is_null() {
                    out.push(Value::Null);
                } else {
                    out.push(convert(element, Raw::Json(it))?);
                }
            }
            Ok(Value::Array(out))
        }
    }
}

fn truncate_for_log(s: &str) -> String {
    if s.len() <= 100 {
        return s.to_string();
    }
    let mut end = 100;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

fn convert_bool(raw: Raw<'_>) -> Result<Value, String> {
    match raw {
        Raw::Json(serde_json::Value::Bool(b)) => return Ok(Value::Bool(*b)),
        Raw::Json(serde_json::Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                return Ok(Value::Bool(i != 0));
            }
            if let Some(f) = n.as_f64() {
                return Ok(Value::Bool(f != 0.0));
            }
        }
        _ => {}
    }
    let t = raw.as_text();
    let t = t.trim();
    if t.eq_ignore_ascii_case("true") {
        Ok(Value::Bool(true))
    } else if t.eq_ignore_ascii_case("false") {
        Ok(Value::Bool(false))
    } else if let Ok(i) = t.parse::<i64>() {
        Ok(Value::Bool(i != 0))
    } else {
        Err(format!(
            "convert string to BOOLEAN failed. input: '{}'",
            raw.display()
        ))
    }
}

fn convert_int(raw: Raw<'_>, min: i128, max: i128, ty: &ColumnType) -> Result<Value, String> {
    let parsed = match raw {
        Raw::Json(serde_json::Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Some(i128::from(i))
            } else if let Some(u) = n.as_u64() {
                Some(i128::from(u))
            } else {
                // A JSON number that is not an integer (or beyond u64): parse its text.
                n.to_string().parse::<i128>().ok()
            }
        }
        Raw::Json(serde_json::Value::Bool(b)) => Some(i128::from(*b)),
        _ => raw.as_text().trim().parse::<i128>().ok(),
    };
    match parsed {
        Some(i) if i >= min && i <= max => Ok(Value::Int(i)),
        Some(_) => Err(format!(
            "Value '{}' is out of range. The type of column is {}",
            raw.display(),
            ty.sql()
        )),
        None => Err(format!(
            "convert string to {} failed. input: '{}'",
            ty.data_type().to_uppercase(),
            raw.display()
        )),
    }
}

fn convert_decimal(raw: Raw<'_>, precision: u32, scale: u32) -> Result<Value, String> {
    let text = raw.as_text();
    let d = BigDecimal::from_str(text.trim()).map_err(|_| {
        format!(
            "convert string to DECIMAL failed. input: '{}'",
            raw.display()
        )
    })?;
    let normalized = d.normalized();
    let (digits, exp) = normalized.as_bigint_and_exponent();
    let frac_digits = exp.max(0) as u64;
    if frac_digits > u64::from(scale) {
        return Err(format!(
            "the frac part length longer than schema scale. input: '{}', schema: DECIMAL({precision}, {scale})",
            raw.display()
        ));
    }
    let total_digits = if digits == num_zero() {
        0
    } else {
        digits.magnitude().to_string().len() as i64
    };
    let int_digits = (total_digits - exp).max(0) as u64;
    if int_digits > u64::from(precision - scale) {
        return Err(format!(
            "the int part length longer than schema precision. input: '{}', schema: DECIMAL({precision}, {scale})",
            raw.display()
        ));
    }
    Ok(Value::Decimal(d.with_scale(i64::from(scale))))
}

fn num_zero() -> bigdecimal::num_bigint::BigInt {
    bigdecimal::num_bigint::BigInt::from(0)
}

/// Parses a DATE (`YYYY-MM-DD`, `YYYYMMDD`, or a DATETIME whose date part is taken).
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return in_range(d);
    }
    if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(d) = NaiveDate::parse_from_str(s, "%Y%m%d") {
            return in_range(d);
        }
    }
    parse_datetime(s).map(|dt| dt.date())
}

fn in_range(d: NaiveDate) -> Option<NaiveDate> {
    let min = NaiveDate::from_ymd_opt(0, 1, 1)?;
    let max = NaiveDate::from_ymd_opt(9999, 12, 31)?;
    (d >= min && d <= max).then_some(d)
}

/// Parses a DATETIME: `YYYY-MM-DD[ T]HH:MM[:SS[.fraction]]` or a bare date. Time-zone suffixes
/// are rejected; fractions beyond microseconds are truncated.
pub fn parse_datetime(s: &str) -> Option<NaiveDateTime> {
    let (date_part, time_part) = match s.find([' ', 'T']) {
        Some(i) => (&s[..i], Some(s[i + 1..].trim_start())),
        None => (s, None),
    };
    let date = NaiveDate::parse_from_str(date_part, "%Y-%m-%d").ok()?;
    let date = in_range(date)?;
    let Some(tp) = time_part else {
        return Some(date.and_time(NaiveTime::MIN));
    };
    let (hms, frac) = match tp.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (tp, None),
    };
    let parts: Vec<&str> = hms.split(':').collect();
    if parts.len() < 2 || parts.len() > 3 {
        return None;
    }
    let num = |p: &str| -> Option<u32> {
        if p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok()
    };
    let h = num(parts[0])?;
    let m = num(parts[1])?;
    let sec = if parts.len() == 3 { num(parts[2])? } else { 0 };
    let micros = match frac {
        None => 0,
        Some(f) => {
            if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let mut digits: String = f.chars().take(6).collect();
            while digits.len() < 6 {
                digits.push('0');
            }
            digits.parse::<u32>().ok()?
        }
    };
    let time = NaiveTime::from_hms_micro_opt(h, m, sec, micros)?;
    Some(date.and_time(time))
}

/// Renders a value for the load error log (`Row: ...`).
pub fn display_for_log(v: &Value, ty: &ColumnType) -> String {
    if let Some(h) = v.bytes_hex() {
        return h;
    }
    match v.to_text(ty) {
        Some(t) => String::from_utf8_lossy(&t).into_owned(),
        None => "NULL".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ints_range_and_strings() {
        assert_eq!(
            convert(&ColumnType::TinyInt, Raw::Json(&json!(127))),
            Ok(Value::Int(127))
        );
        assert!(convert(&ColumnType::TinyInt, Raw::Json(&json!(128))).is_err());
        assert_eq!(
            convert(&ColumnType::Int, Raw::Json(&json!("42"))),
            Ok(Value::Int(42))
        );
        assert!(convert(&ColumnType::Int, Raw::Text("4x")).is_err());
        assert!(convert(&ColumnType::Int, Raw::Json(&json!(1.5))).is_err());
        let big = "170141183460469231731687303715884105727";
        assert_eq!(
            convert(&ColumnType::LargeInt, Raw::Text(big)),
            Ok(Value::Int(i128::MAX))
        );
    }

    #[test]
    fn decimal_precision_and_scale() {
        let ty = ColumnType::Decimal {
            precision: 5,
            scale: 2,
        };
        let v = convert(&ty, Raw::Json(&json!("123.45"))).expect("fits");
        assert_eq!(v.to_text(&ty), Some(b"123.45".to_vec()));
        let v = convert(&ty, Raw::Json(&json!("1.5"))).expect("fits");
        assert_eq!(v.to_text(&ty), Some(b"1.50".to_vec()));
        assert!(
            convert(&ty, Raw::Text("1.500")).is_ok(),
            "trailing zeros fit"
        );
        let e = convert(&ty, Raw::Text("1234.5")).expect_err("int overflow");
        assert!(
            e.starts_with("the int part length longer than schema precision."),
            "{e}"
        );
        let e = convert(&ty, Raw::Text("1.234")).expect_err("scale overflow");
        assert!(
            e.starts_with("the frac part length longer than schema scale."),
            "{e}"
        );
        let ty38 = ColumnType::Decimal {
            precision: 38,
            scale: 10,
        };
        let s = "1234567890123456789012345678.0123456789";
        let v = convert(&ty38, Raw::Text(s)).expect("38 digits");
        assert_eq!(v.to_text(&ty38), Some(s.as_bytes().to_vec()));
    }

    #[test]
    fn varchar_counts_bytes() {
        let ty = ColumnType::Varchar { len: 4 };
        assert!(convert(&ty, Raw::Text("abcd")).is_ok());
        let e = convert(&ty, Raw::Text("éé€")).expect_err("7 bytes");
        assert!(e.starts_with("the length of input is too long than schema."));
    }

    #[test]
    fn datetimes() {
        let ty = ColumnType::DateTime;
        let v = convert(&ty, Raw::Text("2024-01-02 03:04:05.123456")).expect("ok");
        assert_eq!(v.to_text(&ty), Some(b"2024-01-02 03:04:05.123456".to_vec()));
        let v = convert(&ty, Raw::Text("2024-01-02T03:04")).expect("ok");
        assert_eq!(v.to_text(&ty), Some(b"2024-01-02 03:04:00".to_vec()));
        assert!(convert(&ty, Raw::Text("2024-01-02 03:04:05+02:00")).is_err());
        assert!(convert(&ty, Raw::Text("2024-13-02 03:04:05")).is_err());
        assert!(convert(&ColumnType::Date, Raw::Text("2024-02-30")).is_err());
        assert_eq!(
            convert(&ColumnType::Date, Raw::Text("2024-02-29")),
            Ok(Value::Date(
                NaiveDate::from_ymd_opt(2024, 2, 29).expect("date")
            ))
        );
    }

    #[test]
    fn json_array_binary() {
        let v = convert(&ColumnType::Json, Raw::Json(&json!({"a":[1,2]}))).expect("ok");
        assert_eq!(v, Value::Json(json!({"a":[1,2]})));
        let v = convert(&ColumnType::Json, Raw::Text("{\"a\":1}")).expect("ok");
        assert_eq!(v, Value::Json(json!({"a":1})));
        let arr = ColumnType::Array {
            element: Box::new(ColumnType::Int),
        };
        let v = convert(&arr, Raw::Json(&json!([1, null, 3]))).expect("ok");
        assert_eq!(v.to_json(&arr), json!([1, null, 3]));
        assert!(convert(&arr, Raw::Json(&json!(["x"]))).is_err());
        let bin = ColumnType::VarBinary { len: 4 };
        assert_eq!(
            convert(&bin, Raw::Text("00ff")),
            Ok(Value::Bytes(vec![0, 255]))
        );
        assert!(convert(&bin, Raw::Text("0a0b0c0d0e")).is_err());
    }

    #[test]
    fn type_names() {
        let d = ColumnType::Decimal {
            precision: 18,
            scale: 2,
        };
        assert_eq!(d.column_type(), "decimal(18,2)");
        assert_eq!(d.schema_type_name(), "DECIMAL64");
        assert_eq!(ColumnType::Int.column_type(), "int(11)");
        assert_eq!(ColumnType::String.column_type(), "varchar(65533)");
        let a = ColumnType::Array {
            element: Box::new(ColumnType::BigInt),
        };
        assert_eq!(a.column_type(), "array<bigint(20)>");
        assert_eq!(a.sql(), "ARRAY<BIGINT(20)>");
    }
}
