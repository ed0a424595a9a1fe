//! The shared state of a double: catalog (databases, tables, labels), the load log, the
//! error logs behind ErrorURL, faults and listener addresses. One mutex guards the catalog
//! and is never held across an await, so every load commits atomically.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::DoubleConfig;
use crate::faults::Faults;
use crate::labels::LabelStore;
use crate::stream_load::response::LoadResponse;
use crate::table::Table;

/// One database.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Database {
    /// Numeric id (used in "current running txns on db <id>").
    pub id: u64,
    /// Tables by name.
    pub tables: BTreeMap<String, Table>,
    /// Labels.
    pub labels: LabelStore,
}

/// Everything that persistence saves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Catalog {
    /// Databases by name.
    pub dbs: BTreeMap<String, Database>,
    /// Next database/table id.
    pub next_id: u64,
    /// Next transaction id.
    pub next_txn_id: i64,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            dbs: BTreeMap::new(),
            next_id: 10_001,
            next_txn_id: 1_000,
        }
    }
}

impl Catalog {
    /// Allocates an id.
    pub fn alloc_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Allocates a transaction id.
    pub fn alloc_txn(&mut self) -> i64 {
        let id = self.next_txn_id;
        self.next_txn_id += 1;
        id
    }

    /// Creates a database if missing; returns whether it was created.
    pub fn create_db(&mut self, name: &str) -> bool {
        if self.dbs.contains_key(name) {
            return false;
        }
        let id = self.alloc_id();
        self.dbs.insert(
            name.to_string(),
            Database {
                id,
                ..Default::default()
            },
        );
        true
    }
}

/// A record of one Stream Load handled by the BE, for assertions.
#[derive(Debug, Clone, Serialize)]
pub struct LoadRecord {
    /// Sequence number (1-based, in arrival order of the replies).
    pub seq: u64,
    /// Database from the path.
    pub db: String,
    /// Table from the path.
    pub table: String,
    /// Label used (sent or generated).
    pub label: String,
    /// Request headers in order, `Authorization` redacted.
    pub headers: Vec<(String, String)>,
    /// Whether the rows were committed (true also for injected Fail-with-commit).
    pub committed: bool,
    /// Whether a reply was sent (false for hang/drop faults).
    pub replied: bool,
    /// The response body sent (or that would have been sent).
    pub response: LoadResponse,
    /// When the load finished (its rows visible if committed), microseconds since the Unix
    /// epoch.
    pub finished_at_unix_us: u64,
}

/// Mutable state behind the mutex.
#[derive(Debug, Default)]
pub struct State {
    /// The catalog.
    pub catalog: Catalog,
    /// Log of loads.
    pub loads: Vec<LoadRecord>,
    /// Error logs by file name (bounded).
    pub error_logs: HashMap<String, String>,
    error_order: VecDeque<String>,
    /// Rows committed per (database, table), in both modes (deletes count too).
    pub loaded_rows: HashMap<(String, String), u64>,
}

const MAX_ERROR_LOGS: usize = 1000;

impl State {
    /// Stores an error log and returns its file name.
    pub fn add_error_log(&mut self, content: String) -> String {
        let file = format!("error_log_{:016x}_{:016x}", rand_u64(), rand_u64());
        self.error_logs.insert(file.clone(), content);
        self.error_order.push_back(file.clone());
        while self.error_order.len() > MAX_ERROR_LOGS {
            if let Some(old) = self.error_order.pop_front() {
                self.error_logs.remove(&old);
            }
        }
        file
    }

    /// Counts rows committed into a table.
    pub fn add_loaded_rows(&mut self, db: &str, table: &str, rows: u64) {
        *self
            .loaded_rows
            .entry((db.to_string(), table.to_string()))
            .or_default() += rows;
    }

    /// Appends a load record.
    pub fn record_load(&mut self, mut rec: LoadRecord) {
        rec.seq = self.loads.len() as u64 + 1;
        self.loads.push(rec);
    }
}

fn rand_u64() -> u64 {
    let u = uuid::Uuid::new_v4();
    let b = u.as_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// State shared by every listener of one double.
#[derive(Debug)]
pub struct Shared {
    /// Configuration.
    pub config: DoubleConfig,
    state: Mutex<State>,
    /// Faults.
    pub faults: Faults,
    /// Actual FE HTTP port.
    pub fe_port: AtomicU16,
    /// Actual BE HTTP port.
    pub be_port: AtomicU16,
    /// Set when the catalog changed and persistence should save it.
    pub dirty: AtomicBool,
    /// Becomes true on stop.
    pub shutdown: watch::Sender<bool>,
    /// SQL statements received on the MySQL port (queries and executed prepared
    /// statements; pings and connection setup are not statements).
    pub mysql_statements: AtomicU64,
}

impl Shared {
    /// New shared state.
    pub fn new(config: DoubleConfig, catalog: Catalog) -> Self {
        Shared {
            config,
            state: Mutex::new(State {
                catalog,
                ..Default::default()
            }),
            faults: Faults::default(),
            fe_port: AtomicU16::new(0),
            be_port: AtomicU16::new(0),
            dirty: AtomicBool::new(false),
            shutdown: watch::channel(false).0,
            mysql_statements: AtomicU64::new(0),
        }
    }

    /// Locks the state (a poisoned lock is recovered: the state is plain data).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the catalog as changed.
    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    /// The BE base URL used in ErrorURL.
    pub fn be_base(&self) -> String {
        format!(
            "http://{}:{}",
            self.config.be_host,
            self.be_port.load(Ordering::Acquire)
        )
    }

    /// Checks Basic credentials.
    pub fn check_credentials(&self, user: &str, password: &str) -> bool {
        // `user@cluster` is accepted: the part before '@' is the user.
        let user = user.split('@').next().unwrap_or(user);
        user == self.config.user && password == self.config.password
    }
}
