//! Logging setup (tracing): human text by default, JSON lines on request.
