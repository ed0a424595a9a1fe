//! The reader while PostgreSQL restarts under it (invariant 13): a fast restart (the
//! walsender ends the COPY stream cleanly), an immediate one (every process killed, crash
//! recovery), and a stop of several seconds (reconnects refused meanwhile), each in the
//! middle of a workload with a transaction open across the restart. Afterwards every
//! committed transaction arrived exactly once and in commit order, nothing of the open
//! transaction ever counted, and the reader never returned an error.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dbmazz::config::{SourceConfig, TableName};
use dbmazz::connectors::sources::postgres::reader::{
    Reader, ReaderControl, ReaderOptions, ReaderStatus,
};
use dbmazz::connectors::sources::postgres::replication::ReplicationConnection;
use dbmazz::connectors::sources::postgres::{client, setup, SourceError};
use dbmazz::core::retry::RetryPolicy;
use dbmazz::core::{ChangeOp, Lsn, ReaderEvent, Value};
use pg_scratch::PgCluster;
use support::*;
use tokio::sync::{mpsc, watch};

fn source_config(pg: &PgCluster, streaming: bool) -> SourceConfig {
    SourceConfig {
        conn: socket_conninfo(pg, "postgres"),
        slot_name: "dbmazz_slot".into(),
        publication_name: "dbmazz_pub".into(),
        tables: vec![TableName::parse("items").unwrap()],
        streaming,
        set_replica_identity_full: false,
        status_interval: Duration::from_secs(5),
        do_snapshot: false,
    }
}

async fn ensure(cfg: &SourceConfig) {
    let c = client::connect(&cfg.conn).await.unwrap();
    let mut repl = ReplicationConnection::connect(&cfg.conn).await.unwrap();
    setup::ensure(&c, &mut repl, cfg).await.unwrap();
    repl.close().await;
}

/// What a consumer that behaves like the spool made of the stream: changes count only
/// at their transaction's commit; a Stream Abort drops its transaction, a Restart drops
/// everything unfinished.
#[derive(Default)]
struct Applied {
    /// Row ids in the order their transactions committed.
    ids: Vec<i64>,
    /// Commit LSNs of the applied transactions, in arrival order.
    commit_lsns: Vec<Lsn>,
    restarts: usize,
    /// Ids seen in any change, committed or not (the open transaction's show up here).
    seen: BTreeSet<i64>,
}

fn row_id(op: &ChangeOp) -> Option<i64> {
    match op {
        ChangeOp::Insert { new } => match new.first() {
            Some(Value::Text(b)) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

/// Consumes batches like the spool + loader would, confirming each commit as soon as it
/// is applied (so a fast shutdown's walsender sees everything flushed and ends cleanly).
fn consume(
    mut rx: mpsc::Receiver<Vec<ReaderEvent>>,
    confirmed: watch::Sender<Lsn>,
    applied: Arc<Mutex<Applied>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut open: Vec<i64> = Vec::new();
        let mut streamed: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
        let mut current_stream: Option<u32> = None;
        while let Some(batch) = rx.recv().await {
            let mut a = applied.lock().unwrap();
            for ev in batch {
                match ev {
                    ReaderEvent::Begin { .. } => open.clear(),
                    ReaderEvent::Change(c) => {
                        if let Some(id) = row_id(&c.op) {
                            a.seen.insert(id);
                            match current_stream {
                                Some(xid) => streamed.entry(xid).or_default().push(id),
                                None => open.push(id),
                            }
                        }
                    }
                    ReaderEvent::Commit(c) => {
                        a.ids.append(&mut open);
                        a.commit_lsns.push(c.commit_lsn);
                        let _ = confirmed.send(c.end_lsn);
                    }
                    ReaderEvent::StreamStart { xid, .. } => current_stream = Some(xid),
                    ReaderEvent::StreamStop => current_stream = None,
                    ReaderEvent::StreamCommit(c) => {
                        let mut rows = streamed.remove(&c.xid).unwrap_or_default();
                        a.ids.append(&mut rows);
                        a.commit_lsns.push(c.commit_lsn);
                        let _ = confirmed.send(c.end_lsn);
                    }
                    ReaderEvent::StreamAbort { xid, subxid } => {
                        // No subtransactions in this workload.
                        assert_eq!(xid, subxid);
                        streamed.remove(&xid);
                    }
                    ReaderEvent::Restart { .. } => {
                        a.restarts += 1;
                        open.clear();
                        streamed.clear();
                        current_stream = None;
                    }
                    ReaderEvent::Relation(_) | ReaderEvent::Message { .. } => {}
                }
            }
        }
    })
}

/// Inserts rows with increasing ids, one transaction at a time (1 to 3 rows, every 25th
/// transaction 400 wide rows so protocol 2 streams it), reconnecting whenever the server
/// goes away. Ids only grow, so commit order is id order.
fn workload(
    pg: &PgCluster,
    stop: Arc<AtomicBool>,
    next: Arc<AtomicI64>,
) -> std::thread::JoinHandle<()> {
    let conn = pg.socket_conn_string("postgres");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let Ok((client, c)) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await
                else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                tokio::spawn(c);
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let (rows, pad) = if n % 25 == 0 { (400, 300) } else { (1 + n % 3, 1) };
                    let first = next.fetch_add(rows as i64, Ordering::SeqCst);
                    let last = first + rows as i64 - 1;
                    let sql = format!(
                        "INSERT INTO items SELECT g, repeat('w', {pad}) FROM generate_series({first}, {last}) g"
                    );
                    if client.batch_execute(&sql).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    })
}

