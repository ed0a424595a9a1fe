//! Fault injection from Rust and over the control endpoint.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::json;
use starrocks_double::{Fault, FaultDuration, Node};

const ROW: &str = "{\"id\":1,\"name\":\"a\"}";

#[tokio::test]
async fn status_fail_count_then_success() {
    let sr = start().await;
    sr.set_fault(
        Fault::StatusFail {
            message: "Memory of process exceed limit".into(),
            commit: false,
        },
        FaultDuration::Count(1),
    );
    let v = load(&sr, "t", &[("label", "f1"), ("format", "json")], ROW).await;
    assert_eq!(
        (v["Status"].clone(), v["Message"].clone()),
        (json!("Fail"), json!("Memory of process exceed limit"))
    );
    assert!(sr.rows("db", "t").expect("rows").is_empty());
    let v = load(&sr, "t", &[("label", "f1"), ("format", "json")], ROW).await;
    assert_eq!(
        v["Status"], "Success",
        "label of the failed txn is reusable"
    );
    // Fail while actually committing: the retry sees FINISHED.
    sr.set_fault(Fault::StatusFail { message: "Commit transaction fail cause x, Transaction status unknown, you can retry with same label.".into(), commit: true }, FaultDuration::Count(1));
    let v = load(
        &sr,
        "t",
        &[("label", "f2"), ("format", "json")],
        r#"{"id":2}"#,
    )
    .await;
    assert_eq!(v["Status"], "Fail");
    assert_eq!(sr.rows("db", "t").expect("rows").len(), 2);
    let v = load(
        &sr,
        "t",
        &[("label", "f2"), ("format", "json")],
        r#"{"id":2}"#,
    )
    .await;
    assert_eq!(v["ExistingJobStatus"], "FINISHED");
}

#[tokio::test]
async fn publish_timeout_commits() {
    let sr = start().await;
    sr.set_fault(
        Fault::PublishTimeout {
            visible_after_ms: 0,
        },
        FaultDuration::Count(1),
    );
    let v = load(&sr, "t", &[("label", "p1"), ("format", "json")], ROW).await;
    assert_eq!(v["Status"], "Publish Timeout");
    assert!(v["Message"]
        .as_str()
        .expect("m")
        .starts_with("Publish timeout. The data will be visible after a while"));
    assert_eq!(sr.rows("db", "t").expect("rows").len(), 1);
    sr.set_fault(
        Fault::PublishTimeout {
            visible_after_ms: 150,
        },
        FaultDuration::Count(1),
    );
    let v = load(
        &sr,
        "t",
        &[("label", "p2"), ("format", "json")],
        r#"{"id":2}"#,
    )
    .await;
    assert_eq!(v["Status"], "Publish Timeout");
    assert_eq!(
        sr.label("db", "p2").expect("label").state,
        starrocks_double::TxnState::Committed
    );
    assert_eq!(
        sr.rows("db", "t").expect("rows").len(),
        1,
        "not visible yet"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sr.rows("db", "t").expect("rows").len(), 2, "visible later");
}

