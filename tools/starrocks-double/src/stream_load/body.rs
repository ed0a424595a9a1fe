//! Stream Load bodies: decompression, and parsing CSV (separators, `\N`, enclose/escape,
//! skip_header, trim_space) and JSON (object stream / NDJSON, strip_outer_array, json_root,
//! jsonpaths) into source rows.

use std::io::Read;

use super::headers::{Compression, PlanOptions};

/// Decompresses a body.
pub fn decompress(c: Compression, data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let res = match c {
        Compression::None => return Ok(data.to_vec()),
        Compression::Gzip => flate2::read::MultiGzDecoder::new(data).read_to_end(&mut out),
        Compression::Zlib => flate2::read::ZlibDecoder::new(data).read_to_end(&mut out),
        Compression::Deflate => {
            // Accept zlib-wrapped or raw deflate.
            match flate2::read::ZlibDecoder::new(data).read_to_end(&mut out) {
                Ok(n) => Ok(n),
                Err(_) => {
                    out.clear();
                    flate2::read::DeflateDecoder::new(data).read_to_end(&mut out)
                }
            }
        }
        Compression::Zstd => match ruzstd::decoding::StreamingDecoder::new(data) {
            Ok(mut d) => d.read_to_end(&mut out),
            Err(e) => return Err(format!("Failed to decompress zstd data: {e}")),
        },
        Compression::Lz4Frame => lz4_flex::frame::FrameDecoder::new(data).read_to_end(&mut out),
        Compression::NotImplemented(name) => {
            return Err(format!(
                "starrocks-double does not implement compression type: {name}"
            ))
        }
    };
    res.map_err(|e| format!("Failed to decompress data: {e}"))?;
    Ok(out)
}

/// A CSV field: None is `\N` (NULL).
pub type CsvField = Option<String>;

/// One parsed CSV line with its original text.
#[derive(Debug, Clone)]
pub struct CsvRow {
    /// Fields.
    pub fields: Vec<CsvField>,
    /// The line as received (for the error log).
    pub text: String,
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (from..=hay.len() - needle.len()).find(|&i| &hay[i..i + needle.len()] == needle)
}

/// Parses a CSV body.
pub fn parse_csv(data: &[u8], o: &PlanOptions) -> Vec<CsvRow> {
    let mut rows = Vec::new();
    if o.enclose.is_none() && o.escape.is_none() {
        let mut start = 0;
        let mut lines = Vec::new();
        while start < data.len() {
            match find(data, &o.row_delimiter, start) {
                Some(i) => {
                    lines.push(&data[start..i]);
                    start = i + o.row_delimiter.len();
                }
                None => {
                    lines.push(&data[start..]);
                    start = data.len();
                }
            }
        }
        for line in lines.into_iter().skip(o.skip_header) {
            if line.is_empty() {
                continue;
            }
            let mut fields = Vec::new();
            let mut s = 0;
            loop {
                match find(line, &o.column_separator, s) {
                    Some(i) => {
                        fields.push(&line[s..i]);
                        s = i + o.column_separator.len();
                    }
                    None => {
                        fields.push(&line[s..]);
                        break;
                    }
                }
            }
            rows.push(CsvRow {
                fields: fields
                    .into_iter()
                    .map(|f| field(&String::from_utf8_lossy(f), false, o.trim_space))
                    .collect(),
                text: String::from_utf8_lossy(line).into_owned(),
            });
        }
        return rows;
    }
    // State machine with enclose/escape.
    let enc = o.enclose;
    let esc = o.escape;
    let mut i = 0;
    let mut line_start = 0;
    let mut fields: Vec<CsvField> = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let mut enclosed = false;
    let mut in_quotes = false;
    let mut line_no = 0usize;
    let finish_field = |cur: &mut Vec<u8>, enclosed: &mut bool, fields: &mut Vec<CsvField>| {
        let s = String::from_utf8_lossy(cur).into_owned();
        fields.push(field(&s, *enclosed, o.trim_space));
        cur.clear();
        *enclosed = false;
    };
    while i <= data.len() {
        let at_end = i == data.len();
        if !at_end && in_quotes {
            let b = data[i];
            if Some(b) == esc && i + 1 < data.len() {
                cur.push(data[i + 1]);
                i += 2;
                continue;
            }
            if Some(b) == enc {
                if i + 1 < data.len() && Some(data[i + 1]) == enc {
                    cur.push(b);
                    i += 2;
                    continue;
                }
                in_quotes = false;
                i += 1;
                continue;
            }
            cur.push(b);
            i += 1;
            continue;
        }
        let is_row_end = at_end || data[i..].starts_with(&o.row_delimiter);
        if is_row_end {
            let line_has_content = i > line_start;
            if line_has_content {
                finish_field(&mut cur, &mut enclosed, &mut fields);
                if line_no >= o.skip_header {
                    rows.push(CsvRow {
                        fields: std::mem::take(&mut fields),
                        text: String::from_utf8_lossy(&data[line_start..i]).into_owned(),
                    });
                } else {
                    fields.clear();
                }
                line_no += 1;
            }
            if at_end {
                break;
            }
            i += o.row_delimiter.len();
            line_start = i;
            continue;
        }
        if data[i..].starts_with(&o.column_separator) {
            finish_field(&mut cur, &mut enclosed, &mut fields);
            i += o.column_separator.len();
            continue;
        }
        let b = data[i];
        if Some(b) == enc && cur.is_empty() {
            in_quotes = true;
            enclosed = true;
            i += 1;
            continue;
        }
        if Some(b) == esc && i + 1 < data.len() {
            cur.push(data[i + 1]);
            i += 2;
            continue;
        }
        cur.push(b);
        i += 1;
    }
    rows
}

