//! End to end: the keys StarRocks gets come from the source's primary key, never from
//! pgoutput's replica identity flags (issue 9, case 4).

mod support;

use std::time::Duration;

use support::e2e::*;

const LONG: Duration = Duration::from_secs(60);

const SCHEMA: &str = "
CREATE TABLE full_id (id bigint PRIMARY KEY, v text, n int);
ALTER TABLE full_id REPLICA IDENTITY FULL;
CREATE TABLE toasted_key (k text PRIMARY KEY, v text);
ALTER TABLE toasted_key ALTER COLUMN k SET STORAGE EXTERNAL;
";
fn targets(extra: &str) -> Vec<String> {
    vec![
        format!("CREATE TABLE full_id (id BIGINT NOT NULL, v VARCHAR(1048576), n INT{extra}) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 1"),
        format!("CREATE TABLE toasted_key (k VARCHAR(1048576) NOT NULL, v VARCHAR(1048576){extra}) PRIMARY KEY(k) DISTRIBUTED BY HASH(k) BUCKETS 1"),
    ]
}

/// Rows and deletes the double received for `table` since the last `clear_loads`.
fn sent(e: &E2e, table: &str) -> (u64, usize) {
    let loads: Vec<_> =
        e.sr.loads()
            .into_iter()
            .filter(|l| l.table == table && l.committed)
            .collect();
    let rows = loads.iter().map(|l| l.response.number_total_rows).sum();
    (rows, loads.len())
}

async fn run(delete_mode: &str) {
    let extra = if delete_mode == "soft" {
        ", _dbmazz_deleted BOOLEAN"
    } else {
        ""
    };
    let targets = targets(extra);
    let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
    let mut e = E2e::start(SCHEMA, "full_id,toasted_key", &targets).await;
    e.set_env("SINK_DELETE_MODE", delete_mode);
    e.spawn();
    e.wait_for(LONG, "slot created", |e| e.slot_count() == 1)
        .await;
    e.sql("INSERT INTO full_id VALUES (1, 'a', 1), (2, 'b', 2);");
    e.wait_for(LONG, "first rows", |e| e.target("full_id").len() == 2)
        .await;
    e.sr.clear_loads();
    // Two updates of a non-key column under REPLICA IDENTITY FULL: pgoutput flags every
    // column as key and sends the old row; that is still two upserts, not 2 deletes + 2.
    e.sql("BEGIN; UPDATE full_id SET v = 'a2'; COMMIT;");
    e.wait_for(LONG, "updates loaded", |e| {
        target_pairs(e, "full_id", "v") == vec![(1, "a2".into()), (2, "a2".into())]
    })
    .await;
    let (rows, loads) = sent(&e, "full_id");
    assert_eq!(rows, 2, "2 updated rows must load as 2 rows");
    assert_eq!(loads, 1, "one column set, one load");
    assert_eq!(e.target("full_id").len(), 2);

    // A TOASTed (out-of-line) key left unchanged by an UPDATE: the server sends the old
    // key; the row is upserted under it and the pipeline goes on.
    let key = (0..2400)
        .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
        .collect::<String>();
    e.sql(&format!("INSERT INTO toasted_key VALUES ('{key}', 'one');"));
    e.wait_for(LONG, "toasted key row", |e| {
        e.target("toasted_key").len() == 1
    })
    .await;
    e.sql("UPDATE toasted_key SET v = 'two';");
    e.sql("INSERT INTO full_id VALUES (3, 'after', 3);");
    e.wait_for(LONG, "update of the toasted-key row and a later row", |e| {
        e.target("full_id").len() == 3
            && e.target("toasted_key")
                .first()
                .is_some_and(|r| r["v"] == "two" && r["k"].as_str() == Some(key.as_str()))
    })
    .await;
    assert_eq!(e.target("toasted_key").len(), 1);
    assert!(e.running(), "the daemon stopped:\n{}", e.log_tail());
    assert_eq!(e.sigterm().await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_identity_full_updates_are_upserts_and_a_toasted_key_loads() {
    run("hard").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_soft_deletes_too() {
    run("soft").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_change_of_a_row_with_a_toasted_value_keeps_the_row() {
    // The delete of the old key and the partial upsert of the new one cover the same
    // spool sequence: they once shared a label, and the upsert was skipped as loaded.
    let schema = "CREATE TABLE kt (id bigint PRIMARY KEY, v text, big text);
                  ALTER TABLE kt ALTER COLUMN big SET STORAGE EXTERNAL;";
    let mut e = E2e::start(
        schema,
        "kt",
        &["CREATE TABLE kt (id BIGINT NOT NULL, v VARCHAR(1048576), big VARCHAR(1048576)) PRIMARY KEY(id) DISTRIBUTED BY HASH(id) BUCKETS 1"],
    )
    .await;
    e.spawn();
    e.wait_for(LONG, "slot created", |e| e.slot_count() == 1)
        .await;
    e.sql("INSERT INTO kt VALUES (1, 'a', repeat('x', 9000)), (3, 'c', repeat('z', 9000));");
    e.wait_for(LONG, "first rows", |e| e.target("kt").len() == 2)
        .await;
    e.sql("UPDATE kt SET id = 2 WHERE id = 1;");
    e.sql("BEGIN; UPDATE kt SET id = 4 WHERE id = 3; UPDATE kt SET v = 'd' WHERE id = 4; COMMIT;");
    e.wait_for(LONG, "moved rows", |e| {
        let ids: Vec<i64> = e
            .target("kt")
            .iter()
            .filter_map(|r| r["id"].as_i64())
            .collect();
        ids == vec![2, 4]
    })
    .await;
}
