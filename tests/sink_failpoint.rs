//! The `sink::after-body-before-reply` failpoint fires after the BE has the whole body
//! and has answered, before the reply is read: the load is committed although the client
//! never learns it, and a retry with the same label counts it as loaded, once.
//! (Alone in its binary: failpoints are process-wide.)

use std::time::Duration;

use bytes::Bytes;
use dbmazz::config::{DeleteMode, SinkConfig, SinkFormat};
use dbmazz::connectors::sinks::starrocks::{LoadFormat, LoadRequest, LoadStatus, StreamLoadClient};
use dbmazz::failpoints::SINK_AFTER_BODY;
use secrecy::SecretString;
use starrocks_double::{DoubleConfig, StarRocksDouble, TxnState};

#[tokio::test]
async fn after_body_before_reply_leaves_a_committed_label() {
    let sr = StarRocksDouble::start(DoubleConfig::default())
        .await
        .unwrap();
    sr.create_table(
        "db",
        "CREATE TABLE t (id BIGINT NOT NULL, v VARCHAR(100) NULL) PRIMARY KEY(id) DISTRIBUTED BY HASH(id)",
    )
    .unwrap();
    let cfg = SinkConfig {
        fe_url: url::Url::parse(&sr.fe_http_url()).unwrap(),
        be_url: None,
        mysql_port: sr.mysql_port(),
        database: "db".into(),
        user: "root".into(),
        password: SecretString::from(String::new()),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(10),
        format: SinkFormat::Json,
        max_filter_ratio: 0.0,
        create_tables: false,
        add_columns: true,
        table_name_template: "{schema_prefix}{table}".into(),
        delete_mode: DeleteMode::Hard,
        replication_num: 1,
    };
    let c = std::sync::Arc::new(StreamLoadClient::new(&cfg).unwrap());
    let req = LoadRequest {
        database: "db".into(),
        table: "t".into(),
        label: "fp1".into(),
        body: Bytes::from_static(br#"[{"id":1,"v":"a"},{"id":2,"v":"b"}]"#),
        format: LoadFormat::Json,
        columns: None,
        partial_update: false,
        rows: 2,
    };
    // `panic` instead of `return` (which aborts the process, as a `dbmazz` child uses it).
    fail::cfg(SINK_AFTER_BODY, "panic").unwrap();
    let (c1, r1) = (c.clone(), req.clone());
    let died = tokio::spawn(async move { c1.load(&r1).await }).await;
    fail::remove(SINK_AFTER_BODY);
    assert!(
        died.is_err_and(|e| e.is_panic()),
        "the failpoint did not fire"
    );
    assert_eq!(
        sr.label("db", "fp1").map(|l| l.state),
        Some(TxnState::Visible),
        "the BE had the whole body and committed it"
    );
    let o = c.load(&req).await.unwrap();
    assert_eq!(o.status, LoadStatus::AlreadyLoaded);
    assert_eq!(sr.rows("db", "t").unwrap().len(), 2);
    assert_eq!(sr.loads().iter().filter(|l| l.committed).count(), 1);
    sr.stop().await;
}
