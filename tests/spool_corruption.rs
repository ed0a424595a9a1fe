//! Corruption is loud (invariant 9): a flipped byte in a stored record or a truncated
//! file is reported with the sequence by verify and makes the loader's read fail.

#[path = "spool/common.rs"]
mod common;

use std::path::{Path, PathBuf};

use common::*;
use dbmazz::core::*;
use dbmazz::spool::storage::{SledStore, Store};
use dbmazz::spool::{Spool, SpoolError};

/// A spool with 10 one-change transactions, payload `MARKER-<k>-...`, each flushed on its
/// own (so each is one stored block: records `2k+1`, `2k+2`); returns its dir.
fn build(dir: &Path) {
    let s = open(dir);
    s.append(&ReaderEvent::Relation(rel(1, 2))).unwrap();
    for k in 0..10u64 {
        let pad = "p".repeat(200);
        s.append_all(&txn(
            k as u32 + 1,
            1,
            1000 * (k + 1),
            1,
            &format!("MARKER-{k:04}-{pad}"),
        ))
        .unwrap();
        s.flush().unwrap();
    }
}

/// The log segment files (each segment is one append-only file).
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("seg-"))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

fn find(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    hay.windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

/// Outcome of opening, verifying and reading a damaged spool: must be loud somewhere, and
/// any report must name a sequence inside the damaged range.
fn assert_loud(dir: &Path, damaged: std::ops::RangeInclusive<u64>) {
    let s = match Spool::open(dir, small_opts()) {
        Err(e) => {
            // Refusing to open is loud; it must say which records are affected.
            let msg = e.to_string();
            println!("open refused: {msg}");
            assert!(
                msg.contains("seq") || msg.contains("sequence") || msg.contains("seg-"),
                "{msg}"
            );
            return;
        }
        Ok(s) => s,
    };
    let rep = s.verify().unwrap();
    println!("verify: {:?}", rep.problems);
    assert!(!rep.ok(), "verify saw nothing wrong");
    assert!(
        rep.problems.iter().any(|p| damaged.contains(&p.seq)),
        "problems {:?} do not name a sequence in {damaged:?}",
        rep.problems
    );
    let mut from = 0;
    let err = loop {
        match s.read_from(from, 3) {
            Ok(b) if b.is_empty() => panic!("the loader read everything without an error"),
            Ok(b) => from = b.last().unwrap().0 + 1,
            Err(e) => break e,
        }
    };
    println!("read: {err}");
    match err {
        SpoolError::Corrupt { seq, .. } => {
            assert!(damaged.contains(&seq), "read error names {seq}")
        }
        other => panic!("expected Corrupt, got {other}"),
    }
}

#[test]
fn a_flipped_byte_in_a_stored_record_is_reported_with_its_sequence() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let files = segment_files(dir.path());
    let mut hit = false;
    for f in files {
        let mut bytes = std::fs::read(&f).unwrap();
        let pos = find(&bytes, b"MARKER-0004");
        if pos.is_empty() {
            continue;
        }
        for p in pos {
            bytes[p + 20] ^= 0x01; // inside the padding of the payload
        }
        std::fs::write(&f, bytes).unwrap();
        hit = true;
    }
    assert!(hit, "marker not found in any segment file");
    // Transaction 5 is records 9 (change) and 10 (commit).
    assert_loud(dir.path(), 9..=10);
}

#[test]
fn a_truncated_segment_file_is_reported_with_its_sequence() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let files = segment_files(dir.path());
    let f = files.last().unwrap();
    let bytes = std::fs::read(f).unwrap();
    let pos = find(&bytes, b"MARKER-0006");
    assert!(!pos.is_empty());
    // Cut the file in the middle of transaction 7's record.
    std::fs::write(f, &bytes[..pos[0] + 5]).unwrap();
    assert_loud(dir.path(), 13..=20);
}

#[test]
fn a_missing_segment_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let s = Spool::open(
        dir.path(),
        dbmazz::spool::SpoolOptions {
            segment_bytes: 600,
            ..small_opts()
        },
    )
    .unwrap();
    s.append(&ReaderEvent::Relation(rel(1, 2))).unwrap();
    for k in 0..10u64 {
        s.append_all(&txn(k as u32 + 1, 1, 1000 * (k + 1), 1, &"q".repeat(300)))
            .unwrap();
    }
    s.flush().unwrap();
    drop(s);
    let segs: Vec<PathBuf> = segment_files(dir.path());
    assert!(
        segs.len() > 3,
        "expected several segments, got {}",
        segs.len()
    );
    std::fs::remove_file(&segs[1]).unwrap();
    assert_loud(dir.path(), 1..=20);
}

#[test]
fn a_record_that_fails_its_own_crc_names_its_sequence() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    // Damage below the storage's own checks (as a bug or bit rot before it would):
    // rewrite the block holding record 9 (records 9 and 10, keyed 9) through the store
    // with one byte flipped.
    let seg = segment_files(dir.path())
        .into_iter()
        .rev()
        .find(|p| {
            let first: u64 = p.file_name().unwrap().to_string_lossy()[4..]
                .parse()
                .unwrap();
            first <= 9
        })
        .unwrap();
    {
        // Through the spool's own store.
        let db = SledStore.open_log(&seg, 1 << 20).unwrap();
        let log = db.tree("log").unwrap();
        let mut v = log.get(&9u64.to_be_bytes()).unwrap().unwrap();
        let n = v.len();
        v[n - 10] ^= 0x01;
        log.insert(&9u64.to_be_bytes(), &v).unwrap();
        db.sync().unwrap();
    }
    let s = Spool::open(dir.path(), small_opts()).unwrap();
    let rep = s.verify().unwrap();
    assert_eq!(rep.problems.len(), 1, "{:?}", rep.problems);
    assert_eq!(rep.problems[0].seq, 9);
    assert!(
        rep.problems[0].reason.contains("CRC"),
        "{}",
        rep.problems[0].reason
    );
    // Every record but the damaged block's two.
    assert_eq!(rep.checked, 18);
    // The loader reads 1..=8 and then fails on 9, every time.
    let first = s.read_from(0, 8).unwrap();
    assert_eq!(first.last().unwrap().0, 8);
    for _ in 0..2 {
        match s.read_from(9, 100) {
            Err(SpoolError::Corrupt { seq: 9, reason }) => assert!(reason.contains("CRC")),
            other => panic!("expected Corrupt at 9, got {other:?}"),
        }
    }
}
