//! Capacity and the writer task: at SPOOL_MAX_BYTES the spool reports full, the writer
//! stops consuming its channel (the reader then pauses), nothing is dropped, and it
//! resumes once the loader frees space. Group commit publishes durable marks.

#[path = "spool/common.rs"]
mod common;

use std::time::Duration;

use common::*;
use dbmazz::core::*;
use dbmazz::spool::{writer, GroupCommit, Spool, SpoolOptions};

fn opts(max: u64) -> SpoolOptions {
    SpoolOptions {
        cache_capacity: 4 << 20,
        max_bytes: max,
        segment_bytes: 64 << 10,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_pauses_when_full_and_resumes_after_loading() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), opts(20_000)).unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<ReaderEvent>>(1);
    let gc = GroupCommit {
        max_txns: 2,
        max_bytes: 1 << 20,
        max_delay: Duration::from_millis(10),
        ..GroupCommit::default()
    };
    let (task, mut marks) = writer::spawn(spool.clone(), rx, gc);
    tx.send(vec![ReaderEvent::Relation(rel(1, 2))])
        .await
        .unwrap();
    let payload = "z".repeat(1000);
    // Each transaction is ~5 KB: the spool fills after a handful.
    let mut sent = 0u32;
    let mut blocked = false;
    for k in 1..=40u32 {
        let ev = txn(k, 1, k as u64 * 100, 5, &payload);
        match tokio::time::timeout(Duration::from_millis(500), tx.send(ev)).await {
            Ok(r) => {
                r.unwrap();
                sent = k;
            }
            Err(_) => {
                blocked = true;
                break;
            }
        }
    }
    assert!(
        blocked,
        "the writer kept consuming although the spool is full"
    );
    assert!(spool.is_full());
    assert!(spool.stats().full);
    // Wait for the last durable mark, then load everything: the writer resumes.
    let mark = loop {
        let m = *marks.borrow_and_update();
        if m.seq > 0 && !spool.read_from(m.seq + 1, 1).unwrap().is_empty() {
            continue;
        }
        if spool.stats().unflushed_bytes == 0 && m.seq > 0 {
            break m;
        }
        marks.changed().await.unwrap();
    };
    let before = read_all(&spool);
    spool.mark_loaded(mark.seq, mark.commit_lsn).unwrap();
    assert!(!spool.is_full());
    for k in sent + 1..=sent + 2 {
        tokio::time::timeout(
            Duration::from_secs(5),
            tx.send(txn(k, 1, k as u64 * 100, 5, &payload)),
        )
        .await
        .expect("the writer resumed")
        .unwrap();
    }
    drop(tx);
    task.await.unwrap().unwrap();
    // Nothing dropped: every transaction sent is in the spool, in order.
    let after = read_all(&spool);
    let mut xids: Vec<u32> = txns_of(&before).into_iter().map(|t| t.0).collect();
    xids.extend(txns_of(&after).into_iter().map(|t| t.0));
    let total = spool.durable_mark().commit_lsn.0 / 100;
    assert_eq!(xids, (1..=total as u32).collect::<Vec<_>>());
    assert_eq!(total as u32, sent + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_flushes_by_count_and_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), opts(1 << 40)).unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<ReaderEvent>>(16);
    let gc = GroupCommit {
        max_txns: 1000,
        max_bytes: 1 << 30,
        max_delay: Duration::from_millis(30),
        ..GroupCommit::default()
    };
    let (task, mut marks) = writer::spawn(spool.clone(), rx, gc);
    tx.send(vec![ReaderEvent::Relation(rel(1, 2))])
        .await
        .unwrap();
    for k in 1..=10u32 {
        tx.send(txn(k, 1, k as u64 * 100, 2, "x")).await.unwrap();
    }
    // Far below max_txns: the time bound flushes them.
    let m = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            marks.changed().await.unwrap();
            let m = *marks.borrow();
            if m.seq == 30 {
                break m;
            }
        }
    })
    .await
    .expect("time-bound flush");
    assert_eq!(m.commit_lsn, Lsn(1003));
    assert_eq!(read_all(&spool).len(), 30);
    drop(tx);
    task.await.unwrap().unwrap();
}

#[test]
fn a_single_transaction_larger_than_the_limit_is_not_a_deadlock() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), opts(10_000)).unwrap();
    spool.append(&ReaderEvent::Relation(rel(1, 2))).unwrap();
    let mut ev = txn(1, 1, 100, 30, &"y".repeat(1000));
    let commit = ev.pop().unwrap();
    spool.append_all(&ev).unwrap();
    assert!(spool.is_full());
    // Nothing loadable: pausing would wait forever, so the writer must go on.
    assert!(!spool.should_pause());
    spool.append(&commit).unwrap();
    spool.flush().unwrap();
    assert!(spool.should_pause(), "full with a loadable backlog: pause");
    assert_eq!(read_all(&spool).len(), 31);
}
