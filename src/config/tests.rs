use std::collections::HashMap;
use std::io::Write;

use super::*;

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let m: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| m.get(k).cloned()
}

const MIN: &[(&str, &str)] = &[
    ("SOURCE_URL", "postgres://repl:pg-s3cret@localhost:5432/app"),
    ("TABLES", "orders, sales.items"),
];

#[test]
fn minimal_environment_gives_defaults() {
    let c = Config::load_with(None, &env_of(MIN)).unwrap();
    assert_eq!(c.source.slot_name, "dbmazz_slot");
    assert_eq!(c.source.publication_name, "dbmazz_pub");
    assert_eq!(
        c.source.tables,
        vec![
            TableName {
                schema: "public".into(),
                name: "orders".into()
            },
            TableName {
                schema: "sales".into(),
                name: "items".into()
            },
        ]
    );
    assert!(c.sink.is_none());
    assert_eq!(c.pipeline.flush_size, 10_000);
    assert_eq!(c.pipeline.ack_policy, AckPolicy::Loaded);
    assert_eq!(c.spool.max_bytes, 10 << 30);
    assert_eq!(c.control.grpc_listen.to_string(), "127.0.0.1:50051");
    assert_eq!(c.log.format, LogFormat::Text);
}

#[test]
fn tables_has_no_default() {
    let e = Config::load_with(None, &env_of(&MIN[..1])).unwrap_err();
    assert!(
        matches!(e, ConfigError::Missing { name: "TABLES", .. }),
        "{e}"
    );
}

#[test]
fn invalid_values_name_the_variable() {
    for (k, v) in [
        ("FLUSH_SIZE", "ten"),
        ("FLUSH_SIZE", "0"),
        ("FLUSH_INTERVAL_MS", "-5"),
        ("DO_SNAPSHOT", "maybe"),
        ("SINK_PORT", "99999"),
        ("ACK_POLICY", "whenever"),
        ("SPOOL_MAX_BYTES", "lots"),
        ("LOG_FORMAT", "xml"),
        ("SOURCE_SLOT_NAME", "Bad-Name"),
    ] {
        let mut env: Vec<(&str, &str)> = MIN.to_vec();
        env.push((k, v));
        if k == "SINK_PORT" {
            env.push(("SINK_URL", "http://fe:8030"));
            env.push(("SINK_DATABASE", "d"));
        }
        let e = Config::load_with(None, &env_of(&env))
            .unwrap_err()
            .to_string();
        assert!(e.contains(k), "{k}={v}: {e}");
        assert!(e.contains(v), "{k}={v}: {e}");
    }
}

#[test]
fn environment_overrides_file_and_file_keys_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dbmazz.toml");
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(
        f,
        r#"tables = ["a", "b"]
flush_size = 500
[source]
url = "postgres://u:file-secret@h/d"
slot_name = "from_file"
[sink]
url = "http://fe:8030"
database = "analytics"
password = "sink-secret"
"#
    )
    .unwrap();
    let c = Config::load_with(Some(&path), &env_of(&[("SOURCE_SLOT_NAME", "from_env")])).unwrap();
    assert_eq!(c.source.slot_name, "from_env");
    assert_eq!(c.pipeline.flush_size, 500);
    assert_eq!(c.source.tables.len(), 2);
    let sink = c.sink.as_ref().unwrap();
    assert_eq!(sink.database, "analytics");
    assert_eq!(sink.mysql_port, 9030);
    assert_eq!(sink.password.expose_secret(), "sink-secret");

    std::fs::write(&path, "[source]\nurll = \"x\"\n").unwrap();
    let e = Config::load_with(Some(&path), &env_of(MIN)).unwrap_err();
    assert!(e.to_string().contains("source.urll"), "{e}");
}

