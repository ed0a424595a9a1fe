//! Shared helpers for the double's integration tests.
#![allow(dead_code)]

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use starrocks_double::{DoubleConfig, StarRocksDouble};

pub const AUTH: &str = "Basic cm9vdDo="; // root:

pub const DDL: &str = "CREATE TABLE t (id BIGINT NOT NULL, name VARCHAR(10) NULL, score INT NULL, note STRING NULL DEFAULT 'd') PRIMARY KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 1 PROPERTIES(\"replication_num\"=\"1\")";

pub async fn start() -> StarRocksDouble {
    start_with(DoubleConfig::default()).await
}

pub async fn start_with(cfg: DoubleConfig) -> StarRocksDouble {
    let sr = StarRocksDouble::start(cfg).await.expect("start double");
    sr.create_table("db", DDL).expect("create table");
    sr
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("client")
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not json ({e}): {}", self.text))
    }
}

pub async fn put(url: &str, headers: &[(&str, &str)], body: impl Into<reqwest::Body>) -> Reply {
    let mut rb = client().put(url);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.body(body).send().await.expect("send");
    Reply {
        status: r.status(),
        headers: r.headers().clone(),
        text: r.text().await.expect("body"),
    }
}

pub async fn get(url: &str, auth: bool) -> Reply {
    let mut rb = client().get(url);
    if auth {
        rb = rb.header("Authorization", AUTH);
    }
    let r = rb.send().await.expect("send");
    Reply {
        status: r.status(),
        headers: r.headers().clone(),
        text: r.text().await.expect("body"),
    }
}

/// PUT straight to the BE with auth and the given headers; returns the parsed JSON.
pub async fn load(
    sr: &StarRocksDouble,
    table: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> serde_json::Value {
    let mut h = vec![("Authorization", AUTH)];
    h.extend_from_slice(headers);
    let r = put(
        &format!("{}/api/db/{table}/_stream_load", sr.be_http_url()),
        &h,
        body.to_string(),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "BE always answers 200: {}",
        r.text
    );
    r.json()
}

pub fn keys_in_order(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix('"'))
        .filter_map(|l| l.split('"').next())
        .map(str::to_string)
        .collect()
}
