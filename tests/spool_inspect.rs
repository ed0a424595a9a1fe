//! The inspection tool on a real spool: every command, human and JSON output, directly
//! on a closed spool and through the daemon's inspect.sock while the spool is open.

#[path = "spool/common.rs"]
mod common;

use std::path::Path;

use common::*;
use dbmazz::cli::spool::{run, SpoolArgs, SpoolCommand};
use dbmazz::core::*;
use dbmazz::spool::storage::{SledStore, Store};
use dbmazz::spool::{inspect, Spool, SpoolError};
use serde_json::Value as Json;

/// 3 plain transactions (2 changes each) + 1 streamed (2 changes); the first loaded.
fn build(dir: &Path) -> Spool {
    let s = open(dir);
    s.append(&ReaderEvent::Relation(rel(1, 2))).unwrap();
    s.append(&ReaderEvent::Relation(rel(2, 2))).unwrap();
    s.append_all(&txn(10, 1, 100, 2, "first")).unwrap();
    s.append_all(&txn(11, 2, 200, 2, "tab\there \"quoted\"\nnewline"))
        .unwrap();
    s.append_all(&txn(12, 1, 300, 2, "third")).unwrap();
    s.append_all(&[
        ReaderEvent::StreamStart {
            xid: 13,
            first_segment: true,
        },
        ReaderEvent::Change(insert(13, 2, 400, "streamed-a")),
        ReaderEvent::Change(insert(13, 2, 401, "streamed-b")),
        ReaderEvent::StreamStop,
        ReaderEvent::StreamCommit(commit(13, 402)),
    ])
    .unwrap();
    s.flush().unwrap();
    s.mark_loaded(3, Lsn(103)).unwrap();
    s
}

fn cli(dir: &Path, json: bool, command: SpoolCommand) -> Result<String, SpoolError> {
    let args = SpoolArgs {
        dir: Some(dir.to_path_buf()),
        json,
        command,
    };
    let mut out = Vec::new();
    run(&args, &mut out)?;
    Ok(String::from_utf8(out).unwrap())
}

