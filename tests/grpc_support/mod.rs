//! Shared harness of the control plane tests: a `DaemonHandle` built from watch channels
//! the test drives, a real spool in a temp dir, a fake daemon that obeys control
//! requests, and the servers started on free ports.
#![allow(dead_code)]

pub mod python;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use dbmazz::connectors::sources::postgres::reader::ReaderStatus;
use dbmazz::core::*;
use dbmazz::grpc::state::*;
use dbmazz::grpc::Serving;
use dbmazz::spool::{Spool, SpoolOptions};
use secrecy::SecretString;
use tokio::sync::{mpsc, watch};

pub const TOKEN: &str = "s3cr3t-t0ken";

pub struct Harness {
    pub handle: DaemonHandle,
    pub life: watch::Sender<LifecycleStatus>,
    pub reader: watch::Sender<ReaderStatus>,
    pub loader: watch::Sender<LoaderStatus>,
    pub slot: watch::Sender<SlotHealth>,
    pub spool: Spool,
    pub requests: Arc<Mutex<Vec<ControlRequest>>>,
    pub shutdown: watch::Sender<bool>,
    pub serving: Option<Serving>,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    _dir: tempfile::TempDir,
}

pub fn rel(id: u32, name: &str) -> Relation {
    Relation {
        id,
        namespace: "public".into(),
        name: name.into(),
        replica_identity: ReplicaIdentity::Default,
        columns: vec![
            Column {
                name: "id".into(),
                is_key: true,
                type_oid: 23,
                type_modifier: -1,
            },
            Column {
                name: "v".into(),
                is_key: false,
                type_oid: 25,
                type_modifier: -1,
            },
        ],
    }
}

/// Appends one committed transaction of `n` inserts into `relation`, flushes it.
pub fn spool_txn(spool: &Spool, xid: u32, relation: u32, lsn: u64, n: usize) {
    let mut ev = vec![ReaderEvent::Begin {
        xid,
        final_lsn: Lsn(lsn + n as u64 + 1),
        commit_time: 0,
    }];
    for i in 0..n {
        ev.push(ReaderEvent::Change(Change {
            xid,
            subxid: xid,
            relation,
            lsn: Lsn(lsn + i as u64),
            op: ChangeOp::Insert {
                new: vec![
                    Value::Text(i.to_string().into_bytes().into()),
                    Value::Text(b"x".to_vec().into()),
                ],
            },
        }));
    }
    // A commit "now" so the oldest pending age is small and positive.
    let now_pg = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
        - PG_EPOCH_OFFSET_MICROS;
    ev.push(ReaderEvent::Commit(CommitInfo {
        xid,
        commit_lsn: Lsn(lsn + n as u64 + 1),
        end_lsn: Lsn(lsn + n as u64 + 9),
        commit_time: now_pg - 2_000_000,
    }));
    spool.append_all(&ev).unwrap();
    spool.flush().unwrap();
}

pub fn loader_status() -> LoaderStatus {
    let mut tables = BTreeMap::new();
    tables.insert(
        "orders".to_string(),
        TableCounters {
            source_table: "public.orders".into(),
            target_table: "orders".into(),
            rows_upserted: 1234,
            rows_deleted: 56,
            truncates: 1,
            loads: 7,
            last_load: Some(LastLoad {
                label: "dbmazz-abc-orders-1-20".into(),
                at_unix_ms: 1_700_000_000_000,
                outcome: "success".into(),
                rows: 20,
            }),
        },
    );
    LoaderStatus {
        stage: LoaderStage::Loading,
        loaded_seq: 0,
        confirmed_lsn: Lsn(0x1_0000_0010),
        retries: 3,
        last_error: None,
        tables,
    }
}

