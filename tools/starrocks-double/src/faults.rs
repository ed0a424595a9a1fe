//! Fault injection: the faults that can be switched on at run time, for N requests or for a
//! duration, and the registry the FE/BE/listeners consult. A fault "hits" a request when it
//! applies to it; each hit consumes one unit of a `Count(n)` fault.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// Which listener a node-level fault targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Node {
    /// FE HTTP port.
    Fe,
    /// BE HTTP port.
    Be,
    /// FE MySQL port.
    Mysql,
}

/// A fault to inject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// The node's port refuses connections (the listener is closed and open connections are
    /// dropped); with `Count(n)`, n incoming connections are accepted and dropped at once.
    Down {
        /// Target node.
        node: Node,
    },
    /// Stream Load PUTs on the node are answered with this HTTP status (e.g. 500, 503).
    Http5xx {
        /// Target node (fe or be).
        node: Node,
        /// HTTP status code.
        status: u16,
    },
    /// Stream Load PUTs on the node are accepted and never answered.
    Hang {
        /// Target node (fe or be).
        node: Node,
    },
    /// Stream Load PUTs on the node are answered after a delay.
    Slow {
        /// Target node (fe or be).
        node: Node,
        /// Delay in milliseconds.
        delay_ms: u64,
    },
    /// The BE answers `Status: Fail` with this message after reading the body. With
    /// `commit: true` the data is committed anyway (like "Transaction status unknown").
    StatusFail {
        /// Message.
        message: String,
        /// Whether the load is committed despite the Fail reply.
        #[serde(default)]
        commit: bool,
    },
    /// The BE commits but answers `Publish Timeout`; rows become visible after the delay.
    PublishTimeout {
        /// Delay before the rows are visible (ms); 0 = at once.
        #[serde(default)]
        visible_after_ms: u64,
    },
    /// The first `rows` rows of a load fail data-quality checks (counted as filtered).
    FilterRows {
        /// Rows to filter.
        rows: u64,
    },
    /// The load keeps its label RUNNING for `hold_ms` before committing (and answering), so a
    /// retry with the same label gets `Label Already Exists` / `RUNNING`.
    LabelRunning {
        /// How long the job runs (ms).
        hold_ms: u64,
    },
    /// The first `rows` rows of a load fail data-quality checks, yet the BE commits the
    /// rest and answers `Success` with `NumberFilteredRows` = rows and an `ErrorURL`,
    /// whatever `max_filter_ratio` says (what a client must not take for a full load).
    FilteredSuccess {
        /// Rows filtered.
        rows: u64,
    },
    /// The first `rows` rows of a load vanish: the BE commits the rest and answers
    /// `Success` with `NumberTotalRows` = rows received but `NumberLoadedRows` = rows
    /// applied and no filtered rows, so the counts do not add up.
    LoseRows {
        /// Rows lost.
        rows: u64,
    },
    /// The BE reads the body and begins the transaction (label PREPARE: a retry with the
    /// same label gets `Label Already Exists` / `RUNNING`), never answers, and commits
    /// after `commit_after_ms` even if the client has gone away; then it drops the
    /// connection if the client is still there.
    LateCommit {
        /// Delay before the commit (ms).
        commit_after_ms: u64,
    },
    /// Begin fails with "current running txns on db ... larger than limit ...".
    TooManyTxns,
    /// The FE redirects to this host:port instead of the BE (e.g. an unreachable address).
    RedirectTo {
        /// Host in Location.
        host: String,
        /// Port in Location.
        port: u16,
    },
    /// The BE reads the body, then drops the connection without a reply; the load is
    /// committed when `commit` is true, aborted otherwise.
    DropConnection {
        /// Whether the load is committed.
        #[serde(default)]
        commit: bool,
    },
    /// The FE answers "No backend alive.".
    NoBackendAlive,
}

/// How long a fault lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultDuration {
    /// For the next n requests it applies to.
    Count(u64),
    /// For a wall-clock duration.
    For(Duration),
    /// Until cleared.
    Forever,
}

/// Id of an installed fault.
pub type FaultId = u64;

#[derive(Debug, Clone)]
struct Active {
    id: FaultId,
    fault: Fault,
    remaining: Option<u64>,
    until: Option<Instant>,
}

impl Active {
    fn live(&self, now: Instant) -> bool {
        self.remaining.is_none_or(|r| r > 0) && self.until.is_none_or(|u| now < u)
    }
}

/// A fault as listed by the control endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct FaultInfo {
    /// Id.
    pub id: FaultId,
    /// The fault.
    pub fault: Fault,
    /// Remaining hits, for Count faults.
    pub remaining: Option<u64>,
    /// Remaining milliseconds, for timed faults.
    pub remaining_ms: Option<u64>,
}

/// The registry of active faults.
#[derive(Debug)]
pub struct Faults {
    inner: std::sync::Mutex<(FaultId, Vec<Active>)>,
    changed: watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            inner: std::sync::Mutex::new((0, Vec::new())),
            changed: watch::channel(0).0,
        }
    }
}

