//! A job of many tables: what dbmazz asks StarRocks at start does not grow with the number
//! of tables (one catalog lookup per table made 200 tables take half a minute to start, every
//! restart), and a window touching every table keeps its Stream Loads within
//! MAX_CONCURRENT_LOADS, so a StarRocks with a `max_running_txn_num_per_db` limit never
//! refuses one (it refused all but the first `limit` when every table loaded at once).

mod support;

use std::time::Duration;

use starrocks_double::{DoubleConfig, Fault, FaultDuration};
use support::e2e::*;

const TABLES: usize = 120;
/// The double's running-transaction limit, and dbmazz's bound.
const LIMIT: usize = 4;
const LONG: Duration = Duration::from_secs(90);

fn names() -> Vec<String> {
    (1..=TABLES).map(|i| format!("t{i:03}")).collect()
}

fn refused(e: &E2e) -> usize {
    e.sr.loads()
        .iter()
        .filter(|l| l.response.message.contains("current running txns"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tables_start_with_a_few_statements_and_load_within_the_bound() {
    let names = names();
    let schema: String = names
        .iter()
        .map(|t| format!("CREATE TABLE {t} (id int PRIMARY KEY, v text, n bigint);\n"))
        .collect();
    let targets: Vec<String> = names
        .iter()
        .map(|t| {
            format!(
                "CREATE TABLE {t} (id INT NOT NULL, v VARCHAR(1048576), n BIGINT) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 1"
            )
        })
        .collect();
    let target_refs: Vec<&str> = targets.iter().map(String::as_str).collect();
    let mut e = E2e::start_full(
        pg_scratch::Options::default(),
        DoubleConfig {
            max_running_txn_num_per_db: LIMIT,
            ..Default::default()
        },
        &schema,
        &names.join(","),
        &target_refs,
    )
    .await;
    e.set_env("MAX_CONCURRENT_LOADS", &LIMIT.to_string());
    // Every load holds its transaction for a while, as a busy StarRocks does.
    e.sr.set_fault(Fault::LabelRunning { hold_ms: 150 }, FaultDuration::Forever);

    for round in 1..=2i64 {
        let before = e.sr.mysql_statements();
        e.spawn();
        e.wait_for(LONG, "streaming", E2e::slot_active).await;
        let mut sql = String::from("BEGIN;\n");
        for t in &names {
            sql.push_str(&format!(
                "INSERT INTO {t} VALUES ({round}, 'row {round}', {round});\n"
            ));
        }
        sql.push_str("COMMIT;\n");
        e.sql(&sql);
        e.wait_for(LONG, "a row in every table", |e| {
            names.iter().all(|t| e.target(t).len() == round as usize)
        })
        .await;
        let statements = e.sr.mysql_statements() - before;
        assert!(
            statements <= 10,
            "start {round} and a window of {TABLES} tables took {statements} MySQL statements; \
             target checks must be batched, not one per table\n{}",
            e.log_tail()
        );
        assert_eq!(
            refused(&e),
            0,
            "loads were refused for too many running transactions: more than \
             MAX_CONCURRENT_LOADS={LIMIT} in flight\n{}",
            e.log_tail()
        );
        assert!(e.sigterm().await.success(), "{}", e.log_tail());
    }
    for t in &names {
        let rows = e.target(t);
        assert_eq!(rows.len(), 2, "{t}");
        assert!(
            rows.iter().any(|r| r["v"] == "row 2" && r["n"] == 2),
            "{t}: {rows:?}"
        );
    }
}
