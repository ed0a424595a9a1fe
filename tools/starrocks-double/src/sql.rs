//! The SQL subset the FE's MySQL port (and the control endpoint) accepts: a tokenizer, a
//! parser for exactly the statement shapes dbmazz, its tests and the demo use, and their
//! execution against the catalog. Anything else is a MySQL error, never a panic.

use crate::state::{Catalog, Shared};
use crate::table::{ColumnDef, Table, TableSchema};
use crate::types::{convert, ColumnType, Raw, Value};

/// A SQL error (MySQL code + message).
#[derive(Debug, Clone, PartialEq)]
pub struct SqlError {
    /// MySQL error code.
    pub code: u16,
    /// Message.
    pub message: String,
}

fn err(code: u16, message: impl Into<String>) -> SqlError {
    SqlError {
        code,
        message: message.into(),
    }
}

/// Parse error (ER_PARSE_ERROR).
fn parse_err(message: impl Into<String>) -> SqlError {
    err(1064, message)
}

/// The result of a statement.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlOutput {
    /// A result set.
    Rows {
        /// Column names and types.
        columns: Vec<(String, ColumnType)>,
        /// Cells in text form (None = NULL).
        rows: Vec<Vec<Option<Vec<u8>>>>,
    },
    /// OK packet.
    Ok {
        /// Affected rows.
        affected: u64,
    },
}

impl SqlOutput {
    /// Rows as strings (for the control endpoint and tests).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            SqlOutput::Ok { affected } => serde_json::json!({"affected_rows": affected}),
            SqlOutput::Rows { columns, rows } => serde_json::json!({
                "columns": columns.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
                "rows": rows.iter().map(|r| r.iter().map(|c| match c {
                    Some(b) => serde_json::Value::String(String::from_utf8_lossy(b).into_owned()),
                    None => serde_json::Value::Null,
                }).collect::<Vec<_>>()).collect::<Vec<_>>(),
            }),
        }
    }
}

/// Per-connection session state.
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// Current database (USE).
    pub db: Option<String>,
    /// Connection id.
    pub connection_id: u32,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Str(String),
    Num(String),
    Var(String),
    Sym(char),
    Op(String),
}

fn tokenize(sql: &str) -> Result<Vec<Tok>, SqlError> {
    let chars: Vec<char> = sql.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '`' {
            let mut s = String::new();
            i += 1;
            while i < chars.len() && chars[i] != '`' {
                s.push(chars[i]);
                i += 1;
            }
            if i >= chars.len() {
                return Err(parse_err("unterminated quoted identifier"));
            }
            i += 1;
            out.push(Tok::Quoted(s));
        } else if c == '\'' || c == '"' {
            let q = c;
            let mut s = String::new();
            i += 1;
            loop {
                if i >= chars.len() {
                    return Err(parse_err("unterminated string literal"));
                }
                let d = chars[i];
                if d == '\\' && i + 1 < chars.len() {
                    let e = chars[i + 1];
                    s.push(match e {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        '0' => '\0',
                        other => other,
                    });
                    i += 2;
                } else if d == q && chars.get(i + 1) == Some(&q) {
                    s.push(q);
                    i += 2;
                } else if d == q {
                    i += 1;
                    break;
                } else {
                    s.push(d);
                    i += 1;
                }
            }
            out.push(Tok::Str(s));
        } else if c.is_ascii_digit()
            || (c == '-'
                && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())
                && matches!(
                    out.last(),
                    Some(Tok::Op(_))
                        | Some(Tok::Sym('('))
                        | Some(Tok::Sym(','))
                        | None
                        | Some(Tok::Word(_))
                ))
        {
            let mut s = String::new();
            s.push(c);
            i += 1;
            while i < chars.len()
                && (chars[i].is_ascii_digit()
                    || chars[i] == '.'
                    || chars[i] == 'e'
                    || chars[i] == 'E')
            {
                s.push(chars[i]);
                i += 1;
            }
            out.push(Tok::Num(s));
        } else if c == '@' {
            let mut s = String::new();
            while i < chars.len() && chars[i] == '@' {
                i += 1;
            }
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.')
            {
                s.push(chars[i]);
                i += 1;
            }
            out.push(Tok::Var(s));
        } else if c.is_alphanumeric() || c == '_' || c == '$' {
            let mut s = String::new();
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
            {
                s.push(chars[i]);
                i += 1;
            }
            out.push(Tok::Word(s));
        } else if matches!(c, '<' | '>' | '!' | '=') {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            if matches!(two.as_str(), "<=" | ">=" | "!=" | "<>") {
                out.push(Tok::Op(two));
                i += 2;
            } else {
                out.push(Tok::Op(c.to_string()));
                i += 1;
            }
        } else {
            out.push(Tok::Sym(c));
            i += 1;
        }
    }
    while matches!(out.last(), Some(Tok::Sym(';'))) {
        out.pop();
    }
    Ok(out)
}

struct P {
    t: Vec<Tok>,
    i: usize,
}

