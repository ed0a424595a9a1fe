//! Reclaiming disk: append a large backlog, mark it all loaded, and the bytes on disk
//! drop to a small fraction (whole segment databases are deleted). ~200 MB in the normal
//! suite; `cargo test --release --test spool_reclaim -- --ignored` runs the 1 GB version.

#[path = "spool/common.rs"]
mod common;

use std::time::Instant;

use common::*;
use dbmazz::core::*;
use dbmazz::spool::{dir_bytes, Spool, SpoolOptions};

/// A spool in `dir` with this cache and segment size and no capacity limit.
fn spool(dir: &std::path::Path, cache_capacity: u64, segment_bytes: u64) -> Spool {
    Spool::open(
        dir,
        SpoolOptions {
            cache_capacity,
            max_bytes: 1 << 40,
            segment_bytes,
        },
    )
    .unwrap()
}

fn run(total: u64) {
    let dir = tempfile::tempdir().unwrap();
    let s = spool(dir.path(), 16 << 20, 32 << 20);
    s.append(&ReaderEvent::Relation(rel(1, 2))).unwrap();
    let payload = "r".repeat(4000);
    let per_txn = 50u64;
    let txns = total / (per_txn * 4000);
    let t0 = Instant::now();
    let mut xid = 1u32;
    let mut lsn = 1u64;
    for t in 0..txns {
        s.append_all(&txn(xid, 1, lsn, per_txn as usize, &payload))
            .unwrap();
        xid += 1;
        lsn += per_txn + 10;
        if t % 20 == 19 {
            s.flush().unwrap();
        }
    }
    let mark = s.flush().unwrap();
    let append_secs = t0.elapsed().as_secs_f64();
    let full = dir_bytes(dir.path());
    let before = s.stats();
    assert!(
        before.pending_bytes >= total * 9 / 10,
        "pending bytes {}",
        before.pending_bytes
    );
    // The loader loads everything, in a few steps.
    let t1 = Instant::now();
    s.mark_loaded(mark.seq, mark.commit_lsn).unwrap();
    let after = dir_bytes(dir.path());
    let st = s.stats();
    println!(
        "reclaim: payload {:.0} MB, on disk {:.0} MB full ({:.2} bytes/byte), {:.1} MB after loading all ({:.2}% of full); append {:.1}s, mark_loaded {:.2}s",
        before.pending_bytes as f64 / 1e6,
        full as f64 / 1e6,
        full as f64 / before.pending_bytes as f64,
        after as f64 / 1e6,
        after as f64 * 100.0 / full as f64,
        append_secs,
        t1.elapsed().as_secs_f64()
    );
    assert_eq!(st.pending_records, 0);
    assert!(full >= total, "the backlog is on disk ({full} bytes)");
    assert!(
        after * 20 < full,
        "after loading everything {after} bytes remain of {full}"
    );
    // And the spool keeps working: a restart resumes at the same mark.
    drop(s);
    let s = open(dir.path());
    assert_eq!(s.durable_mark(), mark);
    s.append_all(&txn(xid, 1, lsn, 1, "after")).unwrap();
    assert_eq!(s.flush().unwrap().seq, mark.seq + 2);
    assert_eq!(read_all(&s).len(), 2);
}

#[test]
fn loading_everything_gives_the_disk_back_200mb() {
    run(200 << 20);
}

#[test]
#[ignore = "1 GB; run with --ignored (release recommended)"]
fn loading_everything_gives_the_disk_back_1gb() {
    run(1 << 30);
}

/// Memory: sled keeps every value written to an open database in memory whatever its
/// cache capacity, so segments the writer has finished must be closed even while nothing
/// reads (StarRocks down: the loader is idle and the backlog grows).
#[test]
fn finished_segments_are_closed_while_nothing_reads() {
    let dir = tempfile::tempdir().unwrap();
    let s = spool(dir.path(), 8 << 20, 256 << 10);
    s.append(&ReaderEvent::Relation(rel(1, 2))).unwrap();
    let payload = "r".repeat(4000);
    let (mut xid, mut lsn) = (1u32, 1u64);
    for _ in 0..100 {
        s.append_all(&txn(xid, 1, lsn, 10, &payload)).unwrap();
        xid += 1;
        lsn += 20;
        s.flush().unwrap();
    }
    let st = s.stats();
    assert!(
        st.segments >= 10,
        "the backlog spans segments: {}",
        st.segments
    );
    // The writer's segment and at most one other.
    assert!(
        st.open_segments <= 2,
        "{} of {} segments still open",
        st.open_segments,
        st.segments
    );
}

/// Memory flat in a streamed transaction's size: it is stored as a chain of chunk
/// databases of `segment_bytes`, only the last one open. A transaction spanning many
/// chunks (several stream segments, as PostgreSQL sends them) commits whole and in
/// order, and its chunks are gone after the next checkpoint.
#[test]
fn a_large_streamed_transaction_spans_chunks_and_commits_whole() {
    let dir = tempfile::tempdir().unwrap();
    let s = spool(dir.path(), 8 << 20, 64 << 10);
    s.append(&ReaderEvent::Relation(rel(1, 2))).unwrap();
    let xid = 77;
    let n = 400u64;
    for seg in 0..4 {
        s.append(&ReaderEvent::StreamStart {
            xid,
            first_segment: seg == 0,
        })
        .unwrap();
        for i in 0..n / 4 {
            let k = seg * (n / 4) + i;
            s.append(&ReaderEvent::Change(insert(
                xid,
                1,
                1000 + k,
                &format!("{k:04}{}", "s".repeat(4000)),
            )))
            .unwrap();
        }
        s.append(&ReaderEvent::StreamStop).unwrap();
        s.flush().unwrap();
    }
    let streams = dir.path().join("streams");
    let chunks = std::fs::read_dir(&streams).unwrap().count();
    assert!(chunks >= 10, "1.6 MB in chunks of 64 KiB: {chunks} chunks");
    s.append(&ReaderEvent::StreamCommit(CommitInfo {
        xid,
        commit_lsn: Lsn(5000),
        end_lsn: Lsn(5008),
        commit_time: 0,
    }))
    .unwrap();
    s.flush().unwrap();
    let recs = read_all(&s);
    assert_eq!(recs.len() as u64, n + 1, "every change and the commit");
    for (k, (_, r)) in recs.iter().take(n as usize).enumerate() {
        let dbmazz::spool::SpoolRecord::Change { change, .. } = r else {
            panic!("record {k} is not a change: {r:?}")
        };
        assert_eq!(change.lsn.0, 1000 + k as u64, "changes in arrival order");
    }
    s.flush().unwrap();
    let left = std::fs::read_dir(&streams).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "the committed transaction's chunks are removed");
}