fn field(s: &str, enclosed: bool, trim: bool) -> CsvField {
    let s = if trim { s.trim() } else { s };
    if !enclosed && s == "\\N" {
        None
    } else {
        Some(s.to_string())
    }
}

/// Evaluates a simple JsonPath (`$`, `$.a.b`, `$.a[0]`, `$["a"]`).
pub fn json_path<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    let p = path.trim();
    let rest = p.strip_prefix('$').unwrap_or(p);
    let mut cur = v;
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                let mut key = String::new();
                while let Some(&n) = chars.peek() {
                    if n == '.' || n == '[' {
                        break;
                    }
                    key.push(n);
                    chars.next();
                }
                cur = cur.get(key.as_str())?;
            }
            '[' => {
                let mut inner = String::new();
                for n in chars.by_ref() {
                    if n == ']' {
                        break;
                    }
                    inner.push(n);
                }
                let inner = inner.trim();
                if let Ok(idx) = inner.parse::<usize>() {
                    cur = cur.get(idx)?;
                } else {
                    let key = inner.trim_matches(|c| c == '"' || c == '\'');
                    cur = cur.get(key)?;
                }
            }
            _ => return None,
        }
    }
    Some(cur)
}

/// Parses a JSON body into its row objects (any JSON values; non-objects become error rows
/// later unless jsonpaths select from them).
pub fn parse_json(data: &[u8], o: &PlanOptions) -> Result<Vec<serde_json::Value>, String> {
    let docs: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(data)
        .into_iter::<serde_json::Value>()
        .collect::<Result<_, _>>()
        .map_err(|e| format!("Failed to parse json. error: {e}"))?;
    let mut rows = Vec::new();
    for doc in docs {
        let doc = match &o.json_root {
            Some(root) => json_path(&doc, root)
                .cloned()
                .ok_or_else(|| format!("JSON Root not found. json_root: {root}"))?,
            None => doc,
        };
        if o.strip_outer_array {
            match doc {
                serde_json::Value::Array(items) => rows.extend(items),
                _ => {
                    return Err(
                        "Failed to parse json as array. error: The JSON element does not have the requested type."
                            .into(),
                    )
                }
            }
        } else {
            match doc {
                serde_json::Value::Object(_) => rows.push(doc),
                _ => {
                    return Err("Failed to iterate document stream as object. error: The JSON element does not have the requested type.".into())
                }
            }
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream_load::headers::parse_plan;
    use crate::table::{ColumnDef, TableSchema};
    use crate::types::ColumnType;
    use hyper::HeaderMap;

    fn opts(pairs: &[(&str, &str)]) -> PlanOptions {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        let schema = TableSchema {
            name: "t".into(),
            columns: vec![ColumnDef {
                name: "a".into(),
                ty: ColumnType::Int,
                nullable: false,
                default: None,
                comment: String::new(),
                is_key: true,
            }],
            key: vec!["a".into()],
            distributed_by: vec![],
            buckets: None,
            properties: vec![],
            comment: String::new(),
        };
        parse_plan(&h, &schema, super::super::headers::Format::Csv).expect("plan")
    }

    #[test]
    fn csv_basic_and_null() {
        let o = opts(&[("column_separator", ",")]);
        let rows = parse_csv(b"1,a,\\N\n2,,x\n", &o);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0].fields,
            vec![Some("1".into()), Some("a".into()), None]
        );
        assert_eq!(rows[1].fields[1], Some(String::new()));
        let o = opts(&[
            ("column_separator", "\\x01"),
            ("row_delimiter", "\\x02"),
            ("skip_header", "1"),
        ]);
        let rows = parse_csv(b"h\x01h\x021\x01b\x02", &o);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].fields, vec![Some("1".into()), Some("b".into())]);
    }

    #[test]
    fn csv_enclose_escape() {
        let o = opts(&[
            ("column_separator", ","),
            ("enclose", "\""),
            ("escape", "\\"),
        ]);
        let rows = parse_csv(b"1,\"a,b\nc\",\"x\"\"y\"\n2,\\,z,\"\\N\"\n", &o);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].fields[1], Some("a,b\nc".into()));
        assert_eq!(rows[0].fields[2], Some("x\"y".into()));
        assert_eq!(rows[1].fields[1], Some(",z".into()));
        assert_eq!(
            rows[1].fields[2],
            Some("N".into()),
            "escape applies inside enclose"
        );
        let o = opts(&[("column_separator", ","), ("enclose", "'")]);
        let rows = parse_csv(b"1,'\\N',\\N\n", &o);
        assert_eq!(
            rows[0].fields[1],
            Some("\\N".into()),
            "enclosed \\N is a string"
        );
        assert_eq!(rows[0].fields[2], None, "bare \\N is NULL");
    }

    #[test]
    fn json_shapes() {
        let o = opts(&[]);
        let rows = parse_json(b"{\"a\":1}\n{\"a\":2} {\"a\":3}", &o).expect("ndjson");
        assert_eq!(rows.len(), 3);
        let e = parse_json(b"[{\"a\":1}]", &o).expect_err("array without strip");
        assert_eq!(e, "Failed to iterate document stream as object. error: The JSON element does not have the requested type.");
        let o = opts(&[("strip_outer_array", "TRUE")]);
        assert_eq!(
            parse_json(b"[{\"a\":1},{\"a\":2}]", &o).expect("arr").len(),
            2
        );
        let v: serde_json::Value = serde_json::json!({"a":{"b":[10,20]}});
        assert_eq!(json_path(&v, "$.a.b[1]"), Some(&serde_json::json!(20)));
        assert_eq!(json_path(&v, "$.x"), None);
    }

    #[test]
    fn decompression() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"hello").expect("write");
        let data = gz.finish().expect("finish");
        assert_eq!(decompress(Compression::Gzip, &data).expect("gz"), b"hello");
        let lz = {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(b"hello").expect("write");
            e.finish().expect("finish")
        };
        assert_eq!(
            decompress(Compression::Lz4Frame, &lz).expect("lz4"),
            b"hello"
        );
        assert!(decompress(Compression::Gzip, b"nope").is_err());
    }
}
