//! End-to-end harness: a private PostgreSQL, the StarRocks double in-process, and
//! `dbmazz run` as a child process pointed at both.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use pg_scratch::PgCluster;
use serde_json::{Map, Value as Json};
use starrocks_double::{DoubleConfig, StarRocksDouble};

pub const BIN: &str = env!("CARGO_BIN_EXE_dbmazz");
pub const DB: &str = "analytics";

pub struct E2e {
    pub pg: PgCluster,
    pub sr: StarRocksDouble,
    pub spool_dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
    pub child: Option<Child>,
}

impl E2e {
    /// `schema`: source DDL; `tables`: TABLES; `targets`: StarRocks DDL run on the double.
    pub async fn start(schema: &str, tables: &str, targets: &[&str]) -> E2e {
        Self::start_with_options(pg_scratch::Options::default(), schema, tables, targets).await
    }

    /// [`E2e::start`] with PostgreSQL started with `options` (e.g. a short
    /// `wal_sender_timeout`).
    pub async fn start_with_options(
        options: pg_scratch::Options,
        schema: &str,
        tables: &str,
        targets: &[&str],
    ) -> E2e {
        Self::start_full(options, DoubleConfig::default(), schema, tables, targets).await
    }

    /// [`E2e::start_with_options`] with the double configured too (e.g. its
    /// `max_running_txn_num_per_db`).
    pub async fn start_full(
        options: pg_scratch::Options,
        double: DoubleConfig,
        schema: &str,
        tables: &str,
        targets: &[&str],
    ) -> E2e {
        let pg = PgCluster::start_with(options).expect("postgres");
        pg.psql("postgres", schema).expect("schema");
        let sr = StarRocksDouble::start(double).await.expect("double");
        for ddl in targets {
            sr.create_table(DB, ddl).expect("target table");
        }
        let spool_dir = tempfile::tempdir().unwrap();
        let env = vec![
            ("SOURCE_URL".into(), pg.socket_conn_string("postgres")),
            ("TABLES".into(), tables.into()),
            ("SINK_URL".into(), sr.fe_http_url()),
            ("SINK_PORT".into(), sr.mysql_port().to_string()),
            ("SINK_DATABASE".into(), DB.into()),
            ("SINK_USER".into(), "root".into()),
            ("SINK_PASSWORD".into(), "".into()),
            (
                "SPOOL_DIR".into(),
                spool_dir.path().join("spool").display().to_string(),
            ),
            ("FLUSH_INTERVAL_MS".into(), "200".into()),
            ("SOURCE_STATUS_INTERVAL_MS".into(), "500".into()),
            ("SINK_CONNECT_TIMEOUT_MS".into(), "1000".into()),
            ("SINK_REQUEST_TIMEOUT_MS".into(), "5000".into()),
            ("GRPC_LISTEN".into(), format!("127.0.0.1:{}", free_port())),
            ("HTTP_LISTEN".into(), format!("127.0.0.1:{}", free_port())),
            ("RUST_LOG".into(), "info,dbmazz=debug".into()),
            ("LOG_FORMAT".into(), "text".into()),
        ];
        E2e {
            pg,
            sr,
            spool_dir,
            env,
            child: None,
        }
    }

    pub fn set_env(&mut self, k: &str, v: &str) {
        self.env.retain(|(a, _)| a != k);
        self.env.push((k.into(), v.into()));
    }

    /// Where the daemon's stderr goes (all runs appended).
    pub fn log_path(&self) -> PathBuf {
        self.spool_dir.path().join("daemon.log")
    }

    /// The last lines of the daemon log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub fn spool_path(&self) -> PathBuf {
        self.spool_dir.path().join("spool")
    }

    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut c = Command::new(BIN);
        c.arg("run")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.log_path())
                    .expect("daemon log"),
            ));
        for (k, v) in &self.env {
            c.env(k, v);
        }
        self.child = Some(c.spawn().expect("spawn dbmazz"));
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Some(st) = c.try_wait().unwrap() {
                    self.child = None;
                    return st;
                }
            } else {
                panic!("not running");
            }
            assert!(
                start.elapsed() < timeout,
                "dbmazz did not exit within {timeout:?}\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn sigterm(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(Duration::from_secs(60)).await
    }

    pub async fn sigkill(&mut self) {
        self.signal(libc::SIGKILL);
        self.wait_exit(Duration::from_secs(10)).await;
    }

    /// Whether the child is still running.
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    pub fn sql(&self, sql: &str) -> String {
        self.pg
            .psql("postgres", sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub fn target(&self, table: &str) -> Vec<Map<String, Json>> {
        self.sr.rows(DB, table).unwrap_or_default()
    }

    /// The slot's confirmed_flush_lsn as text.
    pub fn confirmed_flush(&self) -> String {
        self.sql(
            "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'dbmazz_slot'",
        )
    }

    /// Whether a replication slot is in use (the daemon is streaming).
    pub fn slot_active(&self) -> bool {
        self.sql("SELECT count(*) FROM pg_replication_slots WHERE active") == "1"
    }

    pub fn slot_count(&self) -> usize {
        self.sql("SELECT count(*) FROM pg_replication_slots")
            .parse()
            .unwrap()
    }

    /// Waits until `f` holds, else panics with `what` and the target state.
    pub async fn wait_for(&self, timeout: Duration, what: &str, mut f: impl FnMut(&E2e) -> bool) {
        let start = Instant::now();
        while !f(self) {
            if start.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for: {what}\n--- daemon log tail ---\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for E2e {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Rows of a source table as `id -> text of the other column`, via psql.
pub fn source_pairs(e: &E2e, sql: &str) -> Vec<(i64, String)> {
    let out = e.sql(sql);
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (a, b) = l.split_once('|').unwrap_or((l, ""));
            (a.parse().unwrap(), b.to_string())
        })
        .collect()
}

/// The same shape from the target: `id -> column as text`.
pub fn target_pairs(e: &E2e, table: &str, col: &str) -> Vec<(i64, String)> {
    let mut v: Vec<(i64, String)> = e
        .target(table)
        .iter()
        .map(|r| {
            let id = r["id"]
                .as_i64()
                .unwrap_or_else(|| r["id"].as_str().unwrap().parse().unwrap());
            let c = match &r[col] {
                Json::Null => String::new(),
                Json::String(s) => s.clone(),
                other => other.to_string(),
            };
            (id, c)
        })
        .collect();
    v.sort();
    v
}
