//! The FE HTTP port: Stream Load authentication, the `Expect: 100-continue` check and the
//! 307 redirect to the BE (never reading the body, always closing), plus `get_load_state`,
//! `_schema`, `health` and `bootstrap`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode, Version};
use serde_json::json;

use crate::faults::{Fault, Node};
use crate::http::{close, json, node_fault_gate, not_found, resp, DropConn, Handler, Resp};
use crate::state::Shared;
use crate::stream_load::parse_basic_auth;

/// The FE handler.
pub fn handler(shared: Arc<Shared>) -> Handler {
    Arc::new(move |req, remote| {
        let shared = shared.clone();
        Box::pin(async move { Ok::<Resp, DropConn>(route(shared, req, remote).await) })
    })
}

fn rest_failed(msg: &str) -> serde_json::Value {
    json!({"status": "FAILED", "code": "1", "msg": msg, "message": msg})
}

/// 401 as `RestBaseAction.handleRequest` answers an AccessDeniedException.
fn unauthorized(msg: &str) -> Resp {
    let mut r = json(StatusCode::UNAUTHORIZED, &rest_failed(msg));
    r.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        hyper::header::HeaderValue::from_static("Basic realm=\"\""),
    );
    r
}

/// Checks Basic auth the FE way; Err is the 401 to send.
fn check_auth(
    shared: &Shared,
    req: &Request<Incoming>,
    remote: SocketAddr,
) -> Result<(), Box<Resp>> {
    match parse_basic_auth(req.headers()) {
        None => Err(Box::new(unauthorized("Need auth information."))),
        Some((u, p)) => {
            if shared.check_credentials(&u, &p) {
                Ok(())
            } else {
                let msg = format!("Access denied for {u}@{}", remote.ip());
                Err(Box::new(unauthorized(&msg)))
            }
        }
    }
}

/// The `TransactionResult` shape (pretty Gson map of Status and Message).
fn transaction_result(msg: &str) -> Resp {
    let body = serde_json::to_string_pretty(&json!({"Status": "FAILED", "Message": msg}))
        .unwrap_or_default();
    close(resp(
        StatusCode::OK,
        "application/json; charset=UTF-8",
        body,
    ))
}

async fn route(shared: Arc<Shared>, req: Request<Incoming>, remote: SocketAddr) -> Resp {
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.split('/').collect();
    let query = req.uri().query().unwrap_or("").to_string();
    match (req.method(), parts.as_slice()) {
        (&Method::PUT, ["", "api", db, table, "_stream_load"]) => {
            let (db, table) = (db.to_string(), table.to_string());
            stream_load(shared, req, remote, &db, &table, &path, &query).await
        }
        (&Method::GET, ["", "api", "health"]) => {
            let online = if shared.faults.down_until(Node::Be).is_some() {
                0
            } else {
                1
            };
            json(
                StatusCode::OK,
                &json!({"total_backend_num": 1, "online_backend_num": online, "status": "OK"}),
            )
        }
        (&Method::GET, ["", "api", "bootstrap"]) => {
            json(StatusCode::OK, &json!({"status": "OK", "msg": "Success"}))
        }
        (&Method::GET, ["", "api", db, "get_load_state"]) => {
            if let Err(r) = check_auth(&shared, &req, remote) {
                return *r;
            }
            load_state(&shared, db, &query)
        }
        (&Method::GET, ["", "api", db, table, "_schema"]) => {
            if let Err(r) = check_auth(&shared, &req, remote) {
                return *r;
            }
            schema(&shared, db, table)
        }
        _ => not_found(),
    }
}

async fn stream_load(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    remote: SocketAddr,
    db: &str,
    table: &str,
    path: &str,
    query: &str,
) -> Resp {
    if let Some(r) = node_fault_gate(&shared, Node::Fe).await {
        return r;
    }
    if let Err(r) = check_auth(&shared, &req, remote) {
        return close(*r);
    }
    if shared.config.require_expect_continue && req.version() >= Version::HTTP_11 {
        let has = req
            .headers()
            .get(hyper::header::EXPECT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().eq_ignore_ascii_case("100-continue"))
            .unwrap_or(false);
        if !has {
            return transaction_result(
                "class com.starrocks.common.DdlException: There is no 100-continue header",
            );
        }
    }
    if db.is_empty() {
        return transaction_result(
            "class com.starrocks.common.DdlException: No database selected.",
        );
    }
    if table.is_empty() {
        return transaction_result("class com.starrocks.common.DdlException: No table selected.");
    }
    if shared
        .faults
        .take(|f| matches!(f, Fault::NoBackendAlive).then_some(()))
        .is_some()
    {
        return transaction_result("class com.starrocks.common.DdlException: No backend alive.");
    }
    let (host, port) = shared
        .faults
        .take(|f| match f {
            Fault::RedirectTo { host, port } => Some((host.clone(), *port)),
            _ => None,
        })
        .unwrap_or_else(|| {
            (
                shared.config.be_host.clone(),
                shared.be_port.load(Ordering::Acquire),
            )
        });
    let location = if query.is_empty() {
        format!("http://{host}:{port}{path}")
    } else {
        format!("http://{host}:{port}{path}?{query}")
    };
    let mut r = resp(StatusCode::TEMPORARY_REDIRECT, "text/html", "");
    if let Ok(v) = location.parse() {
        r.headers_mut().insert(hyper::header::LOCATION, v);
    }
    // The body is never read; the connection is closed after the reply.
    drop(req);
    close(r)
}

fn load_state(shared: &Shared, db: &str, query: &str) -> Resp {
    if db.is_empty() {
        return json(StatusCode::OK, &rest_failed("No database selected."));
    }
    let label = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "label")
        .map(|(_, v)| v.into_owned())
        .filter(|l| !l.is_empty());
    let Some(label) = label else {
        return json(StatusCode::OK, &rest_failed("No label selected."));
    };
    let st = shared.lock();
    let Some(dbo) = st.catalog.dbs.get(db) else {
        return json(
            StatusCode::OK,
            &rest_failed(&format!("unknown database, database={db}")),
        );
    };
    let (state, reason) = match dbo.labels.get(&label) {
        Some(e) => (e.state.as_str(), e.reason.clone()),
        None => ("UNKNOWN", String::new()),
    };
    json(
        StatusCode::OK,
        &json!({"state": state, "reason": reason, "status": "OK", "code": "0", "msg": "Success", "message": "OK"}),
    )
}

fn schema(shared: &Shared, db: &str, table: &str) -> Resp {
    let st = shared.lock();
    let Some(dbo) = st.catalog.dbs.get(db) else {
        return json(
            StatusCode::NOT_FOUND,
            &json!({"status": 404, "exception": format!("Database [{db}] does not exists")}),
        );
    };
    let Some(t) = dbo.tables.get(table) else {
        return json(
            StatusCode::NOT_FOUND,
            &json!({"status": 404, "exception": format!("Table [{table}] does not exists")}),
        );
    };
    let props: Vec<serde_json::Value> = t
        .schema
        .columns
        .iter()
        .map(|c| {
            let mut m = serde_json::Map::new();
            m.insert("name".into(), json!(c.name));
            m.insert("type".into(), json!(c.ty.schema_type_name()));
            if let crate::types::ColumnType::Decimal { precision, scale } = c.ty {
                m.insert("precision".into(), json!(precision.to_string()));
                m.insert("scale".into(), json!(scale.to_string()));
            }
            m.insert("comment".into(), json!(c.comment));
            serde_json::Value::Object(m)
        })
        .collect();
    json(StatusCode::OK, &json!({"status": 200, "properties": props}))
}
