//! Power loss (issue 9, case 3): a SIGKILL keeps the page cache, a power loss does not.
//! Through the simulated store (`storage::SimStore`), which loses every write not synced,
//! per database: after `flush()` returns mark M a power loss at any later point reopens
//! with a durable mark >= M and every record up to M readable; after `mark_loaded`
//! returns its mark survives; and at no point does the ledger claim more than the log
//! holds. The power is cut at every step of a flush and of a mark_loaded (every storage
//! call is numbered), and at random points of random workloads.

#[path = "spool/common.rs"]
mod common;

use common::*;
use dbmazz::core::*;
use dbmazz::spool::storage::{PowerLoss, SimFault, SimStore};
use dbmazz::spool::{DurableMark, Spool, SpoolOptions, SpoolRecord};
use rand::{Rng, SeedableRng};

fn opts() -> SpoolOptions {
    SpoolOptions {
        cache_capacity: 4 << 20,
        max_bytes: 1 << 40,
        // A few transactions per segment: flushes and loads cross segments.
        segment_bytes: 1500,
    }
}

/// Sequence of the commit record of numbered transaction `k` (must be pending).
fn commit_seq(spool: &Spool, k: u64) -> u64 {
    read_all(spool)
        .into_iter()
        .find(|(_, r)| matches!(r, SpoolRecord::Commit(c) if c.info.xid as u64 == k))
        .map(|(seq, _)| seq)
        .unwrap_or_else(|| panic!("transaction {k} is not pending"))
}

fn append_txns(s: &Spool, ks: std::ops::RangeInclusive<u64>) {
    for k in ks {
        s.append_all(&numbered_txn(k)).unwrap();
    }
}

/// Transactions 1..=6 flushed in two groups, 1..=2 loaded, 7..=13 appended (7 streamed,
/// several segment rolls), then an open transaction and a streamed one in progress.
fn before_flush(sim: &SimStore) -> Spool {
    let s = open_sim(sim, opts());
    s.append(&ReaderEvent::Relation(rel(1, 2))).unwrap();
    append_txns(&s, 1..=3);
    s.flush().unwrap();
    append_txns(&s, 4..=6);
    s.flush().unwrap();
    s.mark_loaded(commit_seq(&s, 2), Lsn(2 * 100 + 58)).unwrap();
    append_txns(&s, 7..=13);
    let open = numbered_txn(15);
    s.append_all(&open[..open.len() - 1]).unwrap();
    s
}

/// Reopens after the power came back and checks the spool holds exactly the numbered
/// transactions from its loaded mark to its durable mark; returns (durable, loaded) txn.
fn reopen_and_check(sim: &SimStore) -> (Spool, u64, u64) {
    let s = try_open_sim(sim, opts()).unwrap_or_else(|e| {
        panic!("the spool does not open after a power loss (the ledger claims more than the log holds?): {e}")
    });
    let durable = check_numbered(&s);
    let loaded = txn_number(s.loaded_mark().confirmed_lsn);
    (s, durable, loaded)
}

/// Cuts the power at mutating storage call `n0 + cut` during `step`, for cut = 1, 2, ...
/// until `step` completes before the cut; `check` judges each outcome.
fn at_every_step(
    setup: impl Fn(&SimStore) -> Spool,
    step: impl Fn(&Spool) -> bool,
    check: impl Fn(bool, &Spool, u64, u64),
) -> usize {
    let mut cut = 1;
    loop {
        for mode in [PowerLoss::LoseUnsynced, PowerLoss::KeepPrefix(cut)] {
            let sim = SimStore::new();
            let s = setup(&sim);
            sim.fail_at(sim.ops() + cut, SimFault::PowerCut);
            let ok = step(&s);
            let cut_happened = sim.is_power_cut();
            drop(s);
            if ok && !cut_happened {
                assert!(cut > 1, "the step made no storage call");
                return (cut - 1) as usize;
            }
            sim.power_loss(mode);
            let (s, durable, loaded) = reopen_and_check(&sim);
            check(ok, &s, durable, loaded);
            // And the spool goes on.
            s.append(&ReaderEvent::Relation(rel(1, 2))).unwrap();
            s.append_all(&numbered_txn(durable + 1)).unwrap();
            s.flush().unwrap();
            check_numbered(&s);
        }
        cut += 1;
    }
}

