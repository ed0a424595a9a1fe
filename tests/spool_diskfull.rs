//! A full disk (issue 9, case 10). sled keeps a sticky error after a failed write:
//! retrying the same handle never recovers. Through the simulated store (ENOSPC that
//! sticks to the handle until it is reopened, no root needed): the writer task stops,
//! waits, reopens its storage rolled back to its last checkpoint, appends again what it
//! had not flushed and goes on once space is back, and the log is exactly the
//! transactions sent, whatever storage call the disk filled up at. With root, the same on
//! a real 24 MB tmpfs with sled (`cargo test --test spool_diskfull -- --ignored`).

#[path = "spool/common.rs"]
mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use dbmazz::core::retry::RetryPolicy;
use dbmazz::core::*;
use dbmazz::spool::storage::{PowerLoss, SimFault, SimStore};
use dbmazz::spool::{writer, GroupCommit, Spool, SpoolError, SpoolOptions};
use tokio::sync::mpsc;

fn sim_opts() -> SpoolOptions {
    SpoolOptions {
        cache_capacity: 4 << 20,
        max_bytes: 1 << 40,
        segment_bytes: 1500,
    }
}

/// Fast retries, and a writer that never recovers gives up (an error, not a hang).
fn quick_retry() -> RetryPolicy {
    RetryPolicy {
        initial_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(4),
        jitter: 0.0,
        max_attempts: Some(2000),
    }
}

#[test]
fn enospc_sticks_until_the_writer_reopens_and_appends_again() {
    let sim = SimStore::new();
    let s = open_sim(&sim, sim_opts());
    s.append(&ReaderEvent::Relation(rel(1, 2))).unwrap();
    for k in 1..=3 {
        s.append_all(&numbered_txn(k)).unwrap();
    }
    s.flush().unwrap();
    s.append_all(&numbered_txn(4)).unwrap();
    sim.set_disk_full(true);
    // Records wait in the writer's block; the full disk shows when the block is written
    // (here at the flush, at the latest).
    let e = s
        .append_all(&numbered_txn(5))
        .and_then(|_| s.flush().map(|_| ()))
        .unwrap_err();
    assert!(e.is_disk_full(), "{e}");
    assert!(s.stats().disk_full);
    sim.set_disk_full(false);
    // Space is back, but the handle that saw ENOSPC keeps failing (sled's sticky error).
    let e = s.flush().unwrap_err();
    assert!(e.is_disk_full(), "sticky: {e}");
    sim.set_disk_full(true);
    assert!(
        s.recover_writer().unwrap_err().is_disk_full(),
        "no space to reopen yet"
    );
    sim.set_disk_full(false);
    // Reopened, rolled back to the last flush: transaction 4 must be appended again.
    s.recover_writer().unwrap();
    for k in 4..=5 {
        s.append_all(&numbered_txn(k)).unwrap();
    }
    let mark = s.flush().unwrap();
    assert_eq!(txn_number(mark.commit_lsn), 5);
    assert!(!s.stats().disk_full);
    assert_eq!(check_numbered(&s), 5);
    drop(s);
    sim.power_loss(PowerLoss::LoseUnsynced);
    assert_eq!(check_numbered(&open_sim(&sim, sim_opts())), 5);
}

/// The batches a reader would send: transactions 1..=`n` (streamed ones, segment rolls),
/// a reconnect in the middle (half a transaction, Restart, the transaction again).
fn reader_batches(n: u64) -> Vec<Vec<ReaderEvent>> {
    let mut out = vec![vec![ReaderEvent::Relation(rel(1, 2))]];
    for k in 1..=n {
        let ev = numbered_txn(k);
        if k == 5 {
            out.push(ev[..ev.len() - 1].to_vec());
            out.push(vec![
                ReaderEvent::Restart { from: Lsn(458) },
                ReaderEvent::Relation(rel(1, 2)),
            ]);
        }
        if k % 7 == 0 {
            // A streamed transaction: its segments, (checkpoints,) then its commit.
            let last = ev.len() - 1;
            out.push(ev[..last].to_vec());
            out.push(ev[last..].to_vec());
        } else if k % 3 == 0 {
            // A transaction split over batches.
            let mid = ev.len() / 2;
            out.push(ev[..mid].to_vec());
            out.push(ev[mid..].to_vec());
        } else {
            out.push(ev);
        }
    }
    out
}

