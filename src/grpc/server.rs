//! [`serve`]: binds the gRPC server (with reflection v1 and v1alpha) and the HTTP
//! metrics/health server, runs them until the shutdown flag turns true. At shutdown the
//! Watch streams send their final update and end first, then the servers stop: a
//! daemon's last state (e.g. `failed`) reaches its watchers before the process exits.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::{info, warn};

use super::proto;
use super::service::{wait_true, ControlService, HealthService, StatusService, WatchStreams};
use super::state::DaemonHandle;

/// How long a graceful stop may take before the servers are dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long Watch streams get to send their final update and end before the servers
/// stop.
const FINAL_UPDATES: Duration = Duration::from_secs(2);

/// Errors of the control plane servers.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
    #[error("control plane task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The running control plane: the addresses actually bound (useful with port 0) and the
/// task that ends after shutdown.
#[derive(Debug)]
pub struct Serving {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub task: JoinHandle<Result<(), ServeError>>,
}

impl Serving {
    /// Waits until both servers have stopped.
    pub async fn wait(self) -> Result<(), ServeError> {
        self.task.await?
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { what, addr, source })
}

/// Binds `grpc` and `http` (errors such as "address in use" are returned at once), then
/// serves in the background until `shutdown` is true (or its sender is dropped).
///
/// `token`: when set, the Control service requires `authorization: Bearer <token>`;
/// Health, Status, reflection and the HTTP endpoints never do.
pub async fn serve(
    handle: DaemonHandle,
    grpc: SocketAddr,
    http: SocketAddr,
    token: Option<SecretString>,
    shutdown: watch::Receiver<bool>,
) -> Result<Serving, ServeError> {
    let grpc_listener = bind("gRPC", grpc).await?;
    let http_listener = bind("HTTP", http).await?;
    let grpc_addr = grpc_listener
        .local_addr()
        .map_err(|source| ServeError::Bind {
            what: "gRPC",
            addr: grpc,
            source,
        })?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|source| ServeError::Bind {
            what: "HTTP",
            addr: http,
            source,
        })?;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;

    let token_set = token.is_some();
    // `shutdown` ends the Watch streams (each with a final update); the servers stop on
    // `stop`, once those streams have ended.
    let streams = WatchStreams::new();
    let (stop_tx, stop) = watch::channel(false);
    let router = tonic::transport::Server::builder()
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(proto::health_server::HealthServer::new(HealthService::new(
            handle.clone(),
        )))
        .add_service(proto::status_server::StatusServer::new(
            StatusService::new(handle.clone())
                .with_shutdown(shutdown.clone())
                .with_streams(streams.clone()),
        ))
        .add_service(proto::control_server::ControlServer::new(
            ControlService::new(handle.clone(), token),
        ));

    let mut sd = Some(stop.clone());
    let grpc_task = tokio::spawn(
        router.serve_with_incoming_shutdown(TcpListenerStream::new(grpc_listener), async move {
            wait_true(&mut sd).await
        }),
    );
    let http_task = tokio::spawn(super::http::run(http_listener, handle, stop));
    info!(grpc = %grpc_addr, http = %http_addr, control_token = token_set, "control plane listening");

    let task = tokio::spawn(async move {
        let mut sd = Some(shutdown);
        let mut grpc_task = grpc_task;
        let mut http_task = http_task;
        // Shutdown first; a server that ends before it was asked to is a failure.
        tokio::select! {
            biased;
            _ = wait_true(&mut sd) => {}
            r = &mut grpc_task => {
                http_task.abort();
                return r?.map_err(ServeError::from);
            }
            r = &mut http_task => {
                grpc_task.abort();
                return r?;
            }
        }
        if tokio::time::timeout(FINAL_UPDATES, streams.ended())
            .await
            .is_err()
        {
            warn!("Watch streams did not end within {FINAL_UPDATES:?}; closing them");
        }
        let _ = stop_tx.send(true);
        let stopped = tokio::time::timeout(SHUTDOWN_GRACE, async {
            let g = (&mut grpc_task).await;
            let h = (&mut http_task).await;
            (g, h)
        })
        .await;
        match stopped {
            Ok((g, h)) => {
                g??;
                h??;
                info!("control plane stopped");
                Ok(())
            }
            Err(_) => {
                warn!("control plane did not stop within {SHUTDOWN_GRACE:?}; dropping open connections");
                grpc_task.abort();
                http_task.abort();
                Ok(())
            }
        }
    });
    Ok(Serving {
        grpc_addr,
        http_addr,
        task,
    })
}
