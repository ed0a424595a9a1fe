//! A full filesystem (ENOSPC) is `SpoolError::DiskFull` ("full, retry later"), never
//! corruption, and what was flushed before stays intact. Needs root (mounts a 24 MB
//! tmpfs): `cargo test --test spool_diskfull -- --ignored`.

#[path = "spool/common.rs"]
mod common;

use std::process::Command;

use common::*;
use dbmazz::core::*;
use dbmazz::spool::{Spool, SpoolError};

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
