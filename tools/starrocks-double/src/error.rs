//! Errors of the double's Rust API (start-up, SQL, persistence). Protocol-level failures
//! are not errors here: they are StarRocks-shaped responses built by the FE/BE modules.

use std::path::PathBuf;

/// An error from the double's own API.
#[derive(Debug, thiserror::Error)]
pub enum DoubleError {
    /// A listener could not be bound.
    #[error("cannot bind {what} on 127.0.0.1:{port}: {source}")]
    Bind {
        /// Which listener (fe-http, be-http, mysql, control).
        what: &'static str,
        /// The requested port.
        port: u16,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A SQL statement was rejected (same text as the MySQL error).
    #[error("sql error {code}: {message}")]
    Sql {
        /// MySQL error code.
        code: u16,
        /// Message.
        message: String,
    },
    /// Reading or writing the persistence directory failed.
    #[error("persistence at {path}: {message}")]
    Persist {
        /// The file involved.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A named object does not exist.
    #[error("{0}")]
    NotFound(String),
}
