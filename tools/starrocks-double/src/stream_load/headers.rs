//! Stream Load request headers: parsing and validation with StarRocks's messages. Early
//! checks (before begin-txn, `TxnId` -1) and plan checks (after begin, rolled back) are
//! separate, as in the BE/FE. Unknown headers are ignored.

use hyper::HeaderMap;

use crate::table::TableSchema;
use crate::types::ColumnType;

/// Data format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// CSV.
    Csv,
    /// JSON.
    Json,
}

/// Payload compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// NO_COMPRESSION
    None,
    /// GZIP
    Gzip,
    /// DEFLATE
    Deflate,
    /// ZLIB
    Zlib,
    /// ZSTD
    Zstd,
    /// LZ4_FRAME
    Lz4Frame,
    /// LZ4 (block), SNAPPY, BZIP2: known to StarRocks, not implemented by the double.
    NotImplemented(&'static str),
}

impl Compression {
    /// Parses a compression name as `CompressionUtils.findTCompressionByName` does.
    pub fn from_name(name: &str) -> Option<Compression> {
        Some(match name.trim().to_ascii_uppercase().as_str() {
            "NO_COMPRESSION" => Compression::None,
            "GZIP" => Compression::Gzip,
            "DEFLATE" => Compression::Deflate,
            "ZLIB" => Compression::Zlib,
            "ZSTD" => Compression::Zstd,
            "LZ4_FRAME" => Compression::Lz4Frame,
            "LZ4" => Compression::NotImplemented("LZ4"),
            "SNAPPY" => Compression::NotImplemented("SNAPPY"),
            "BZIP2" => Compression::NotImplemented("BZIP2"),
            _ => return None,
        })
    }
}

/// Options checked before begin-txn.
#[derive(Debug, Clone)]
pub struct EarlyOptions {
    /// Format.
    pub format: Format,
    /// Compression implied by a compressed-CSV `format` (gzip, lz4, ...).
    pub format_compression: Option<Compression>,
    /// Transaction timeout.
    pub timeout_secs: u64,
    /// `ignore_json_size`.
    pub ignore_json_size: bool,
}

/// A value of a `columns` mapping expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Another (source) column.
    Column(String),
    /// A constant.
    Literal(String),
}

/// One item of the `columns` header.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnItem {
    /// Name (source column, or mapping destination).
    pub name: String,
    /// `name = expr`.
    pub expr: Option<Expr>,
}

/// Options checked after begin-txn.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// `columns`.
    pub columns: Option<Vec<ColumnItem>>,
    /// `jsonpaths`.
    pub jsonpaths: Option<Vec<String>>,
    /// `json_root`.
    pub json_root: Option<String>,
    /// `strip_outer_array`.
    pub strip_outer_array: bool,
    /// `max_filter_ratio`.
    pub max_filter_ratio: f64,
    /// `strict_mode`.
    pub strict_mode: bool,
    /// `partial_update`.
    pub partial_update: bool,
    /// `partial_update_mode` (row, column, auto; unknown → row).
    pub partial_update_mode: String,
    /// Index of the `merge_condition` column.
    pub merge_condition: Option<usize>,
    /// `column_separator`.
    pub column_separator: Vec<u8>,
    /// `row_delimiter`.
    pub row_delimiter: Vec<u8>,
    /// `skip_header`.
    pub skip_header: usize,
    /// `trim_space`.
    pub trim_space: bool,
    /// `enclose` (first byte).
    pub enclose: Option<u8>,
    /// `escape` (first byte).
    pub escape: Option<u8>,
    /// `compression` / `Content-Encoding`.
    pub compression: Option<Compression>,
}

