//! Invariant 12, end to end: a spool belongs to one source (system identifier, database,
//! slot, timeline), and a slot that lost what the spool says was confirmed is a gap.
//! `dbmazz run` (child process) with private PostgreSQL clusters and the StarRocks
//! double, as a user would meet it (issue 9, case 6):
//!
//! - a spool left by a job on cluster A, opened against a fresh cluster B: refused, with
//!   A's identity and what to do; nothing of A reaches B's target; the spool untouched;
//! - the slot dropped after the job confirmed data: refused (published as `failed`);
//!   with `ACCEPT_SLOT_GAP=true` the daemon starts, recreates the slot, says loudly what
//!   was skipped and streams; the next ordinary start works without the flag;
//! - another slot name configured for a spool: refused, nothing created;
//! - an idle source whose slot followed the server past the spool's last transaction is
//!   no gap: the ordinary restart goes on.

mod support;

use std::process::Command;

use dbmazz::spool::{SourceIdentity, Spool, SpoolOptions, SpoolStats};
use starrocks_double::{Fault, FaultDuration, Node};
use support::control::*;
use support::e2e::*;

const SCHEMA: &str = "CREATE TABLE items (id bigint PRIMARY KEY, v text);
                      CREATE TABLE noise (id bigint PRIMARY KEY, pad text);";
const TARGETS: &[&str] = &[
    "CREATE TABLE items (id BIGINT NOT NULL, v VARCHAR(1048576)) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 1",
];

/// The cluster's system identifier, as PostgreSQL reports it.
fn system_identifier(e: &E2e) -> u64 {
    e.sql("SELECT system_identifier FROM pg_control_system()")
        .parse()
        .unwrap()
}

/// The ids in the target, sorted.
fn target_ids(e: &E2e) -> Vec<i64> {
    let mut ids: Vec<i64> = target_pairs(e, "items", "v")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    ids.sort();
    ids
}

/// What the spool's ledger says, read with the daemon stopped.
fn ledger(e: &E2e) -> (Option<SourceIdentity>, SpoolStats) {
    let spool = Spool::open(e.spool_path(), SpoolOptions::default()).expect("reopen the spool");
    (spool.source_identity(), spool.stats())
}

/// The daemon log from `from` (a byte offset) on.
fn log_since(e: &E2e, from: usize) -> String {
    let text = std::fs::read_to_string(e.log_path()).unwrap_or_default();
    text.get(from..).unwrap_or_default().to_string()
}

fn log_len(e: &E2e) -> usize {
    std::fs::read_to_string(e.log_path())
        .map(|t| t.len())
        .unwrap_or(0)
}

/// The final error line the daemon printed (`dbmazz: ...`).
fn final_error(log: &str) -> String {
    log.lines()
        .rev()
        .find(|l| l.starts_with("dbmazz: "))
        .unwrap_or_else(|| panic!("no final error line in:\n{log}"))
        .to_string()
}

/// Starts the daemon and waits until it streamed `id` into the target.
async fn run_until_loaded(e: &mut E2e, id: i64) {
    e.spawn();
    e.wait_for(LONG, "slot created", |e| e.slot_count() == 1)
        .await;
    e.sql(&format!("INSERT INTO items VALUES ({id}, 'v{id}')"));
    e.wait_for(LONG, "the row loaded", |e| target_ids(e).contains(&id))
        .await;
}

/// Runs the daemon expecting it to refuse to start; returns what it logged.
async fn refused(e: &mut E2e) -> String {
    let from = log_len(e);
    e.spawn();
    let st = e.wait_exit(LONG).await;
    let log = log_since(e, from);
    assert!(!st.success(), "the daemon did not fail ({st:?}):\n{log}");
    log
}

/// (1) The report: a spool left by a job on another cluster was loaded into the
/// new job's target, and the new slot resumed at the old spool's LSN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_of_another_cluster_is_refused_and_none_of_it_reaches_the_new_target() {
    // Job A: one row loaded, then StarRocks goes down and 1,000 rows wait in the spool.
    let mut a = E2e::start(SCHEMA, "items", TARGETS).await;
    run_until_loaded(&mut a, 1).await;
    for node in [Node::Fe, Node::Be] {
        a.sr.set_fault(Fault::Down { node }, FaultDuration::Forever);
    }
    insert_txn(&a, 1001, 2001);
    a.wait_for(LONG, "A's 1,000 rows in the spool", |a| {
        let out = Command::new(BIN)
            .args(["spool", "stats", "--json", "--dir"])
            .arg(a.spool_path())
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v["pending_records"].as_u64())
            .is_some_and(|n| n > 1000)
    })
    .await;
    a.sigterm().await;
    let a_system = system_identifier(&a);
    let (a_source, a_stats) = ledger(&a);
    let a_source = a_source.expect("A's spool records its source");
    assert_eq!(a_source.system_identifier, a_system);
    assert!(a_stats.pending_records > 1000, "{a_stats:?}");

    // Job B: a fresh cluster (its own initdb, so its own system identifier) with the
    // same schema and the same SPOOL_DIR.
    let mut b = E2e::start_with_options(
        pg_scratch::Options::default().own_initdb(),
        SCHEMA,
        "items",
        TARGETS,
    )
    .await;
    let b_system = system_identifier(&b);
    assert_ne!(a_system, b_system, "the clusters must differ");
    b.set_env("SPOOL_DIR", &a.spool_path().display().to_string());
    b.sql("INSERT INTO items VALUES (7, 'b7')");
    let log = refused(&mut b).await;
    let line = final_error(&log);
    assert!(
        line.contains("belongs to another source")
            && line.contains(&format!("system {a_system}/db postgres/slot dbmazz_slot"))
            && line.contains(&format!("system {b_system}/"))
            && line.contains("system identifier differs")
            && line.contains("SPOOL_DIR"),
        "the refusal must say whose spool it is and what to do: {line}"
    );
    // Nothing of A reached B's target; nothing was created on B.
    assert!(b.target("items").is_empty(), "{:?}", b.target("items"));
    assert!(b.sr.loads().is_empty(), "B's StarRocks got loads");
    assert_eq!(b.slot_count(), 0, "a slot was created on B");
    // The spool is untouched: A's source and marks, A's rows still waiting.
    let (source, stats) = ledger(&a);
    assert_eq!(source, Some(a_source));
    assert_eq!(stats.durable, a_stats.durable);
    assert_eq!(stats.loaded, a_stats.loaded);
    assert_eq!(stats.pending_records, a_stats.pending_records);
}

