//! Control plane: gRPC status and control, metrics, health.

pub mod state;
