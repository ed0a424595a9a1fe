//! Model-based test: random sequences of actions (transactions, streamed segments,
//! commits, aborts, flushes, reads, mark_loaded, restarts, reopen) run against the real
//! spool and a simple in-memory model, which must agree. A second run puts the spool on
//! the simulated store and adds power losses (every unsynced write lost, or a prefix of
//! them kept): the model must not tell them from a clean reopen.

#[path = "spool/common.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use dbmazz::core::*;
use dbmazz::spool::storage::{PowerLoss, SimStore};
use dbmazz::spool::{Spool, SpoolOptions};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Action {
    Txn { n: usize, table: u32 },
    Partial { n: usize },
    StreamSeg { slot: usize, n: usize, sub: bool },
    StreamCommit { slot: usize },
    StreamAbort { slot: usize, sub: bool },
    Ddl { table: u32 },
    Flush,
    Read,
    MarkLoaded { pick: usize },
    Restart,
    Reopen,
    PowerLoss { keep: Option<u64> },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (0usize..4, 1u32..3).prop_map(|(n, table)| Action::Txn { n, table }),
        1 => (1usize..3).prop_map(|n| Action::Partial { n }),
        2 => (0usize..3, 1usize..3, any::<bool>()).prop_map(|(slot, n, sub)| Action::StreamSeg { slot, n, sub }),
        1 => (0usize..3).prop_map(|slot| Action::StreamCommit { slot }),
        1 => (0usize..3, any::<bool>()).prop_map(|(slot, sub)| Action::StreamAbort { slot, sub }),
        1 => (1u32..3).prop_map(|table| Action::Ddl { table }),
        3 => Just(Action::Flush),
        2 => Just(Action::Read),
        1 => (0usize..8).prop_map(|pick| Action::MarkLoaded { pick }),
        1 => Just(Action::Restart),
        1 => Just(Action::Reopen),
    ]
}

fn action_with_power_loss() -> impl Strategy<Value = Action> {
    prop_oneof![
        12 => action(),
        1 => proptest::option::of(any::<u64>()).prop_map(|keep| Action::PowerLoss { keep }),
    ]
}

fn model_opts() -> SpoolOptions {
    SpoolOptions {
        segment_bytes: 2048,
        ..small_opts()
    }
}

/// A committed transaction as the loader must see it.
#[derive(Debug, Clone, PartialEq)]
struct MTxn {
    xid: u32,
    commit_lsn: u64,
    changes: Vec<u64>,
}

/// An open streamed transaction: xid, changes (lsn, subxid), aborted subxids.
type MStream = (u32, Vec<(u64, u32)>, BTreeSet<u32>);

#[derive(Default)]
struct Model {
    durable: Vec<MTxn>,
    unflushed: Vec<MTxn>,
    mark: (u64, u64),
    pending_mark: Option<(u64, u64)>,
    open: Option<MTxn>,
    /// slot -> (xid, changes (lsn, subxid), aborted subxids)
    streams: BTreeMap<usize, MStream>,
    loaded_lsn: u64,
}

struct World {
    dir: tempfile::TempDir,
    /// The spool lives on the simulated store (else on sled in `dir`).
    sim: Option<SimStore>,
    spool: Option<Spool>,
    model: Model,
    lsn: u64,
    xid: u32,
    ncols: BTreeMap<u32, usize>,
}

impl World {
    fn open(&self) -> Spool {
        match &self.sim {
            Some(sim) => open_sim(sim, model_opts()),
            None => Spool::open(self.dir.path(), model_opts()).unwrap(),
        }
    }
    fn spool(&self) -> &Spool {
        self.spool.as_ref().unwrap()
    }
    fn next_lsn(&mut self) -> u64 {
        self.lsn += 10;
        self.lsn
    }
    fn next_xid(&mut self) -> u32 {
        self.xid += 1;
        self.xid
    }
    fn commit_info(&mut self, xid: u32) -> CommitInfo {
        let l = self.next_lsn();
        commit(xid, l)
    }
    fn model_commit(&mut self, t: MTxn, info: &CommitInfo) {
        self.model.pending_mark = Some((info.commit_lsn.0, info.end_lsn.0));
        if !t.changes.is_empty() {
            self.model.unflushed.push(t);
        }
    }