/// (2) The slot dropped after the job confirmed data: the changes made while it was gone
/// are lost in PostgreSQL. The start is refused (and published as `failed`, also when it
/// first had to wait for PostgreSQL); with ACCEPT_SLOT_GAP=true the daemon starts,
/// recreates the slot, says what was skipped and streams; later starts need no flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_slot_is_a_gap_refused_until_accepted_once() {
    let mut e = E2e::start(SCHEMA, "items", TARGETS).await;
    run_until_loaded(&mut e, 1).await;
    e.sql("INSERT INTO items SELECT g, 'v' || g FROM generate_series(2, 10) g");
    e.wait_for(LONG, "rows 1..=10 loaded", |e| target_ids(e).len() == 10)
        .await;
    assert!(e.sigterm().await.success());
    let (_, before) = ledger(&e);
    let resume = before.durable.end_lsn;

    e.sql("SELECT pg_drop_replication_slot('dbmazz_slot')");
    e.sql("INSERT INTO items SELECT g, 'lost' FROM generate_series(11, 20) g");

    // PostgreSQL down at first: the daemon waits, then meets the missing slot.
    e.pg.stop().expect("stop PostgreSQL");
    let from = log_len(&e);
    let before_listen = listening_lines(&e);
    e.spawn();
    e.wait_for(LONG, "control plane listening", |e| {
        listening_lines(e) > before_listen
    })
    .await;
    let api = Api::connect(&e).await;
    api.wait_status(&e, LONG, "waiting for PostgreSQL", |s| {
        s.stage == "waiting for PostgreSQL"
    })
    .await;
    let watch = watch_until_end(&api, 100, LONG);
    e.pg.start_again().expect("start PostgreSQL");
    let st = e.wait_exit(LONG).await;
    let log = log_since(&e, from);
    assert!(!st.success(), "started over a gap:\n{log}");
    let line = final_error(&log);
    assert!(
        line.contains("slot \"dbmazz_slot\" is missing")
            && line.contains(&resume.to_string())
            && line.contains("re-snapshot")
            && line.contains("ACCEPT_SLOT_GAP=true"),
        "the refusal must explain the gap and the ways out: {line}"
    );
    let (msgs, err) = watch.await.unwrap();
    let last = msgs
        .last()
        .unwrap_or_else(|| panic!("no Watch message ({err:?})"));
    assert_eq!(last.state, "failed", "{last:#?}");
    assert!(last.last_error.contains("is missing"), "{last:#?}");
    assert_eq!(e.slot_count(), 0, "the slot was recreated over the gap");
    assert_eq!(target_ids(&e), (1..=10).collect::<Vec<_>>());

    // Accepted: starts, recreates the slot, says loudly what was skipped, streams.
    e.set_env("ACCEPT_SLOT_GAP", "true");
    let from = log_len(&e);
    e.spawn();
    e.wait_for(LONG, "slot recreated", |e| e.slot_count() == 1)
        .await;
    e.sql("INSERT INTO items SELECT g, 'v' || g FROM generate_series(21, 30) g");
    e.wait_for(LONG, "rows after the gap loaded", |e| {
        target_ids(e).contains(&30)
    })
    .await;
    let log = log_since(&e, from);
    let warning = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("were lost with the old slot"))
        .unwrap_or_else(|| panic!("no warning about the accepted gap:\n{log}"));
    assert!(
        warning.contains(&resume.to_string()) && warning.contains("NOT in the target"),
        "{warning}"
    );
    let expected: Vec<i64> = (1..=10).chain(21..=30).collect();
    assert_eq!(target_ids(&e), expected, "the gap's rows cannot be there");
    assert!(e.sigterm().await.success());

    // The next start is an ordinary one: no flag needed.
    e.set_env("ACCEPT_SLOT_GAP", "false");
    e.sql("INSERT INTO items SELECT g, 'v' || g FROM generate_series(31, 35) g");
    e.spawn();
    e.wait_for(LONG, "rows written while stopped loaded", |e| {
        target_ids(e).contains(&35)
    })
    .await;
    assert!(e.running());
    assert!(e.sigterm().await.success());
}

