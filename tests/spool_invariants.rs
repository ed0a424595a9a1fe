//! Invariants of the spool API: durable before visible, whole transactions, relation
//! versions, streamed transactions, restart/reopen discarding unfinished work, meta.

#[path = "spool/common.rs"]
mod common;

use common::*;
use dbmazz::core::*;
use dbmazz::spool::storage::{SledStore, Store, DEFAULT_TREE};
use dbmazz::spool::{Spool, SpoolError, SpoolOptions, SpoolRecord};

#[test]
fn nothing_is_visible_before_flush_and_all_is_after() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.append(&ReaderEvent::Relation(rel(1, 2))).unwrap();
    s.append_all(&txn(10, 1, 100, 3, "a")).unwrap();
    assert!(
        s.read_from(0, 100).unwrap().is_empty(),
        "visible before flush"
    );
    assert_eq!(s.durable_mark().seq, 0);
    let m = s.flush().unwrap();
    assert_eq!(m.seq, 4);
    assert_eq!(m.commit_lsn, Lsn(104));
    assert_eq!(m.end_lsn, Lsn(112));
    let recs = read_all(&s);
    assert_eq!(
        recs.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    let SpoolRecord::Commit(c) = &recs[3].1 else {
        panic!("no commit")
    };
    assert_eq!((c.first_seq, c.changes, c.streamed), (1, 3, false));
    assert_eq!(c.tables, vec![(1, 3)]);
    let st = s.stats();
    assert_eq!((st.pending_records, st.pending_txns), (4, 1));
    assert_eq!(st.per_table[0].records, 3);
    assert_eq!(st.per_table[0].name, "public.t1");
    assert_eq!(st.oldest_pending.unwrap().commit_lsn, Lsn(104));
}

#[test]
fn an_open_transaction_is_not_durable_even_after_flush() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.append(&ReaderEvent::Relation(rel(1, 2))).unwrap();
    s.append_all(&txn(10, 1, 100, 2, "a")).unwrap();
    let mut open_txn = txn(11, 1, 200, 2, "b");
    open_txn.pop();
    s.append_all(&open_txn).unwrap();
    let m = s.flush().unwrap();
    assert_eq!(m.seq, 3);
    assert_eq!(read_all(&s).len(), 3);
    drop(s);
    // Reopen: the unfinished transaction is gone, appending goes on from seq 4.
    let s = open(dir.path());
    assert_eq!(s.durable_mark().seq, 3);
    s.append_all(&txn(11, 1, 200, 2, "b")).unwrap();
    assert_eq!(s.flush().unwrap().seq, 6);
    let t = txns_of(&read_all(&s));
    assert_eq!(
        t,
        vec![(10, 103, vec![100, 101]), (11, 203, vec![200, 201])]
    );
    assert!(s.verify().unwrap().ok());
}

#[test]
fn empty_transactions_advance_the_lsn_but_write_no_record() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.append(&ReaderEvent::Relation(rel(1, 2))).unwrap();
    s.append_all(&txn(10, 1, 100, 1, "a")).unwrap();
    s.append_all(&txn(11, 1, 500, 0, "")).unwrap();
    let m = s.flush().unwrap();
    assert_eq!((m.seq, m.commit_lsn, m.end_lsn), (2, Lsn(501), Lsn(509)));
    drop(s);
    let s = open(dir.path());
    assert_eq!(s.durable_mark().end_lsn, Lsn(509));
    // Loaded everything: the mark stays for the next restart.
    s.mark_loaded(2, Lsn(509)).unwrap();
    drop(s);
    let s = open(dir.path());
    assert_eq!(s.durable_mark().end_lsn, Lsn(509));
    assert_eq!(s.loaded_mark().confirmed_lsn, Lsn(509));
    assert_eq!(s.stats().pending_records, 0);
}

