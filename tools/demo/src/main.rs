//! The dbmazz demo: a scratch PostgreSQL (wal_level=logical), the StarRocks test double,
//! the real `dbmazz run` and a small traffic generator on several tables, with a live view
//! until Ctrl-C (or `--seconds`). Type `d` + Enter to take StarRocks down for a while and
//! watch the spool absorb the outage and drain after it; `q` + Enter quits. Everything is
//! cleaned up at the end, and a summary compares source and target row counts.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use pg_scratch::PgCluster;
use rand::Rng;
use starrocks_double::{DoubleConfig, Fault, FaultDuration, Node, StarRocksDouble};
use tokio::io::AsyncBufReadExt;

const DB: &str = "demo";
const TABLES: &[&str] = &["customers", "orders", "order_items"];

#[derive(Debug, Parser)]
#[command(about = "Local dbmazz demo: PostgreSQL → dbmazz → StarRocks test double")]
struct Args {
    /// Stop after this many seconds (0 = until Ctrl-C or `q`).
    #[arg(long, default_value_t = 0)]
    seconds: u64,
    /// Take StarRocks down automatically after this many seconds (0 = only with `d`).
    #[arg(long, default_value_t = 0)]
    outage_after: u64,
    /// How long an outage lasts.
    #[arg(long, default_value_t = 20)]
    outage_seconds: u64,
    /// Transactions per second of the traffic generator.
    #[arg(long, default_value_t = 20)]
    rate: u32,
    /// The dbmazz binary (default: next to this one).
    #[arg(long)]
    dbmazz: Option<PathBuf>,
    /// Write dbmazz's log here (default: discarded).
    #[arg(long)]
    daemon_log: Option<PathBuf>,
}

const SCHEMA: &str = "
CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, email text, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL, total numeric(12,2) NOT NULL, status text NOT NULL, meta jsonb, placed_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE order_items (order_id bigint, line int, sku text NOT NULL, qty int NOT NULL, price numeric(10,2) NOT NULL, PRIMARY KEY (order_id, line));
";

const TARGETS: &[&str] = &[
    "CREATE TABLE customers (id BIGINT NOT NULL, name VARCHAR(1048576), email VARCHAR(1048576), created_at DATETIME) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 1",
    "CREATE TABLE orders (id BIGINT NOT NULL, customer_id BIGINT, total DECIMAL(12,2), status VARCHAR(1048576), meta JSON, placed_at DATETIME) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 1",
    "CREATE TABLE order_items (order_id BIGINT NOT NULL, line INT NOT NULL, sku VARCHAR(1048576), qty INT, price DECIMAL(10,2)) PRIMARY KEY(order_id, line) DISTRIBUTED BY HASH(order_id) BUCKETS 1",
];

