//! Workload 6, many tables: `--tables N` tables of 3 columns (200 by default), their targets
//! already in the double; how long `dbmazz run` takes from start to streaming, on the first
//! start and on a restart; then one transaction touching every table and how long until
//! every table has its row; Stream Loads the double refused for too many running
//! transactions (its `max_running_txn_num_per_db` is 100 here, the default of StarRocks
//! before 3.1); peak RSS.

use std::time::{Duration, Instant};

use starrocks_double::{DoubleConfig, StarRocksDouble};

use crate::consumer::{Running, Spec};
use crate::error::{BenchError, Context as _, Result};
use crate::pg::Source;
use crate::run::{work_dir, Options};
use crate::stats::median;

/// The double's running-transaction limit in this workload.
const RUNNING_TXN_LIMIT: usize = 100;

/// One run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TablesRun {
    pub tables: usize,
    /// Spawn to streaming (reader connected), first start (slot and publication created).
    pub first_start_s: f64,
    /// The same after SIGTERM and a restart on the same spool.
    pub restart_s: f64,
    /// One transaction with a row in every table: commit to every table loaded.
    pub all_visible_s: f64,
    /// Loads the double refused with "current running txns on db … larger than limit".
    pub refused_loads: u64,
    pub peak_rss_bytes: u64,
}

/// Medians over the runs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TablesSummary {
    pub tables: usize,
    pub first_start_s: f64,
    pub restart_s: f64,
    pub all_visible_s: f64,
    pub refused_loads: f64,
    pub peak_rss_bytes: f64,
}

fn names(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("t{i:04}")).collect()
}

/// Writes one row into every table in one transaction.
async fn touch_all(source: &Source, tables: &[String], id: u64) -> Result<()> {
    let mut sql = String::from("BEGIN;\n");
    for t in tables {
        sql.push_str(&format!(
            "INSERT INTO {t} VALUES ({id}, {id}, 'row {id} of {t}');\n"
        ));
    }
    sql.push_str("COMMIT;\n");
    let client = source.connect().await?;
    client
        .batch_execute(&sql)
        .await
        .ctx("write one row into every table")?;
    Ok(())
}

/// Waits until every table has `rows` rows loaded; returns how long that took.
async fn wait_loaded(
    sr: &StarRocksDouble,
    c: &mut Running,
    tables: &[String],
    rows: u64,
    timeout: Duration,
) -> Result<f64> {
    let t = Instant::now();
    loop {
        c.check_alive()?;
        if tables
            .iter()
            .all(|tb| sr.loaded_rows(&c.spec.name, tb) >= rows)
        {
            return Ok(t.elapsed().as_secs_f64());
        }
        if t.elapsed() > timeout {
            return Err(c.failed("did not load a row of every table in time"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One run with `n` tables.
pub async fn run_once(opts: &Options, n: usize) -> Result<TablesRun> {
    let work = work_dir(opts, "tables")?;
    let source = Source::start(&opts.decoding_work_mem).await?;
    let sr = StarRocksDouble::start(DoubleConfig {
        fast_loads: true,
        max_running_txn_num_per_db: RUNNING_TXN_LIMIT,
        ..Default::default()
    })
    .await?;
    let tables = names(n);
    let spec = Spec::dbmazz(false, false);
    let mut ddl = String::new();
    for t in &tables {
        ddl.push_str(&format!(
            "CREATE TABLE {t} (id bigint PRIMARY KEY, a int, b text);\n"
        ));
        sr.create_table(
            &spec.name,
            &format!(
                "CREATE TABLE {t} (id BIGINT NOT NULL, a INT, b VARCHAR(1048576)) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 1"
            ),
        )?;
    }
    tokio::task::block_in_place(|| source.pg.psql("postgres", &ddl))?;
    let mut env = opts.env(&source, &sr, work.path());
    env.tables = Some(&tables);

    let t = Instant::now();
    let mut c = Running::start(&spec, &env).await?;
    let first_start_s = t.elapsed().as_secs_f64();
    touch_all(&source, &tables, 1).await?;
    let all_visible_s = wait_loaded(&sr, &mut c, &tables, 1, opts.drain_timeout).await?;
    c.stop().await;

    let t = Instant::now();
    let mut c = Running::start(&spec, &env).await?;
    let restart_s = t.elapsed().as_secs_f64();
    touch_all(&source, &tables, 2).await?;
    wait_loaded(&sr, &mut c, &tables, 2, opts.drain_timeout).await?;
    let peak_rss_bytes = crate::procfs::status_bytes(c.pid, "VmHWM").unwrap_or(0);
    let refused_loads = sr
        .loads()
        .iter()
        .filter(|l| l.response.message.contains("current running txns"))
        .count() as u64;
    c.stop().await;
    sr.stop().await;
    Ok(TablesRun {
        tables: n,
        first_start_s,
        restart_s,
        all_visible_s,
        refused_loads,
        peak_rss_bytes,
    })
}

/// Medians over the runs.
pub fn summarize(runs: &[TablesRun]) -> Result<TablesSummary> {
    let med = |f: fn(&TablesRun) -> f64| {
        median(&runs.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN)
    };
    let first = runs
        .first()
        .ok_or_else(|| BenchError::Other("no runs of the tables workload".into()))?;
    Ok(TablesSummary {
        tables: first.tables,
        first_start_s: med(|r| r.first_start_s),
        restart_s: med(|r| r.restart_s),
        all_visible_s: med(|r| r.all_visible_s),
        refused_loads: med(|r| r.refused_loads as f64),
        peak_rss_bytes: med(|r| r.peak_rss_bytes as f64),
    })
}

/// Writes the tables table.
pub fn write(out: &mut impl std::io::Write, s: &TablesSummary) -> std::io::Result<()> {
    writeln!(
        out,
        "| tables | start to streaming: first / restart | a row in every table: commit to all loaded | loads refused (running txns > {RUNNING_TXN_LIMIT}) | peak RSS |"
    )?;
    writeln!(out, "|---|---|---|---|---|")?;
    writeln!(
        out,
        "| {} | {:.1} / {:.1} s | {:.2} s | {:.0} | {} MB |",
        s.tables,
        s.first_start_s,
        s.restart_s,
        s.all_visible_s,
        s.refused_loads,
        crate::stats::mb(s.peak_rss_bytes),
    )?;
    writeln!(out)
}