impl P {
    fn peek(&self) -> Option<&Tok> {
        self.t.get(self.i)
    }
    fn peek_kw(&self, k: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(k))
    }
    fn kw(&mut self, k: &str) -> bool {
        if self.peek_kw(k) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn kws(&mut self, ks: &[&str]) -> bool {
        let save = self.i;
        for k in ks {
            if !self.kw(k) {
                self.i = save;
                return false;
            }
        }
        true
    }
    fn expect_kw(&mut self, k: &str) -> Result<(), SqlError> {
        if self.kw(k) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("expected {k}")))
        }
    }
    fn sym(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Sym(c)) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn op(&mut self, o: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Op(x)) if x == o) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect_sym(&mut self, c: char) -> Result<(), SqlError> {
        if self.sym(c) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("expected '{c}'")))
        }
    }
    fn unexpected(&self, what: &str) -> SqlError {
        let near = match self.peek() {
            Some(t) => format!("{t:?}"),
            None => "end of statement".into(),
        };
        parse_err(format!("Getting syntax error: {what}, near {near}"))
    }
    fn ident(&mut self) -> Result<String, SqlError> {
        match self.peek().cloned() {
            Some(Tok::Word(w)) | Some(Tok::Quoted(w)) => {
                self.i += 1;
                Ok(w)
            }
            _ => Err(self.unexpected("expected an identifier")),
        }
    }
    /// `[db.]name`
    fn qualified(&mut self) -> Result<(Option<String>, String), SqlError> {
        let a = self.ident()?;
        if self.sym('.') {
            let b = self.ident()?;
            Ok((Some(a), b))
        } else {
            Ok((None, a))
        }
    }
    fn number(&mut self) -> Result<String, SqlError> {
        match self.peek().cloned() {
            Some(Tok::Num(n)) => {
                self.i += 1;
                Ok(n)
            }
            _ => Err(self.unexpected("expected a number")),
        }
    }
    fn string(&mut self) -> Result<String, SqlError> {
        match self.peek().cloned() {
            Some(Tok::Str(s)) => {
                self.i += 1;
                Ok(s)
            }
            _ => Err(self.unexpected("expected a string")),
        }
    }
    fn done(&self) -> Result<(), SqlError> {
        if self.i < self.t.len() {
            Err(self.unexpected("unexpected trailing input"))
        } else {
            Ok(())
        }
    }
    fn ident_list(&mut self) -> Result<Vec<String>, SqlError> {
        self.expect_sym('(')?;
        let mut v = vec![self.ident()?];
        while self.sym(',') {
            v.push(self.ident()?);
        }
        self.expect_sym(')')?;
        Ok(v)
    }
    /// Skips a balanced parenthesised group starting at '('.
    fn skip_group(&mut self) -> Result<(), SqlError> {
        self.expect_sym('(')?;
        let mut depth = 1;
        while depth > 0 {
            match self.peek() {
                None => return Err(self.unexpected("unbalanced parentheses")),
                Some(Tok::Sym('(')) => depth += 1,
                Some(Tok::Sym(')')) => depth -= 1,
                _ => {}
            }
            self.i += 1;
        }
        Ok(())
    }
}

fn parse_type(p: &mut P) -> Result<ColumnType, SqlError> {
    let name = p.ident()?.to_ascii_uppercase();
    let mut params = Vec::new();
    if name != "ARRAY" && p.sym('(') {
        loop {
            let n = p.number()?;
            params.push(
                n.parse::<u64>()
                    .map_err(|_| parse_err(format!("bad type parameter {n}")))?,
            );
            if !p.sym(',') {
                break;
            }
        }
        p.expect_sym(')')?;
    }
    let len = |default: u64| params.first().copied().unwrap_or(default);
    Ok(match name.as_str() {
        "BOOLEAN" | "BOOL" => ColumnType::Boolean,
        "TINYINT" => ColumnType::TinyInt,
        "SMALLINT" => ColumnType::SmallInt,
        "INT" | "INTEGER" => ColumnType::Int,
        "BIGINT" => ColumnType::BigInt,
        "LARGEINT" => ColumnType::LargeInt,
        "FLOAT" => ColumnType::Float,
        "DOUBLE" => ColumnType::Double,
        "DECIMAL" | "DECIMALV2" | "DECIMALV3" | "DECIMAL32" | "DECIMAL64" | "DECIMAL128"
        | "NUMERIC" => {
            let precision = len(10);
            let scale = params.get(1).copied().unwrap_or(0);
            if !(1..=38).contains(&precision) {
                return Err(err(
                    1064,
                    format!("DECIMAL's precision should range from 1 to 38, but got {precision}"),
                ));
            }
            if scale > precision {
                return Err(err(1064, format!("DECIMAL's scale should not be greater than precision, scale: {scale}, precision: {precision}")));
            }
            ColumnType::Decimal {
                precision: precision as u32,
                scale: scale as u32,
            }
        }
        "CHAR" => {
            let l = len(1);
            if !(1..=255).contains(&l) {
                return Err(err(
                    1064,
                    format!("Char size must between 1 and 255, but got {l}"),
                ));
            }
            ColumnType::Char { len: l as u32 }
        }
        "VARCHAR" => {
            let l = len(1);
            if !(1..=u64::from(crate::types::MAX_VARCHAR)).contains(&l) {
                return Err(err(
                    1064,
                    format!("VARCHAR size must between 1 and 1048576, but got {l}"),
                ));
            }
            ColumnType::Varchar { len: l as u32 }
        }
        "STRING" | "TEXT" => ColumnType::String,
        "DATE" => ColumnType::Date,
        "DATETIME" => ColumnType::DateTime,
        "JSON" => ColumnType::Json,
        "VARBINARY" | "BINARY" => ColumnType::VarBinary {
            len: len(1_048_576).min(1_048_576) as u32,
        },
        "ARRAY" => {
            if !p.op("<") {
                return Err(p.unexpected("expected '<' after ARRAY"));
            }
            let el = parse_type(p)?;
            if !p.op(">") {
                return Err(p.unexpected("expected '>' closing ARRAY"));
            }
            ColumnType::Array {
                element: Box::new(el),
            }
        }
        other => {
            return Err(err(
                1064,
                format!("starrocks-double does not support the type {other}"),
            ))
        }
    })
}

fn literal_text(p: &mut P) -> Result<String, SqlError> {
    match p.peek().cloned() {
        Some(Tok::Str(s)) | Some(Tok::Num(s)) => {
            p.i += 1;
            Ok(s)
        }
        Some(Tok::Word(w)) => {
            p.i += 1;
            if p.sym('(') {
                p.expect_sym(')')?;
            }
            Ok(w.to_ascii_uppercase())
        }
        _ => Err(p.unexpected("expected a literal")),
    }
}

