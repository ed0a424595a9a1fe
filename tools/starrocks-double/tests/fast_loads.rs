//! Fast loads (benchmark mode): bodies are counted, not parsed, and the counts must be exactly
//! what the full double reports for the same body, because a client checks them.

mod common;

use common::*;
use reqwest::StatusCode;
use starrocks_double::{DoubleConfig, StarRocksDouble};

async fn fast() -> StarRocksDouble {
    start_with(DoubleConfig {
        fast_loads: true,
        ..DoubleConfig::default()
    })
    .await
}

const JSON_HEADERS: &[(&str, &str)] = &[("format", "json"), ("strip_outer_array", "true")];

/// Bodies a counting shortcut gets wrong: braces, brackets, commas, quotes and `"__op":`
/// inside strings, escaped backslashes before a closing quote, deletes, nested values.
fn tricky_json() -> Vec<String> {
    vec![
        r#"[{"id":1,"name":"a","score":1,"__op":0},{"id":2,"__op":1}]"#.into(),
        r#"[{"id":3,"name":"{[,","note":"\"__op\":1},{\"id\":9"}]"#.into(),
        r#"[{"id":4,"note":"ends with a backslash \\"},{"id":5,"note":"}]"}]"#.into(),
        "[\n  {\"id\":6,\"note\":\"multi\\nline\"} ,\n  {\"id\":7}\n]\n".into(),
        r#"[{"id":8,"note":"é ☃ \u00e9"},{"id":10,"note":"[{\"a\":[1,2]}]"},{"id":11}]"#.into(),
        "[]".into(),
    ]
}

fn tricky_csv() -> Vec<(String, Vec<(&'static str, &'static str)>)> {
    let enclosed = vec![
        ("format", "csv"),
        ("column_separator", ","),
        ("enclose", "\""),
    ];
    vec![
        (
            "1,\"a\nb\",2,\"x,y\"\n2,\"q\"\"\n\",3,\\N\n\n3,c,4,\"\"\n".into(),
            enclosed.clone(),
        ),
        ("4,\"no newline at end\",5,z".into(), enclosed),
        (
            "5\x01a\x01\x016\x02\x027\x01b\x01\x01\x02".into(),
            vec![
                ("format", "csv"),
                ("column_separator", "\\x01"),
                ("row_delimiter", "\\x02"),
            ],
        ),
    ]
}

#[tokio::test]
async fn fast_counts_equal_the_full_doubles_counts() {
    let full = start().await;
    let quick = fast().await;
    let mut n = 0;
    let mut cases: Vec<(String, Vec<(&str, &str)>)> = tricky_json()
        .into_iter()
        .map(|b| (b, JSON_HEADERS.to_vec()))
        .collect();
    cases.extend(tricky_csv());
    for (body, headers) in cases {
        n += 1;
        let label = format!("case{n}");
        let mut h = headers.clone();
        h.push(("label", label.as_str()));
        let a = load(&full, "t", &h, &body).await;
        let b = load(&quick, "t", &h, &body).await;
        assert_eq!(a["Status"], "Success", "full double refused {body:?}: {a}");
        assert_eq!(b["Status"], "Success", "fast double refused {body:?}: {b}");
        for k in ["NumberTotalRows", "NumberLoadedRows", "NumberFilteredRows"] {
            assert_eq!(a[k], b[k], "{k} differs for {body:?}: full {a} fast {b}");
        }
    }
    // The full double stores rows (deletes applied); the fast one only counts every row
    // it committed, deletes included.
    let committed: u64 = quick
        .loads()
        .iter()
        .map(|l| l.response.number_loaded_rows)
        .sum();
    assert!(committed > 10, "the cases carry rows");
    assert_eq!(quick.loaded_rows("db", "t"), committed);
    assert_eq!(full.loaded_rows("db", "t"), committed);
    assert!(
        quick.rows("db", "t").expect("table").is_empty(),
        "fast loads store no rows"
    );
    full.stop().await;
    quick.stop().await;
}

#[tokio::test]
async fn fast_loads_go_through_the_fe_redirect_and_keep_labels() {
    let sr = fast().await;
    let body = r#"[{"id":1,"name":"a"},{"id":2,"name":"b"},{"id":3,"__op":1}]"#;
    let headers = [
        ("Authorization", AUTH),
        ("Expect", "100-continue"),
        ("label", "bench-1"),
        ("format", "json"),
        ("strip_outer_array", "true"),
    ];
    let url = format!("{}/api/db/t/_stream_load", sr.fe_http_url());
    let r = put(&url, &headers, body).await;
    assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT);
    let loc = r.headers["location"]
        .to_str()
        .expect("location")
        .to_string();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as u64;
    let r = put(&loc, &headers, body).await.json();
    assert_eq!(r["Status"], "Success");
    assert_eq!(r["NumberTotalRows"], 3);
    assert_eq!(r["NumberLoadedRows"], 3);
    assert_eq!(sr.loaded_rows("db", "t"), 3);
    let label = sr.label("db", "bench-1").expect("label kept");
    assert_eq!(label.state, starrocks_double::TxnState::Visible);
    let loads = sr.loads();
    assert_eq!(loads.len(), 1);
    assert_eq!(loads[0].table, "t");
    assert_eq!(loads[0].label, "bench-1");
    assert!(loads[0].committed);
    assert!(loads[0].finished_at_unix_us >= before);

    // A retry with the same label is deduplicated and counts nothing twice.
    let r = put(&loc, &headers, body).await.json();
    assert_eq!(r["Status"], "Label Already Exists", "{r}");
    assert_eq!(r["ExistingJobStatus"], "FINISHED");
    assert_eq!(sr.loaded_rows("db", "t"), 3);

    // The control API shows the count.
    let tables = get(&format!("{}/tables", sr.control_url()), false)
        .await
        .json();
    assert_eq!(tables[0]["loaded_rows"], 3, "{tables}");
    sr.stop().await;
}

#[tokio::test]
async fn fast_loads_refuse_a_broken_body_and_free_its_label() {
    let sr = fast().await;
    let mut h = JSON_HEADERS.to_vec();
    h.push(("label", "broken"));
    let r = load(&sr, "t", &h, r#"[{"id":1,"name":"unterminated}]"#).await;
    assert_eq!(r["Status"], "Fail", "{r}");
    assert_eq!(sr.loaded_rows("db", "t"), 0);
    let r = load(&sr, "t", &h, r#"{"id":1}"#).await;
    assert_eq!(
        r["Status"], "Fail",
        "not an array under strip_outer_array: {r}"
    );
    // The aborted label can be used again.
    let r = load(&sr, "t", &h, r#"[{"id":1}]"#).await;
    assert_eq!(r["Status"], "Success", "{r}");
    assert_eq!(sr.loaded_rows("db", "t"), 1);
    sr.stop().await;
}
