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
                Value::Text(lsn.to_string().into_bytes()),
                Value::Text(payload.as_bytes().to_vec()),
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
