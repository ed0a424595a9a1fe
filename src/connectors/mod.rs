//! Sources (PostgreSQL) and sinks (StarRocks).

pub mod sinks;
pub mod sources;
