//! One repetition of a backlog workload: a fresh PostgreSQL and StarRocks double, every
//! consumer attached to its own slot and frozen, the backlog written, then each consumer
//! thawed in turn (the others stay frozen or are stopped) and timed until it has everything.
//! Invariant: the CPU and wall figures of a consumer cover only its own drain.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use starrocks_double::{DoubleConfig, Fault, FaultDuration, Node, StarRocksDouble};

use crate::consumer::{Env, Kind, Running};
use crate::error::{BenchError, Context as _, Result};
use crate::pg::{Backlog, Source};
use crate::procfs;
use crate::workload::Workload;

/// What every run needs.
#[derive(Debug, Clone)]
pub struct Options {
    pub dbmazz: PathBuf,
    /// Extra environment of `dbmazz run` (`--dbmazz-env K=V`).
    pub dbmazz_env: Vec<(String, String)>,
    /// PostgreSQL's logical_decoding_work_mem.
    pub decoding_work_mem: String,
    /// Where the temporary directories go (spools, logs).
    pub work_root: PathBuf,
    /// Give up on a drain after this long.
    pub drain_timeout: Duration,
    /// Keep the work directory (logs, spool) of each run.
    pub keep: bool,
}

impl Options {
    /// What a consumer needs to start, for this run's source, double and work directory.
    pub fn env<'a>(
        &'a self,
        source: &'a Source,
        sr: &'a StarRocksDouble,
        work: &'a std::path::Path,
    ) -> Env<'a> {
        Env {
            source,
            sr,
            work,
            dbmazz: &self.dbmazz,
            dbmazz_env: &self.dbmazz_env,
            tables: None,
        }
    }
}

/// One thread's (or one thread name's) CPU during a drain.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ThreadCpu {
    pub name: String,
    pub cpu_s: f64,
}

/// What one consumer did in one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Measure {
    /// Slot name (`limit_p1`, `dbmazz_p1`, ...).
    pub name: String,
    pub label: String,
    pub rows: u64,
    pub wall_s: f64,
    /// utime + stime of the client process during its drain.
    pub cpu_s: f64,
    /// utime + stime of its walsender backend during the drain.
    pub walsender_cpu_s: f64,
    /// VmHWM of the client at the end of the drain.
    pub peak_rss_bytes: u64,
    /// The busiest single thread (by tid) and its CPU.
    pub busiest_thread: Option<ThreadCpu>,
    /// CPU per thread name (threads of one name summed), busiest first.
    pub threads: Vec<ThreadCpu>,
    /// Spool bytes on disk: the most seen during the drain.
    pub spool_peak_bytes: Option<u64>,
    /// Spool bytes on disk once everything was loaded and the spool had settled.
    pub spool_after_bytes: Option<u64>,
    /// Reader reconnects during the drain (a frozen reader may time out).
    pub reconnects: Option<f64>,
}

impl Measure {
    /// CPU per row in microseconds.
    pub fn cpu_per_row_us(&self) -> f64 {
        self.cpu_s * 1e6 / self.rows.max(1) as f64
    }
}

/// The result of one repetition.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunResult {
    pub backlog: Backlog,
    pub measures: Vec<Measure>,
}

/// A fresh StarRocks double answering loads without parsing rows.
pub async fn start_double() -> Result<StarRocksDouble> {
    Ok(StarRocksDouble::start(DoubleConfig {
        fast_loads: true,
        ..Default::default()
    })
    .await?)
}

/// A work directory for one run (kept with `--keep`).
pub fn work_dir(opts: &Options, what: &str) -> Result<tempfile::TempDir> {
    std::fs::create_dir_all(&opts.work_root).ctx(format!("create {}", opts.work_root.display()))?;
    let mut dir = tempfile::Builder::new()
        .prefix(&format!("dbmazz-bench-{what}-"))
        .tempdir_in(&opts.work_root)
        .ctx("create a work directory")?;
    if opts.keep {
        dir.disable_cleanup(true);
    }
    Ok(dir)
}

/// Runs one repetition of a backlog workload.
pub async fn run_once(workload: Workload, scale: f64, opts: &Options) -> Result<RunResult> {
    let work = work_dir(opts, &format!("{workload:?}").to_lowercase())?;
    let mut source = Source::start(&opts.decoding_work_mem).await?;
    tracing::info!(postgres = %source.version().await?, "scratch PostgreSQL started");
    let sr = start_double().await?;
    let env = opts.env(&source, &sr, work.path());
    let mut running = Vec::new();
    for spec in workload.consumers() {
        tracing::info!(consumer = %spec.label(), "starting");
        let r = Running::start(&spec, &env).await?;
        r.freeze().await?;
        running.push(r);
    }
    let (txns, per_txn) = workload.shape(scale);
    tracing::info!(txns, per_txn, "writing the backlog");
    let backlog = source.write_backlog(txns, per_txn).await?;
    tracing::info!(
        wal_mb = backlog.wal_bytes / 1_000_000,
        write_s = backlog.write_s,
        "backlog written"
    );
    let env = opts.env(&source, &sr, work.path());
    let mut measures = Vec::new();
    for c in running {
        tracing::info!(consumer = %c.spec.label(), "draining");
        let m = drain(c, &env, &backlog, opts.drain_timeout).await?;
        tracing::info!(consumer = %m.label, wall_s = m.wall_s, cpu_s = m.cpu_s, "drained");
        measures.push(m);
    }
    sr.stop().await;
    Ok(RunResult { backlog, measures })
}

