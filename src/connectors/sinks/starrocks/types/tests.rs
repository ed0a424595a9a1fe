use super::*;
use serde_json::json;

fn ty(name: &str) -> PgType {
    PgType::builtin_named(name).unwrap_or_else(|| panic!("no builtin {name}"))
}

fn m(name: &str, typmod: i32, key: bool) -> ColumnMapping {
    map_column("public.t", "c", &ty(name), typmod, key).unwrap()
}

fn numeric_typmod_of(p: i32, s: i32) -> i32 {
    ((p << 16) | (s & 0x7ff)) + 4
}

fn conv(name: &str, typmod: i32, v: &str) -> serde_json::Value {
    to_json(v.as_bytes(), &m(name, typmod, false)).unwrap()
}

#[test]
fn every_builtin_type_is_mapped_or_refused_clearly() {
    let expect: &[(&str, i32, &str)] = &[
        ("bool", -1, "BOOLEAN"),
        ("int2", -1, "SMALLINT"),
        ("int4", -1, "INT"),
        ("int8", -1, "BIGINT"),
        ("oid", -1, "BIGINT"),
        ("xid", -1, "BIGINT"),
        ("cid", -1, "BIGINT"),
        ("xid8", -1, "LARGEINT"),
        ("float4", -1, "FLOAT"),
        ("float8", -1, "DOUBLE"),
        ("numeric", numeric_typmod_of(12, 2), "DECIMAL(12,2)"),
        ("numeric", numeric_typmod_of(38, 10), "DECIMAL(38,10)"),
        ("numeric", numeric_typmod_of(39, 2), "VARCHAR(1048576)"),
        ("numeric", numeric_typmod_of(5, -2), "DECIMAL(7,0)"),
        ("numeric", numeric_typmod_of(2, 5), "DECIMAL(5,5)"),
        ("numeric", -1, "VARCHAR(1048576)"),
        ("money", -1, "DECIMAL(19,2)"),
        ("date", -1, "DATE"),
        ("timestamp", -1, "DATETIME"),
        ("timestamptz", -1, "DATETIME"),
        ("time", -1, "VARCHAR(32)"),
        ("timetz", -1, "VARCHAR(32)"),
        ("interval", -1, "VARCHAR(128)"),
        ("uuid", -1, "VARCHAR(36)"),
        ("json", -1, "JSON"),
        ("jsonb", -1, "JSON"),
        ("bytea", -1, "VARCHAR(1048576)"),
        ("bpchar", 14, "VARCHAR(40)"),
        ("varchar", 104, "VARCHAR(400)"),
        ("varchar", 1_000_004, "VARCHAR(1048576)"),
        ("varchar", -1, "VARCHAR(1048576)"),
        ("text", -1, "VARCHAR(1048576)"),
        ("char", -1, "VARCHAR(4)"),
        ("name", -1, "VARCHAR(256)"),
        ("xml", -1, "VARCHAR(1048576)"),
        ("tsvector", -1, "VARCHAR(1048576)"),
        ("tsquery", -1, "VARCHAR(1048576)"),
        ("jsonpath", -1, "VARCHAR(1048576)"),
        ("inet", -1, "VARCHAR(64)"),
        ("cidr", -1, "VARCHAR(64)"),
        ("macaddr", -1, "VARCHAR(32)"),
        ("macaddr8", -1, "VARCHAR(32)"),
        ("bit", 8, "VARCHAR(8)"),
        ("varbit", -1, "VARCHAR(1048576)"),
        ("pg_lsn", -1, "VARCHAR(32)"),
        ("point", -1, "VARCHAR(1048576)"),
        ("polygon", -1, "VARCHAR(1048576)"),
        ("circle", -1, "VARCHAR(1048576)"),
        ("regclass", -1, "VARCHAR(256)"),
        ("int4range", -1, "VARCHAR(1048576)"),
        ("tstzmultirange", -1, "VARCHAR(1048576)"),
        ("_int4", -1, "JSON"),
        ("_text", -1, "JSON"),
        ("_numeric", -1, "JSON"),
        ("_timestamptz", -1, "JSON"),
    ];
    for (name, typmod, want) in expect {
        assert_eq!(
            m(name, *typmod, false).sr_type.to_string(),
            *want,
            "{name} {typmod}"
        );
    }
    // Every built-in OID maps to something (no silent gaps).
    for oid in 0..6000u32 {
        if let Some(t) = PgType::builtin(oid) {
            let r = map_column("public.t", "c", &t, -1, false);
            assert!(r.is_ok(), "{}: {:?}", t.name, r);
        }
    }
}

