//! Workload 5, steady traffic: single-row transactions at a fixed rate for a while, dbmazz
//! attached and loading into the double; the commit-to-visible latency of every row. A
//! row's commit time is when its client's COMMIT returned; it is visible when the load that
//! holds it finished. Rows are matched to loads by order: loads of the one table commit in
//! commit order, so the i-th committed row is in the first load whose cumulative row count
//! exceeds i.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::consumer::{Running, Spec};
use crate::error::{BenchError, Context as _, Result};
use crate::pg::Source;
use crate::run::{start_double, work_dir, Options};
use crate::stats::{median, percentile};

/// Client connections the traffic is spread over.
const CONNECTIONS: u64 = 4;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// One run of steady traffic.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SteadyRun {
    pub target_rate: u64,
    pub achieved_rate: f64,
    pub rows: u64,
    pub loads: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub flush_interval_ms: u64,
    pub dbmazz_cpu_per_row_us: f64,
    pub peak_rss_bytes: u64,
}

/// Medians over the runs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SteadySummary {
    pub target_rate: u64,
    pub achieved_rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub flush_interval_ms: u64,
    pub dbmazz_cpu_per_row_us: f64,
    pub peak_rss_bytes: f64,
}

/// Latencies (ms) of rows committed at `commits_us` (sorted) given loads as
/// (finished_at_us, rows) in order. Rows no load covers are left out.
pub fn latencies(commits_us: &[u64], loads: &[(u64, u64)]) -> Vec<f64> {
    let mut out = Vec::with_capacity(commits_us.len());
    let mut covered = 0u64;
    let mut li = 0;
    for (i, c) in commits_us.iter().enumerate() {
        while covered <= i as u64 {
            let Some((_, rows)) = loads.get(li) else {
                return out;
            };
            covered += rows;
            li += 1;
        }
        let (finished, _) = loads[li - 1];
        out.push(finished.saturating_sub(*c) as f64 / 1e3);
    }
    out
}

/// Writes `rate` single-row transactions per second for `secs` on one connection's share;
/// returns the commit times (µs since the epoch).
async fn traffic(
    client: tokio_postgres::Client,
    first_id: u64,
    count: u64,
    per_sec: f64,
    stop_at: Instant,
) -> Result<Vec<u64>> {
    let stmt = client
        .prepare("INSERT INTO bench VALUES ($1::bigint, $2, md5($1::bigint::text) || repeat('x', 58), now())")
        .await
        .ctx("prepare the traffic insert")?;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_sec));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut commits = Vec::with_capacity(count as usize);
    for i in 0..count {
        tick.tick().await;
        if Instant::now() >= stop_at {
            break;
        }
        let id = (first_id + i) as i64;
        client
            .execute(&stmt, &[&id, &((id % 1000) as i32)])
            .await
            .ctx("insert a traffic row")?;
        commits.push(now_us());
    }
    Ok(commits)
}

