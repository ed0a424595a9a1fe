//! The BE HTTP port: Stream Load itself (always HTTP 200 + JSON), the error logs behind
//! ErrorURL, and health.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::json;

use crate::faults::Node;
use crate::http::{close, json, node_fault_gate, not_found, resp, DropConn, Handler, Resp};
use crate::state::Shared;
use crate::stream_load::{self, Outcome};

/// The BE handler.
pub fn handler(shared: Arc<Shared>) -> Handler {
    Arc::new(move |req, remote| {
        let shared = shared.clone();
        Box::pin(async move { route(shared, req, remote).await })
    })
}

async fn route(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    remote: SocketAddr,
) -> Result<Resp, DropConn> {
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.split('/').collect();
    match (req.method().clone(), parts.as_slice()) {
        (Method::PUT, ["", "api", db, table, "_stream_load"]) => {
            if let Some(r) = node_fault_gate(&shared, Node::Be).await {
                return Ok(r);
            }
            let (db, table) = (db.to_string(), table.to_string());
            match stream_load::handle(shared.clone(), &db, &table, req, remote.ip().to_string())
                .await
            {
                Outcome::Reply {
                    resp: body,
                    close: c,
                } => {
                    let text = body.render(shared.config.legacy_put_time_key);
                    let r = resp(StatusCode::OK, "application/json", text);
                    Ok(if c { close(r) } else { r })
                }
                Outcome::Drop => Err(DropConn),
            }
        }
        (Method::GET | Method::HEAD, ["", "api", "_load_error_log"]) => {
            let file = url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .find(|(k, _)| k == "file")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            let log = shared.lock().error_logs.get(&file).cloned();
            Ok(match log {
                Some(text) => resp(StatusCode::OK, "text/plain; charset=utf-8", text),
                None => not_found(),
            })
        }
        (Method::GET, ["", "api", "health"]) => Ok(json(
            StatusCode::OK,
            &json!({"status": "OK", "msg": "To Be Added"}),
        )),
        _ => Ok(not_found()),
    }
}
