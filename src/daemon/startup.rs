//! Startup steps: the spool, the source (waiting out PostgreSQL being down or starting,
//! with backoff, for as long as it takes; permanent problems end the daemon), the sink.
//! Each step says what it does in the lifecycle's `activity`.
//!
//! Invariant 12: before anything is created on the source, the spool's recorded source
//! (system identifier, database, slot, timeline) and where it stands are checked against
//! the server and its slot ([`check_source`]); a spool of another source, or a slot that
//! lost changes the spool never received, is refused before a new slot could hide it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::supervisor::{Life, Supervisor};
use super::task_failed;
use crate::cli::CliError;
use crate::config::{Config, SinkConfig};
use crate::connectors::sinks::starrocks::StarRocksLoadSink;
use crate::connectors::sources::postgres::replication::ReplicationConnection;
use crate::connectors::sources::postgres::setup::{SetupOutcome, SourceReport};
use crate::connectors::sources::postgres::{client, setup, SourceError};
use crate::core::retry::RetryPolicy;
use crate::core::Lsn;
use crate::lifecycle::{self, Dependency, SinkStartup};
use crate::spool::identity::ACCEPT_GAP_SETTING;
use crate::spool::{
    check_source, Gap, SlotFinding, SourceDecision, SourceIdentity, Spool, SpoolOptions,
    SpoolPosition,
};

/// How long one startup attempt (connect, inspect, create publication and slot) may take.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(60);

/// Backoff between startup attempts while a dependency is unreachable.
fn startup_retry() -> RetryPolicy {
    RetryPolicy::new(Duration::from_millis(500), Duration::from_secs(30))
}

/// What source setup found.
pub(super) struct SourceReady {
    pub(super) source: SourceIdentity,
    pub(super) slot_confirmed: Option<Lsn>,
}

/// Why one attempt at the source failed.
enum AttemptError {
    /// Transient or permanent, as [`SourceError::is_transient`] says.
    Source(SourceError),
    /// Permanent whatever PostgreSQL does: a refused spool, a spool that cannot record
    /// its source.
    Fatal(CliError),
}

impl From<SourceError> for AttemptError {
    fn from(e: SourceError) -> Self {
        AttemptError::Source(e)
    }
}

/// What the server shows of the configured slot, from the report.
fn slot_finding(report: &SourceReport) -> Result<SlotFinding, SourceError> {
    let Some(slot) = &report.slot else {
        return Ok(SlotFinding::Missing);
    };
    let confirmed_flush = match slot.confirmed_flush_lsn.as_deref() {
        // A logical slot being created has none yet: it cannot have skipped anything.
        None => Lsn::ZERO,
        Some(text) => text.parse().map_err(|_| {
            SourceError::Protocol(format!(
                "slot {} has an unreadable confirmed_flush_lsn {text:?}",
                slot.name
            ))
        })?,
    };
    Ok(SlotFinding::Present { confirmed_flush })
}

/// One attempt at the source: connect, check (every problem is permanent), decide
/// whether this spool may be used with this source and slot (before a missing slot is
/// created: invariant 12), publication and slot (never dropped), record the source.
async fn prepare_source(cfg: &Config, spool: &Spool) -> Result<SourceReady, AttemptError> {
    let pg = client::connect(&cfg.source.conn).await?;
    let mut repl = ReplicationConnection::connect(&cfg.source.conn).await?;
    let report = setup::inspect(&pg, &cfg.source).await?;
    report.ready()?;
    let (observed, slot) = observe_source(&mut repl, &report).await?;
    let recorded = spool.source_identity();
    let position = spool_position(cfg, spool);
    let decision = check_source(
        recorded.as_ref(),
        position,
        &observed,
        slot,
        cfg.spool.accept_slot_gap,
    )
    .map_err(|refused| AttemptError::Fatal(CliError::RefusedSpool(Box::new(refused))))?;
    let outcome = setup::apply(&pg, &mut repl, &cfg.source, &report).await?;
    repl.close().await;
    if decision.needs_bind() {
        let (spool, id) = (spool.clone(), observed.clone());
        tokio::task::spawn_blocking(move || spool.bind_source(&id))
            .await
            .map_err(|e| AttemptError::Fatal(task_failed("spool", e)))?
            .map_err(|e| AttemptError::Fatal(CliError::Spool(e)))?;
    }
    report_decision(&decision, &observed, position, &outcome);
    let slot_confirmed = setup::slot_confirmed_flush(&pg, &cfg.source.slot_name).await?;
    Ok(SourceReady {
        source: observed,
        slot_confirmed,
    })
}