impl Harness {
    /// Builds the handle (state Running, reader connected, a loaded table, a slot, and
    /// a spool holding two transactions of `public.orders` and one of `public.items`),
    /// starts the fake daemon and the servers.
    pub async fn start(token: Option<&str>) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), SpoolOptions::default()).unwrap();
        spool
            .append(&ReaderEvent::Relation(rel(1, "orders")))
            .unwrap();
        spool
            .append(&ReaderEvent::Relation(rel(2, "items")))
            .unwrap();
        spool_txn(&spool, 700, 1, 0x1_0000_0100, 3);
        spool_txn(&spool, 701, 1, 0x1_0000_0200, 2);
        spool_txn(&spool, 702, 2, 0x1_0000_0300, 4);

        let (life, life_rx) = watch::channel(LifecycleStatus {
            state: DaemonState::Running,
            ..LifecycleStatus::default()
        });
        let (reader, reader_rx) = watch::channel(ReaderStatus {
            connected: true,
            protocol_version: 2,
            received_lsn: Lsn(0x1_0000_0400),
            last_commit_end: Lsn(0x1_0000_0320),
            held_back: false,
            pending_batch: false,
            reconnects: 2,
            keepalive_replies: 10,
            status_updates: 20,
            reported_flush_lsn: Lsn(0x1_0000_0010),
            last_error: None,
        });
        let (loader, loader_rx) = watch::channel(loader_status());
        let (slot, slot_rx) = watch::channel(SlotHealth {
            slot_name: "dbmazz_slot".into(),
            exists: true,
            active: true,
            confirmed_flush_lsn: Some(Lsn(0x1_0000_0010)),
            restart_lsn: Some(Lsn(0x1_0000_0008)),
            wal_status: Some("reserved".into()),
            safe_wal_size: Some(5 << 30),
            lag_bytes: Some(4096),
            server_lsn: Some(Lsn(0x1_0000_1010)),
            checked_at_unix_ms: 1_700_000_000_500,
            error: None,
        });
        let (ctl_tx, mut ctl_rx) = mpsc::channel(8);
        let handle = DaemonHandle {
            inner: Arc::new(HandleInner {
                started_at: SystemTime::now(),
                version: "0.1.0-test",
                slot_name: "dbmazz_slot".into(),
                lifecycle: life_rx,
                pipeline: OnceLock::new(),
                slot: slot_rx,
                control: ctl_tx,
            }),
        };
        let _ = handle.inner.pipeline.set(PipelineViews {
            reader: reader_rx,
            loader: loader_rx,
            spool: spool.clone(),
        });
        // The fake daemon: records requests and moves to the state they lead to.
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let st = life.clone();
        tokio::spawn(async move {
            while let Some(r) = ctl_rx.recv().await {
                recorded.lock().unwrap().push(r);
                st.send_modify(|s| s.state = r.target());
            }
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let serving = dbmazz::grpc::serve(
            handle.clone(),
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            token.map(SecretString::from),
            shutdown_rx,
        )
        .await
        .unwrap();
        Harness {
            grpc: serving.grpc_addr,
            http: serving.http_addr,
            serving: Some(serving),
            handle,
            life,
            reader,
            loader,
            slot,
            spool,
            requests,
            shutdown,
            _dir: dir,
        }
    }

    pub fn grpc_uri(&self) -> String {
        format!("http://{}", self.grpc)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// Moves the fake daemon to `state`.
    pub fn set_state(&self, state: DaemonState) {
        self.life.send_modify(|s| s.state = state);
    }

    /// Publishes the fake daemon's permanent error.
    pub fn set_error(&self, error: &str) {
        self.life.send_modify(|s| s.error = Some(error.into()));
    }

    pub fn requests(&self) -> Vec<ControlRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// Stops the servers and waits for them.
    pub async fn stop(mut self) {
        self.shutdown.send_replace(true);
        if let Some(s) = self.serving.take() {
            tokio::time::timeout(std::time::Duration::from_secs(10), s.wait())
                .await
                .expect("servers stop within 10 s")
                .expect("servers end cleanly");
        }
    }
}
