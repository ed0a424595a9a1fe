//! Fast loads (`DoubleConfig::fast_loads`): row counting without parsing rows, so the double
//! is not the bottleneck of a benchmark. Pure functions over the body bytes.
//! Invariant: the counts equal what the full parsers (`body::parse_json`, `body::parse_csv`)
//! return for every body they accept (strings, escapes, enclosed delimiters, empty lines,
//! skip_header included), because a client checks `NumberTotalRows` against what it sent.

use super::headers::PlanOptions;

/// Counts the rows of a JSON body: with `strip_outer_array`, the elements of each top-level
/// array; without it, the top-level objects. One pass, no allocation. Only the structure
/// is checked (balanced brackets, closed strings, the top-level kind); values inside rows
/// are not validated.
pub fn count_json_rows(data: &[u8], strip_outer_array: bool) -> Result<u64, String> {
    let mut rows = 0u64;
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    // Inside a top-level array: the next value at depth 1 starts a new element.
    let mut elem_start = false;
    for &b in data {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        if b.is_ascii_whitespace() {
            continue;
        }
        if depth == 0 {
            // A new top-level document.
            match (b, strip_outer_array) {
                (b'[', true) => {
                    depth = 1;
                    elem_start = true;
                }
                (b'{', false) => {
                    depth = 1;
                    rows += 1;
                }
                (_, true) => {
                    return Err("Failed to parse json as array. error: The JSON element does not have the requested type.".into())
                }
                (_, false) => {
                    return Err("Failed to iterate document stream as object. error: The JSON element does not have the requested type.".into())
                }
            }
            continue;
        }
        if depth == 1 && strip_outer_array {
            match b {
                b',' => {
                    elem_start = true;
                    continue;
                }
                b']' => {
                    depth = 0;
                    elem_start = false;
                    continue;
                }
                _ if elem_start => {
                    rows += 1;
                    elem_start = false;
                }
                _ => {}
            }
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth -= 1,
            _ => {}
        }
    }
    if depth != 0 || in_string {
        return Err("Failed to parse json. error: EOF while parsing".into());
    }
    Ok(rows)
}

