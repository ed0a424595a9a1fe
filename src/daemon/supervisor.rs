//! The lifecycle's publisher ([`Life`]: one watch channel the control plane reads, every
//! change made through [`crate::lifecycle`]'s functions) and the [`Supervisor`]: what
//! ends the daemon from outside (signals, control requests).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::future::{Fuse, FutureExt};
use tokio::sync::{mpsc, watch};
use tracing::warn;

use crate::connectors::sources::postgres::reader::ReaderStatus;
use crate::lifecycle::{
    self, ControlRequest, DaemonState, Dependency, Event, LifecycleStatus, Outage,
};
use crate::pipeline::status::LoaderStatus;

/// Publishes the lifecycle on one watch channel the control plane reads; every change
/// goes through [`lifecycle`]'s functions.
#[derive(Clone)]
pub struct Life(Arc<watch::Sender<LifecycleStatus>>);

impl Default for Life {
    fn default() -> Self {
        Self::new()
    }
}

impl Life {
    /// A daemon that is starting (connecting to PostgreSQL).
    pub fn new() -> Self {
        Life(Arc::new(
            watch::channel(LifecycleStatus {
                activity: "connecting to PostgreSQL".into(),
                ..LifecycleStatus::default()
            })
            .0,
        ))
    }

    pub fn subscribe(&self) -> watch::Receiver<LifecycleStatus> {
        self.0.subscribe()
    }

    pub fn state(&self) -> DaemonState {
        self.0.borrow().state
    }

    /// Applies `event`; the new state, or `None` when the lifecycle refuses it.
    pub fn apply(&self, event: Event) -> Option<DaemonState> {
        let mut out = None;
        self.0
            .send_if_modified(|s| match lifecycle::next(s.state, event) {
                Some(next) => {
                    out = Some(next);
                    let changed = next != s.state;
                    s.state = next;
                    changed
                }
                None => false,
            });
        out
    }

    pub fn activity(&self, activity: impl Into<String>) {
        let a = activity.into();
        self.0.send_if_modified(|s| {
            let changed = s.activity != a;
            s.activity = a;
            changed
        });
    }

    /// A permanent error: state failed, with the error (the first one stays).
    pub fn fail(&self, error: String) {
        self.0.send_modify(|s| {
            if let Some(next) = lifecycle::next(s.state, Event::Failed) {
                s.state = next;
            }
            s.error.get_or_insert(error);
        });
    }

    /// An attempt of the daemon's own to reach `dep` failed.
    pub fn unreachable(&self, dep: Dependency, error: String) -> Outage {
        let mut out = None;
        self.0
            .send_modify(|s| out = Some(s.outages.failed(dep, SystemTime::now(), error)));
        out.unwrap_or_else(|| Outage {
            since: SystemTime::now(),
            attempts: 1,
            last_error: String::new(),
        })
    }

    /// `dep` answered; the outage that ended, if any.
    pub fn reached(&self, dep: Dependency) -> Option<Outage> {
        let mut out = None;
        self.0.send_if_modified(|s| {
            out = s.outages.reached(dep);
            out.is_some()
        });
        out
    }

    pub(super) fn observe_reader(&self, r: &ReaderStatus) {
        self.0
            .send_if_modified(|s| s.outages.observe_reader(r, SystemTime::now()));
    }

    pub(super) fn observe_loader(&self, l: &LoaderStatus) {
        self.0
            .send_if_modified(|s| s.outages.observe_loader(l, SystemTime::now()));
    }
}

// ------------------------------------------------------------------ supervisor

type Signals = Fuse<Pin<Box<dyn Future<Output = &'static str> + Send>>>;

/// What ends the daemon from outside: signals and control requests.
pub(super) struct Supervisor {
    pub(super) life: Life,
    pub(super) control: mpsc::Receiver<ControlRequest>,
    pub(super) signals: Signals,
}

impl Supervisor {
    pub(super) fn new(life: Life, control: mpsc::Receiver<ControlRequest>) -> Self {
        let signals: Pin<Box<dyn Future<Output = &'static str> + Send>> =
            Box::pin(shutdown_signal());
        Supervisor {
            life,
            control,
            signals: signals.fuse(),
        }
    }

    /// While starting: resolves on a signal or a Stop request (what it was); other
    /// requests are refused by the lifecycle.
    pub(super) async fn interrupted(&mut self) -> &'static str {
        loop {
            tokio::select! {
                sig = &mut self.signals => {
                    self.life.apply(Event::Shutdown);
                    return sig;
                }
                req = self.control.recv() => {
                    let Some(r) = req else {
                        return "the control channel closed";
                    };
                    match self.life.apply(Event::Request(r)) {
                        Some(DaemonState::Stopping) => return "stop request",
                        _ => warn!(request = r.verb(), state = %self.life.state(), "control request refused while starting"),
                    }
                }
            }
        }
    }
}
/// Resolves on SIGTERM or SIGINT, naming it.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => tokio::select! {
            _ = t.recv() => "SIGTERM",
            _ = i.recv() => "SIGINT",
        },
        _ => {
            // Without signal handlers, only Ctrl-C through tokio's fallback remains.
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_publisher_follows_the_lifecycle() {
        let life = Life::new();
        let rx = life.subscribe();
        assert_eq!(rx.borrow().state, DaemonState::Starting);
        assert_eq!(rx.borrow().activity, "connecting to PostgreSQL");
        assert_eq!(life.apply(Event::Request(ControlRequest::Pause)), None);
        assert_eq!(life.apply(Event::Started), Some(DaemonState::Running));
        assert_eq!(
            life.apply(Event::Request(ControlRequest::DrainAndStop)),
            Some(DaemonState::Draining)
        );
        assert_eq!(life.apply(Event::Request(ControlRequest::Resume)), None);
        assert_eq!(life.state(), DaemonState::Draining);
        life.fail("sink: boom".into());
        life.fail("a later error".into());
        assert_eq!(rx.borrow().state, DaemonState::Failed);
        assert_eq!(rx.borrow().error.as_deref(), Some("sink: boom"));
        assert_eq!(life.apply(Event::Shutdown), None, "failed stays failed");
        assert_eq!(life.state(), DaemonState::Failed);
    }
}