    fn apply(&mut self, a: &Action) {
        let s = self.spool().clone();
        match a {
            Action::Txn { n, table } => {
                let xid = self.next_xid();
                if self.model.open.take().is_some() {
                    // Begin while open: the spool discards the open one.
                }
                s.append(&ReaderEvent::Begin {
                    xid,
                    final_lsn: Lsn(0),
                    commit_time: 0,
                })
                .unwrap();
                let mut t = MTxn {
                    xid,
                    commit_lsn: 0,
                    changes: vec![],
                };
                for _ in 0..*n {
                    let l = self.next_lsn();
                    s.append(&ReaderEvent::Change(insert(xid, *table, l, "v")))
                        .unwrap();
                    t.changes.push(l);
                }
                let info = self.commit_info(xid);
                s.append(&ReaderEvent::Commit(info)).unwrap();
                t.commit_lsn = info.commit_lsn.0;
                self.model_commit(t, &info);
            }
            Action::Partial { n } => {
                let xid = self.next_xid();
                s.append(&ReaderEvent::Begin {
                    xid,
                    final_lsn: Lsn(0),
                    commit_time: 0,
                })
                .unwrap();
                for _ in 0..*n {
                    let l = self.next_lsn();
                    s.append(&ReaderEvent::Change(insert(xid, 1, l, "p")))
                        .unwrap();
                }
                self.model.open = Some(MTxn {
                    xid,
                    commit_lsn: 0,
                    changes: vec![],
                });
            }
            Action::StreamSeg { slot, n, sub } => {
                if self.model.open.is_some() {
                    return; // streams never interleave inside a plain transaction
                }
                let first = !self.model.streams.contains_key(slot);
                if first {
                    let xid = self.next_xid();
                    self.model
                        .streams
                        .insert(*slot, (xid, vec![], BTreeSet::new()));
                }
                let xid = self.model.streams[slot].0;
                s.append(&ReaderEvent::StreamStart {
                    xid,
                    first_segment: first,
                })
                .unwrap();
                for _ in 0..*n {
                    let l = self.next_lsn();
                    let subxid = if *sub { xid + 100_000 } else { xid };
                    let mut c = insert(xid, 1, l, "s");
                    c.subxid = subxid;
                    s.append(&ReaderEvent::Change(c)).unwrap();
                    self.model
                        .streams
                        .get_mut(slot)
                        .unwrap()
                        .1
                        .push((l, subxid));
                }
                s.append(&ReaderEvent::StreamStop).unwrap();
            }
            Action::StreamCommit { slot } => {
                if self.model.open.is_some() {
                    return;
                }
                let Some((xid, changes, aborted)) = self.model.streams.remove(slot) else {
                    return;
                };
                let info = self.commit_info(xid);
                s.append(&ReaderEvent::StreamCommit(info)).unwrap();
                let t = MTxn {
                    xid,
                    commit_lsn: info.commit_lsn.0,
                    changes: changes
                        .iter()
                        .filter(|(_, sx)| !aborted.contains(sx))
                        .map(|(l, _)| *l)
                        .collect(),
                };
                self.model_commit(t, &info);
            }
            Action::StreamAbort { slot, sub } => {
                let Some(entry) = self.model.streams.get_mut(slot) else {
                    return;
                };
                let xid = entry.0;
                if *sub {
                    entry.2.insert(xid + 100_000);
                    s.append(&ReaderEvent::StreamAbort {
                        xid,
                        subxid: xid + 100_000,
                    })
                    .unwrap();
                } else {
                    self.model.streams.remove(slot);
                    s.append(&ReaderEvent::StreamAbort { xid, subxid: xid })
                        .unwrap();
                }
            }
            Action::Ddl { table } => {
                let n = self.ncols.entry(*table).or_insert(2);
                *n += 1;
                s.append(&ReaderEvent::Relation(rel(*table, *n))).unwrap();
            }
            Action::Flush => {
                let m = s.flush().unwrap();
                self.model.durable.append(&mut self.model.unflushed);
                if let Some(pm) = self.model.pending_mark.take() {
                    self.model.mark = pm;
                }
                assert_eq!((m.commit_lsn.0, m.end_lsn.0), self.model.mark);
            }
            Action::Read => self.check(),
            Action::MarkLoaded { pick } => {
                if self.model.durable.is_empty() {
                    return;
                }
                let k = pick % self.model.durable.len();
                let recs = read_all(&s);
                let commit_seqs: Vec<u64> = recs
                    .iter()
                    .filter(|(_, r)| r.as_commit().is_some())
                    .map(|(seq, _)| *seq)
                    .collect();
                let done: Vec<MTxn> = self.model.durable.drain(..=k).collect();
                let lsn = done.last().unwrap().commit_lsn;
                s.mark_loaded(commit_seqs[k], Lsn(lsn)).unwrap();
                self.model.loaded_lsn = lsn;
            }
            Action::Restart => {
                s.append(&ReaderEvent::Restart { from: Lsn(0) }).unwrap();
                self.model.open = None;
                self.model.streams.clear();
            }
            Action::Reopen | Action::PowerLoss { .. } => {
                drop(s);
                self.spool = None;
                if let (Action::PowerLoss { keep }, Some(sim)) = (a, &self.sim) {
                    sim.power_loss(match keep {
                        None => PowerLoss::LoseUnsynced,
                        Some(seed) => PowerLoss::KeepPrefix(*seed),
                    });
                }
                self.spool = Some(self.open());
                self.model.open = None;
                self.model.streams.clear();
                self.model.unflushed.clear();
                self.model.pending_mark = None;
                // Relation versions are re-announced by the reader after a reconnect.
                for (t, n) in self.ncols.clone() {
                    self.spool()
                        .append(&ReaderEvent::Relation(rel(t, n)))
                        .unwrap();
                }
                self.check();
            }
        }
    }

