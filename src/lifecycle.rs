//! The daemon's lifecycle in one place: its states and the control requests, which
//! transitions are legal, what the parts are told in each state, when a drain may load
//! what the spool holds, which LSN each ack policy lets PostgreSQL forget, and how outages
//! of PostgreSQL and StarRocks are tracked for status and metrics.
//!
//! Pure: no I/O, no tasks. `daemon.rs` feeds it what the parts report and carries out its
//! answers; `grpc/` only reads the [`LifecycleStatus`] the daemon publishes. Kept here: a
//! failed daemon never runs again (only a restart does); a drain loads only once nothing
//! received is still on its way to the spool (issue 9, case 7); the acknowledged LSN never
//! passes what the ack policy allows (invariant 1) and never goes back.

use std::fmt;
use std::time::SystemTime;

use serde::Serialize;

use crate::config::AckPolicy;
use crate::connectors::sources::postgres::reader::ReaderStatus;
use crate::core::Lsn;
use crate::pipeline::status::LoaderStatus;

// ------------------------------------------------------------------ states and requests

/// The daemon's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
pub enum DaemonState {
    /// Setting up: waiting for PostgreSQL, opening the spool, checking the targets.
    #[default]
    Starting,
    Running,
    /// Reading and loading stopped on request; keepalives are still answered.
    Paused,
    /// Reading stopped; everything read is made durable, loaded and confirmed, then the
    /// daemon exits.
    Draining,
    Stopping,
    /// A permanent error stopped the pipeline; spool and slot are kept.
    Failed,
}

impl DaemonState {
    /// Every state, in lifecycle order (for metrics).
    pub const ALL: [DaemonState; 6] = [
        Self::Starting,
        Self::Running,
        Self::Paused,
        Self::Draining,
        Self::Stopping,
        Self::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Draining => "draining",
            Self::Stopping => "stopping",
            Self::Failed => "failed",
        }
    }

    /// Alive and doing (or about to do) its job: not failed, not on its way out.
    pub fn is_serving(self) -> bool {
        matches!(
            self,
            Self::Starting | Self::Running | Self::Paused | Self::Draining
        )
    }
}

impl fmt::Display for DaemonState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A control request from an operator (gRPC Control, the CLI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControlRequest {
    Pause,
    Resume,
    /// Stop reading, load and confirm everything read, exit.
    DrainAndStop,
    Stop,
}

impl ControlRequest {
    pub fn verb(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::DrainAndStop => "drain",
            Self::Stop => "stop",
        }
    }

    /// The state the request leads to.
    pub fn target(self) -> DaemonState {
        match self {
            Self::Pause => DaemonState::Paused,
            Self::Resume => DaemonState::Running,
            Self::DrainAndStop => DaemonState::Draining,
            Self::Stop => DaemonState::Stopping,
        }
    }
}

/// What a legal request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Move to this state; the daemon carries out what it means.
    Go(DaemonState),
    /// The daemon already is where the request leads: nothing to do.
    Already(DaemonState),
}

/// A request that is not legal in the current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub struct Refused {
    pub request: ControlRequest,
    pub state: DaemonState,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = self.request.verb();
        match self.state {
            DaemonState::Starting => write!(
                f,
                "cannot {verb} while the daemon is starting; try again once it is running (stop works at any time)"
            ),
            DaemonState::Draining => write!(
                f,
                "cannot {verb} while the daemon is draining: it exits by itself once everything is loaded (stop ends it now)"
            ),
            DaemonState::Stopping => write!(f, "cannot {verb}: the daemon is stopping"),
            DaemonState::Failed => write!(
                f,
                "cannot {verb}: the daemon stopped on a permanent error (see last_error); fix the cause and start it again, the spool and the slot are kept"
            ),
            state => write!(f, "cannot {verb} while the daemon is {state}"),
        }
    }
}

