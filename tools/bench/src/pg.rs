//! The source side: a private PostgreSQL 15 (pg-scratch) with the `bench` table and its
//! publication, a SQL connection for slots and walsenders, and the backlog writer.
//! Invariant: nothing but the backlog writes to `bench`, and autovacuum is off, so the
//! last backlog commit is the last transaction the consumers see.

use std::time::Instant;

use pg_scratch::{Options, PgCluster};
use tokio_postgres::NoTls;

use crate::error::{Context as _, Result};
use crate::stats::parse_lsn;

/// Publication every consumer reads.
pub const PUBLICATION: &str = "bench_pub";

/// The table: ~190 bytes of WAL per row (`b` is 90 characters).
const SCHEMA: &str = "CREATE TABLE bench (id bigint PRIMARY KEY, a int, b text, c timestamptz) WITH (autovacuum_enabled = false);
CREATE PUBLICATION bench_pub FOR TABLE bench;";

/// Inserts the rows with ids `from..=to` (SQL expressions); `b` is 32 + 58 characters.
fn insert_rows(from: &str, to: &str) -> String {
    format!(
        "INSERT INTO bench SELECT g, g % 1000, md5(g::text) || repeat('x', 58), now() FROM generate_series(({from})::bigint, ({to})::bigint) g"
    )
}

/// The cluster and a SQL session on it.
pub struct Source {
    pub pg: PgCluster,
    pub sql: tokio_postgres::Client,
    next_id: u64,
}

/// What a backlog wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Backlog {
    pub rows: u64,
    pub txns: u64,
    /// WAL position before the first row.
    pub start_lsn: u64,
    /// Insert position after the last row, before its COMMIT: every commit of the backlog
    /// but the last ends at or before it, the last one after it.
    pub before_last_commit: u64,
    /// Flush position after the last COMMIT returned (what pg_recvlogical's walsender
    /// must have sent).
    pub end_lsn: u64,
    /// WAL bytes of the backlog (end - start).
    pub wal_bytes: u64,
    /// Seconds it took to write.
    pub write_s: f64,
}

impl Source {
    /// Starts PostgreSQL with benchmark settings and creates the table and publication.
    pub async fn start(decoding_work_mem: &str) -> Result<Source> {
        let opts = Options::default()
            // A frozen walsender must not time out its (frozen) client when both resume.
            .setting("wal_sender_timeout", "0")
            // PostgreSQL's default; pg-scratch's 64kB suits tests, not a benchmark.
            .setting("logical_decoding_work_mem", decoding_work_mem)
            .setting("autovacuum", "off")
            .setting("max_wal_size", "16GB")
            .setting("checkpoint_timeout", "1h")
            .setting("max_wal_senders", "16")
            .setting("max_replication_slots", "16");
        let pg = tokio::task::block_in_place(|| PgCluster::start_with(opts))?;
        tokio::task::block_in_place(|| pg.psql("postgres", SCHEMA))?;
        let (sql, conn) = tokio_postgres::connect(&pg.socket_conn_string("postgres"), NoTls)
            .await
            .ctx("connect to the scratch PostgreSQL")?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "SQL connection ended");
            }
        });
        Ok(Source {
            pg,
            sql,
            next_id: 1,
        })
    }

    /// `SELECT version()`.
    pub async fn version(&self) -> Result<String> {
        let row = self
            .sql
            .query_one("SELECT current_setting('server_version')", &[])
            .await
            .ctx("read the server version")?;
        Ok(row.get(0))
    }

    /// Creates a pgoutput slot.
    pub async fn create_slot(&self, name: &str) -> Result<()> {
        self.sql
            .execute(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&name],
            )
            .await
            .ctx(format!("create slot {name}"))?;
        Ok(())
    }

    /// The walsender serving a slot, if a client streams from it.
    pub async fn walsender(&self, slot: &str) -> Result<Option<i32>> {
        let row = self
            .sql
            .query_opt(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .ctx(format!("look up slot {slot}"))?;
        Ok(row.and_then(|r| r.get::<_, Option<i32>>(0)))
    }

    /// What a walsender has sent (`pg_stat_replication.sent_lsn`).
    pub async fn sent_lsn(&self, pid: i32) -> Result<Option<u64>> {
        let row = self
            .sql
            .query_opt(
                "SELECT sent_lsn::text FROM pg_stat_replication WHERE pid = $1",
                &[&pid],
            )
            .await
            .ctx("read pg_stat_replication")?;
        Ok(row
            .and_then(|r| r.get::<_, Option<String>>(0))
            .and_then(|t| parse_lsn(&t)))
    }

    async fn lsn(&self, expr: &str) -> Result<u64> {
        let row = self
            .sql
            .query_one(&format!("SELECT ({expr})::text"), &[])
            .await
            .ctx(format!("read {expr}"))?;
        let text: String = row.get(0);
        parse_lsn(&text)
            .ok_or_else(|| crate::error::BenchError::Other(format!("{expr} = {text:?}")))
    }

    /// Writes `txns` transactions of `rows_per_txn` rows (new ids). All but the last run in
    /// one DO block that commits after each (so writing 200k small transactions is quick);
    /// the last runs on its own so its positions are known.
    pub async fn write_backlog(&mut self, txns: u64, rows_per_txn: u64) -> Result<Backlog> {
        let t = Instant::now();
        let start_lsn = self.lsn("pg_current_wal_lsn()").await?;
        let first = self.next_id;
        if txns > 1 {
            let k = rows_per_txn;
            let body = format!(
                "DO $$ BEGIN FOR i IN 0..{last} LOOP {insert}; COMMIT; END LOOP; END $$",
                last = txns - 2,
                insert = insert_rows(
                    &format!("{first} + i * {k}"),
                    &format!("{first} + (i + 1) * {k} - 1")
                ),
            );
            self.sql
                .batch_execute(&body)
                .await
                .ctx("write the backlog")?;
        }
        let last_first = first + (txns - 1) * rows_per_txn;
        let last_to = last_first + rows_per_txn - 1;
        self.sql.batch_execute("BEGIN").await.ctx("BEGIN")?;
        self.sql
            .batch_execute(&insert_rows(&last_first.to_string(), &last_to.to_string()))
            .await
            .ctx("write the last backlog transaction")?;
        let before_last_commit = self.lsn("pg_current_wal_insert_lsn()").await?;
        self.sql.batch_execute("COMMIT").await.ctx("COMMIT")?;
        let end_lsn = self.lsn("pg_current_wal_flush_lsn()").await?;
        self.next_id = last_to + 1;
        Ok(Backlog {
            rows: txns * rows_per_txn,
            txns,
            start_lsn,
            before_last_commit,
            end_lsn,
            wal_bytes: end_lsn.saturating_sub(start_lsn),
            write_s: t.elapsed().as_secs_f64(),
        })
    }

    /// The next id the backlog writer would use (the steady traffic continues from it).
    pub fn take_ids(&mut self, n: u64) -> u64 {
        let first = self.next_id;
        self.next_id += n;
        first
    }

    /// A new SQL connection (for traffic).
    pub async fn connect(&self) -> Result<tokio_postgres::Client> {
        let (c, conn) = tokio_postgres::connect(&self.pg.socket_conn_string("postgres"), NoTls)
            .await
            .ctx("connect to the scratch PostgreSQL")?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::warn!(error = %e, "traffic connection ended");
            }
        });
        Ok(c)
    }
}
