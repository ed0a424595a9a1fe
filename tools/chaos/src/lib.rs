//! A chaos run for dbmazz. A mixed workload (inserts, updates, deletes, key changes,
//! TOASTed values, REPLICA IDENTITY FULL, truncates of one and of two tables) runs
//! against a private PostgreSQL while dbmazz (a child process) is killed with SIGKILL and
//! stopped with SIGTERM, PostgreSQL is restarted (fast and immediate) and taken down, the
//! StarRocks double is taken down port by port and answers with every transient Stream
//! Load fault, and (with a `failpoints` build) the spool's disk fills up. Throughout, the
//! slot's confirmed LSN is sampled: every transaction at or below it must already be in
//! StarRocks (invariant 1). At the end every table is compared row by row.
//!
//! Every workload transaction also inserts its number into `c_marks`, a table that is
//! never updated, deleted or truncated; `pg_current_wal_lsn()` read after its commit is
//! at or past the commit's end, so "confirmed ≥ that LSN" implies "the mark is loaded".

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pg_scratch::PgCluster;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use starrocks_double::{DoubleConfig, Fault, FaultDuration, Node, StarRocksDouble};
use tokio::sync::watch;

/// Target database in the double.
pub const DB: &str = "chaos";
/// Failpoint that makes the spool's storage answer ENOSPC (see dbmazz `src/failpoints.rs`).
pub const DISK_FULL_FAILPOINT: &str = "spool::disk-full";

const SCHEMA: &str = "
CREATE TABLE c_items (id bigint PRIMARY KEY, v text, n int, big text);
ALTER TABLE c_items ALTER COLUMN big SET STORAGE EXTERNAL;
CREATE TABLE c_full (id bigint PRIMARY KEY, v text, n int);
ALTER TABLE c_full REPLICA IDENTITY FULL;
CREATE TABLE c_trunc (id bigint PRIMARY KEY, v text);
CREATE TABLE c_trunc2 (id bigint PRIMARY KEY, v text);
CREATE TABLE c_marks (k bigint PRIMARY KEY, v text);
";
const TABLES: &str = "c_items,c_full,c_trunc,c_trunc2,c_marks";
const TARGETS: &[&str] = &[
    "CREATE TABLE c_items (id BIGINT NOT NULL, v VARCHAR(1048576), n INT, big VARCHAR(1048576)) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 1",
    "CREATE TABLE c_full (id BIGINT NOT NULL, v VARCHAR(1048576), n INT) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 1",
    "CREATE TABLE c_trunc (id BIGINT NOT NULL, v VARCHAR(1048576)) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 1",
    "CREATE TABLE c_trunc2 (id BIGINT NOT NULL, v VARCHAR(1048576)) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 1",
    "CREATE TABLE c_marks (k BIGINT NOT NULL, v VARCHAR(1048576)) PRIMARY KEY(k) DISTRIBUTED BY HASH(k) BUCKETS 1",
];
/// (table, key column, other columns) compared at the end.
const COMPARED: &[(&str, &str, &[&str])] = &[
    ("c_items", "id", &["v", "n", "big"]),
    ("c_full", "id", &["v", "n"]),
    ("c_trunc", "id", &["v"]),
    ("c_trunc2", "id", &["v"]),
    ("c_marks", "k", &["v"]),
];
/// Ids per table: small, so updates, deletes and key changes keep hitting live rows.
const IDS: i64 = 400;

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `dbmazz` binary.
    pub dbmazz: PathBuf,
    /// Length of the chaos phase (then the workload stops and the run converges).
    pub duration: Duration,
    pub seed: u64,
    /// Inject disk-full through the spool's failpoint (needs a `failpoints` build).
    pub disk_full: bool,
    /// How long convergence may take after the chaos phase.
    pub converge_timeout: Duration,
    /// Pause between workload transactions.
    pub txn_pause: Duration,
    /// No faults at all: the workload alone (to tell logic bugs from fault handling).
    pub calm: bool,
    /// Protocol 2 with streaming (`SOURCE_STREAMING=true`) and PostgreSQL's
    /// `logical_decoding_work_mem` at its 64 kB minimum, so most workload transactions
    /// reach dbmazz as streamed transactions (the spool's stream chunks under chaos).
    pub streaming: bool,
}

