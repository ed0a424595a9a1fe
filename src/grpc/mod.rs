//! Control plane: gRPC status and control ([`service`], [`server`]), Prometheus metrics
//! and health endpoints over HTTP ([`http`]), the replication slot poller ([`slot`]),
//! and the model they all read ([`state`]).
//!
//! The daemon builds a [`state::DaemonHandle`] and calls [`serve`].

pub mod http;
pub mod server;
pub mod service;
pub mod slot;
pub mod state;

pub use server::{serve, ServeError, Serving};

/// The generated `dbmazz.v1` messages, services and clients.
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod proto {
    tonic::include_proto!("dbmazz.v1");

    /// Encoded `FileDescriptorSet` of `proto/dbmazz/v1/dbmazz.proto` (for reflection).
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/dbmazz_descriptor.bin"));
}
