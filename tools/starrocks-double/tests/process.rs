//! The binary (spawned as a child with port 0) and persistence across restarts.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;
use serde_json::json;
use starrocks_double::{DoubleConfig, StarRocksDouble};

#[tokio::test]
async fn binary_prints_ports_and_serves() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_starrocks-double"))
        .args([
            "--fe-http-port",
            "0",
            "--be-http-port",
            "0",
            "--mysql-port",
            "0",
            "--control-port",
            "0",
            "--user",
            "root",
            "--password",
            "",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read line");
    let ports: serde_json::Value = serde_json::from_str(&line).expect("json line");
    for k in ["fe_http_port", "be_http_port", "mysql_port", "control_port"] {
        assert!(ports[k].as_u64().expect("port") > 0, "{line}");
    }
    let fe = format!("http://127.0.0.1:{}", ports["fe_http_port"]);
    let r = get(&format!("{fe}/api/health"), false).await;
    assert_eq!(r.json()["status"], "OK");
    let ctl = format!("http://127.0.0.1:{}", ports["control_port"]);
    let out: serde_json::Value = client()
        .post(format!("{ctl}/sql"))
        .body("CREATE DATABASE d")
        .send()
        .await
        .expect("sql")
        .json()
        .await
        .expect("json");
    assert_eq!(out, json!({"affected_rows": 0}));
    child.kill().expect("kill");
    child.wait().expect("wait");
}

#[tokio::test]
async fn persistence_survives_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = DoubleConfig {
        data_dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let sr = start_with(cfg.clone()).await;
    let v = load(
        &sr,
        "t",
        &[("label", "keep"), ("format", "json")],
        r#"{"id":1,"name":"a"}"#,
    )
    .await;
    assert_eq!(v["Status"], "Success");
    sr.stop().await;
    let sr = StarRocksDouble::start(cfg).await.expect("restart");
    assert_eq!(sr.rows("db", "t").expect("rows")[0]["name"], "a");
    let v = load(
        &sr,
        "t",
        &[("label", "keep"), ("format", "json")],
        r#"{"id":2}"#,
    )
    .await;
    assert_eq!(v["ExistingJobStatus"], "FINISHED", "labels survive too");
    let v = load(
        &sr,
        "t",
        &[("label", "new"), ("format", "json")],
        r#"{"id":2}"#,
    )
    .await;
    assert!(v["TxnId"].as_i64().expect("txn") > 1000);
    sr.stop().await;
}