fn parse_column_def(p: &mut P) -> Result<ColumnDef, SqlError> {
    let name = p.ident()?;
    let ty = parse_type(p)?;
    let mut col = ColumnDef {
        name,
        ty,
        nullable: true,
        default: None,
        comment: String::new(),
        is_key: false,
    };
    loop {
        if p.kws(&["NOT", "NULL"]) {
            col.nullable = false;
        } else if p.kw("NULL") {
            col.nullable = true;
        } else if p.kw("DEFAULT") {
            col.default = Some(literal_text(p)?);
        } else if p.kw("COMMENT") {
            col.comment = p.string()?;
        } else if p.kw("AUTO_INCREMENT") {
            return Err(err(
                1064,
                "starrocks-double does not emulate AUTO_INCREMENT columns",
            ));
        } else if p.kws(&["CHARACTER", "SET"]) || p.kw("CHARSET") {
            p.ident()?;
        } else if p.kw("KEY") {
            // Aggregate-model key markers are accepted and ignored.
        } else {
            break;
        }
    }
    Ok(col)
}

/// Parses a CREATE TABLE statement into (db, schema, if_not_exists).
fn parse_create_table(p: &mut P) -> Result<(Option<String>, TableSchema, bool), SqlError> {
    let if_not_exists = p.kws(&["IF", "NOT", "EXISTS"]);
    let (db, name) = p.qualified()?;
    p.expect_sym('(')?;
    let mut columns = Vec::new();
    let mut key: Vec<String> = Vec::new();
    loop {
        if p.kws(&["PRIMARY", "KEY"]) {
            key = p.ident_list()?;
        } else if p.peek_kw("INDEX") {
            p.i += 1;
            p.ident()?;
            p.skip_group()?;
            while !matches!(p.peek(), Some(Tok::Sym(',')) | Some(Tok::Sym(')')) | None) {
                p.i += 1;
            }
        } else {
            columns.push(parse_column_def(p)?);
        }
        if !p.sym(',') {
            break;
        }
    }
    p.expect_sym(')')?;
    let mut schema = TableSchema {
        name,
        columns,
        key,
        distributed_by: Vec::new(),
        buckets: None,
        properties: Vec::new(),
        comment: String::new(),
    };
    while p.peek().is_some() {
        if p.kw("ENGINE") {
            p.op("=");
            p.ident()?;
        } else if p.kws(&["PRIMARY", "KEY"]) {
            schema.key = p.ident_list()?;
        } else if p.kws(&["DUPLICATE", "KEY"])
            || p.kws(&["UNIQUE", "KEY"])
            || p.kws(&["AGGREGATE", "KEY"])
        {
            return Err(err(
                1064,
                "starrocks-double only emulates PRIMARY KEY tables",
            ));
        } else if p.kw("COMMENT") {
            schema.comment = p.string()?;
        } else if p.kws(&["PARTITION", "BY"]) {
            while p.peek().is_some()
                && !p.peek_kw("DISTRIBUTED")
                && !p.peek_kw("PROPERTIES")
                && !p.peek_kw("ORDER")
            {
                if p.peek() == Some(&Tok::Sym('(')) {
                    p.skip_group()?;
                } else {
                    p.i += 1;
                }
            }
        } else if p.kws(&["DISTRIBUTED", "BY"]) {
            if p.kw("HASH") {
                schema.distributed_by = p.ident_list()?;
            } else {
                p.expect_kw("RANDOM")?;
            }
            if p.kw("BUCKETS") {
                let n = p.number()?;
                schema.buckets = Some(
                    n.parse()
                        .map_err(|_| parse_err(format!("bad BUCKETS {n}")))?,
                );
            }
        } else if p.kws(&["ORDER", "BY"]) {
            p.ident_list()?;
        } else if p.kw("PROPERTIES") {
            p.expect_sym('(')?;
            loop {
                let k = p.string()?;
                if !p.op("=") {
                    return Err(p.unexpected("expected '='"));
                }
                let v = p.string()?;
                schema.properties.push((k, v));
                if !p.sym(',') {
                    break;
                }
            }
            p.expect_sym(')')?;
        } else {
            return Err(p.unexpected("unexpected clause in CREATE TABLE"));
        }
    }
    if schema.key.is_empty() {
        return Err(err(
            1064,
            "starrocks-double only emulates PRIMARY KEY tables: PRIMARY KEY(...) is required",
        ));
    }
    for k in schema.key.clone() {
        let Some(i) = schema.index_of(&k) else {
            return Err(err(1064, format!("Key column '{k}' does not exist")));
        };
        schema.columns[i].is_key = true;
        schema.columns[i].nullable = false;
    }
    schema.validate().map_err(|m| err(1064, m))?;
    Ok((db, schema, if_not_exists))
}

#[derive(Debug, Clone)]
enum SelItem {
    Star,
    Count(String),
    Col(String, String),
}

#[derive(Debug, Clone)]
enum Cond {
    Cmp(String, String, String),
    In(String, Vec<String>),
    IsNull(String, bool),
}

fn parse_conditions(p: &mut P) -> Result<Vec<Cond>, SqlError> {
    let mut conds = Vec::new();
    if !p.kw("WHERE") {
        return Ok(conds);
    }
    loop {
        let col = p.ident()?;
        if p.kw("IN") {
            p.expect_sym('(')?;
            let mut vals = vec![literal_text(p)?];
            while p.sym(',') {
                vals.push(literal_text(p)?);
            }
            p.expect_sym(')')?;
            conds.push(Cond::In(col, vals));
        } else if p.kw("IS") {
            let not = p.kw("NOT");
            p.expect_kw("NULL")?;
            conds.push(Cond::IsNull(col, !not));
        } else {
            let op = match p.peek().cloned() {
                Some(Tok::Op(o)) => {
                    p.i += 1;
                    o
                }
                _ => return Err(p.unexpected("expected a comparison")),
            };
            conds.push(Cond::Cmp(col, op, literal_text(p)?));
        }
        if !p.kw("AND") {
            break;
        }
    }
    Ok(conds)
}

/// A relation to select from.
struct Rel {
    columns: Vec<(String, ColumnType)>,
    rows: Vec<Vec<Value>>,
}

fn vs(s: &str) -> Value {
    Value::Str(s.to_string())
}