impl Options {
    pub fn new(dbmazz: impl Into<PathBuf>, duration: Duration) -> Self {
        Options {
            dbmazz: dbmazz.into(),
            duration,
            seed: rand::random(),
            disk_full: true,
            // A long run under heavy chaos leaves a backlog; a debug build on a shared
            // machine drains it slowly.
            converge_timeout: Duration::from_secs(240) + duration / 2,
            txn_pause: Duration::from_millis(3),
            calm: false,
            streaming: false,
        }
    }
}

/// What happened and what was found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub seed: u64,
    pub chaos_seconds: f64,
    pub converge_seconds: f64,
    pub transactions_committed: u64,
    /// Transactions PostgreSQL sent to the slot as streamed ones
    /// (`pg_stat_replication_slots.stream_txns`; its statistics restart from zero after
    /// an immediate restart, so this counts since the last one).
    pub streamed_txns: Option<i64>,
    pub sigkills: u64,
    pub sigterms: u64,
    pub pg_restarts_fast: u64,
    pub pg_restarts_immediate: u64,
    pub pg_outages: u64,
    pub starrocks_outages: u64,
    pub disk_full_runs: u64,
    /// Log lines of dbmazz about a full disk (the injected ENOSPC seen and waited out).
    pub disk_full_errors_logged: u64,
    /// Stream Load faults injected, by kind.
    pub stream_load_faults: BTreeMap<String, u64>,
    /// Samples of the slot's confirmed LSN, and transactions checked against them.
    pub confirmation_samples: u64,
    pub confirmation_checks: u64,
    /// Confirmed transactions that were committed in StarRocks but became visible only
    /// after the sample (a `Publish Timeout` load): not violations.
    pub confirmed_visible_late: u64,
    /// Transactions at or below the confirmed LSN that were not in StarRocks.
    pub confirmation_violations: Vec<String>,
    /// dbmazz exits nobody asked for.
    pub unexpected_exits: Vec<String>,
    pub rows_compared: u64,
    /// Rows that differ between PostgreSQL and StarRocks at the end.
    pub divergences: Vec<String>,
    pub converged: bool,
}

impl Report {
    /// True when nothing was lost, reverted, duplicated or confirmed early, and dbmazz
    /// never exited on its own.
    pub fn passed(&self) -> bool {
        self.converged
            && self.divergences.is_empty()
            && self.confirmation_violations.is_empty()
            && self.unexpected_exits.is_empty()
    }
}

impl Report {
    /// Stops dbmazz with SIGTERM; an unclean exit is recorded.
    async fn sigterm(&mut self, daemon: &mut Daemon) -> Result<(), String> {
        let st = daemon.sigterm().await?;
        self.sigterms += 1;
        if !st.success() {
            self.unexpected_exits.push(format!(
                "SIGTERM ended dbmazz with {st}:\n{}",
                daemon.log_tail()
            ));
        }
        Ok(())
    }

    /// Whether dbmazz exited without being told to (recorded).
    fn exited_on_its_own(&mut self, daemon: &mut Daemon) -> bool {
        let Some(exit) = daemon.exited() else {
            return false;
        };
        self.unexpected_exits.push(format!(
            "dbmazz exited on its own ({exit}):\n{}",
            daemon.log_tail()
        ));
        true
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "chaos run (seed {}): {:.0} s of chaos, converged in {:.1} s: {}",
            self.seed,
            self.chaos_seconds,
            self.converge_seconds,
            if self.passed() { "PASSED" } else { "FAILED" }
        )?;
        writeln!(
            f,
            "  transactions committed {} (streamed by PostgreSQL since its last crash: {}); dbmazz SIGKILL {} SIGTERM {}; PostgreSQL restarts fast {} immediate {}, outages {}; StarRocks outages {}; disk-full runs {}",
            self.transactions_committed,
            self.streamed_txns.map_or("unknown".to_string(), |n| n.to_string()),
            self.sigkills,
            self.sigterms,
            self.pg_restarts_fast,
            self.pg_restarts_immediate,
            self.pg_outages,
            self.starrocks_outages,
            self.disk_full_runs
        )?;
        writeln!(
            f,
            "  disk-full errors dbmazz logged {}",
            self.disk_full_errors_logged
        )?;
        let faults: Vec<String> = self
            .stream_load_faults
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        writeln!(f, "  Stream Load faults: {}", faults.join(", "))?;
        writeln!(
            f,
            "  confirmed-LSN samples {}, transactions checked {} ({} visible only after a publish timeout), violations {}",
            self.confirmation_samples,
            self.confirmation_checks,
            self.confirmed_visible_late,
            self.confirmation_violations.len()
        )?;
        writeln!(
            f,
            "  rows compared {}, divergences {}, unexpected dbmazz exits {}",
            self.rows_compared,
            self.divergences.len(),
            self.unexpected_exits.len()
        )?;
        for d in self
            .divergences
            .iter()
            .chain(&self.confirmation_violations)
            .chain(&self.unexpected_exits)
            .take(20)
        {
            writeln!(f, "  - {d}")?;
        }
        Ok(())
    }
}