/// (4) The spool of the job on `dbmazz_slot`, started with another slot configured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_of_another_slot_is_refused() {
    let mut e = E2e::start(SCHEMA, "items", TARGETS).await;
    run_until_loaded(&mut e, 1).await;
    assert!(e.sigterm().await.success());
    let (_, before) = ledger(&e);

    e.set_env("SOURCE_SLOT_NAME", "other_slot");
    let log = refused(&mut e).await;
    let line = final_error(&log);
    assert!(
        line.contains("belongs to another source")
            && line.contains("slot dbmazz_slot")
            && line.contains("slot other_slot")
            && line.contains("(the slot differs)"),
        "{line}"
    );
    assert_eq!(
        e.sql("SELECT string_agg(slot_name, ',') FROM pg_replication_slots"),
        "dbmazz_slot",
        "the other slot was created"
    );
    // `dbmazz check` reports what `run` would refuse (and changes nothing).
    let (code, report) = check(&e);
    assert_eq!(code, Some(2), "{report}");
    assert_eq!(report["spool"]["state"], "refused", "{report}");
    assert!(
        report["problems"]
            .to_string()
            .contains("belongs to another source"),
        "{report}"
    );
    assert_eq!(e.slot_count(), 1);
    let (_, after) = ledger(&e);
    assert_eq!(after.durable, before.durable);
    assert_eq!(after.loaded, before.loaded);

    // Back to its own slot: check says the spool fits, and the job goes on.
    e.set_env("SOURCE_SLOT_NAME", "dbmazz_slot");
    let (code, report) = check(&e);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["spool"]["state"], "usable", "{report}");
    assert!(
        report["spool"]["decision"]
            .as_str()
            .is_some_and(|d| d.contains("belongs to this source")),
        "{report}"
    );
    run_until_loaded(&mut e, 2).await;
    let (_, report) = check(&e);
    assert_eq!(report["spool"]["state"], "in_use", "{report}");
    assert!(e.sigterm().await.success());
}

/// `dbmazz check --json` with the job's environment: exit code and report.
fn check(e: &E2e) -> (Option<i32>, serde_json::Value) {
    let mut c = Command::new(BIN);
    c.args(["check", "--json"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in &e.env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
        panic!(
            "check printed no JSON ({err}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

/// (3) An ordinary restart after an idle period: with everything loaded and confirmed,
/// the reader lets the slot follow the server past the spool's last transaction (WAL of
/// unpublished tables). That is not a gap; a restart must not be refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_that_followed_an_idle_source_is_no_gap() {
    let mut e = E2e::start(SCHEMA, "items", TARGETS).await;
    run_until_loaded(&mut e, 1).await;
    // Past the loaded row's commit; the slot gets beyond it only by following the server.
    let before = parse_lsn(&e.sql("SELECT pg_current_wal_lsn()"));
    e.sql("INSERT INTO noise SELECT g, repeat('p', 100) FROM generate_series(1, 2000) g");
    e.wait_for(LONG, "the slot followed the server", |e| {
        slot_confirmed(e) > before
    })
    .await;
    assert!(e.sigterm().await.success());
    let (_, stats) = ledger(&e);
    assert!(
        slot_confirmed(&e) > stats.durable.end_lsn.0,
        "the slot ({}) must be past the spool's resume point ({}) for this test to mean anything",
        e.confirmed_flush(),
        stats.durable.end_lsn
    );

    let from = log_len(&e);
    e.spawn();
    e.sql("INSERT INTO items VALUES (2, 'v2')");
    e.wait_for(LONG, "the restarted job streams", |e| {
        target_ids(e) == vec![1, 2]
    })
    .await;
    assert!(e.running(), "{}", log_since(&e, from));
    assert!(e.sigterm().await.success());
}

/// IDENTIFY_SYSTEM names the cluster as `pg_control_system()` does: the identity the
/// ledger records is the server's own.
#[tokio::test]
async fn identify_system_names_the_cluster() {
    let pg =
        pg_scratch::PgCluster::start_with(pg_scratch::Options::default().own_initdb()).unwrap();
    let mut repl =
        dbmazz::connectors::sources::postgres::replication::ReplicationConnection::connect(
            &support::socket_conninfo(&pg, "postgres"),
        )
        .await
        .unwrap();
    let sys = repl.identify_system().await.unwrap();
    let sql = |q: &str| pg.psql("postgres", q).unwrap();
    assert_eq!(
        sys.system_id.to_string(),
        sql("SELECT system_identifier FROM pg_control_system()")
    );
    assert_eq!(
        sys.timeline.to_string(),
        sql("SELECT timeline_id FROM pg_control_checkpoint()")
    );
    assert_eq!(sys.dbname.as_deref(), Some("postgres"));
    repl.close().await;
}
