//! End to end: labels do not change across restarts (issue 9, case 2). StarRocks holds a
//! load it received before dbmazz died and commits it after the client is gone; the
//! restarted dbmazz must re-send exactly that load (same label, same rows) and wait for
//! it before anything newer of that table, or the late commit reverts newer rows.

mod support;

use std::time::Duration;

use starrocks_double::{Fault, FaultDuration};
use support::e2e::*;

const LONG: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_committed_after_a_crash_never_reverts_newer_rows() {
    let mut e = E2e::start(
        "CREATE TABLE t (id bigint PRIMARY KEY, v text);",
        "t",
        &["CREATE TABLE t (id BIGINT NOT NULL, v VARCHAR(1048576)) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 1"],
    )
    .await;
    e.spawn();
    e.wait_for(LONG, "slot created", |e| e.slot_count() == 1)
        .await;
    // The next load is received and held, answered never, committed 8 s later.
    e.sr.set_fault(
        Fault::LateCommit {
            commit_after_ms: 8000,
        },
        FaultDuration::Count(1),
    );
    e.sql("INSERT INTO t VALUES (1, 'old');");
    e.wait_for(LONG, "the load held by StarRocks", |e| {
        e.sr.faults().iter().all(|f| f.remaining == Some(0)) || e.sr.faults().is_empty()
    })
    .await;
    e.sigkill().await;
    // Newer changes while dbmazz is down: a restart groups records differently.
    e.sql("UPDATE t SET v = 'new' WHERE id = 1; INSERT INTO t VALUES (2, 'two');");
    e.spawn();
    // The held load commits (the double logs it, unanswered) ...
    e.wait_for(LONG, "the late commit", |e| {
        e.sr.loads().iter().any(|l| l.committed && !l.replied)
    })
    .await;
    // ... and the newer rows win.
    e.wait_for(LONG, "newer rows after the late commit", |e| {
        target_pairs(e, "t", "v") == vec![(1, "new".into()), (2, "two".into())]
    })
    .await;
    let held =
        e.sr.loads()
            .into_iter()
            .find(|l| l.committed && !l.replied)
            .map(|l| l.label)
            .unwrap();
    let resent = e.sr.loads().iter().filter(|l| l.label == held).count();
    assert!(
        resent >= 2,
        "the held label was not re-sent after the restart"
    );
    assert_eq!(e.sigterm().await.code(), Some(0));
    assert_eq!(
        target_pairs(&e, "t", "v"),
        vec![(1, "new".into()), (2, "two".into())]
    );
}