/// Runs the whole thing. `Err` only when the run itself could not be set up.
pub async fn run(opts: Options) -> Result<Report, String> {
    let work = tempfile::Builder::new()
        .prefix("dbmazz-chaos-")
        .tempdir()
        .map_err(|e| format!("work dir: {e}"))?;
    let mut pg_opts = pg_scratch::Options::default().setting("wal_sender_timeout", "10s");
    if opts.streaming {
        pg_opts = pg_opts.setting("logical_decoding_work_mem", "64kB");
    }
    let mut pg = PgCluster::start_with(pg_opts).map_err(|e| format!("postgres: {e}"))?;
    pg.psql("postgres", SCHEMA)
        .map_err(|e| format!("schema: {e}"))?;
    let sr = Arc::new(
        StarRocksDouble::start(DoubleConfig::default())
            .await
            .map_err(|e| format!("double: {e}"))?,
    );
    for ddl in TARGETS {
        sr.create_table(DB, ddl)
            .map_err(|e| format!("target: {e}"))?;
    }
    let conn = pg.socket_conn_string("postgres");
    let mut daemon = Daemon {
        bin: opts.dbmazz.clone(),
        log: work.path().join("dbmazz.log"),
        env: vec![
            ("SOURCE_URL".into(), conn.clone()),
            ("TABLES".into(), TABLES.into()),
            ("SINK_URL".into(), sr.fe_http_url()),
            ("SINK_PORT".into(), sr.mysql_port().to_string()),
            ("SINK_DATABASE".into(), DB.into()),
            ("SINK_USER".into(), "root".into()),
            (
                "SPOOL_DIR".into(),
                work.path().join("spool").display().to_string(),
            ),
            ("FLUSH_INTERVAL_MS".into(), "300".into()),
            ("SOURCE_STATUS_INTERVAL_MS".into(), "500".into()),
            ("SINK_CONNECT_TIMEOUT_MS".into(), "1000".into()),
            ("SINK_REQUEST_TIMEOUT_MS".into(), "4000".into()),
            ("GRPC_LISTEN".into(), format!("127.0.0.1:{}", free_port()?)),
            ("HTTP_LISTEN".into(), format!("127.0.0.1:{}", free_port()?)),
            ("RUST_LOG".into(), "info".into()),
            ("SOURCE_STREAMING".into(), opts.streaming.to_string()),
        ],
        child: None,
    };
    let mut report = Report {
        seed: opts.seed,
        ..Report::default()
    };
    daemon.spawn(&[])?;
    wait_until(Duration::from_secs(60), || {
        pg.psql("postgres", "SELECT count(*) FROM pg_replication_slots")
            .map(|c| c == "1")
            .unwrap_or(false)
    })
    .await
    .map_err(|_| format!("dbmazz did not create its slot\n{}", daemon.log_tail()))?;

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let workload = tokio::spawn(workload(
        conn.clone(),
        ledger.clone(),
        stop_rx.clone(),
        opts.seed,
        opts.txn_pause,
        if opts.streaming { 10 } else { 0 },
    ));
    let sampler_state = Arc::new(Mutex::new(SamplerState::default()));
    let sampler = tokio::spawn(sampler(
        conn.clone(),
        sr.clone(),
        ledger.clone(),
        sampler_state.clone(),
        stop_rx,
    ));

    // The chaos phase.
    let mut rng = StdRng::seed_from_u64(opts.seed ^ 0x5eed);
    let mut first_round: Vec<u32> = vec![0, 15, 22, 30, 36, 41, 50, 60, 61, 62];
    for i in (1..first_round.len()).rev() {
        first_round.swap(i, rng.random_range(0..=i));
    }
    let started = Instant::now();
    while started.elapsed() < opts.duration {
        tokio::time::sleep(Duration::from_millis(rng.random_range(1500..4500))).await;
        if report.exited_on_its_own(&mut daemon) {
            daemon.spawn(&[])?;
        }
        // Every kind of action once first (in random order), so even a short run covers
        // them all; then at random, weighted.
        let pick = if opts.calm {
            continue;
        } else if let Some(p) = first_round.pop() {
            p
        } else {
            rng.random_range(0..100)
        };
        match pick {
            0..=14 => {
                daemon.sigkill();
                report.sigkills += 1;
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..1500))).await;
                daemon.spawn(&[])?;
            }
            15..=21 => {
                report.sigterm(&mut daemon).await?;
                daemon.spawn(&[])?;
            }
            22..=29 => {
                pg.restart().map_err(|e| format!("pg restart: {e}"))?;
                report.pg_restarts_fast += 1;
            }
            30..=35 => {
                pg.stop_immediate().map_err(|e| format!("pg stop: {e}"))?;
                pg.start_again().map_err(|e| format!("pg start: {e}"))?;
                report.pg_restarts_immediate += 1;
            }
            36..=40 => {
                pg.stop().map_err(|e| format!("pg stop: {e}"))?;
                tokio::time::sleep(Duration::from_millis(rng.random_range(2000..6000))).await;
                pg.start_again().map_err(|e| format!("pg start: {e}"))?;
                report.pg_outages += 1;
            }
            41..=49 => {
                let node = [Node::Fe, Node::Be, Node::Mysql][rng.random_range(0..3)];
                let secs = rng.random_range(2..8);
                sr.set_fault(
                    Fault::Down { node },
                    FaultDuration::For(Duration::from_secs(secs)),
                );
                report.starrocks_outages += 1;
            }
            50..=54 if opts.disk_full => {
                // A run of dbmazz whose spool storage fails with ENOSPC for a while.
                report.sigterm(&mut daemon).await?;
                let n = rng.random_range(1..20);
                let spec = format!("{DISK_FULL_FAILPOINT}={n}*off->8*return->off");
                daemon.spawn(&[("FAILPOINTS", &spec)])?;
                report.disk_full_runs += 1;
            }
            _ => {
                let (name, fault, dur) = stream_load_fault(&mut rng);
                sr.set_fault(fault, dur);
                *report.stream_load_faults.entry(name.into()).or_default() += 1;
            }
        }
    }
    report.chaos_seconds = started.elapsed().as_secs_f64();

    // Converge: the workload stops, every fault ends, dbmazz runs on a healthy world.
    let _ = stop_tx.send(true);
    let _ = workload.await;
    sr.clear_faults();
    pg.start_again().map_err(|e| format!("pg start: {e}"))?;
    report.exited_on_its_own(&mut daemon);
    if daemon.child.is_none() {
        daemon.spawn(&[])?;
    }
    let converge_start = Instant::now();
    let final_lsn = current_lsn(&conn).await?;
    let mut last_diff = Vec::new();
    let mut rows = 0;
    report.converged = false;
    while converge_start.elapsed() < opts.converge_timeout {
        let (n, diffs) = compare(&conn, &sr).await?;
        rows = n;
        let confirmed = confirmed_lsn(&conn).await.unwrap_or(0);
        if diffs.is_empty() && confirmed >= final_lsn {
            report.converged = true;
            last_diff.clear();
            break;
        }
        last_diff = diffs;
        if report.exited_on_its_own(&mut daemon) {
            daemon.spawn(&[])?;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    report.converge_seconds = converge_start.elapsed().as_secs_f64();
    report.rows_compared = rows;
    report.divergences = last_diff;
    if !report.converged && report.divergences.is_empty() {
        report.divergences.push(format!(
            "the slot's confirmed LSN never reached {} after the workload",
            fmt_lsn(final_lsn)
        ));
    }
    let _ = sampler.await;
    {
        let s = sampler_state.lock().map_err(|_| "sampler poisoned")?;
        report.confirmation_samples = s.samples;
        report.confirmation_checks = s.checks;
        report.confirmed_visible_late = s.late_visible;
        report.confirmation_violations = s.violations.clone();
    }
    report.transactions_committed = ledger.lock().map_err(|_| "ledger poisoned")?.count;
    report.streamed_txns = streamed_txns(&conn).await;
    report.disk_full_errors_logged = std::fs::read_to_string(&daemon.log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains("no space left"))
        .count() as u64;
    let st = daemon.sigterm().await?;
    if !st.success() {
        report.unexpected_exits.push(format!(
            "the final SIGTERM ended dbmazz with {st}:\n{}",
            daemon.log_tail()
        ));
    }
    if !report.passed() {
        let keep = work.keep();
        eprintln_report_location(&keep);
    }
    Ok(report)
}

/// Where the failed run's files were kept (the binary prints it; the library returns it
/// through stderr only in this one place, since a failed chaos run is investigated by hand).
fn eprintln_report_location(dir: &Path) {
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "chaos: the failed run's files (dbmazz.log, spool) are kept in {}",
        dir.display()
    );
}