/// The source as the server shows it (IDENTIFY_SYSTEM: system identifier, timeline,
/// database; the configured slot) and what it shows of the slot, for [`check_source`].
pub async fn observe_source(
    repl: &mut ReplicationConnection,
    report: &SourceReport,
) -> Result<(SourceIdentity, SlotFinding), SourceError> {
    let system = repl.identify_system().await?;
    let observed = SourceIdentity {
        system_identifier: system.system_id,
        database: system.dbname.unwrap_or_else(|| report.database.clone()),
        slot: report.slot_name.clone(),
        timeline: system.timeline,
    };
    Ok((observed, slot_finding(report)?))
}

/// Where the spool stands, with what was acknowledged under the configured ack policy.
pub fn spool_position(cfg: &Config, spool: &Spool) -> SpoolPosition {
    let mut p = spool.position();
    p.acknowledged = lifecycle::acknowledged(cfg.pipeline.ack_policy, p.confirmed, p.resume);
    p
}

/// Says what the source check decided; a failover and an accepted gap loudly.
fn report_decision(
    decision: &SourceDecision,
    observed: &SourceIdentity,
    position: SpoolPosition,
    outcome: &SetupOutcome,
) {
    let resume = position.resume;
    match decision {
        SourceDecision::Proceed => {
            info!(source = %observed, "the spool belongs to this source and its slot lines up")
        }
        SourceDecision::Bind => {
            info!(source = %observed, "a new spool: recorded the source it belongs to")
        }
        SourceDecision::Adopt => info!(
            source = %observed,
            %resume,
            "recorded the source of a spool written before sources were recorded (its slot lines up)"
        ),
        SourceDecision::Failover { from, to } => warn!(
            source = %observed,
            from_timeline = from,
            to_timeline = to,
            %resume,
            "the source is on a later timeline (a failover or promotion) and its slot survived, lining up with the spool; recorded the new timeline"
        ),
        SourceDecision::AcceptGap(Gap::SlotMissing { resume }) => {
            let new_slot = outcome
                .slot_consistent_point
                .map_or_else(|| "its consistent point".to_string(), |l| l.to_string());
            warn!(
                source = %observed,
                %resume,
                new_slot_at = %new_slot,
                confirmed = %position.confirmed,
                "{ACCEPT_GAP_SETTING}: the slot was missing and was created anew; changes between {resume} and {new_slot} were lost with the old slot and are NOT in the target. Re-load the affected tables if they matter, and remove ACCEPT_SLOT_GAP so that a future gap is refused"
            )
        }
        SourceDecision::AcceptGap(Gap::SlotAhead {
            resume,
            slot_confirmed,
        }) => warn!(
            source = %observed,
            %resume,
            %slot_confirmed,
            confirmed = %position.confirmed,
            "{ACCEPT_GAP_SETTING}: the slot had confirmed past the spool's resume point; changes between {resume} and {slot_confirmed} are NOT in the target. Re-load the affected tables if they matter, and remove ACCEPT_SLOT_GAP so that a future gap is refused"
        ),
    }
}

