//! Medians over the runs of a workload and the printed table. Pure: results in, text out.
//! Each dbmazz consumer is compared with the limit consumer drained before it in the same
//! run; the ratio is the median of the per-run ratios.

use std::collections::BTreeMap;
use std::io::Write;

use crate::run::{Measure, RunResult};
use crate::stats::{mb, median};
use crate::workload::Workload;

/// Medians of one consumer over the runs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Agg {
    pub label: String,
    pub wall_s: f64,
    pub cpu_per_row_us: f64,
    pub walsender_cpu_per_row_us: f64,
    pub peak_rss_bytes: f64,
    pub spool_peak_bytes: Option<f64>,
    pub spool_after_bytes: Option<f64>,
    /// The busiest thread's name (of the first run) and its median share of the CPU.
    pub busiest_thread: Option<String>,
    pub busiest_share: Option<f64>,
    /// CPU share per thread name (medians).
    pub thread_shares: BTreeMap<String, f64>,
}

/// One line of the table: a dbmazz consumer against its limit.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Line {
    pub workload: Workload,
    pub backlog: String,
    pub rows: u64,
    pub wal_bytes: f64,
    pub limit: Agg,
    pub dbmazz: Agg,
    /// Median over runs of limit wall / dbmazz wall.
    pub x_limit: f64,
}

fn med(v: impl Iterator<Item = f64>) -> f64 {
    median(&v.collect::<Vec<_>>()).unwrap_or(f64::NAN)
}

fn med_opt(v: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    median(&v.flatten().collect::<Vec<_>>())
}

fn agg(ms: &[&Measure]) -> Agg {
    let mut names: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for m in ms {
        for t in &m.threads {
            names
                .entry(t.name.clone())
                .or_default()
                .push(t.cpu_s / m.cpu_s.max(1e-9));
        }
    }
    Agg {
        label: ms.first().map(|m| m.label.clone()).unwrap_or_default(),
        wall_s: med(ms.iter().map(|m| m.wall_s)),
        cpu_per_row_us: med(ms.iter().map(|m| m.cpu_per_row_us())),
        walsender_cpu_per_row_us: med(ms
            .iter()
            .map(|m| m.walsender_cpu_s * 1e6 / m.rows.max(1) as f64)),
        peak_rss_bytes: med(ms.iter().map(|m| m.peak_rss_bytes as f64)),
        spool_peak_bytes: med_opt(ms.iter().map(|m| m.spool_peak_bytes.map(|b| b as f64))),
        spool_after_bytes: med_opt(ms.iter().map(|m| m.spool_after_bytes.map(|b| b as f64))),
        busiest_thread: ms
            .first()
            .and_then(|m| m.busiest_thread.as_ref())
            .map(|t| t.name.clone()),
        busiest_share: med_opt(ms.iter().map(|m| {
            m.busiest_thread
                .as_ref()
                .map(|t| t.cpu_s / m.cpu_s.max(1e-9))
        })),
        thread_shares: names
            .into_iter()
            .filter_map(|(n, v)| Some((n, median(&v)?)))
            .collect(),
    }
}

/// The lines of a workload: each dbmazz consumer with the limit drained before it.
pub fn lines(workload: Workload, scale: f64, runs: &[RunResult]) -> Vec<Line> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut limit_idx = None;
    for (i, m) in first.measures.iter().enumerate() {
        if !m.name.starts_with("dbmazz") {
            limit_idx = Some(i);
            continue;
        }
        let Some(li) = limit_idx else { continue };
        let pick = |idx: usize| -> Vec<&Measure> {
            runs.iter().filter_map(|r| r.measures.get(idx)).collect()
        };
        let (lim, db) = (pick(li), pick(i));
        let x_limit = med(lim
            .iter()
            .zip(&db)
            .map(|(l, d)| l.wall_s / d.wall_s.max(1e-9)));
        out.push(Line {
            workload,
            backlog: workload.describe(scale),
            rows: first.backlog.rows,
            wal_bytes: med(runs.iter().map(|r| r.backlog.wal_bytes as f64)),
            limit: agg(&lim),
            dbmazz: agg(&db),
            x_limit,
        });
    }
    out
}

fn opt_mb(b: Option<f64>) -> String {
    b.map(mb).unwrap_or_else(|| "-".into())
}

/// Strips the ` (tid)` suffix of a thread label.
fn thread_name(label: &str) -> &str {
    label.rsplit_once(" (").map(|(n, _)| n).unwrap_or(label)
}

