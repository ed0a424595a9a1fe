//! Target table checks and DDL over the StarRocks double's MySQL port.

use std::time::Duration;

use dbmazz::config::{DeleteMode, SinkConfig, SinkFormat};
use dbmazz::connectors::sinks::starrocks::tables::EnsureOutcome;
use dbmazz::connectors::sinks::starrocks::{map_column, ColumnMapping, TableAdmin, TableError};
use dbmazz::connectors::sources::postgres::catalog::PgType;
use secrecy::SecretString;
use starrocks_double::{DoubleConfig, StarRocksDouble};

fn cfg(sr: &StarRocksDouble, create: bool) -> SinkConfig {
    SinkConfig {
        fe_url: url::Url::parse(&sr.fe_http_url()).unwrap(),
        be_url: None,
        mysql_port: sr.mysql_port(),
        database: "db".into(),
        user: "root".into(),
        password: SecretString::from("pw".to_string()),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(10),
        format: SinkFormat::Json,
        max_filter_ratio: 0.0,
        create_tables: create,
        add_columns: true,
        table_name_template: "{schema_prefix}{table}".into(),
        delete_mode: DeleteMode::Hard,
        replication_num: 1,
    }
}

fn cols(extra: bool) -> Vec<ColumnMapping> {
    let ty = |n: &str| PgType::builtin_named(n).unwrap();
    let mut v = vec![
        map_column("public.orders", "id", &ty("int8"), -1, true).unwrap(),
        map_column(
            "public.orders",
            "amount",
            &ty("numeric"),
            ((12 << 16) | 2) + 4,
            false,
        )
        .unwrap(),
        map_column("public.orders", "note", &ty("text"), -1, false).unwrap(),
        map_column("public.orders", "at", &ty("timestamptz"), -1, false).unwrap(),
    ];
    if extra {
        v.push(map_column("public.orders", "tags", &ty("jsonb"), -1, false).unwrap());
    }
    v
}

async fn double() -> StarRocksDouble {
    let sr = StarRocksDouble::start(DoubleConfig {
        password: "pw".into(),
        ..DoubleConfig::default()
    })
    .await
    .unwrap();
    sr.execute_sql(None, "CREATE DATABASE db").unwrap();
    sr
}

#[tokio::test]
async fn missing_table_is_reported_or_created_then_checked() {
    let sr = double().await;
    let keys = vec!["id".to_string()];
    let admin = TableAdmin::new(&cfg(&sr, false));
    let e = admin
        .ensure_table("public.orders", "orders", &cols(false), &keys)
        .await
        .unwrap_err();
    assert!(matches!(e, TableError::Missing { .. }), "{e}");
    assert!(e.to_string().contains("PRIMARY KEY(`id`)"), "{e}");

    let admin = TableAdmin::new(&cfg(&sr, true));
    assert_eq!(
        admin
            .ensure_table("public.orders", "orders", &cols(false), &keys)
            .await
            .unwrap(),
        EnsureOutcome::Created
    );
    assert_eq!(
        admin
            .ensure_table("public.orders", "orders", &cols(false), &keys)
            .await
            .unwrap(),
        EnsureOutcome::Ok
    );
    // a new source column is added
    assert_eq!(
        admin
            .ensure_table("public.orders", "orders", &cols(true), &keys)
            .await
            .unwrap(),
        EnsureOutcome::AddedColumns(vec!["tags".into()])
    );
    let desc = admin.describe("orders").await.unwrap().unwrap();
    assert!(desc
        .iter()
        .any(|c| c.name == "tags" && c.data_type == "json"));
    assert!(desc.iter().any(|c| c.name == "id" && c.is_key));
    sr.stop().await;
}

#[tokio::test]
async fn incompatible_tables_list_the_differences() {
    let sr = double().await;
    sr.create_table("db", "CREATE TABLE orders (id INT NOT NULL, amount DECIMAL(10,4) NULL, note VARCHAR(10) NULL, at DATETIME NULL) PRIMARY KEY(id) DISTRIBUTED BY HASH(id)").unwrap();
    sr.create_table("db", "CREATE TABLE other__orders (note VARCHAR(100) NOT NULL, id BIGINT NOT NULL, amount DECIMAL(12,2) NULL, at DATETIME NULL) PRIMARY KEY(note) DISTRIBUTED BY HASH(note)").unwrap();
    let admin = TableAdmin::new(&cfg(&sr, true));
    let keys = vec!["id".to_string()];
    let e = admin
        .ensure_table("public.orders", "orders", &cols(false), &keys)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("column id") && e.contains("column amount") && e.contains("column note"),
        "{e}"
    );
    let e = admin
        .ensure_table("other.orders", "other__orders", &cols(false), &keys)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("primary key"), "{e}");
    sr.stop().await;
}

#[tokio::test]
async fn truncate_empties_the_table() {
    let sr = double().await;
    sr.create_table(
        "db",
        "CREATE TABLE t (id BIGINT NOT NULL) PRIMARY KEY(id) DISTRIBUTED BY HASH(id)",
    )
    .unwrap();
    sr.execute_sql(Some("db"), "INSERT INTO t VALUES (1)").ok();
    let admin = TableAdmin::new(&cfg(&sr, false));
    admin.truncate("t").await.unwrap();
    assert!(sr.rows("db", "t").unwrap().is_empty());
    sr.stop().await;
}

#[tokio::test]
async fn bad_password_and_unreachable_port_fail_clearly() {
    let sr = double().await;
    let mut c = cfg(&sr, false);
    c.password = SecretString::from("wrong-s3cret".to_string());
    let e = TableAdmin::new(&c).ping().await.unwrap_err();
    assert!(matches!(e, TableError::Auth { .. }), "{e:?}");
    assert!(!e.is_transient(), "{e}");
    let text = format!("{e} {e:?}");
    assert!(!text.contains("wrong-s3cret"), "{text}");
    assert!(
        e.to_string().contains("check SINK_USER and SINK_PASSWORD"),
        "{e}"
    );

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut c = cfg(&sr, false);
    c.mysql_port = port;
    // No I/O at construction.
    let admin = TableAdmin::new(&c);
    let e = admin.ping().await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert_eq!(
        e.to_string(),
        format!("cannot connect to the StarRocks FE MySQL port 127.0.0.1:{port} (SINK_URL host, SINK_PORT): connection refused")
    );
    sr.stop().await;
}

/// The connection opens lazily, survives the port going away (transient errors, no
/// panic, no hang) and is reopened when the port is back.
#[tokio::test]
async fn the_connection_is_reopened_after_a_loss() {
    let sr = double().await;
    sr.create_table(
        "db",
        "CREATE TABLE t (id BIGINT NOT NULL) PRIMARY KEY(id) DISTRIBUTED BY HASH(id)",
    )
    .unwrap();
    let admin = TableAdmin::new(&cfg(&sr, false));
    admin.ping().await.unwrap();
    let down = sr.set_fault(
        starrocks_double::Fault::Down {
            node: starrocks_double::Node::Mysql,
        },
        starrocks_double::FaultDuration::Forever,
    );
    let e = admin.truncate("t").await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(
        matches!(e, TableError::Connect { .. } | TableError::Lost { .. }),
        "{e:?}"
    );
    sr.remove_fault(down);
    let start = std::time::Instant::now();
    loop {
        match admin.ping().await {
            Ok(()) => break,
            Err(e) => {
                assert!(e.is_transient(), "{e}");
                assert!(start.elapsed() < Duration::from_secs(30), "never back: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    admin.truncate("t").await.unwrap();
    sr.stop().await;
}
