//! The replication slot poller: every few seconds reads the slot's row of
//! `pg_replication_slots` (active, confirmed_flush_lsn, restart_lsn, wal_status,
//! safe_wal_size) and the server's WAL position over an ordinary connection, and
//! publishes a [`SlotHealth`] on a watch channel. It only reads: it never creates,
//! advances or drops the slot (invariant 7).
//!
//! It warns when `safe_wal_size` falls below a threshold or `wal_status` becomes
//! `unreserved`, and reports `lost` as an error.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::Client;
use tracing::{debug, error, warn};

use super::state::SlotHealth;
use crate::connectors::sources::postgres::client;
use crate::connectors::sources::postgres::conninfo::PgConnInfo;
use crate::core::Lsn;

/// Options of the poller.
#[derive(Debug, Clone)]
pub struct SlotPollerOptions {
    pub interval: Duration,
    /// Warn when `safe_wal_size` is below this many bytes.
    pub warn_safe_wal_bytes: i64,
    /// Repeat a standing warning at most this often.
    pub warn_every: Duration,
}

impl Default for SlotPollerOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            warn_safe_wal_bytes: 1 << 30,
            warn_every: Duration::from_secs(60),
        }
    }
}

/// Query for PostgreSQL 13 and later (wal_status, safe_wal_size).
const QUERY_13: &str = "SELECT s.active, s.confirmed_flush_lsn::text, s.restart_lsn::text, \
     s.wal_status, s.safe_wal_size, w.lsn::text, \
     CASE WHEN s.confirmed_flush_lsn IS NULL THEN NULL \
          ELSE GREATEST(w.lsn - s.confirmed_flush_lsn, 0)::bigint END \
     FROM (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() \
                       ELSE pg_current_wal_lsn() END AS lsn) w \
     LEFT JOIN pg_replication_slots s ON s.slot_name = $1";

/// Query for older servers (no wal_status or safe_wal_size).
const QUERY_OLD: &str = "SELECT s.active, s.confirmed_flush_lsn::text, s.restart_lsn::text, \
     NULL::text, NULL::bigint, w.lsn::text, \
     CASE WHEN s.confirmed_flush_lsn IS NULL THEN NULL \
          ELSE GREATEST(w.lsn - s.confirmed_flush_lsn, 0)::bigint END \
     FROM (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() \
                       ELSE pg_current_wal_lsn() END AS lsn) w \
     LEFT JOIN pg_replication_slots s ON s.slot_name = $1";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn parse_lsn(s: Option<String>) -> Option<Lsn> {
    s.and_then(|s| s.parse().ok())
}

/// Reads the slot's health once over `client`.
pub async fn poll_once(
    client: &Client,
    slot_name: &str,
) -> Result<SlotHealth, tokio_postgres::Error> {
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await?
        .get(0);
    let q = if version >= 130000 {
        QUERY_13
    } else {
        QUERY_OLD
    };
    let row = client.query_one(q, &[&slot_name]).await?;
    let active: Option<bool> = row.get(0);
    let exists = active.is_some();
    let wal_status: Option<String> = row.get(3);
    let lag: Option<i64> = row.get(6);
    let error = if !exists {
        Some(format!("replication slot {slot_name:?} does not exist"))
    } else if wal_status.as_deref() == Some("lost") {
        Some(format!(
            "replication slot {slot_name:?} is lost: PostgreSQL removed WAL it still needed \
             (max_slot_wal_keep_size); changes were lost, the slot must be recreated and \
             the tables reloaded"
        ))
    } else {
        None
    };
    Ok(SlotHealth {
        slot_name: slot_name.to_string(),
        exists,
        active: active.unwrap_or(false),
        confirmed_flush_lsn: parse_lsn(row.get(1)),
        restart_lsn: parse_lsn(row.get(2)),
        wal_status,
        safe_wal_size: row.get(4),
        lag_bytes: lag.map(|l| l.max(0) as u64),
        server_lsn: parse_lsn(row.get(5)),
        checked_at_unix_ms: now_ms(),
        error,
    })
}

