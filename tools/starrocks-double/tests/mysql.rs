//! The FE's MySQL port, driven by mysql_async.

mod common;

use common::*;
use mysql_async::prelude::*;
use starrocks_double::{DoubleConfig, StarRocksDouble};

type Row4 = (i64, Option<String>, Option<String>, Option<String>);
type DescRow = (String, String, String, String, Option<String>, String);
type ColRow = (String, String, String, String, String, i64);

fn opts(port: u16, pass: &str) -> mysql_async::Opts {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("root"))
        .pass(Some(pass))
        .prefer_socket(false)
        .into()
}

#[tokio::test]
async fn ddl_metadata_and_select() {
    let sr = StarRocksDouble::start(DoubleConfig::default())
        .await
        .expect("start");
    let mut c = mysql_async::Conn::new(opts(sr.mysql_port(), ""))
        .await
        .expect("connect");
    let v: Option<String> = c
        .query_first("SELECT current_version()")
        .await
        .expect("version");
    assert_eq!(v.as_deref(), Some("3.3.5-starrocks-double"));
    c.query_drop("CREATE DATABASE IF NOT EXISTS db")
        .await
        .expect("create db");
    c.query_drop("CREATE TABLE IF NOT EXISTS `db`.`t` (`id` BIGINT NOT NULL, `name` VARCHAR(10) NULL, `amt` DECIMAL(10, 2) NULL, `ts` DATETIME NULL) PRIMARY KEY(`id`) DISTRIBUTED BY HASH(`id`) BUCKETS 1 PROPERTIES(\"replication_num\" = \"1\")").await.expect("create table");
    let cols: Vec<ColRow> = c
        .query("SELECT column_name, data_type, column_type, column_key, is_nullable, ordinal_position FROM information_schema.columns WHERE table_schema = 'db' AND table_name = 't' ORDER BY ordinal_position")
        .await
        .expect("columns");
    assert_eq!(
        cols[0],
        (
            "id".into(),
            "bigint".into(),
            "bigint(20)".into(),
            "PRI".into(),
            "NO".into(),
            1
        )
    );
    assert_eq!(cols[2].2, "decimal(10,2)");
    let tables: Vec<String> = c
        .query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'db'")
        .await
        .expect("tables");
    assert_eq!(tables, vec!["t".to_string()]);
    let v = load(
        &sr,
        "t",
        &[("format", "json")],
        r#"[{"id":2,"name":"b","amt":"1.5","ts":"2024-01-01 00:00:00.5"}]"#,
    )
    .await;
    assert_eq!(v["Status"], "Fail", "array without strip_outer_array");
    let v = load(
        &sr,
        "t",
        &[("format", "json"), ("strip_outer_array", "true")],
        r#"[{"id":2,"name":"b","amt":"1.5","ts":"2024-01-01 00:00:00.5"},{"id":1,"name":null}]"#,
    )
    .await;
    assert_eq!(v["Status"], "Success");
    let rows: Vec<Row4> = c
        .query("SELECT * FROM db.t ORDER BY id DESC")
        .await
        .expect("select");
    assert_eq!(
        rows[0],
        (
            2,
            Some("b".into()),
            Some("1.50".into()),
            Some("2024-01-01 00:00:00.500000".into())
        )
    );
    assert_eq!(rows[1], (1, None, None, None));
    let n: Option<i64> = c
        .query_first("SELECT COUNT(*) FROM db.t")
        .await
        .expect("count");
    assert_eq!(n, Some(2));
    // Prepared statement (binary protocol).
    let names: Vec<String> = c
        .exec("SELECT name FROM db.t WHERE id = ?", (2,))
        .await
        .expect("exec");
    assert_eq!(names, vec!["b".to_string()]);
    let ddl: Vec<(String, String)> = c.query("SHOW CREATE TABLE db.t").await.expect("show");
    assert!(ddl[0].1.contains("PRIMARY KEY(`id`)"), "{}", ddl[0].1);
    c.query_drop("ALTER TABLE db.t ADD COLUMN extra INT NULL")
        .await
        .expect("alter");
    let desc: Vec<DescRow> = c.query("DESC db.t").await.expect("desc");
    assert_eq!(desc.len(), 5);
    c.query_drop("USE db").await.expect("use");
    c.query_drop("TRUNCATE TABLE t").await.expect("truncate");
    assert!(sr.rows("db", "t").expect("rows").is_empty());
    let e = c
        .query_drop("UPDATE t SET name = 'x'")
        .await
        .expect_err("unsupported");
    match e {
        mysql_async::Error::Server(se) => assert_eq!(se.code, 1064),
        other => panic!("unexpected {other:?}"),
    }
    let e = c
        .query_drop("SELECT * FROM db.nosuch")
        .await
        .expect_err("missing");
    assert!(
        matches!(e, mysql_async::Error::Server(ref se) if se.code == 1146),
        "{e:?}"
    );
    c.query_drop("DROP TABLE db.t").await.expect("drop");
    c.disconnect().await.expect("disconnect");
}

#[tokio::test]
async fn password_is_checked() {
    let sr = StarRocksDouble::start(DoubleConfig {
        password: "pw".into(),
        ..Default::default()
    })
    .await
    .expect("start");
    assert!(mysql_async::Conn::new(opts(sr.mysql_port(), "wrong"))
        .await
        .is_err());
    let mut c = mysql_async::Conn::new(opts(sr.mysql_port(), "pw"))
        .await
        .expect("right password");
    let one: Option<i64> = c.query_first("SELECT 1").await.expect("select 1");
    assert_eq!(one, Some(1));
    c.disconnect().await.expect("disconnect");
}
