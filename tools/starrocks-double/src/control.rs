//! The control port: the double's own HTTP API (no auth) to switch faults, read tables,
//! labels and the load log, run SQL and reset state. Routes are listed in the README.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::faults::{Fault, FaultDuration};
use crate::http::{json, not_found, DropConn, Handler, Resp};
use crate::sql::{self, Session};
use crate::state::Shared;

/// Body of `POST /faults`.
#[derive(Debug, Deserialize)]
pub struct FaultRequest {
    /// The fault.
    pub fault: Fault,
    /// Number of hits (Count).
    pub count: Option<u64>,
    /// Duration in ms (For).
    pub for_ms: Option<u64>,
}

/// The control handler.
pub fn handler(shared: Arc<Shared>) -> Handler {
    Arc::new(move |req, remote| {
        let shared = shared.clone();
        Box::pin(async move { Ok::<Resp, DropConn>(route(shared, req, remote).await) })
    })
}

fn bad(msg: impl std::fmt::Display) -> Resp {
    json(StatusCode::BAD_REQUEST, &json!({"error": msg.to_string()}))
}

async fn route(shared: Arc<Shared>, req: Request<Incoming>, _remote: SocketAddr) -> Resp {
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let method = req.method().clone();
    match (method, parts.as_slice()) {
        (Method::GET, ["", "health"]) => json(StatusCode::OK, &json!({"status": "OK"})),
        (Method::GET, ["", "faults"]) => json(StatusCode::OK, &json!(shared.faults.list())),
        (Method::POST, ["", "faults"]) => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return bad(e),
            };
            let fr: FaultRequest = match serde_json::from_slice(&body) {
                Ok(f) => f,
                Err(e) => return bad(format!("bad fault request: {e}")),
            };
            let d = match (fr.count, fr.for_ms) {
                (Some(n), _) => FaultDuration::Count(n),
                (None, Some(ms)) => FaultDuration::For(Duration::from_millis(ms)),
                (None, None) => FaultDuration::Forever,
            };
            let id = shared.faults.add(fr.fault, d);
            json(StatusCode::OK, &json!({"id": id}))
        }
        (Method::DELETE, ["", "faults"]) => {
            shared.faults.clear();
            json(StatusCode::OK, &json!({"cleared": true}))
        }
        (Method::DELETE, ["", "faults", id]) => match id.parse::<u64>() {
            Ok(id) => json(
                StatusCode::OK,
                &json!({"removed": shared.faults.remove(id)}),
            ),
            Err(e) => bad(e),
        },
        (Method::GET, ["", "loads"]) => json(StatusCode::OK, &json!(shared.lock().loads)),
        (Method::DELETE, ["", "loads"]) => {
            shared.lock().loads.clear();
            json(StatusCode::OK, &json!({"cleared": true}))
        }
        (Method::GET, ["", "tables"]) => {
            let st = shared.lock();
            let list: Vec<serde_json::Value> = st
                .catalog
                .dbs
                .iter()
                .flat_map(|(d, db)| {
                    let loaded = &st.loaded_rows;
                    db.tables.iter().map(move |(t, tb)| {
                        let n = loaded.get(&(d.clone(), t.clone())).copied().unwrap_or(0);
                        json!({"db": d, "table": t, "rows": tb.rows.len(), "loaded_rows": n})
                    })
                })
                .collect();
            json(StatusCode::OK, &json!(list))
        }
        (Method::GET, ["", "tables", db, table, "rows"]) => {
            let st = shared.lock();
            match st.catalog.dbs.get(*db).and_then(|d| d.tables.get(*table)) {
                Some(t) => json(StatusCode::OK, &json!(t.rows_json())),
                None => json(
                    StatusCode::NOT_FOUND,
                    &json!({"error": format!("no table {db}.{table}")}),
                ),
            }
        }
        (Method::GET, ["", "labels", db]) => {
            let st = shared.lock();
            match st.catalog.dbs.get(*db) {
                Some(d) => {
                    let m: serde_json::Map<String, serde_json::Value> =
                        d.labels.all().map(|(l, e)| (l.clone(), json!(e))).collect();
                    json(StatusCode::OK, &serde_json::Value::Object(m))
                }
                None => json(
                    StatusCode::NOT_FOUND,
                    &json!({"error": format!("no database {db}")}),
                ),
            }
        }
        (Method::POST, ["", "sql"]) => {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return bad(e),
            };
            let text = String::from_utf8_lossy(&body).into_owned();
            let query = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("query").and_then(|q| q.as_str()).map(str::to_string))
                .unwrap_or(text);
            let mut session = Session::default();
            match sql::execute(&shared, &mut session, &query) {
                Ok(out) => json(StatusCode::OK, &out.to_json()),
                Err(e) => json(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": e.message, "code": e.code}),
                ),
            }
        }
        (Method::POST, ["", "reset"]) => {
            shared.faults.clear();
            {
                let mut st = shared.lock();
                st.catalog = Default::default();
                st.loads.clear();
                st.error_logs.clear();
            }
            shared.mark_dirty();
            json(StatusCode::OK, &json!({"reset": true}))
        }
        _ => not_found(),
    }
}