/// The answer to `request` in `state`. Stop is legal in every state but `Stopping` and
/// `Failed`, where the daemon is on its way out anyway.
pub fn on_request(state: DaemonState, request: ControlRequest) -> Result<Decision, Refused> {
    use ControlRequest as R;
    use DaemonState as S;
    let refused = Err(Refused { request, state });
    match (state, request) {
        (S::Stopping | S::Failed, R::Stop) => Ok(Decision::Already(state)),
        (S::Stopping | S::Failed, _) => refused,
        (_, R::Stop) => Ok(Decision::Go(S::Stopping)),
        (S::Starting, _) => refused,
        (S::Draining, R::DrainAndStop) => Ok(Decision::Already(state)),
        (S::Draining, R::Pause | R::Resume) => refused,
        (S::Running, R::Resume) | (S::Paused, R::Pause) => Ok(Decision::Already(state)),
        (S::Running | S::Paused, r) => Ok(Decision::Go(r.target())),
    }
}

/// What happens to the daemon, besides control requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Setup is done and the pipeline runs.
    Started,
    Request(ControlRequest),
    /// The loader loaded everything a drain asked for.
    Drained,
    /// The daemon winds down: SIGTERM/SIGINT, a part that ended on its own, or the end
    /// of a run.
    Shutdown,
    /// A permanent error.
    Failed,
}

/// The state after `event`, or `None` when the event makes no sense in `state` (the
/// daemon then stays where it is).
pub fn next(state: DaemonState, event: Event) -> Option<DaemonState> {
    use DaemonState as S;
    match (state, event) {
        (_, Event::Failed) => Some(S::Failed),
        (_, Event::Request(r)) => match on_request(state, r) {
            Ok(Decision::Go(s) | Decision::Already(s)) => Some(s),
            Err(_) => None,
        },
        (S::Failed, _) => None,
        (S::Starting, Event::Started) => Some(S::Running),
        (_, Event::Started) => None,
        (S::Draining, Event::Drained) => Some(S::Stopping),
        (_, Event::Drained) => None,
        (_, Event::Shutdown) => Some(S::Stopping),
    }
}

/// What the reader and the loader are told in a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Controls {
    pub reader_paused: bool,
    pub loader_paused: bool,
}

/// The controls of `state`.
pub fn controls(state: DaemonState) -> Controls {
    match state {
        DaemonState::Running => Controls {
            reader_paused: false,
            loader_paused: false,
        },
        // Reading stops (the connection stays, so the confirmed LSN of the drained loads
        // reaches PostgreSQL); the loader is never paused while draining (a pause would
        // abandon a load in flight).
        DaemonState::Draining => Controls {
            reader_paused: true,
            loader_paused: false,
        },
        DaemonState::Starting
        | DaemonState::Paused
        | DaemonState::Stopping
        | DaemonState::Failed => Controls {
            reader_paused: true,
            loader_paused: true,
        },
    }
}

// ------------------------------------------------------------------ drain

/// Where a drain is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainPhase {
    /// Reading stopped; waiting until everything received is durable in the spool.
    Settling,
    /// The loader loads what the spool holds, confirms it, and ends.
    Loading,
}

impl DrainPhase {
    /// For Status (`activity`) and the log.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Settling => "draining: reading stopped, making what was read durable",
            Self::Loading => "draining: loading the spool",
        }
    }
}

/// What a drain needs to know about the reader and the spool writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DrainView {
    pub connected: bool,
    /// The reader is not reading (paused, or a batch is waiting for the writer).
    pub held_back: bool,
    /// The reader holds a decoded batch the writer has not taken yet.
    pub pending_batch: bool,
    /// End of the last transaction handed to the writer.
    pub handed_over: Lsn,
    /// End of the last transaction durable in the spool.
    pub durable: Lsn,
    /// No batch is waiting in the channel to the writer.
    pub writer_queue_empty: bool,
}

impl DrainView {
    pub fn new(reader: &ReaderStatus, durable: Lsn, writer_queue_empty: bool) -> Self {
        DrainView {
            connected: reader.connected,
            held_back: reader.held_back,
            pending_batch: reader.pending_batch,
            handed_over: reader.last_commit_end,
            durable,
            writer_queue_empty,
        }
    }
}