#[test]
fn debug_and_errors_redact_secrets() {
    let mut env = MIN.to_vec();
    env.extend([
        ("SINK_URL", "http://fe:8030"),
        ("SINK_DATABASE", "d"),
        ("SINK_PASSWORD", "sr-s3cret"),
        ("CONTROL_TOKEN", "tok-s3cret"),
    ]);
    let c = Config::load_with(None, &env_of(&env)).unwrap();
    let dbg = format!("{c:?}");
    for secret in ["pg-s3cret", "sr-s3cret", "tok-s3cret"] {
        assert!(!dbg.contains(secret), "{secret} leaked in {dbg}");
    }
    assert!(dbg.contains("[REDACTED]"));

    // A bad SOURCE_URL must not echo the password back.
    let e = Config::load_with(
        None,
        &env_of(&[
            ("SOURCE_URL", "postgres://u:pg-s3cret@h/d?sslmode=nope"),
            ("TABLES", "t"),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("SOURCE_URL") && !e.contains("pg-s3cret"), "{e}");
}

#[test]
fn source_password_overrides_url_password() {
    let mut env = MIN.to_vec();
    env.push(("SOURCE_PASSWORD", "other"));
    let c = Config::load_with(None, &env_of(&env)).unwrap();
    assert_eq!(c.source.conn.password.unwrap().expose_secret(), "other");
}

#[test]
fn byte_sizes_and_table_names() {
    assert_eq!(parse_bytes("1048576"), Some(1 << 20));
    assert_eq!(parse_bytes("64MiB"), Some(64 << 20));
    assert_eq!(parse_bytes("10 GB"), Some(10 << 30));
    assert_eq!(parse_bytes("0"), None);
    assert_eq!(parse_bytes("12 parsecs"), None);
    assert_eq!(
        TableName::parse(r#""My Schema"."Odd""Name""#),
        Some(TableName {
            schema: "My Schema".into(),
            name: "Odd\"Name".into()
        })
    );
    assert_eq!(
        TableName::parse("Public.Orders").unwrap().to_string(),
        "public.orders"
    );
    assert_eq!(TableName::parse("a.b.c"), None);
}

#[test]
fn grpc_port_is_accepted_like_public_dbmazz() {
    let mut env = MIN.to_vec();
    env.push(("GRPC_PORT", "6000"));
    let c = Config::load_with(None, &env_of(&env)).unwrap();
    assert_eq!(c.control.grpc_listen.to_string(), "127.0.0.1:6000");
}

#[test]
fn help_lists_every_variable_without_secrets() {
    let h = help_table();
    for s in SETTINGS {
        assert!(h.contains(s.env), "{} missing from help", s.env);
    }
}

#[test]
fn sink_settings_have_defaults_and_are_validated() {
    let mut env = MIN.to_vec();
    env.extend([("SINK_URL", "http://fe:8030"), ("SINK_DATABASE", "d")]);
    let c = Config::load_with(None, &env_of(&env)).unwrap();
    let sink = c.sink.unwrap();
    assert_eq!(sink.format, SinkFormat::Json);
    assert_eq!(sink.max_filter_ratio, 0.0);
    assert!(!sink.create_tables);
    assert!(sink.add_columns);
    assert_eq!(sink.table_name_template, "{schema_prefix}{table}");
    assert_eq!(sink.delete_mode, DeleteMode::Hard);
    assert_eq!(sink.replication_num, 1);

    let mut good = env.clone();
    good.extend([
        ("SINK_FORMAT", "CSV"),
        ("SINK_MAX_FILTER_RATIO", "0.25"),
        ("SINK_CREATE_TABLES", "true"),
        ("SINK_ADD_COLUMNS", "false"),
        ("SINK_TABLE_NAME_TEMPLATE", "{schema}_{table}"),
        ("SINK_DELETE_MODE", "soft"),
        ("SINK_REPLICATION_NUM", "3"),
    ]);
    let sink = Config::load_with(None, &env_of(&good))
        .unwrap()
        .sink
        .unwrap();
    assert_eq!(sink.format, SinkFormat::Csv);
    assert_eq!(sink.max_filter_ratio, 0.25);
    assert!(sink.create_tables);
    assert!(!sink.add_columns);
    assert_eq!(sink.table_name_template, "{schema}_{table}");
    assert_eq!(sink.delete_mode, DeleteMode::Soft);
    assert_eq!(sink.replication_num, 3);

    for (k, v) in [
        ("SINK_FORMAT", "parquet"),
        ("SINK_MAX_FILTER_RATIO", "1.5"),
        ("SINK_MAX_FILTER_RATIO", "lots"),
        ("SINK_CREATE_TABLES", "perhaps"),
        ("SINK_ADD_COLUMNS", "perhaps"),
        ("SINK_TABLE_NAME_TEMPLATE", "fixed_name"),
        ("SINK_DELETE_MODE", "gentle"),
        ("SINK_REPLICATION_NUM", "0"),
    ] {
        let mut bad = env.clone();
        bad.push((k, v));
        let e = Config::load_with(None, &env_of(&bad))
            .unwrap_err()
            .to_string();
        assert!(e.contains(k) && e.contains(v), "{k}={v}: {e}");
    }
}

#[test]
fn accept_slot_gap_is_off_by_default_and_named_as_refusals_name_it() {
    let c = Config::load_with(None, &env_of(MIN)).unwrap();
    assert!(!c.spool.accept_slot_gap);
    // A refused spool tells the operator to set exactly this (env name and value).
    let (name, value) = crate::spool::identity::ACCEPT_GAP_SETTING
        .split_once('=')
        .unwrap();
    assert!(settings::setting(name).is_some(), "{name} is not a setting");
    let mut env = MIN.to_vec();
    env.push((name, value));
    assert!(
        Config::load_with(None, &env_of(&env))
            .unwrap()
            .spool
            .accept_slot_gap
    );
    // The TOML key too.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dbmazz.toml");
    std::fs::write(&path, "accept_slot_gap = true\n").unwrap();
    assert!(
        Config::load_with(Some(&path), &env_of(MIN))
            .unwrap()
            .spool
            .accept_slot_gap
    );
    let mut bad = MIN.to_vec();
    bad.push((name, "sometimes"));
    let e = Config::load_with(None, &env_of(&bad))
        .unwrap_err()
        .to_string();
    assert!(e.contains(name) && e.contains("sometimes"), "{e}");
}