/// A transaction left open across the restart: negative ids, big enough to be streamed
/// under protocol 2 before the server goes down. It never commits.
fn open_transaction(pg: &PgCluster) -> std::process::Child {
    let psql = pg_scratch::bin_dir().unwrap().join("psql");
    let mut child = std::process::Command::new(psql)
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(pg.socket_dir())
        .args([
            "-p",
            &pg.port().to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"BEGIN;
              INSERT INTO items SELECT -g, repeat('o', 300) FROM generate_series(1, 600) g;
              SELECT pg_sleep(600);
              COMMIT;",
        )
        .unwrap();
    child
}

#[derive(Clone, Copy, Debug)]
enum Outage {
    /// `pg_ctl restart -m fast`: the walsender ends the COPY stream (CommandComplete).
    Fast,
    /// `pg_ctl restart -m immediate`: every server process is killed (SIGQUIT), crash
    /// recovery at start.
    Immediate,
    /// A fast stop, several seconds down (reconnects fail), then a start.
    Down(Duration),
}

fn postmaster_pid(pg: &PgCluster) -> libc::pid_t {
    let text = std::fs::read_to_string(pg.data_dir().join("postmaster.pid")).unwrap();
    text.lines().next().unwrap().trim().parse().unwrap()
}

fn outage(pg: &mut PgCluster, how: Outage) {
    match how {
        Outage::Fast => pg.restart().unwrap(),
        Outage::Immediate => {
            // SAFETY: signalling our own cluster's postmaster.
            unsafe { libc::kill(postmaster_pid(pg), libc::SIGQUIT) };
            // Reaps the dead postmaster, starts it again (crash recovery).
            pg.restart().unwrap();
        }
        Outage::Down(d) => {
            pg.stop().unwrap();
            std::thread::sleep(d);
            pg.restart().unwrap();
        }
    }
}

async fn restart_under_the_reader(how: Outage, streaming: bool) {
    let pg = PgCluster::start().unwrap();
    pg.psql(
        "postgres",
        "CREATE TABLE items (id bigint PRIMARY KEY, pad text)",
    )
    .unwrap();
    let cfg = source_config(&pg, streaming);
    ensure(&cfg).await;

    let mut opts = ReaderOptions::new(cfg.conn.clone(), &cfg.slot_name, &cfg.publication_name);
    opts.streaming = streaming;
    opts.status_interval = Duration::from_millis(500);
    opts.retry = RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(1));
    let (tx, rx) = mpsc::channel(8);
    let (reader, status) = Reader::new(opts, tx);
    let (confirmed, confirmed_rx) = watch::channel(Lsn::ZERO);
    let (_paused, paused_rx) = watch::channel(false);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let reader_task = tokio::spawn(reader.run(
        Lsn::ZERO,
        ReaderControl {
            confirmed: confirmed_rx,
            paused: paused_rx,
            shutdown: shutdown_rx,
        },
    ));
    let applied = Arc::new(Mutex::new(Applied::default()));
    let consumer = consume(rx, confirmed, applied.clone());

    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicI64::new(1));
    let writer = workload(&pg, stop.clone(), next.clone());
    let applied_len = || applied.lock().unwrap().commit_lsns.len();
    let alive = |status: &watch::Receiver<ReaderStatus>, task: &tokio::task::JoinHandle<_>| {
        assert!(
            !task.is_finished(),
            "the reader ended: {:?}",
            status.borrow()
        );
    };

    // Mid-workload, with a transaction open (and, under protocol 2, partly streamed).
    wait(&applied_len, 40, &status, &reader_task).await;
    let mut open = open_transaction(&pg);
    if streaming {
        let seen_open = eventually(Duration::from_secs(30), || {
            applied
                .lock()
                .unwrap()
                .seen
                .iter()
                .any(|&id| id < 0)
                .then_some(())
        })
        .await;
        assert!(
            seen_open.is_some(),
            "the open transaction was never streamed"
        );
    } else {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let before = applied_len();
    let mut pg = tokio::task::spawn_blocking(move || {
        let mut pg = pg;
        outage(&mut pg, how);
        pg
    })
    .await
    .unwrap();
    let _ = open.kill();
    let _ = open.wait();
    alive(&status, &reader_task);

    // The reader comes back on its own and the workload goes on through it.
    wait(&applied_len, before + 60, &status, &reader_task).await;
    stop.store(true, Ordering::SeqCst);
    tokio::task::spawn_blocking(move || writer.join().unwrap())
        .await
        .unwrap();

    // Everything committed arrives: the table is the truth (a commit whose reply was lost
    // in the outage may or may not have happened).
    let committed: Vec<i64> = pg
        .psql("postgres", "SELECT id FROM items ORDER BY id")
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(!committed.is_empty());
    let got = eventually(Duration::from_secs(60), || {
        let a = applied.lock().unwrap();
        (a.ids.len() >= committed.len()).then_some(())
    })
    .await;
    alive(&status, &reader_task);
    assert!(
        got.is_some(),
        "not everything arrived: {} of {} rows; reader {:?}",
        applied.lock().unwrap().ids.len(),
        committed.len(),
        status.borrow()
    );
    {
        let a = applied.lock().unwrap();
        // Exactly once and in commit order: the applied ids are the table's ids, sorted.
        assert_eq!(a.ids.len(), committed.len(), "duplicates or extra rows");
        assert_eq!(a.ids, committed, "rows out of order, missing or repeated");
        assert!(
            a.commit_lsns.windows(2).all(|w| w[0] < w[1]),
            "a transaction arrived twice or out of order"
        );
        assert!(
            a.ids.iter().all(|&id| id > 0),
            "the open transaction counted"
        );
        assert!(a.restarts >= 1, "the stream was never restarted");
    }
    let st = status.borrow().clone();
    assert!(st.reconnects >= 1 && st.connected, "{st:?}");
    if let Outage::Down(_) = how {
        // Attempts failed while the server was down (refused), and were retried.
        assert!(st.reconnects >= 2, "{st:?}");
    }

    shutdown.send(true).unwrap();
    let ended: Result<(), SourceError> = tokio::time::timeout(Duration::from_secs(20), reader_task)
        .await
        .expect("the reader did not stop")
        .unwrap();
    ended.unwrap_or_else(|e| panic!("the reader returned an error: {e}"));
    consumer.await.unwrap();
    pg.stop().unwrap();
}