fn info_tables(cat: &Catalog) -> Rel {
    let s = ColumnType::String;
    let columns = [
        "TABLE_CATALOG",
        "TABLE_SCHEMA",
        "TABLE_NAME",
        "TABLE_TYPE",
        "ENGINE",
        "TABLE_ROWS",
        "TABLE_COMMENT",
    ]
    .iter()
    .map(|n| {
        (
            n.to_string(),
            if *n == "TABLE_ROWS" {
                ColumnType::BigInt
            } else {
                s.clone()
            },
        )
    })
    .collect();
    let mut rows = Vec::new();
    for (dbn, db) in &cat.dbs {
        for (tn, t) in &db.tables {
            rows.push(vec![
                vs("def"),
                vs(dbn),
                vs(tn),
                vs("BASE TABLE"),
                vs("StarRocks"),
                Value::Int(t.rows.len() as i128),
                vs(&t.schema.comment),
            ]);
        }
    }
    Rel { columns, rows }
}

fn info_columns(cat: &Catalog) -> Rel {
    let names = [
        "TABLE_CATALOG",
        "TABLE_SCHEMA",
        "TABLE_NAME",
        "COLUMN_NAME",
        "ORDINAL_POSITION",
        "COLUMN_DEFAULT",
        "IS_NULLABLE",
        "DATA_TYPE",
        "CHARACTER_MAXIMUM_LENGTH",
        "NUMERIC_PRECISION",
        "NUMERIC_SCALE",
        "COLUMN_TYPE",
        "COLUMN_KEY",
        "COLUMN_COMMENT",
    ];
    let int_cols = [
        "ORDINAL_POSITION",
        "CHARACTER_MAXIMUM_LENGTH",
        "NUMERIC_PRECISION",
        "NUMERIC_SCALE",
    ];
    let columns = names
        .iter()
        .map(|n| {
            (
                n.to_string(),
                if int_cols.contains(n) {
                    ColumnType::BigInt
                } else {
                    ColumnType::String
                },
            )
        })
        .collect();
    let mut rows = Vec::new();
    for (dbn, db) in &cat.dbs {
        for (tn, t) in &db.tables {
            for (i, c) in t.schema.columns.iter().enumerate() {
                let (clen, np, ns) = match &c.ty {
                    ColumnType::Char { len }
                    | ColumnType::Varchar { len }
                    | ColumnType::VarBinary { len } => {
                        (Value::Int(i128::from(*len)), Value::Null, Value::Null)
                    }
                    ColumnType::String => (
                        Value::Int(i128::from(crate::types::STRING_LEN)),
                        Value::Null,
                        Value::Null,
                    ),
                    ColumnType::Decimal { precision, scale } => (
                        Value::Null,
                        Value::Int(i128::from(*precision)),
                        Value::Int(i128::from(*scale)),
                    ),
                    ColumnType::TinyInt => (Value::Null, Value::Int(3), Value::Int(0)),
                    ColumnType::SmallInt => (Value::Null, Value::Int(5), Value::Int(0)),
                    ColumnType::Int => (Value::Null, Value::Int(10), Value::Int(0)),
                    ColumnType::BigInt => (Value::Null, Value::Int(19), Value::Int(0)),
                    ColumnType::LargeInt => (Value::Null, Value::Int(39), Value::Int(0)),
                    _ => (Value::Null, Value::Null, Value::Null),
                };
                rows.push(vec![
                    vs("def"),
                    vs(dbn),
                    vs(tn),
                    vs(&c.name),
                    Value::Int(i as i128 + 1),
                    c.default.as_deref().map(vs).unwrap_or(Value::Null),
                    vs(if c.nullable { "YES" } else { "NO" }),
                    vs(&c.ty.data_type()),
                    clen,
                    np,
                    ns,
                    vs(&c.ty.column_type()),
                    vs(if c.is_key { "PRI" } else { "" }),
                    vs(&c.comment),
                ]);
            }
        }
    }
    Rel { columns, rows }
}

fn table_rel(t: &Table) -> Rel {
    Rel {
        columns: t
            .schema
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.ty.clone()))
            .collect(),
        rows: t.rows.values().cloned().collect(),
    }
}

fn col_index(rel: &Rel, name: &str) -> Result<usize, SqlError> {
    rel.columns
        .iter()
        .position(|(n, _)| n.eq_ignore_ascii_case(name))
        .ok_or_else(|| err(1054, format!("Unknown column '{name}' in 'field list'")))
}