#[test]
fn a_returned_flush_survives_a_power_loss() {
    let sim = SimStore::new();
    let s = before_flush(&sim);
    let mark = s.flush().unwrap();
    assert_eq!(txn_number(mark.commit_lsn), 13);
    drop(s);
    sim.power_loss(PowerLoss::LoseUnsynced);
    let (s, durable, loaded) = reopen_and_check(&sim);
    assert_eq!(s.durable_mark(), mark, "the durable mark survives");
    assert_eq!((durable, loaded), (13, 2));
    assert_eq!(
        txns_of(&read_all(&s)).len(),
        11,
        "transactions 3..=13 readable"
    );
}

#[test]
fn a_returned_mark_loaded_survives_a_power_loss() {
    let sim = SimStore::new();
    let s = before_flush(&sim);
    s.flush().unwrap();
    let seq = commit_seq(&s, 9);
    s.mark_loaded(seq, Lsn(958)).unwrap();
    drop(s);
    sim.power_loss(PowerLoss::LoseUnsynced);
    let (s, durable, loaded) = reopen_and_check(&sim);
    assert_eq!(s.loaded_mark().seq, seq);
    assert_eq!((durable, loaded), (13, 9));
}

#[test]
fn power_cut_at_every_step_of_a_flush() {
    let reference = {
        let sim = SimStore::new();
        before_flush(&sim).flush().unwrap()
    };
    let steps = at_every_step(
        before_flush,
        |s| s.flush().is_ok(),
        |ok, s, durable, loaded| {
            assert_eq!(loaded, 2);
            if ok {
                assert_eq!(s.durable_mark(), reference, "a returned flush is durable");
            } else {
                assert!(
                    durable == 6 || s.durable_mark() == reference,
                    "durable mark is the old or the new one, found transaction {durable}"
                );
            }
        },
    );
    assert!(
        steps >= 4,
        "a flush syncs segments and the ledger: {steps} steps"
    );
}

#[test]
fn power_cut_at_every_step_of_a_checkpoint_inside_a_transaction() {
    // Only an open transaction since the last flush: a checkpoint, the mark stays.
    let setup = |sim: &SimStore| {
        let s = before_flush(sim);
        s.flush().unwrap();
        let big = numbered_txn(16);
        for _ in 0..3 {
            s.append_all(&big[1..big.len() - 1]).unwrap();
        }
        s
    };
    at_every_step(
        setup,
        |s| s.flush().is_ok(),
        |_, _, durable, loaded| assert_eq!((durable, loaded), (13, 2)),
    );
}

/// Sequence of transaction 9's commit in [`before_mark_loaded`]'s spool, read before
/// any power cut is armed (reading may open a closed segment: a storage call).
fn seq_of_9() -> u64 {
    commit_seq(&before_mark_loaded(&SimStore::new()), 9)
}

fn before_mark_loaded(sim: &SimStore) -> Spool {
    let s = before_flush(sim);
    s.flush().unwrap();
    s.set_loader_journal(Some(b"window 3..=9")).unwrap();
    s
}

#[test]
fn power_cut_at_every_step_of_mark_loaded() {
    let seq = seq_of_9();
    let steps = at_every_step(
        before_mark_loaded,
        |s| s.mark_loaded(seq, Lsn(958)).is_ok(),
        |ok, _, durable, loaded| {
            assert_eq!(durable, 13);
            if ok {
                assert_eq!(loaded, 9, "a returned mark_loaded is durable");
            } else {
                assert!(loaded == 2 || loaded == 9, "loaded mark {loaded}");
            }
        },
    );
    assert!(steps >= 2, "{steps} steps");
}

#[test]
fn power_cut_at_every_step_of_mark_loaded_with_journal() {
    let seq = seq_of_9();
    at_every_step(
        before_mark_loaded,
        |s| {
            s.mark_loaded_with_journal(seq, Lsn(958), Some(b"window 10..=13"))
                .is_ok()
        },
        |ok, s, _, loaded| {
            let j = s.loader_journal();
            let pair = (loaded, j.as_deref());
            assert!(
                pair == (2, Some(&b"window 3..=9"[..]))
                    || pair == (9, Some(&b"window 10..=13"[..])),
                "loaded mark and journal change together: {loaded} {:?}",
                j.map(|j| String::from_utf8_lossy(&j).into_owned())
            );
            if ok {
                assert_eq!(loaded, 9);
            }
        },
    );
}

