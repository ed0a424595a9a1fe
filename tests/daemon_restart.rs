//! `dbmazz run` and `dbmazz check` as a user runs them: a child process against a private
//! PostgreSQL. Start, SIGTERM, kill -9, start again: the slot stays the same and every
//! change is in the spool exactly once (invariants 7 and 8).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dbmazz::core::{ChangeOp, Value};
use dbmazz::spool::{Spool, SpoolOptions, SpoolRecord};
use pg_scratch::{Options, PgCluster};

const BIN: &str = env!("CARGO_BIN_EXE_dbmazz");

fn daemon(pg: &PgCluster, spool: &Path) -> Child {
    Command::new(BIN)
        .arg("run")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SOURCE_URL", pg.socket_conn_string("postgres"))
        .env("TABLES", "events")
        .env("SPOOL_DIR", spool)
        .env("ACK_POLICY", "spooled")
        .env("SOURCE_STATUS_INTERVAL_MS", "200")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn dbmazz")
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, sig) };
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(
            start.elapsed() < timeout,
            "dbmazz did not exit in {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn slot_row(pg: &PgCluster) -> String {
    pg.psql(
        "postgres",
        "SELECT slot_name || ':' || plugin || ':' || catalog_xmin::text FROM pg_replication_slots",
    )
    .unwrap()
}

/// Ids of inserted rows found in the spool, with how often each appears.
fn spool_ids(dir: &Path) -> BTreeMap<i64, usize> {
    let spool = Spool::open(dir, SpoolOptions::default()).unwrap();
    let mut ids = BTreeMap::new();
    let mut from = 0;
    loop {
        let recs = spool.read_from(from, 10_000).unwrap();
        let Some(last) = recs.last() else { break };
        from = last.0 + 1;
        for (_, r) in recs {
            if let SpoolRecord::Change { change, .. } = r {
                if let ChangeOp::Insert { new } = change.op {
                    if let Value::Text(t) = &new[0] {
                        let id: i64 = String::from_utf8_lossy(t).parse().unwrap();
                        *ids.entry(id).or_insert(0) += 1;
                    }
                }
            }
        }
    }
    ids
}

#[test]
fn stop_kill9_and_restart_keep_the_slot_and_lose_nothing() {
    let pg = PgCluster::start().unwrap();
    pg.psql(
        "postgres",
        "CREATE TABLE events (id bigint PRIMARY KEY, payload text)",
    )
    .unwrap();
    let spool_dir = tempfile::tempdir().unwrap();
    let spool = spool_dir.path().join("spool");

    // The first start creates the slot; changes before it are the snapshot's business.
    let mut d = daemon(&pg, &spool);
    let start = Instant::now();
    while slot_row(&pg).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "slot never created"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Steady traffic on another thread for the whole test: one row per transaction.
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU32::new(1));
    let traffic = {
        let (stop, next) = (stop.clone(), next.clone());
        let conn = pg.socket_conn_string("postgres");
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let (client, c) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(c);
                while !stop.load(Ordering::SeqCst) {
                    let id = next.fetch_add(1, Ordering::SeqCst) as i64;
                    client
                        .execute("INSERT INTO events VALUES ($1, 'p')", &[&id])
                        .await
                        .unwrap();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
        })
    };

    std::thread::sleep(Duration::from_secs(2));
    let slot_before = slot_row(&pg);
    assert!(
        slot_before.starts_with("dbmazz_slot:pgoutput:"),
        "{slot_before}"
    );

    // Clean stop: exit 0, slot kept.
    signal(&d, libc::SIGTERM);
    assert!(wait_exit(&mut d, Duration::from_secs(30)).success());
    assert_eq!(slot_row(&pg).lines().count(), 1);
    std::thread::sleep(Duration::from_millis(500)); // traffic while stopped

    // Start again, then kill -9 in the middle of the traffic, twice.
    for round in 0..2 {
        let mut d = daemon(&pg, &spool);
        std::thread::sleep(Duration::from_millis(1500 + round * 700));
        signal(&d, libc::SIGKILL);
        wait_exit(&mut d, Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(300));
    }

    // Final run: stop the traffic, let the daemon catch up, stop it cleanly.
    let mut d = daemon(&pg, &spool);
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    traffic.join().unwrap();
    let last = next.load(Ordering::SeqCst) as i64 - 1;
    let max_in_pg: i64 = pg
        .psql("postgres", "SELECT max(id) FROM events")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(max_in_pg, last);
    // Wait until the spool has the last row (the daemon keeps running meanwhile).
    std::thread::sleep(Duration::from_secs(3));
    signal(&d, libc::SIGTERM);
    assert!(wait_exit(&mut d, Duration::from_secs(30)).success());

    // The same slot all along: never dropped and re-created.
    let slot_after = slot_row(&pg);
    assert_eq!(slot_after.lines().count(), 1, "{slot_after}");
    assert!(slot_after.starts_with("dbmazz_slot:pgoutput:"));

    let ids = spool_ids(&spool);
    let missing: Vec<i64> = (1..=last).filter(|i| !ids.contains_key(i)).collect();
    let twice: Vec<(&i64, &usize)> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        missing.is_empty(),
        "{} of {last} rows missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(twice.is_empty(), "rows spooled twice: {twice:?}");
    assert_eq!(ids.len() as i64, last);
}