fn json_lines(s: &str) -> Vec<Json> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs every command and checks its output; the same checks pass directly and via the
/// daemon's socket.
fn check_all(dir: &Path) {
    // stats
    let st = &json_lines(&cli(dir, true, SpoolCommand::Stats).unwrap())[0];
    assert_eq!(st["pending_records"], 9);
    assert_eq!(st["pending_txns"], 3);
    assert_eq!(st["loaded"]["seq"], 3);
    assert_eq!(st["durable"]["seq"], 12);
    assert_eq!(st["oldest_pending"]["commit_seq"], 6);
    let tables: Vec<(String, u64)> = st["per_table"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["records"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        tables,
        vec![("public.t1".into(), 2), ("public.t2".into(), 4)]
    );
    let human = cli(dir, false, SpoolCommand::Stats).unwrap();
    assert!(
        human.contains("pending:         9 records, 3 transactions"),
        "{human}"
    );
    assert!(human.contains("public.t2 (2)"), "{human}");

    // list
    let list = json_lines(
        &cli(
            dir,
            true,
            SpoolCommand::List {
                from: None,
                limit: 100,
            },
        )
        .unwrap(),
    );
    assert_eq!(
        list.iter()
            .map(|v| v["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        (4..=12).collect::<Vec<_>>()
    );
    assert_eq!(list[2]["type"], "commit");
    assert_eq!(list[8]["streamed"], true);
    let human = cli(
        dir,
        false,
        SpoolCommand::List {
            from: Some(5),
            limit: 2,
        },
    )
    .unwrap();
    let lines: Vec<&str> = human.lines().collect();
    assert_eq!(lines.len(), 2, "{human}");
    assert!(
        lines[0].contains("INSERT") && lines[0].contains("public.t2"),
        "{human}"
    );
    assert!(
        lines[1].contains("COMMIT") && lines[1].contains("xid 11"),
        "{human}"
    );

    // show
    let show = &json_lines(&cli(dir, true, SpoolCommand::Show { seq: 4 }).unwrap())[0];
    assert_eq!(show["op"], "insert");
    assert_eq!(show["relation"], "public.t2");
    assert_eq!(show["new"]["c1"], "tab\there \"quoted\"\nnewline");
    let human = cli(dir, false, SpoolCommand::Show { seq: 6 }).unwrap();
    assert!(human.contains("\"type\": \"commit\""), "{human}");
    assert!(
        cli(dir, true, SpoolCommand::Show { seq: 99 }).is_err(),
        "a record past the durable mark"
    );

    // tail
    let tail = json_lines(&cli(dir, true, SpoolCommand::Tail { n: 3 }).unwrap());
    assert_eq!(
        tail.iter()
            .map(|v| v["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![10, 11, 12]
    );
    let human = cli(dir, false, SpoolCommand::Tail { n: 1 }).unwrap();
    assert!(
        human.contains("COMMIT") && human.contains("(streamed)"),
        "{human}"
    );

    // verify
    let v = &json_lines(&cli(dir, true, SpoolCommand::Verify).unwrap())[0];
    assert_eq!(v["checked"], 9);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0);
    let human = cli(dir, false, SpoolCommand::Verify).unwrap();
    assert!(
        human.contains("9 records checked") && human.contains("OK"),
        "{human}"
    );

    // export: every pending record in full, JSON lines even without --json
    let exp = json_lines(
        &cli(
            dir,
            false,
            SpoolCommand::Export {
                from: None,
                to: None,
            },
        )
        .unwrap(),
    );
    assert_eq!(exp.len(), 9);
    let streamed: Vec<&str> = exp
        .iter()
        .filter_map(|v| v["new"]["c1"].as_str())
        .filter(|s| s.starts_with("streamed"))
        .collect();
    assert_eq!(streamed, vec!["streamed-a", "streamed-b"]);
    let part = json_lines(
        &cli(
            dir,
            true,
            SpoolCommand::Export {
                from: Some(7),
                to: Some(8),
            },
        )
        .unwrap(),
    );
    assert_eq!(part.len(), 2);
}

#[test]
fn every_command_on_a_closed_spool() {
    let dir = tempfile::tempdir().unwrap();
    drop(build(dir.path()));
    check_all(dir.path());
}

#[test]
fn every_command_while_the_daemon_holds_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let spool = build(dir.path());
    // Without the server the directory is locked: a clear error, not a hang.
    let err = cli(dir.path(), true, SpoolCommand::Stats)
        .unwrap_err()
        .to_string();
    assert!(err.contains("locked"), "{err}");
    let server = inspect::serve(spool.clone()).unwrap();
    assert!(dir.path().join(inspect::SOCKET_NAME).exists());
    check_all(dir.path());
    // The daemon goes on appending while it is inspected.
    spool.append_all(&txn(20, 1, 900, 1, "live")).unwrap();
    spool.flush().unwrap();
    let st = &json_lines(&cli(dir.path(), true, SpoolCommand::Stats).unwrap())[0];
    assert_eq!(st["pending_txns"], 4);
    drop(server);
    assert!(!dir.path().join(inspect::SOCKET_NAME).exists());
}

#[test]
fn verify_fails_and_names_the_sequence_of_a_corrupt_record() {
    let dir = tempfile::tempdir().unwrap();
    drop(build(dir.path()));
    let seg = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("seg-"))
        .unwrap()
        .path();
    {
        // Through the spool's own store.
        let db = SledStore.open_log(&seg, 1 << 20).unwrap();
        // One flush: records 1..=12 are one block, keyed 1. Records 1..=3 are loaded,
        // so verify names 4, the first pending record of the damaged block.
        let log = db.tree("log").unwrap();
        let (k, mut v) = log.floor(&5u64.to_be_bytes()).unwrap().unwrap();
        assert_eq!(&k[..], &1u64.to_be_bytes());
        v[40] ^= 0xff;
        log.insert(&k, &v).unwrap();
        db.sync().unwrap();
    }
    let args = SpoolArgs {
        dir: Some(dir.path().to_path_buf()),
        json: false,
        command: SpoolCommand::Verify,
    };
    let mut out = Vec::new();
    match run(&args, &mut out) {
        Err(SpoolError::Corrupt { seq: 4, .. }) => {}
        other => panic!("expected a verify failure at 4, got {other:?}"),
    }
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("1 problem(s)") && text.contains("seq 4:") && text.contains("CRC"),
        "{text}"
    );
    // show of the corrupt record fails loudly too.
    assert!(matches!(
        cli(dir.path(), true, SpoolCommand::Show { seq: 5 }),
        Err(SpoolError::Corrupt { seq: 5, .. })
    ));
}

#[test]
fn a_directory_without_a_spool_is_an_error_and_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let err = cli(dir.path(), false, SpoolCommand::Stats)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no spool"), "{err}");
    assert!(!dir.path().join("meta").exists());
}
