//! Sinks.

pub mod starrocks;