type DemoError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), DemoError> {
    let args = Args::parse();
    let mut out = std::io::stdout();
    let bin = match &args.dbmazz {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(|d| d.join("dbmazz"))
            .ok_or("cannot locate the dbmazz binary; pass --dbmazz")?,
    };
    if !bin.exists() {
        return Err(format!(
            "{} not found: build it first (cargo build --release)",
            bin.display()
        )
        .into());
    }

    writeln!(out, "starting a scratch PostgreSQL (wal_level=logical)…")?;
    let pg = PgCluster::start()?;
    pg.psql("postgres", SCHEMA)?;
    writeln!(out, "starting the StarRocks test double…")?;
    let sr = StarRocksDouble::start(DoubleConfig::default()).await?;
    for ddl in TARGETS {
        sr.create_table(DB, ddl)?;
    }
    let spool = tempfile::tempdir()?;
    let grpc = format!("127.0.0.1:{}", free_port()?);
    let daemon = Command::new(&bin)
        .arg("run")
        .env("SOURCE_URL", pg.socket_conn_string("postgres"))
        .env("TABLES", TABLES.join(","))
        .env("SINK_URL", sr.fe_http_url())
        .env("SINK_PORT", sr.mysql_port().to_string())
        .env("SINK_DATABASE", DB)
        .env("SPOOL_DIR", spool.path().join("spool"))
        .env("FLUSH_INTERVAL_MS", "1000")
        .env("GRPC_LISTEN", &grpc)
        .env("HTTP_LISTEN", format!("127.0.0.1:{}", free_port()?))
        .env(
            "RUST_LOG",
            if args.daemon_log.is_some() {
                "info,dbmazz=debug"
            } else {
                "warn"
            },
        )
        .stdout(Stdio::null())
        .stderr(match &args.daemon_log {
            Some(p) => Stdio::from(std::fs::File::create(p)?),
            None => Stdio::null(),
        })
        .spawn()?;
    let mut daemon = DaemonGuard(daemon);
    // Traffic starts once replication runs: rows written before the slot exists would
    // need the (not yet implemented) initial snapshot.
    writeln!(
        out,
        "waiting for dbmazz to create its slot and start streaming…"
    )?;
    let ready_by = Instant::now() + Duration::from_secs(60);
    loop {
        let active = pg
            .psql(
                "postgres",
                "SELECT count(*) FROM pg_replication_slots WHERE active",
            )
            .unwrap_or_default();
        if active.trim() == "1" {
            break;
        }
        if !daemon.running() || Instant::now() > ready_by {
            return Err(
                "dbmazz did not start streaming; run with --daemon-log FILE to see why".into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Traffic.
    let stop = Arc::new(AtomicBool::new(false));
    let txns = Arc::new(AtomicU64::new(0));
    let traffic = tokio::spawn(traffic(
        pg.socket_conn_string("postgres"),
        args.rate,
        stop.clone(),
        txns.clone(),
    ));

    // Keys: `d` takes StarRocks down, `q` quits.
    let (key_tx, mut key_rx) = tokio::sync::mpsc::channel::<char>(4);
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            if let Some(c) = l.trim().chars().next() {
                let _ = key_tx.send(c).await;
            }
        }
    });

    let started = Instant::now();
    let mut outage_until: Option<Instant> = None;
    let mut fault_ids = Vec::new();
    let mut auto_outage_done = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
            Some(k) = key_rx.recv() => match k {
                'q' => break,
                'd' if outage_until.is_none() => {
                    fault_ids = take_down(&sr);
                    outage_until = Some(Instant::now() + Duration::from_secs(args.outage_seconds));
                }
                _ => {}
            },
        }
        if args.outage_after > 0
            && !auto_outage_done
            && started.elapsed() >= Duration::from_secs(args.outage_after)
        {
            auto_outage_done = true;
            fault_ids = take_down(&sr);
            outage_until = Some(Instant::now() + Duration::from_secs(args.outage_seconds));
        }
        if outage_until.is_some_and(|t| Instant::now() >= t) {
            for id in fault_ids.drain(..) {
                sr.remove_fault(id);
            }
            outage_until = None;
        }
        if !daemon.running() {
            writeln!(
                out,
                "dbmazz exited unexpectedly; see its logs (RUST_LOG) by running it by hand"
            )?;
            break;
        }
        render(
            &mut out,
            &pg,
            &sr,
            &bin,
            &grpc,
            started,
            txns.load(Ordering::Relaxed),
            outage_until,
        )?;
        if args.seconds > 0 && started.elapsed() >= Duration::from_secs(args.seconds) {
            break;
        }
    }

    // Wind down: stop traffic, bring StarRocks back, let the spool drain, stop dbmazz.
    stop.store(true, Ordering::SeqCst);
    let _ = traffic.await;
    for id in fault_ids.drain(..) {
        sr.remove_fault(id);
    }
    writeln!(out, "\nstopping traffic, letting dbmazz drain the spool…")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && !counts_match(&pg, &sr) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    daemon.stop();
    writeln!(out, "\nsummary (source rows vs StarRocks rows):")?;
    let mut all_ok = true;
    for t in TABLES {
        let (s, d) = (source_count(&pg, t), target_count(&sr, t));
        all_ok &= s == d;
        writeln!(
            out,
            "  {t:<12} {s:>8} {d:>8}  {}",
            if s == d { "equal" } else { "DIFFERENT" }
        )?;
    }
    writeln!(
        out,
        "{}",
        if all_ok {
            "all tables equal"
        } else {
            "tables differ"
        }
    )?;
    sr.stop().await;
    drop(pg);
    Ok(())
}

struct DaemonGuard(Child);

impl DaemonGuard {
    fn running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }

    fn stop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if !self.running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
    }
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        if self.running() {
            self.stop();
        }
        let _ = self.0.wait();
    }
}

