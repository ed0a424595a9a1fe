//! The spool's named crash points: a child (this test binary re-executed) runs with
//! `FAILPOINTS` set and aborts exactly at the point (records synced but ledger not
//! written; ledger synced but mark not published; loaded mark not yet written). The
//! reopened spool is consistent and holds exactly what the ledger says.

#[path = "spool/common.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use dbmazz::core::*;
use dbmazz::failpoints::{SPOOL_FLUSH_AFTER_LEDGER, SPOOL_FLUSH_BEFORE_LEDGER, SPOOL_MARK_LOADED};
use dbmazz::spool::{Spool, SpoolRecord};

const CHILD_DIR: &str = "SPOOL_FP_CHILD_DIR";

fn commit_seq(spool: &Spool, k: u64) -> u64 {
    read_all(spool)
        .into_iter()
        .find(|(_, r)| matches!(r, SpoolRecord::Commit(c) if c.info.xid as u64 == k))
        .map(|(seq, _)| seq)
        .unwrap_or_else(|| panic!("transaction {k} is not pending"))
}

/// The child: transactions 1..=3, flush, 4..=6, flush, mark 1..=3 loaded, mark 4..=6
/// loaded. The configured point ends the process somewhere on the way.
#[test]
fn failpoint_child_role() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return; // not the child
    };
    let _fp = dbmazz::failpoints::setup();
    let s = Spool::open(&dir, small_opts()).expect("child open");
    s.append(&ReaderEvent::Relation(rel(1, 2)))
        .expect("relation");
    for k in 1..=3 {
        s.append_all(&numbered_txn(k)).expect("append");
    }
    s.flush().expect("flush");
    for k in 4..=6 {
        s.append_all(&numbered_txn(k)).expect("append");
    }
    s.flush().expect("flush");
    s.mark_loaded(commit_seq(&s, 3), Lsn(358)).expect("mark");
    s.mark_loaded(commit_seq(&s, 6), Lsn(658)).expect("mark");
    panic!("the failpoint did not end the process");
}

/// Runs the child with `FAILPOINTS=<spec>`; it must die (abort), not exit.
fn run_child(dir: &Path, spec: &str) {
    let exe = std::env::current_exe().unwrap();
    let status = Command::new(exe)
        .args([
            "--exact",
            "failpoint_child_role",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir)
        .env("FAILPOINTS", spec)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "the child must abort at {spec}: {status}"
    );
}

/// Reopens and checks consistency; returns (durable txn, loaded txn).
fn reopen(dir: &Path) -> (u64, u64) {
    let s = Spool::open(dir, small_opts()).expect("reopen");
    let durable = check_numbered(&s);
    let loaded = txn_number(s.loaded_mark().confirmed_lsn);
    // And it goes on.
    s.append(&ReaderEvent::Relation(rel(1, 2))).unwrap();
    s.append_all(&numbered_txn(durable + 1)).unwrap();
    s.flush().unwrap();
    assert_eq!(check_numbered(&s), durable + 1);
    (durable, loaded)
}

#[test]
fn crash_after_the_records_before_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    run_child(
        dir.path(),
        &format!("{SPOOL_FLUSH_BEFORE_LEDGER}=1*off->return"),
    );
    assert_eq!(
        reopen(dir.path()),
        (3, 0),
        "the second flush never reached the ledger"
    );
}

#[test]
fn crash_after_the_ledger_before_publishing() {
    let dir = tempfile::tempdir().unwrap();
    run_child(
        dir.path(),
        &format!("{SPOOL_FLUSH_AFTER_LEDGER}=1*off->return"),
    );
    assert_eq!(
        reopen(dir.path()),
        (6, 0),
        "the ledger of the second flush was synced"
    );
}

#[test]
fn crash_before_the_loaded_mark_is_written() {
    let dir = tempfile::tempdir().unwrap();
    run_child(dir.path(), &format!("{SPOOL_MARK_LOADED}=1*off->return"));
    assert_eq!(
        reopen(dir.path()),
        (6, 3),
        "the second mark never reached the ledger"
    );
}