/// Counts the rows of a CSV body the way `body::parse_csv` splits it: rows end at the
/// `row_delimiter` outside enclosed fields, empty lines are skipped, then `skip_header`
/// lines are dropped.
pub fn count_csv_rows(data: &[u8], o: &PlanOptions) -> u64 {
    let delim = o.row_delimiter.as_slice();
    let sep = o.column_separator.as_slice();
    let mut lines = 0u64;
    if o.enclose.is_none() && o.escape.is_none() {
        let mut start = 0usize;
        let mut i = 0usize;
        while i < data.len() {
            if !delim.is_empty() && data[i..].starts_with(delim) {
                if i > start {
                    lines += 1;
                }
                i += delim.len();
                start = i;
            } else {
                i += 1;
            }
        }
        if data.len() > start {
            lines += 1;
        }
        return lines.saturating_sub(o.skip_header as u64);
    }
    // The same state machine as parse_csv, keeping only what decides the row ends.
    let (enc, esc) = (o.enclose, o.escape);
    let mut i = 0usize;
    let mut line_start = 0usize;
    let mut field_empty = true;
    let mut in_quotes = false;
    while i <= data.len() {
        let at_end = i == data.len();
        if !at_end && in_quotes {
            let b = data[i];
            if Some(b) == esc && i + 1 < data.len() {
                i += 2;
                continue;
            }
            if Some(b) == enc {
                if i + 1 < data.len() && Some(data[i + 1]) == enc {
                    i += 2;
                    continue;
                }
                in_quotes = false;
            }
            i += 1;
            continue;
        }
        if at_end || (!delim.is_empty() && data[i..].starts_with(delim)) {
            if i > line_start {
                lines += 1;
            }
            if at_end {
                break;
            }
            i += delim.len();
            line_start = i;
            field_empty = true;
            continue;
        }
        if !sep.is_empty() && data[i..].starts_with(sep) {
            field_empty = true;
            i += sep.len();
            continue;
        }
        let b = data[i];
        if Some(b) == enc && field_empty {
            in_quotes = true;
            i += 1;
            continue;
        }
        field_empty = false;
        if Some(b) == esc && i + 1 < data.len() {
            i += 2;
            continue;
        }
        i += 1;
    }
    lines.saturating_sub(o.skip_header as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream_load::body::{parse_csv, parse_json};
    use crate::stream_load::headers::{parse_plan, Format};
    use crate::table::{ColumnDef, TableSchema};
    use crate::types::ColumnType;
    use hyper::HeaderMap;

    fn opts(pairs: &[(&str, &str)], format: Format) -> PlanOptions {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        let col = |n: &str| ColumnDef {
            name: n.into(),
            ty: ColumnType::String,
            nullable: true,
            default: None,
            comment: String::new(),
            is_key: false,
        };
        let schema = TableSchema {
            name: "t".into(),
            columns: vec![col("a"), col("b"), col("c")],
            key: vec![],
            distributed_by: vec![],
            buckets: None,
            properties: vec![],
            comment: String::new(),
        };
        parse_plan(&h, &schema, format).expect("plan")
    }

    /// A tiny deterministic generator (no test dependency needed).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[(self.next() as usize) % items.len()]
        }
    }

    const NASTY: &[&str] = &[
        "",
        "x",
        "{",
        "}",
        "[",
        "]",
        ",",
        "\\\"",
        "\\\\",
        "\\\"__op\\\":",
        "__op:1",
        "\\n",
        "é",
        " ",
    ];

    fn json_value(r: &mut Lcg, depth: u32) -> String {
        match r.next() % if depth > 2 { 4 } else { 6 } {
            0 => r.next().to_string(),
            1 => "null".into(),
            2 | 3 => {
                let parts: Vec<&str> = (0..r.next() % 4).map(|_| r.pick(NASTY)).collect();
                format!("\"{}\"", parts.concat())
            }
            4 => {
                let n = r.next() % 3;
                let items: Vec<String> = (0..n).map(|_| json_value(r, depth + 1)).collect();
                format!("[ {} ]", items.join(" , "))
            }
            _ => json_object(r, depth + 1),
        }
    }

    fn json_object(r: &mut Lcg, depth: u32) -> String {
        let n = r.next() % 4;
        let fields: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    "\"k{i}{}\":{}",
                    r.pick(&["", "\\\"}"]),
                    json_value(r, depth)
                )
            })
            .collect();
        format!("{{{}}}", fields.join(","))
    }

    #[test]
    fn json_counts_match_the_full_parser() {
        let mut r = Lcg(7);
        let strip = opts(
            &[("format", "json"), ("strip_outer_array", "true")],
            Format::Json,
        );
        let plain = opts(&[("format", "json")], Format::Json);
        for _ in 0..2000 {
            // Arrays of rows (objects, as dbmazz sends), several documents, whitespace.
            let docs = 1 + r.next() % 2;
            let body: Vec<String> = (0..docs)
                .map(|_| {
                    let n = r.next() % 5;
                    let rows: Vec<String> = (0..n).map(|_| json_object(&mut r, 0)).collect();
                    format!("[{}]\n", rows.join(",\n "))
                })
                .collect();
            let body = body.concat();
            let full = parse_json(body.as_bytes(), &strip)
                .unwrap_or_else(|e| panic!("{e}: {body}"))
                .len() as u64;
            assert_eq!(
                count_json_rows(body.as_bytes(), true),
                Ok(full),
                "body {body}"
            );
            // A stream of objects (NDJSON).
            let n = r.next() % 5;
            let body: String = (0..n).map(|_| json_object(&mut r, 0) + "\n").collect();
            let full = parse_json(body.as_bytes(), &plain).expect("valid").len() as u64;
            assert_eq!(
                count_json_rows(body.as_bytes(), false),
                Ok(full),
                "body {body}"
            );
        }
    }

    #[test]
    fn json_array_elements_of_any_kind_count() {
        assert_eq!(
            count_json_rows(b"[1, \"a,b\", [2,3], {}, null]", true),
            Ok(5)
        );
        assert_eq!(count_json_rows(b"[]", true), Ok(0));
        assert_eq!(count_json_rows(b"  ", true), Ok(0));
    }

    #[test]
    fn json_structure_errors_are_refused() {
        assert!(count_json_rows(b"[{\"a\":1}", true).is_err());
        assert!(count_json_rows(b"[{\"a\":\"1}]", true).is_err());
        assert!(count_json_rows(b"{\"a\":1}", true).is_err());
        assert!(count_json_rows(b"[{\"a\":1}]", false).is_err());
    }

    fn csv_field(r: &mut Lcg, enclose: bool) -> String {
        let parts: Vec<&str> = (0..r.next() % 4)
            .map(|_| r.pick(&["a", ",", "\n", "\"\"", "\\N", "é", " ", "\\", "\r\n"]))
            .collect();
        let text = parts.concat();
        if enclose && !r.next().is_multiple_of(3) {
            format!("\"{text}\"")
        } else {
            // Unenclosed: no row delimiters or separators inside.
            text.replace([',', '\n', '"', '\\'], "")
        }
    }

    #[test]
    fn csv_counts_match_the_full_parser() {
        let mut r = Lcg(11);
        let variants = [
            opts(&[("format", "csv"), ("column_separator", ",")], Format::Csv),
            opts(
                &[
                    ("format", "csv"),
                    ("column_separator", ","),
                    ("enclose", "\""),
                ],
                Format::Csv,
            ),
            opts(
                &[
                    ("format", "csv"),
                    ("column_separator", ","),
                    ("enclose", "\""),
                    ("escape", "\\"),
                    ("skip_header", "1"),
                ],
                Format::Csv,
            ),
            opts(
                &[
                    ("format", "csv"),
                    ("column_separator", "\\x01"),
                    ("row_delimiter", "\\x02\\x03"),
                ],
                Format::Csv,
            ),
        ];
        for (vi, o) in variants.iter().enumerate() {
            let enclose = o.enclose.is_some();
            for _ in 0..2000 {
                let lines = r.next() % 6;
                let mut body = String::new();
                for _ in 0..lines {
                    if r.next().is_multiple_of(5) {
                        // An empty line.
                    } else {
                        let fields: Vec<String> =
                            (0..3).map(|_| csv_field(&mut r, enclose)).collect();
                        body.push_str(&fields.join(","));
                    }
                    body.push('\n');
                }
                if r.next().is_multiple_of(2) {
                    body.pop();
                }
                let body = if vi == 3 {
                    body.replace(',', "\u{1}").replace('\n', "\u{2}\u{3}")
                } else {
                    body
                };
                let full = parse_csv(body.as_bytes(), o).len() as u64;
                assert_eq!(
                    count_csv_rows(body.as_bytes(), o),
                    full,
                    "variant {vi}, body {body:?}"
                );
            }
        }
    }
}
