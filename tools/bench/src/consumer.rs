//! The consumers of a backlog, each on its own slot: `pg_recvlogical` to /dev/null (the
//! limit) and `dbmazz run` into the StarRocks double (fast loads). A consumer is started,
//! attached (its walsender streams), frozen with its walsender (SIGSTOP on both, so nothing
//! is decoded ahead), thawed, and asked whether it has everything.
//! Invariant: the harness only signals processes it started or their walsenders.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use starrocks_double::StarRocksDouble;

use crate::error::{BenchError, Context as _, Result};
use crate::metrics;
use crate::pg::{Backlog, Source, PUBLICATION};
use crate::procfs;

/// Target table DDL in the double (one database per dbmazz consumer).
const TARGET_DDL: &str = "CREATE TABLE bench (id BIGINT NOT NULL, a INT, b VARCHAR(1048576), c DATETIME) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 4";

/// What a consumer is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Kind {
    /// pg_recvlogical, pgoutput `proto_version` 1 (or 2 with streaming on).
    Limit { proto: u8 },
    /// dbmazz; `streaming` = SOURCE_STREAMING (protocol 2); `reader_only` = the StarRocks
    /// FE is down for the whole drain, so only the reader and the spool work.
    Dbmazz { streaming: bool, reader_only: bool },
}

/// A consumer of one run: its name is its slot name and its database in the double.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Spec {
    pub name: String,
    pub kind: Kind,
}

impl Spec {
    pub fn limit(proto: u8) -> Spec {
        Spec {
            name: format!("limit_p{proto}"),
            kind: Kind::Limit { proto },
        }
    }

    pub fn dbmazz(streaming: bool, reader_only: bool) -> Spec {
        let name = match (streaming, reader_only) {
            (_, true) => "dbmazz_reader".to_string(),
            (s, false) => format!("dbmazz_p{}", if s { 2 } else { 1 }),
        };
        Spec {
            name,
            kind: Kind::Dbmazz {
                streaming,
                reader_only,
            },
        }
    }

    pub fn is_dbmazz(&self) -> bool {
        matches!(self.kind, Kind::Dbmazz { .. })
    }

    /// Short label for tables: `pg_recvlogical p1`, `dbmazz p2`, `dbmazz reader`.
    pub fn label(&self) -> String {
        match self.kind {
            Kind::Limit { proto } => format!("pg_recvlogical p{proto}"),
            Kind::Dbmazz {
                reader_only: true, ..
            } => "dbmazz reader→spool".into(),
            Kind::Dbmazz { streaming, .. } => format!("dbmazz p{}", if streaming { 2 } else { 1 }),
        }
    }
}

/// Everything a consumer needs from its run.
pub struct Env<'a> {
    pub source: &'a Source,
    pub sr: &'a StarRocksDouble,
    pub work: &'a Path,
    pub dbmazz: &'a Path,
    pub dbmazz_env: &'a [(String, String)],
    /// The tables dbmazz replicates, when not the one `bench` table (their targets are
    /// created by the caller).
    pub tables: Option<&'a [String]>,
}

/// A started consumer.
pub struct Running {
    pub spec: Spec,
    child: Option<Child>,
    pub pid: i32,
    pub walsender: i32,
    pub metrics: Option<SocketAddr>,
    pub spool_dir: Option<PathBuf>,
    pub log: PathBuf,
}

fn free_addr() -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").ctx("find a free port")?;
    l.local_addr().ctx("find a free port")
}

fn recvlogical_bin() -> PathBuf {
    pg_scratch::bin_dir()
        .map(|d| d.join("pg_recvlogical"))
        .ok()
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("pg_recvlogical"))
}

