//! The reader against a real PostgreSQL 15: every pgoutput message type produced by real
//! SQL and decoded field by field, keepalives under a short wal_sender_timeout, and
//! restarting from an LSN.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use dbmazz::config::{SourceConfig, TableName};
use dbmazz::connectors::sources::postgres::pgoutput::{parse, PgOutputMessage};
use dbmazz::connectors::sources::postgres::reader::{
    Reader, ReaderControl, ReaderOptions, ReaderStatus,
};
use dbmazz::connectors::sources::postgres::replication::{
    ReplicationConnection, ReplicationMessage,
};
use dbmazz::connectors::sources::postgres::{client, setup};
use dbmazz::core::retry::RetryPolicy;
use dbmazz::core::{ChangeOp, CommitInfo, Lsn, OldKind, ReaderEvent, Value};
use pg_scratch::{Options, PgCluster};
use support::*;
use tokio::sync::{mpsc, watch};

const SCHEMA: &str = "
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE items (id int PRIMARY KEY, name text, big text, feeling mood);
CREATE TABLE pairs (a int, b text, v text, PRIMARY KEY (a, b));
ALTER TABLE pairs REPLICA IDENTITY FULL;
";

fn source_config(pg: &PgCluster, tables: &[&str]) -> SourceConfig {
    SourceConfig {
        conn: socket_conninfo(pg, "postgres"),
        slot_name: "dbmazz_slot".into(),
        publication_name: "dbmazz_pub".into(),
        tables: tables
            .iter()
            .map(|t| TableName::parse(t).unwrap())
            .collect(),
        streaming: true,
        set_replica_identity_full: false,
        status_interval: Duration::from_secs(5),
        do_snapshot: false,
    }
}

async fn ensure(cfg: &SourceConfig) -> setup::SetupOutcome {
    let c = client::connect(&cfg.conn).await.unwrap();
    let mut repl = ReplicationConnection::connect(&cfg.conn).await.unwrap();
    let (_, outcome) = setup::ensure(&c, &mut repl, cfg).await.unwrap();
    repl.close().await;
    outcome
}

struct Running {
    rx: mpsc::Receiver<Vec<ReaderEvent>>,
    status: watch::Receiver<ReaderStatus>,
    confirmed: watch::Sender<Lsn>,
    paused: watch::Sender<bool>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), dbmazz::connectors::sources::postgres::SourceError>>,
}

fn start_reader(cfg: &SourceConfig, start: Lsn, tweak: impl FnOnce(&mut ReaderOptions)) -> Running {
    let mut opts = ReaderOptions::new(cfg.conn.clone(), &cfg.slot_name, &cfg.publication_name);
    opts.streaming = cfg.streaming;
    tweak(&mut opts);
    let (tx, rx) = mpsc::channel(8);
    let (reader, status) = Reader::new(opts, tx);
    let (confirmed, confirmed_rx) = watch::channel(Lsn::ZERO);
    let (paused, paused_rx) = watch::channel(false);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(reader.run(
        start,
        ReaderControl {
            confirmed: confirmed_rx,
            paused: paused_rx,
            shutdown: shutdown_rx,
        },
    ));
    Running {
        rx,
        status,
        confirmed,
        paused,
        shutdown,
        task,
    }
}

