//! The PostgreSQL reader: replication connection, pgoutput decoding, setup and checks.

pub mod conninfo;
pub mod pgoutput;
