//! Loader tests against a real spool and an in-memory sink that applies StarRocks's
//! primary-key semantics and remembers labels.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::loader::*;
use super::plan::{ColumnSet, PlannedRow, RowOp};
use crate::config::AckPolicy;
use crate::core::*;
use crate::spool::{Spool, SpoolOptions};

type Row = BTreeMap<String, Value>;

#[derive(Default)]
struct FakeState {
    tables: BTreeMap<String, BTreeMap<Vec<Value>, Row>>,
    labels: Vec<String>,
    done_labels: HashSet<String>,
    truncates: usize,
    /// Fail the load whose index (0-based, counting attempts) is in this set.
    fail_at: HashSet<usize>,
    /// Apply the load, then fail (a lost response): the label is taken.
    fail_after_apply: HashSet<usize>,
    /// Take the load without applying it and fail (the daemon dies with the body sent):
    /// StarRocks commits it later, after whatever load comes next (see `load`).
    hold_at: HashSet<usize>,
    held: Option<(String, Vec<PlannedRow>, ColumnSet, Relation)>,
    /// Commit the load leaving out its first row, and answer "rejected" (StarRocks
    /// filtered a row: the label is spent).
    reject_at: HashSet<usize>,
    /// Fill this simulated disk while a load is in flight (the loaded mark then meets
    /// ENOSPC), and free it again 300 ms later.
    fill_disk: Option<crate::spool::storage::SimStore>,
    attempts: usize,
}

impl FakeState {
    fn apply(&mut self, rel: &Relation, columns: &ColumnSet, rows: &[PlannedRow]) {
        let keys: Vec<usize> = rel
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_key)
            .map(|(i, _)| i)
            .collect();
        let table = self.tables.entry(rel.name.clone()).or_default();
        for r in rows {
            let vals: BTreeMap<usize, Value> = r.values.iter().cloned().collect();
            let key: Vec<Value> = keys.iter().map(|k| vals[k].clone()).collect();
            match r.op {
                RowOp::Delete => {
                    table.remove(&key);
                }
                RowOp::Upsert => {
                    let named: Row = vals
                        .iter()
                        .map(|(i, v)| (rel.columns[*i].name.clone(), v.clone()))
                        .collect();
                    match columns {
                        ColumnSet::Full => {
                            table.insert(key, named);
                        }
                        ColumnSet::Partial(_) => {
                            table.entry(key).or_default().extend(named);
                        }
                    }
                }
            }
        }
    }
}

#[derive(Default, Clone)]
struct FakeSink(Arc<Mutex<FakeState>>);

impl LoadSink for FakeSink {
    fn target_name(&self, relation: &Relation) -> String {
        relation.name.clone()
    }

    async fn prepare(
        &self,
        r: &Relation,
        _v: u32,
        _n: &RetryNote,
    ) -> Result<PreparedTable, SinkFailure> {
        Ok(PreparedTable {
            key_columns: (0..r.columns.len())
                .filter(|&i| r.columns[i].is_key)
                .collect(),
        })
    }

    async fn load(&self, b: LoadBatch<'_>) -> Result<LoadResult, SinkFailure> {
        let mut st = self.0.lock().unwrap();
        let attempt = st.attempts;
        st.attempts += 1;
        if st.fail_at.contains(&attempt) {
            return Err(SinkFailure::permanent(format!(
                "injected permanent failure at load {attempt}"
            )));
        }
        st.labels.push(b.label.clone());
        if st.hold_at.contains(&attempt) {
            st.held = Some((
                b.label.clone(),
                b.rows.to_vec(),
                b.columns.clone(),
                b.relation.clone(),
            ));
            st.done_labels.insert(b.label.clone());
            return Err(SinkFailure::permanent(format!(
                "injected: the daemon died with load {attempt} sent"
            )));
        }
        if !st.done_labels.insert(b.label.clone()) {
            // A retry of a held label waits for it: it commits now.
            if st.held.as_ref().is_some_and(|h| h.0 == b.label) {
                if let Some((_, rows, cols, rel)) = st.held.take() {
                    st.apply(&rel, &cols, &rows);
                }
            }
            return Ok(LoadResult::AlreadyLoaded);
        }
        if st.reject_at.contains(&attempt) {
            st.apply(b.relation, b.columns, &b.rows[1..]);
            return Err(SinkFailure::rejected(
                RejectedLoad {
                    table: b.relation.name.clone(),
                    label: b.label.clone(),
                    error_url: None,
                    rows_sent: b.rows.len() as u64,
                    rows_loaded: b.rows.len() as u64 - 1,
                    rows_filtered: 1,
                    rows_unselected: 0,
                    label_committed: true,
                },
                format!("injected: label {} committed with 1 row filtered", b.label),
            ));
        }
        st.apply(b.relation, b.columns, b.rows);
        if let Some(disk) = st.fill_disk.take() {
            disk.set_disk_full(true);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                disk.set_disk_full(false);
            });
        }
        // A held load of another label commits late, after this newer one.
        if let Some((_, rows, cols, rel)) = st.held.take() {
            st.apply(&rel, &cols, &rows);
        }
        if st.fail_after_apply.contains(&attempt) {
            return Err(SinkFailure::permanent(format!(
                "injected failure after load {attempt} applied"
            )));
        }
        Ok(LoadResult::Loaded)
    }

    async fn truncate(&self, r: &Relation, _n: &RetryNote) -> Result<(), SinkFailure> {
        let mut st = self.0.lock().unwrap();
        st.truncates += 1;
        st.tables.remove(&r.name);
        Ok(())
    }
}

