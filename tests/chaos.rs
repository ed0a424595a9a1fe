//! The chaos run's short form (issue 9): about 100 s of a mixed workload while dbmazz is
//! killed, PostgreSQL restarted and taken down, the StarRocks double taken down and
//! faulted and the spool's disk filled (the `spool::disk-full` failpoint; the test
//! binary's dbmazz has failpoints); then every table compared row by row, and the slot's
//! confirmed LSN sampled throughout. `CHAOS_SECONDS` and `CHAOS_SEED` change the run;
//! the long runs and their figures are in docs/reliability.md.

use std::io::Write as _;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_short_form_loses_reverts_and_confirms_nothing_early() {
    let seconds = std::env::var("CHAOS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let mut opts =
        dbmazz_chaos::Options::new(env!("CARGO_BIN_EXE_dbmazz"), Duration::from_secs(seconds));
    if let Some(seed) = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        opts.seed = seed;
    }
    let report = dbmazz_chaos::run(opts).await.expect("chaos run set-up");
    let _ = write!(std::io::stdout(), "{report}");
    assert!(report.passed(), "{report}");
    assert!(
        report.transactions_committed > 1000 && report.confirmation_checks > 0,
        "the run did too little to mean anything: {report}"
    );
}
