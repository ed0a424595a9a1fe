//! CSV bodies for Stream Load: every non-NULL field is enclosed in `"` with inner quotes
//! doubled (RFC 4180), NULL is a bare `\N`, so separators, newlines, quotes, backslashes
//! and a literal `\N` string all round-trip (review rule on CSV escaping). No `escape`
//! header is sent: with one, a bare `\N` would itself be unescaped.

/// `column_separator` header value.
pub const COLUMN_SEPARATOR_HEADER: &str = ",";
/// Column separator bytes.
pub const COLUMN_SEPARATOR: u8 = b',';
/// Row delimiter (StarRocks's default `\n`, so no header is needed).
pub const ROW_DELIMITER: u8 = b'\n';
/// `enclose` header value.
pub const ENCLOSE: char = '"';

/// Appends one row. `None` fields are NULL.
pub fn write_row<S: AsRef<str>>(fields: &[Option<S>], out: &mut Vec<u8>) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(COLUMN_SEPARATOR);
        }
        match f {
            None => out.extend_from_slice(b"\\N"),
            Some(v) => {
                out.push(b'"');
                for b in v.as_ref().bytes() {
                    if b == b'"' {
                        out.push(b'"');
                    }
                    out.push(b);
                }
                out.push(b'"');
            }
        }
    }
    out.push(ROW_DELIMITER);
}

/// Parses a body written by [`write_row`] (for tests and inspection): RFC 4180 with
/// `\N` = NULL outside quotes.
pub fn parse(body: &[u8]) -> Result<Vec<Vec<Option<String>>>, String> {
    let mut rows = Vec::new();
    let mut row: Vec<Option<String>> = Vec::new();
    let mut i = 0;
    if body.is_empty() {
        return Ok(rows);
    }
    loop {
        // One field.
        if body.get(i) == Some(&b'"') {
            i += 1;
            let mut v = Vec::new();
            loop {
                match body.get(i) {
                    Some(b'"') if body.get(i + 1) == Some(&b'"') => {
                        v.push(b'"');
                        i += 2;
                    }
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b) => {
                        v.push(*b);
                        i += 1;
                    }
                    None => return Err("unterminated quoted field".into()),
                }
            }
            row.push(Some(String::from_utf8(v).map_err(|e| e.to_string())?));
        } else {
            let start = i;
            while let Some(b) = body.get(i) {
                if *b == COLUMN_SEPARATOR || *b == ROW_DELIMITER {
                    break;
                }
                i += 1;
            }
            let raw = &body[start..i];
            if raw == b"\\N" {
                row.push(None);
            } else {
                row.push(Some(
                    String::from_utf8(raw.to_vec()).map_err(|e| e.to_string())?,
                ));
            }
        }
        match body.get(i) {
            Some(&COLUMN_SEPARATOR) => i += 1,
            Some(&ROW_DELIMITER) => {
                i += 1;
                rows.push(std::mem::take(&mut row));
                if i == body.len() {
                    return Ok(rows);
                }
            }
            None => {
                rows.push(std::mem::take(&mut row));
                return Ok(rows);
            }
            Some(_) => return Err(format!("unexpected byte at {i}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn edge_values_round_trip() {
        let row: Vec<Option<String>> = vec![
            None,
            Some(String::new()),
            Some("\\N".into()),
            Some("a,b\nc\r\"d\"\t\\e".into()),
            Some("ünïcødé 🚀".into()),
            Some("\"".into()),
        ];
        let mut out = Vec::new();
        write_row(&row, &mut out);
        write_row(&row, &mut out);
        assert_eq!(parse(&out).unwrap(), vec![row.clone(), row]);
    }

    proptest! {
        #[test]
        fn any_rows_round_trip(rows in proptest::collection::vec(
            proptest::collection::vec(proptest::option::of(any::<String>()), 1..6), 0..6)) {
            let rows: Vec<Vec<Option<String>>> = rows
                .into_iter()
                .map(|r| r.into_iter().map(|f| f.map(|s| s.replace('\0', ""))).collect())
                .collect();
            let mut out = Vec::new();
            for r in &rows {
                write_row(r, &mut out);
            }
            prop_assert_eq!(parse(&out).unwrap(), rows);
        }
    }
}
