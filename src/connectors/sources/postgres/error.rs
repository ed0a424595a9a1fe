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
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error(
        "TLS handshake with {target} failed: {source}{}",
        handshake_hint(source)
    )]
    TlsHandshake {
        target: String,
        source: std::io::Error,
    },
    #[error("the server at {0} does not accept TLS but sslmode requires it; enable ssl on the server or use sslmode=prefer")]
    TlsRefused(String),
    /// The server refused the login (or asked for a method dbmazz lacks).
    #[error("cannot log in to PostgreSQL: {0}")]
    Auth(String),
    #[error("PostgreSQL error: {0}")]
    Server(ServerError),
    #[error("replication protocol error: {0}")]
    Protocol(String),
    /// The server ended the replication stream on its own (clean shutdown, restart,
    /// failover): reconnect.
    #[error("PostgreSQL at {target} ended the replication stream ({how})")]
    StreamEnded { target: String, how: &'static str },
    #[error("connection to PostgreSQL lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("undecodable pgoutput message at {lsn}: {reason}")]
    Decode {
        lsn: crate::core::Lsn,
        reason: String,
    },
    #[error("PostgreSQL: {}", pg_error_text(.0))]
    Query(#[from] tokio_postgres::Error),
    /// An ordinary (non-replication) connection could not be opened.
    #[error("cannot connect to PostgreSQL at {target}: {}", pg_error_text(source))]
    ClientConnect {
        target: String,
        source: tokio_postgres::Error,
    },
    #[error("{0}")]
    Setup(String),
}

impl SourceError {
    /// True when retrying later (reconnecting) may succeed: the server is down, starting,
    /// shutting down, restarting or failing over, or the network failed. Bad credentials,
    /// missing privileges, a missing slot or publication, a certificate that does not
    /// verify and protocol violations are permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::Connect { .. } | SourceError::Io(_) | SourceError::StreamEnded { .. } => {
                true
            }
            SourceError::TlsHandshake { source, .. } => !is_certificate_rejection(source),
            SourceError::Server(e) => is_transient_sqlstate(&e.code),
            SourceError::Query(e) | SourceError::ClientConnect { source: e, .. } => {
                match e.code() {
                    Some(code) => is_transient_sqlstate(code.code()),
                    // No SQLSTATE: the connection itself failed.
                    None => true,
                }
            }
            _ => false,
        }
    }
}

/// SQLSTATEs worth a retry: connection exceptions (08), the server shutting down or
/// being restarted (57P01 admin_shutdown, 57P02 crash_shutdown), not accepting
/// connections yet or any more (57P03 cannot_connect_now: starting up, shutting down, in
/// recovery), idle-session timeout (57P05), a cancelled statement (57014), insufficient
/// resources incl. too many connections/WAL senders (53), serialization failures (40),
/// "slot is active for another process" (55006, e.g. the old walsender is still
/// exiting), system I/O errors (58000, 58030). 57P04 (database dropped) is permanent.
pub fn is_transient_sqlstate(code: &str) -> bool {
    matches!(
        code,
        "57P01" | "57P02" | "57P03" | "57P05" | "57014" | "55006" | "58000" | "58030"
    ) || code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("40")
}

/// The whole story of a tokio-postgres error: its own Display is only the kind ("db
/// error", "error connecting to server"); the server's message or the I/O cause is in
/// its source. Never contains a password (tokio-postgres does not put one in errors).
pub fn pg_error_text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return ServerError {
            severity: db.severity().to_string(),
            code: db.code().code().to_string(),
            message: db.message().to_string(),
            detail: db.detail().map(str::to_string),
            hint: db.hint().map(str::to_string),
        }
        .to_string();
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

fn handshake_hint(e: &std::io::Error) -> &'static str {
    if is_certificate_rejection(e) {
        "; the server's certificate does not verify against sslrootcert (with sslmode=verify-full the host name must also be in the certificate): fix sslrootcert, or the certificate, or connect by the name the certificate holds"
    } else {
        ""
    }
}

/// A TLS handshake that failed because the server's certificate was rejected (it will
/// not verify on the next attempt either), as opposed to a connection cut mid-handshake.
fn is_certificate_rejection(e: &std::io::Error) -> bool {
    matches!(
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        Some(
            rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::UnsupportedNameType
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str) -> SourceError {
        SourceError::Server(ServerError {
            severity: "FATAL".into(),
            code: code.into(),
            message: "m".into(),
            ..ServerError::default()
        })
    }

    #[test]
    fn shutdowns_restarts_and_connection_failures_are_transient() {
        for code in [
            "57P01", "57P02", "57P03", "08006", "08P01", "53300", "55006", "40001",
        ] {
            assert!(server(code).is_transient(), "{code}");
        }
        let ended = SourceError::StreamEnded {
            target: "h:5432".into(),
            how: "CommandComplete",
        };
        assert!(ended.is_transient());
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(SourceError::Io(reset).is_transient());
    }

    #[test]
    fn credentials_privileges_and_missing_objects_are_permanent() {
        // 28P01 bad password, 42501 no privilege, 42704 slot/publication missing,
        // 57P04 database dropped, 55000 e.g. wal_level or an invalidated slot.
        for code in [
            "28P01", "28000", "42501", "42704", "57P04", "55000", "58P01",
        ] {
            assert!(!server(code).is_transient(), "{code}");
        }
        assert!(!SourceError::Auth("x".into()).is_transient());
        let bad_cert = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let e = SourceError::TlsHandshake {
            target: "h:5432".into(),
            source: bad_cert,
        };
        assert!(!e.is_transient());
        let cut = SourceError::TlsHandshake {
            target: "h:5432".into(),
            source: std::io::ErrorKind::UnexpectedEof.into(),
        };
        assert!(cut.is_transient());
    }
}
