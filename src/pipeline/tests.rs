//! Loader tests against a real spool and an in-memory sink that applies StarRocks's
//! primary-key semantics and remembers labels.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::loader::*;
use super::plan::{ColumnSet, RowOp};
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
    attempts: usize,
}

#[derive(Default, Clone)]
struct FakeSink(Arc<Mutex<FakeState>>);

impl LoadSink for FakeSink {
    fn target_name(&self, relation: &Relation) -> String {
        relation.name.clone()
    }

    async fn prepare(
        &self,
        _r: &Relation,
        _v: u32,
        _n: &RetryNote,
    ) -> Result<PreparedTable, SinkFailure> {
        Ok(PreparedTable::default())
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
        if !st.done_labels.insert(b.label.clone()) {
            return Ok(LoadResult::AlreadyLoaded);
        }
        let keys: Vec<usize> = b
            .relation
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_key)
            .map(|(i, _)| i)
            .collect();
        let table = st.tables.entry(b.relation.name.clone()).or_default();
        for r in b.rows {
            let vals: BTreeMap<usize, Value> = r.values.iter().cloned().collect();
            let key: Vec<Value> = keys.iter().map(|k| vals[k].clone()).collect();
            match r.op {
                RowOp::Delete => {
                    table.remove(&key);
                }
                RowOp::Upsert => {
                    let named: Row = vals
                        .iter()
                        .map(|(i, v)| (b.relation.columns[*i].name.clone(), v.clone()))
                        .collect();
                    match b.columns {
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
    Value::Text(s.as_bytes().to_vec())
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
    status: watch::Receiver<crate::grpc::state::LoaderStatus>,
    result: Result<(), LoaderError>,
}

async fn drain(spool: &Spool, sink: &FakeSink, flush_rows: usize) -> Run {
    let (ctx, confirmed) = watch::channel(spool.loaded_mark().confirmed_lsn);
    let (loader, status) = Loader::new(
        spool.clone(),
        Arc::new(sink.clone()),
        LoaderOptions {
            flush_rows,
            flush_bytes: 1 << 20,
            flush_interval: Duration::from_millis(10),
            ack_policy: AckPolicy::Loaded,
            read_chunk: 7,
            soft_deletes: false,
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
    assert_eq!(run.status.borrow().stage, "failed");
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

    // Replay: the truncate runs again and row 2 must be loaded again, not skipped.
    let run = drain(&spool, &sink, 100).await;
    run.result.unwrap();
    let st = sink.0.lock().unwrap();
    assert_eq!(st.truncates, 2);
    let keys: Vec<&Vec<Value>> = st.tables["t"].keys().collect();
    assert_eq!(
        keys,
        vec![&vec![t("2")], &vec![t("3")]],
        "row 2 lost after the replayed truncate"
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
