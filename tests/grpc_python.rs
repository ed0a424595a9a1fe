//! A generic client from another ecosystem: Python grpcio with grpcio-reflection finds
//! the services and message types through server reflection alone and calls every rpc.
//! The packages are installed from PyPI when missing; the test is skipped (loudly) only
//! when Python or PyPI is unreachable.

mod grpc_support;

use dbmazz::grpc::state::ControlRequest;
use grpc_support::python::{python_ready, reflect_client};
use grpc_support::{Harness, TOKEN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_reflection_client_calls_every_rpc() {
    if !tokio::task::spawn_blocking(python_ready).await.unwrap() {
        eprintln!(
            "\n\n!!!!! SKIPPED python_reflection_client_calls_every_rpc: python3 with grpcio, \
             grpcio-reflection and protobuf is not available and pip could not install them \
             from PyPI !!!!!\n\n"
        );
        return;
    }
    let h = Harness::start(Some(TOKEN)).await;
    let v = reflect_client(h.grpc.to_string(), TOKEN).await;

    let health = &v["health"]["ok"];
    assert_eq!(health["serving"], true, "{v}");
    assert_eq!(health["state"], "running");
    assert_eq!(health["stage"], "loading");

    // proto3 JSON: 64-bit integers are strings.
    let s = &v["status"]["ok"];
    let stats = h.spool.stats();
    assert_eq!(s["state"], "running");
    assert_eq!(s["received_lsn"]["text"], "1/400");
    assert_eq!(s["received_lsn"]["value"], (0x1_0000_0400u64).to_string());
    assert_eq!(s["confirmed_lsn"]["text"], "1/10");
    assert_eq!(s["durable_lsn"]["text"], stats.durable.end_lsn.to_string());
    assert_eq!(s["slot_restart_lsn"]["text"], "1/8");
    assert_eq!(s["spool_records"], "12");
    assert_eq!(s["spool_txns"], "3");
    assert_eq!(s["spool_bytes"], stats.pending_bytes.to_string());
    assert_eq!(s["lag_bytes"], "4096");
    let orders = s["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target_table"] == "orders")
        .unwrap();
    assert_eq!(orders["rows_upserted"], "1234");
    assert_eq!(orders["last_load_label"], "dbmazz-abc-orders-1-20");

    let watch = v["watch"]["ok"].as_array().expect("watch messages");
    assert_eq!(watch.len(), 2);
    assert_eq!(watch[0]["slot_name"], "dbmazz_slot");

    assert_eq!(v["pause_no_token"]["code"], "UNAUTHENTICATED");
    assert_eq!(v["pause_wrong_token"]["code"], "UNAUTHENTICATED");
    assert_eq!(v["pause"]["ok"]["state"], "paused");
    assert_eq!(v["resume"]["ok"]["state"], "running");
    assert_eq!(v["drain"]["ok"]["state"], "draining");
    assert_eq!(v["stop"]["ok"]["state"], "stopping");
    assert_eq!(
        h.requests(),
        vec![
            ControlRequest::Pause,
            ControlRequest::Resume,
            ControlRequest::DrainAndStop,
            ControlRequest::Stop
        ]
    );
    h.stop().await;
}
