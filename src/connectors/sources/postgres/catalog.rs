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

/// Resolves every OID (recursively through domains and arrays) from `pg_type`.
pub async fn resolve_types(
    client: &Client,
    oids: &[u32],
) -> Result<HashMap<u32, PgType>, CatalogError> {
    let mut out = HashMap::new();
    for &oid in oids {
        if let std::collections::hash_map::Entry::Vacant(slot) = out.entry(oid) {
            slot.insert(resolve_one(client, oid, 0).await?);
        }
    }
    Ok(out)
}

async fn resolve_one(client: &Client, oid: u32, depth: u32) -> Result<PgType, CatalogError> {
    if depth > 16 {
        return Err(CatalogError::TooDeep(oid));
    }
    let row = client
        .query_opt(
            "SELECT n.nspname::text, t.typname::text, t.typtype::text, t.typelem, \
                    t.typbasetype, t.typtypmod, t.typcategory::text \
             FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
             WHERE t.oid = $1",
            &[&oid],
        )
        .await?
        .ok_or(CatalogError::UnknownOid(oid))?;
    let schema: String = row.get(0);
    let name: String = row.get(1);
    let typtype: String = row.get(2);
    let elem: u32 = row.get(3);
    let basetype: u32 = row.get(4);
    let typmod: i32 = row.get(5);
    let category: String = row.get(6);
    let kind = match typtype.as_str() {
        "d" => PgTypeKind::Domain {
            base: Box::new(Box::pin(resolve_one(client, basetype, depth + 1)).await?),
            typmod,
        },
        "e" => PgTypeKind::Enum,
        "c" => PgTypeKind::Composite,
        "r" => PgTypeKind::Range,
        "m" => PgTypeKind::Multirange,
        "p" => PgTypeKind::Pseudo,
        // A true array type has category 'A' and an element (fixed-length types such as
        // `point` also have typelem but are not arrays).
        _ if category == "A" && elem != 0 => PgTypeKind::Array {
            elem: Box::new(Box::pin(resolve_one(client, elem, depth + 1)).await?),
        },
        _ => PgTypeKind::Base,
    };
    Ok(PgType {
        oid,
        schema,
        name,
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
    let rows = client
        .query(
            "SELECT a.attname::text \
             FROM pg_catalog.pg_index i \
             JOIN pg_catalog.pg_class c ON c.oid = i.indrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum \
             WHERE i.indisprimary AND n.nspname = $1 AND c.relname = $2 \
             ORDER BY k.ord",
            &[&schema, &table],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
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
