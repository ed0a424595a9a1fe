//! Stream Load client against the StarRocks test double: FE 307 with auth kept, straight to
//! the BE, Status checks, classification, retries, timeouts, labels, filtered rows, auth,
//! and value round trips (pgoutput text → JSON body → read back equal).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dbmazz::config::{DeleteMode, SinkConfig, SinkFormat};
use dbmazz::connectors::sinks::starrocks::{
    csv, map_column, write_json_value, FailureKind, LoadFormat, LoadRequest, LoadStatus,
    RejectReason, RetryPolicy, SinkError, StreamLoadClient,
};
use dbmazz::connectors::sources::postgres::catalog::PgType;
use secrecy::SecretString;
use serde_json::json;
use starrocks_double::{DoubleConfig, Fault, FaultDuration, Node, StarRocksDouble};

const DDL: &str = "CREATE TABLE t (id BIGINT NOT NULL, v VARCHAR(100) NULL) PRIMARY KEY(id) DISTRIBUTED BY HASH(id)";

fn cfg(sr: &StarRocksDouble, be: bool, password: &str, timeout: Duration) -> SinkConfig {
    SinkConfig {
        fe_url: url::Url::parse(&sr.fe_http_url()).unwrap(),
        be_url: be.then(|| url::Url::parse(&sr.be_http_url()).unwrap()),
        mysql_port: sr.mysql_port(),
        database: "db".into(),
        user: "root".into(),
        password: SecretString::from(password.to_string()),
        connect_timeout: Duration::from_secs(2),
        request_timeout: timeout,
        format: SinkFormat::Json,
        max_filter_ratio: 0.0,
        create_tables: false,
        add_columns: true,
        table_name_template: "{schema_prefix}{table}".into(),
        delete_mode: DeleteMode::Hard,
        replication_num: 1,
    }
}

async fn double() -> StarRocksDouble {
    let sr = StarRocksDouble::start(DoubleConfig {
        password: "pw".into(),
        ..DoubleConfig::default()
    })
    .await
    .unwrap();
    sr.create_table("db", DDL).unwrap();
    sr
}

/// A JSON load; `rows` is the number of objects in the body (what the counts must match).
fn req(label: &str, body: &str) -> LoadRequest {
    let rows = serde_json::from_str::<Vec<serde_json::Value>>(body)
        .map(|v| v.len())
        .unwrap_or(0);
    LoadRequest {
        database: "db".into(),
        table: "t".into(),
        label: label.into(),
        body: Bytes::from(body.to_string()),
        format: LoadFormat::Json,
        columns: None,
        partial_update: false,
        rows,
    }
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        initial_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
        jitter: 0.2,
        max_attempts: None,
    }
}

