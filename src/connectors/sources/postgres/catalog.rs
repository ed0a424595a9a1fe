//! PostgreSQL type catalog: resolves type OIDs (from Relation messages) to a description
//! of the type (base, enum, domain over a base, array of an element, composite, range),
//! and reads a table's real primary key. Used by the StarRocks type mapping, which must be
//! exhaustive (an unknown type is a clear error, never dropped data).

use std::collections::HashMap;

use tokio_postgres::Client;

/// What kind of type a [`PgType`] is (`pg_type.typtype`, with domains and arrays resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgTypeKind {
    /// A base (scalar) type, built in or from an extension.
    Base,
    /// An enum: values are its labels.
    Enum,
    /// A domain: values are those of `base`; `typmod` is the domain's own modifier.
    Domain { base: Box<PgType>, typmod: i32 },
    /// An array of `elem` (any number of dimensions).
    Array { elem: Box<PgType> },
    /// A composite (row) type.
    Composite,
    /// A range type.
    Range,
    /// A multirange type (PostgreSQL 14+).
    Multirange,
    /// A pseudo-type (should never be a column type).
    Pseudo,
}

/// A resolved PostgreSQL type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgType {
    pub oid: u32,
    /// Namespace of the type (`pg_catalog` for built-ins).
    pub schema: String,
    /// `pg_type.typname` (`int4`, `_text`, `my_enum`, ...).
    pub name: String,
    pub kind: PgTypeKind,
}

/// Catalog errors.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("reading the PostgreSQL type catalog: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("type OID {0} is not in pg_type")]
    UnknownOid(u32),
    #[error("type OID {0}: domain/array nesting deeper than 16 levels")]
    TooDeep(u32),
}

const BUILTIN: &[(u32, &str)] = &[
    (16, "bool"),
    (17, "bytea"),
    (18, "char"),
    (19, "name"),
    (20, "int8"),
    (21, "int2"),
    (23, "int4"),
    (24, "regproc"),
    (25, "text"),
    (26, "oid"),
    (27, "tid"),
    (28, "xid"),
    (29, "cid"),
    (114, "json"),
    (142, "xml"),
    (194, "pg_node_tree"),
    (600, "point"),
    (601, "lseg"),
    (602, "path"),
    (603, "box"),
    (604, "polygon"),
    (628, "line"),
    (650, "cidr"),
    (700, "float4"),
    (701, "float8"),
    (718, "circle"),
    (774, "macaddr8"),
    (790, "money"),
    (829, "macaddr"),
    (869, "inet"),
    (1033, "aclitem"),
    (1042, "bpchar"),
    (1043, "varchar"),
    (1082, "date"),
    (1083, "time"),
    (1114, "timestamp"),
    (1184, "timestamptz"),
    (1186, "interval"),
    (1266, "timetz"),
    (1560, "bit"),
    (1562, "varbit"),
    (1700, "numeric"),
    (1790, "refcursor"),
    (2202, "regprocedure"),
    (2203, "regoper"),
    (2204, "regoperator"),
    (2205, "regclass"),
    (2206, "regtype"),
    (2950, "uuid"),
    (2970, "txid_snapshot"),
    (3220, "pg_lsn"),
    (3614, "tsvector"),
    (3615, "tsquery"),
    (3642, "gtsvector"),
    (3734, "regconfig"),
    (3769, "regdictionary"),
    (3802, "jsonb"),
    (4072, "jsonpath"),
    (4089, "regnamespace"),
    (4096, "regrole"),
    (4191, "regcollation"),
    (5038, "pg_snapshot"),
    (5069, "xid8"),
];

const BUILTIN_ARRAYS: &[(u32, u32)] = &[
    (1000, 16),
    (1001, 17),
    (1002, 18),
    (1003, 19),
    (1016, 20),
    (1005, 21),
    (1007, 23),
    (1009, 25),
    (1028, 26),
    (1011, 28),
    (1012, 29),
    (199, 114),
    (143, 142),
    (1017, 600),
    (1018, 601),
    (1019, 602),
    (1020, 603),
    (1027, 604),
    (629, 628),
    (651, 650),
    (1021, 700),
    (1022, 701),
    (719, 718),
    (775, 774),
    (791, 790),
    (1040, 829),
    (1041, 869),
    (1014, 1042),
    (1015, 1043),
    (1182, 1082),
    (1183, 1083),
    (1115, 1114),
    (1185, 1184),
    (1187, 1186),
    (1270, 1266),
    (1561, 1560),
    (1563, 1562),
    (1231, 1700),
    (2951, 2950),
    (3221, 3220),
    (3643, 3614),
    (3645, 3615),
    (3807, 3802),
    (4073, 4072),
    (271, 5069),
];

