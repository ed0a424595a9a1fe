//! Pipeline benchmark: how fast dbmazz catches up a backlog, next to how fast PostgreSQL
//! can send the same backlog (pg_recvlogical to /dev/null), plus the daemon's peak RSS.
//!
//! `cargo bench --bench pipeline` (release build). BENCH_ROWS (default 200000) rows in
//! transactions of BENCH_TXN_ROWS (default 1000), into a scratch PostgreSQL and the
//! StarRocks test double. The double is part of the measured path, so the figure is a
//! lower bound for dbmazz itself.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pg_scratch::PgCluster;
use starrocks_double::{DoubleConfig, StarRocksDouble};

const BIN: &str = env!("CARGO_BIN_EXE_dbmazz");

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rows = env_num("BENCH_ROWS", 200_000);
    let txn_rows = env_num("BENCH_TXN_ROWS", 1000).max(1);
    let mut out = std::io::stdout();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    let pg = PgCluster::start()?;
    pg.psql(
        "postgres",
        "CREATE TABLE bench (id bigint PRIMARY KEY, a int, b text, c timestamptz);
         CREATE PUBLICATION dbmazz_pub FOR TABLE bench;
         SELECT pg_create_logical_replication_slot('dbmazz_slot', 'pgoutput');
         SELECT pg_create_logical_replication_slot('bench_raw', 'pgoutput');",
    )?;
    let sr = rt.block_on(StarRocksDouble::start(DoubleConfig::default()))?;
    sr.create_table(
        "bench",
        "CREATE TABLE bench (id BIGINT NOT NULL, a INT, b VARCHAR(1048576), c DATETIME) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 4",
    )?;

    // The backlog.
    let t = Instant::now();
    let mut done = 0;
    while done < rows {
        let n = txn_rows.min(rows - done);
        pg.psql(
            "postgres",
            &format!(
                "INSERT INTO bench SELECT g, g % 1000, md5(g::text) || repeat('x', 60), now() FROM generate_series({}, {}) g",
                done + 1,
                done + n
            ),
        )?;
        done += n;
    }
    let end_lsn = pg.psql("postgres", "SELECT pg_current_wal_lsn()")?;
    let payload: u64 = pg
        .psql("postgres", "SELECT pg_total_relation_size('bench')")?
        .parse()
        .unwrap_or(0);
    writeln!(
        out,
        "backlog: {rows} rows in {} s ({} MB table)",
        t.elapsed().as_secs_f64(),
        payload >> 20
    )?;

    // Baseline: PostgreSQL decoding and sending the backlog to pg_recvlogical.
    let t = Instant::now();
    let st = Command::new("pg_recvlogical")
        .args(["-h"])
        .arg(pg.socket_dir())
        .args([
            "-p",
            &pg.port().to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
        ])
        .args([
            "--slot",
            "bench_raw",
            "--start",
            "--no-loop",
            "-f",
            "/dev/null",
        ])
        .args([
            "-o",
            "proto_version=1",
            "-o",
            "publication_names=dbmazz_pub",
        ])
        .args(["--endpos", end_lsn.trim()])
        .stdout(Stdio::null())
        .status()?;
    let raw = t.elapsed();
    writeln!(
        out,
        "pg_recvlogical: {:.2} s, {:.0} rows/s (exit {st})",
        raw.as_secs_f64(),
        rows as f64 / raw.as_secs_f64()
    )?;

    // dbmazz: from start to the last row visible in StarRocks.
    let spool = tempfile::tempdir()?;
    let port = |_: ()| -> std::io::Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    let t = Instant::now();
    let mut child = Command::new(BIN)
        .arg("run")
        .env("SOURCE_URL", pg.socket_conn_string("postgres"))
        .env("TABLES", "bench")
        .env("SINK_URL", sr.fe_http_url())
        .env("SINK_PORT", sr.mysql_port().to_string())
        .env("SINK_DATABASE", "bench")
        .env("SPOOL_DIR", spool.path().join("spool"))
        .env(
            "FLUSH_SIZE",
            env_num("BENCH_FLUSH_SIZE", 50_000).to_string(),
        )
        .env("FLUSH_INTERVAL_MS", "200")
        .env("GRPC_LISTEN", format!("127.0.0.1:{}", port(())?))
        .env("HTTP_LISTEN", format!("127.0.0.1:{}", port(())?))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let pid = child.id();
    let mut hwm = 0;
    loop {
        hwm = hwm.max(vm_hwm_kib(pid));
        let n = sr
            .rows("bench", "bench")
            .map(|r| r.len() as u64)
            .unwrap_or(0);
        if n >= rows {
            break;
        }
        if t.elapsed() > Duration::from_secs(1800) || child.try_wait()?.is_some() {
            writeln!(out, "dbmazz did not catch up ({n} of {rows} rows)")?;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = t.elapsed();
    hwm = hwm.max(vm_hwm_kib(pid));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = child.wait();
    writeln!(
        out,
        "dbmazz catch-up (start → last row in StarRocks): {:.2} s, {:.0} rows/s, {:.0}% of pg_recvlogical's rate, peak RSS {} MiB",
        took.as_secs_f64(),
        rows as f64 / took.as_secs_f64(),
        100.0 * raw.as_secs_f64() / took.as_secs_f64(),
        hwm / 1024
    )?;
    rt.block_on(sr.stop());
    Ok(())
}