/// Waits until `n` transactions were applied; fails at once if the reader ended.
async fn wait(
    applied_len: &dyn Fn() -> usize,
    n: usize,
    status: &watch::Receiver<ReaderStatus>,
    task: &tokio::task::JoinHandle<Result<(), SourceError>>,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while applied_len() < n {
        assert!(
            !task.is_finished(),
            "the reader ended after {} transactions: {:?}",
            applied_len(),
            status.borrow()
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "stuck at {} of {n} transactions: {:?}",
            applied_len(),
            status.borrow()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_restart_is_reconnected_and_nothing_is_lost_or_repeated() {
    restart_under_the_reader(Outage::Fast, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_restart_under_protocol_2_with_a_streamed_open_transaction() {
    restart_under_the_reader(Outage::Fast, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_restart_is_reconnected_and_nothing_is_lost_or_repeated() {
    restart_under_the_reader(Outage::Immediate, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_down_for_seconds_is_waited_out() {
    restart_under_the_reader(Outage::Down(Duration::from_secs(4)), false).await;
}

/// With the sink down nothing is confirmed. A walsender at a fast shutdown waits until
/// the client's reported flush position reaches what it sent; repeating the stale
/// confirmed LSN in every status update held PostgreSQL's shutdown for as long as
/// StarRocks was down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_shutdown_is_not_held_up_while_nothing_is_confirmed() {
    let pg = PgCluster::start().unwrap();
    pg.psql(
        "postgres",
        "CREATE TABLE items (id bigint PRIMARY KEY, pad text)",
    )
    .unwrap();
    let cfg = source_config(&pg, false);
    ensure(&cfg).await;
    let mut opts = ReaderOptions::new(cfg.conn.clone(), &cfg.slot_name, &cfg.publication_name);
    opts.status_interval = Duration::from_millis(500);
    opts.retry = RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(1));
    let (tx, mut rx) = mpsc::channel(8);
    let (reader, status) = Reader::new(opts, tx);
    // The loader confirms nothing new: the confirmed LSN stays where the slot is.
    let slot: Lsn = pg
        .psql(
            "postgres",
            "SELECT confirmed_flush_lsn FROM pg_replication_slots",
        )
        .unwrap()
        .parse()
        .unwrap();
    assert!(slot > Lsn::ZERO);
    let (_confirmed, confirmed_rx) = watch::channel(slot);
    let (_paused, paused_rx) = watch::channel(false);
    let (_shutdown, shutdown_rx) = watch::channel(false);
    let reader_task = tokio::spawn(reader.run(
        Lsn::ZERO,
        ReaderControl {
            confirmed: confirmed_rx,
            paused: paused_rx,
            shutdown: shutdown_rx,
        },
    ));
    let received = Arc::new(AtomicI64::new(0));
    let r2 = received.clone();
    tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            let commits = b
                .iter()
                .filter(|e| matches!(e, ReaderEvent::Commit(_)))
                .count();
            r2.fetch_add(commits as i64, Ordering::SeqCst);
        }
    });
    pg.psql(
        "postgres",
        "INSERT INTO items VALUES (1, 'a'); INSERT INTO items VALUES (2, 'b');",
    )
    .unwrap();
    let got = eventually(Duration::from_secs(30), || {
        (received.load(Ordering::SeqCst) >= 2).then_some(())
    })
    .await;
    assert!(got.is_some(), "{:?}", status.borrow());
    // A fast restart must finish although the client confirmed nothing.
    let restart = tokio::task::spawn_blocking(move || {
        let mut pg = pg;
        pg.restart().unwrap();
        pg
    });
    let pg = tokio::time::timeout(Duration::from_secs(60), restart)
        .await
        .expect("PostgreSQL's fast shutdown waited for the client to confirm")
        .unwrap();
    assert!(!reader_task.is_finished(), "{:?}", status.borrow());
    // Nothing was confirmed: the slot still holds everything.
    let flushed = pg
        .psql(
            "postgres",
            "SELECT confirmed_flush_lsn < pg_current_wal_lsn() FROM pg_replication_slots",
        )
        .unwrap();
    assert_eq!(flushed, "t");
}
