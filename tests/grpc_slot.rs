//! The slot poller against a real PostgreSQL: figures read from pg_replication_slots,
//! lag from the server's WAL position, a missing slot and a lost slot reported as
//! errors, and the watch channel updated periodically. The poller never drops a slot.

use std::time::Duration;

use dbmazz::connectors::sources::postgres::client;
use dbmazz::connectors::sources::postgres::conninfo::PgConnInfo;
use dbmazz::grpc::slot::{self, SlotPollerOptions};
use pg_scratch::{Options, PgCluster};
use secrecy::SecretString;

fn conninfo(pg: &PgCluster) -> PgConnInfo {
    PgConnInfo::parse(&SecretString::from(pg.socket_conn_string("postgres"))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poller_reads_the_slot_and_reports_missing_and_lost() {
    let pg =
        PgCluster::start_with(Options::default().setting("max_slot_wal_keep_size", "1MB")).unwrap();
    pg.psql(
        "postgres",
        "SELECT pg_create_logical_replication_slot('s_poll', 'pgoutput');
         CREATE TABLE t (id int primary key, v text);",
    )
    .unwrap();
    let info = conninfo(&pg);
    let c = client::connect(&info).await.unwrap();

    let h = slot::poll_once(&c, "s_poll").await.unwrap();
    assert!(h.exists);
    assert!(!h.active);
    assert_eq!(h.slot_name, "s_poll");
    assert!(h.error.is_none(), "{:?}", h.error);
    let confirmed = h.confirmed_flush_lsn.expect("confirmed_flush_lsn");
    let restart = h.restart_lsn.expect("restart_lsn");
    assert!(restart <= confirmed);
    let server = h.server_lsn.expect("server lsn");
    assert!(server >= confirmed);
    assert_eq!(h.lag_bytes, Some(server.0 - confirmed.0));
    assert!(
        matches!(h.wal_status.as_deref(), Some("reserved") | Some("extended")),
        "{h:?}"
    );
    assert!(
        h.safe_wal_size.is_some(),
        "max_slot_wal_keep_size is set: {h:?}"
    );
    assert!(h.checked_at_unix_ms > 0);
    // The same text PostgreSQL shows.
    let row = c
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 's_poll'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(confirmed.to_string(), row.get::<_, String>(0));

    // WAL written after the slot: the lag grows.
    pg.psql(
        "postgres",
        "INSERT INTO t SELECT g, repeat('x', 100) FROM generate_series(1, 2000) g;",
    )
    .unwrap();
    let h2 = slot::poll_once(&c, "s_poll").await.unwrap();
    assert!(
        h2.lag_bytes.unwrap() > h.lag_bytes.unwrap() + 100_000,
        "{h2:?}"
    );
    assert_eq!(h2.confirmed_flush_lsn, Some(confirmed));

    // A missing slot is an error, not a panic.
    let m = slot::poll_once(&c, "no_such_slot").await.unwrap();
    assert!(!m.exists);
    assert!(m.error.unwrap().contains("does not exist"));
    assert!(m.server_lsn.is_some());

    // The spawned poller publishes on its watch channel.
    let (sd_tx, sd_rx) = tokio::sync::watch::channel(false);
    let (mut rx, task) = slot::spawn(
        info.clone(),
        "s_poll",
        SlotPollerOptions {
            interval: Duration::from_millis(100),
            ..SlotPollerOptions::default()
        },
        sd_rx,
    );
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|h| h.exists))
        .await
        .unwrap()
        .unwrap();
    let first = rx.borrow().checked_at_unix_ms;
    tokio::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|h| h.checked_at_unix_ms > first),
    )
    .await
    .expect("polled again")
    .unwrap();

    // Past max_slot_wal_keep_size, with checkpoints, the slot's WAL is removed.
    for _ in 0..4 {
        pg.psql(
            "postgres",
            "INSERT INTO t SELECT g, repeat('y', 100) FROM generate_series(100000, 102000) g
               ON CONFLICT (id) DO UPDATE SET v = excluded.v;
             SELECT pg_switch_wal(); CHECKPOINT;",
        )
        .unwrap();
    }
    let lost = tokio::time::timeout(
        Duration::from_secs(20),
        rx.wait_for(|h| matches!(h.wal_status.as_deref(), Some("lost") | Some("unreserved"))),
    )
    .await
    .expect("the slot's WAL status changes past max_slot_wal_keep_size")
    .unwrap()
    .clone();
    if lost.wal_status.as_deref() == Some("lost") {
        assert!(lost.error.as_deref().unwrap().contains("lost"), "{lost:?}");
    } else {
        assert!(lost.safe_wal_size.unwrap() <= 0, "{lost:?}");
    }
    sd_tx.send_replace(true);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the poller stops at shutdown")
        .unwrap();
    // It only reads: the slot is still there.
    let n: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 's_poll'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}