const BUILTIN_RANGES: &[(u32, &str, PgTypeKind)] = &[
    (3904, "int4range", PgTypeKind::Range),
    (3906, "numrange", PgTypeKind::Range),
    (3908, "tsrange", PgTypeKind::Range),
    (3910, "tstzrange", PgTypeKind::Range),
    (3912, "daterange", PgTypeKind::Range),
    (3926, "int8range", PgTypeKind::Range),
    (4451, "int4multirange", PgTypeKind::Multirange),
    (4532, "nummultirange", PgTypeKind::Multirange),
    (4533, "tsmultirange", PgTypeKind::Multirange),
    (4534, "tstzmultirange", PgTypeKind::Multirange),
    (4535, "datemultirange", PgTypeKind::Multirange),
    (4536, "int8multirange", PgTypeKind::Multirange),
];

impl PgType {
    /// A built-in type by its fixed OID (no catalog query needed).
    pub fn builtin(oid: u32) -> Option<PgType> {
        if let Some((_, name)) = BUILTIN.iter().find(|(o, _)| *o == oid) {
            return Some(Self::base(oid, name));
        }
        if let Some((_, elem)) = BUILTIN_ARRAYS.iter().find(|(o, _)| *o == oid) {
            let elem = Self::builtin(*elem)?;
            return Some(PgType {
                oid,
                schema: "pg_catalog".into(),
                name: format!("_{}", elem.name),
                kind: PgTypeKind::Array {
                    elem: Box::new(elem),
                },
            });
        }
        BUILTIN_RANGES
            .iter()
            .find(|(o, _, _)| *o == oid)
            .map(|(_, name, kind)| PgType {
                oid,
                schema: "pg_catalog".into(),
                name: (*name).into(),
                kind: kind.clone(),
            })
    }

    /// A built-in type by name (`int4`, `_text`, ...), for tests and documentation.
    pub fn builtin_named(name: &str) -> Option<PgType> {
        BUILTIN
            .iter()
            .map(|(o, _)| *o)
            .chain(BUILTIN_ARRAYS.iter().map(|(o, _)| *o))
            .chain(BUILTIN_RANGES.iter().map(|(o, _, _)| *o))
            .filter_map(Self::builtin)
            .find(|t| t.name == name)
    }

    fn base(oid: u32, name: &str) -> PgType {
        PgType {
            oid,
            schema: "pg_catalog".into(),
            name: name.into(),
            kind: PgTypeKind::Base,
        }
    }

    /// A readable name: `schema.name` for non-catalog types, `name[]` for arrays.
    pub fn display_name(&self) -> String {
        match &self.kind {
            PgTypeKind::Array { elem } => format!("{}[]", elem.display_name()),
            _ if self.schema == "pg_catalog" || self.schema.is_empty() => self.name.clone(),
            _ => format!("{}.{}", self.schema, self.name),
        }
    }
}

/// One `pg_type` row, before its base or element is resolved.
struct RawType {
    schema: String,
    name: String,
    typtype: String,
    elem: u32,
    basetype: u32,
    typmod: i32,
    category: String,
}

impl RawType {
    /// The type this one refers to and must be resolved with it: a domain's base, a true
    /// array's element (category 'A'; fixed-length types such as `point` also have
    /// typelem but are not arrays).
    fn refers_to(&self) -> Option<u32> {
        match self.typtype.as_str() {
            "d" => Some(self.basetype),
            _ if self.category == "A" && self.elem != 0 => Some(self.elem),
            _ => None,
        }
    }
}

/// Deepest chain of domains and arrays resolved.
const MAX_TYPE_DEPTH: u32 = 16;