/// CPU seconds of a process (0 when gone).
fn cpu_s(pid: i32, tck: u64) -> f64 {
    procfs::stat(pid)
        .map(|s| s.cpu(tck).as_secs_f64())
        .unwrap_or(0.0)
}

/// Thaws one consumer, waits until it has the whole backlog, measures, stops it.
pub async fn drain(
    mut c: Running,
    env: &Env<'_>,
    backlog: &Backlog,
    timeout: Duration,
) -> Result<Measure> {
    let tck = procfs::clk_tck();
    let reader_only = matches!(
        c.spec.kind,
        Kind::Dbmazz {
            reader_only: true,
            ..
        }
    );
    let fault = reader_only.then(|| {
        env.sr
            .set_fault(Fault::Down { node: Node::Fe }, FaultDuration::Forever)
    });
    let cpu0 = cpu_s(c.pid, tck);
    let ws0 = cpu_s(c.walsender, tck);
    let threads0: BTreeMap<i32, u64> = procfs::threads(c.pid)
        .into_iter()
        .map(|t| (t.tid, t.ticks))
        .collect();
    let reconnects0 = c.metric("dbmazz_reader_reconnects_total");
    let mut spool_peak = 0u64;
    let mut last_disk = None::<Instant>;
    let t0 = Instant::now();
    c.thaw()?;
    loop {
        c.check_alive()?;
        if c.has_everything(env, backlog).await? {
            break;
        }
        if let Some(dir) = &c.spool_dir {
            if last_disk.is_none_or(|t| t.elapsed() >= Duration::from_millis(200)) {
                spool_peak = spool_peak.max(procfs::disk_bytes(dir));
                last_disk = Some(Instant::now());
            }
        }
        if t0.elapsed() > timeout {
            return Err(c.failed(&format!(
                "did not have the whole backlog within {} s",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall_s = t0.elapsed().as_secs_f64();
    let cpu = cpu_s(c.pid, tck) - cpu0;
    let ws_cpu = cpu_s(c.walsender, tck) - ws0;
    let threads1 = procfs::threads(c.pid);
    let peak_rss = procfs::status_bytes(c.pid, "VmHWM").unwrap_or(0);
    let mut busiest: Option<ThreadCpu> = None;
    let mut by_name: BTreeMap<String, f64> = BTreeMap::new();
    for t in &threads1 {
        let d = t
            .ticks
            .saturating_sub(threads0.get(&t.tid).copied().unwrap_or(0));
        let s = procfs::ticks(d, tck).as_secs_f64();
        *by_name.entry(t.name.clone()).or_default() += s;
        if busiest.as_ref().is_none_or(|b| s > b.cpu_s) {
            busiest = Some(ThreadCpu {
                name: format!("{} ({})", t.name, t.tid),
                cpu_s: s,
            });
        }
    }
    let mut threads: Vec<ThreadCpu> = by_name
        .into_iter()
        .map(|(name, cpu_s)| ThreadCpu { name, cpu_s })
        .filter(|t| t.cpu_s > 0.0)
        .collect();
    threads.sort_by(|a, b| b.cpu_s.total_cmp(&a.cpu_s));
    let reconnects = match (reconnects0, c.metric("dbmazz_reader_reconnects_total")) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let mut spool_after = None;
    if let Some(dir) = c.spool_dir.clone() {
        spool_peak = spool_peak.max(procfs::disk_bytes(&dir));
        if !reader_only {
            spool_after = Some(settled_spool(&mut c, &dir).await?);
        }
    }
    if let Some(id) = fault {
        env.sr.remove_fault(id);
    }
    let is_dbmazz = c.spec.is_dbmazz();
    let m = Measure {
        name: c.spec.name.clone(),
        label: c.spec.label(),
        rows: backlog.rows,
        wall_s,
        cpu_s: cpu,
        walsender_cpu_s: ws_cpu,
        peak_rss_bytes: peak_rss,
        busiest_thread: if is_dbmazz { busiest } else { None },
        threads: if is_dbmazz { threads } else { Vec::new() },
        spool_peak_bytes: is_dbmazz.then_some(spool_peak),
        spool_after_bytes: spool_after,
        reconnects,
    };
    c.stop().await;
    Ok(m)
}

/// Once every row is in the sink: waits until the spool holds nothing pending, then until
/// its size on disk stops shrinking (sampled each second, at most 30 s), and returns it.
async fn settled_spool(c: &mut Running, dir: &std::path::Path) -> Result<u64> {
    let t = Instant::now();
    while c.metric("dbmazz_spool_pending_records").unwrap_or(0.0) > 0.0 {
        c.check_alive()?;
        if t.elapsed() > Duration::from_secs(60) {
            return Err(BenchError::Other(format!(
                "{}: the spool still holds pending records 60 s after the sink had every row",
                c.spec.label()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut last = procfs::disk_bytes(dir);
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = procfs::disk_bytes(dir);
        if now >= last {
            return Ok(now);
        }
        last = now;
    }
    Ok(last)
}
