//! The loader: drains the spool to the sink and advances the confirmed LSN.
//!
//! `plan` turns spool records into ordered per-table steps (pure); `loader` reads
//! durable records, executes the steps through a `LoadSink` (the StarRocks one lives in
//! `connectors::sinks::starrocks::sink`) and advances the
//! loaded mark and the confirmed LSN (invariants 1, 4, 5, 10).

pub mod journal;
pub mod label;
pub mod loader;
pub mod plan;
pub mod status;

#[cfg(test)]
mod tests;