/// Sets the source up, waiting out PostgreSQL being down or starting (transient errors,
/// typed by [`SourceError::is_transient`]) with backoff for as long as it takes; a
/// permanent error (credentials, privileges, wal_level, a refused spool, ...) ends the
/// daemon. `None`: a signal or a Stop request came first.
pub(super) async fn wait_for_source(
    cfg: &Config,
    spool: &Spool,
    sup: &mut Supervisor,
) -> Result<Option<SourceReady>, CliError> {
    let mut backoff = startup_retry().backoff();
    loop {
        let attempt = async {
            match tokio::time::timeout(ATTEMPT_LIMIT, prepare_source(cfg, spool)).await {
                Ok(Ok(ready)) => Ok(Ok(ready)),
                Ok(Err(AttemptError::Source(e))) if e.is_transient() => Ok(Err(e.to_string())),
                Ok(Err(AttemptError::Source(e))) => Err(CliError::Source(e)),
                Ok(Err(AttemptError::Fatal(e))) => Err(e),
                Err(_) => Ok(Err(format!(
                    "PostgreSQL did not answer within {}s",
                    ATTEMPT_LIMIT.as_secs()
                ))),
            }
        };
        let outcome = tokio::select! {
            r = attempt => r?,
            why = sup.interrupted() => {
                info!(why, "stopped while starting");
                return Ok(None);
            }
        };
        let error = match outcome {
            Ok(ready) => {
                if let Some(o) = sup.life.reached(Dependency::Postgres) {
                    info!(
                        failed_attempts = o.attempts,
                        "PostgreSQL is reachable; starting"
                    );
                }
                return Ok(Some(ready));
            }
            Err(error) => error,
        };
        sup.life.activity("waiting for PostgreSQL");
        if !wait_out_postgres(sup, &mut backoff, error, "PostgreSQL").await {
            return Ok(None);
        }
    }
}

/// PostgreSQL (`what` of it) could not be reached: records the outage, says so, and
/// waits the next backoff step. False when a signal or a Stop request came first.
async fn wait_out_postgres(
    sup: &mut Supervisor,
    backoff: &mut crate::core::retry::Backoff,
    error: String,
    what: &str,
) -> bool {
    let o = sup.life.unreachable(Dependency::Postgres, error);
    let delay = backoff
        .next_delay()
        .unwrap_or_else(|| startup_retry().max_delay);
    warn!(error = %o.last_error, attempt = o.attempts, retry_in = ?delay, "{what} is not reachable; waiting for it");
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        why = sup.interrupted() => {
            info!(why, "stopped while waiting for PostgreSQL");
            false
        }
    }
}

pub(super) async fn open_spool(cfg: &Config) -> Result<Spool, CliError> {
    let opts = SpoolOptions {
        cache_capacity: cfg.spool.cache_bytes,
        max_bytes: cfg.spool.max_bytes,
        ..SpoolOptions::default()
    };
    let dir = cfg.spool.dir.clone();
    let spool = tokio::task::spawn_blocking(move || Spool::open(dir, opts))
        .await
        .map_err(|e| task_failed("spool open", e))??;
    Ok(spool)
}

