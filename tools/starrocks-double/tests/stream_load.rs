//! Stream Load over FE and BE: routing, auth, headers, PK semantics, filtered rows, labels.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::json;
use starrocks_double::DoubleConfig;

#[tokio::test]
async fn fe_redirects_then_be_loads() {
    let sr = start().await;
    let url = format!("{}/api/db/t/_stream_load?x=1", sr.fe_http_url());
    let r = put(
        &url,
        &[
            ("Authorization", AUTH),
            ("Expect", "100-continue"),
            ("label", "l1"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT);
    let loc = r.headers["location"].to_str().expect("loc");
    assert_eq!(
        loc,
        format!(
            "http://127.0.0.1:{}/api/db/t/_stream_load?x=1",
            sr.be_http_port()
        )
    );
    assert_eq!(r.headers["connection"], "close");
    assert!(r.text.is_empty());
    assert!(sr.loads().is_empty(), "the FE starts no load");

    let body = r#"[{"id":1,"name":"a","score":10},{"id":2,"name":"b","score":20}]"#;
    let r = put(
        loc,
        &[
            ("Authorization", AUTH),
            ("Expect", "100-continue"),
            ("label", "l1"),
            ("format", "json"),
            ("strip_outer_array", "true"),
            ("x-unknown-header", "ignored"),
        ],
        body,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        keys_in_order(&r.text),
        [
            "TxnId",
            "Label",
            "Status",
            "Message",
            "NumberTotalRows",
            "NumberLoadedRows",
            "NumberFilteredRows",
            "NumberUnselectedRows",
            "LoadBytes",
            "LoadTimeMs",
            "BeginTxnTimeMs",
            "StreamLoadPlanTimeMs",
            "ReadDataTimeMs",
            "WriteDataTimeMs",
            "CommitAndPublishTimeMs"
        ]
    );
    assert!(
        r.text.starts_with("{\n    \"TxnId\": "),
        "pretty, 4-space indent: {}",
        r.text
    );
    let v = r.json();
    assert!(v["TxnId"].as_i64().expect("txn") > 0);
    assert_eq!(v["Label"], "l1");
    assert_eq!(v["Status"], "Success");
    assert_eq!(v["Message"], "OK");
    assert_eq!(v["NumberTotalRows"], 2);
    assert_eq!(v["NumberLoadedRows"], 2);
    assert_eq!(v["NumberFilteredRows"], 0);
    assert_eq!(v["LoadBytes"], body.len());
    let rows = sr.rows("db", "t").expect("rows");
    assert_eq!(rows.len(), 2);
    assert_eq!(
        json!(rows[0]),
        json!({"id":1,"name":"a","score":10,"note":null}),
        "missing JSON key loads NULL, not DEFAULT"
    );
    let loads = sr.loads();
    assert_eq!(loads.len(), 1);
    assert!(loads[0]
        .headers
        .iter()
        .any(|(k, v)| k == "authorization" && v == "<redacted>"));
    assert!(loads[0].committed);
}

#[tokio::test]
async fn fe_auth_and_expect_checks() {
    let sr = start().await;
    let url = format!("{}/api/db/t/_stream_load", sr.fe_http_url());
    let r = put(&url, &[("Expect", "100-continue")], "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers["www-authenticate"], "Basic realm=\"\"");
    assert_eq!(
        r.json(),
        json!({"status":"FAILED","code":"1","msg":"Need auth information.","message":"Need auth information."})
    );
    let r = put(
        &url,
        &[
            ("Expect", "100-continue"),
            ("Authorization", "Basic cm9vdDp4"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["msg"], "Access denied for root@127.0.0.1");
    let r = put(&url, &[("Authorization", AUTH)], "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["connection"], "close");
    assert_eq!(
        r.json(),
        json!({"Status":"FAILED","Message":"class com.starrocks.common.DdlException: There is no 100-continue header"})
    );
    let r = put(
        &format!("{}/api//t/_stream_load", sr.fe_http_url()),
        &[("Authorization", AUTH), ("Expect", "100-continue")],
        "",
    )
    .await;
    assert_eq!(
        r.json()["Message"],
        "class com.starrocks.common.DdlException: No database selected."
    );

    let old = start_with(DoubleConfig {
        require_expect_continue: false,
        ..Default::default()
    })
    .await;
    let r = put(
        &format!("{}/api/db/t/_stream_load", old.fe_http_url()),
        &[("Authorization", AUTH)],
        "",
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::TEMPORARY_REDIRECT,
        "older FEs do not check Expect"
    );
}

#[tokio::test]
async fn be_auth_errors_are_200_fail() {
    let sr = start().await;
    let url = format!("{}/api/db/t/_stream_load", sr.be_http_url());
    let r = put(&url, &[("label", "a1")], "1\tx\t1\t\\N\n").await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(
        (
            v["TxnId"].clone(),
            v["Status"].clone(),
            v["Message"].clone()
        ),
        (
            json!(-1),
            json!("Fail"),
            json!("no valid Basic authorization")
        )
    );
    let r = put(
        &url,
        &[("label", "a1"), ("Authorization", "basic cm9vdDo=")],
        "",
    )
    .await;
    assert_eq!(
        r.json()["Message"],
        "no valid Basic authorization",
        "prefix is case-sensitive"
    );
    let r = put(
        &url,
        &[("label", "a1"), ("Authorization", "Basic cm9vdDp4")],
        "",
    )
    .await;
    let v = r.json();
    assert_eq!(v["TxnId"], -1);
    assert!(v["Message"]
        .as_str()
        .expect("msg")
        .starts_with("Access denied"));
    assert!(sr.rows("db", "t").expect("rows").is_empty());
}

#[tokio::test]
async fn labels_duplicate_abort_reuse_and_format() {
    let sr = start().await;
    let body = r#"{"id":1,"name":"a"}"#;
    let v = load(&sr, "t", &[("label", "dup"), ("format", "json")], body).await;
    assert_eq!(v["Status"], "Success");
    let v = load(
        &sr,
        "t",
        &[("label", "dup"), ("format", "json")],
        r#"{"id":2}"#,
    )
    .await;
    assert_eq!(v["Status"], "Label Already Exists");
    assert_eq!(v["ExistingJobStatus"], "FINISHED");
    assert_eq!(v["TxnId"], -1);
    assert_eq!(v["Message"], "Label [dup] has already been used.");
    assert_eq!(
        sr.rows("db", "t").expect("rows").len(),
        1,
        "nothing loaded twice"
    );
    // Same label in another database is independent.
    sr.create_table("db2", DDL).expect("db2");
    let r = put(
        &format!("{}/api/db2/t/_stream_load", sr.be_http_url()),
        &[
            ("Authorization", AUTH),
            ("label", "dup"),
            ("format", "json"),
        ],
        body,
    )
    .await;
    assert_eq!(r.json()["Status"], "Success");
    // An aborted label can be reused.
    let v = load(
        &sr,
        "t",
        &[("label", "ab"), ("format", "json")],
        r#"{"id":"x"}"#,
    )
    .await;
    assert_eq!(v["Status"], "Fail");
    assert!(v["TxnId"].as_i64().expect("txn") > 0);
    let v = load(
        &sr,
        "t",
        &[("label", "ab"), ("format", "json")],
        r#"{"id":5}"#,
    )
    .await;
    assert_eq!(v["Status"], "Success");
    let v = load(&sr, "t", &[("label", "bad:label")], "").await;
    assert_eq!(
        (v["TxnId"].clone(), v["Message"].clone()),
        (
            json!(-1),
            json!("Label format error. regex: ^[-\\w]{1,128}$, label: bad:label")
        )
    );
    // No label: a UUID is generated.
    let v = load(&sr, "t", &[("format", "json")], r#"{"id":6}"#).await;
    assert_eq!(v["Label"].as_str().expect("label").len(), 36);
    // get_load_state on the FE.
    let r = get(
        &format!("{}/api/db/get_load_state?label=dup", sr.fe_http_url()),
        true,
    )
    .await;
    assert_eq!(
        r.json(),
        json!({"state":"VISIBLE","reason":"","status":"OK","code":"0","msg":"Success","message":"OK"})
    );
    let r = get(
        &format!("{}/api/db/get_load_state?label=ab", sr.fe_http_url()),
        true,
    )
    .await;
    assert_eq!(
        r.json()["state"],
        "VISIBLE",
        "reused label reports the new txn"
    );
    let r = get(
        &format!("{}/api/db/get_load_state?label=nope", sr.fe_http_url()),
        true,
    )
    .await;
    assert_eq!(r.json()["state"], "UNKNOWN");
    let r = get(
        &format!("{}/api/nodb/get_load_state?label=x", sr.fe_http_url()),
        true,
    )
    .await;
    assert_eq!(
        r.json(),
        json!({"status":"FAILED","code":"1","msg":"unknown database, database=nodb","message":"unknown database, database=nodb"})
    );
    let r = get(
        &format!("{}/api/db/get_load_state?label=dup", sr.fe_http_url()),
        false,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn json_ops_last_wins_and_deletes() {
    let sr = start().await;
    load(
        &sr,
        "t",
        &[("format", "json"), ("strip_outer_array", "true")],
        r#"[{"id":1,"name":"a"},{"id":2,"name":"b"},{"id":3,"name":"c"}]"#,
    )
    .await;
    let v = load(
        &sr,
        "t",
        &[("format", "json"), ("strip_outer_array", "true")],
        r#"[{"id":1,"name":"a2","__op":0},{"id":1,"__op":1},{"id":2,"__op":1},{"id":2,"name":"b2","__op":0},{"id":3,"__op":1},{"id":9,"__op":1}]"#,
    )
    .await;
    assert_eq!(v["Status"], "Success");
    assert_eq!(v["NumberLoadedRows"], 6);
    let rows = sr.rows("db", "t").expect("rows");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["id"], 2);
    assert_eq!(rows[0]["name"], "b2");
    // NDJSON / concatenated objects without strip_outer_array.
    let v = load(&sr, "t", &[("format", "json")], "{\"id\":7}\n{\"id\":8}").await;
    assert_eq!(v["NumberLoadedRows"], 2);
    // An array without strip_outer_array fails.
    let v = load(&sr, "t", &[("format", "json")], "[{\"id\":7}]").await;
    assert_eq!(v["Status"], "Fail");
    assert_eq!(v["Message"], "Failed to iterate document stream as object. error: The JSON element does not have the requested type.");
    // jsonpaths + columns.
    let v = load(
        &sr,
        "t",
        &[
            ("format", "json"),
            ("jsonpaths", "[\"$.k\",\"$.n.v\"]"),
            ("columns", "id,name"),
        ],
        r#"{"k":20,"n":{"v":"deep"}}"#,
    )
    .await;
    assert_eq!(v["Status"], "Success", "{v}");
    let rows = sr.rows("db", "t").expect("rows");
    assert_eq!(rows.last().expect("row")["name"], "deep");
}

#[tokio::test]
async fn csv_columns_op_and_nulls() {
    let sr = start().await;
    let v = load(
        &sr,
        "t",
        &[("column_separator", ","), ("columns", "id,name,score,__op")],
        "1,a,1,0\n2,,\\N,0\n3,c,3,0\n",
    )
    .await;
    assert_eq!(v["Status"], "Success", "{v}");
    let v = load(
        &sr,
        "t",
        &[
            ("column_separator", "\\x01"),
            ("columns", "`id`,`name`,`score`,`__op`"),
        ],
        "3\x01c\x013\x011\n",
    )
    .await;
    assert_eq!(v["Status"], "Success", "{v}");
    let rows = sr.rows("db", "t").expect("rows");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["name"], "", "empty field is an empty string");
    assert_eq!(rows[1]["score"], json!(null), "\\N is NULL");
    assert_eq!(rows[1]["note"], "d", "unlisted column gets its DEFAULT");
    // Default CSV: tab separated, all columns, __op=0 for all rows.
    let v = load(&sr, "t", &[], "4\tx\t4\tn\n").await;
    assert_eq!(v["NumberLoadedRows"], 1);
    // Constant __op mapping deletes.
    let v = load(&sr, "t", &[("columns", "id,__op='delete'")], "4\n").await;
    assert_eq!(v["Status"], "Success", "{v}");
    assert_eq!(sr.rows("db", "t").expect("rows").len(), 2);
    // Wrong field count is a filtered row.
    let v = load(&sr, "t", &[("max_filter_ratio", "1")], "5\n").await;
    assert_eq!(v["NumberFilteredRows"], 1);
    let url = v["ErrorURL"].as_str().expect("error url");
    let log = get(url, false).await.text;
    assert!(
        log.contains("Error: Value count does not match column count. Expect 4, but got 1. Row: 5"),
        "{log}"
    );
}

#[tokio::test]
async fn filtered_rows_ratio_atomicity_and_error_url() {
    let sr = start().await;
    let body = r#"[{"id":1,"name":"ok"},{"id":2,"name":"this is too long"},{"id":3,"score":"x"},{"id":null}]"#;
    let v = load(
        &sr,
        "t",
        &[
            ("format", "json"),
            ("strip_outer_array", "true"),
            ("strict_mode", "true"),
        ],
        body,
    )
    .await;
    assert_eq!(v["Status"], "Fail");
    assert_eq!(v["Message"], "too many filtered rows");
    assert_eq!(v["NumberTotalRows"], 4);
    assert_eq!(v["NumberFilteredRows"], 3);
    assert!(v["TxnId"].as_i64().expect("txn") > 0);
    let url = v["ErrorURL"].as_str().expect("ErrorURL");
    assert!(url.starts_with(&format!(
        "{}/api/_load_error_log?file=error_log_",
        sr.be_http_url()
    )));
    let log = get(url, false).await.text;
    assert!(
        log.contains("the length of input is too long than schema."),
        "{log}"
    );
    assert!(
        log.contains("NULL value in non-nullable column 'id'"),
        "{log}"
    );
    assert_eq!(log.lines().count(), 3);
    assert!(
        sr.rows("db", "t").expect("rows").is_empty(),
        "a failed load loads nothing"
    );
    let v = load(
        &sr,
        "t",
        &[
            ("format", "json"),
            ("strip_outer_array", "true"),
            ("strict_mode", "true"),
            ("max_filter_ratio", "0.8"),
        ],
        body,
    )
    .await;
    assert_eq!(v["Status"], "Success");
    assert_eq!(v["NumberLoadedRows"], 1);
    assert!(
        v["ErrorURL"].is_string(),
        "ErrorURL present on Success with filtered rows"
    );
    // Non-strict: a bad value in a nullable column becomes NULL and is not filtered.
    let v = load(&sr, "t", &[("format", "json")], r#"{"id":10,"score":"x"}"#).await;
    assert_eq!(
        (v["Status"].clone(), v["NumberFilteredRows"].clone()),
        (json!("Success"), json!(0))
    );
    assert!(v.get("ErrorURL").is_none());
}

#[tokio::test]
async fn partial_update_and_merge_condition() {
    let sr = start().await;
    load(
        &sr,
        "t",
        &[("format", "json")],
        r#"{"id":1,"name":"a","score":5,"note":"keep"}"#,
    )
    .await;
    let v = load(
        &sr,
        "t",
        &[
            ("format", "json"),
            ("partial_update", "true"),
            ("columns", "id,score"),
        ],
        r#"{"id":1,"score":6} {"id":2,"score":7}"#,
    )
    .await;
    assert_eq!(v["Status"], "Success", "{v}");
    let rows = sr.rows("db", "t").expect("rows");
    assert_eq!(
        json!(rows[0]),
        json!({"id":1,"name":"a","score":6,"note":"keep"})
    );
    assert_eq!(
        json!(rows[1]),
        json!({"id":2,"name":null,"score":7,"note":"d"}),
        "new key: unlisted columns get DEFAULT/NULL"
    );
    let v = load(
        &sr,
        "t",
        &[
            ("format", "json"),
            ("partial_update", "true"),
            ("columns", "score"),
        ],
        r#"{"score":1}"#,
    )
    .await;
    assert_eq!(v["Message"], "key column id not in partial update columns");
    assert!(
        v["TxnId"].as_i64().expect("txn") > 0,
        "plan errors come after begin"
    );
    let v = load(&sr, "t", &[("partial_update", "maybe")], "").await;
    assert_eq!(
        v["Message"],
        "Invalid partial update flag format. Must be bool type"
    );
    // merge_condition: lower values do not overwrite; equal ones do; deletes ignore it.
    let v = load(
        &sr,
        "t",
        &[("format", "json"), ("merge_condition", "score")],
        r#"{"id":1,"name":"old","score":3}"#,
    )
    .await;
    assert_eq!(v["Status"], "Success");
    assert_eq!(sr.rows("db", "t").expect("rows")[0]["name"], "a");
    load(
        &sr,
        "t",
        &[("format", "json"), ("merge_condition", "score")],
        r#"{"id":1,"name":"same","score":6}"#,
    )
    .await;
    assert_eq!(sr.rows("db", "t").expect("rows")[0]["name"], "same");
    load(
        &sr,
        "t",
        &[("format", "json"), ("merge_condition", "score")],
        r#"{"id":1,"score":0,"__op":1}"#,
    )
    .await;
    assert_eq!(sr.rows("db", "t").expect("rows").len(), 1);
    let v = load(&sr, "t", &[("merge_condition", "id")], "").await;
    assert_eq!(
        v["Message"],
        "Merge condition column id should not be primary key!"
    );
    let v = load(&sr, "t", &[("merge_condition", "name")], "").await;
    assert_eq!(
        v["Message"],
        "Merge condition column has invalid type maybe bitmap/hll/percentile/json/varchar!"
    );
    let v = load(&sr, "t", &[("merge_condition", "nope")], "").await;
    assert!(v["Message"]
        .as_str()
        .expect("m")
        .starts_with("Merge condition column nope does not exist."));
}

#[tokio::test]
async fn header_errors_and_compression() {
    let sr = start().await;
    let early = [
        (("format", "parquet"), "unknown data format, format=parquet"),
        (("timeout", "ten"), "Invalid timeout format"),
        (
            ("timeout", "0"),
            "Invalid timeout. Timeout should between 1 and 259200 seconds",
        ),
    ];
    for ((k, val), msg) in early {
        let v = load(&sr, "t", &[(k, val)], "").await;
        assert_eq!(
            (
                v["TxnId"].clone(),
                v["Status"].clone(),
                v["Message"].clone()
            ),
            (json!(-1), json!("Fail"), json!(msg))
        );
    }
    let plan = [
        (
            vec![("strict_mode", "yes")],
            "Invalid strict mode format. Must be bool type",
        ),
        (
            vec![("compression", "gzip"), ("Content-Encoding", "gzip")],
            "Only one of http header content-encoding and compression can be set",
        ),
        (
            vec![("compression", "rar")],
            "Unsupported compression type: rar",
        ),
        (vec![("columns", "id,id")], "Duplicate column: id"),
        (
            vec![("columns", "id,zz=id")],
            "Mapping column is not in table. column: zz",
        ),
    ];
    for (h, msg) in plan {
        let v = load(&sr, "t", &h, "").await;
        assert_eq!(v["Message"], msg);
        assert!(v["TxnId"].as_i64().expect("txn") > 0);
    }
    let v = load(&sr, "nosuch", &[], "").await;
    assert_eq!(v["Message"], "unknown table \"db.nosuch\"");
    let r = put(
        &format!("{}/api/nodb/t/_stream_load", sr.be_http_url()),
        &[("Authorization", AUTH)],
        "",
    )
    .await;
    assert_eq!(r.json()["Message"], "unknown database, database=nodb");

    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(br#"[{"id":42,"name":"gz"}]"#).expect("gz");
    let data = gz.finish().expect("gz");
    let r = put(
        &format!("{}/api/db/t/_stream_load", sr.be_http_url()),
        &[
            ("Authorization", AUTH),
            ("format", "json"),
            ("strip_outer_array", "true"),
            ("compression", "GZIP"),
        ],
        data,
    )
    .await;
    assert_eq!(r.json()["Status"], "Success", "{}", r.text);
    assert_eq!(sr.rows("db", "t").expect("rows")[0]["name"], "gz");
}

#[tokio::test]
async fn all_types_round_trip() {
    let sr = start().await;
    sr.create_table(
        "db",
        "CREATE TABLE `all` (k1 INT NOT NULL, k2 VARCHAR(20) NOT NULL, b BOOLEAN, ti TINYINT, si SMALLINT, bi BIGINT, li LARGEINT, f FLOAT, d DOUBLE, dec DECIMAL(38, 9), c CHAR(4), s STRING, dt DATE, ts DATETIME, j JSON, vb VARBINARY(8), arr ARRAY<INT>) PRIMARY KEY(k1, k2) DISTRIBUTED BY HASH(k1)",
    )
    .expect("ddl");
    let body = r#"{"k1":1,"k2":"k","b":true,"ti":-128,"si":32767,"bi":9223372036854775807,"li":"170141183460469231731687303715884105727","f":1.5,"d":2.25,"dec":"12345678901234567890123456789.123456789","c":"abcd","s":"tab\there","dt":"2024-02-29","ts":"2024-01-02 03:04:05.000006","j":{"a":[1,{"b":null}]},"vb":"hi","arr":[1,null,3]}"#;
    let v = load(&sr, "all", &[("format", "json")], body).await;
    assert_eq!(v["Status"], "Success", "{v}");
    let rows = sr.rows("db", "all").expect("rows");
    assert_eq!(
        json!(rows[0]),
        json!({"k1":1,"k2":"k","b":true,"ti":-128,"si":32767,"bi":9223372036854775807i64,"li":"170141183460469231731687303715884105727","f":1.5,"d":2.25,"dec":"12345678901234567890123456789.123456789","c":"abcd","s":"tab\there","dt":"2024-02-29","ts":"2024-01-02 03:04:05.000006","j":{"a":[1,{"b":null}]},"vb":"6869","arr":[1,null,3]})
    );
    let bad = [
        r#"{"k1":2,"k2":"k","ti":128}"#,
        r#"{"k1":2,"k2":"k","dec":"1.1234567891"}"#,
        r#"{"k1":2,"k2":"k","c":"abcde"}"#,
        r#"{"k1":2,"k2":"k","dt":"2023-02-29"}"#,
        r#"{"k1":2,"k2":"k","vb":"123456789"}"#,
        r#"{"k1":2,"k2":"k","arr":["x"]}"#,
        r#"{"k1":2}"#,
    ];
    for b in bad {
        let v = load(
            &sr,
            "all",
            &[("format", "json"), ("strict_mode", "true")],
            b,
        )
        .await;
        assert_eq!(
            (v["Status"].clone(), v["NumberFilteredRows"].clone()),
            (json!("Fail"), json!(1)),
            "{b}: {v}"
        );
    }
    // _schema
    let r = get(&format!("{}/api/db/all/_schema", sr.fe_http_url()), true).await;
    let v = r.json();
    assert_eq!(v["status"], 200);
    assert_eq!(
        v["properties"][9],
        json!({"name":"dec","type":"DECIMAL128","precision":"38","scale":"9","comment":""})
    );
    assert_eq!(
        v["properties"][0],
        json!({"name":"k1","type":"INT","comment":""})
    );
    let r = get(&format!("{}/api/db/nope/_schema", sr.fe_http_url()), true).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        r.json(),
        json!({"status":404,"exception":"Table [nope] does not exists"})
    );
    let r = get(&format!("{}/api/health", sr.fe_http_url()), false).await;
    assert_eq!(
        r.json(),
        json!({"total_backend_num":1,"online_backend_num":1,"status":"OK"})
    );
    let r = get(&format!("{}/api/health", sr.be_http_url()), false).await;
    assert_eq!(r.json(), json!({"status":"OK","msg":"To Be Added"}));
}

#[tokio::test]
async fn legacy_key_name() {
    let sr = start_with(DoubleConfig {
        legacy_put_time_key: true,
        ..Default::default()
    })
    .await;
    let r = put(
        &format!("{}/api/db/t/_stream_load", sr.be_http_url()),
        &[("Authorization", AUTH)],
        "1\ta\t1\tn\n",
    )
    .await;
    assert!(r.text.contains("\"StreamLoadPutTimeMs\"") && !r.text.contains("StreamLoadPlanTimeMs"));
}