impl Running {
    /// Collects events until `done` says the wanted ones have arrived.
    async fn collect_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&[ReaderEvent]) -> bool,
    ) -> Vec<ReaderEvent> {
        let mut all = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while !done(&all) {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(b)) => all.extend(b),
                Ok(None) => panic!("reader ended: {:?}", self.status.borrow()),
                Err(_) => panic!("timed out; got {} events: {all:#?}", all.len()),
            }
        }
        all
    }

    async fn stop(self) {
        self.shutdown.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

fn commits(evs: &[ReaderEvent]) -> Vec<CommitInfo> {
    evs.iter()
        .filter_map(|e| match e {
            ReaderEvent::Commit(c) | ReaderEvent::StreamCommit(c) => Some(*c),
            _ => None,
        })
        .collect()
}

fn text(v: &Value) -> String {
    match v {
        Value::Text(b) => String::from_utf8(b.to_vec()).unwrap(),
        other => panic!("expected text, got {other:?}"),
    }
}

#[tokio::test]
async fn decodes_every_change_kind_field_by_field() {
    let pg = PgCluster::start().unwrap();
    pg.psql("postgres", SCHEMA).unwrap();
    let mut cfg = source_config(&pg, &["items", "pairs"]);
    cfg.streaming = false; // protocol 1: big transactions arrive whole
    let outcome = ensure(&cfg).await;
    assert!(outcome.created_slot && outcome.created_publication);
    let mut r = start_reader(&cfg, Lsn::ZERO, |_| {});

    let big = "x".repeat(100_000); // > 64 kB, TOASTed (compressible, stored out of line)
    let big_random: String = (0..70_000)
        .map(|i| char::from(b'a' + ((i * 7919 + i / 13) % 26) as u8))
        .collect();
    pg.psql(
        "postgres",
        &format!(
            "ALTER TABLE items ALTER COLUMN big SET STORAGE EXTERNAL;
             INSERT INTO items VALUES (1, 'one', '{big}', 'happy'), (2, E'tab\\there\\nnew \"q\" \\\\ ünï', NULL, NULL);
             UPDATE items SET name = 'uno' WHERE id = 1;
             UPDATE items SET id = 10 WHERE id = 2;
             DELETE FROM items WHERE id = 10;
             INSERT INTO pairs VALUES (1, 'a', 'v1');
             UPDATE pairs SET v = 'v2' WHERE a = 1;
             INSERT INTO items VALUES (3, 'three', '{big_random}', 'ok');
             TRUNCATE items, pairs;"
        ),
    )
    .unwrap();
    let evs = r
        .collect_until(Duration::from_secs(20), |e| {
            e.iter().any(|e| matches!(e, ReaderEvent::Change(c) if matches!(c.op, ChangeOp::Truncate { .. })))
                && matches!(e.last(), Some(ReaderEvent::Commit(_)))
        })
        .await;
    assert_eq!(r.status.borrow().protocol_version, 1);

    let changes: Vec<_> = evs
        .iter()
        .filter_map(|e| match e {
            ReaderEvent::Change(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    let rels: Vec<_> = evs
        .iter()
        .filter_map(|e| match e {
            ReaderEvent::Relation(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    let items = rels
        .iter()
        .find(|r| r.name == "items")
        .expect("items relation");
    assert_eq!(items.namespace, "public");
    assert_eq!(
        items
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.is_key))
            .collect::<Vec<_>>(),
        vec![
            ("id", true),
            ("name", false),
            ("big", false),
            ("feeling", false)
        ]
    );
    assert_eq!(items.columns[0].type_oid, 23);
    let pairs = rels
        .iter()
        .find(|r| r.name == "pairs")
        .expect("pairs relation");
    assert_eq!(pairs.replica_identity, dbmazz::core::ReplicaIdentity::Full);

    // Each transaction: Begin ... Commit, with final_lsn == commit_lsn, xid matching.
    let mut open: Option<(u32, Lsn)> = None;
    for e in &evs {
        match e {
            ReaderEvent::Begin { xid, final_lsn, .. } => open = Some((*xid, *final_lsn)),
            ReaderEvent::Change(c) => assert_eq!(Some(c.xid), open.map(|o| o.0)),
            ReaderEvent::Commit(c) => {
                let (xid, final_lsn) = open.take().expect("commit without begin");
                assert_eq!(c.xid, xid);
                assert_eq!(c.commit_lsn, final_lsn);
                assert!(c.end_lsn > c.commit_lsn);
                assert!(c.commit_time > 0);
            }
            _ => {}
        }
    }

    // 1. Insert of two rows, with special characters and a big value.
    match &changes[0].op {
        ChangeOp::Insert { new } => {
            assert_eq!(text(&new[0]), "1");
            assert_eq!(text(&new[2]).len(), 100_000);
            assert_eq!(text(&new[3]), "happy");
        }
        other => panic!("{other:?}"),
    }
    match &changes[1].op {
        ChangeOp::Insert { new } => {
            assert_eq!(text(&new[1]), "tab\there\nnew \"q\" \\ ünï");
            assert_eq!(new[2], Value::Null);
        }
        other => panic!("{other:?}"),
    }
    // 2. Update leaving the TOASTed column unchanged: marked, not sent.
    match &changes[2].op {
        ChangeOp::Update { old, new } => {
            assert!(old.is_none());
            assert_eq!(text(&new[1]), "uno");
            assert_eq!(new[2], Value::UnchangedToast);
        }
        other => panic!("{other:?}"),
    }
    // 3. Key change: old key image (K).
    match &changes[3].op {
        ChangeOp::Update {
            old: Some((OldKind::Key, old)),
            new,
        } => {
            assert_eq!(text(&old[0]), "2");
            assert_eq!(old[1], Value::Null);
            assert_eq!(text(&new[0]), "10");
        }
        other => panic!("{other:?}"),
    }
    // 4. Delete: key only.
    match &changes[4].op {
        ChangeOp::Delete {
            old: (OldKind::Key, old),
        } => assert_eq!(text(&old[0]), "10"),
        other => panic!("{other:?}"),
    }
    // 5-6. REPLICA IDENTITY FULL: the update carries the full old row (O).
    match &changes[6].op {
        ChangeOp::Update {
            old: Some((OldKind::Full, old)),
            new,
        } => {
            assert_eq!(text(&old[2]), "v1");
            assert_eq!(text(&new[2]), "v2");
        }
        other => panic!("{other:?}"),
    }
    // 7. Incompressible value over 64 kB arrives whole.
    match &changes[7].op {
        ChangeOp::Insert { new } => assert_eq!(text(&new[2]), big_random),
        other => panic!("{other:?}"),
    }
    // 8. TRUNCATE of both tables in one message.
    match &changes[8].op {
        ChangeOp::Truncate {
            relations,
            cascade,
            restart_identity,
        } => {
            let ids: BTreeSet<u32> = relations.iter().copied().collect();
            assert_eq!(ids, BTreeSet::from([items.id, pairs.id]));
            assert!(!cascade && !restart_identity);
        }
        other => panic!("{other:?}"),
    }
    r.stop().await;
}

#[tokio::test]
async fn streams_large_transactions_and_messages_under_protocol_2() {
    // logical_decoding_work_mem is 64kB in pg-scratch: big transactions are streamed.
    let pg = PgCluster::start().unwrap();
    pg.psql("postgres", SCHEMA).unwrap();
    let cfg = source_config(&pg, &["items"]);
    ensure(&cfg).await;
    let mut r = start_reader(&cfg, Lsn::ZERO, |_| {});
    pg.psql(
        "postgres",
        "BEGIN;
         INSERT INTO items SELECT g, repeat('s', 200), NULL, NULL FROM generate_series(1, 3000) g;
         SELECT pg_logical_emit_message(true, 'dbmazz-test', 'inside');
         COMMIT;
         SELECT pg_logical_emit_message(false, 'dbmazz-test', 'outside');
         BEGIN;
         INSERT INTO items SELECT g, repeat('r', 200), NULL, NULL FROM generate_series(5001, 8000) g;
         ROLLBACK;
         INSERT INTO items VALUES (9999, 'after', NULL, NULL);",
    )
    .unwrap();
    let evs = r
        .collect_until(Duration::from_secs(30), |e| {
            e.iter().any(|e| matches!(e, ReaderEvent::Change(c) if matches!(&c.op, ChangeOp::Insert{new} if new[0] == Value::Text(b"9999".to_vec().into()))))
                && commits(e).len() >= 2
        })
        .await;
    assert_eq!(r.status.borrow().protocol_version, 2);

    let starts = evs
        .iter()
        .filter(|e| matches!(e, ReaderEvent::StreamStart { .. }))
        .count();
    let stops = evs
        .iter()
        .filter(|e| matches!(e, ReaderEvent::StreamStop))
        .count();
    assert!(starts >= 2, "expected streamed segments, got {starts}");
    assert_eq!(starts, stops);
    let stream_commit = evs
        .iter()
        .find_map(|e| match e {
            ReaderEvent::StreamCommit(c) => Some(*c),
            _ => None,
        })
        .expect("stream commit");
    let streamed_rows = evs
        .iter()
        .filter(|e| matches!(e, ReaderEvent::Change(c) if c.xid == stream_commit.xid))
        .count();
    assert_eq!(streamed_rows, 3000);
    // The rolled-back transaction was streamed too, then aborted.
    let abort = evs
        .iter()
        .find_map(|e| match e {
            ReaderEvent::StreamAbort { xid, subxid } => Some((*xid, *subxid)),
            _ => None,
        })
        .expect("stream abort");
    assert_eq!(abort.0, abort.1);
    assert_ne!(abort.0, stream_commit.xid);
    // The first streamed segment of each transaction says so.
    let firsts: Vec<bool> = evs
        .iter()
        .filter_map(|e| match e {
            ReaderEvent::StreamStart { xid, first_segment } if *xid == stream_commit.xid => {
                Some(*first_segment)
            }
            _ => None,
        })
        .collect();
    assert!(firsts[0]);
    assert!(firsts[1..].iter().all(|f| !f));
    // Logical messages: the transactional one carries its xid, the other does not.
    let msgs: Vec<_> = evs
        .iter()
        .filter_map(|e| match e {
            ReaderEvent::Message {
                xid,
                transactional,
                prefix,
                content,
                ..
            } => Some((*xid, *transactional, prefix.clone(), content.clone())),
            _ => None,
        })
        .collect();
    assert!(
        msgs.contains(&(
            Some(stream_commit.xid),
            true,
            "dbmazz-test".into(),
            b"inside".to_vec()
        )),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| !m.1 && m.0.is_none() && m.3 == b"outside"),
        "{msgs:?}"
    );
    r.stop().await;
}

#[tokio::test]
async fn every_pgoutput_message_type_arrives_from_real_sql_and_parses() {
    // Raw stream, no decoder state: checks the parser against what the server really
    // sends, including Origin and Type which produce no reader event.
    let pg = PgCluster::start().unwrap();
    pg.psql("postgres", SCHEMA).unwrap();
    let cfg = source_config(&pg, &["items"]);
    ensure(&cfg).await;
    pg.psql(
        "postgres",
        "SELECT pg_replication_origin_create('upstream');
         SELECT pg_replication_origin_session_setup('upstream');
         INSERT INTO items VALUES (1, 'a', NULL, 'sad');
         SELECT pg_replication_origin_session_reset();
         UPDATE items SET name = 'b';
         DELETE FROM items;
         TRUNCATE items;
         SELECT pg_logical_emit_message(false, 'p', 'c');
         BEGIN; INSERT INTO items SELECT g, repeat('z', 300) FROM generate_series(1, 2000) g; COMMIT;
         BEGIN; INSERT INTO items SELECT g, repeat('z', 300) FROM generate_series(3001, 5000) g; ROLLBACK;",
    )
    .unwrap();
    let mut c = ReplicationConnection::connect(&cfg.conn).await.unwrap();
    c.start_replication(
        &cfg.slot_name,
        Lsn::ZERO,
        &[
            ("proto_version", "2".into()),
            ("publication_names", "\"dbmazz_pub\"".into()),
            ("messages", "true".into()),
            ("streaming", "true".into()),
        ],
    )
    .await
    .unwrap();
    let mut seen = BTreeSet::new();
    let mut in_stream = false;
    let want: BTreeSet<&str> = [
        "Begin",
        "Commit",
        "Origin",
        "Relation",
        "Type",
        "Insert",
        "Update",
        "Delete",
        "Truncate",
        "Message",
        "StreamStart",
        "StreamStop",
        "StreamCommit",
        "StreamAbort",
    ]
    .into();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !want.iter().all(|w| seen.contains(*w)) {
        let msg = tokio::time::timeout_at(deadline, c.next_message())
            .await
            .unwrap_or_else(|_| panic!("timed out; seen {seen:?}"))
            .unwrap()
            .unwrap();
        let ReplicationMessage::XLogData { data, .. } = msg else {
            continue;
        };
        let m = parse(&data, in_stream).unwrap();
        let name = match &m {
            PgOutputMessage::Begin { .. } => "Begin",
            PgOutputMessage::Commit { .. } => "Commit",
            PgOutputMessage::Origin { name, .. } => {
                assert_eq!(name, "upstream");
                "Origin"
            }
            PgOutputMessage::Relation { .. } => "Relation",
            PgOutputMessage::Type { name, .. } => {
                assert_eq!(name, "mood");
                "Type"
            }
            PgOutputMessage::Insert { .. } => "Insert",
            PgOutputMessage::Update { .. } => "Update",
            PgOutputMessage::Delete { .. } => "Delete",
            PgOutputMessage::Truncate { .. } => "Truncate",
            PgOutputMessage::Message { .. } => "Message",
            PgOutputMessage::StreamStart { .. } => {
                in_stream = true;
                "StreamStart"
            }
            PgOutputMessage::StreamStop => {
                in_stream = false;
                "StreamStop"
            }
            PgOutputMessage::StreamCommit { .. } => "StreamCommit",
            PgOutputMessage::StreamAbort { .. } => "StreamAbort",
            PgOutputMessage::Unknown { tag } => panic!("unknown tag {tag}"),
        };
        seen.insert(name);
    }
}

#[tokio::test]
async fn survives_idle_periods_longer_than_wal_sender_timeout() {
    let pg = PgCluster::start_with(Options::default().setting("wal_sender_timeout", "2s")).unwrap();
    pg.psql("postgres", SCHEMA).unwrap();
    let cfg = source_config(&pg, &["items"]);
    ensure(&cfg).await;
    // A long unprompted status interval: only the replies to keepalive requests keep
    // the connection alive.
    let mut r = start_reader(&cfg, Lsn::ZERO, |o| {
        o.status_interval = Duration::from_secs(60)
    });
    tokio::time::sleep(Duration::from_secs(10)).await;
    let st = r.status.borrow().clone();
    assert!(st.connected, "{st:?}");
    assert_eq!(st.reconnects, 0, "the connection was cut: {st:?}");
    assert!(st.keepalive_replies >= 3, "{st:?}");
    let log = pg.log();
    assert!(
        !log.contains("terminating walsender process due to replication timeout"),
        "{log}"
    );
    pg.psql("postgres", "INSERT INTO items VALUES (7, 'late')")
        .unwrap();
    r.collect_until(Duration::from_secs(10), |e| commits(e).len() == 1)
        .await;
    r.stop().await;
}

#[tokio::test]
async fn keepalives_are_answered_while_the_consumer_is_stuck() {
    let pg = PgCluster::start_with(Options::default().setting("wal_sender_timeout", "2s")).unwrap();
    pg.psql("postgres", SCHEMA).unwrap();
    let cfg = source_config(&pg, &["items"]);
    ensure(&cfg).await;
    let mut r = start_reader(&cfg, Lsn::ZERO, |o| {
        o.status_interval = Duration::from_secs(60);
        o.max_batch_events = 10;
    });
    // Fill the channel (capacity 8) and never read it for 8 s.
    pg.psql(
        "postgres",
        "INSERT INTO items SELECT g FROM generate_series(1, 2000) g",
    )
    .unwrap();
    let held = eventually(Duration::from_secs(10), || {
        r.status.borrow().held_back.then_some(())
    })
    .await;
    assert!(
        held.is_some(),
        "reader never held back: {:?}",
        r.status.borrow()
    );
    tokio::time::sleep(Duration::from_secs(8)).await;
    let st = r.status.borrow().clone();
    assert!(st.connected && st.reconnects == 0, "{st:?}");
    assert!(!pg.log().contains("replication timeout"));
    // Now drain: all 2000 rows arrive, once.
    let evs = r
        .collect_until(Duration::from_secs(20), |e| commits(e).len() == 1)
        .await;
    let rows = evs
        .iter()
        .filter(|e| matches!(e, ReaderEvent::Change(_)))
        .count();
    assert_eq!(rows, 2000);
    r.stop().await;
}

#[tokio::test]
async fn restart_from_an_lsn_replays_nothing_before_and_skips_nothing_after() {
    let pg = PgCluster::start().unwrap();
    pg.psql("postgres", SCHEMA).unwrap();
    let cfg = source_config(&pg, &["items"]);
    ensure(&cfg).await;
    let mut r = start_reader(&cfg, Lsn::ZERO, |_| {});
    for i in 1..=3 {
        pg.psql(
            "postgres",
            &format!("INSERT INTO items VALUES ({i}, 'r{i}')"),
        )
        .unwrap();
    }
    let evs = r
        .collect_until(Duration::from_secs(10), |e| commits(e).len() == 3)
        .await;
    let first = commits(&evs)[0];
    r.stop().await;

    // Resume after the first transaction: rows 2 and 3 again, then new ones, never 1.
    pg.psql("postgres", "INSERT INTO items VALUES (4, 'r4')")
        .unwrap();
    let mut r = start_reader(&cfg, first.end_lsn, |_| {});
    let evs = r
        .collect_until(Duration::from_secs(10), |e| commits(e).len() == 3)
        .await;
    let ids: Vec<String> = evs
        .iter()
        .filter_map(|e| match e {
            ReaderEvent::Change(c) => match &c.op {
                ChangeOp::Insert { new } => Some(text(&new[0])),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(ids, vec!["2", "3", "4"]);
    // Confirm (as the loader would): the slot's confirmed_flush_lsn follows flush_lsn.
    let last = *commits(&evs).last().unwrap();
    r.confirmed.send(last.end_lsn).unwrap();
    let c = client::connect(&cfg.conn).await.unwrap();
    let mut confirmed = None;
    for _ in 0..100 {
        confirmed = setup::slot_confirmed_flush(&c, &cfg.slot_name)
            .await
            .unwrap();
        if confirmed == Some(last.end_lsn) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(confirmed, Some(last.end_lsn));
    let _ = &r.paused;
    r.stop().await;
}

#[tokio::test]
async fn confirmed_flush_lsn_never_passes_what_was_confirmed() {
    let pg = PgCluster::start().unwrap();
    pg.psql("postgres", SCHEMA).unwrap();
    let cfg = source_config(&pg, &["items"]);
    ensure(&cfg).await;
    let c = client::connect(&cfg.conn).await.unwrap();
    let initial = setup::slot_confirmed_flush(&c, &cfg.slot_name)
        .await
        .unwrap();
    let mut r = start_reader(&cfg, Lsn::ZERO, |o| {
        o.status_interval = Duration::from_millis(200)
    });
    for i in 1..=5 {
        pg.psql("postgres", &format!("INSERT INTO items VALUES ({i})"))
            .unwrap();
    }
    let evs = r
        .collect_until(Duration::from_secs(10), |e| commits(e).len() == 5)
        .await;
    // Received (write_lsn) moves; nothing was confirmed, so the slot must not move
    // through several keepalive/status periods.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(r.status.borrow().received_lsn >= commits(&evs)[4].end_lsn);
    assert_eq!(
        setup::slot_confirmed_flush(&c, &cfg.slot_name)
            .await
            .unwrap(),
        initial
    );
    r.stop().await;
}

#[tokio::test]
async fn an_idle_source_lets_the_slot_follow_the_server_once_everything_is_confirmed() {
    let pg = PgCluster::start().unwrap();
    pg.psql("postgres", SCHEMA).unwrap();
    pg.psql("postgres", "CREATE TABLE unpublished (id int, pad text)")
        .unwrap();
    let mut cfg = source_config(&pg, &["items"]);
    // Protocol 1: PostgreSQL skips transactions without published changes entirely (a
    // streamed one would arrive empty and need confirming, as the spool does).
    cfg.streaming = false;
    ensure(&cfg).await;
    let c = client::connect(&cfg.conn).await.unwrap();
    let mut r = start_reader(&cfg, Lsn::ZERO, |o| {
        o.status_interval = Duration::from_millis(200)
    });
    pg.psql("postgres", "INSERT INTO items VALUES (1)").unwrap();
    let evs = r
        .collect_until(Duration::from_secs(10), |e| commits(e).len() == 1)
        .await;
    let commit = commits(&evs)[0];

    // Not confirmed yet: WAL elsewhere must not move the slot past the unloaded change.
    pg.psql(
        "postgres",
        "INSERT INTO unpublished SELECT g, repeat('p', 100) FROM generate_series(1, 2000) g",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let slot = setup::slot_confirmed_flush(&c, &cfg.slot_name)
        .await
        .unwrap()
        .unwrap();
    assert!(
        slot < commit.end_lsn,
        "slot at {slot} passed the unconfirmed commit {}",
        commit.end_lsn
    );

    // Confirmed: now the slot follows the server's position beyond the last change.
    r.confirmed.send(commit.end_lsn).unwrap();
    pg.psql(
        "postgres",
        "INSERT INTO unpublished SELECT g, repeat('p', 100) FROM generate_series(1, 2000) g",
    )
    .unwrap();
    let server: Lsn = pg
        .psql("postgres", "SELECT pg_current_wal_lsn()")
        .unwrap()
        .parse()
        .unwrap();
    let mut slot = Lsn::ZERO;
    for _ in 0..200 {
        slot = setup::slot_confirmed_flush(&c, &cfg.slot_name)
            .await
            .unwrap()
            .unwrap();
        if slot > commit.end_lsn && slot.0 + 1024 >= server.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        slot > commit.end_lsn,
        "idle slot did not follow the server: {slot} vs commit {} (server {server}); reader: {:?}",
        commit.end_lsn,
        r.status.borrow()
    );
    r.stop().await;
}

#[tokio::test]
async fn a_lost_connection_is_reestablished_and_resumes_after_the_last_transaction() {
    let pg = PgCluster::start().unwrap();
    pg.psql("postgres", SCHEMA).unwrap();
    let mut cfg = source_config(&pg, &["items"]);
    cfg.streaming = false;
    ensure(&cfg).await;
    let mut r = start_reader(&cfg, Lsn::ZERO, |o| {
        o.retry = RetryPolicy::new(Duration::from_millis(100), Duration::from_millis(500));
    });
    for i in 1..=3 {
        pg.psql("postgres", &format!("INSERT INTO items VALUES ({i})"))
            .unwrap();
    }
    let mut evs = r
        .collect_until(Duration::from_secs(10), |e| commits(e).len() == 3)
        .await;
    // Kill the walsender: the reader must reconnect on its own.
    pg.psql(
        "postgres",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_replication",
    )
    .unwrap();
    for i in 4..=6 {
        pg.psql("postgres", &format!("INSERT INTO items VALUES ({i})"))
            .unwrap();
    }
    evs.extend(
        r.collect_until(Duration::from_secs(20), |e| commits(e).len() >= 3)
            .await,
    );
    let st = r.status.borrow().clone();
    assert!(st.reconnects >= 1, "{st:?}");
    // A Restart marker precedes the resumed stream, and every row arrives exactly once.
    let restart = evs
        .iter()
        .position(|e| matches!(e, ReaderEvent::Restart { .. }))
        .expect("no Restart event after the reconnect");
    let ids: Vec<String> = evs
        .iter()
        .filter_map(|e| match e {
            ReaderEvent::Change(c) => match &c.op {
                ChangeOp::Insert { new } => Some(text(&new[0])),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(
        ids,
        vec!["1", "2", "3", "4", "5", "6"],
        "restart at index {restart}"
    );
    r.stop().await;
}

#[tokio::test]
async fn a_held_back_batch_shows_as_pending_and_is_handed_over_even_while_paused() {
    let pg = PgCluster::start().unwrap();
    pg.psql("postgres", SCHEMA).unwrap();
    let mut cfg = source_config(&pg, &["items"]);
    cfg.streaming = false;
    ensure(&cfg).await;
    // Batches of at most 5 events; every transaction is Begin, Insert, Commit, so each
    // batch holds at least one commit. The channel holds 8 batches.
    let mut r = start_reader(&cfg, Lsn::ZERO, |o| o.max_batch_events = 5);
    let script: String = (1..=200)
        .map(|i| format!("INSERT INTO items VALUES ({i});\n"))
        .collect();
    pg.psql("postgres", &script).unwrap();

    // Nobody reads: 8 batches fill the channel, the 9th is held back.
    let held = eventually(Duration::from_secs(20), || {
        let s = r.status.borrow();
        (s.pending_batch && s.held_back).then(|| s.clone())
    })
    .await;
    let held = held.unwrap_or_else(|| panic!("no batch held back: {:?}", r.status.borrow()));

    // Pause, then take the 8 queued batches: the held one is handed over although the
    // reader is paused, and nothing more is read.
    r.paused.send(true).unwrap();
    let mut queued = Vec::new();
    let mut evs = Vec::new();
    for i in 0..9 {
        let b = tokio::time::timeout(Duration::from_secs(10), r.rx.recv())
            .await
            .expect("the held batch was not handed over while paused")
            .expect("reader ended");
        if i < 8 {
            queued.extend(b.iter().cloned());
        }
        evs.extend(b);
    }
    // When the batch was held, exactly the 8 queued batches were handed over. (A batch
    // ends where the socket had nothing more buffered, so the held one may hold no
    // commit at all.)
    let queued_end = commits(&queued)
        .last()
        .expect("commits in the queued batches")
        .end_lsn;
    assert_eq!(
        held.last_commit_end, queued_end,
        "last_commit_end is not the last commit handed over: {held:?}"
    );
    let last_handed = commits(&evs).last().expect("commits").end_lsn;
    assert!(held.last_commit_end <= last_handed);
    let after = eventually(Duration::from_secs(10), || {
        let s = r.status.borrow();
        (!s.pending_batch).then(|| s.clone())
    })
    .await
    .unwrap_or_else(|| panic!("still pending after the hand-over: {:?}", r.status.borrow()));
    assert!(after.held_back, "paused must hold reading back: {after:?}");
    assert_eq!(
        after.last_commit_end, last_handed,
        "last_commit_end must be the last commit handed over: {after:?}"
    );
    assert!(
        matches!(r.rx.try_recv(), Err(mpsc::error::TryRecvError::Empty)),
        "the reader read while paused"
    );

    // Resume: the rest arrives, every row once.
    r.paused.send(false).unwrap();
    let done = commits(&evs).len();
    evs.extend(
        r.collect_until(Duration::from_secs(20), |e| done + commits(e).len() == 200)
            .await,
    );
    let rows = evs
        .iter()
        .filter(|e| matches!(e, ReaderEvent::Change(_)))
        .count();
    assert_eq!(rows, 200);
    let last = commits(&evs).last().unwrap().end_lsn;
    let settled = eventually(Duration::from_secs(10), || {
        let s = r.status.borrow();
        (!s.pending_batch && s.last_commit_end == last).then_some(())
    })
    .await;
    assert!(settled.is_some(), "{:?}", r.status.borrow());
    r.stop().await;
}

#[tokio::test]
async fn changes_of_every_partition_arrive_under_the_partitioned_root() {
    let pg = PgCluster::start().unwrap();
    pg.psql(
        "postgres",
        "CREATE TABLE m (id int, k int, v text, PRIMARY KEY (id, k)) PARTITION BY RANGE (k);
         CREATE TABLE m_low PARTITION OF m FOR VALUES FROM (0) TO (100);
         CREATE TABLE m_high PARTITION OF m FOR VALUES FROM (100) TO (200) PARTITION BY RANGE (k);
         CREATE TABLE m_high_a PARTITION OF m_high FOR VALUES FROM (100) TO (150);
         CREATE TABLE m_high_b PARTITION OF m_high FOR VALUES FROM (150) TO (200);",
    )
    .unwrap();
    let mut cfg = source_config(&pg, &["m"]);
    cfg.streaming = false;
    ensure(&cfg).await;
    let root: u32 = pg
        .psql("postgres", "SELECT 'm'::regclass::oid")
        .unwrap()
        .parse()
        .unwrap();
    let mut r = start_reader(&cfg, Lsn::ZERO, |_| {});
    // (PostgreSQL does not publish a TRUNCATE of a single partition when publishing
    // through the root: pgoutput skips it. Only the root's TRUNCATE arrives.)
    pg.psql(
        "postgres",
        "INSERT INTO m VALUES (1, 10, 'low'), (2, 120, 'high a'), (3, 170, 'high b');
         INSERT INTO m_high_b VALUES (4, 180, 'straight into a partition');
         UPDATE m SET v = 'moved', k = 130 WHERE id = 1;
         DELETE FROM m WHERE id = 3;
         TRUNCATE m;",
    )
    .unwrap();
    let evs = r
        .collect_until(Duration::from_secs(20), |e| commits(e).len() == 5)
        .await;
    let rels: Vec<_> = evs
        .iter()
        .filter_map(|e| match e {
            ReaderEvent::Relation(r) => Some((r.id, r.namespace.clone(), r.name.clone())),
            _ => None,
        })
        .collect();
    // The root's schema comes first; PostgreSQL also sends each leaf's own Relation
    // (pgoutput's maybe_send_schema), but no change refers to it.
    assert_eq!(
        rels.first(),
        Some(&(root, "public".to_string(), "m".to_string())),
        "{rels:?}"
    );
    let changes: Vec<_> = evs
        .iter()
        .filter_map(|e| match e {
            ReaderEvent::Change(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    // 4 inserts, the cross-partition update (delete + insert), 1 delete, the truncate.
    assert!(changes.len() >= 7, "{changes:#?}");
    for c in &changes {
        assert_eq!(c.relation, root, "a change under a partition: {c:?}");
        if let ChangeOp::Truncate { relations, .. } = &c.op {
            assert_eq!(relations, &vec![root], "{c:?}");
        }
    }
    let inserted: BTreeSet<String> = changes
        .iter()
        .filter_map(|c| match &c.op {
            ChangeOp::Insert { new } => Some(text(&new[0])),
            _ => None,
        })
        .collect();
    assert_eq!(
        inserted,
        ["1", "2", "3", "4"].iter().map(|s| s.to_string()).collect()
    );
    r.stop().await;
}