/// One run: dbmazz streaming, then the traffic, then the latencies.
pub async fn run_once(opts: &Options, rate: u64, secs: u64) -> Result<SteadyRun> {
    let work = work_dir(opts, "steady")?;
    let mut source = Source::start(&opts.decoding_work_mem).await?;
    let sr = start_double().await?;
    let env = opts.env(&source, &sr, work.path());
    let mut c = Running::start(&Spec::dbmazz(false, false), &env).await?;
    let total = rate * secs;
    let share = total.div_ceil(CONNECTIONS);
    let per_sec = rate as f64 / CONNECTIONS as f64;
    let stop_at = Instant::now() + Duration::from_secs(secs) + Duration::from_millis(500);
    let first = source.take_ids(share * CONNECTIONS);
    let tck = crate::procfs::clk_tck();
    let cpu0 = crate::procfs::stat(c.pid)
        .map(|s| s.cpu(tck))
        .unwrap_or_default();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..CONNECTIONS {
        let client = source.connect().await?;
        tasks.push(tokio::spawn(traffic(
            client,
            first + k * share,
            share,
            per_sec,
            stop_at,
        )));
    }
    let mut commits = Vec::new();
    for t in tasks {
        let part = t
            .await
            .map_err(|e| BenchError::Other(format!("traffic task: {e}")))??;
        commits.extend(part);
    }
    let elapsed = started.elapsed().as_secs_f64();
    commits.sort_unstable();
    let rows = commits.len() as u64;
    let t = Instant::now();
    while sr.loaded_rows(&c.spec.name, "bench") < rows {
        c.check_alive()?;
        if t.elapsed() > opts.drain_timeout {
            return Err(c.failed("did not load the steady traffic in time"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu = crate::procfs::stat(c.pid)
        .map(|s| s.cpu(tck))
        .unwrap_or_default()
        .saturating_sub(cpu0);
    let peak_rss = crate::procfs::status_bytes(c.pid, "VmHWM").unwrap_or(0);
    let loads: Vec<(u64, u64)> = sr
        .loads()
        .into_iter()
        .filter(|l| l.db == c.spec.name && l.committed && l.response.status == "Success")
        .map(|l| (l.finished_at_unix_us, l.response.number_loaded_rows))
        .collect();
    let mut lat = latencies(&commits, &loads);
    lat.sort_by(|a, b| a.total_cmp(b));
    let flush_interval_ms = opts
        .dbmazz_env
        .iter()
        .find(|(k, _)| k == "FLUSH_INTERVAL_MS")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(5000);
    let run = SteadyRun {
        target_rate: rate,
        achieved_rate: rows as f64 / elapsed,
        rows,
        loads: loads.len() as u64,
        p50_ms: percentile(&lat, 50.0).unwrap_or(f64::NAN),
        p99_ms: percentile(&lat, 99.0).unwrap_or(f64::NAN),
        max_ms: lat.last().copied().unwrap_or(f64::NAN),
        flush_interval_ms,
        dbmazz_cpu_per_row_us: cpu.as_secs_f64() * 1e6 / rows.max(1) as f64,
        peak_rss_bytes: peak_rss,
    };
    c.stop().await;
    sr.stop().await;
    Ok(run)
}

/// Medians over the runs.
pub fn summarize(runs: &[SteadyRun]) -> SteadySummary {
    let med = |f: fn(&SteadyRun) -> f64| {
        median(&runs.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN)
    };
    SteadySummary {
        target_rate: runs.first().map(|r| r.target_rate).unwrap_or(0),
        achieved_rate: med(|r| r.achieved_rate),
        p50_ms: med(|r| r.p50_ms),
        p99_ms: med(|r| r.p99_ms),
        max_ms: med(|r| r.max_ms),
        flush_interval_ms: runs.first().map(|r| r.flush_interval_ms).unwrap_or(0),
        dbmazz_cpu_per_row_us: med(|r| r.dbmazz_cpu_per_row_us),
        peak_rss_bytes: med(|r| r.peak_rss_bytes as f64),
    }
}

/// Writes the steady-traffic table.
pub fn write(out: &mut impl std::io::Write, s: &SteadySummary) -> std::io::Result<()> {
    writeln!(
        out,
        "| steady traffic | achieved | commit-to-visible p50 / p99 / max | target p99 | dbmazz CPU per row | peak RSS |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|")?;
    writeln!(
        out,
        "| {} txn/s of 1 row | {:.0} txn/s | {:.0} / **{:.0}** / {:.0} ms | ≤ {} ms | {:.1} µs | {} MB |",
        s.target_rate,
        s.achieved_rate,
        s.p50_ms,
        s.p99_ms,
        s.max_ms,
        s.flush_interval_ms + 250,
        s.dbmazz_cpu_per_row_us,
        crate::stats::mb(s.peak_rss_bytes),
    )?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_map_to_the_load_that_holds_them() {
        let commits = [100, 200, 300, 400, 500];
        let loads = [(1_000, 2), (3_000, 2)];
        // rows 0,1 → first load; 2,3 → second; 4 → none.
        assert_eq!(latencies(&commits, &loads), vec![0.9, 0.8, 2.7, 2.6]);
        assert_eq!(latencies(&commits, &[]), Vec::<f64>::new());
        assert_eq!(latencies(&[], &loads), Vec::<f64>::new());
    }
}
