//! The command line: `dbmazz run|check|spool|status|slot drop`.

pub mod spool;
