//! dbmazz: PostgreSQL logical replication → durable local spool → StarRocks Stream Load.
//!
//! The folders follow the architecture contract (`docs/architecture.md`):
//! - [`connectors::sources::postgres`]: the reader (replication connection, pgoutput, setup);
//! - [`spool`]: the durable sled spool between reader and loader;
//! - [`pipeline`] + [`connectors::sinks::starrocks`]: the loader;
//! - [`lifecycle`]: the daemon's states, control requests and drain; [`grpc`]: the
//!   control plane that shows and steers it;
//! - [`core`]: types they share; [`config`]: configuration; [`cli`]: the command line.

pub mod cli;
pub mod config;
pub mod connectors;
pub mod core;
pub mod daemon;
pub mod failpoints;
pub mod grpc;
pub mod lifecycle;
pub mod logging;
pub mod pipeline;
pub mod spool;