/// Runs the writer task over `reader_batches(n)` with the disk filling up at storage
/// call `fill_at` (counted from the open); frees space once the writer has failed at
/// least twice. `max_bytes` 1 flushes after every batch (inside transactions too).
/// Returns whether the disk ever filled.
async fn writer_run(fill_at: u64, n: u64, max_bytes: u64, with_loader: bool) -> bool {
    let sim = SimStore::new();
    let spool = open_sim(&sim, sim_opts());
    sim.fail_at(sim.ops() + fill_at, SimFault::DiskFull);
    let (tx, rx) = mpsc::channel(1024);
    let gc = GroupCommit {
        max_txns: 3,
        max_bytes,
        // Flushes by count and bytes only: the storage calls are the same every run.
        max_delay: Duration::from_secs(3600),
        retry: quick_retry(),
    };
    let (task, marks) = writer::spawn(spool.clone(), rx, gc);
    let loader = with_loader.then(|| {
        let s = spool.clone();
        let mut marks = marks.clone();
        tokio::spawn(async move {
            while marks.changed().await.is_ok() {
                let m = *marks.borrow_and_update();
                let s = s.clone();
                // A full disk fails the mark too; the next one heals the ledger.
                let _ = tokio::task::spawn_blocking(move || {
                    if m.seq > s.loaded_mark().seq {
                        let _ = s.mark_loaded(m.seq, m.commit_lsn);
                    }
                })
                .await;
            }
        })
    });
    for b in reader_batches(n) {
        tx.send(b).await.unwrap();
    }
    drop(tx);
    let mut filled = false;
    while !task.is_finished() {
        if sim.is_disk_full() && sim.enospc_errors() >= 2 {
            filled = true;
            assert!(spool.stats().disk_full, "status shows the full disk");
            sim.set_disk_full(false);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    task.await.unwrap().unwrap();
    if let Some(l) = loader {
        l.await.unwrap();
    }
    filled |= sim.enospc_errors() > 0;
    // The disk may have filled up at the loader's last call, after the writer ended.
    sim.clear_faults();
    sim.set_disk_full(false);
    assert!(!spool.stats().disk_full);
    // Exactly the transactions sent: nothing lost, nothing twice, all durable.
    assert_eq!(txn_number(spool.durable_mark().commit_lsn), n);
    assert_eq!(check_numbered(&spool), n);
    drop(spool);
    drop(marks);
    sim.power_loss(PowerLoss::LoseUnsynced);
    assert_eq!(check_numbered(&open_sim(&sim, sim_opts())), n);
    filled
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_recovers_from_a_disk_filling_up_at_every_step() {
    for max_bytes in [4000, 1] {
        let mut fill_at = 1;
        while writer_run(fill_at, 16, max_bytes, false).await {
            fill_at += 1;
        }
        // One stored block per group commit (or per full block / segment), so fewer
        // calls than records; still every kind of call is hit.
        assert!(fill_at > 60, "the workload made {fill_at} storage calls");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_recovers_while_the_loader_marks_loaded() {
    let mut fill_at = 1;
    while writer_run(fill_at, 16, 1, true).await {
        fill_at += 3;
    }
}

fn opts() -> dbmazz::spool::SpoolOptions {
    dbmazz::spool::SpoolOptions {
        segment_bytes: 8 << 20,
        ..small_opts()
    }
}

#[test]
#[ignore = "needs root: mounts a small tmpfs"]
fn enospc_is_disk_full_and_flushed_data_survives() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("cannot mount a tmpfs here: skipped");
        return;
    }
    let result = std::panic::catch_unwind(|| {
        let s = Spool::open(&mnt, opts()).unwrap();
        s.append(&ReaderEvent::Relation(rel(1, 2))).unwrap();
        let payload = "d".repeat(50_000);
        let mut last_ok = None;
        let mut err = None;
        for k in 1..2000u32 {
            let r = s
                .append_all(&txn(k, 1, k as u64 * 100, 5, &payload))
                .and_then(|_| s.flush());
            match r {
                Ok(m) => last_ok = Some((k, m)),
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        let err = err.expect("the tmpfs never filled up");
        println!("error at full disk: {err}");
        assert!(err.is_disk_full(), "expected DiskFull, got {err}");
        assert!(!matches!(err, SpoolError::Corrupt { .. }));
        let (k, mark) = last_ok.expect("nothing flushed before the disk filled");
        assert!(s.is_full() || s.durable_mark() == mark);
        drop(s);
        // Opening needs a little space too: still "full", not corruption.
        if let Err(e) = Spool::open(&mnt, opts()) {
            assert!(e.is_disk_full(), "reopen on a full disk: {e}");
        }
        // Space comes back (the operator grows the volume): what was flushed is intact.
        let grown = Command::new("mount")
            .args(["-o", "remount,size=256m"])
            .arg(&mnt)
            .status()
            .unwrap();
        assert!(grown.success());
        let s = Spool::open(&mnt, opts()).unwrap();
        assert!(s.durable_mark().seq >= mark.seq);
        let t = txns_of(&read_all(&s));
        assert!(t.len() >= k as usize);
        assert!(s.verify().unwrap().ok());
        // And appending goes on.
        s.append_all(&txn(5000, 1, 900_000, 1, "after")).unwrap();
        s.flush().unwrap();
    });
    let _ = Command::new("umount").arg(&mnt).status();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

#[test]
#[ignore = "needs root: mounts a small tmpfs"]
fn the_writer_task_waits_out_a_full_tmpfs_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("cannot mount a tmpfs here: skipped");
        return;
    }
    let m = mnt.clone();
    let result = std::panic::catch_unwind(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let spool = Spool::open(&m, opts()).unwrap();
            let (tx, rx) = mpsc::channel(4);
            let gc = GroupCommit {
                retry: quick_retry(),
                ..GroupCommit::default()
            };
            let (task, _marks) = writer::spawn(spool.clone(), rx, gc);
            let payload = Arc::new("d".repeat(50_000));
            const N: u32 = 800; // ~200 MB of payload: far more than 24 MB
            let sender = tokio::spawn(async move {
                tx.send(vec![ReaderEvent::Relation(rel(1, 2))])
                    .await
                    .unwrap();
                for k in 1..=N {
                    tx.send(txn(k, 1, k as u64 * 100, 5, &payload))
                        .await
                        .unwrap();
                }
            });
            while !spool.stats().disk_full {
                assert!(
                    !task.is_finished(),
                    "the writer ended before the disk filled"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // The writer waits; space comes back (the operator grows the volume).
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(!task.is_finished(), "a full disk does not end the writer");
            let grown = Command::new("mount")
                .args(["-o", "remount,size=2g"])
                .arg(&m)
                .status()
                .unwrap();
            assert!(grown.success());
            sender.await.unwrap();
            task.await.unwrap().unwrap();
            let t = txns_of(&read_all(&spool));
            assert_eq!(t.len(), N as usize, "every transaction, once");
            for (i, (xid, _, changes)) in t.iter().enumerate() {
                assert_eq!(*xid, i as u32 + 1);
                assert_eq!(changes.len(), 5);
            }
            assert!(spool.verify().unwrap().ok());
        });
    });
    let _ = Command::new("umount").arg(&mnt).status();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}