fn matches(rel: &Rel, row: &[Value], conds: &[Cond]) -> Result<bool, SqlError> {
    for c in conds {
        let ok = match c {
            Cond::IsNull(col, want_null) => row[col_index(rel, col)?].is_null() == *want_null,
            Cond::In(col, vals) => {
                let i = col_index(rel, col)?;
                let ty = &rel.columns[i].1;
                vals.iter().any(|v| {
                    convert(ty, Raw::Text(v))
                        .ok()
                        .and_then(|lit| row[i].compare(&lit))
                        == Some(std::cmp::Ordering::Equal)
                })
            }
            Cond::Cmp(col, op, v) => {
                let i = col_index(rel, col)?;
                let ty = &rel.columns[i].1;
                let lit = convert(ty, Raw::Text(v)).map_err(|m| err(1064, m))?;
                let ord = if row[i].is_null() {
                    None
                } else {
                    row[i].compare(&lit)
                };
                use std::cmp::Ordering::*;
                match (op.as_str(), ord) {
                    (_, None) => false,
                    ("=", Some(o)) => o == Equal,
                    ("!=" | "<>", Some(o)) => o != Equal,
                    ("<", Some(o)) => o == Less,
                    ("<=", Some(o)) => o != Greater,
                    (">", Some(o)) => o == Greater,
                    (">=", Some(o)) => o != Less,
                    _ => false,
                }
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn system_variable(name: &str, s: &Session) -> Result<(ColumnType, Value), SqlError> {
    let n = name.to_ascii_lowercase();
    let n = n
        .trim_start_matches("session.")
        .trim_start_matches("global.")
        .trim_start_matches("local.");
    let int = |i: i128| Ok((ColumnType::BigInt, Value::Int(i)));
    let st = |v: &str| Ok((ColumnType::String, Value::Str(v.to_string())));
    match n {
        "max_allowed_packet" => int(33_554_432),
        "wait_timeout" | "interactive_timeout" => int(28_800),
        "autocommit" => int(1),
        "auto_increment_increment" => int(1),
        "lower_case_table_names" => int(0),
        "net_write_timeout" | "net_read_timeout" => int(60),
        "query_cache_size" => int(1_048_576),
        "socket" => Ok((ColumnType::String, Value::Null)),
        "version" => st("8.0.33"),
        "version_comment" => st("StarRocks test double (starrocks-double)"),
        "sql_mode" => st("ONLY_FULL_GROUP_BY"),
        "time_zone" | "system_time_zone" => st("Asia/Shanghai"),
        "tx_isolation" | "transaction_isolation" => st("REPEATABLE-READ"),
        "character_set_client"
        | "character_set_connection"
        | "character_set_results"
        | "character_set_server" => st("utf8"),
        "collation_connection" | "collation_server" | "collation_database" => st("utf8_general_ci"),
        "license" => st("Apache License 2.0"),
        _ => {
            let _ = s;
            Err(err(1193, format!("Unknown system variable '{name}'")))
        }
    }
}

/// Executes one statement.
pub fn execute(shared: &Shared, session: &mut Session, sql: &str) -> Result<SqlOutput, SqlError> {
    let toks = tokenize(sql)?;
    if toks.is_empty() {
        return Err(err(1065, "Query was empty"));
    }
    let mut p = P { t: toks, i: 0 };
    let out = if p.kw("SELECT") {
        select(shared, session, &mut p)?
    } else if p.kw("SHOW") {
        show(shared, session, &mut p)?
    } else if p.kw("DESC") || p.kw("DESCRIBE") {
        let (db, t) = p.qualified()?;
        p.done()?;
        let st = shared.lock();
        let table = find_table(&st.catalog, session, db.as_deref(), &t)?;
        let s = ColumnType::String;
        let columns = ["Field", "Type", "Null", "Key", "Default", "Extra"]
            .iter()
            .map(|n| (n.to_string(), s.clone()))
            .collect();
        let rows = table
            .schema
            .columns
            .iter()
            .map(|c| {
                vec![
                    Some(c.name.clone().into_bytes()),
                    Some(c.ty.column_type().into_bytes()),
                    Some(if c.nullable { "YES" } else { "NO" }.as_bytes().to_vec()),
                    Some(if c.is_key { "true" } else { "false" }.as_bytes().to_vec()),
                    c.default.clone().map(String::into_bytes),
                    Some(Vec::new()),
                ]
            })
            .collect();
        SqlOutput::Rows { columns, rows }
    } else if p.kw("CREATE") {
        if p.kw("DATABASE") || p.kw("SCHEMA") {
            let ine = p.kws(&["IF", "NOT", "EXISTS"]);
            let name = p.ident()?;
            p.done()?;
            let created = shared.lock().catalog.create_db(&name);
            if !created && !ine {
                return Err(err(
                    1007,
                    format!("Can't create database '{name}'; database exists"),
                ));
            }
            shared.mark_dirty();
            SqlOutput::Ok { affected: 0 }
        } else if p.kw("TABLE") {
            let (db, schema, ine) = parse_create_table(&mut p)?;
            let mut st = shared.lock();
            let dbn = resolve_db(session, db.as_deref())?;
            let id = st.catalog.alloc_id();
            let Some(dbo) = st.catalog.dbs.get_mut(&dbn) else {
                return Err(err(1049, format!("Unknown database '{dbn}'")));
            };
            if dbo.tables.contains_key(&schema.name) {
                if ine {
                    return Ok(SqlOutput::Ok { affected: 0 });
                }
                return Err(err(1050, format!("Table '{}' already exists", schema.name)));
            }
            dbo.tables
                .insert(schema.name.clone(), Table::new(schema, id));
            drop(st);
            shared.mark_dirty();
            SqlOutput::Ok { affected: 0 }
        } else {
            return Err(err(
                1064,
                "starrocks-double supports CREATE DATABASE and CREATE TABLE only",
            ));
        }
    } else if p.kw("ALTER") {
        p.expect_kw("TABLE")?;
        let (db, t) = p.qualified()?;
        let mut adds: Vec<(ColumnDef, Option<String>, bool)> = Vec::new();
        let mut drops: Vec<String> = Vec::new();
        loop {
            if p.kw("ADD") {
                p.kw("COLUMN");
                if p.sym('(') {
                    loop {
                        adds.push((parse_column_def(&mut p)?, None, false));
                        if !p.sym(',') {
                            break;
                        }
                    }
                    p.expect_sym(')')?;
                } else {
                    let c = parse_column_def(&mut p)?;
                    let after = if p.kw("AFTER") {
                        Some(p.ident()?)
                    } else {
                        None
                    };
                    let first = p.kw("FIRST");
                    adds.push((c, after, first));
                }
            } else if p.kw("DROP") {
                p.kw("COLUMN");
                drops.push(p.ident()?);
            } else {
                return Err(err(
                    1064,
                    "starrocks-double supports ALTER TABLE ADD COLUMN / DROP COLUMN only",
                ));
            }
            if !p.sym(',') {
                break;
            }
        }
        p.done()?;
        let mut st = shared.lock();
        let table = find_table_mut(&mut st.catalog, session, db.as_deref(), &t)?;
        let mut next = table.clone();
        for (c, after, first) in adds {
            let pos = if first {
                Some(0)
            } else {
                match after {
                    Some(a) => Some(
                        next.schema
                            .index_of(&a)
                            .ok_or_else(|| err(1054, format!("Unknown column '{a}'")))?
                            + 1,
                    ),
                    None => None,
                }
            };
            next.add_column(c, pos).map_err(|m| err(1060, m))?;
        }
        for d in drops {
            let i = next
                .schema
                .index_of(&d)
                .ok_or_else(|| err(1091, format!("Column '{d}' does not exist")))?;
            if next.schema.columns[i].is_key {
                return Err(err(
                    1064,
                    format!("Can not drop key column {d} in primary data model table"),
                ));
            }
            next.schema.columns.remove(i);
            for r in next.rows.values_mut() {
                r.remove(i);
            }
            next.schema_version += 1;
        }
        *table = next;
        drop(st);
        shared.mark_dirty();
        SqlOutput::Ok { affected: 0 }
    } else if p.kw("DROP") {
        if p.kw("TABLE") {
            let ie = p.kws(&["IF", "EXISTS"]);
            let (db, t) = p.qualified()?;
            p.kw("FORCE");
            p.done()?;
            let dbn = resolve_db(session, db.as_deref())?;
            let mut st = shared.lock();
            let Some(dbo) = st.catalog.dbs.get_mut(&dbn) else {
                return Err(err(1049, format!("Unknown database '{dbn}'")));
            };
            if dbo.tables.remove(&t).is_none() && !ie {
                return Err(err(1051, format!("Unknown table '{t}'")));
            }
            drop(st);
            shared.mark_dirty();
            SqlOutput::Ok { affected: 0 }
        } else if p.kw("DATABASE") || p.kw("SCHEMA") {
            let ie = p.kws(&["IF", "EXISTS"]);
            let name = p.ident()?;
            p.kw("FORCE");
            p.done()?;
            if shared.lock().catalog.dbs.remove(&name).is_none() && !ie {
                return Err(err(
                    1008,
                    format!("Can't drop database '{name}'; database doesn't exist"),
                ));
            }
            shared.mark_dirty();
            SqlOutput::Ok { affected: 0 }
        } else {
            return Err(err(
                1064,
                "starrocks-double supports DROP TABLE and DROP DATABASE only",
            ));
        }
    } else if p.kw("TRUNCATE") {
        p.kw("TABLE");
        let (db, t) = p.qualified()?;
        p.done()?;
        let mut st = shared.lock();
        let table = find_table_mut(&mut st.catalog, session, db.as_deref(), &t)?;
        let n = table.rows.len() as u64;
        table.rows.clear();
        drop(st);
        shared.mark_dirty();
        SqlOutput::Ok { affected: n }
    } else if p.kw("USE") {
        let name = p.ident()?;
        p.done()?;
        if !shared.lock().catalog.dbs.contains_key(&name) {
            return Err(err(1049, format!("Unknown database '{name}'")));
        }
        session.db = Some(name);
        SqlOutput::Ok { affected: 0 }
    } else if p.kw("SET") || p.kw("BEGIN") || p.kw("COMMIT") || p.kw("ROLLBACK") {
        SqlOutput::Ok { affected: 0 }
    } else {
        return Err(err(
            1064,
            format!(
                "starrocks-double does not support this statement: {}",
                sql.trim()
            ),
        ));
    };
    Ok(out)
}

fn resolve_db(session: &Session, db: Option<&str>) -> Result<String, SqlError> {
    db.map(str::to_string)
        .or_else(|| session.db.clone())
        .ok_or_else(|| err(1046, "No database selected"))
}

fn find_table<'a>(
    cat: &'a Catalog,
    session: &Session,
    db: Option<&str>,
    t: &str,
) -> Result<&'a Table, SqlError> {
    let dbn = resolve_db(session, db)?;
    let dbo = cat
        .dbs
        .get(&dbn)
        .ok_or_else(|| err(1049, format!("Unknown database '{dbn}'")))?;
    dbo.tables
        .get(t)
        .ok_or_else(|| err(1146, format!("Table '{dbn}.{t}' doesn't exist")))
}

fn find_table_mut<'a>(
    cat: &'a mut Catalog,
    session: &Session,
    db: Option<&str>,
    t: &str,
) -> Result<&'a mut Table, SqlError> {
    let dbn = resolve_db(session, db)?;
    let dbo = cat
        .dbs
        .get_mut(&dbn)
        .ok_or_else(|| err(1049, format!("Unknown database '{dbn}'")))?;
    dbo.tables
        .get_mut(t)
        .ok_or_else(|| err(1146, format!("Table '{dbn}.{t}' doesn't exist")))
}