/// True when the loader may be told to drain: reading has stopped, no decoded batch is
/// held back, nothing waits in the writer's queue, and everything handed over is durable.
/// Reading counts as stopped while the reader is disconnected (a batch it held is dropped
/// and read again after a reconnect, which then holds back).
pub fn drain_ready(v: &DrainView) -> bool {
    let reading_stopped = v.held_back || !v.connected;
    reading_stopped && !v.pending_batch && v.writer_queue_empty && v.durable >= v.handed_over
}

/// The next phase of a drain, given what the parts report.
pub fn advance(phase: DrainPhase, v: &DrainView) -> DrainPhase {
    match phase {
        DrainPhase::Settling if drain_ready(v) => DrainPhase::Loading,
        p => p,
    }
}

// ------------------------------------------------------------------ acknowledgement

/// The LSN PostgreSQL may forget (reported as flush_lsn): with `loaded`, the end of the
/// last transaction loaded into StarRocks (invariant 1); with `spooled`, also the spool's
/// durable mark (the durability point moves to local disk).
pub fn acknowledged(policy: AckPolicy, loaded: Lsn, durable: Lsn) -> Lsn {
    match policy {
        AckPolicy::Loaded => loaded,
        AckPolicy::Spooled => loaded.max(durable),
    }
}

/// Moves `current` to `next` when that is forward; true when it moved.
pub fn advance_ack(current: &mut Lsn, next: Lsn) -> bool {
    let forward = next > *current;
    if forward {
        *current = next;
    }
    forward
}

// ------------------------------------------------------------------ outages

/// Something the daemon waits for when it is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Dependency {
    Postgres,
    StarRocks,
}

impl Dependency {
    pub const ALL: [Dependency; 2] = [Dependency::Postgres, Dependency::StarRocks];

    /// Metric label value.
    pub fn key(self) -> &'static str {
        match self {
            Self::Postgres => "postgresql",
            Self::StarRocks => "starrocks",
        }
    }
}

impl fmt::Display for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Postgres => "PostgreSQL",
            Self::StarRocks => "StarRocks",
        })
    }
}

/// A dependency that cannot be reached now; the daemon retries with backoff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outage {
    pub since: SystemTime,
    /// Failed attempts so far in this outage.
    pub attempts: u64,
    pub last_error: String,
}

/// Who noticed an outage (and may therefore declare it over).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Witness {
    /// A retrying step of the daemon (startup): it calls [`Outages::reached`].
    Daemon,
    /// The reader's reconnects (counter value when the outage began).
    Reader { reconnects: u64 },
    /// The loader's retries (counter value when the outage began).
    Loader { retries: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Tracked {
    outage: Outage,
    witness: Witness,
}

/// The current outages of PostgreSQL and StarRocks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outages {
    postgres: Option<Tracked>,
    starrocks: Option<Tracked>,
}

impl Outages {
    pub fn get(&self, dep: Dependency) -> Option<&Outage> {
        self.slot_ref(dep).as_ref().map(|t| &t.outage)
    }

    fn slot_ref(&self, dep: Dependency) -> &Option<Tracked> {
        match dep {
            Dependency::Postgres => &self.postgres,
            Dependency::StarRocks => &self.starrocks,
        }
    }

    fn slot(&mut self, dep: Dependency) -> &mut Option<Tracked> {
        match dep {
            Dependency::Postgres => &mut self.postgres,
            Dependency::StarRocks => &mut self.starrocks,
        }
    }

    /// An attempt of the daemon's own to reach `dep` failed: starts or extends an outage.
    pub fn failed(&mut self, dep: Dependency, now: SystemTime, error: String) -> Outage {
        let t = self.slot(dep).get_or_insert_with(|| Tracked {
            outage: Outage {
                since: now,
                attempts: 0,
                last_error: String::new(),
            },
            witness: Witness::Daemon,
        });
        t.outage.attempts += 1;
        t.outage.last_error = error;
        t.outage.clone()
    }