fn take_down(sr: &StarRocksDouble) -> Vec<starrocks_double::FaultId> {
    vec![
        sr.set_fault(Fault::Down { node: Node::Fe }, FaultDuration::Forever),
        sr.set_fault(Fault::Down { node: Node::Be }, FaultDuration::Forever),
    ]
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn source_count(pg: &PgCluster, t: &str) -> u64 {
    pg.psql("postgres", &format!("SELECT count(*) FROM {t}"))
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn target_count(sr: &StarRocksDouble, t: &str) -> u64 {
    sr.rows(DB, t).map(|r| r.len() as u64).unwrap_or(0)
}

fn counts_match(pg: &PgCluster, sr: &StarRocksDouble) -> bool {
    TABLES
        .iter()
        .all(|t| source_count(pg, t) == target_count(sr, t))
}

/// One frame of the live view.
#[allow(clippy::too_many_arguments)]
fn render(
    out: &mut impl Write,
    pg: &PgCluster,
    sr: &StarRocksDouble,
    bin: &PathBuf,
    grpc: &str,
    started: Instant,
    txns: u64,
    outage_until: Option<Instant>,
) -> std::io::Result<()> {
    let status = Command::new(bin)
        .args(["status", "--json", "--addr", grpc])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok());
    let field = |path: &[&str]| -> String {
        let mut v = status.as_ref();
        for p in path {
            v = v.and_then(|x| x.get(*p));
        }
        match v {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => "-".into(),
        }
    };
    write!(out, "\x1b[2J\x1b[H")?;
    writeln!(out, "dbmazz demo — {}s, {} source transactions   (d+Enter: StarRocks outage, q+Enter or Ctrl-C: quit)", started.elapsed().as_secs(), txns)?;
    match outage_until {
        Some(t) => writeln!(
            out,
            "StarRocks: DOWN for {}s more — the spool absorbs the changes",
            t.saturating_duration_since(Instant::now()).as_secs()
        )?,
        None => writeln!(out, "StarRocks: up")?,
    }
    writeln!(out)?;
    writeln!(
        out,
        "  {:<12} {:>10} {:>10}",
        "table", "postgres", "starrocks"
    )?;
    for t in TABLES {
        writeln!(
            out,
            "  {:<12} {:>10} {:>10}",
            t,
            source_count(pg, t),
            target_count(sr, t)
        )?;
    }
    writeln!(out)?;
    writeln!(out, "  state          {}", field(&["state"]))?;
    writeln!(out, "  stage          {}", field(&["stage"]))?;
    writeln!(out, "  received LSN   {}", field(&["received_lsn", "text"]))?;
    writeln!(out, "  durable LSN    {}", field(&["durable_lsn", "text"]))?;
    writeln!(
        out,
        "  confirmed LSN  {}",
        field(&["confirmed_lsn", "text"])
    )?;
    writeln!(
        out,
        "  lag            {} bytes, {} s",
        field(&["lag_bytes"]),
        field(&["lag_seconds"])
    )?;
    writeln!(
        out,
        "  spool          {} records, {} transactions, {} bytes pending",
        field(&["spool_records"]),
        field(&["spool_txns"]),
        field(&["spool_bytes"])
    )?;
    out.flush()
}

async fn traffic(conn: String, rate: u32, stop: Arc<AtomicBool>, txns: Arc<AtomicU64>) {
    let Ok((client, c)) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await else {
        return;
    };
    tokio::spawn(c);
    let pause = Duration::from_micros(1_000_000 / u64::from(rate.max(1)));
    let mut next_customer = 1i64;
    let mut next_order = 1i64;
    while !stop.load(Ordering::SeqCst) {
        let choice: u32 = rand::rng().random_range(0..100);
        let sql = if choice < 15 || next_customer < 5 {
            let id = next_customer;
            next_customer += 1;
            format!("INSERT INTO customers (id, name, email) VALUES ({id}, 'customer {id}', 'c{id}@example.com')")
        } else if choice < 70 {
            let id = next_order;
            next_order += 1;
            let cust = rand::rng().random_range(1..next_customer);
            let lines: i32 = rand::rng().random_range(1..4);
            let mut s = format!(
                "BEGIN; INSERT INTO orders (id, customer_id, total, status, meta) VALUES ({id}, {cust}, {}.{:02}, 'new', '{{\"channel\": \"web\", \"n\": {lines}}}');",
                rand::rng().random_range(1..500),
                rand::rng().random_range(0..100)
            );
            for l in 1..=lines {
                s.push_str(&format!(
                    "INSERT INTO order_items VALUES ({id}, {l}, 'SKU-{}', {}, 9.99);",
                    rand::rng().random_range(100..999),
                    rand::rng().random_range(1..5)
                ));
            }
            s.push_str("COMMIT;");
            s
        } else if choice < 90 && next_order > 1 {
            let id = rand::rng().random_range(1..next_order);
            format!("UPDATE orders SET status = 'shipped' WHERE id = {id}")
        } else if next_order > 1 {
            let id = rand::rng().random_range(1..next_order);
            format!("BEGIN; DELETE FROM order_items WHERE order_id = {id}; DELETE FROM orders WHERE id = {id}; COMMIT;")
        } else {
            continue;
        };
        if client.batch_execute(&sql).await.is_ok() {
            txns.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(pause).await;
    }
}