fn show(shared: &Shared, session: &Session, p: &mut P) -> Result<SqlOutput, SqlError> {
    let st = shared.lock();
    if p.kws(&["CREATE", "TABLE"]) {
        let (db, t) = p.qualified()?;
        p.done()?;
        let table = find_table(&st.catalog, session, db.as_deref(), &t)?;
        let dbn = resolve_db(session, db.as_deref())?;
        return Ok(SqlOutput::Rows {
            columns: vec![
                ("Table".into(), ColumnType::String),
                ("Create Table".into(), ColumnType::String),
            ],
            rows: vec![vec![
                Some(t.into_bytes()),
                Some(table.schema.create_sql(&dbn).into_bytes()),
            ]],
        });
    }
    if p.kw("DATABASES") {
        p.done()?;
        return Ok(SqlOutput::Rows {
            columns: vec![("Database".into(), ColumnType::String)],
            rows: st
                .catalog
                .dbs
                .keys()
                .map(|d| vec![Some(d.clone().into_bytes())])
                .collect(),
        });
    }
    if p.kw("TABLES") {
        let db = if p.kw("FROM") || p.kw("IN") {
            Some(p.ident()?)
        } else {
            None
        };
        p.done()?;
        let dbn = resolve_db(session, db.as_deref())?;
        let dbo = st
            .catalog
            .dbs
            .get(&dbn)
            .ok_or_else(|| err(1049, format!("Unknown database '{dbn}'")))?;
        return Ok(SqlOutput::Rows {
            columns: vec![(format!("Tables_in_{dbn}"), ColumnType::String)],
            rows: dbo
                .tables
                .keys()
                .map(|t| vec![Some(t.clone().into_bytes())])
                .collect(),
        });
    }
    if p.kw("VARIABLES") || p.kws(&["SESSION", "VARIABLES"]) || p.kws(&["GLOBAL", "VARIABLES"]) {
        return Ok(SqlOutput::Rows {
            columns: vec![
                ("Variable_name".into(), ColumnType::String),
                ("Value".into(), ColumnType::String),
            ],
            rows: Vec::new(),
        });
    }
    Err(err(
        1064,
        "starrocks-double supports SHOW CREATE TABLE, SHOW DATABASES, SHOW TABLES only",
    ))
}