fn rel() -> Relation {
    let col = |name: &str, is_key| Column {
        name: name.into(),
        is_key,
        type_oid: 25,
        type_modifier: -1,
    };
    Relation {
        id: 1,
        namespace: "public".into(),
        name: "t".into(),
        replica_identity: ReplicaIdentity::Default,
        columns: vec![col("id", true), col("a", false), col("big", false)],
    }
}

fn t(s: &str) -> Value {
    Value::Text(s.as_bytes().to_vec().into())
}

/// Appends one transaction of `ops` and returns its commit end LSN.
fn txn(spool: &Spool, xid: u32, lsn: &mut u64, ops: Vec<ChangeOp>) -> Lsn {
    *lsn += 100;
    let commit = Lsn(*lsn + 50);
    spool
        .append(&ReaderEvent::Begin {
            xid,
            final_lsn: commit,
            commit_time: 1,
        })
        .unwrap();
    for op in ops {
        *lsn += 1;
        spool
            .append(&ReaderEvent::Change(Change {
                xid,
                subxid: xid,
                relation: 1,
                lsn: Lsn(*lsn),
                op,
            }))
            .unwrap();
    }
    let end = Lsn(commit.0 + 8);
    spool
        .append(&ReaderEvent::Commit(CommitInfo {
            xid,
            commit_lsn: commit,
            end_lsn: end,
            commit_time: 1,
        }))
        .unwrap();
    end
}

fn ins(id: &str, a: &str) -> ChangeOp {
    ChangeOp::Insert {
        new: vec![t(id), t(a), t("BIG")],
    }
}

struct Run {
    confirmed: watch::Receiver<Lsn>,
    status: watch::Receiver<super::status::LoaderStatus>,
    result: Result<(), LoaderError>,
}

async fn drain(spool: &Spool, sink: &FakeSink, flush_rows: usize) -> Run {
    drain_with(spool, sink, flush_rows, Duration::from_millis(10)).await
}

async fn drain_with(
    spool: &Spool,
    sink: &FakeSink,
    flush_rows: usize,
    flush_interval: Duration,
) -> Run {
    let (ctx, confirmed) = watch::channel(spool.loaded_mark().confirmed_lsn);
    let (loader, status) = Loader::new(
        spool.clone(),
        Arc::new(sink.clone()),
        LoaderOptions {
            flush_rows,
            flush_bytes: 1 << 20,
            flush_interval,
            ack_policy: AckPolicy::Loaded,
            read_chunk: 7,
            soft_deletes: false,
            max_concurrent_loads: 16,
        },
        ctx,
    );
    let (_d, durable) = watch::channel(spool.durable_mark());
    let (_p, paused) = watch::channel(false);
    let (_dr, drain) = watch::channel(true);
    let (_s, shutdown) = watch::channel(false);
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        loader.run(LoaderControl {
            durable,
            paused,
            drain,
            shutdown,
        }),
    )
    .await
    .expect("loader did not finish");
    Run {
        confirmed,
        status,
        result,
    }
}

fn open(dir: &std::path::Path) -> Spool {
    Spool::open(dir, SpoolOptions::default()).unwrap()
}

