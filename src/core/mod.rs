//! Types shared by every part of the pipeline: LSNs, relations, tuples, changes.

pub mod change;
pub mod lsn;
pub mod retry;
pub mod tuple;

pub use change::*;
pub use lsn::{Lsn, ParseLsnError};
pub use tuple::{RawTuple, TupleError, ValueRef};