impl Faults {
    fn lock(&self) -> std::sync::MutexGuard<'_, (FaultId, Vec<Active>)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// Installs a fault.
    pub fn add(&self, fault: Fault, duration: FaultDuration) -> FaultId {
        let id = {
            let mut g = self.lock();
            g.0 += 1;
            let id = g.0;
            let (remaining, until) = match duration {
                FaultDuration::Count(n) => (Some(n), None),
                FaultDuration::For(d) => (None, Some(Instant::now() + d)),
                FaultDuration::Forever => (None, None),
            };
            g.1.push(Active {
                id,
                fault,
                remaining,
                until,
            });
            id
        };
        self.bump();
        id
    }

    /// Removes one fault.
    pub fn remove(&self, id: FaultId) -> bool {
        let removed = {
            let mut g = self.lock();
            let before = g.1.len();
            g.1.retain(|a| a.id != id);
            before != g.1.len()
        };
        self.bump();
        removed
    }

    /// Removes all faults.
    pub fn clear(&self) {
        self.lock().1.clear();
        self.bump();
    }

    /// Lists the live faults.
    pub fn list(&self) -> Vec<FaultInfo> {
        let now = Instant::now();
        let mut g = self.lock();
        g.1.retain(|a| a.live(now));
        g.1.iter()
            .map(|a| FaultInfo {
                id: a.id,
                fault: a.fault.clone(),
                remaining: a.remaining,
                remaining_ms: a
                    .until
                    .map(|u| u.saturating_duration_since(now).as_millis() as u64),
            })
            .collect()
    }

    /// Takes one hit of the first live fault accepted by `pick`, returning what `pick` made of it.
    pub fn take<T>(&self, mut pick: impl FnMut(&Fault) -> Option<T>) -> Option<T> {
        let now = Instant::now();
        let mut g = self.lock();
        g.1.retain(|a| a.live(now));
        for a in g.1.iter_mut() {
            if let Some(t) = pick(&a.fault) {
                if let Some(r) = a.remaining.as_mut() {
                    *r -= 1;
                }
                return Some(t);
            }
        }
        None
    }

    /// If `node` is down for a duration (not a Count fault): the instant it ends (None = forever).
    pub fn down_until(&self, node: Node) -> Option<Option<Instant>> {
        let now = Instant::now();
        let g = self.lock();
        g.1.iter()
            .find(|a| {
                a.live(now)
                    && a.remaining.is_none()
                    && matches!(&a.fault, Fault::Down { node: n } if *n == node)
            })
            .map(|a| a.until)
    }

    /// Takes one hit of a `Down` Count fault on `node` (a connection to drop at once).
    pub fn take_down_count(&self, node: Node) -> bool {
        let now = Instant::now();
        let mut g = self.lock();
        for a in g.1.iter_mut() {
            if a.live(now)
                && a.remaining.is_some()
                && matches!(&a.fault, Fault::Down { node: n } if *n == node)
            {
                if let Some(r) = a.remaining.as_mut() {
                    *r -= 1;
                }
                return true;
            }
        }
        false
    }

    /// A receiver that changes whenever faults are added or removed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_faults_are_consumed() {
        let f = Faults::default();
        f.add(Fault::TooManyTxns, FaultDuration::Count(2));
        let hit = || f.take(|x| matches!(x, Fault::TooManyTxns).then_some(()));
        assert!(hit().is_some());
        assert!(hit().is_some());
        assert!(hit().is_none());
        assert!(f.list().is_empty());
    }

    #[test]
    fn timed_faults_expire_and_clear() {
        let f = Faults::default();
        f.add(
            Fault::Down { node: Node::Be },
            FaultDuration::For(Duration::from_millis(30)),
        );
        assert!(f.down_until(Node::Be).is_some());
        assert!(f.down_until(Node::Fe).is_none());
        std::thread::sleep(Duration::from_millis(40));
        assert!(f.down_until(Node::Be).is_none());
        let id = f.add(Fault::NoBackendAlive, FaultDuration::Forever);
        assert_eq!(f.list().len(), 1);
        assert!(f.remove(id));
        f.add(Fault::NoBackendAlive, FaultDuration::Forever);
        f.clear();
        assert!(f.list().is_empty());
    }

    #[test]
    fn fault_json_shape() {
        let v: Fault =
            serde_json::from_str(r#"{"kind":"status_fail","message":"m"}"#).expect("parse");
        assert_eq!(
            v,
            Fault::StatusFail {
                message: "m".into(),
                commit: false
            }
        );
        let v: Fault = serde_json::from_str(r#"{"kind":"down","node":"be"}"#).expect("parse");
        assert_eq!(v, Fault::Down { node: Node::Be });
        let v: Fault =
            serde_json::from_str(r#"{"kind":"late_commit","commit_after_ms":5}"#).expect("parse");
        assert_eq!(v, Fault::LateCommit { commit_after_ms: 5 });
        let v: Fault =
            serde_json::from_str(r#"{"kind":"filtered_success","rows":2}"#).expect("parse");
        assert_eq!(v, Fault::FilteredSuccess { rows: 2 });
        let v: Fault = serde_json::from_str(r#"{"kind":"lose_rows","rows":1}"#).expect("parse");
        assert_eq!(v, Fault::LoseRows { rows: 1 });
    }
}