#[tokio::test]
async fn loads_everything_and_confirms_the_last_commit() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    spool.append(&ReaderEvent::Relation(rel())).unwrap();
    let mut lsn = 1000;
    txn(&spool, 1, &mut lsn, vec![ins("1", "x"), ins("2", "y")]);
    txn(
        &spool,
        2,
        &mut lsn,
        vec![ChangeOp::Update {
            old: None,
            new: vec![t("1"), t("x2"), Value::UnchangedToast],
        }],
    );
    txn(
        &spool,
        3,
        &mut lsn,
        vec![ChangeOp::Delete {
            old: (OldKind::Key, vec![t("2"), Value::Null, Value::Null]),
        }],
    );
    let last = txn(&spool, 4, &mut lsn, vec![ins("3", "z")]);
    spool.flush().unwrap();

    let sink = FakeSink::default();
    let run = drain(&spool, &sink, 2).await;
    run.result.unwrap();
    assert_eq!(*run.confirmed.borrow(), last);
    assert_eq!(spool.loaded_mark().seq, spool.durable_mark().seq);
    assert_eq!(spool.loaded_mark().confirmed_lsn, last);
    let st = sink.0.lock().unwrap();
    let table = &st.tables["t"];
    assert_eq!(table.len(), 2);
    // The TOAST-unchanged update kept the big value through a partial load.
    assert_eq!(table[&vec![t("1")]]["a"], t("x2"));
    assert_eq!(table[&vec![t("1")]]["big"], t("BIG"));
    assert!(table.contains_key(&vec![t("3")]));
    let counters = &run.status.borrow().tables["t"];
    assert_eq!(counters.rows_upserted, 4);
    assert_eq!(counters.rows_deleted, 1);
    for l in &st.labels {
        assert!(
            l.len() <= 128
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "{l}"
        );
    }
}

#[tokio::test]
async fn a_failed_load_confirms_nothing_and_a_replay_reuses_labels() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    spool.append(&ReaderEvent::Relation(rel())).unwrap();
    let mut lsn = 1000;
    let first = txn(&spool, 1, &mut lsn, vec![ins("1", "x")]);
    txn(&spool, 2, &mut lsn, vec![ins("2", "y")]);
    let last = txn(&spool, 3, &mut lsn, vec![ins("3", "z")]);
    spool.flush().unwrap();

    // flush_rows 1: one window per transaction; the second load is applied but its
    // answer is lost, so the window is not confirmed.
    let sink = FakeSink::default();
    sink.0.lock().unwrap().fail_after_apply.insert(1);
    let run = drain(&spool, &sink, 1).await;
    assert!(run.result.is_err());
    assert_eq!(
        *run.confirmed.borrow(),
        first,
        "confirmed past a failed load"
    );
    assert_eq!(spool.loaded_mark().confirmed_lsn, first);
    assert_eq!(
        run.status.borrow().stage,
        super::status::LoaderStage::Failed
    );
    let lost = sink.0.lock().unwrap().labels[1].clone();

    // Restart: the same window gets the same label, which the sink already has.
    let run = drain(&spool, &sink, 1).await;
    run.result.unwrap();
    assert_eq!(*run.confirmed.borrow(), last);
    let st = sink.0.lock().unwrap();
    assert_eq!(st.labels[2], lost, "a replay must reuse the label");
    assert_eq!(st.tables["t"].len(), 3);
}

#[tokio::test]
async fn replay_after_a_truncate_reloads_what_followed_it() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    spool.append(&ReaderEvent::Relation(rel())).unwrap();
    let mut lsn = 1000;
    txn(&spool, 1, &mut lsn, vec![ins("1", "x")]);
    txn(
        &spool,
        2,
        &mut lsn,
        vec![
            ChangeOp::Truncate {
                relations: vec![1],
                cascade: false,
                restart_identity: false,
            },
            ins("2", "after"),
        ],
    );
    spool.flush().unwrap();

    // First run: the post-truncate load (rows 2 and 3) is applied but its answer is
    // lost, so the window is not confirmed.
    let sink = FakeSink::default();
    sink.0.lock().unwrap().fail_after_apply.insert(1);
    let mut lsn2 = lsn;
    txn(&spool, 3, &mut lsn2, vec![ins("3", "later")]);
    spool.flush().unwrap();
    let run = drain(&spool, &sink, 100).await;
    assert!(run.result.is_err());
    assert_eq!(sink.0.lock().unwrap().truncates, 1);

    // Replay: the journal says the truncate ran, so it does not run again (it would
    // wipe row 2, whose label StarRocks already has), and every row is there.
    let run = drain(&spool, &sink, 100).await;
    run.result.unwrap();
    let st = sink.0.lock().unwrap();
    assert_eq!(
        st.truncates, 1,
        "a replay truncated again what followed the truncate"
    );
    let keys: Vec<&Vec<Value>> = st.tables["t"].keys().collect();
    assert_eq!(
        keys,
        vec![&vec![t("2")], &vec![t("3")]],
        "row 2 lost after the replay"
    );
    assert!(
        spool.loader_journal().is_none(),
        "journal left after the mark"
    );
}