/// A transient Stream Load fault, at random.
fn stream_load_fault(rng: &mut StdRng) -> (&'static str, Fault, FaultDuration) {
    let n = rng.random_range(1..4);
    match rng.random_range(0..12) {
        11 => (
            "late_commit",
            Fault::LateCommit {
                commit_after_ms: rng.random_range(1000..6000),
            },
            FaultDuration::Count(1),
        ),
        0 => (
            "http_5xx",
            Fault::Http5xx {
                node: if rng.random_bool(0.5) {
                    Node::Fe
                } else {
                    Node::Be
                },
                status: [500, 502, 503][rng.random_range(0..3)],
            },
            FaultDuration::Count(n),
        ),
        1 => (
            "hang",
            Fault::Hang { node: Node::Be },
            FaultDuration::Count(1),
        ),
        2 => (
            "slow",
            Fault::Slow {
                node: Node::Be,
                delay_ms: rng.random_range(200..1500),
            },
            FaultDuration::For(Duration::from_secs(3)),
        ),
        3 => (
            "fail_too_many_txns_message",
            Fault::StatusFail {
                message: "current running txns on db 10001 is 1000, larger than limit 1000"
                    .into(),
                commit: false,
            },
            FaultDuration::Count(n),
        ),
        4 => (
            "fail_status_unknown_committed",
            Fault::StatusFail {
                message: "Commit transaction fail cause Timeout, Transaction status unknown, you can retry with same label.".into(),
                commit: true,
            },
            FaultDuration::Count(1),
        ),
        5 => (
            "publish_timeout",
            Fault::PublishTimeout {
                visible_after_ms: rng.random_range(0..1000),
            },
            FaultDuration::Count(n),
        ),
        6 => (
            "label_running",
            Fault::LabelRunning {
                hold_ms: rng.random_range(500..3000),
            },
            FaultDuration::Count(1),
        ),
        7 => ("too_many_txns", Fault::TooManyTxns, FaultDuration::Count(n)),
        8 => (
            "drop_connection",
            Fault::DropConnection {
                commit: rng.random_bool(0.5),
            },
            FaultDuration::Count(1),
        ),
        9 => (
            "no_backend_alive",
            Fault::NoBackendAlive,
            FaultDuration::Count(n),
        ),
        _ => (
            "be_shutting_down",
            Fault::StatusFail {
                message: "Service is shutting down, please retry later!".into(),
                commit: false,
            },
            FaultDuration::Count(n),
        ),
    }
}

