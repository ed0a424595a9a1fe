//! The loader: drains the spool to the sink and advances the confirmed LSN.