#[tokio::test]
async fn empty_transactions_after_the_last_change_are_confirmed_too() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    spool.append(&ReaderEvent::Relation(rel())).unwrap();
    let mut lsn = 1000;
    txn(&spool, 1, &mut lsn, vec![ins("1", "x")]);
    let empty_end = txn(&spool, 2, &mut lsn, vec![]);
    spool.flush().unwrap();
    assert_eq!(spool.durable_mark().end_lsn, empty_end);
    let sink = FakeSink::default();
    let run = drain(&spool, &sink, 100).await;
    run.result.unwrap();
    assert_eq!(*run.confirmed.borrow(), empty_end);
    assert_eq!(spool.loaded_mark().confirmed_lsn, empty_end);
}

fn upd(id: &str, a: &str) -> ChangeOp {
    ChangeOp::Update {
        old: None,
        new: vec![t(id), t(a), t("BIG")],
    }
}

#[tokio::test]
async fn a_load_in_flight_at_a_crash_is_resent_with_its_label_before_anything_newer() {
    // Issue 9, case 2: windows close on a timer, so after a restart the same records
    // would be grouped differently and loaded under another label, while the body
    // StarRocks received before the crash commits afterwards and reverts newer rows.
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    spool.append(&ReaderEvent::Relation(rel())).unwrap();
    let mut lsn = 1000;
    txn(&spool, 1, &mut lsn, vec![ins("1", "old")]);
    spool.flush().unwrap();
    // Run 1: a window of one transaction; the daemon dies with its body sent and held.
    let sink = FakeSink::default();
    sink.0.lock().unwrap().hold_at.insert(0);
    let run = drain(&spool, &sink, 1).await;
    assert!(run.result.is_err());
    let held = sink.0.lock().unwrap().labels[0].clone();
    assert!(
        spool.loader_journal().is_some(),
        "no journal written before the load"
    );
    // Meanwhile the row changed again.
    let last = txn(&spool, 2, &mut lsn, vec![upd("1", "new")]);
    spool.flush().unwrap();
    // Run 2 with other window bounds: the held label goes first, then the newer change.
    let run = drain_with(&spool, &sink, 1000, Duration::from_secs(3600)).await;
    run.result.unwrap();
    assert_eq!(*run.confirmed.borrow(), last);
    let st = sink.0.lock().unwrap();
    assert_eq!(
        st.labels[1], held,
        "the window in flight was not re-sent first"
    );
    assert_eq!(
        st.tables["t"][&vec![t("1")]]["a"],
        t("new"),
        "an old body committed after a newer load reverted the row"
    );
    assert!(spool.loader_journal().is_none());
}

#[tokio::test]
async fn a_label_committed_with_filtered_rows_is_spent_and_the_rows_come_back_under_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    spool.append(&ReaderEvent::Relation(rel())).unwrap();
    let mut lsn = 1000;
    let first = spool.loaded_mark().confirmed_lsn;
    let last = txn(&spool, 1, &mut lsn, vec![ins("1", "x"), ins("2", "y")]);
    spool.flush().unwrap();
    let sink = FakeSink::default();
    sink.0.lock().unwrap().reject_at.insert(0);
    let run = drain(&spool, &sink, 100).await;
    let err = run.result.unwrap_err();
    assert!(err.to_string().contains("filtered"), "{err}");
    assert_eq!(
        *run.confirmed.borrow(),
        first,
        "confirmed past a filtered row"
    );
    assert_eq!(
        run.status.borrow().stage,
        super::status::LoaderStage::Failed
    );
    // The operator fixes the target and restarts: the same rows, under a new label.
    let run = drain(&spool, &sink, 100).await;
    run.result.unwrap();
    assert_eq!(*run.confirmed.borrow(), last);
    let st = sink.0.lock().unwrap();
    assert_eq!(st.labels.len(), 2);
    assert_ne!(st.labels[0], st.labels[1], "a spent label was reused");
    assert!(st.labels[1].ends_with("_1"), "{}", st.labels[1]);
    assert_eq!(st.tables["t"].len(), 2, "the filtered row never came back");
}

