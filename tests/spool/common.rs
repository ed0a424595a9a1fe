//! Helpers shared by the spool tests: event builders and a drain helper.
#![allow(dead_code)]

use dbmazz::core::*;
use dbmazz::spool::{Spool, SpoolOptions, SpoolRecord};

pub fn rel(id: u32, ncols: usize) -> Relation {
    Relation {
        id,
        namespace: "public".into(),
        name: format!("t{id}"),
        replica_identity: ReplicaIdentity::Default,
        columns: (0..ncols)
            .map(|i| Column {
                name: format!("c{i}"),
                is_key: i == 0,
                type_oid: 25,
                type_modifier: -1,
            })
            .collect(),
    }
}

pub fn insert(xid: u32, relation: u32, lsn: u64, payload: &str) -> Change {
    Change {
        xid,
        subxid: xid,
        relation,
        lsn: Lsn(lsn),
        op: ChangeOp::Insert {
            new: vec![
                Value::Text(lsn.to_string().into_bytes().into()),
                Value::Text(payload.as_bytes().to_vec().into()),
            ],
        },
    }
}

pub fn commit(xid: u32, lsn: u64) -> CommitInfo {
    CommitInfo {
        xid,
        commit_lsn: Lsn(lsn),
        end_lsn: Lsn(lsn + 8),
        commit_time: 800_000_000_000_000 + lsn as i64,
    }
}

/// Begin, `n` inserts into relation `relation`, Commit; LSNs from `lsn`.
pub fn txn(xid: u32, relation: u32, lsn: u64, n: usize, payload: &str) -> Vec<ReaderEvent> {
    let mut v = vec![ReaderEvent::Begin {
        xid,
        final_lsn: Lsn(lsn + n as u64 + 1),
        commit_time: 0,
    }];
    for i in 0..n {
        v.push(ReaderEvent::Change(insert(
            xid,
            relation,
            lsn + i as u64,
            payload,
        )));
    }
    v.push(ReaderEvent::Commit(commit(xid, lsn + n as u64 + 1)));
    v
}

pub fn small_opts() -> SpoolOptions {
    SpoolOptions {
        cache_capacity: 8 << 20,
        max_bytes: 1 << 40,
        segment_bytes: 256 << 10,
    }
}

pub fn open(dir: &std::path::Path) -> Spool {
    Spool::open(dir, small_opts()).expect("open spool")
}

/// Every durable pending record.
pub fn read_all(spool: &Spool) -> Vec<(u64, SpoolRecord)> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let batch = spool.read_from(from, 1000).expect("read");
        let Some((last, _)) = batch.last() else { break };
        from = last + 1;
        out.extend(batch);
    }
    out
}

/// The transactions of a record list: (xid, commit lsn, change LSNs).
pub fn txns_of(records: &[(u64, SpoolRecord)]) -> Vec<(u32, u64, Vec<u64>)> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for (_, r) in records {
        match r {
            SpoolRecord::Change { change, .. } => cur.push(change.lsn.0),
            SpoolRecord::Commit(c) => {
                out.push((c.info.xid, c.info.commit_lsn.0, std::mem::take(&mut cur)));
            }
        }
    }
    assert!(cur.is_empty(), "records after the last commit");
    out
}

/// A spool on the simulated store, at `/spool`.
pub fn open_sim(store: &dbmazz::spool::storage::SimStore, opts: SpoolOptions) -> Spool {
    Spool::open_with_store(std::sync::Arc::new(store.clone()), "/spool", opts)
        .expect("open spool on the simulated store")
}

pub fn try_open_sim(
    store: &dbmazz::spool::storage::SimStore,
    opts: SpoolOptions,
) -> dbmazz::spool::Result<Spool> {
    Spool::open_with_store(std::sync::Arc::new(store.clone()), "/spool", opts)
}

/// Number of changes of the numbered transaction `k` (see `numbered_txn`).
pub fn numbered_changes(k: u64) -> u64 {
    1 + k % 4
}

pub fn numbered_payload(k: u64, i: u64) -> String {
    format!("txn{k}-{i}-{}", "x".repeat(((k % 7) * 40) as usize))
}

/// The events of transaction number `k`: deterministic contents, commit LSN `k*100+50`,
/// change `i` at LSN `k*100+i`; every 7th is streamed (protocol v2).
pub fn numbered_txn(k: u64) -> Vec<ReaderEvent> {
    let xid = k as u32;
    let n = numbered_changes(k);
    let change = |i: u64| {
        let mut c = insert(xid, 1, k * 100 + i, "");
        c.op = ChangeOp::Insert {
            new: vec![
                Value::Text(k.to_string().into_bytes().into()),
                Value::Text(numbered_payload(k, i).into_bytes().into()),
            ],
        };
        ReaderEvent::Change(c)
    };
    let info = CommitInfo {
        xid,
        commit_lsn: Lsn(k * 100 + 50),
        end_lsn: Lsn(k * 100 + 58),
        commit_time: k as i64,
    };
    let mut v = Vec::new();
    if k % 7 == 0 {
        v.push(ReaderEvent::StreamStart {
            xid,
            first_segment: true,
        });
        v.extend((0..n).map(change));
        v.push(ReaderEvent::StreamStop);
        v.push(ReaderEvent::StreamCommit(info));
    } else {
        v.push(ReaderEvent::Begin {
            xid,
            final_lsn: info.commit_lsn,
            commit_time: 0,
        });
        v.extend((0..n).map(change));
        v.push(ReaderEvent::Commit(info));
    }
    v
}

/// The numbered transaction a durable mark or confirmed LSN ends on.
pub fn txn_number(lsn: Lsn) -> u64 {
    lsn.0 / 100
}

/// Checks that the pending records are exactly the numbered transactions after the
/// loaded mark up to the durable mark (whole, in order, right contents), that verify
/// passes and the counters agree. Returns the last durable transaction number.
pub fn check_numbered(spool: &Spool) -> u64 {
    let rep = spool.verify().expect("verify");
    assert!(rep.ok(), "verify: {:?}", rep.problems);
    let durable_k = txn_number(spool.durable_mark().commit_lsn);
    let loaded_k = txn_number(spool.loaded_mark().confirmed_lsn);
    let recs = read_all(spool);
    let mut expect_k = loaded_k + 1;
    let mut i = 0u64;
    for (_, r) in &recs {
        match r {
            SpoolRecord::Change { change, .. } => {
                assert_eq!(
                    change.xid as u64, expect_k,
                    "changes of an unexpected transaction"
                );
                assert_eq!(change.lsn.0, expect_k * 100 + i);
                let ChangeOp::Insert { new } = &change.op else {
                    panic!("not an insert")
                };
                assert_eq!(
                    new[1],
                    Value::Text(numbered_payload(expect_k, i).into_bytes().into())
                );
                i += 1;
            }
            SpoolRecord::Commit(c) => {
                assert_eq!(c.info.xid as u64, expect_k);
                assert_eq!(
                    i,
                    numbered_changes(expect_k),
                    "transaction {expect_k} is not whole"
                );
                assert_eq!(c.streamed, expect_k % 7 == 0);
                expect_k += 1;
                i = 0;
            }
        }
    }
    assert_eq!(i, 0, "records after the last commit");
    assert_eq!(
        expect_k - 1,
        durable_k.max(loaded_k),
        "pending transactions end at the durable mark"
    );
    assert_eq!(
        spool.stats().pending_records,
        recs.len() as u64,
        "counters agree with the log"
    );
    durable_k
}