/// Marking loaded up to the durable mark while records past it are already written (the
/// reader keeps appending) and segments are small, so the mark falls at segment
/// boundaries: on the real store (a range of the commit index from past the mark to the
/// mark once panicked there).
#[test]
fn marking_loaded_up_to_the_durable_mark_at_segment_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let s = Spool::open(
        dir.path(),
        SpoolOptions {
            segment_bytes: 600,
            ..small_opts()
        },
    )
    .unwrap();
    s.append(&ReaderEvent::Relation(rel(1, 2))).unwrap();
    let mut lsn = 100;
    for k in 0..30u32 {
        let n = 1 + (k as usize % 4);
        s.append_all(&txn(10 + k, 1, lsn, n, &"x".repeat(150)))
            .unwrap();
        lsn += 100;
        let m = s.flush().unwrap();
        // Records past the mark: the next transaction, written but not flushed.
        s.append_all(&txn(1000 + k, 1, lsn, 2, "pending")).unwrap();
        lsn += 100;
        s.mark_loaded(m.seq, m.end_lsn).unwrap();
        s.mark_loaded(m.seq, m.end_lsn).unwrap();
        let m = s.flush().unwrap();
        s.mark_loaded(m.seq, m.end_lsn).unwrap();
    }
    assert_eq!(s.stats().pending_records, 0);
}

#[test]
fn relation_versions_are_kept_per_change() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.append(&ReaderEvent::Relation(rel(1, 2))).unwrap();
    s.append_all(&txn(10, 1, 100, 1, "a")).unwrap();
    s.append(&ReaderEvent::Relation(rel(1, 2))).unwrap(); // same: no new version
    s.append(&ReaderEvent::Relation(rel(1, 3))).unwrap(); // DDL: version 2
    s.append_all(&txn(11, 1, 200, 1, "b")).unwrap();
    s.flush().unwrap();
    let recs = read_all(&s);
    let versions: Vec<u32> = recs
        .iter()
        .filter_map(|(_, r)| match r {
            SpoolRecord::Change { rel_version, .. } => Some(*rel_version),
            _ => None,
        })
        .collect();
    assert_eq!(versions, vec![1, 2]);
    assert_eq!(s.relation(1, 1).unwrap().columns.len(), 2);
    assert_eq!(s.relation(1, 2).unwrap().columns.len(), 3);
    // Once the first transaction is loaded, version 1 is no longer needed.
    s.mark_loaded(2, Lsn(102)).unwrap();
    assert!(matches!(
        s.relation(1, 1),
        Err(SpoolError::UnknownRelation { .. })
    ));
    drop(s);
    let s = open(dir.path());
    assert!(s.relation(1, 1).is_err());
    assert_eq!(s.relation(1, 2).unwrap().columns.len(), 3);
}

#[test]
fn streamed_transactions_become_visible_at_stream_commit_in_commit_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.append(&ReaderEvent::Relation(rel(1, 2))).unwrap();
    let ss = |xid, first| ReaderEvent::StreamStart {
        xid,
        first_segment: first,
    };
    let ch = |xid, sub, lsn| {
        let mut c = insert(xid, 1, lsn, "s");
        c.subxid = sub;
        ReaderEvent::Change(c)
    };
    let events = vec![
        ss(20, true),
        ch(20, 20, 1000),
        ch(20, 21, 1001), // subtransaction 21, aborted below
        ReaderEvent::StreamStop,
        ss(30, true),
        ch(30, 30, 1100),
        ReaderEvent::StreamStop,
    ];
    s.append_all(&events).unwrap();
    // A plain transaction in between.
    s.append_all(&txn(10, 1, 1200, 1, "p")).unwrap();
    s.append_all(&[
        ss(20, false),
        ch(20, 20, 1300),
        ReaderEvent::StreamStop,
        ReaderEvent::StreamAbort {
            xid: 20,
            subxid: 21,
        },
        ReaderEvent::StreamAbort {
            xid: 30,
            subxid: 30,
        },
    ])
    .unwrap();
    s.flush().unwrap();
    assert_eq!(txns_of(&read_all(&s)), vec![(10, 1202, vec![1200])]);
    assert_eq!(s.stats().stream_txns, 1);
    s.append(&ReaderEvent::StreamCommit(commit(20, 1400)))
        .unwrap();
    s.flush().unwrap();
    let recs = read_all(&s);
    assert_eq!(
        txns_of(&recs),
        vec![(10, 1202, vec![1200]), (20, 1400, vec![1000, 1300])]
    );
    let SpoolRecord::Commit(c) = &recs.last().unwrap().1 else {
        panic!()
    };
    assert!(c.streamed);
    assert_eq!(s.stats().stream_txns, 0);
    assert!(s.verify().unwrap().ok());
}

