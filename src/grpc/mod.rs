//! Control plane: gRPC status and control, metrics, health.
