//! StarRocks test double: a stand-in for a StarRocks 3.x FE (HTTP :8030, MySQL :9030) and
//! BE (HTTP :8040) for dbmazz's tests, benchmarks and demo, following
//! `shared/starrocks-stream-load.md`. **A test tool, not a database.**
//!
//! ```no_run
//! # async fn demo() -> Result<(), starrocks_double::DoubleError> {
//! use starrocks_double::{DoubleConfig, StarRocksDouble, Fault, FaultDuration};
//! let sr = StarRocksDouble::start(DoubleConfig::default()).await?;
//! sr.create_table("db", "CREATE TABLE t (id INT NOT NULL, v VARCHAR(10)) PRIMARY KEY(id) DISTRIBUTED BY HASH(id)")?;
//! sr.set_fault(Fault::TooManyTxns, FaultDuration::Count(1));
//! let rows = sr.rows("db", "t")?;
//! # let _ = rows; sr.stop().await; Ok(()) }
//! ```

pub mod be;
pub mod config;
pub mod control;
pub mod error;
pub mod faults;
pub mod fe;
pub mod http;
pub mod labels;
pub mod mysql;
pub mod persist;
pub mod sql;
pub mod state;
pub mod stream_load;
pub mod table;
pub mod types;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::Serialize;
use tokio::task::JoinHandle;

pub use config::DoubleConfig;
pub use error::DoubleError;
pub use faults::{Fault, FaultDuration, FaultId, FaultInfo, Node};
pub use labels::{LabelEntry, TxnState};
pub use sql::SqlOutput;
pub use state::LoadRecord;
pub use stream_load::response::LoadResponse;

use state::Shared;

/// The ports a running double listens on (all on 127.0.0.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ports {
    /// FE HTTP.
    pub fe_http_port: u16,
    /// BE HTTP.
    pub be_http_port: u16,
    /// FE MySQL.
    pub mysql_port: u16,
    /// Control API.
    pub control_port: u16,
}

/// A running double.
pub struct StarRocksDouble {
    shared: Arc<Shared>,
    ports: Ports,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for StarRocksDouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StarRocksDouble")
            .field("ports", &self.ports)
            .finish()
    }
}

async fn bind(what: &'static str, port: u16) -> Result<tokio::net::TcpListener, DoubleError> {
    http::bind(port)
        .await
        .map_err(|source| DoubleError::Bind { what, port, source })
}

fn port_of(l: &tokio::net::TcpListener, what: &'static str, port: u16) -> Result<u16, DoubleError> {
    l.local_addr()
        .map(|a| a.port())
        .map_err(|source| DoubleError::Bind { what, port, source })
}

impl StarRocksDouble {
    /// Binds all listeners on 127.0.0.1 and starts serving.
    pub async fn start(config: DoubleConfig) -> Result<Self, DoubleError> {
        let catalog = match &config.data_dir {
            Some(dir) => persist::load(dir)?,
            None => Default::default(),
        };
        let fe = bind("fe-http", config.fe_http_port).await?;
        let be = bind("be-http", config.be_http_port).await?;
        let my = bind("mysql", config.mysql_port).await?;
        let ctl = bind("control", config.control_port).await?;
        let ports = Ports {
            fe_http_port: port_of(&fe, "fe-http", config.fe_http_port)?,
            be_http_port: port_of(&be, "be-http", config.be_http_port)?,
            mysql_port: port_of(&my, "mysql", config.mysql_port)?,
            control_port: port_of(&ctl, "control", config.control_port)?,
        };
        let data_dir = config.data_dir.clone();
        let shared = Arc::new(Shared::new(config, catalog));
        shared.fe_port.store(ports.fe_http_port, Ordering::Release);
        shared.be_port.store(ports.be_http_port, Ordering::Release);
        let mut tasks = vec![
            tokio::spawn(http::serve(
                Some(Node::Fe),
                fe,
                shared.clone(),
                fe::handler(shared.clone()),
            )),
            tokio::spawn(http::serve(
                Some(Node::Be),
                be,
                shared.clone(),
                be::handler(shared.clone()),
            )),
            tokio::spawn(http::serve(
                None,
                ctl,
                shared.clone(),
                control::handler(shared.clone()),
            )),
            tokio::spawn(mysql::serve(my, shared.clone())),
        ];
        if let Some(dir) = data_dir {
            tasks.push(tokio::spawn(persist::run(shared.clone(), dir)));
        }
        tracing::info!(?ports, "starrocks-double started");
        Ok(StarRocksDouble {
            shared,
            ports,
            tasks,
        })
    }