#[test]
fn key_columns_get_key_capable_types() {
    assert_eq!(
        m("numeric", numeric_typmod_of(18, 0), true).sr_type,
        SrType::BigInt
    );
    assert_eq!(
        m("numeric", numeric_typmod_of(30, 0), true).sr_type,
        SrType::LargeInt
    );
    assert_eq!(
        m("numeric", numeric_typmod_of(10, 2), true).sr_type,
        SrType::Varchar(13)
    );
    assert!(m("numeric", -1, true).sr_type.key_capable());
    for name in [
        "float4",
        "float8",
        "jsonb",
        "money",
        "_int4",
        "uuid",
        "text",
        "timestamptz",
        "date",
        "bool",
        "int8",
    ] {
        let c = m(name, -1, true);
        assert!(c.sr_type.key_capable(), "{name}: {}", c.sr_type);
    }
    assert_eq!(
        to_json(
            b"123456789012345678901234567890",
            &m("numeric", numeric_typmod_of(30, 0), true)
        )
        .unwrap(),
        json!("123456789012345678901234567890")
    );
}

#[test]
fn unmapped_types_name_table_column_and_type() {
    let custom = PgType {
        oid: 90001,
        schema: "ext".into(),
        name: "weird".into(),
        kind: PgTypeKind::Base,
    };
    let e = map_column("public.orders", "shape", &custom, -1, false).unwrap_err();
    let s = e.to_string();
    assert!(
        s.contains("public.orders") && s.contains("shape") && s.contains("ext.weird"),
        "{s}"
    );
    let pseudo = PgType {
        kind: PgTypeKind::Pseudo,
        ..custom.clone()
    };
    assert!(map_column("public.orders", "x", &pseudo, -1, false).is_err());
    // Unknown OID in a relation.
    let rel = Relation {
        id: 1,
        namespace: "public".into(),
        name: "orders".into(),
        replica_identity: crate::core::ReplicaIdentity::Default,
        columns: vec![Column {
            name: "z".into(),
            is_key: false,
            type_oid: 77777,
            type_modifier: -1,
        }],
    };
    let e = map_relation(&rel, &HashMap::new(), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("orders") && e.contains('z') && e.contains("77777"),
        "{e}"
    );
}

#[test]
fn enums_domains_and_extension_types() {
    let mood = PgType {
        oid: 90002,
        schema: "public".into(),
        name: "mood".into(),
        kind: PgTypeKind::Enum,
    };
    let c = map_column("public.t", "m", &mood, -1, false).unwrap();
    assert_eq!(c.sr_type, SrType::Varchar(256));
    assert_eq!(to_json(b"happy", &c).unwrap(), json!("happy"));
    let dom = PgType {
        oid: 90003,
        schema: "public".into(),
        name: "price".into(),
        kind: PgTypeKind::Domain {
            base: Box::new(ty("numeric")),
            typmod: numeric_typmod_of(10, 2),
        },
    };
    assert_eq!(
        map_column("public.t", "p", &dom, -1, false)
            .unwrap()
            .sr_type,
        SrType::Decimal(10, 2)
    );
    let arr_of_enum = PgType {
        oid: 90004,
        schema: "public".into(),
        name: "_mood".into(),
        kind: PgTypeKind::Array {
            elem: Box::new(mood),
        },
    };
    let c = map_column("public.t", "ms", &arr_of_enum, -1, false).unwrap();
    assert_eq!(
        to_json(b"{happy,NULL,\"so so\"}", &c).unwrap(),
        json!(["happy", null, "so so"])
    );
    let citext = PgType {
        oid: 90005,
        schema: "public".into(),
        name: "citext".into(),
        kind: PgTypeKind::Base,
    };
    assert_eq!(
        map_column("public.t", "e", &citext, -1, false)
            .unwrap()
            .sr_type,
        SrType::Varchar(VARCHAR_MAX)
    );
}