    /// `dep` answered: the outage (if any) is over; returns it.
    pub fn reached(&mut self, dep: Dependency) -> Option<Outage> {
        self.slot(dep).take().map(|t| t.outage)
    }

    /// Follows the reader: disconnected with an error means PostgreSQL is unreachable
    /// (attempts = reconnects since); connected means it is back. True when it changed.
    pub fn observe_reader(&mut self, r: &ReaderStatus, now: SystemTime) -> bool {
        let before = self.postgres.clone();
        if r.connected {
            self.postgres = None;
        } else if let Some(err) = &r.last_error {
            match &mut self.postgres {
                Some(Tracked {
                    outage,
                    witness: Witness::Reader { reconnects },
                }) => {
                    outage.attempts = 1 + r.reconnects.saturating_sub(*reconnects);
                    outage.last_error.clone_from(err);
                }
                Some(Tracked { outage, .. }) => outage.last_error.clone_from(err),
                None => {
                    self.postgres = Some(Tracked {
                        outage: Outage {
                            since: now,
                            attempts: 1,
                            last_error: err.clone(),
                        },
                        witness: Witness::Reader {
                            reconnects: r.reconnects,
                        },
                    })
                }
            }
        }
        before != self.postgres
    }

    /// Follows the loader: a load being retried means StarRocks is unreachable (attempts =
    /// retries since); the error cleared means a retry went through. An outage noticed by
    /// the daemon itself is ended by the daemon only. True when it changed.
    pub fn observe_loader(&mut self, l: &LoaderStatus, now: SystemTime) -> bool {
        let before = self.starrocks.clone();
        let retrying = l.stage == crate::pipeline::status::LoaderStage::Retrying;
        match (&mut self.starrocks, &l.last_error) {
            (
                Some(Tracked {
                    outage,
                    witness: Witness::Loader { retries },
                }),
                Some(err),
            ) => {
                outage.attempts = l.retries.saturating_sub(*retries).max(1);
                outage.last_error.clone_from(err);
            }
            (
                Some(Tracked {
                    witness: Witness::Loader { .. },
                    ..
                }),
                None,
            ) => self.starrocks = None,
            (Some(Tracked { outage, .. }), Some(err)) if retrying => {
                outage.last_error.clone_from(err)
            }
            (None, Some(err)) if retrying => {
                self.starrocks = Some(Tracked {
                    outage: Outage {
                        since: now,
                        attempts: 1,
                        last_error: err.clone(),
                    },
                    witness: Witness::Loader {
                        retries: l.retries.saturating_sub(1),
                    },
                })
            }
            _ => {}
        }
        before != self.starrocks
    }
}

/// How the sink's startup check of the targets ended.
#[derive(Debug)]
pub enum SinkStartup<E> {
    /// StarRocks answered and the targets fit.
    Ready,
    /// StarRocks could not be reached: the daemon carries on, the outage shows in status,
    /// and the check is retried in the background (loads retry by themselves).
    Retrying(String),
    /// A permanent problem (credentials, incompatible targets): the daemon stops.
    Fatal(E),
}

// ------------------------------------------------------------------ published view

/// What the daemon publishes about itself; the control plane reads it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LifecycleStatus {
    pub state: DaemonState,
    /// What the daemon is doing beyond its state (a startup step, a drain phase); empty
    /// when there is nothing to add.
    pub activity: String,
    /// The permanent error that stopped the daemon (state `failed`).
    pub error: Option<String>,
    pub outages: Outages,
}

impl LifecycleStatus {
    /// Whether the daemon is ready for traffic, else why not (for `/readyz`).
    pub fn readiness(&self, reader_connected: bool) -> Result<(), String> {
        if self.state != DaemonState::Running {
            return Err(format!("not ready: {}", self.state));
        }
        if let Some(o) = self.outages.get(Dependency::StarRocks) {
            return Err(format!(
                "not ready: StarRocks is unreachable, retrying (failed attempts: {}): {}",
                o.attempts, o.last_error
            ));
        }
        if !reader_connected {
            return Err("not ready: the reader is not connected to PostgreSQL".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
