//! Change sources.

pub mod postgres;