    fn check(&self) {
        let s = self.spool();
        let recs = read_all(s);
        let got: Vec<MTxn> = txns_of(&recs)
            .into_iter()
            .map(|(xid, commit_lsn, changes)| MTxn {
                xid,
                commit_lsn,
                changes,
            })
            .collect();
        assert_eq!(got, self.model.durable, "pending durable transactions");
        let m = s.durable_mark();
        assert_eq!(
            (m.commit_lsn.0, m.end_lsn.0),
            self.model.mark,
            "durable mark"
        );
        assert_eq!(s.loaded_mark().confirmed_lsn.0, self.model.loaded_lsn);
        let st = s.stats();
        assert_eq!(
            st.pending_records,
            recs.len() as u64,
            "counter of pending records"
        );
        assert_eq!(
            st.pending_txns,
            self.model.durable.len() as u64,
            "counter of pending transactions"
        );
        let per_table: u64 = st.per_table.iter().map(|t| t.records).sum();
        assert_eq!(
            per_table,
            recs.len() as u64 - self.model.durable.len() as u64
        );
        // Every change decodes with a relation version the spool still holds.
        for (_, r) in &recs {
            if let dbmazz::spool::SpoolRecord::Change {
                rel_version,
                change,
            } = r
            {
                s.relation(change.relation, *rel_version).unwrap();
            }
        }
        let rep = s.verify().unwrap();
        assert!(rep.ok(), "{:?}", rep.problems);
    }
}

fn run(actions: &[Action], sim: Option<SimStore>) {
    let dir = tempfile::tempdir().unwrap();
    let mut w = World {
        dir,
        sim,
        spool: None,
        model: Model::default(),
        lsn: 0,
        xid: 0,
        ncols: [(1, 2), (2, 2)].into_iter().collect(),
    };
    let spool = w.open();
    spool.append(&ReaderEvent::Relation(rel(1, 2))).unwrap();
    spool.append(&ReaderEvent::Relation(rel(2, 2))).unwrap();
    w.spool = Some(spool);
    for a in actions {
        w.apply(a);
    }
    w.apply(&Action::Flush);
    w.check();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn the_spool_agrees_with_the_model(actions in proptest::collection::vec(action(), 1..40)) {
        run(&actions, None);
    }

    #[test]
    fn power_losses_are_clean_reopens_to_the_model(
        actions in proptest::collection::vec(action_with_power_loss(), 1..60)
    ) {
        run(&actions, Some(SimStore::new()));
    }
}

/// Found by the power-loss run (also kept in `spool_model.proptest-regressions`): an open
/// transaction discarded by the next Begin is cut from the log in the OS's cache only;
/// after a clean reopen the writer reuses those sequences, and a power loss used to bring
/// the discarded records back in place of the new transaction's. Recovery now syncs the
/// last segment at every open.
#[test]
fn a_cut_made_before_a_reopen_survives_a_power_loss() {
    use Action::*;
    run(
        &[
            Txn { n: 1, table: 1 },
            Partial { n: 1 },
            Flush,
            Txn { n: 0, table: 1 },
            Reopen,
            Txn { n: 1, table: 1 },
            Flush,
            PowerLoss { keep: None },
        ],
        Some(SimStore::new()),
    );
}