#[tokio::test]
async fn running_label_then_finished() {
    let sr = start().await;
    sr.set_fault(
        Fault::LabelRunning { hold_ms: 400 },
        FaultDuration::Count(1),
    );
    let be = sr.be_http_url();
    let first = tokio::spawn(async move {
        put(
            &format!("{be}/api/db/t/_stream_load"),
            &[("Authorization", AUTH), ("label", "r1"), ("format", "json")],
            ROW,
        )
        .await
        .json()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let v = load(&sr, "t", &[("label", "r1"), ("format", "json")], ROW).await;
    assert_eq!(
        (
            v["Status"].clone(),
            v["ExistingJobStatus"].clone(),
            v["TxnId"].clone()
        ),
        (json!("Label Already Exists"), json!("RUNNING"), json!(-1))
    );
    let r = get(
        &format!("{}/api/db/get_load_state?label=r1", sr.fe_http_url()),
        true,
    )
    .await;
    assert_eq!(r.json()["state"], "PREPARE");
    let v1 = first.await.expect("join");
    assert_eq!(v1["Status"], "Success");
    let v = load(&sr, "t", &[("label", "r1"), ("format", "json")], ROW).await;
    assert_eq!(v["ExistingJobStatus"], "FINISHED");
}

#[tokio::test]
async fn too_many_txns_and_filter_rows() {
    let sr = start().await;
    sr.set_fault(Fault::TooManyTxns, FaultDuration::Count(1));
    let v = load(&sr, "t", &[("label", "m1"), ("format", "json")], ROW).await;
    assert_eq!(v["TxnId"], -1);
    let m = v["Message"].as_str().expect("m");
    assert!(
        m.starts_with("current running txns on db 1")
            && m.ends_with("is 1000, larger than limit 1000"),
        "{m}"
    );
    sr.set_fault(Fault::FilterRows { rows: 1 }, FaultDuration::Count(1));
    let v = load(&sr, "t", &[("label", "m1"), ("format", "json")], ROW).await;
    assert_eq!(
        (v["Message"].clone(), v["NumberFilteredRows"].clone()),
        (json!("too many filtered rows"), json!(1))
    );
    assert!(v["ErrorURL"].is_string());
    assert!(sr.faults().is_empty(), "count faults are consumed");
}

#[tokio::test]
async fn http_errors_hang_slow_drop() {
    let sr = start().await;
    sr.set_fault(
        Fault::Http5xx {
            node: Node::Be,
            status: 503,
        },
        FaultDuration::Count(1),
    );
    let r = put(
        &format!("{}/api/db/t/_stream_load", sr.be_http_url()),
        &[("Authorization", AUTH)],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    sr.set_fault(
        Fault::Http5xx {
            node: Node::Fe,
            status: 500,
        },
        FaultDuration::Count(1),
    );
    let r = put(
        &format!("{}/api/db/t/_stream_load", sr.fe_http_url()),
        &[("Authorization", AUTH), ("Expect", "100-continue")],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);

    sr.set_fault(Fault::Hang { node: Node::Be }, FaultDuration::Count(1));
    let c = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .expect("client");
    let e = c
        .put(format!("{}/api/db/t/_stream_load", sr.be_http_url()))
        .header("Authorization", AUTH)
        .body("")
        .send()
        .await
        .expect_err("hangs");
    assert!(e.is_timeout());

    sr.set_fault(
        Fault::Slow {
            node: Node::Be,
            delay_ms: 300,
        },
        FaultDuration::Count(1),
    );
    let t = std::time::Instant::now();
    let v = load(&sr, "t", &[("format", "json")], ROW).await;
    assert_eq!(v["Status"], "Success");
    assert!(t.elapsed() >= Duration::from_millis(300));

    sr.set_fault(
        Fault::DropConnection { commit: true },
        FaultDuration::Count(1),
    );
    let e = client()
        .put(format!("{}/api/db/t/_stream_load", sr.be_http_url()))
        .header("Authorization", AUTH)
        .header("label", "d1")
        .header("format", "json")
        .body(r#"{"id":5}"#)
        .send()
        .await;
    assert!(e.is_err(), "connection dropped without reply");
    let v = load(
        &sr,
        "t",
        &[("label", "d1"), ("format", "json")],
        r#"{"id":5}"#,
    )
    .await;
    assert_eq!(
        v["ExistingJobStatus"], "FINISHED",
        "the load committed anyway"
    );

    sr.set_fault(
        Fault::RedirectTo {
            host: "10.255.255.1".into(),
            port: 1,
        },
        FaultDuration::Count(1),
    );
    let r = put(
        &format!("{}/api/db/t/_stream_load", sr.fe_http_url()),
        &[("Authorization", AUTH), ("Expect", "100-continue")],
        "",
    )
    .await;
    assert_eq!(
        r.headers["location"],
        "http://10.255.255.1:1/api/db/t/_stream_load"
    );
    sr.set_fault(Fault::NoBackendAlive, FaultDuration::Count(1));
    let r = put(
        &format!("{}/api/db/t/_stream_load", sr.fe_http_url()),
        &[("Authorization", AUTH), ("Expect", "100-continue")],
        "",
    )
    .await;
    assert_eq!(
        r.json()["Message"],
        "class com.starrocks.common.DdlException: No backend alive."
    );
}

#[tokio::test]
async fn down_refuses_then_rebinds_same_port() {
    let sr = start().await;
    let url = format!("{}/api/health", sr.be_http_url());
    sr.set_fault(
        Fault::Down { node: Node::Be },
        FaultDuration::For(Duration::from_millis(400)),
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let e = client().get(&url).send().await.expect_err("refused");
    assert!(e.is_connect(), "{e:?}");
    let r = get(&format!("{}/api/health", sr.fe_http_url()), false).await;
    assert_eq!(r.json()["online_backend_num"], 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        get(&url, false).await.status,
        StatusCode::OK,
        "back on the same port"
    );
    // Forever, then cleared.
    sr.set_fault(Fault::Down { node: Node::Fe }, FaultDuration::Forever);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(client()
        .get(format!("{}/api/health", sr.fe_http_url()))
        .send()
        .await
        .is_err());
    sr.clear_faults();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        get(&format!("{}/api/health", sr.fe_http_url()), false)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn control_endpoint() {
    let sr = start().await;
    let ctl = sr.control_url();
    let c = client();
    let r = c
        .post(format!("{ctl}/faults"))
        .body(r#"{"fault":{"kind":"status_fail","message":"boom"},"count":1}"#)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::OK);
    let list: serde_json::Value = c
        .get(format!("{ctl}/faults"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(
        list[0]["fault"],
        json!({"kind":"status_fail","message":"boom","commit":false})
    );
    assert_eq!(list[0]["remaining"], 1);
    let v = load(&sr, "t", &[("format", "json")], ROW).await;
    assert_eq!(v["Message"], "boom");
    c.post(format!("{ctl}/faults"))
        .body(r#"{"fault":{"kind":"too_many_txns"}}"#)
        .send()
        .await
        .expect("post");
    c.delete(format!("{ctl}/faults"))
        .send()
        .await
        .expect("delete");
    let v = load(&sr, "t", &[("format", "json")], ROW).await;
    assert_eq!(v["Status"], "Success");
    let rows: serde_json::Value = c
        .get(format!("{ctl}/tables/db/t/rows"))
        .send()
        .await
        .expect("rows")
        .json()
        .await
        .expect("json");
    assert_eq!(rows, json!([{"id":1,"name":"a","score":null,"note":null}]));
    let loads: serde_json::Value = c
        .get(format!("{ctl}/loads"))
        .send()
        .await
        .expect("loads")
        .json()
        .await
        .expect("json");
    assert_eq!(loads.as_array().expect("arr").len(), 2);
    assert_eq!(loads[1]["response"]["Status"], "Success");
    assert_eq!(loads[1]["committed"], true);
    let labels: serde_json::Value = c
        .get(format!("{ctl}/labels/db"))
        .send()
        .await
        .expect("labels")
        .json()
        .await
        .expect("json");
    assert_eq!(labels.as_object().expect("obj").len(), 2);
    let out: serde_json::Value = c
        .post(format!("{ctl}/sql"))
        .body("SELECT COUNT(*) FROM db.t")
        .send()
        .await
        .expect("sql")
        .json()
        .await
        .expect("json");
    assert_eq!(out["rows"], json!([["1"]]));
    let r = c
        .post(format!("{ctl}/sql"))
        .body("DELETE FROM db.t")
        .send()
        .await
        .expect("sql");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    c.post(format!("{ctl}/reset")).send().await.expect("reset");
    assert!(sr.rows("db", "t").is_err());
}

/// `late_commit`: the load is received and its transaction begun, the client gets no
/// answer and goes away; meanwhile the label is RUNNING (a retry is refused, get_load_state
/// says PREPARE); then the double commits anyway.
#[tokio::test]
async fn late_commit_holds_the_label_running_then_commits_after_the_client_left() {
    let sr = start().await;
    sr.set_fault(
        Fault::LateCommit {
            commit_after_ms: 4000,
        },
        FaultDuration::Count(1),
    );
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .expect("client");
    let e = impatient
        .put(format!("{}/api/db/t/_stream_load", sr.be_http_url()))
        .header("Authorization", AUTH)
        .header("label", "late1")
        .header("format", "json")
        .body(ROW)
        .send()
        .await
        .expect_err("no answer while the commit is held");
    assert!(e.is_timeout(), "{e}");
    drop(impatient); // the client's connection is gone
    let entry = sr.label("db", "late1").expect("the transaction was begun");
    assert_eq!(entry.state, starrocks_double::TxnState::Prepare);
    let v = load(&sr, "t", &[("label", "late1"), ("format", "json")], ROW).await;
    assert_eq!(
        (v["Status"].clone(), v["ExistingJobStatus"].clone()),
        (json!("Label Already Exists"), json!("RUNNING"))
    );
    let r = get(
        &format!("{}/api/db/get_load_state?label=late1", sr.fe_http_url()),
        true,
    )
    .await;
    assert_eq!(r.json()["state"], "PREPARE");
    assert!(sr.rows("db", "t").expect("rows").is_empty());
    // Committed later although nobody waits for it.
    let start = std::time::Instant::now();
    while sr.label("db", "late1").map(|e| e.state) != Some(starrocks_double::TxnState::Visible) {
        assert!(start.elapsed() < Duration::from_secs(60), "never committed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sr.rows("db", "t").expect("rows").len(), 1);
    let v = load(&sr, "t", &[("label", "late1"), ("format", "json")], ROW).await;
    assert_eq!(v["ExistingJobStatus"], "FINISHED");
    let rec = sr
        .loads()
        .into_iter()
        .find(|l| l.label == "late1" && l.committed)
        .expect("the late load is in the log");
    assert!(!rec.replied, "the late load was never answered");
}

/// `filtered_success` and `lose_rows`: `Success` replies whose rows are not all there.
#[tokio::test]
async fn success_replies_with_missing_rows() {
    let sr = start().await;
    let rows = r#"[{"id":1,"name":"a"},{"id":2,"name":"b"},{"id":3,"name":"c"}]"#;
    let h = [
        ("format", "json"),
        ("strip_outer_array", "true"),
        ("max_filter_ratio", "0"),
    ];
    sr.set_fault(Fault::FilteredSuccess { rows: 1 }, FaultDuration::Count(1));
    let mut hl = h.to_vec();
    hl.push(("label", "fs1"));
    let v = load(&sr, "t", &hl, rows).await;
    assert_eq!(v["Status"], "Success");
    assert_eq!(
        (
            v["NumberTotalRows"].clone(),
            v["NumberLoadedRows"].clone(),
            v["NumberFilteredRows"].clone()
        ),
        (json!(3), json!(2), json!(1))
    );
    assert!(v["ErrorURL"].is_string());
    assert_eq!(sr.rows("db", "t").expect("rows").len(), 2);
    assert_eq!(
        sr.label("db", "fs1").expect("label").state,
        starrocks_double::TxnState::Visible,
        "the label is committed"
    );

    sr.set_fault(Fault::LoseRows { rows: 2 }, FaultDuration::Count(1));
    let mut hl = h.to_vec();
    hl.push(("label", "lr1"));
    let body = r#"[{"id":4,"name":"d"},{"id":5,"name":"e"},{"id":6,"name":"f"}]"#;
    let v = load(&sr, "t", &hl, body).await;
    assert_eq!(v["Status"], "Success");
    assert_eq!(
        (
            v["NumberTotalRows"].clone(),
            v["NumberLoadedRows"].clone(),
            v["NumberFilteredRows"].clone()
        ),
        (json!(3), json!(1), json!(0))
    );
    assert_eq!(sr.rows("db", "t").expect("rows").len(), 3);
    assert!(sr.faults().is_empty());
}

/// A load cut off in the middle of its body, by its client going away or by its BE going
/// down: StarRocks cancels it, so the label is free again. The double once kept the label
/// of a load cut off by a `Down` fault PREPARE for ever (the connection's future was
/// dropped before it could abort), and every retry under it was told "still running".
#[tokio::test]
async fn a_load_cut_off_mid_body_leaves_no_label_running() {
    for (label, node_down) in [("gone1", false), ("down1", true)] {
        let sr = start().await;
        let mut conn = begin_and_stall(&sr, label).await;
        let fault = if node_down {
            Some(sr.set_fault(
                Fault::Down { node: Node::Be },
                FaultDuration::For(Duration::from_millis(500)),
            ))
        } else {
            drop(conn);
            conn = None;
            None
        };
        let start_t = std::time::Instant::now();
        while sr.label("db", label).map(|e| e.state) == Some(starrocks_double::TxnState::Prepare) {
            assert!(
                start_t.elapsed() < Duration::from_secs(10),
                "{label}: the label stayed PREPARE after its load was cut off"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(conn);
        if let Some(f) = fault {
            sr.remove_fault(f);
            let be = sr.be_http_url().trim_start_matches("http://").to_string();
            while tokio::net::TcpStream::connect(&be).await.is_err() {
                assert!(
                    start_t.elapsed() < Duration::from_secs(10),
                    "the BE never came back"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let v = load(&sr, "t", &[("label", label), ("format", "json")], ROW).await;
        assert_eq!(v["Status"], "Success", "{label}: {v}");
        assert_eq!(sr.rows("db", "t").expect("rows").len(), 1, "{label}");
    }
}

/// Sends a Stream Load's headers and the first bytes of its body, and waits until the
/// transaction is begun; the connection is returned still open.
async fn begin_and_stall(
    sr: &starrocks_double::StarRocksDouble,
    label: &str,
) -> Option<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let addr = sr.be_http_url().trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let head = format!(
        "PUT /api/db/t/_stream_load HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {AUTH}\r\nlabel: {label}\r\nformat: json\r\nContent-Length: 1000\r\n\r\n{{\"id\":1,"
    );
    conn.write_all(head.as_bytes()).await.expect("send");
    let start_t = std::time::Instant::now();
    while sr.label("db", label).is_none() {
        assert!(start_t.elapsed() < Duration::from_secs(10), "never begun");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Some(conn)
}