    /// The ports.
    pub fn ports(&self) -> Ports {
        self.ports
    }
    /// `http://127.0.0.1:<fe port>`
    pub fn fe_http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.fe_http_port)
    }
    /// `http://127.0.0.1:<be port>`
    pub fn be_http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.be_http_port)
    }
    /// `http://127.0.0.1:<control port>`
    pub fn control_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.control_port)
    }
    /// FE HTTP port.
    pub fn fe_http_port(&self) -> u16 {
        self.ports.fe_http_port
    }
    /// BE HTTP port.
    pub fn be_http_port(&self) -> u16 {
        self.ports.be_http_port
    }
    /// MySQL port.
    pub fn mysql_port(&self) -> u16 {
        self.ports.mysql_port
    }
    /// Control port.
    pub fn control_port(&self) -> u16 {
        self.ports.control_port
    }

    /// Runs one SQL statement (the MySQL-port subset) with `db` as the current database.
    pub fn execute_sql(&self, db: Option<&str>, sql: &str) -> Result<SqlOutput, DoubleError> {
        let mut session = sql::Session {
            db: db.map(str::to_string),
            connection_id: 0,
        };
        sql::execute(&self.shared, &mut session, sql).map_err(|e| DoubleError::Sql {
            code: e.code,
            message: e.message,
        })
    }

    /// Creates the database if needed, then runs a `CREATE TABLE` statement in it.
    pub fn create_table(&self, db: &str, ddl: &str) -> Result<(), DoubleError> {
        self.shared.lock().catalog.create_db(db);
        self.shared.mark_dirty();
        self.execute_sql(Some(db), ddl).map(|_| ())
    }

    /// A table's rows ordered by primary key, as JSON objects (see `types::Value::to_json`).
    pub fn rows(
        &self,
        db: &str,
        table: &str,
    ) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, DoubleError> {
        let st = self.shared.lock();
        st.catalog
            .dbs
            .get(db)
            .and_then(|d| d.tables.get(table))
            .map(|t| t.rows_json())
            .ok_or_else(|| DoubleError::NotFound(format!("no table {db}.{table}")))
    }

    /// Rows committed into a table by Stream Load since the start (deletes count too); with
    /// `fast_loads` the only read-back there is.
    pub fn loaded_rows(&self, db: &str, table: &str) -> u64 {
        self.shared
            .lock()
            .loaded_rows
            .get(&(db.to_string(), table.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// SQL statements received on the MySQL port since the start (queries and executed
    /// prepared statements; pings are not counted).
    pub fn mysql_statements(&self) -> u64 {
        self.shared
            .mysql_statements
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every Stream Load the BE handled, in order.
    pub fn loads(&self) -> Vec<LoadRecord> {
        self.shared.lock().loads.clone()
    }

    /// Forgets the load log.
    pub fn clear_loads(&self) {
        self.shared.lock().loads.clear();
    }

    /// The state of a label.
    pub fn label(&self, db: &str, label: &str) -> Option<LabelEntry> {
        self.shared
            .lock()
            .catalog
            .dbs
            .get(db)
            .and_then(|d| d.labels.get(label).cloned())
    }

    /// The text behind an ErrorURL's `file=` value.
    pub fn error_log(&self, file: &str) -> Option<String> {
        self.shared.lock().error_logs.get(file).cloned()
    }

    /// Installs a fault.
    pub fn set_fault(&self, fault: Fault, duration: FaultDuration) -> FaultId {
        self.shared.faults.add(fault, duration)
    }

    /// Removes one fault.
    pub fn remove_fault(&self, id: FaultId) -> bool {
        self.shared.faults.remove(id)
    }

    /// Removes all faults.
    pub fn clear_faults(&self) {
        self.shared.faults.clear()
    }

    /// The live faults.
    pub fn faults(&self) -> Vec<FaultInfo> {
        self.shared.faults.list()
    }

    /// Saves the state now (no-op without a data directory).
    pub fn persist_now(&self) -> Result<(), DoubleError> {
        match &self.shared.config.data_dir {
            Some(dir) => persist::save(&self.shared, dir),
            None => Ok(()),
        }
    }

    /// Stops every listener (and saves the state if persistent).
    pub async fn stop(self) {
        self.shared.shutdown.send_replace(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