/// Builds the sink and checks its targets (unmapped types, missing or incompatible
/// tables, credentials): a failure is permanent.
///
/// Today `StarRocksLoadSink::connect` does both, and its `SinkFailure` does not say
/// whether StarRocks was merely unreachable, so StarRocks being down at start still stops
/// the daemon. With the sink split into `new` (no I/O) and `check_targets` (typed
/// transient / permanent failure), this becomes: `new()?`; `check_targets` mapped to a
/// [`SinkStartup`]; `Fatal` is returned, `Retrying` spawns [`probe_sink`] (the outage
/// shows in status, loads retry by themselves) and the daemon carries on.
/// `None` when a stop request came while waiting.
#[allow(clippy::type_complexity)]
pub(super) async fn start_sink(
    cfg: &Config,
    sink_cfg: &SinkConfig,
    sup: &mut Supervisor,
) -> Result<Option<(Arc<StarRocksLoadSink>, Option<tokio::task::JoinHandle<()>>)>, CliError> {
    let life = &sup.life.clone();
    // The sink needs PostgreSQL (the catalog) but not StarRocks. PostgreSQL may have gone
    // away again since the source setup (a restart): wait it out like at the start.
    let mut backoff = startup_retry().backoff();
    let sink = loop {
        match StarRocksLoadSink::new(cfg, sink_cfg).await {
            Ok(s) => {
                if let Some(o) = life.reached(Dependency::Postgres) {
                    info!(
                        failed_attempts = o.attempts,
                        "PostgreSQL is reachable again"
                    );
                }
                break Arc::new(s);
            }
            Err(e) if e.is_transient() => {
                if !wait_out_postgres(sup, &mut backoff, e.to_string(), "the PostgreSQL catalog")
                    .await
                {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e.into()),
        }
    };
    let check = |s: Arc<StarRocksLoadSink>| async move {
        match s.check_targets().await {
            Ok(()) => SinkStartup::Ready,
            Err(e) if e.is_transient() => SinkStartup::Retrying(e.to_string()),
            Err(e) => SinkStartup::Fatal(e),
        }
    };
    match check(sink.clone()).await {
        SinkStartup::Ready => Ok(Some((sink, None))),
        SinkStartup::Fatal(e) => Err(e.into()),
        SinkStartup::Retrying(error) => {
            let o = life.unreachable(Dependency::StarRocks, error);
            warn!(error = %o.last_error, "StarRocks is not reachable at start; changes are spooled and loaded once it answers");
            let (life, probe) = (life.clone(), sink.clone());
            let task = tokio::spawn(async move {
                let r = probe_sink(life, startup_retry(), || check(probe.clone())).await;
                if let Err(e) = r {
                    // The loader meets the same problem before its first load and stops.
                    warn!(error = %e, "the StarRocks targets do not fit");
                }
            });
            Ok(Some((sink, Some(task))))
        }
    }
}

/// Repeats a sink startup check with backoff until StarRocks answers, keeping the
/// StarRocks outage in the lifecycle up to date; a permanent failure is returned.
pub async fn probe_sink<E, F, Fut>(life: Life, policy: RetryPolicy, mut check: F) -> Result<(), E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = SinkStartup<E>>,
{
    let mut backoff = policy.backoff();
    loop {
        match check().await {
            SinkStartup::Ready => {
                if let Some(o) = life.reached(Dependency::StarRocks) {
                    info!(failed_attempts = o.attempts, "StarRocks is reachable");
                }
                return Ok(());
            }
            SinkStartup::Fatal(e) => return Err(e),
            SinkStartup::Retrying(error) => {
                let o = life.unreachable(Dependency::StarRocks, error);
                let delay = backoff.next_delay().unwrap_or(policy.max_delay);
                warn!(error = %o.last_error, attempt = o.attempts, retry_in = ?delay, "StarRocks is not reachable; loads wait for it");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick() -> RetryPolicy {
        RetryPolicy {
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            jitter: 0.0,
            max_attempts: None,
        }
    }

    #[tokio::test]
    async fn a_sink_probe_shows_the_outage_until_starrocks_answers() {
        let life = Life::new();
        let mut seen = life.subscribe();
        let mut answers = vec![
            SinkStartup::Retrying("connection refused".to_string()),
            SinkStartup::Retrying("connect timeout".to_string()),
            SinkStartup::Ready,
        ]
        .into_iter();
        let mut outages = Vec::new();
        let r: Result<(), String> = probe_sink(life.clone(), quick(), || {
            // What the status showed before this attempt.
            outages.push(
                seen.borrow_and_update()
                    .outages
                    .get(Dependency::StarRocks)
                    .map(|o| (o.attempts, o.last_error.clone())),
            );
            let a = answers.next().unwrap_or(SinkStartup::Ready);
            async move { a }
        })
        .await;
        assert_eq!(r, Ok(()));
        assert_eq!(
            outages,
            vec![
                None,
                Some((1, "connection refused".to_string())),
                Some((2, "connect timeout".to_string())),
            ]
        );
        assert!(life
            .subscribe()
            .borrow()
            .outages
            .get(Dependency::StarRocks)
            .is_none());
    }

    #[tokio::test]
    async fn a_sink_probe_returns_a_permanent_failure() {
        let life = Life::new();
        let mut n = 0;
        let r = probe_sink(life.clone(), quick(), || {
            n += 1;
            let a = if n < 2 {
                SinkStartup::Retrying("refused".into())
            } else {
                SinkStartup::Fatal("Access denied for user 'root'")
            };
            async move { a }
        })
        .await;
        assert_eq!(r, Err("Access denied for user 'root'"));
        assert_eq!(n, 2);
    }
}
