//! The PostgreSQL reader: replication connection, pgoutput decoding, setup and checks.

pub mod conninfo;
pub mod error;
pub mod pgoutput;
pub mod replication;
pub mod tls;

pub use error::{ServerError, SourceError};
pub mod catalog;
pub mod client;
pub mod reader;
pub mod setup;