/// Writes the Markdown table.
pub fn write_table(out: &mut impl Write, lines: &[Line]) -> std::io::Result<()> {
    writeln!(
        out,
        "| backlog | WAL MB | limit (pg_recvlogical) | dbmazz: wall, × limit | CPU per row: limit / dbmazz | dbmazz peak RSS | busiest dbmazz thread | spool peak / after MB |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|")?;
    for l in lines {
        let proto = if l.dbmazz.label.contains("p2") {
            " (protocol 2)"
        } else {
            ""
        };
        let busiest = match (&l.dbmazz.busiest_thread, l.dbmazz.busiest_share) {
            (Some(n), Some(s)) => format!("{} {:.0}%", thread_name(n), s * 100.0),
            _ => "-".into(),
        };
        writeln!(
            out,
            "| {}{} | {} | {:.1} s | {:.1} s, **{:.2}** | {:.1} / {:.1} µs | {} MB | {} | {} / {} |",
            l.backlog,
            proto,
            mb(l.wal_bytes),
            l.limit.wall_s,
            l.dbmazz.wall_s,
            l.x_limit,
            l.limit.cpu_per_row_us,
            l.dbmazz.cpu_per_row_us,
            mb(l.dbmazz.peak_rss_bytes),
            busiest,
            opt_mb(l.dbmazz.spool_peak_bytes),
            opt_mb(l.dbmazz.spool_after_bytes),
        )?;
    }
    Ok(())
}

/// Writes the CPU share per dbmazz thread name of each line.
pub fn write_threads(out: &mut impl Write, lines: &[Line]) -> std::io::Result<()> {
    for l in lines {
        let mut v: Vec<(&String, &f64)> = l.dbmazz.thread_shares.iter().collect();
        v.sort_by(|a, b| b.1.total_cmp(a.1));
        let parts: Vec<String> = v
            .iter()
            .take(6)
            .map(|(n, s)| format!("{n} {:.0}%", **s * 100.0))
            .collect();
        writeln!(
            out,
            "- {} ({}): {}; walsender CPU per row: limit {:.1} µs, dbmazz {:.1} µs",
            l.backlog,
            l.dbmazz.label,
            parts.join(", "),
            l.limit.walsender_cpu_per_row_us,
            l.dbmazz.walsender_cpu_per_row_us
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::Backlog;
    use crate::run::ThreadCpu;

    fn m(name: &str, wall: f64, cpu: f64) -> Measure {
        Measure {
            name: name.into(),
            label: name.into(),
            rows: 1_000_000,
            wall_s: wall,
            cpu_s: cpu,
            walsender_cpu_s: 1.0,
            peak_rss_bytes: 100_000_000,
            busiest_thread: Some(ThreadCpu {
                name: "tokio-runtime-w (12)".into(),
                cpu_s: cpu / 2.0,
            }),
            threads: vec![ThreadCpu {
                name: "tokio-runtime-w".into(),
                cpu_s: cpu,
            }],
            spool_peak_bytes: None,
            spool_after_bytes: None,
            reconnects: None,
        }
    }

    fn run(limit_wall: f64, db_wall: f64) -> RunResult {
        RunResult {
            backlog: Backlog {
                rows: 1_000_000,
                txns: 100,
                start_lsn: 0,
                before_last_commit: 0,
                end_lsn: 192_000_000,
                wal_bytes: 192_000_000,
                write_s: 1.0,
            },
            measures: vec![
                m("limit_p1", limit_wall, 5.0),
                m("dbmazz_p1", db_wall, 28.0),
            ],
        }
    }

    #[test]
    fn ratio_is_the_median_of_per_run_ratios() {
        let runs = [run(10.0, 20.0), run(8.0, 10.0), run(30.0, 40.0)];
        let l = lines(Workload::Batch, 1.0, &runs);
        assert_eq!(l.len(), 1);
        // per-run ratios 0.5, 0.8, 0.75 → 0.75 (the ratio of medians would be 0.5)
        assert!((l[0].x_limit - 0.75).abs() < 1e-9);
        assert_eq!(l[0].limit.wall_s, 10.0);
        assert_eq!(l[0].dbmazz.wall_s, 20.0);
        assert!((l[0].dbmazz.cpu_per_row_us - 28.0).abs() < 1e-9);
        assert_eq!(l[0].dbmazz.busiest_share, Some(0.5));
        let mut text = Vec::new();
        write_table(&mut text, &l).expect("written");
        let text = String::from_utf8(text).expect("utf-8");
        assert!(text.contains("| 1M rows, 100 txns of 10k | 192 | 10.0 s | 20.0 s, **0.75** | 5.0 / 28.0 µs | 100 MB | tokio-runtime-w 50% |"), "{text}");
    }

    #[test]
    fn each_dbmazz_pairs_with_the_limit_before_it() {
        let mut r = run(10.0, 20.0);
        r.measures.push(m("limit_p2", 12.0, 6.0));
        r.measures.push(m("dbmazz_p2", 48.0, 30.0));
        let l = lines(Workload::Big, 1.0, &[r]);
        assert_eq!(l.len(), 2);
        assert!((l[1].x_limit - 0.25).abs() < 1e-9);
        assert_eq!(l[1].limit.label, "limit_p2");
    }
}
