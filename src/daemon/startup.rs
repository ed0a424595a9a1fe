//! Startup steps: the source (waiting out PostgreSQL being down or starting, with
//! backoff, for as long as it takes; permanent problems end the daemon), the spool, the
//! sink. Each step says what it does in the lifecycle's `activity`.

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
use crate::connectors::sources::postgres::{client, setup, SourceError};
use crate::core::retry::RetryPolicy;
use crate::core::Lsn;
use crate::lifecycle::{Dependency, SinkStartup};
use crate::pipeline::loader::RetryNote;
use crate::spool::{Spool, SpoolOptions};

/// How long one startup attempt (connect, inspect, create publication and slot) may take.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(60);

/// Backoff between startup attempts while a dependency is unreachable.
fn startup_retry() -> RetryPolicy {
    RetryPolicy::new(Duration::from_millis(500), Duration::from_secs(30))
}

/// What source setup found.
pub(super) struct SourceReady {
    pub(super) created_slot: bool,
    pub(super) slot_confirmed: Option<Lsn>,
}

/// One attempt at the source: connect, check (every problem is permanent), publication
/// and slot (never dropped), the slot's confirmed LSN.
async fn prepare_source(cfg: &Config) -> Result<SourceReady, SourceError> {
    let pg = client::connect(&cfg.source.conn).await?;
    let mut repl = ReplicationConnection::connect(&cfg.source.conn).await?;
    let (_report, outcome) = setup::ensure(&pg, &mut repl, &cfg.source).await?;
    repl.close().await;
    let slot_confirmed = setup::slot_confirmed_flush(&pg, &cfg.source.slot_name).await?;
    Ok(SourceReady {
        created_slot: outcome.created_slot,
        slot_confirmed,
    })
}

/// Sets the source up, waiting out PostgreSQL being down or starting (transient errors,
/// typed by [`SourceError::is_transient`]) with backoff for as long as it takes; a
/// permanent error (credentials, privileges, wal_level, ...) ends the daemon. `None`: a
/// signal or a Stop request came first.
pub(super) async fn wait_for_source(
    cfg: &Config,
    sup: &mut Supervisor,
) -> Result<Option<SourceReady>, CliError> {
    let mut backoff = startup_retry().backoff();
    loop {
        let attempt = async {
            match tokio::time::timeout(ATTEMPT_LIMIT, prepare_source(cfg)).await {
                Ok(Ok(ready)) => Ok(Ok(ready)),
                Ok(Err(e)) if e.is_transient() => Ok(Err(e.to_string())),
                Ok(Err(e)) => Err(e),
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
        let outage = sup.life.unreachable(Dependency::Postgres, error);
        sup.life.activity("waiting for PostgreSQL");
        let delay = backoff
            .next_delay()
            .unwrap_or_else(|| startup_retry().max_delay);
        warn!(error = %outage.last_error, attempt = outage.attempts, retry_in = ?delay, "PostgreSQL is not reachable; waiting for it");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            why = sup.interrupted() => {
                info!(why, "stopped while waiting for PostgreSQL");
                return Ok(None);
            }
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
                let o = life.unreachable(Dependency::Postgres, e.to_string());
                let delay = backoff
                    .next_delay()
                    .unwrap_or_else(|| startup_retry().max_delay);
                warn!(error = %o.last_error, attempt = o.attempts, retry_in = ?delay, "the PostgreSQL catalog is not reachable; waiting for it");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    why = sup.interrupted() => {
                        info!(why, "stopped while starting");
                        return Ok(None);
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
    };
    let check = |s: Arc<StarRocksLoadSink>| async move {
        match s.check_targets(&RetryNote::detached()).await {
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
