//! Errors of the PostgreSQL source, split into transient (reconnect) and permanent (stop).
//!
//! Messages never contain the connection string or a password.

use std::fmt;

use super::tls::TlsError;

/// An ErrorResponse from the server, with the fields an operator needs.
#[derive(Debug, Clone, Default)]
pub struct ServerError {
    pub severity: String,
    /// SQLSTATE, e.g. `42704`.
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)?;
        if let Some(d) = &self.detail {
            write!(f, " (detail: {d})")?;
        }
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

/// Anything that can go wrong talking to PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot connect to PostgreSQL at {target}: {source}")]
    Connect {
        target: String,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("TLS handshake with {target} failed: {source}")]
    TlsHandshake {
        target: String,
        source: std::io::Error,
    },
    #[error("the server at {0} does not accept TLS but sslmode requires it")]
    TlsRefused(String),
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("PostgreSQL error: {0}")]
    Server(ServerError),
    #[error("replication protocol error: {0}")]
    Protocol(String),
    #[error("connection to PostgreSQL lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("undecodable pgoutput message at {lsn}: {reason}")]
    Decode {
        lsn: crate::core::Lsn,
        reason: String,
    },
    #[error("PostgreSQL query failed: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("{0}")]
    Setup(String),
}

impl SourceError {
    /// True when retrying later (reconnecting) may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::Connect { .. } | SourceError::Io(_) | SourceError::TlsHandshake { .. } => {
                true
            }
            SourceError::Server(e) => is_transient_sqlstate(&e.code),
            SourceError::Query(e) => match e.code() {
                Some(code) => is_transient_sqlstate(code.code()),
                // No SQLSTATE: the connection itself failed.
                None => true,
            },
            _ => false,
        }
    }
}

/// SQLSTATEs worth a retry: connection exceptions, shutdown, too many connections,
/// resource problems, serialization failures, "slot is active for another process".
fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("57P")
        || code.starts_with("53")
        || code.starts_with("40")
        || code == "55006"
}