#[test]
fn text_values_are_exact() {
    for v in [
        "",
        " ",
        "a\tb",
        "line1\nline2\r\n",
        "quote \" and 'single'",
        "back\\slash \\N",
        "ünïcødé ✓ 🚀 中文",
        "\u{1}\u{1f}",
    ] {
        for t in ["text", "varchar", "bpchar", "name", "xml"] {
            assert_eq!(conv(t, -1, v), json!(v), "{t}: {v:?}");
        }
    }
}

#[test]
fn numbers() {
    assert_eq!(conv("int2", -1, "-32768"), json!(-32768));
    assert_eq!(conv("int4", -1, "2147483647"), json!(2147483647));
    assert_eq!(conv("int8", -1, "-9223372036854775808"), json!(i64::MIN));
    assert_eq!(conv("int8", -1, "9223372036854775807"), json!(i64::MAX));
    assert_eq!(conv("oid", -1, "4294967295"), json!(4294967295u64));
    assert!(to_json(b"12a", &m("int4", -1, false)).is_err());
    assert_eq!(
        conv("float8", -1, "1.7976931348623157e+308"),
        json!(f64::MAX)
    );
    assert_eq!(conv("float8", -1, "5e-324"), json!(5e-324));
    assert_eq!(conv("float8", -1, "-0"), json!(-0.0));
    assert_eq!(conv("float4", -1, "1.1"), json!(1.1));
    for special in ["NaN", "Infinity", "-Infinity"] {
        assert_eq!(conv("float8", -1, special), serde_json::Value::Null);
        assert_eq!(
            conv("numeric", numeric_typmod_of(10, 2), special),
            serde_json::Value::Null
        );
        // unconstrained numeric keeps it as text
        assert_eq!(conv("numeric", -1, special), json!(special));
    }
    let d = numeric_typmod_of(38, 10);
    assert_eq!(
        conv("numeric", d, "9999999999999999999999999999.9999999999"),
        json!("9999999999999999999999999999.9999999999")
    );
    assert_eq!(conv("numeric", d, "-0.0000000001"), json!("-0.0000000001"));
    assert!(to_json(b"99999999999999999999999999999.0", &m("numeric", d, false)).is_err());
    let big = format!("{}.{}", "9".repeat(200), "1".repeat(50));
    assert_eq!(conv("numeric", -1, &big), json!(big));
    assert_eq!(
        conv("xid8", -1, "18446744073709551615"),
        json!("18446744073709551615")
    );
}

#[test]
fn money_in_locale_formats() {
    for (input, want) in [
        ("$1,234.56", "1234.56"),
        ("-$1,234.56", "-1234.56"),
        ("($1,234.56)", "-1234.56"),
        ("$0.00", "0.00"),
        ("-$0.01", "-0.01"),
        ("1.234,56 €", "1234.56"),
        ("-92,233,720,368,547,758.08", "-92233720368547758.08"),
        ("¥1,234", "1234.00"),
        ("$5.5", "5.50"),
    ] {
        assert_eq!(parse_money(input).unwrap(), want, "{input}");
    }
    assert!(parse_money("abc").is_err());
    assert_eq!(conv("money", -1, "$1,000.10"), json!("1000.10"));
}

