//! Memory is flat in transaction size (invariant 10): the daemon's peak RSS after loading a
//! transaction ten times larger than a first one grows by little, because a large
//! transaction goes through the spool in blocks and is loaded in parts. (Before the spool
//! kept blocks in files and loaded huge transactions in parts, memory grew with the
//! transaction: 469 MB for 2M rows.) Speed and absolute memory figures are the benchmark's
//! (`tools/bench`); this only checks the shape.

mod support;

use std::time::Duration;

use support::e2e::*;

const LONG: Duration = Duration::from_secs(180);

fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_memory_does_not_grow_with_transaction_size() {
    let mut e = E2e::start(
        "CREATE TABLE big (id bigint PRIMARY KEY, v text);",
        "big",
        &["CREATE TABLE big (id BIGINT NOT NULL, v VARCHAR(1048576)) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 1"],
    )
    .await;
    e.set_env("RUST_LOG", "info");
    e.spawn();
    let pid = e.child.as_ref().unwrap().id();
    e.wait_for(LONG, "streaming", E2e::slot_active).await;
    let rows = |e: &E2e| e.sr.loaded_rows(DB, "big");
    // One transaction of 30k rows (three batches of FLUSH_SIZE), then one of 300k.
    e.sql("INSERT INTO big SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 30000) g;");
    e.wait_for(LONG, "the first transaction", |e| rows(e) >= 30_000)
        .await;
    let small = peak_rss_kb(pid);
    e.sql(
        "INSERT INTO big SELECT g, repeat(md5(g::text), 4) FROM generate_series(30001, 330000) g;",
    );
    e.wait_for(LONG, "the second transaction", |e| rows(e) >= 330_000)
        .await;
    let large = peak_rss_kb(pid);
    println!("peak RSS: {small} kB after 30k rows, {large} kB after 300k more");
    assert!(
        large <= small + 24 * 1024,
        "peak RSS grew from {small} kB after a 30k-row transaction to {large} kB after a \
         300k-row one: memory must not grow with transaction size\n{}",
        e.log_tail()
    );
    assert!(e.sigterm().await.success(), "{}", e.log_tail());
}