/// Tracks which warnings were given, so a standing condition is repeated only every
/// `warn_every`.
#[derive(Default)]
struct Warned {
    low: Option<std::time::Instant>,
    unreserved: Option<std::time::Instant>,
    lost: bool,
    missing: bool,
}

fn due(last: &mut Option<std::time::Instant>, every: Duration) -> bool {
    let now = std::time::Instant::now();
    match last {
        Some(t) if now.duration_since(*t) < every => false,
        _ => {
            *last = Some(now);
            true
        }
    }
}

fn warn_about(h: &SlotHealth, opts: &SlotPollerOptions, w: &mut Warned) {
    let slot = &h.slot_name;
    if !h.exists {
        if !w.missing {
            error!(slot = %slot, "the replication slot does not exist");
        }
        w.missing = true;
        return;
    }
    w.missing = false;
    match h.wal_status.as_deref() {
        Some("lost") => {
            if !w.lost {
                error!(slot = %slot, "the replication slot is lost: PostgreSQL removed WAL it still needed; the slot must be recreated and the tables reloaded");
            }
            w.lost = true;
            return;
        }
        Some("unreserved") => {
            if due(&mut w.unreserved, opts.warn_every) {
                warn!(slot = %slot, safe_wal_size = ?h.safe_wal_size, lag_bytes = ?h.lag_bytes, "the replication slot's WAL is unreserved: it will be lost at the next checkpoint unless the daemon catches up");
            }
        }
        _ => w.unreserved = None,
    }
    w.lost = false;
    match h.safe_wal_size {
        Some(s) if s < opts.warn_safe_wal_bytes => {
            if due(&mut w.low, opts.warn_every) {
                warn!(slot = %slot, safe_wal_size = s, lag_bytes = ?h.lag_bytes, "the replication slot is close to max_slot_wal_keep_size: little WAL is left before it is lost");
            }
        }
        _ => w.low = None,
    }
}

/// Runs the poller until `shutdown` is true, publishing on `tx`. Connection failures are
/// published as errors (keeping the last known figures) and retried at the next tick.
pub async fn run(
    conn: PgConnInfo,
    slot_name: String,
    opts: SlotPollerOptions,
    tx: watch::Sender<SlotHealth>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut client: Option<Client> = None;
    let mut warned = Warned::default();
    let mut tick = tokio::time::interval(opts.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = shutdown.wait_for(|v| *v) => {
                let _ = r;
                return;
            }
        }
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = match client::connect(&conn).await {
                Ok(c) => Some(c),
                Err(e) => {
                    debug!(error = %e, "slot poller: cannot connect");
                    let msg = format!("slot poller: cannot connect to PostgreSQL: {e}");
                    tx.send_modify(|h| {
                        h.slot_name = slot_name.clone();
                        h.checked_at_unix_ms = now_ms();
                        h.error = Some(msg);
                    });
                    continue;
                }
            };
        }
        let Some(c) = client.as_ref() else { continue };
        match poll_once(c, &slot_name).await {
            Ok(h) => {
                warn_about(&h, &opts, &mut warned);
                tx.send_replace(h);
            }
            Err(e) => {
                let msg = format!("slot poller: query failed: {e}");
                debug!(error = %e, "slot poller: query failed");
                tx.send_modify(|h| {
                    h.slot_name = slot_name.clone();
                    h.checked_at_unix_ms = now_ms();
                    h.error = Some(msg);
                });
                client = None;
            }
        }
    }
}

/// Spawns the poller; returns the receiver to put into the `DaemonHandle` and the task.
pub fn spawn(
    conn: PgConnInfo,
    slot_name: &str,
    opts: SlotPollerOptions,
    shutdown: watch::Receiver<bool>,
) -> (watch::Receiver<SlotHealth>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(SlotHealth {
        slot_name: slot_name.to_string(),
        ..SlotHealth::default()
    });
    let task = tokio::spawn(run(conn, slot_name.to_string(), opts, tx, shutdown));
    (rx, task)
}
