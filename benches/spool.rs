//! Spool append benchmark: throughput with a flush per transaction and with group
//! commit, peak RSS (VmHWM) and bytes on disk per byte of payload.
//! Run with `cargo bench --bench spool` (SPOOL_BENCH_TXNS scales the group-commit run).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Counts allocations (a build-independent measure of the per-record work).
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.load(Ordering::Relaxed)
}

use dbmazz::core::*;
use dbmazz::spool::{dir_bytes, Spool, SpoolOptions};

const CHANGES_PER_TXN: usize = 10;
const VALUE_BYTES: usize = 200;

fn relation() -> Relation {
    Relation {
        id: 1,
        namespace: "public".into(),
        name: "bench".into(),
        replica_identity: ReplicaIdentity::Default,
        columns: ["id", "payload", "n"]
            .iter()
            .map(|n| Column {
                name: n.to_string(),
                is_key: *n == "id",
                type_oid: 25,
                type_modifier: -1,
            })
            .collect(),
    }
}

fn txn(k: u64) -> (Vec<ReaderEvent>, u64) {
    let xid = k as u32;
    let base = k * 100;
    let mut payload = 0u64;
    let mut v = vec![ReaderEvent::Begin {
        xid,
        final_lsn: Lsn(base + 99),
        commit_time: 0,
    }];
    for i in 0..CHANGES_PER_TXN as u64 {
        let id = (k * 100 + i).to_string().into_bytes();
        let text = vec![b'a' + (i % 26) as u8; VALUE_BYTES];
        let n = (k ^ i).to_string().into_bytes();
        payload += (id.len() + text.len() + n.len()) as u64;
        v.push(ReaderEvent::Change(Change {
            xid,
            subxid: xid,
            relation: 1,
            lsn: Lsn(base + i),
            op: ChangeOp::Insert {
                new: vec![
                    Value::Text(id.into()),
                    Value::Text(text.into()),
                    Value::Text(n.into()),
                ],
            },
        }));
    }
    v.push(ReaderEvent::Commit(CommitInfo {
        xid,
        commit_lsn: Lsn(base + 99),
        end_lsn: Lsn(base + 100),
        commit_time: k as i64,
    }));
    (v, payload)
}

fn vm_hwm_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

struct Run {
    name: String,
    records: u64,
    payload: u64,
    framed: u64,
    secs: f64,
    disk: u64,
    /// Reading every record back (what the loader does before planning).
    read_secs: f64,
    /// Allocations while appending (events built by the benchmark excluded) and reading.
    append_allocs: u64,
    read_allocs: u64,
}

fn run(name: &str, txns: u64, flush_every: u64) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(
        dir.path(),
        SpoolOptions {
            cache_capacity: 32 << 20,
            ..SpoolOptions::default()
        },
    )
    .expect("open");
    spool
        .append(&ReaderEvent::Relation(relation()))
        .expect("relation");
    let mut payload = 0;
    let mut append_allocs = 0;
    let t0 = Instant::now();
    for k in 1..=txns {
        let (ev, p) = txn(k);
        payload += p;
        let a0 = allocs();
        spool.append_all(&ev).expect("append");
        if k % flush_every == 0 {
            spool.flush().expect("flush");
        }
        append_allocs += allocs() - a0;
    }
    spool.flush().expect("flush");
    let secs = t0.elapsed().as_secs_f64();
    let st = spool.stats();
    let t1 = Instant::now();
    let a1 = allocs();
    let (mut from, mut read) = (0, 0u64);
    loop {
        let recs = spool.read_from(from, 10_000).expect("read");
        let Some((last, _)) = recs.last() else { break };
        from = last + 1;
        read += recs.len() as u64;
    }
    let read_secs = t1.elapsed().as_secs_f64();
    let read_allocs = allocs() - a1;
    assert_eq!(read, st.pending_records);
    Run {
        read_secs,
        append_allocs,
        read_allocs,
        name: name.to_string(),
        records: st.pending_records,
        payload,
        framed: st.pending_bytes,
        secs,
        disk: dir_bytes(dir.path()),
    }
}

fn main() {
    let mut out = std::io::stdout();
    let big: u64 = std::env::var("SPOOL_BENCH_TXNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    // SPOOL_BENCH_ONLY_GROUP=1: only the 1000-transaction group commit (for `perf stat`).
    let runs = if std::env::var_os("SPOOL_BENCH_ONLY_GROUP").is_some() {
        vec![run("group commit (1000 txns/flush)", big, 1000)]
    } else {
        vec![
            run("flush per transaction", 2_000, 1),
            run("group commit (100 txns/flush)", big, 100),
            run("group commit (1000 txns/flush)", big, 1000),
        ]
    };
    let _ = writeln!(
        out,
        "spool append benchmark ({CHANGES_PER_TXN} changes/txn, ~{VALUE_BYTES} B values)"
    );
    for r in &runs {
        let _ = writeln!(
            out,
            "{:<32} {:>9} records in {:>6.2}s: {:>9.0} records/s, {:>6.1} MB/s payload ({:>6.1} MB/s framed); disk {:.2} B per payload byte ({:.2} per framed byte); read back {:>9.0} records/s; allocations per record: {:.1} appending, {:.1} reading",
            r.name,
            r.records,
            r.secs,
            r.records as f64 / r.secs,
            r.payload as f64 / 1e6 / r.secs,
            r.framed as f64 / 1e6 / r.secs,
            r.disk as f64 / r.payload as f64,
            r.disk as f64 / r.framed as f64,
            r.records as f64 / r.read_secs,
            r.append_allocs as f64 / r.records as f64,
            r.read_allocs as f64 / r.records as f64,
        );
    }
    let _ = writeln!(
        out,
        "peak RSS (VmHWM): {:.1} MB",
        vm_hwm_kb() as f64 / 1024.0
    );
}