/// The dbmazz child.
struct Daemon {
    bin: PathBuf,
    log: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Daemon {
    fn spawn(&mut self, extra: &[(&str, &str)]) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("dbmazz log: {e}"))?;
        let mut c = Command::new(&self.bin);
        c.arg("run")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        for (k, v) in &self.env {
            c.env(k, v);
        }
        for (k, v) in extra {
            c.env(k, v);
        }
        self.child = Some(
            c.spawn()
                .map_err(|e| format!("spawn {}: {e}", self.bin.display()))?,
        );
        Ok(())
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    fn sigkill(&mut self) {
        self.signal(libc::SIGKILL);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    async fn sigterm(&mut self) -> Result<ExitStatus, String> {
        self.signal(libc::SIGTERM);
        let start = Instant::now();
        loop {
            let Some(c) = self.child.as_mut() else {
                return Err("dbmazz is not running".into());
            };
            if let Ok(Some(st)) = c.try_wait() {
                self.child = None;
                return Ok(st);
            }
            if start.elapsed() > Duration::from_secs(90) {
                let tail = self.log_tail();
                self.sigkill();
                return Err(format!(
                    "dbmazz did not stop within 90 s of SIGTERM\n{tail}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The exit status when the child ended (and forgets it).
    fn exited(&mut self) -> Option<ExitStatus> {
        let st = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(st)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// Transactions known to be committed, with an LSN at or past their commit's end.
#[derive(Default)]
struct Ledger {
    count: u64,
    marks: Vec<(i64, u64)>,
}

#[derive(Default)]
struct SamplerState {
    samples: u64,
    checks: u64,
    /// Index into the ledger's marks up to which every mark was checked.
    verified: usize,
    /// Confirmed transactions not yet visible when checked: (mark, commit LSN, confirmed
    /// LSN, when first seen missing). StarRocks answers `Publish Timeout` for a load that
    /// is committed but becomes visible later; such a load may be confirmed (it is
    /// durable in StarRocks), so a missing mark is a violation only if it is still missing
    /// after [`VISIBILITY_GRACE`].
    suspects: Vec<(i64, u64, u64, Instant)>,
    /// Suspects that became visible within the grace.
    late_visible: u64,
    violations: Vec<String>,
}

/// Longer than the longest `visible_after_ms` the chaos run gives a publish timeout.
const VISIBILITY_GRACE: Duration = Duration::from_secs(3);

async fn connect(conn: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn random_word(rng: &mut StdRng, len: usize) -> String {
    (0..len)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect()
}

/// One random transaction (SQL text) that also records mark `k`.
fn transaction(rng: &mut StdRng, k: i64) -> String {
    let mut sql = String::from("BEGIN;\n");
    if rng.random_range(0..400) == 0 {
        sql.push_str(if rng.random_bool(0.5) {
            "TRUNCATE c_trunc;\n"
        } else {
            "TRUNCATE c_trunc, c_trunc2;\n"
        });
    }
    for _ in 0..rng.random_range(1..7) {
        let id = rng.random_range(1..=IDS);
        let len = rng.random_range(1..12);
        let v = random_word(rng, len);
        let n = rng.random_range(-1000..1000);
        let stmt = match rng.random_range(0..16) {
            0..=2 => {
                let big = if rng.random_range(0..4) == 0 {
                    format!("repeat('{}', 800)", random_word(rng, 12))
                } else {
                    "NULL".into()
                };
                format!("INSERT INTO c_items VALUES ({id}, '{v}', {n}, {big}) ON CONFLICT (id) DO UPDATE SET v = excluded.v, n = excluded.n;")
            }
            3..=4 => format!("UPDATE c_items SET v = '{v}' WHERE id = {id};"),
            5 => format!(
                "UPDATE c_items SET big = repeat('{}', 800) WHERE id = {id};",
                random_word(rng, 12)
            ),
            6 => format!("DELETE FROM c_items WHERE id = {id};"),
            7 => {
                // Key changes only of rows without a TOASTed value: under REPLICA
                // IDENTITY DEFAULT the server does not send an unchanged TOASTed value
                // with the new key (a documented limit; c_full has them all).
                let to = rng.random_range(1..=IDS);
                format!("UPDATE c_items SET id = {to} WHERE id = {id} AND big IS NULL AND NOT EXISTS (SELECT 1 FROM c_items WHERE id = {to});")
            }
            8..=9 => format!("INSERT INTO c_full VALUES ({id}, '{v}', {n}) ON CONFLICT (id) DO UPDATE SET v = excluded.v;"),
            10 => format!("UPDATE c_full SET n = {n} WHERE id = {id};"),
            11 => format!("DELETE FROM c_full WHERE id = {id};"),
            12 => {
                let to = rng.random_range(1..=IDS);
                format!("UPDATE c_full SET id = {to} WHERE id = {id} AND NOT EXISTS (SELECT 1 FROM c_full WHERE id = {to});")
            }
            13 => format!("INSERT INTO c_trunc2 VALUES ({id}, '{v}') ON CONFLICT (id) DO UPDATE SET v = excluded.v;"),
            14 => format!("DELETE FROM c_trunc WHERE id = {id};"),
            _ => format!("INSERT INTO c_trunc VALUES ({id}, '{v}') ON CONFLICT (id) DO UPDATE SET v = excluded.v;"),
        };
        sql.push_str(&stmt);
        sql.push('\n');
    }
    sql.push_str(&format!(
        "INSERT INTO c_marks VALUES ({k}, 'm{k}');\nCOMMIT;"
    ));
    sql
}

async fn workload(
    conn: String,
    ledger: Arc<Mutex<Ledger>>,
    stop: watch::Receiver<bool>,
    seed: u64,
    pause: Duration,
    big_every: i64,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut k: i64 = 0;
    while !*stop.borrow() {
        let Ok(client) = connect(&conn).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        while !*stop.borrow() {
            k += 1;
            let mut sql = transaction(&mut rng, k);
            if big_every > 0 && k % big_every == 0 {
                // About 130 kB of changes: past logical_decoding_work_mem (64 kB), so
                // PostgreSQL streams the transaction.
                sql = sql.replacen(
                    "BEGIN;\n",
                    &format!(
                        "BEGIN;\nINSERT INTO c_trunc2 SELECT g, repeat(md5(g::text || '{k}'), 8) \
                         FROM generate_series(1, {IDS}) g ON CONFLICT (id) DO UPDATE SET v = excluded.v;\n"
                    ),
                    1,
                );
            }
            match client.batch_execute(&sql).await {
                Ok(()) => {
                    let lsn = client
                        .query_one("SELECT pg_current_wal_lsn()::text", &[])
                        .await
                        .ok()
                        .and_then(|r| r.try_get::<_, String>(0).ok())
                        .and_then(|s| parse_lsn(&s));
                    if let Ok(mut l) = ledger.lock() {
                        l.count += 1;
                        if let Some(lsn) = lsn {
                            l.marks.push((k, lsn));
                        }
                    }
                }
                Err(_) if client.is_closed() => break,
                Err(_) => {
                    let _ = client.batch_execute("ROLLBACK").await;
                }
            }
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
    }
}

async fn sampler(
    conn: String,
    sr: Arc<StarRocksDouble>,
    ledger: Arc<Mutex<Ledger>>,
    state: Arc<Mutex<SamplerState>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.changed() => return,
        }
        let Ok(confirmed) = confirmed_lsn(&conn).await else {
            continue;
        };
        // Read StarRocks after the confirmed LSN: a confirmed transaction was loaded
        // before it was confirmed.
        let marks: BTreeSet<i64> = sr
            .rows(DB, "c_marks")
            .unwrap_or_default()
            .iter()
            .filter_map(|r| r.get("k").and_then(|v| v.as_i64()))
            .collect();
        let Ok(l) = ledger.lock() else { return };
        let Ok(mut s) = state.lock() else { return };
        s.samples += 1;
        let now = Instant::now();
        let suspects = std::mem::take(&mut s.suspects);
        for (k, lsn, confirmed_then, seen) in suspects {
            if marks.contains(&k) {
                s.late_visible += 1;
            } else if now.duration_since(seen) < VISIBILITY_GRACE {
                s.suspects.push((k, lsn, confirmed_then, seen));
            } else if s.violations.len() < 20 {
                s.violations.push(format!(
                    "transaction {k} (committed by {}) is not in StarRocks {} s after the slot confirmed {}",
                    fmt_lsn(lsn),
                    VISIBILITY_GRACE.as_secs(),
                    fmt_lsn(confirmed_then)
                ));
            }
        }
        while s.verified < l.marks.len() && l.marks[s.verified].1 <= confirmed {
            let (k, lsn) = l.marks[s.verified];
            s.checks += 1;
            if !marks.contains(&k) {
                s.suspects.push((k, lsn, confirmed, now));
            }
            s.verified += 1;
        }
    }
}

async fn confirmed_lsn(conn: &str) -> Result<u64, String> {
    let client = connect(conn).await.map_err(|e| e.to_string())?;
    let row = client
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'dbmazz_slot'",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    let s: Option<String> = row.try_get(0).map_err(|e| e.to_string())?;
    s.and_then(|s| parse_lsn(&s))
        .ok_or_else(|| "no confirmed LSN".into())
}

async fn streamed_txns(conn: &str) -> Option<i64> {
    let client = connect(conn).await.ok()?;
    client
        .query_opt(
            "SELECT stream_txns FROM pg_stat_replication_slots WHERE slot_name = 'dbmazz_slot'",
            &[],
        )
        .await
        .ok()
        .flatten()
        .and_then(|r| r.try_get::<_, i64>(0).ok())
}

async fn current_lsn(conn: &str) -> Result<u64, String> {
    let client = connect(conn).await.map_err(|e| format!("postgres: {e}"))?;
    let row = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .map_err(|e| format!("postgres: {e}"))?;
    let s: String = row.try_get(0).map_err(|e| e.to_string())?;
    parse_lsn(&s).ok_or_else(|| format!("bad LSN {s}"))
}

/// Compares every table row by row: (rows compared, differences).
async fn compare(conn: &str, sr: &StarRocksDouble) -> Result<(u64, Vec<String>), String> {
    let client = connect(conn).await.map_err(|e| format!("postgres: {e}"))?;
    let mut diffs = Vec::new();
    let mut n = 0;
    for (table, key, cols) in COMPARED {
        let select = std::iter::once(*key)
            .chain(cols.iter().copied())
            .map(|c| format!("{c}::text"))
            .collect::<Vec<_>>()
            .join(", ");
        let rows = client
            .query(&format!("SELECT {select} FROM {table}"), &[])
            .await
            .map_err(|e| format!("postgres: {e}"))?;
        let mut source: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
        for r in rows {
            let k: String = r.try_get(0).map_err(|e| e.to_string())?;
            let vals = (1..=cols.len())
                .map(|i| r.try_get::<_, Option<String>>(i))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            source.insert(k, vals);
        }
        let mut target: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
        for r in sr.rows(DB, table).unwrap_or_default() {
            let text = |v: Option<&serde_json::Value>| match v {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(other) => Some(other.to_string()),
            };
            let Some(k) = text(r.get(*key)) else { continue };
            target.insert(k, cols.iter().map(|c| text(r.get(*c))).collect());
        }
        n += source.len() as u64;
        for (k, v) in &source {
            match target.get(k) {
                None => diffs.push(format!("{table} {key}={k}: missing in StarRocks")),
                Some(t) if t != v => diffs.push(format!(
                    "{table} {key}={k}: StarRocks has {} but PostgreSQL {}",
                    short(t),
                    short(v)
                )),
                _ => {}
            }
        }
        for k in target.keys().filter(|k| !source.contains_key(*k)) {
            diffs.push(format!(
                "{table} {key}={k}: in StarRocks but not in PostgreSQL"
            ));
        }
    }
    Ok((n, diffs))
}

fn short(v: &[Option<String>]) -> String {
    let parts: Vec<String> = v
        .iter()
        .map(|x| match x {
            None => "NULL".into(),
            Some(s) if s.len() > 24 => format!("{}…({} chars)", &s[..24], s.len()),
            Some(s) => s.clone(),
        })
        .collect();
    format!("({})", parts.join(", "))
}

/// `X/Y` → u64.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

fn fmt_lsn(v: u64) -> String {
    format!("{:X}/{:X}", v >> 32, v & 0xffff_ffff)
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("free port: {e}"))
}

async fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> Result<(), ()> {
    let start = Instant::now();
    while !f() {
        if start.elapsed() > timeout {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_parse_and_print() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(fmt_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("nope"), None);
    }

    #[test]
    fn transactions_always_record_their_mark() {
        let mut rng = StdRng::seed_from_u64(1);
        for k in 1..200 {
            let t = transaction(&mut rng, k);
            assert!(t.starts_with("BEGIN;"));
            assert!(t.ends_with("COMMIT;"));
            assert!(t.contains(&format!("INSERT INTO c_marks VALUES ({k}, 'm{k}')")));
        }
    }
}