#[tokio::test]
async fn truncate_of_two_tables_as_the_first_change_of_the_second_loads() {
    // Issue 9, case 5: TRUNCATE a, b as the first change seen for b on a fresh spool,
    // with the loader already running when b's schema arrives (as in the daemon).
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let sink = FakeSink::default();
    let (ctx, confirmed) = watch::channel(Lsn::ZERO);
    let (loader, status) = Loader::new(
        spool.clone(),
        Arc::new(sink.clone()),
        LoaderOptions {
            flush_rows: 100,
            flush_bytes: 1 << 20,
            flush_interval: Duration::from_millis(10),
            ack_policy: AckPolicy::Loaded,
            read_chunk: 7,
            soft_deletes: false,
            max_concurrent_loads: 16,
        },
        ctx,
    );
    let (durable_tx, durable) = watch::channel(spool.durable_mark());
    let (_p, paused) = watch::channel(false);
    let (drain_tx, drain) = watch::channel(false);
    let (_s, shutdown) = watch::channel(false);
    let task = tokio::spawn(loader.run(LoaderControl {
        durable,
        paused,
        drain,
        shutdown,
    }));
    let mut b = rel();
    b.id = 2;
    b.name = "b".into();
    spool.append(&ReaderEvent::Relation(rel())).unwrap();
    let mut lsn = 1000;
    txn(&spool, 1, &mut lsn, vec![ins("1", "x")]);
    durable_tx.send(spool.flush().unwrap()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    spool.append(&ReaderEvent::Relation(b)).unwrap();
    let last = txn(
        &spool,
        2,
        &mut lsn,
        vec![ChangeOp::Truncate {
            relations: vec![1, 2],
            cascade: false,
            restart_identity: false,
        }],
    );
    durable_tx.send(spool.flush().unwrap()).unwrap();
    drain_tx.send(true).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("loader did not finish")
        .unwrap();
    result.unwrap();
    assert_eq!(*confirmed.borrow(), last);
    assert_eq!(status.borrow().loaded_seq, spool.durable_mark().seq);
    let st = sink.0.lock().unwrap();
    assert_eq!(st.truncates, 2);
    assert!(!st.tables.contains_key("t") && !st.tables.contains_key("b"));
}

#[tokio::test]
async fn a_huge_transaction_loaded_in_parts_resumes_its_parts_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    spool.append(&ReaderEvent::Relation(rel())).unwrap();
    let mut lsn = 1000;
    let ops: Vec<ChangeOp> = (0..40).map(|i| ins(&i.to_string(), "v")).collect();
    let last = txn(&spool, 1, &mut lsn, ops);
    spool.flush().unwrap();
    // flush_rows 2: parts of 4 rows (PARTS_FACTOR); the third part's answer is lost.
    let sink = FakeSink::default();
    sink.0.lock().unwrap().fail_after_apply.insert(2);
    let run = drain(&spool, &sink, 2).await;
    assert!(run.result.is_err());
    let sent: Vec<String> = sink.0.lock().unwrap().labels.clone();
    assert_eq!(sent.len(), 3);
    // Restart with other bounds: the three parts are re-sent as they were, then the rest.
    let run = drain(&spool, &sink, 1000).await;
    run.result.unwrap();
    assert_eq!(*run.confirmed.borrow(), last);
    let st = sink.0.lock().unwrap();
    assert_eq!(
        &st.labels[3..6],
        &sent[..],
        "parts re-sent with other labels"
    );
    assert_eq!(st.tables["t"].len(), 40);
}

#[tokio::test]
async fn a_full_disk_at_the_loaded_mark_is_waited_out() {
    let disk = crate::spool::storage::SimStore::new();
    let spool = Spool::open_with_store(
        std::sync::Arc::new(disk.clone()),
        "/sim/spool",
        SpoolOptions::default(),
    )
    .unwrap();
    spool.append(&ReaderEvent::Relation(rel())).unwrap();
    let mut lsn = 1000;
    txn(&spool, 1, &mut lsn, vec![ins("1", "x")]);
    let last = txn(&spool, 2, &mut lsn, vec![ins("2", "y")]);
    spool.flush().unwrap();
    let sink = FakeSink::default();
    sink.0.lock().unwrap().fill_disk = Some(disk.clone());
    let run = drain(&spool, &sink, 100).await;
    run.result.unwrap();
    assert!(disk.enospc_errors() > 0, "the disk never filled");
    assert_eq!(*run.confirmed.borrow(), last);
    assert_eq!(spool.loaded_mark().confirmed_lsn, last);
    assert!(
        run.status.borrow().retries > 0,
        "the wait did not show in Status"
    );
}