/// Resolves every OID (recursively through domains and arrays) from `pg_type`: one query
/// per level of nesting for all of them, whatever their number (a job of 1,000 tables
/// starts as fast as one of 10).
pub async fn resolve_types(
    client: &Client,
    oids: &[u32],
) -> Result<HashMap<u32, PgType>, CatalogError> {
    let mut raw: HashMap<u32, RawType> = HashMap::new();
    let mut want: Vec<u32> = oids.to_vec();
    want.sort_unstable();
    want.dedup();
    let mut depth = 0;
    while !want.is_empty() {
        if depth > MAX_TYPE_DEPTH {
            return Err(CatalogError::TooDeep(want[0]));
        }
        let rows = client
            .query(
                "SELECT t.oid, n.nspname::text, t.typname::text, t.typtype::text, t.typelem, \
                        t.typbasetype, t.typtypmod, t.typcategory::text \
                 FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
                 WHERE t.oid = ANY($1)",
                &[&want],
            )
            .await?;
        for row in &rows {
            raw.insert(
                row.try_get(0)?,
                RawType {
                    schema: row.try_get(1)?,
                    name: row.try_get(2)?,
                    typtype: row.try_get(3)?,
                    elem: row.try_get(4)?,
                    basetype: row.try_get(5)?,
                    typmod: row.try_get(6)?,
                    category: row.try_get(7)?,
                },
            );
        }
        if let Some(missing) = want.iter().find(|o| !raw.contains_key(o)) {
            return Err(CatalogError::UnknownOid(*missing));
        }
        let mut next: Vec<u32> = want
            .iter()
            .filter_map(|o| raw.get(o).and_then(RawType::refers_to))
            .filter(|o| !raw.contains_key(o))
            .collect();
        next.sort_unstable();
        next.dedup();
        want = next;
        depth += 1;
    }
    let mut out = HashMap::new();
    for &oid in oids {
        if let std::collections::hash_map::Entry::Vacant(slot) = out.entry(oid) {
            slot.insert(build_type(&raw, oid, 0)?);
        }
    }
    Ok(out)
}

fn build_type(raw: &HashMap<u32, RawType>, oid: u32, depth: u32) -> Result<PgType, CatalogError> {
    if depth > MAX_TYPE_DEPTH {
        return Err(CatalogError::TooDeep(oid));
    }
    let r = raw.get(&oid).ok_or(CatalogError::UnknownOid(oid))?;
    let kind = match r.typtype.as_str() {
        "d" => PgTypeKind::Domain {
            base: Box::new(build_type(raw, r.basetype, depth + 1)?),
            typmod: r.typmod,
        },
        "e" => PgTypeKind::Enum,
        "c" => PgTypeKind::Composite,
        "r" => PgTypeKind::Range,
        "m" => PgTypeKind::Multirange,
        "p" => PgTypeKind::Pseudo,
        _ => match r.refers_to() {
            Some(elem) => PgTypeKind::Array {
                elem: Box::new(build_type(raw, elem, depth + 1)?),
            },
            None => PgTypeKind::Base,
        },
    };
    Ok(PgType {
        oid,
        schema: r.schema.clone(),
        name: r.name.clone(),
        kind,
    })
}

/// The primary key columns of `schema.table`, in key order (empty when it has none).
/// pgoutput's key flags follow the replica identity (all columns under REPLICA IDENTITY
/// FULL), so the target's PRIMARY KEY must come from here.
pub async fn primary_key(
    client: &Client,
    schema: &str,
    table: &str,
) -> Result<Vec<String>, CatalogError> {
    let mut all = primary_keys(client, &[(schema.to_string(), table.to_string())]).await?;
    Ok(all
        .remove(&(schema.to_string(), table.to_string()))
        .unwrap_or_default())
}

/// The primary key columns of each (schema, table), in key order, in one query; tables
/// without a primary key (or missing) are absent.
pub async fn primary_keys(
    client: &Client,
    tables: &[(String, String)],
) -> Result<HashMap<(String, String), Vec<String>>, CatalogError> {
    let schemas: Vec<&str> = tables.iter().map(|(s, _)| s.as_str()).collect();
    let names: Vec<&str> = tables.iter().map(|(_, t)| t.as_str()).collect();
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text, a.attname::text \
             FROM unnest($1::text[], $2::text[]) AS w(s, r) \
             JOIN pg_catalog.pg_namespace n ON n.nspname = w.s \
             JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = w.r \
             JOIN pg_catalog.pg_index i ON i.indrelid = c.oid AND i.indisprimary \
             JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum \
             ORDER BY n.nspname, c.relname, k.ord",
            &[&schemas, &names],
        )
        .await?;
    let mut out: HashMap<(String, String), Vec<String>> = HashMap::new();
    for r in &rows {
        out.entry((r.try_get(0)?, r.try_get(1)?))
            .or_default()
            .push(r.try_get(2)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_resolve_without_a_catalog() {
        assert_eq!(PgType::builtin(23).unwrap().name, "int4");
        let arr = PgType::builtin(1009).unwrap();
        assert_eq!(arr.name, "_text");
        assert_eq!(arr.display_name(), "text[]");
        assert!(matches!(arr.kind, PgTypeKind::Array { ref elem } if elem.name == "text"));
        assert_eq!(PgType::builtin(3910).unwrap().kind, PgTypeKind::Range);
        assert!(PgType::builtin(999_999).is_none());
        assert_eq!(PgType::builtin_named("_numeric").unwrap().oid, 1231);
        for (oid, elem) in BUILTIN_ARRAYS {
            assert!(PgType::builtin(*elem).is_some(), "{oid}");
        }
    }
}