#[tokio::test]
async fn load_through_fe_redirect_keeps_auth() {
    let sr = double().await;
    let c = StreamLoadClient::new(&cfg(&sr, false, "pw", Duration::from_secs(10))).unwrap();
    let o = c
        .load(&req("l1", r#"[{"id":1,"v":"a"},{"id":2,"v":"b"}]"#))
        .await
        .unwrap();
    assert_eq!(o.status, LoadStatus::Success);
    assert_eq!(o.loaded_rows, 2);
    let rows = sr.rows("db", "t").unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["v"], json!("b"));
    // the BE saw our label and the JSON headers
    let loads = sr.loads();
    assert_eq!(loads.len(), 1);
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("pw") || !dbg.contains("cm9vdDpwdw"), "{dbg}");
    // replay with the same label: already loaded, nothing twice
    let o = c.load(&req("l1", r#"[{"id":3,"v":"c"}]"#)).await.unwrap();
    assert_eq!(o.status, LoadStatus::AlreadyLoaded);
    assert_eq!(sr.rows("db", "t").unwrap().len(), 2);
    sr.stop().await;
}

#[tokio::test]
async fn load_straight_to_be_and_deletes() {
    let sr = double().await;
    let c = StreamLoadClient::new(&cfg(&sr, true, "pw", Duration::from_secs(10))).unwrap();
    c.load(&req("a", r#"[{"id":1,"v":"a"},{"id":2,"v":"b"}]"#))
        .await
        .unwrap();
    c.load(&req("b", r#"[{"id":1,"__op":1}]"#)).await.unwrap();
    let rows = sr.rows("db", "t").unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], json!(2));
    sr.stop().await;
}

#[tokio::test]
async fn bad_credentials_are_permanent_and_secret() {
    let sr = double().await;
    for be in [false, true] {
        let c =
            StreamLoadClient::new(&cfg(&sr, be, "wrong-s3cret", Duration::from_secs(5))).unwrap();
        let calls = AtomicU32::new(0);
        let e = c
            .load_with_retry(&req("x", "[]"), &fast(), |_, _, _| {
                calls.fetch_add(1, Ordering::SeqCst);
            })
            .await
            .unwrap_err();
        assert!(!e.is_transient(), "{e}");
        assert!(matches!(e, SinkError::Auth { .. }), "be={be}: {e:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        let text = format!("{e} {e:?}");
        assert!(
            !text.contains("wrong-s3cret") && !text.contains("Basic "),
            "{text}"
        );
    }
    sr.stop().await;
}

#[tokio::test]
async fn status_fail_transient_is_retried_with_the_same_label() {
    let sr = double().await;
    let c = StreamLoadClient::new(&cfg(&sr, false, "pw", Duration::from_secs(10))).unwrap();
    sr.set_fault(
        Fault::StatusFail {
            message: "Too many versions. tablet_id: 1, version_count: 1001, limit: 1000".into(),
            commit: false,
        },
        FaultDuration::Count(2),
    );
    sr.set_fault(Fault::TooManyTxns, FaultDuration::Count(1));
    let retries = AtomicU32::new(0);
    let o = c
        .load_with_retry(&req("r1", r#"[{"id":1,"v":"x"}]"#), &fast(), |e, _, _| {
            assert!(e.is_transient());
            retries.fetch_add(1, Ordering::SeqCst);
        })
        .await
        .unwrap();
    assert_eq!(retries.load(Ordering::SeqCst), 3);
    assert_eq!(o.attempts, 4);
    let labels: Vec<_> = sr.loads().iter().map(|l| l.label.clone()).collect();
    assert!(labels.iter().all(|l| l == "r1"), "{labels:?}");
    assert_eq!(sr.rows("db", "t").unwrap().len(), 1);
    sr.stop().await;
}

#[tokio::test]
async fn ambiguous_commit_then_retry_counts_as_loaded() {
    let sr = double().await;
    let c = StreamLoadClient::new(&cfg(&sr, false, "pw", Duration::from_secs(10))).unwrap();
    sr.set_fault(
        Fault::StatusFail {
            message: "Commit transaction fail cause rpc, Transaction status unknown, you can retry with same label.".into(),
            commit: true,
        },
        FaultDuration::Count(1),
    );
    let o = c
        .load_with_retry(&req("amb", r#"[{"id":7,"v":"x"}]"#), &fast(), |_, _, _| {})
        .await
        .unwrap();
    assert_eq!(o.status, LoadStatus::AlreadyLoaded);
    assert_eq!(sr.rows("db", "t").unwrap().len(), 1);
    sr.stop().await;
}

#[tokio::test]
async fn status_fail_permanent_stops_at_once() {
    let sr = double().await;
    let c = StreamLoadClient::new(&cfg(&sr, false, "pw", Duration::from_secs(10))).unwrap();
    let mut r = req("p1", r#"[{"id":1,"v":"x"}]"#);
    r.table = "no_such_table".into();
    let e = c
        .load_with_retry(&r, &fast(), |_, _, _| panic!("no retry"))
        .await
        .unwrap_err();
    assert!(!e.is_transient(), "{e}");
    sr.set_fault(
        Fault::StatusFail {
            message: "primary key size exceed the limit.".into(),
            commit: false,
        },
        FaultDuration::Count(1),
    );
    let e = c
        .load_with_retry(&req("p2", "[]"), &fast(), |_, _, _| panic!("no retry"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, SinkError::Refused { failure, .. } if failure.kind == FailureKind::Permanent),
        "{e:?}"
    );
    sr.stop().await;
}

#[tokio::test]
async fn http_5xx_is_transient() {
    let sr = double().await;
    let c = StreamLoadClient::new(&cfg(&sr, false, "pw", Duration::from_secs(10))).unwrap();
    sr.set_fault(
        Fault::Http5xx {
            node: Node::Be,
            status: 503,
        },
        FaultDuration::Count(1),
    );
    let e = c
        .load(&req("h1", r#"[{"id":1,"v":"x"}]"#))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, SinkError::Refused { failure, .. } if failure.http_status == 503),
        "{e:?}"
    );
    assert!(e.is_transient());
    sr.set_fault(
        Fault::Http5xx {
            node: Node::Fe,
            status: 500,
        },
        FaultDuration::Count(2),
    );
    let o = c
        .load_with_retry(&req("h1", r#"[{"id":1,"v":"x"}]"#), &fast(), |_, _, _| {})
        .await
        .unwrap();
    assert_eq!(o.attempts, 3);
    sr.stop().await;
}

#[tokio::test]
async fn publish_timeout_is_success() {
    let sr = double().await;
    let c = StreamLoadClient::new(&cfg(&sr, false, "pw", Duration::from_secs(10))).unwrap();
    sr.set_fault(
        Fault::PublishTimeout {
            visible_after_ms: 0,
        },
        FaultDuration::Count(1),
    );
    let o = c.load(&req("pt", r#"[{"id":1,"v":"x"}]"#)).await.unwrap();
    assert_eq!(o.status, LoadStatus::PublishTimeout);
    sr.stop().await;
}

#[tokio::test]
async fn hang_fires_the_timeout_then_retry_succeeds() {
    let sr = double().await;
    let c = StreamLoadClient::new(&cfg(&sr, false, "pw", Duration::from_millis(500))).unwrap();
    sr.set_fault(Fault::Hang { node: Node::Be }, FaultDuration::Count(1));
    let t0 = std::time::Instant::now();
    let e = c
        .load(&req("hang", r#"[{"id":1,"v":"x"}]"#))
        .await
        .unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(
            e,
            SinkError::Transport {
                timed_out: true,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_transient());
    let o = c
        .load_with_retry(&req("hang", r#"[{"id":1,"v":"x"}]"#), &fast(), |_, _, _| {})
        .await
        .unwrap();
    assert!(matches!(
        o.status,
        LoadStatus::Success | LoadStatus::AlreadyLoaded
    ));
    assert_eq!(sr.rows("db", "t").unwrap().len(), 1);
    sr.stop().await;
}

#[tokio::test]
async fn label_running_is_waited_for() {
    let sr = double().await;
    let c = std::sync::Arc::new(
        StreamLoadClient::new(&cfg(&sr, false, "pw", Duration::from_secs(10))).unwrap(),
    );
    sr.set_fault(
        Fault::LabelRunning { hold_ms: 1500 },
        FaultDuration::Count(1),
    );
    let c1 = c.clone();
    let first = tokio::spawn(async move { c1.load(&req("run", r#"[{"id":1,"v":"x"}]"#)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = c.load(&req("run", r#"[{"id":1,"v":"x"}]"#)).await.unwrap();
    assert_eq!(second.status, LoadStatus::AlreadyLoaded);
    assert_eq!(first.await.unwrap().unwrap().status, LoadStatus::Success);
    assert_eq!(sr.rows("db", "t").unwrap().len(), 1);
    sr.stop().await;
}

#[tokio::test]
async fn filtered_rows_are_a_permanent_error_with_the_error_log() {
    let sr = double().await;
    let c = StreamLoadClient::new(&cfg(&sr, false, "pw", Duration::from_secs(10))).unwrap();
    let e = c
        .load_with_retry(
            &req(
                "f1",
                r#"[{"id":1,"v":"x"},{"id":"not a number","v":"y"},{"v":"no key"}]"#,
            ),
            &fast(),
            |_, _, _| panic!("no retry"),
        )
        .await
        .unwrap_err();
    assert!(!e.is_transient());
    let SinkError::Rejected(f) = &e else {
        panic!("{e:?}")
    };
    assert!(f.counts.filtered >= 1, "{e}");
    assert_eq!(f.reason, RejectReason::Filtered);
    assert!(!f.label_committed, "a Fail aborts the transaction: {e}");
    assert!(
        f.error_url
            .as_deref()
            .is_some_and(|u| u.contains("_load_error_log")),
        "{e}"
    );
    assert!(f.first_errors.is_some(), "{e}");
    assert!(sr.rows("db", "t").unwrap().is_empty());
    sr.stop().await;
}

/// pgoutput text values → JSON body → StarRocks → read back equal.
#[tokio::test]
async fn value_edge_cases_round_trip() {
    let sr = double().await;
    sr.create_table(
        "db",
        "CREATE TABLE e (id BIGINT NOT NULL, s VARCHAR(1048576) NULL, n DECIMAL(38,10) NULL, ts DATETIME NULL, tz DATETIME NULL, d DATE NULL, j JSON NULL, b VARCHAR(1048576) NULL, a JSON NULL, f DOUBLE NULL, ok BOOLEAN NULL) PRIMARY KEY(id) DISTRIBUTED BY HASH(id)",
    )
    .unwrap();
    let ty = |n: &str| PgType::builtin_named(n).unwrap();
    let numeric = ((38 << 16) | 10) + 4;
    let cols = [
        (
            "s",
            map_column("public.e", "s", &ty("text"), -1, false).unwrap(),
        ),
        (
            "n",
            map_column("public.e", "n", &ty("numeric"), numeric, false).unwrap(),
        ),
        (
            "ts",
            map_column("public.e", "ts", &ty("timestamp"), -1, false).unwrap(),
        ),
        (
            "tz",
            map_column("public.e", "tz", &ty("timestamptz"), -1, false).unwrap(),
        ),
        (
            "d",
            map_column("public.e", "d", &ty("date"), -1, false).unwrap(),
        ),
        (
            "j",
            map_column("public.e", "j", &ty("jsonb"), -1, false).unwrap(),
        ),
        (
            "b",
            map_column("public.e", "b", &ty("bytea"), -1, false).unwrap(),
        ),
        (
            "a",
            map_column("public.e", "a", &ty("_text"), -1, false).unwrap(),
        ),
        (
            "f",
            map_column("public.e", "f", &ty("float8"), -1, false).unwrap(),
        ),
        (
            "ok",
            map_column("public.e", "ok", &ty("bool"), -1, false).unwrap(),
        ),
    ];
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let bytea = format!("\\x{}", hex::encode(&all_bytes));
    // (column, pgoutput text or None for NULL, expected read-back)
    let cases: Vec<(&str, Option<String>, serde_json::Value)> = vec![
        ("s", Some(String::new()), json!("")),
        (
            "s",
            Some("tab\there\nnew \"q\" back\\slash \\N".into()),
            json!("tab\there\nnew \"q\" back\\slash \\N"),
        ),
        (
            "s",
            Some("ünïcødé 🚀 中文".into()),
            json!("ünïcødé 🚀 中文"),
        ),
        ("s", None, serde_json::Value::Null),
        (
            "n",
            Some("9999999999999999999999999999.9999999999".into()),
            json!("9999999999999999999999999999.9999999999"),
        ),
        ("n", Some("-0.0000000001".into()), json!("-0.0000000001")),
        ("n", Some("NaN".into()), serde_json::Value::Null),
        (
            "ts",
            Some("2024-02-29 23:59:59.999999".into()),
            json!("2024-02-29 23:59:59.999999"),
        ),
        (
            "tz",
            Some("2024-01-01 10:00:00.123456+05:30".into()),
            json!("2024-01-01 04:30:00.123456"),
        ),
        (
            "tz",
            Some("2024-01-01 22:00:00-03".into()),
            json!("2024-01-02 01:00:00"),
        ),
        ("d", Some("0001-01-01".into()), json!("0001-01-01")),
        ("d", Some("infinity".into()), serde_json::Value::Null),
        (
            "j",
            Some(r#"{"a": [1, "x\ty", null], "b": {"c": true}}"#.into()),
            json!({"a": [1, "x\ty", null], "b": {"c": true}}),
        ),
        ("b", Some(bytea), json!(hex::encode(&all_bytes))),
        (
            "a",
            Some(r#"{plain,"q\"d",NULL,"","a,b"}"#.into()),
            json!(["plain", "q\"d", null, "", "a,b"]),
        ),
        ("f", Some("1.7976931348623157e+308".into()), json!(f64::MAX)),
        ("ok", Some("t".into()), json!(true)),
    ];
    let mut body = String::from("[");
    for (i, (col, text, _)) in cases.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!("{{\"id\":{i},\"{col}\":"));
        let m = &cols.iter().find(|(n, _)| n == col).unwrap().1;
        match text {
            Some(t) => write_json_value(t.as_bytes(), m, &mut body).unwrap(),
            None => body.push_str("null"),
        }
        body.push('}');
    }
    body.push(']');
    let c = StreamLoadClient::new(&cfg(&sr, false, "pw", Duration::from_secs(10))).unwrap();
    let mut r = req("edge", &body);
    r.table = "e".into();
    c.load(&r).await.unwrap();
    let rows = sr.rows("db", "e").unwrap();
    assert_eq!(rows.len(), cases.len());
    for (i, (col, text, want)) in cases.iter().enumerate() {
        let got = &rows[i][*col];
        let ok = match (col, want) {
            // DECIMAL reads back at the column scale
            (&"n", serde_json::Value::String(w)) => got
                .as_str()
                .is_some_and(|g| g.trim_end_matches('0') == w.trim_end_matches('0')),
            _ => got == want,
        };
        assert!(ok, "{col} {text:?}: got {got}, want {want}");
    }
    sr.stop().await;
}

#[tokio::test]
async fn csv_body_round_trips_every_character() {
    let sr = double().await;
    let values = [
        "",
        "a,b",
        "line\nbreak",
        "quote\"d",
        "back\\slash",
        "\\N",
        "tab\t",
        "ünï 🚀",
        "\r\n",
    ];
    let mut body = Vec::new();
    for (i, v) in values.iter().enumerate() {
        csv::write_row(&[Some(i.to_string()), Some((*v).to_string())], &mut body);
    }
    csv::write_row(&[Some("100".to_string()), None], &mut body);
    let c = StreamLoadClient::new(&cfg(&sr, true, "pw", Duration::from_secs(10))).unwrap();
    let mut r = req("csv1", "");
    r.body = Bytes::from(body);
    r.rows = values.len() + 1;
    r.format = LoadFormat::Csv;
    r.columns = Some(vec!["id".into(), "v".into()]);
    c.load(&r).await.unwrap();
    let rows = sr.rows("db", "t").unwrap();
    for (i, v) in values.iter().enumerate() {
        assert_eq!(rows[i]["v"], json!(v), "{v:?}");
    }
    assert_eq!(rows[values.len()]["v"], serde_json::Value::Null);
    sr.stop().await;
}

#[tokio::test]
async fn partial_update_keeps_unlisted_columns() {
    let sr = StarRocksDouble::start(DoubleConfig {
        password: "pw".into(),
        ..DoubleConfig::default()
    })
    .await
    .unwrap();
    sr.create_table("db", "CREATE TABLE t (id BIGINT NOT NULL, v VARCHAR(100) NULL, w VARCHAR(100) NULL) PRIMARY KEY(id) DISTRIBUTED BY HASH(id)").unwrap();
    let c = StreamLoadClient::new(&cfg(&sr, false, "pw", Duration::from_secs(10))).unwrap();
    c.load(&req("full", r#"[{"id":1,"v":"a","w":"toast"}]"#))
        .await
        .unwrap();
    let mut r = req("part", r#"[{"id":1,"v":"b"}]"#);
    r.partial_update = true;
    r.columns = Some(vec!["id".into(), "v".into()]);
    c.load(&r).await.unwrap();
    let rows = sr.rows("db", "t").unwrap();
    assert_eq!(rows[0]["v"], json!("b"));
    assert_eq!(rows[0]["w"], json!("toast"));
    sr.stop().await;
}

const THREE: &str = r#"[{"id":1,"v":"a"},{"id":2,"v":"b"},{"id":3,"v":"c"}]"#;

/// Issue 9, case 1: StarRocks answers `Success` (or `Publish Timeout`) but filtered rows
/// with max_filter_ratio 0. The label is committed, so this must be a typed rejection that
/// says so (a retry would be "already loaded" and lose the rows), never a success.
#[tokio::test]
async fn success_with_filtered_rows_is_a_rejection_with_the_label_committed() {
    let sr = double().await;
    let c = StreamLoadClient::new(&cfg(&sr, false, "pw", Duration::from_secs(10))).unwrap();
    sr.set_fault(Fault::FilteredSuccess { rows: 1 }, FaultDuration::Count(1));
    let e = c
        .load_with_retry(&req("fs", THREE), &fast(), |e, _, _| {
            panic!("no retry: {e}")
        })
        .await
        .unwrap_err();
    assert!(!e.is_transient());
    assert_eq!(
        e.kind(),
        FailureKind::Rejected {
            reason: RejectReason::Filtered,
            label_committed: true
        }
    );
    let SinkError::Rejected(r) = &e else {
        panic!("{e:?}")
    };
    assert_eq!((r.rows_sent, r.counts.loaded, r.counts.filtered), (3, 2, 1));
    let url = r.error_url.clone().expect("ErrorURL");
    assert!(r.first_errors.is_some(), "{e}");
    let text = e.to_string();
    assert!(
        text.starts_with(
            "StarRocks committed the load into t (label fs) without all its rows: 1 of 3 rows failed its data checks"
        ) && text.contains(&url)
            && text.contains("must be loaded again under a new label"),
        "{text}"
    );
    // The double did commit the label: a retry would be counted as loaded.
    let again = c.load(&req("fs", THREE)).await.unwrap();
    assert_eq!(again.status, LoadStatus::AlreadyLoaded);
    assert_eq!(sr.rows("db", "t").unwrap().len(), 2);
    sr.stop().await;
}

/// With a configured max_filter_ratio, rows filtered within it are a (loud) success.
#[tokio::test]
async fn filtered_rows_within_a_configured_ratio_are_loaded() {
    let sr = double().await;
    let mut conf = cfg(&sr, false, "pw", Duration::from_secs(10));
    conf.max_filter_ratio = 0.5;
    let c = StreamLoadClient::new(&conf).unwrap();
    sr.set_fault(Fault::FilterRows { rows: 1 }, FaultDuration::Count(1));
    let o = c.load(&req("ratio", THREE)).await.unwrap();
    assert_eq!(o.status, LoadStatus::Success);
    assert_eq!((o.loaded_rows, o.filtered_rows), (2, 1));
    // Beyond the ratio (StarRocks misbehaving): rejected.
    sr.set_fault(Fault::FilteredSuccess { rows: 2 }, FaultDuration::Count(1));
    let e = c
        .load(&req("ratio2", r#"[{"id":4},{"id":5},{"id":6}]"#))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.kind(),
            FailureKind::Rejected {
                reason: RejectReason::Filtered,
                label_committed: true
            }
        ),
        "{e}"
    );
    sr.stop().await;
}

/// Counts that do not add up to the rows sent are a rejection whatever the ratio.
#[tokio::test]
async fn counts_that_do_not_add_up_are_rejected_whatever_the_ratio() {
    let sr = double().await;
    for (i, ratio) in [0.0, 0.9].into_iter().enumerate() {
        let mut conf = cfg(&sr, true, "pw", Duration::from_secs(10));
        conf.max_filter_ratio = ratio;
        let c = StreamLoadClient::new(&conf).unwrap();
        sr.set_fault(Fault::LoseRows { rows: 1 }, FaultDuration::Count(1));
        let label = format!("lost{i}");
        let e = c
            .load_with_retry(&req(&label, THREE), &fast(), |e, _, _| {
                panic!("no retry: {e}")
            })
            .await
            .unwrap_err();
        let SinkError::Rejected(r) = &e else {
            panic!("{e:?}")
        };
        assert_eq!(r.reason, RejectReason::CountMismatch);
        assert!(r.label_committed);
        assert!(
            e.to_string().contains(
                "its row counts do not add up: 3 rows sent, 2 loaded + 0 filtered + 0 unselected"
            ),
            "{e}"
        );
    }
    sr.stop().await;
}

/// A refused connection is said once: which node, which setting, the cause.
#[tokio::test]
async fn a_refused_connection_is_said_once() {
    let sr = double().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut conf = cfg(&sr, false, "pw", Duration::from_secs(10));
    conf.fe_url = url::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
    let c = StreamLoadClient::new(&conf).unwrap();
    let e = c.load(&req("x1", THREE)).await.unwrap_err();
    assert!(e.is_transient());
    assert_eq!(
        e.to_string(),
        format!("stream load into t (label x1): cannot connect to the StarRocks FE at 127.0.0.1:{port} (SINK_URL): connection refused")
    );
    conf.be_url = Some(conf.fe_url.clone());
    let c = StreamLoadClient::new(&conf).unwrap();
    let e = c.load(&req("x2", THREE)).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("stream load into t (label x2): cannot connect to the StarRocks FE at 127.0.0.1:{port} (SINK_URL): connection refused")
    );
    sr.stop().await;
}

/// A load the BE holds and commits late (the client gave up waiting): the retry with the
/// same label is told RUNNING, waits for the label, and counts it as loaded, once.
#[tokio::test]
async fn a_late_commit_is_waited_for_with_the_same_label() {
    let sr = double().await;
    let c = StreamLoadClient::new(&cfg(&sr, false, "pw", Duration::from_secs(1))).unwrap();
    sr.set_fault(
        Fault::LateCommit {
            commit_after_ms: 3000,
        },
        FaultDuration::Count(1),
    );
    let retried = AtomicU32::new(0);
    let o = c
        .load_with_retry(&req("late", THREE), &fast(), |e, _, _| {
            assert!(e.is_transient(), "{e}");
            retried.fetch_add(1, Ordering::SeqCst);
        })
        .await
        .unwrap();
    assert!(retried.load(Ordering::SeqCst) >= 1);
    assert_eq!(o.status, LoadStatus::AlreadyLoaded);
    assert_eq!(sr.rows("db", "t").unwrap().len(), 3);
    let labels: Vec<_> = sr.loads().iter().map(|l| l.label.clone()).collect();
    assert!(labels.iter().all(|l| l == "late"), "{labels:?}");
    sr.stop().await;
}