#[test]
fn power_cut_at_every_step_of_the_ledger_additions() {
    let id = dbmazz::spool::SourceIdentity {
        system_identifier: 7,
        database: "app".into(),
        slot: "dbmazz_slot".into(),
        timeline: 2,
    };
    at_every_step(
        before_mark_loaded,
        |s| s.bind_source(&id).is_ok() && s.set_loader_journal(None).is_ok(),
        |ok, s, _, _| {
            if ok {
                assert_eq!(s.source_identity(), Some(id.clone()));
                assert_eq!(s.loader_journal(), None);
            }
            if s.loader_journal().is_none() {
                assert_eq!(s.source_identity(), Some(id.clone()), "written in order");
            }
        },
    );
}

#[test]
fn returned_ledger_additions_survive_a_power_loss() {
    let id = dbmazz::spool::SourceIdentity {
        system_identifier: 7,
        database: "app".into(),
        slot: "dbmazz_slot".into(),
        timeline: 2,
    };
    let sim = SimStore::new();
    let s = before_flush(&sim);
    s.bind_source(&id).unwrap();
    s.set_loader_journal(Some(b"intent")).unwrap();
    drop(s);
    sim.power_loss(PowerLoss::LoseUnsynced);
    let (s, _, _) = reopen_and_check(&sim);
    assert_eq!(s.source_identity(), Some(id));
    assert_eq!(s.loader_journal().as_deref(), Some(&b"intent"[..]));
    s.set_loader_journal(None).unwrap();
    drop(s);
    sim.power_loss(PowerLoss::LoseUnsynced);
    let (s, _, _) = reopen_and_check(&sim);
    assert_eq!(s.loader_journal(), None);
}

/// What a random workload saw return before the power went out.
#[derive(Default, Debug)]
struct Seen {
    flushed: DurableMark,
    loaded_lsn: Lsn,
}

/// Appends, flushes and loads at random until the power goes out at a random storage
/// call (or the workload ends and the power goes out then).
fn random_workload(sim: &SimStore, seed: u64) -> Seen {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut seen = Seen::default();
    let Ok(s) = try_open_sim(sim, opts()) else {
        return seen;
    };
    seen.flushed = s.durable_mark();
    seen.loaded_lsn = s.loaded_mark().confirmed_lsn;
    sim.fail_at(sim.ops() + rng.random_range(1..400), SimFault::PowerCut);
    let mut k = txn_number(s.durable_mark().commit_lsn) + 1;
    let mut run = || -> dbmazz::spool::Result<()> {
        s.append(&ReaderEvent::Relation(rel(1, 2)))?;
        for _ in 0..60 {
            match rng.random_range(0..10) {
                0..=4 => {
                    s.append_all(&numbered_txn(k))?;
                    k += 1;
                }
                5 => {
                    let ev = numbered_txn(k);
                    s.append_all(&ev[..ev.len() - 1])?;
                    if rng.random_bool(0.5) {
                        s.append(&ReaderEvent::Restart { from: Lsn(0) })?;
                    } else {
                        s.append(&ev[ev.len() - 1])?;
                        k += 1;
                    }
                }
                6..=8 => seen.flushed = s.flush()?,
                _ => {
                    let d = s.durable_mark();
                    if d.seq > s.loaded_mark().seq {
                        s.mark_loaded(d.seq, d.commit_lsn)?;
                        seen.loaded_lsn = d.commit_lsn;
                    }
                }
            }
        }
        Ok(())
    };
    let _ = run();
    seen
}

#[test]
fn power_loss_at_random_points_of_random_workloads() {
    let rounds: u64 = std::env::var("SPOOL_POWERLOSS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let sim = SimStore::new();
    let mut last_durable = 0;
    for round in 0..rounds {
        let seen = random_workload(&sim, round);
        let mode = if round % 2 == 0 {
            PowerLoss::LoseUnsynced
        } else {
            PowerLoss::KeepPrefix(round)
        };
        sim.power_loss(mode);
        let (s, durable, loaded) = reopen_and_check(&sim);
        let mark = s.durable_mark();
        assert!(
            mark.seq >= seen.flushed.seq && mark.commit_lsn >= seen.flushed.commit_lsn,
            "round {round}: lost a returned flush: {mark:?} < {:?}",
            seen.flushed
        );
        assert!(
            s.loaded_mark().confirmed_lsn >= seen.loaded_lsn,
            "round {round}: lost a returned mark_loaded"
        );
        assert!(durable >= last_durable, "the durable mark went backwards");
        assert!(loaded <= durable || s.durable_mark().seq == s.loaded_mark().seq);
        last_durable = durable;
    }
    assert!(
        last_durable > 20,
        "the workloads made progress: {last_durable}"
    );
}
