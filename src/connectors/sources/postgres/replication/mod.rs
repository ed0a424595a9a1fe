//! The replication connection: wire protocol (`connection`), the CopyBoth sub-protocol
//! (`protocol`).

pub mod connection;
pub mod protocol;

pub use connection::{ReplicationConnection, SystemInfo};
pub use protocol::ReplicationMessage;