#[test]
fn restart_discards_the_open_transaction_and_streams() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.append(&ReaderEvent::Relation(rel(1, 2))).unwrap();
    s.append_all(&txn(10, 1, 100, 1, "a")).unwrap();
    s.append_all(&[
        ReaderEvent::StreamStart {
            xid: 20,
            first_segment: true,
        },
        ReaderEvent::Change(insert(20, 1, 150, "s")),
        ReaderEvent::StreamStop,
    ])
    .unwrap();
    let mut open_txn = txn(11, 1, 200, 3, "b");
    open_txn.pop();
    s.append_all(&open_txn).unwrap();
    s.append(&ReaderEvent::Restart { from: Lsn(110) }).unwrap();
    // The reader resends from the last complete transaction.
    s.append_all(&txn(11, 1, 200, 3, "b")).unwrap();
    s.append(&ReaderEvent::StreamCommit(commit(20, 300)))
        .unwrap(); // stream was dropped
    s.flush().unwrap();
    assert_eq!(
        txns_of(&read_all(&s)),
        vec![(10, 102, vec![100]), (11, 204, vec![200, 201, 202])]
    );
    assert!(s.verify().unwrap().ok());
}

#[test]
fn changes_outside_a_transaction_are_a_protocol_error() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.append(&ReaderEvent::Relation(rel(1, 2))).unwrap();
    let e = s
        .append(&ReaderEvent::Change(insert(1, 1, 1, "x")))
        .unwrap_err();
    assert!(matches!(e, SpoolError::Protocol(_)), "{e}");
    let e = s.append(&ReaderEvent::Commit(commit(1, 5))).unwrap_err();
    assert!(matches!(e, SpoolError::Protocol(_)), "{e}");
}

#[test]
fn the_loader_never_reads_past_the_durable_mark_and_loaded_data_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    s.append(&ReaderEvent::Relation(rel(1, 2))).unwrap();
    for i in 0..5u32 {
        s.append_all(&txn(10 + i, 1, 100 * (i as u64 + 1), 2, "a"))
            .unwrap();
    }
    s.flush().unwrap();
    s.append_all(&txn(99, 1, 10_000, 2, "late")).unwrap(); // not flushed
    assert_eq!(read_all(&s).len(), 15);
    assert!(s.read_from(16, 10).unwrap().is_empty());
    // mark_loaded must land on a durable commit.
    assert!(matches!(
        s.mark_loaded(2, Lsn(1)),
        Err(SpoolError::BadLoadedMark { .. })
    ));
    assert!(matches!(
        s.mark_loaded(18, Lsn(1)),
        Err(SpoolError::BadLoadedMark { .. })
    ));
    s.mark_loaded(6, Lsn(203)).unwrap();
    let recs = read_all(&s);
    assert_eq!(recs.first().unwrap().0, 7);
    let st = s.stats();
    assert_eq!((st.pending_records, st.pending_txns), (9, 3));
    assert_eq!(st.oldest_pending.unwrap().commit_seq, 9);
    drop(s);
    let s = open(dir.path());
    assert_eq!(s.loaded_mark().seq, 6);
    assert_eq!(s.loaded_mark().confirmed_lsn, Lsn(203));
    assert_eq!(read_all(&s).first().unwrap().0, 7);
    assert_eq!(s.stats().pending_txns, 3);
}

#[test]
fn unknown_format_version_and_a_held_lock_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let id = s.id();
    assert_eq!(id.len(), 16);
    match Spool::open(dir.path(), small_opts()) {
        Err(SpoolError::Locked { .. }) => {}
        Err(e) => panic!("expected Locked, got {e}"),
        Ok(_) => panic!("expected Locked, got a second open spool"),
    }
    drop(s);
    let s = open(dir.path());
    assert_eq!(s.id(), id, "the spool id survives a reopen");
    drop(s);
    // Rewrite the format version with sled directly: 99 is what a future version would
    // write, 1 a spool of one record per key (before issue 10's blocks).
    for version in [99u32, 1] {
        {
            let db = SledStore.open(&dir.path().join("meta"), 1 << 20).unwrap();
            db.tree(DEFAULT_TREE)
                .unwrap()
                .insert(b"format_version", &version.to_be_bytes())
                .unwrap();
            db.sync().unwrap();
        }
        match Spool::open(dir.path(), small_opts()) {
            Err(
                e @ SpoolError::UnsupportedFormat {
                    found, supported, ..
                },
            ) => {
                assert_eq!((found, supported), (version, dbmazz::spool::FORMAT_VERSION));
                assert!(e.to_string().contains("drain it with the version"), "{e}");
            }
            Err(e) => panic!("expected UnsupportedFormat, got {e}"),
            Ok(_) => panic!("opened a spool of format {version}"),
        }
    }
}
