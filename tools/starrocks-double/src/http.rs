//! HTTP plumbing shared by the FE, BE and control listeners: the accept loop (which really
//! closes and later rebinds the port for a `Down` fault), per-connection hyper HTTP/1.1
//! serving, and small response helpers.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::faults::Node;
use crate::state::Shared;

/// A response.
pub type Resp = Response<Full<Bytes>>;

/// Returned by a handler to drop the connection without a response.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped on purpose")]
pub struct DropConn;

/// A request handler.
pub type Handler = Arc<
    dyn Fn(
            Request<Incoming>,
            SocketAddr,
        ) -> Pin<Box<dyn Future<Output = Result<Resp, DropConn>> + Send>>
        + Send
        + Sync,
>;

/// A response with a body and content type.
pub fn resp(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// A JSON response.
pub fn json(status: StatusCode, v: &serde_json::Value) -> Resp {
    resp(status, "application/json", v.to_string())
}

/// Sets `Connection: close`.
pub fn close(mut r: Resp) -> Resp {
    r.headers_mut().insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    r
}

/// 404 as the BE/FE answer unknown paths.
pub fn not_found() -> Resp {
    resp(StatusCode::NOT_FOUND, "text/plain", "Not Found")
}

/// Binds 127.0.0.1:port.
pub async fn bind(port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind(("127.0.0.1", port)).await
}

/// Runs the accept loop until shutdown. `node` enables the `Down` fault for that node.
pub async fn serve(
    node: Option<Node>,
    listener: TcpListener,
    shared: Arc<Shared>,
    handler: Handler,
) {
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "listener has no local address");
            return;
        }
    };
    let mut listener = Some(listener);
    let (epoch_tx, _) = watch::channel(0u64);
    let mut faults_rx = shared.faults.subscribe();
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        if *shutdown.borrow() {
            break;
        }
        if let Some(n) = node {
            if shared.faults.down_until(n).is_some() {
                drop(listener.take());
                epoch_tx.send_modify(|e| *e += 1);
                tracing::info!(?n, %addr, "node down: listener closed");
                while shared.faults.down_until(n).is_some() && !*shutdown.borrow() {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                        _ = faults_rx.changed() => {}
                        _ = shutdown.changed() => {}
                    }
                }
                if *shutdown.borrow() {
                    break;
                }
                listener = loop {
                    match TcpListener::bind(addr).await {
                        Ok(l) => break Some(l),
                        Err(e) => {
                            tracing::warn!(error = %e, %addr, "rebind failed, retrying");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                };
                tracing::info!(?n, %addr, "node up again");
                continue;
            }
        }
        let Some(l) = listener.as_ref() else { break };
        tokio::select! {
            r = l.accept() => {
                let (stream, remote) = match r {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                if let Some(n) = node {
                    if shared.faults.take_down_count(n) {
                        drop(stream);
                        continue;
                    }
                }
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                let mut epoch_rx = epoch_tx.subscribe();
                let mut sd = shared.shutdown.subscribe();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let h = handler.clone();
                        async move { h(req, remote).await }
                    });
                    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        r = conn => {
                            if let Err(e) = r {
                                tracing::debug!(error = %e, "http connection ended");
                            }
                        }
                        _ = epoch_rx.changed() => {}
                        _ = sd.changed() => {}
                    }
                });
            }
            _ = faults_rx.changed() => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Applies the node-level faults (slow, hang, HTTP 5xx) to a Stream Load request. Returns a
/// response to send instead of handling the request, or None to go on.
pub async fn node_fault_gate(shared: &Shared, node: Node) -> Option<Resp> {
    let delay = shared.faults.take(|f| match f {
        crate::faults::Fault::Slow { node: n, delay_ms } if *n == node => Some(*delay_ms),
        _ => None,
    });
    if let Some(d) = delay {
        tokio::time::sleep(Duration::from_millis(d)).await;
    }
    let hang = shared
        .faults
        .take(|f| matches!(f, crate::faults::Fault::Hang { node: n } if *n == node).then_some(()));
    if hang.is_some() {
        std::future::pending::<()>().await;
    }
    let status = shared.faults.take(|f| match f {
        crate::faults::Fault::Http5xx { node: n, status } if *n == node => Some(*status),
        _ => None,
    });
    if let Some(s) = status {
        let code = StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let reason = code.canonical_reason().unwrap_or("Error");
        return Some(close(resp(
            code,
            "text/html",
            format!("<html><body><h1>{s} {reason}</h1></body></html>"),
        )));
    }
    None
}