/// A header value as text (None if absent or not UTF-8).
pub fn get<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn parse_bool(v: &str) -> Option<bool> {
    if v.trim().eq_ignore_ascii_case("true") {
        Some(true)
    } else if v.trim().eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Parses the headers the BE checks before beginning the transaction.
pub fn parse_early(h: &HeaderMap) -> Result<EarlyOptions, String> {
    let (format, format_compression) = match get(h, "format") {
        None => (Format::Csv, None),
        Some(f) => match f.trim().to_ascii_lowercase().as_str() {
            "" | "csv" => (Format::Csv, None),
            "json" => (Format::Json, None),
            "gzip" => (Format::Csv, Some(Compression::Gzip)),
            "deflate" => (Format::Csv, Some(Compression::Deflate)),
            "zstd" => (Format::Csv, Some(Compression::Zstd)),
            "lz4" => (Format::Csv, Some(Compression::Lz4Frame)),
            "bzip2" => (Format::Csv, Some(Compression::NotImplemented("BZIP2"))),
            _ => return Err(format!("unknown data format, format={f}")),
        },
    };
    let ignore_json_size = get(h, "ignore_json_size")
        .and_then(parse_bool)
        .unwrap_or(false);
    let timeout_secs = match get(h, "timeout") {
        None => 600,
        Some(t) => {
            let n: u64 = t
                .trim()
                .parse()
                .map_err(|_| "Invalid timeout format".to_string())?;
            if !(1..=259_200).contains(&n) {
                return Err(
                    "Invalid timeout. Timeout should between 1 and 259200 seconds".to_string(),
                );
            }
            n
        }
    };
    Ok(EarlyOptions {
        format,
        format_compression,
        timeout_secs,
        ignore_json_size,
    })
}

/// Parses `\xHH..` hex separators or takes the value's bytes.
fn parse_separator(v: &str) -> Result<Vec<u8>, String> {
    let bytes = if let Some(hex) = v.strip_prefix("\\x").or_else(|| v.strip_prefix("\\X")) {
        if !hex.is_empty() && hex.len() % 2 == 0 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|e| e.to_string()))
                .collect::<Result<Vec<u8>, String>>()?
        } else {
            v.as_bytes().to_vec()
        }
    } else {
        v.as_bytes().to_vec()
    };
    if bytes.is_empty() || bytes.len() > 50 {
        return Err(format!(
            "column separator or row delimiter length must be between 1 and 50 bytes, but got: {v}"
        ));
    }
    Ok(bytes)
}

fn unquote_ident(s: &str) -> String {
    let t = s.trim();
    t.strip_prefix('`')
        .and_then(|x| x.strip_suffix('`'))
        .unwrap_or(t)
        .to_string()
}

/// Splits on top-level commas (outside quotes, back-quotes and parentheses).
fn split_top(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match quote {
            Some(q) => {
                cur.push(c);
                if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' | '`' => {
                    quote = Some(c);
                    cur.push(c);
                }
                '(' => {
                    depth += 1;
                    cur.push(c);
                }
                ')' => {
                    depth -= 1;
                    cur.push(c);
                }
                ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
                _ => cur.push(c),
            },
        }
    }
    out.push(cur);
    out
}

/// Parses the `columns` header.
pub fn parse_columns(v: &str) -> Result<Vec<ColumnItem>, String> {
    let mut items = Vec::new();
    for part in split_top(v) {
        let part = part.trim();
        if part.is_empty() {
            return Err("parse columns header failed".into());
        }
        let eq = {
            let mut quote = None;
            let mut found = None;
            for (i, c) in part.char_indices() {
                match quote {
                    Some(q) if c == q => quote = None,
                    Some(_) => {}
                    None if c == '\'' || c == '"' || c == '`' => quote = Some(c),
                    None if c == '=' => {
                        found = Some(i);
                        break;
                    }
                    None => {}
                }
            }
            found
        };
        match eq {
            None => items.push(ColumnItem {
                name: unquote_ident(part),
                expr: None,
            }),
            Some(i) => {
                let name = unquote_ident(&part[..i]);
                let e = part[i + 1..].trim();
                let expr = if (e.starts_with('\'') && e.ends_with('\'') && e.len() >= 2)
                    || (e.starts_with('"') && e.ends_with('"') && e.len() >= 2)
                {
                    Expr::Literal(e[1..e.len() - 1].to_string())
                } else if e.parse::<f64>().is_ok() {
                    Expr::Literal(e.to_string())
                } else if e.starts_with('`')
                    || (!e.is_empty() && e.chars().all(|c| c.is_alphanumeric() || c == '_'))
                {
                    Expr::Column(unquote_ident(e))
                } else {
                    return Err(format!(
                        "starrocks-double does not emulate the column expression: {e}"
                    ));
                };
                items.push(ColumnItem {
                    name,
                    expr: Some(expr),
                });
            }
        }
    }
    Ok(items)
}

