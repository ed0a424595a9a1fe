//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod control;
pub mod e2e;

use dbmazz::connectors::sources::postgres::conninfo::PgConnInfo;
use pg_scratch::PgCluster;
use secrecy::SecretString;

pub fn conninfo(s: &str) -> PgConnInfo {
    PgConnInfo::parse(&SecretString::from(s.to_string())).expect("conninfo")
}

/// Connection info over the cluster's Unix socket (trust auth).
pub fn socket_conninfo(pg: &PgCluster, db: &str) -> PgConnInfo {
    conninfo(&pg.socket_conn_string(db))
}

/// Rewrites pg_hba.conf with `lines` first (first match wins) and reloads.
pub fn prepend_hba(pg: &PgCluster, lines: &[&str]) {
    let path = pg.data_dir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{}\n{old}", lines.join("\n"))).unwrap();
    pg.psql("postgres", "SELECT pg_reload_conf()").unwrap();
}

/// Polls `f` until it returns Some or the timeout passes.
pub async fn eventually<T>(
    timeout: std::time::Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