impl Running {
    /// Starts the consumer and waits until its walsender streams (slot active).
    pub async fn start(spec: &Spec, env: &Env<'_>) -> Result<Running> {
        let dir = env.work.join(&spec.name);
        std::fs::create_dir_all(&dir).ctx(format!("create {}", dir.display()))?;
        let log = dir.join("log.txt");
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .ctx(format!("create {}", log.display()))?;
        let pg = &env.source.pg;
        let (mut cmd, metrics, spool_dir) = match spec.kind {
            Kind::Limit { proto } => {
                env.source.create_slot(&spec.name).await?;
                let mut c = Command::new(recvlogical_bin());
                c.arg("-h")
                    .arg(pg.socket_dir())
                    .args(["-p", &pg.port().to_string(), "-U", "postgres"])
                    .arg("-d")
                    .arg(format!("dbname=postgres application_name={}", spec.name))
                    .args(["--slot", &spec.name, "--start", "--no-loop"])
                    .args(["-f", "/dev/null"])
                    .args(["-o", &format!("proto_version={proto}")])
                    .args(["-o", &format!("publication_names={PUBLICATION}")]);
                if proto >= 2 {
                    c.args(["-o", "streaming=on"]);
                }
                (c, None, None)
            }
            Kind::Dbmazz { streaming, .. } => {
                if env.tables.is_none() {
                    env.sr.create_table(&spec.name, TARGET_DDL)?;
                }
                let tables = env.tables.map(|t| t.join(",")).unwrap_or("bench".into());
                let http = free_addr()?;
                let grpc = free_addr()?;
                let spool = dir.join("spool");
                let mut c = Command::new(env.dbmazz);
                c.arg("run")
                    .env_clear()
                    .env("PATH", std::env::var("PATH").unwrap_or_default())
                    .env(
                        "SOURCE_URL",
                        format!(
                            "{} application_name={}",
                            pg.socket_conn_string("postgres"),
                            spec.name
                        ),
                    )
                    .env("TABLES", tables)
                    .env("SOURCE_SLOT_NAME", &spec.name)
                    .env("SOURCE_PUBLICATION_NAME", PUBLICATION)
                    .env("SOURCE_STREAMING", streaming.to_string())
                    .env("SINK_URL", env.sr.fe_http_url())
                    .env("SINK_PORT", env.sr.mysql_port().to_string())
                    .env("SINK_DATABASE", &spec.name)
                    .env("SPOOL_DIR", &spool)
                    .env("GRPC_LISTEN", grpc.to_string())
                    .env("HTTP_LISTEN", http.to_string())
                    .env("RUST_LOG", "info");
                for (k, v) in env.dbmazz_env {
                    c.env(k, v);
                }
                (c, Some(http), Some(spool))
            }
        };
        let errf = logf.try_clone().ctx("log file")?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(logf))
            .stderr(Stdio::from(errf));
        let child = cmd.spawn().ctx(format!("start {}", spec.label()))?;
        let pid = child.id() as i32;
        let mut running = Running {
            spec: spec.clone(),
            child: Some(child),
            pid,
            walsender: 0,
            metrics,
            spool_dir,
            log,
        };
        let started = Instant::now();
        loop {
            running.check_alive()?;
            let ws = env.source.walsender(&spec.name).await?;
            let connected = match running.metrics {
                Some(addr) => {
                    tokio::task::block_in_place(|| metrics::http_get(addr, "/metrics"))
                        .ok()
                        .and_then(|t| metrics::sample(&t, "dbmazz_reader_connected", None))
                        == Some(1.0)
                }
                None => true,
            };
            if let (Some(ws), true) = (ws, connected) {
                running.walsender = ws;
                return Ok(running);
            }
            if started.elapsed() > Duration::from_secs(120) {
                return Err(running.failed("did not start streaming within 120 s"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An error naming the consumer, with the tail of its log.
    pub fn failed(&self, what: &str) -> BenchError {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(25)..].join("\n");
        BenchError::Other(format!(
            "{} {what}; its log ({}) ends with:\n{tail}",
            self.spec.label(),
            self.log.display()
        ))
    }

    /// Fails when the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Err(self.failed("is not running"));
        };
        match child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(st)) => {
                self.child = None;
                Err(self.failed(&format!("exited ({st})")))
            }
            Err(e) => Err(self.failed(&format!("cannot be waited for: {e}"))),
        }
    }

    /// SIGSTOP on the client and on its walsender; returns once both are stopped.
    pub async fn freeze(&self) -> Result<()> {
        for pid in [self.pid, self.walsender] {
            procfs::signal(pid, libc::SIGSTOP).ctx(format!("SIGSTOP {pid}"))?;
        }
        let t = Instant::now();
        while [self.pid, self.walsender]
            .iter()
            .any(|p| procfs::stat(*p).map(|s| s.state) != Some('T'))
        {
            if t.elapsed() > Duration::from_secs(10) {
                return Err(self.failed("did not stop on SIGSTOP within 10 s"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// SIGCONT on the walsender, then on the client.
    pub fn thaw(&self) -> Result<()> {
        for pid in [self.walsender, self.pid] {
            procfs::signal(pid, libc::SIGCONT).ctx(format!("SIGCONT {pid}"))?;
        }
        Ok(())
    }

    /// Whether the consumer has the whole backlog: pg_recvlogical when its walsender has
    /// sent up to the backlog's end; dbmazz when the double holds every row, or (reader
    /// only) when the spool's durable LSN is past the last commit's start.
    pub async fn has_everything(&self, env: &Env<'_>, backlog: &Backlog) -> Result<bool> {
        match self.spec.kind {
            Kind::Limit { .. } => Ok(env
                .source
                .sent_lsn(self.walsender)
                .await?
                .is_some_and(|l| l >= backlog.end_lsn)),
            Kind::Dbmazz {
                reader_only: false, ..
            } => Ok(env.sr.loaded_rows(&self.spec.name, "bench") >= backlog.rows),
            Kind::Dbmazz {
                reader_only: true, ..
            } => Ok(self
                .metric("dbmazz_durable_lsn")
                .is_some_and(|l| l > backlog.before_last_commit as f64)),
        }
    }

    /// One unlabelled sample of the daemon's /metrics (None for pg_recvlogical).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let addr = self.metrics?;
        let text = tokio::task::block_in_place(|| metrics::http_get(addr, "/metrics")).ok()?;
        metrics::sample(&text, name, None)
    }

    /// Stops the consumer (SIGCONT in case it is frozen, SIGTERM, SIGKILL after 30 s).
    pub async fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if self.walsender > 0 {
            let _ = procfs::signal(self.walsender, libc::SIGCONT);
        }
        let _ = procfs::signal(self.pid, libc::SIGCONT);
        let _ = procfs::signal(self.pid, libc::SIGTERM);
        let t = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if t.elapsed() > Duration::from_secs(30) => {
                    tracing::warn!(consumer = %self.spec.name, "no exit 30 s after SIGTERM; SIGKILL");
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.walsender > 0 {
            // A stopped walsender would hold up the cluster's shutdown.
            let _ = procfs::signal(self.walsender, libc::SIGCONT);
        }
        if let Some(mut child) = self.child.take() {
            let _ = procfs::signal(self.pid, libc::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