fn select(shared: &Shared, session: &Session, p: &mut P) -> Result<SqlOutput, SqlError> {
    // Select list.
    let start = p.i;
    let mut has_from = false;
    {
        let mut depth = 0;
        for t in &p.t[start..] {
            match t {
                Tok::Sym('(') => depth += 1,
                Tok::Sym(')') => depth -= 1,
                Tok::Word(w) if depth == 0 && w.eq_ignore_ascii_case("FROM") => {
                    has_from = true;
                    break;
                }
                _ => {}
            }
        }
    }
    if !has_from {
        return select_const(session, shared, p);
    }
    let mut items = Vec::new();
    loop {
        if p.sym('*') {
            items.push(SelItem::Star);
        } else if p.peek_kw("COUNT") {
            p.i += 1;
            p.expect_sym('(')?;
            if !p.sym('*') {
                literal_text(p).or_else(|_| p.ident())?;
            }
            p.expect_sym(')')?;
            let alias = if p.kw("AS") {
                p.ident()?
            } else {
                "count(*)".into()
            };
            items.push(SelItem::Count(alias));
        } else {
            let c = p.ident()?;
            let alias = if p.kw("AS") { p.ident()? } else { c.clone() };
            items.push(SelItem::Col(c, alias));
        }
        if !p.sym(',') {
            break;
        }
    }
    p.expect_kw("FROM")?;
    let (db, t) = p.qualified()?;
    let conds = parse_conditions(p)?;
    let mut order: Vec<(String, bool)> = Vec::new();
    if p.kws(&["ORDER", "BY"]) {
        loop {
            let c = p.ident()?;
            let desc = if p.kw("DESC") {
                true
            } else {
                p.kw("ASC");
                false
            };
            order.push((c, desc));
            if !p.sym(',') {
                break;
            }
        }
    }
    let limit = if p.kw("LIMIT") {
        Some(
            p.number()?
                .parse::<usize>()
                .map_err(|_| parse_err("bad LIMIT"))?,
        )
    } else {
        None
    };
    p.done()?;
    let st = shared.lock();
    let rel = if db
        .as_deref()
        .is_some_and(|d| d.eq_ignore_ascii_case("information_schema"))
    {
        if t.eq_ignore_ascii_case("tables") {
            info_tables(&st.catalog)
        } else if t.eq_ignore_ascii_case("columns") {
            info_columns(&st.catalog)
        } else {
            return Err(err(
                1146,
                format!("Table 'information_schema.{t}' is not emulated"),
            ));
        }
    } else {
        table_rel(find_table(&st.catalog, session, db.as_deref(), &t)?)
    };
    drop(st);
    let mut rows: Vec<&Vec<Value>> = Vec::new();
    for r in &rel.rows {
        if matches(&rel, r, &conds)? {
            rows.push(r);
        }
    }
    let order_idx: Vec<(usize, bool)> = order
        .iter()
        .map(|(c, d)| col_index(&rel, c).map(|i| (i, *d)))
        .collect::<Result<_, _>>()?;
    if !order_idx.is_empty() {
        rows.sort_by(|a, b| {
            for (i, desc) in &order_idx {
                let o = a[*i].compare(&b[*i]).unwrap_or(std::cmp::Ordering::Equal);
                let o = if *desc { o.reverse() } else { o };
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
            std::cmp::Ordering::Equal
        });
    }
    if let Some(l) = limit {
        rows.truncate(l);
    }
    if items.iter().any(|i| matches!(i, SelItem::Count(_))) {
        let mut columns = Vec::new();
        let mut cells = Vec::new();
        for it in &items {
            match it {
                SelItem::Count(alias) => {
                    columns.push((alias.clone(), ColumnType::BigInt));
                    cells.push(Some(rows.len().to_string().into_bytes()));
                }
                _ => {
                    return Err(err(
                        1064,
                        "starrocks-double: COUNT(*) cannot be mixed with columns",
                    ))
                }
            }
        }
        return Ok(SqlOutput::Rows {
            columns,
            rows: vec![cells],
        });
    }
    let mut proj: Vec<(usize, String)> = Vec::new();
    for it in &items {
        match it {
            SelItem::Star => proj.extend(
                rel.columns
                    .iter()
                    .enumerate()
                    .map(|(i, (n, _))| (i, n.clone())),
            ),
            SelItem::Col(c, alias) => proj.push((col_index(&rel, c)?, alias.clone())),
            SelItem::Count(_) => {}
        }
    }
    let columns = proj
        .iter()
        .map(|(i, a)| (a.clone(), rel.columns[*i].1.clone()))
        .collect();
    let out_rows = rows
        .iter()
        .map(|r| {
            proj.iter()
                .map(|(i, _)| r[*i].to_text(&rel.columns[*i].1))
                .collect()
        })
        .collect();
    Ok(SqlOutput::Rows {
        columns,
        rows: out_rows,
    })
}

fn select_const(session: &Session, shared: &Shared, p: &mut P) -> Result<SqlOutput, SqlError> {
    let mut columns = Vec::new();
    let mut cells = Vec::new();
    loop {
        let (name, ty, v) = match p.peek().cloned() {
            Some(Tok::Var(v)) => {
                p.i += 1;
                let (ty, val) = system_variable(&v, session)?;
                (format!("@@{v}"), ty, val)
            }
            Some(Tok::Num(n)) => {
                p.i += 1;
                let v = n
                    .parse::<i128>()
                    .map(Value::Int)
                    .unwrap_or(Value::Str(n.clone()));
                (n, ColumnType::BigInt, v)
            }
            Some(Tok::Str(s)) => {
                p.i += 1;
                (s.clone(), ColumnType::String, Value::Str(s))
            }
            Some(Tok::Word(f)) => {
                p.i += 1;
                p.expect_sym('(')?;
                p.expect_sym(')')?;
                let name = format!("{f}()");
                let v = match f.to_ascii_lowercase().as_str() {
                    "current_version" => Value::Str(shared.config.version.clone()),
                    "version" => Value::Str("8.0.33".into()),
                    "database" | "schema" => {
                        session.db.clone().map(Value::Str).unwrap_or(Value::Null)
                    }
                    "connection_id" => Value::Int(i128::from(session.connection_id)),
                    "current_user" | "user" => Value::Str(format!("'{}'@'%'", shared.config.user)),
                    "now" | "current_timestamp" => {
                        Value::DateTime(chrono::Local::now().naive_local())
                    }
                    other => {
                        return Err(err(
                            1064,
                            format!("starrocks-double does not support the function {other}()"),
                        ))
                    }
                };
                let ty = match &v {
                    Value::Int(_) => ColumnType::BigInt,
                    Value::DateTime(_) => ColumnType::DateTime,
                    _ => ColumnType::String,
                };
                (name, ty, v)
            }
            _ => return Err(p.unexpected("unsupported select expression")),
        };
        let name = if p.kw("AS") { p.ident()? } else { name };
        cells.push(v.to_text(&ty));
        columns.push((name, ty));
        if !p.sym(',') {
            break;
        }
    }
    if p.kw("LIMIT") {
        p.number()?;
    }
    p.done()?;
    Ok(SqlOutput::Rows {
        columns,
        rows: vec![cells],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DoubleConfig;

    fn shared() -> Shared {
        Shared::new(DoubleConfig::default(), Catalog::default())
    }

    fn rows(o: SqlOutput) -> Vec<Vec<Option<String>>> {
        match o {
            SqlOutput::Rows { rows, .. } => rows
                .into_iter()
                .map(|r| {
                    r.into_iter()
                        .map(|c| c.map(|b| String::from_utf8_lossy(&b).into_owned()))
                        .collect()
                })
                .collect(),
            SqlOutput::Ok { .. } => panic!("expected rows"),
        }
    }

    #[test]
    fn create_and_describe() {
        let sh = shared();
        let mut s = Session::default();
        execute(&sh, &mut s, "CREATE DATABASE IF NOT EXISTS d").expect("db");
        execute(&sh, &mut s, "create database if not exists d").expect("db again");
        assert_eq!(
            execute(&sh, &mut s, "CREATE DATABASE d")
                .expect_err("exists")
                .code,
            1007
        );
        execute(
            &sh,
            &mut s,
            "CREATE TABLE IF NOT EXISTS `d`.`t` (`id` BIGINT NOT NULL, name VARCHAR(10) NULL DEFAULT 'x' COMMENT 'n', amt DECIMAL(18, 2), tags ARRAY<ARRAY<INT>>, ts DATETIME) PRIMARY KEY(`id`) COMMENT 'tbl' DISTRIBUTED BY HASH(`id`) BUCKETS 4 PROPERTIES(\"replication_num\" = \"1\");",
        )
        .expect("create table");
        let r = rows(execute(&sh, &mut s, "SELECT column_name, data_type, column_type, column_key, is_nullable, ordinal_position FROM information_schema.columns WHERE table_schema = 'd' AND table_name = 't' ORDER BY ordinal_position").expect("cols"));
        assert_eq!(r.len(), 5);
        assert_eq!(
            r[0],
            vec![
                Some("id".into()),
                Some("bigint".into()),
                Some("bigint(20)".into()),
                Some("PRI".into()),
                Some("NO".into()),
                Some("1".into())
            ]
        );
        assert_eq!(r[2][2], Some("decimal(18,2)".into()));
        assert_eq!(r[3][2], Some("array<array<int(11)>>".into()));
        let e = execute(
            &sh,
            &mut s,
            "CREATE TABLE d.bad (a INT, b DOUBLE) PRIMARY KEY(b) DISTRIBUTED BY HASH(b)",
        )
        .expect_err("double key");
        assert!(
            e.message.contains("can not be used as primary key"),
            "{e:?}"
        );
        let e = execute(
            &sh,
            &mut s,
            "CREATE TABLE d.bad (a INT, b INT) PRIMARY KEY(b) DISTRIBUTED BY HASH(b)",
        )
        .expect_err("not prefix");
        assert_eq!(
            e.message,
            "Key columns should be a ordered prefix of the schema."
        );
        let e = execute(
            &sh,
            &mut s,
            "CREATE TABLE d.dup (a INT) DUPLICATE KEY(a) DISTRIBUTED BY HASH(a)",
        )
        .expect_err("dup");
        assert!(e.message.contains("PRIMARY KEY"));
        let sc = rows(execute(&sh, &mut s, "SHOW CREATE TABLE d.t").expect("show"));
        assert!(sc[0][1]
            .as_deref()
            .unwrap_or("")
            .contains("PRIMARY KEY(`id`)"));
        execute(&sh, &mut s, "ALTER TABLE d.t ADD COLUMN extra INT NULL").expect("alter");
        let r = rows(execute(&sh, &mut s, "DESC d.t").expect("desc"));
        assert_eq!(r.len(), 6);
        assert_eq!(r[5][0], Some("extra".into()));
        let r = rows(
            execute(
                &sh,
                &mut s,
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'd'",
            )
            .expect("tables"),
        );
        assert_eq!(r, vec![vec![Some("t".into())]]);
        execute(&sh, &mut s, "DROP TABLE d.t").expect("drop");
        assert_eq!(
            execute(&sh, &mut s, "SELECT * FROM d.t")
                .expect_err("gone")
                .code,
            1146
        );
    }

    #[test]
    fn constants_and_errors() {
        let sh = shared();
        let mut s = Session::default();
        let r = rows(execute(&sh, &mut s, "SELECT current_version()").expect("v"));
        assert_eq!(r[0][0].as_deref(), Some("3.3.5-starrocks-double"));
        let r =
            rows(execute(&sh, &mut s, "SELECT @@max_allowed_packet,@@wait_timeout").expect("vars"));
        assert_eq!(r[0], vec![Some("33554432".into()), Some("28800".into())]);
        assert_eq!(
            execute(&sh, &mut s, "INSERT INTO x VALUES (1)")
                .expect_err("unsupported")
                .code,
            1064
        );
        assert_eq!(
            execute(&sh, &mut s, "SELECT * FROM t")
                .expect_err("no db")
                .code,
            1046
        );
        assert!(execute(&sh, &mut s, "SELECT 'unterminated").is_err());
    }
}
