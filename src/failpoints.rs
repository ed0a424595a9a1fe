//! Named fault-injection points (the `fail` crate pattern). They exist only when the
//! `failpoints` cargo feature is on (the test suite turns it on through a dev-dependency);
//! in a normal build every point compiles to nothing.
//!
//! A test switches a point on in-process with `fail::cfg(NAME, "return")`, or for a
//! `dbmazz` child with the `FAILPOINTS` environment variable (`name=action;name=action`),
//! which `dbmazz` reads at start when the feature is on. Actions:
//! - at a [`crash`] point, `return` ends the process at once (`abort`: no cleanup, no
//!   flush, like `kill -9` at exactly that spot); `panic`, `sleep(ms)` and `pause` work too;
//! - at an [`error`] point, `return(message)` makes the operation fail with that message.
//!
//! Every name is a constant here, so tests and code cannot drift apart.

/// Spool group commit: the records are flushed, the ledger (durable mark) not yet written.
pub const SPOOL_FLUSH_BEFORE_LEDGER: &str = "spool::flush-before-ledger";
/// Spool group commit: the ledger is written and synced, the durable mark not yet published.
pub const SPOOL_FLUSH_AFTER_LEDGER: &str = "spool::flush-after-ledger";
/// `mark_loaded`: before the new loaded mark is written.
pub const SPOOL_MARK_LOADED: &str = "spool::mark-loaded";
/// Spool storage (sled): a write or sync fails with ENOSPC, as on a full disk.
pub const SPOOL_DISK_FULL: &str = "spool::disk-full";
/// Loader: a window is loaded into the sink, its loaded mark not yet written.
pub const LOADER_LOADED_NOT_MARKED: &str = "loader::loaded-not-marked";
/// Reader: right after a standby status update was sent.
pub const READER_AFTER_STATUS: &str = "reader::after-status-update";
/// Sink: the Stream Load body is sent, the reply not yet read.
pub const SINK_AFTER_BODY: &str = "sink::after-body-before-reply";

/// Turns the `FAILPOINTS` environment variable into configured points (feature on only).
/// Keep the returned guard alive for the life of the process.
#[cfg(feature = "failpoints")]
pub fn setup() -> Option<fail::FailScenario<'static>> {
    Some(fail::FailScenario::setup())
}

#[cfg(not(feature = "failpoints"))]
pub fn setup() -> Option<()> {
    None
}

/// A point where the process may be made to die (action `return`), panic, sleep or pause.
#[inline]
pub fn crash(name: &'static str) {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(name, |_| {
        tracing::error!(failpoint = name, "failpoint: ending the process here");
        std::process::abort();
    });
    let _ = name;
}

/// A point where an operation may be made to fail: `Some(message)` when the point is
/// configured with `return(message)` (or plain `return`: the point's name).
#[inline]
pub fn error(name: &'static str) -> Option<String> {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(name, |arg: Option<String>| Some(
        arg.unwrap_or_else(|| format!("failpoint {name}"))
    ));
    let _ = name;
    None
}