#[test]
fn check_reports_a_good_setup_and_fails_on_wal_level_replica() {
    let mut pg = PgCluster::start().unwrap();
    pg.psql(
        "postgres",
        "CREATE TABLE events (id bigint PRIMARY KEY); CREATE TABLE nokey (v int)",
    )
    .unwrap();
    let check = |pg: &PgCluster, tables: &str, json: bool| {
        let mut c = Command::new(BIN);
        c.arg("check")
            .env_clear()
            .env("SOURCE_URL", pg.socket_conn_string("postgres"))
            .env("TABLES", tables);
        if json {
            c.arg("--json");
        }
        c.output().unwrap()
    };
    let ok = check(&pg, "events", false);
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(text.contains("wal_level       logical"), "{text}");
    assert!(text.contains("public.events"), "{text}");
    assert!(text.contains("primary key (id)"), "{text}");
    assert!(text.contains("OK: ready to replicate"), "{text}");
    // check changes nothing: no slot, no publication created.
    assert_eq!(
        pg.psql("postgres", "SELECT count(*) FROM pg_replication_slots")
            .unwrap(),
        "0"
    );
    assert_eq!(
        pg.psql("postgres", "SELECT count(*) FROM pg_publication")
            .unwrap(),
        "0"
    );

    // A table without a key and a missing table are reported with fixes.
    let bad = check(&pg, "nokey,ghost", true);
    assert_eq!(bad.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let problems = v["problems"].to_string();
    assert!(
        problems.contains("public.nokey has no primary key"),
        "{problems}"
    );
    assert!(
        problems.contains("public.ghost does not exist"),
        "{problems}"
    );

    pg.restart_with(Options::default().wal_level("replica"))
        .unwrap();
    let out = check(&pg, "events", false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("wal_level is 'replica'"), "{text}");
    assert!(
        text.contains("ALTER SYSTEM SET wal_level = logical"),
        "{text}"
    );
}

#[test]
fn run_refuses_wal_level_replica_with_a_clear_error_and_bad_config_names_the_variable() {
    let pg = PgCluster::start_with(Options::default().wal_level("replica")).unwrap();
    pg.psql("postgres", "CREATE TABLE events (id bigint PRIMARY KEY)")
        .unwrap();
    let spool = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("run")
        .env_clear()
        .env("SOURCE_URL", pg.socket_conn_string("postgres"))
        .env("TABLES", "events")
        .env("SPOOL_DIR", spool.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wal_level"), "{err}");

    let out = Command::new(BIN)
        .arg("run")
        .env_clear()
        .env("SOURCE_URL", pg.socket_conn_string("postgres"))
        .env("TABLES", "events")
        .env("FLUSH_SIZE", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("FLUSH_SIZE") && err.contains("lots"), "{err}");
}

#[test]
fn help_documents_every_variable() {
    let out = Command::new(BIN).args(["run", "--help"]).output().unwrap();
    let _ = out;
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for s in dbmazz::config::SETTINGS {
        assert!(text.contains(s.env), "{} missing from --help", s.env);
    }
    for cmd in ["run", "check", "spool", "slot"] {
        assert!(text.contains(cmd), "{cmd} missing from --help");
    }
}