/// Parses the headers checked after begin-txn (rolled back on error), against the schema.
pub fn parse_plan(
    h: &HeaderMap,
    schema: &TableSchema,
    format: Format,
) -> Result<PlanOptions, String> {
    let strict_mode = match get(h, "strict_mode") {
        None => false,
        Some(v) => parse_bool(v)
            .ok_or_else(|| "Invalid strict mode format. Must be bool type".to_string())?,
    };
    let partial_update = match get(h, "partial_update") {
        None => false,
        Some(v) => parse_bool(v)
            .ok_or_else(|| "Invalid partial update flag format. Must be bool type".to_string())?,
    };
    let partial_update_mode = match get(h, "partial_update_mode") {
        Some(m @ ("row" | "column" | "auto")) => m.to_string(),
        _ => "row".to_string(),
    };
    if let Some(v) = get(h, "load_mem_limit") {
        let n: i64 = v
            .trim()
            .parse()
            .map_err(|_| "Invalid load mem limit format".to_string())?;
        if n < 0 {
            return Err("load_mem_limit must be equal or greater than 0".into());
        }
    }
    let skip_header = match get(h, "skip_header") {
        None => 0,
        Some(v) => {
            let n: i64 = v
                .trim()
                .parse()
                .map_err(|_| "Invalid csv load skip_header format".to_string())?;
            if n < 0 {
                return Err("skip_header must be equal or greater than 0".into());
            }
            n as usize
        }
    };
    let trim_space = match get(h, "trim_space") {
        None => false,
        Some(v) => parse_bool(v)
            .ok_or_else(|| "Invalid trim space format. Must be bool type".to_string())?,
    };
    let enclose = get(h, "enclose").and_then(|v| v.bytes().next());
    let escape = get(h, "escape").and_then(|v| v.bytes().next());
    let strip_outer_array = get(h, "strip_outer_array")
        .map(|v| v.trim().eq_ignore_ascii_case("true"))
        .unwrap_or(false);
    // strtod semantics: garbage becomes 0.
    let max_filter_ratio = get(h, "max_filter_ratio")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    let compression = match (get(h, "content-encoding"), get(h, "compression")) {
        (Some(_), Some(_)) => {
            return Err(
                "Only one of http header content-encoding and compression can be set".into(),
            )
        }
        (Some(c), None) | (None, Some(c)) => Some(
            Compression::from_name(c)
                .ok_or_else(|| format!("Unsupported compression type: {c}"))?,
        ),
        (None, None) => None,
    };
    if get(h, "negative").map(|v| v == "true").unwrap_or(false) {
        return Err("Primary key table does not support negative load".into());
    }
    if get(h, "partitions").is_some() && get(h, "temporary_partitions").is_some() {
        return Err("Can not specify both partitions and temporary partitions".into());
    }
    for unsupported in ["where", "envelope", "partitions", "temporary_partitions"] {
        if get(h, unsupported).is_some() {
            return Err(format!(
                "starrocks-double does not emulate the '{unsupported}' header"
            ));
        }
    }
    if get(h, "enable_merge_commit").and_then(parse_bool) == Some(true) {
        return Err("starrocks-double does not emulate merge commit".into());
    }
    let column_separator = match get(h, "column_separator") {
        Some(v) => parse_separator(v)?,
        None => b"\t".to_vec(),
    };
    let row_delimiter = match get(h, "row_delimiter") {
        Some(v) => parse_separator(v)?,
        None => b"\n".to_vec(),
    };
    let jsonpaths = match get(h, "jsonpaths") {
        None => None,
        Some(v) => Some(
            serde_json::from_str::<Vec<String>>(v)
                .map_err(|e| format!("Invalid jsonpaths: {v}. error: {e}"))?,
        ),
    };
    let json_root = get(h, "json_root")
        .filter(|v| !v.is_empty())
        .map(str::to_string);

    // FE-plan checks against the schema.
    let columns = match get(h, "columns") {
        None => None,
        Some(v) if v.trim().is_empty() => None,
        Some(v) => Some(parse_columns(v)?),
    };
    if let Some(items) = &columns {
        let mut names = std::collections::HashSet::new();
        let mut dests = std::collections::HashSet::new();
        for it in items {
            if it.expr.is_none() {
                if !names.insert(it.name.to_lowercase()) {
                    return Err(format!("Duplicate column: {}", it.name));
                }
            } else {
                if !dests.insert(it.name.to_lowercase()) {
                    return Err(format!("Duplicate column mapping: {}", it.name));
                }
                if !it.name.eq_ignore_ascii_case("__op") && schema.index_of(&it.name).is_none() {
                    return Err(format!(
                        "Mapping column is not in table. column: {}",
                        it.name
                    ));
                }
            }
        }
        if !partial_update {
            for c in &schema.columns {
                let listed = items.iter().any(|i| i.name.eq_ignore_ascii_case(&c.name));
                if !listed && !c.nullable && c.default.is_none() {
                    return Err(format!("Column has no default value. column: {}", c.name));
                }
            }
        }
    }
    let listed = |name: &str| -> bool {
        match &columns {
            None => true,
            Some(items) => items.iter().any(|i| i.name.eq_ignore_ascii_case(name)),
        }
    };
    if partial_update {
        for k in &schema.key {
            if !listed(k) {
                return Err(format!("key column {k} not in partial update columns"));
            }
        }
    }
    let merge_condition = match get(h, "merge_condition")
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        None => None,
        Some(mc) => {
            let idx = schema
                .index_of(mc)
                .filter(|_| !partial_update || listed(mc));
            let Some(idx) = idx else {
                return Err(format!(
                    "Merge condition column {mc} does not exist. If you are doing partial update with condition update, please check condition column is in the given update columns. Otherwise please check condition column is in table {}",
                    schema.name
                ));
            };
            let col = &schema.columns[idx];
            if col.is_key {
                return Err(format!(
                    "Merge condition column {mc} should not be primary key!"
                ));
            }
            if !col.ty.can_be_merge_condition() {
                return Err(
                    "Merge condition column has invalid type maybe bitmap/hll/percentile/json/varchar!"
                        .into(),
                );
            }
            Some(idx)
        }
    };
    let _ = (format, ColumnType::Int);
    Ok(PlanOptions {
        columns,
        jsonpaths,
        json_root,
        strip_outer_array,
        max_filter_ratio,
        strict_mode,
        partial_update,
        partial_update_mode,
        merge_condition,
        column_separator,
        row_delimiter,
        skip_header,
        trim_space,
        enclose,
        escape,
        compression,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_header() {
        let items = parse_columns("`a`, b ,tmp,__op=tmp, c='x', d = 1").expect("parse");
        assert_eq!(items[0].name, "a");
        assert_eq!(items[1].name, "b");
        assert_eq!(items[3].expr, Some(Expr::Column("tmp".into())));
        assert_eq!(items[4].expr, Some(Expr::Literal("x".into())));
        assert_eq!(items[5].expr, Some(Expr::Literal("1".into())));
        assert!(parse_columns("a,,b").is_err());
        assert!(parse_columns("a=upper(b)").is_err());
    }

    #[test]
    fn separators() {
        assert_eq!(parse_separator("\\x01").expect("hex"), vec![1]);
        assert_eq!(parse_separator("\\x0D0A").expect("hex"), vec![13, 10]);
        assert_eq!(parse_separator("||").expect("raw"), b"||".to_vec());
    }

    #[test]
    fn early() {
        let mut h = HeaderMap::new();
        h.insert("format", "JSON".parse().expect("hv"));
        assert_eq!(parse_early(&h).expect("ok").format, Format::Json);
        h.insert("format", "parquet".parse().expect("hv"));
        assert_eq!(
            parse_early(&h).expect_err("bad"),
            "unknown data format, format=parquet"
        );
        h.insert("format", "csv".parse().expect("hv"));
        h.insert("timeout", "abc".parse().expect("hv"));
        assert_eq!(parse_early(&h).expect_err("bad"), "Invalid timeout format");
        h.insert("timeout", "0".parse().expect("hv"));
        assert!(parse_early(&h)
            .expect_err("bad")
            .starts_with("Invalid timeout. Timeout should between 1 and 259200"));
    }
}