#[test]
fn booleans() {
    assert_eq!(conv("bool", -1, "t"), json!(true));
    assert_eq!(conv("bool", -1, "f"), json!(false));
    assert!(to_json(b"yes", &m("bool", -1, false)).is_err());
}

#[test]
fn dates_and_timestamps() {
    assert_eq!(conv("date", -1, "2024-02-29"), json!("2024-02-29"));
    assert_eq!(conv("date", -1, "0001-01-01"), json!("0001-01-01"));
    assert_eq!(conv("date", -1, "9999-12-31"), json!("9999-12-31"));
    for out in ["infinity", "-infinity", "0044-03-15 BC", "10000-01-01"] {
        assert_eq!(conv("date", -1, out), serde_json::Value::Null, "{out}");
    }
    for out in [
        "infinity",
        "-infinity",
        "0044-03-15 00:00:00 BC",
        "10000-01-01 00:00:00",
    ] {
        assert_eq!(conv("timestamp", -1, out), serde_json::Value::Null, "{out}");
    }
    assert!(to_json(b"03/15/2024", &m("date", -1, false)).is_err());
    assert_eq!(
        conv("timestamp", -1, "2024-01-01 10:00:00"),
        json!("2024-01-01 10:00:00.000000")
    );
    assert_eq!(
        conv("timestamp", -1, "2024-01-01 10:00:00.123456"),
        json!("2024-01-01 10:00:00.123456")
    );
    assert_eq!(
        conv("timestamp", -1, "2024-01-01 10:00:00.5"),
        json!("2024-01-01 10:00:00.500000")
    );
    let tz = |s: &str| conv("timestamptz", -1, s);
    assert_eq!(
        tz("2024-01-01 10:00:00.123456+05:30"),
        json!("2024-01-01 04:30:00.123456")
    );
    assert_eq!(
        tz("2024-01-01 10:00:00+00"),
        json!("2024-01-01 10:00:00.000000")
    );
    assert_eq!(
        tz("2024-01-01 22:00:00-03"),
        json!("2024-01-02 01:00:00.000000")
    );
    assert_eq!(
        tz("2024-03-10 01:59:59.999999-08"),
        json!("2024-03-10 09:59:59.999999")
    );
    assert_eq!(
        tz("1890-01-01 00:00:00+00:53:28"),
        json!("1889-12-31 23:06:32.000000")
    );
    assert_eq!(
        tz("2024-01-01 00:30:00+14"),
        json!("2023-12-31 10:30:00.000000")
    );
    assert_eq!(tz("9999-12-31 23:00:00-02"), serde_json::Value::Null);
    assert_eq!(tz("infinity"), serde_json::Value::Null);
    assert!(to_json(b"2024-01-01 10:00:00", &m("timestamptz", -1, false)).is_err());
    assert!(to_json(b"2024-01-01 10:00:00+5:3", &m("timestamptz", -1, false)).is_err());
    // time and interval keep their PostgreSQL text
    assert_eq!(
        conv("time", -1, "23:59:59.999999"),
        json!("23:59:59.999999")
    );
    assert_eq!(
        conv("timetz", -1, "10:00:00+05:30"),
        json!("10:00:00+05:30")
    );
    assert_eq!(
        conv("interval", -1, "1 year 2 mons -3 days 04:05:06.789"),
        json!("1 year 2 mons -3 days 04:05:06.789")
    );
}

