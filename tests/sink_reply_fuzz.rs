//! Fuzzing the Stream Load reply parser: arbitrary bytes and arbitrary JSON-ish objects
//! never panic and always classify; and whatever the reply, the verdict never takes rows
//! for loaded that StarRocks did not account for (invariant 6, issue 9 case 1).

use dbmazz::connectors::sinks::starrocks::reply::{
    classify_load, classify_load_state, classify_probe, FailureKind, Sent, Verdict,
};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// Values a field may take: the right type, the wrong type, edge numbers.
fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u64>().prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!(n)),
        (0u64..8).prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
        ".{0,12}".prop_map(Value::String),
        (0u64..8).prop_map(|n| json!(n.to_string())),
        prop::sample::select(vec![
            "Success",
            "Publish Timeout",
            "Label Already Exists",
            "Fail",
            "FAILED",
            "OK",
            "FINISHED",
            "RUNNING",
            "VISIBLE",
            "PREPARE",
            "ABORTED",
            "too many filtered rows",
            "Transaction status unknown",
            "Access denied",
        ])
        .prop_map(|s| json!(s)),
        Just(json!([])),
        Just(json!({})),
    ]
}

const KEYS: &[&str] = &[
    "TxnId",
    "Label",
    "Status",
    "status",
    "ExistingJobStatus",
    "Message",
    "message",
    "msg",
    "NumberTotalRows",
    "NumberLoadedRows",
    "NumberFilteredRows",
    "NumberUnselectedRows",
    "LoadTimeMs",
    "ErrorURL",
    "state",
    "code",
];

fn reply_object() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((prop::sample::select(KEYS), field_value()), 0..12).prop_map(|kv| {
        kv.into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<Map<_, _>>()
    })
}

fn http_status() -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(200u16),
        Just(401),
        Just(403),
        Just(404),
        Just(500),
        Just(503),
        100u16..600
    ]
}

fn sent() -> impl Strategy<Value = Sent> {
    (
        0u64..8,
        prop_oneof![Just(0.0f64), Just(0.5), Just(1.0), any::<f64>()],
    )
        .prop_map(|(rows, max_filter_ratio)| Sent {
            rows,
            max_filter_ratio,
        })
}

fn count(o: &Map<String, Value>, k: &str) -> Option<u64> {
    match o.get(k) {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The safety property: a verdict that lets the loader move on never loses rows.
fn check_safe(o: Option<&Map<String, Value>>, http: u16, sent: &Sent, v: &Verdict) {
    match v {
        Verdict::Loaded(c) => {
            assert_eq!(http, 200, "{v:?}");
            assert_eq!(
                u128::from(c.counts.loaded)
                    + u128::from(c.counts.filtered)
                    + u128::from(c.counts.unselected),
                u128::from(sent.rows),
                "{v:?} {sent:?}"
            );
            assert_eq!(c.counts.unselected, 0);
            if c.counts.filtered > 0 {
                assert!(sent.max_filter_ratio > 0.0, "{v:?} {sent:?}");
            }
            if let Some(o) = o {
                assert_eq!(count(o, "NumberLoadedRows").unwrap_or(0), c.counts.loaded);
            }
        }
        Verdict::AlreadyLoaded { .. } => {
            assert_eq!(http, 200);
            let o = o.expect("AlreadyLoaded from a parsed object");
            let job = o
                .get("ExistingJobStatus")
                .and_then(Value::as_str)
                .unwrap_or("");
            assert!(job.trim().eq_ignore_ascii_case("FINISHED"), "{o:?}");
        }
        Verdict::LabelRunning { .. } => assert_eq!(http, 200),
        Verdict::Failed(f) => {
            if let FailureKind::Rejected { .. } = f.kind {
                assert!(!f.kind.is_retryable());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256), http in http_status(), s in sent()) {
        let v = classify_load(http, &body, &s);
        check_safe(None, http, &s, &v);
        let _ = classify_probe(http, &body);
        let _ = classify_load_state(http, &body);
    }

    #[test]
    fn arbitrary_objects_always_classify_safely(o in reply_object(), http in http_status(), s in sent()) {
        let body = serde_json::to_vec(&Value::Object(o.clone())).unwrap();
        let v = classify_load(http, &body, &s);
        check_safe(Some(&o), http, &s, &v);
        // A probe is never a success.
        let f = classify_probe(http, &body);
        prop_assert!(!matches!(f.kind, FailureKind::Rejected { .. }), "{f:?}");
        let _ = classify_load_state(http, &body);
        // Pretty-printed (as the BE writes it) classifies the same.
        let pretty = serde_json::to_vec_pretty(&Value::Object(o)).unwrap();
        let again = classify_load(http, &pretty, &s);
        match (&again, &v) {
            // Only the excerpt of an unreadable body may differ.
            (Verdict::Failed(a), Verdict::Failed(b)) => prop_assert_eq!(a.kind, b.kind),
            _ => prop_assert_eq!(again, v),
        }
    }

    #[test]
    fn truncated_replies_are_never_success(o in reply_object(), cut in 0usize..400, s in sent()) {
        let body = serde_json::to_vec_pretty(&Value::Object(o)).unwrap();
        let cut = cut.min(body.len().saturating_sub(1));
        let v = classify_load(200, &body[..cut], &s);
        prop_assert!(matches!(v, Verdict::Failed(_)), "{v:?}");
    }
}