#[test]
fn json_documents_are_nested_and_exact() {
    assert_eq!(
        conv("jsonb", -1, r#"{"a": [1, 2.5, null], "b": {"c": "x\ny"}}"#),
        json!({"a": [1, 2.5, null], "b": {"c": "x\ny"}})
    );
    assert_eq!(
        conv("json", -1, "\"just a string\""),
        json!("just a string")
    );
    assert_eq!(conv("json", -1, "42"), json!(42));
    let big = format!(
        "[{}]",
        (0..20000)
            .map(|i| format!("{{\"k{i}\":\"v\\t{i}\"}}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    assert_eq!(conv("jsonb", -1, &big).as_array().unwrap().len(), 20000);
    // write_json_value keeps numbers beyond f64 exactly
    let mut out = String::new();
    write_json_value(
        b"{\"n\": 123456789012345678901234567890.123456789}",
        &m("jsonb", -1, false),
        &mut out,
    )
    .unwrap();
    assert_eq!(out, "{\"n\": 123456789012345678901234567890.123456789}");
    assert!(to_json(b"{bad", &m("json", -1, false)).is_err());
}

#[test]
fn bytea_round_trips_every_byte() {
    let all: Vec<u8> = (0..=255u8).collect();
    let hex_text = format!("\\x{}", hex::encode(&all));
    assert_eq!(conv("bytea", -1, &hex_text), json!(hex::encode(&all)));
    // escape format
    let mut esc = String::new();
    for b in &all {
        match b {
            b'\\' => esc.push_str("\\\\"),
            0x20..=0x7e => esc.push(*b as char),
            _ => esc.push_str(&format!("\\{:03o}", b)),
        }
    }
    assert_eq!(conv("bytea", -1, &esc), json!(hex::encode(&all)));
    assert_eq!(conv("bytea", -1, "\\x"), json!(""));
    assert!(to_json(b"\\xZZ", &m("bytea", -1, false)).is_err());
}

#[test]
fn arrays_with_nulls_quotes_and_nesting() {
    assert_eq!(conv("_int4", -1, "{1,2,NULL,-4}"), json!([1, 2, null, -4]));
    assert_eq!(conv("_int4", -1, "{}"), json!([]));
    assert_eq!(conv("_int4", -1, "{{1,2},{3,4}}"), json!([[1, 2], [3, 4]]));
    assert_eq!(conv("_int4", -1, "[0:1]={7,8}"), json!([7, 8]));
    assert_eq!(
        conv(
            "_text",
            -1,
            r#"{plain,"with space","quote\"d","back\\slash","NULL",NULL,"","a,b","{x}","tab	nl
x"}"#
        ),
        json!([
            "plain",
            "with space",
            "quote\"d",
            "back\\slash",
            "NULL",
            null,
            "",
            "a,b",
            "{x}",
            "tab\tnl\nx"
        ])
    );
    assert_eq!(conv("_numeric", -1, "{1.50,NaN}"), json!(["1.50", "NaN"]));
    assert_eq!(
        conv("_timestamptz", -1, r#"{"2024-01-01 10:00:00+05:30",NULL}"#),
        json!(["2024-01-01 04:30:00.000000", null])
    );
    assert_eq!(conv("_bool", -1, "{t,f}"), json!([true, false]));
    assert_eq!(
        conv("_jsonb", -1, r#"{"{\"a\": 1}","[1, 2]"}"#),
        json!([{"a": 1}, [1, 2]])
    );
    assert!(to_json(b"{1,2", &m("_int4", -1, false)).is_err());
    assert!(to_json(b"{1,x}", &m("_int4", -1, false)).is_err());
}

#[test]
fn non_utf8_is_a_clear_error() {
    let e = to_json(&[0xff, 0xfe], &m("text", -1, false)).unwrap_err();
    assert!(
        e.to_string().contains("UTF-8") && e.to_string().contains("public.t"),
        "{e}"
    );
}

#[test]
fn csv_fields_match_json_values() {
    assert_eq!(
        to_csv_field(b"t", &m("bool", -1, false)).unwrap(),
        Some("true".into())
    );
    assert_eq!(to_csv_field(b"NaN", &m("float8", -1, false)).unwrap(), None);
    assert_eq!(
        to_csv_field(b"{1,NULL}", &m("_int4", -1, false)).unwrap(),
        Some("[1,null]".into())
    );
    assert_eq!(
        to_csv_field(b"a\"b", &m("text", -1, false)).unwrap(),
        Some("a\"b".into())
    );
}

/// The general path: `convert` then `write_out` (what `write_json_value` did for every
/// value before its fast paths).
fn reference_json(v: &str, mapping: &ColumnMapping) -> Result<String, ConvertError> {
    let mut s = String::new();
    write_out(&convert(v.as_bytes(), &mapping.conv, mapping)?, &mut s);
    Ok(s)
}

#[test]
fn fast_paths_write_exactly_what_the_general_path_writes() {
    let mut inputs: Vec<(&str, i32, String)> = Vec::new();
    // Timestamps: every fraction length, offsets of every form, day/year boundaries,
    // leap days, results out of range, near-misses that must take the general path.
    let dates = [
        "0001-01-01",
        "1890-01-01",
        "1999-12-31",
        "2000-02-29",
        "2023-02-28",
        "2024-02-29",
        "2024-12-31",
        "9999-12-31",
        "2023-02-29",
        "2024-13-01",
    ];
    let times = [
        "00:00:00",
        "23:59:59",
        "12:34:56.7",
        "12:34:56.78",
        "12:34:56.789",
        "01:02:03.0405",
        "01:02:03.04056",
        "01:02:03.040567",
        "01:02:03.0405678",
        "24:00:00",
        "23:59:60",
        "1:02:03",
    ];
    let offsets = [
        "+00",
        "-00",
        "+05:30",
        "-03",
        "+14",
        "-12",
        "+00:53:28",
        "-09:30",
        "+5:3",
        "+0530",
        "",
    ];
    for d in dates {
        for t in times {
            inputs.push(("timestamp", -1, format!("{d} {t}")));
            for o in offsets {
                inputs.push(("timestamptz", -1, format!("{d} {t}{o}")));
            }
        }
    }
    for v in [
        "infinity",
        "-infinity",
        "0044-03-15 00:00:00 BC",
        "10000-01-01 00:00:00",
    ] {
        inputs.push(("timestamp", -1, v.into()));
        inputs.push(("timestamptz", -1, format!("{v}+00")));
    }
    // Text with everything JSON escapes, multi-byte characters next to escapes.
    for v in [
        "",
        "plain",
        "tab\there",
        "q\"uote\\back",
        "nl\nCR\r",
        "\u{1}\u{1f}\u{7f}",
        "é\"ü\n日本",
        "\u{0}x",
    ] {
        inputs.push(("text", -1, v.into()));
    }
    for v in [
        "0",
        "-1",
        "9223372036854775807",
        "9223372036854775808",
        "1.5",
        "x",
        "",
    ] {
        inputs.push(("int8", -1, v.into()));
    }
    for v in ["t", "f", "true", "false", "yes", ""] {
        inputs.push(("bool", -1, v.into()));
    }
    let dec = numeric_typmod_of(10, 2);
    for v in [
        "0",
        "-12.5",
        "12345678.99",
        "123456789.1",
        "1.234",
        "NaN",
        "1e5",
        "-",
    ] {
        inputs.push(("numeric", dec, v.into()));
    }
    let mut fast_paths = 0;
    for (ty_name, typmod, v) in &inputs {
        let mapping = m(ty_name, *typmod, false);
        let mut got = String::new();
        let fast = write_json_value(v.as_bytes(), &mapping, &mut got).map(|_| got);
        let want = reference_json(v, &mapping);
        match (&fast, &want) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{ty_name} {v:?}"),
            (Err(a), Err(b)) => assert_eq!(a, b, "{ty_name} {v:?}"),
            _ => panic!("{ty_name} {v:?}: fast {fast:?}, general {want:?}"),
        }
        if (ty_name.starts_with("timestamp")
            && fast_timestamp(v, *ty_name == "timestamptz").is_some())
            || *ty_name == "text"
        {
            fast_paths += 1;
        }
    }
    assert!(
        fast_paths > 300,
        "only {fast_paths} inputs took a fast path"
    );
}
