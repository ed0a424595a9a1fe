//! The BE's Stream Load: the steps of `StreamLoadAction` in order (auth, size, format,
//! timeout, begin-txn with label check, plan headers, 100-continue + body, parse, filter
//! ratio, atomic commit), with fault hooks, producing the StarRocks JSON reply.

pub mod apply;
pub mod body;
pub mod fast;
pub mod headers;
pub mod response;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{HeaderMap, Request};

use crate::faults::Fault;
use crate::labels::{check_label_format, TxnState};
use crate::state::{LoadRecord, Shared};
use crate::table::TableSchema;
use headers::Format;
use response::{status, LoadResponse};

/// What the BE does with the connection.
#[derive(Debug)]
pub enum Outcome {
    /// Reply 200 with this body; `close` = reply without reading the body and close.
    Reply {
        /// Body.
        resp: Box<LoadResponse>,
        /// Close the connection after replying.
        close: bool,
    },
    /// Drop the connection without reply.
    Drop,
}

/// Parses `Authorization: Basic ...` as the BE does (exact `Basic ` prefix, a `:` inside).
pub fn parse_basic_auth(h: &HeaderMap) -> Option<(String, String)> {
    let v = h.get(hyper::header::AUTHORIZATION)?.to_str().ok()?;
    let enc = v.strip_prefix("Basic ")?;
    let dec = base64::engine::general_purpose::STANDARD
        .decode(enc.trim())
        .ok()?;
    let s = String::from_utf8(dec).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// Request headers in order, with Authorization redacted.
pub fn redacted_headers(h: &HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| {
            let val = if k == hyper::header::AUTHORIZATION {
                "<redacted>".to_string()
            } else {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            };
            (k.as_str().to_string(), val)
        })
        .collect()
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

struct Ctx {
    shared: Arc<Shared>,
    db: String,
    table: String,
    label: String,
    headers: Vec<(String, String)>,
    start: Instant,
}

impl Ctx {
    /// Records and returns a reply.
    fn finish(&self, mut resp: LoadResponse, committed: bool, replied: bool) -> Box<LoadResponse> {
        resp.load_time_ms = ms(self.start.elapsed());
        let rec = LoadRecord {
            seq: 0,
            db: self.db.clone(),
            table: self.table.clone(),
            label: self.label.clone(),
            headers: self.headers.clone(),
            committed,
            replied,
            response: resp.clone(),
            finished_at_unix_us: unix_us(),
        };
        self.shared.lock().record_load(rec);
        tracing::debug!(label = %self.label, status = %resp.status, message = %resp.message, "stream load");
        Box::new(resp)
    }

    fn early(&self, msg: impl Into<String>) -> Outcome {
        Outcome::Reply {
            resp: self.finish(LoadResponse::fail(-1, &self.label, msg), false, true),
            close: true,
        }
    }

    fn abort(&self, txn: i64, reason: &str) {
        let mut st = self.shared.lock();
        if let Some(db) = st.catalog.dbs.get_mut(&self.db) {
            db.labels
                .set_state(&self.label, txn, TxnState::Aborted, reason);
        }
        drop(st);
        self.shared.mark_dirty();
    }
}

/// Aborts a begun transaction when the request is dropped before its body reached the
/// load task (the client went away mid-body: hyper drops the request's future), as
/// StarRocks cancels such a load. Without it the label would stay PREPARE for ever and
/// every retry under it would be told "still running".
struct AbortIfDropped<'a> {
    ctx: &'a Ctx,
    txn: i64,
    armed: bool,
}

impl AbortIfDropped<'_> {
    /// The transaction is handled (aborted or handed to the load task) from here on.
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for AbortIfDropped<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.ctx.abort(
                self.txn,
                "the client went away before the body was received",
            );
        }
    }
}

fn decode(seg: &str) -> Option<String> {
    percent_encoding::percent_decode_str(seg)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

struct Begun {
    txn: i64,
    schema: TableSchema,
    schema_version: u64,
}

/// Handles one Stream Load PUT on the BE.
pub async fn handle(
    shared: Arc<Shared>,
    db_raw: &str,
    table_raw: &str,
    req: Request<Incoming>,
    remote_ip: String,
) -> Outcome {
    let start = Instant::now();
    let h = req.headers().clone();
    let label = headers::get(&h, "label")
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut ctx = Ctx {
        shared: shared.clone(),
        db: db_raw.to_string(),
        table: table_raw.to_string(),
        label: label.clone(),
        headers: redacted_headers(&h),
        start,
    };
    let (Some(db), Some(table)) = (decode(db_raw), decode(table_raw)) else {
        return ctx.early("Fail to url decode db or table name");
    };
    ctx.db = db.clone();
    ctx.table = table.clone();

    // on_header: auth, size, format, json size, timeout.
    let Some((user, password)) = parse_basic_auth(&h) else {
        return ctx.early("no valid Basic authorization");
    };
    let content_length: Option<u64> =
        headers::get(&h, "content-length").and_then(|v| v.parse().ok());
    let max_bytes = shared
        .config
        .streaming_load_max_mb
        .saturating_mul(1024 * 1024);
    if let Some(n) = content_length {
        if n > max_bytes {
            return ctx.early(format!(
                "body size {n} exceed limit: {max_bytes}, id=00000000-0000-0000-0000-000000000000, job_id=-1, txn_id=-1, label={label}, db={db}. You can increase the limit by setting streaming_load_max_mb in be.conf."
            ));
        }
    }
    let early = match headers::parse_early(&h) {
        Ok(e) => e,
        Err(m) => return ctx.early(m),
    };
    if early.format == Format::Json && !early.ignore_json_size {
        let limit = shared.config.json_max_mb.saturating_mul(1024 * 1024);
        if let Some(n) = content_length {
            if n > limit {
                return ctx.early(format!(
                    "The size of this batch exceed the max size [{limit}]  of json type data  data [ {n} ]. Set ignore_json_size to skip the check, although it may lead huge memory consuming."
                ));
            }
        }
    }

    // begin txn.
    let begin_start = Instant::now();
    let begun = {
        let mut st = shared.lock();
        #[allow(clippy::result_large_err)]
        let r = (|| -> Result<Begun, LoadResponse> {
            if !shared.check_credentials(&user, &password) {
                return Err(LoadResponse::fail(
                    -1,
                    &label,
                    format!("Access denied for {user}@{remote_ip}"),
                ));
            }
            check_label_format(&label).map_err(|m| LoadResponse::fail(-1, &label, m))?;
            let Some(dbo) = st.catalog.dbs.get_mut(&db) else {
                return Err(LoadResponse::fail(
                    -1,
                    &label,
                    format!("unknown database, database={db}"),
                ));
            };
            let Some(t) = dbo.tables.get(&table) else {
                return Err(LoadResponse::fail(
                    -1,
                    &label,
                    format!("unknown table \"{db}.{table}\""),
                ));
            };
            let schema = t.schema.clone();
            let schema_version = t.schema_version;
            dbo.labels.evict(shared.config.label_keep_max_second);
            if let Some(js) = dbo.labels.conflict(&label) {
                let mut r = LoadResponse::new(
                    -1,
                    &label,
                    status::LABEL_EXISTS,
                    format!("Label [{label}] has already been used."),
                );
                r.existing_job_status = Some(js.to_string());
                return Err(r);
            }
            let limit = shared.config.max_running_txn_num_per_db;
            let running = dbo.labels.running();
            let injected = shared
                .faults
                .take(|f| matches!(f, Fault::TooManyTxns).then_some(()))
                .is_some();
            if injected || running >= limit {
                let n = if injected { limit } else { running };
                return Err(LoadResponse::fail(
                    -1,
                    &label,
                    format!(
                        "current running txns on db {} is {n}, larger than limit {limit}",
                        dbo.id
                    ),
                ));
            }
            let db_id = dbo.id;
            let _ = db_id;
            let txn = st.catalog.alloc_txn();
            if let Some(dbo) = st.catalog.dbs.get_mut(&db) {
                dbo.labels.begin(&label, txn, &table);
            }
            Ok(Begun {
                txn,
                schema,
                schema_version,
            })
        })();
        drop(st);
        r
    };
    let begun = match begun {
        Ok(b) => b,
        Err(resp) => {
            return Outcome::Reply {
                resp: ctx.finish(resp, false, true),
                close: true,
            }
        }
    };
    shared.mark_dirty();
    let txn = begun.txn;
    let mut guard = AbortIfDropped {
        ctx: &ctx,
        txn,
        armed: true,
    };
    let begin_ms = ms(begin_start.elapsed());

    // plan: the remaining headers, against the schema.
    let plan_start = Instant::now();
    let plan = match headers::parse_plan(&h, &begun.schema, early.format) {
        Ok(p) => p,
        Err(m) => {
            guard.disarm();
            ctx.abort(txn, &m);
            let mut r = LoadResponse::fail(txn, &label, m);
            r.begin_txn_time_ms = begin_ms;
            return Outcome::Reply {
                resp: ctx.finish(r, false, true),
                close: true,
            };
        }
    };
    let plan_ms = ms(plan_start.elapsed());

    // 100-continue is sent by hyper when the body is first polled.
    let read_start = Instant::now();
    let body = match Limited::new(req.into_body(), max_bytes as usize)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            guard.disarm();
            let m = format!("receive body failed: {e}");
            ctx.abort(txn, &m);
            ctx.finish(LoadResponse::fail(txn, &label, m), false, false);
            return Outcome::Drop;
        }
    };
    let read_ms = ms(read_start.elapsed());

    // From here on the load finishes even if the client goes away.
    guard.disarm();
    drop(guard);
    let task = tokio::spawn(async move {
        process(
            ctx,
            begun,
            plan,
            early.format,
            early.format_compression,
            body,
            [begin_ms, plan_ms, read_ms],
        )
        .await
    });
    match task.await {
        Ok(o) => o,
        Err(e) => Outcome::Reply {
            resp: Box::new(LoadResponse::fail(
                txn,
                &label,
                format!("internal error: {e}"),
            )),
            close: true,
        },
    }
}

async fn process(
    ctx: Ctx,
    begun: Begun,
    plan: headers::PlanOptions,
    format: Format,
    format_compression: Option<headers::Compression>,
    body: bytes::Bytes,
    times: [u64; 3],
) -> Outcome {
    let shared = ctx.shared.clone();
    let txn = begun.txn;
    let label = ctx.label.clone();
    let base = |status: &str, msg: String| {
        let mut r = LoadResponse::new(txn, &label, status, msg);
        r.load_bytes = body.len() as u64;
        r.begin_txn_time_ms = times[0];
        r.stream_load_plan_time_ms = times[1];
        r.read_data_time_ms = times[2];
        r
    };
    let fail = |msg: String| {
        ctx.abort(txn, &msg);
        Outcome::Reply {
            resp: ctx.finish(base(status::FAIL, msg), false, true),
            close: false,
        }
    };

    let write_start = Instant::now();
    let compression = plan.compression.or(format_compression);
    let data = match compression {
        Some(c) => match body::decompress(c, &body) {
            Ok(d) => d,
            Err(m) => return fail(m),
        },
        None => body.to_vec(),
    };
    let is_json = format == Format::Json;
    if shared.config.fast_loads && plan.json_root.is_none() {
        let counted = if is_json {
            fast::count_json_rows(&data, plan.strip_outer_array)
        } else {
            Ok(fast::count_csv_rows(&data, &plan))
        };
        return match counted {
            Ok(n) => fast_commit(&ctx, &begun, n, base(status::SUCCESS, "OK".into())),
            Err(m) => fail(m),
        };
    }
    // Row faults: filtered rows (within the ratio check, or committed anyway), lost rows.
    let row_fault = shared.faults.take(|f| match f {
        Fault::FilterRows { .. } | Fault::FilteredSuccess { .. } | Fault::LoseRows { .. } => {
            Some(f.clone())
        }
        _ => None,
    });
    let (inject, ignore_ratio, lose) = match row_fault {
        Some(Fault::FilterRows { rows }) => (rows, false, 0),
        Some(Fault::FilteredSuccess { rows }) => (rows, true, 0),
        Some(Fault::LoseRows { rows }) => (0, false, rows),
        _ => (0, false, 0),
    };
    let (converted, total) = if is_json {
        let objs = match body::parse_json(&data, &plan) {
            Ok(o) => o,
            Err(m) => return fail(m),
        };
        let n = objs.len() as u64;
        (
            apply::convert_rows(&begun.schema, &plan, None, Some(&objs), inject),
            n,
        )
    } else {
        let rows = body::parse_csv(&data, &plan);
        let n = rows.len() as u64;
        (
            apply::convert_rows(&begun.schema, &plan, Some(&rows), None, inject),
            n,
        )
    };
    let mut converted = converted;
    if lose > 0 {
        let n = (lose as usize).min(converted.rows.len());
        converted.rows.drain(..n);
    }
    let filtered = converted.errors.len() as u64;
    let loaded = converted.rows.len() as u64;
    let error_url = if filtered > 0 {
        let file = shared
            .lock()
            .add_error_log(converted.errors.join("\n") + "\n");
        Some(format!(
            "{}/api/_load_error_log?file={file}",
            shared.be_base()
        ))
    } else {
        None
    };
    let counted = |mut r: LoadResponse| {
        r.number_total_rows = total;
        r.number_loaded_rows = loaded;
        r.number_filtered_rows = filtered;
        r.error_url = error_url.clone();
        r
    };
    if !ignore_ratio && total > 0 && (filtered as f64) / (total as f64) > plan.max_filter_ratio {
        let m = "too many filtered rows".to_string();
        ctx.abort(txn, &m);
        let mut r = counted(base(status::FAIL, m));
        r.write_data_time_ms = ms(write_start.elapsed());
        return Outcome::Reply {
            resp: ctx.finish(r, false, true),
            close: false,
        };
    }
    let write_ms = ms(write_start.elapsed());

    // Faults that act at commit time.
    let commit_fault = shared.faults.take(|f| match f {
        Fault::StatusFail { .. }
        | Fault::PublishTimeout { .. }
        | Fault::LabelRunning { .. }
        | Fault::LateCommit { .. }
        | Fault::DropConnection { .. } => Some(f.clone()),
        _ => None,
    });
    match &commit_fault {
        Some(Fault::LabelRunning { hold_ms }) => {
            tokio::time::sleep(Duration::from_millis(*hold_ms)).await;
        }
        // This task runs on even when the client's connection is gone.
        Some(Fault::LateCommit { commit_after_ms }) => {
            tokio::time::sleep(Duration::from_millis(*commit_after_ms)).await;
        }
        _ => {}
    }
    let (do_commit, visible_after) = match &commit_fault {
        Some(Fault::StatusFail { commit, .. }) | Some(Fault::DropConnection { commit }) => {
            (*commit, 0)
        }
        Some(Fault::PublishTimeout { visible_after_ms }) => (true, *visible_after_ms),
        _ => (true, 0),
    };

    let commit_start = Instant::now();
    let committed = if do_commit {
        match commit(&ctx, &begun, &plan, converted.rows, visible_after) {
            Ok(()) => true,
            Err(m) => return fail(m),
        }
    } else {
        let reason = match &commit_fault {
            Some(Fault::StatusFail { message, .. }) => message.clone(),
            _ => "connection dropped".to_string(),
        };
        ctx.abort(txn, &reason);
        false
    };
    let commit_ms = ms(commit_start.elapsed());
    let finish_resp = |status: &str, msg: String| {
        let mut r = counted(base(status, msg));
        r.write_data_time_ms = write_ms;
        r.commit_and_publish_time_ms = commit_ms;
        r
    };
    match commit_fault {
        Some(Fault::LateCommit { .. }) => {
            ctx.finish(finish_resp(status::SUCCESS, "OK".into()), committed, false);
            Outcome::Drop
        }
        Some(Fault::DropConnection { .. }) => {
            ctx.finish(
                finish_resp(status::FAIL, "connection dropped by fault".into()),
                committed,
                false,
            );
            Outcome::Drop
        }
        Some(Fault::StatusFail { message, .. }) => Outcome::Reply {
            resp: ctx.finish(finish_resp(status::FAIL, message), committed, true),
            close: false,
        },
        Some(Fault::PublishTimeout { .. }) => Outcome::Reply {
            resp: ctx.finish(
                finish_resp(
                    status::PUBLISH_TIMEOUT,
                    format!(
                        "Publish timeout. The data will be visible after a while, txn_id: {txn}"
                    ),
                ),
                committed,
                true,
            ),
            close: false,
        },
        _ => Outcome::Reply {
            resp: ctx.finish(finish_resp(status::SUCCESS, "OK".into()), committed, true),
            close: false,
        },
    }
}

/// Fast mode: commits a counted load (label VISIBLE, rows counted, none stored).
fn fast_commit(ctx: &Ctx, begun: &Begun, rows: u64, mut resp: LoadResponse) -> Outcome {
    {
        let mut st = ctx.shared.lock();
        let Some(dbo) = st.catalog.dbs.get_mut(&ctx.db) else {
            drop(st);
            let m = format!("unknown database, database={}", ctx.db);
            ctx.abort(begun.txn, &m);
            return Outcome::Reply {
                resp: ctx.finish(LoadResponse::fail(begun.txn, &ctx.label, m), false, true),
                close: false,
            };
        };
        dbo.labels
            .set_state(&ctx.label, begun.txn, TxnState::Visible, "");
        st.add_loaded_rows(&ctx.db, &ctx.table, rows);
    }
    ctx.shared.mark_dirty();
    resp.number_total_rows = rows;
    resp.number_loaded_rows = rows;
    Outcome::Reply {
        resp: ctx.finish(resp, true, true),
        close: false,
    }
}

/// Applies the rows atomically and marks the label VISIBLE (or COMMITTED, then VISIBLE
/// after `visible_after_ms`).
fn commit(
    ctx: &Ctx,
    begun: &Begun,
    plan: &headers::PlanOptions,
    rows: Vec<apply::LoadRow>,
    visible_after_ms: u64,
) -> Result<(), String> {
    let shared = &ctx.shared;
    {
        let mut st = shared.lock();
        let Some(dbo) = st.catalog.dbs.get_mut(&ctx.db) else {
            return Err(format!("unknown database, database={}", ctx.db));
        };
        let Some(t) = dbo.tables.get_mut(&ctx.table) else {
            return Err(format!("unknown table \"{}.{}\"", ctx.db, ctx.table));
        };
        if t.schema_version != begun.schema_version {
            return Err(format!(
                "schema of table {} changed during the load, please retry",
                ctx.table
            ));
        }
        if visible_after_ms == 0 {
            apply::apply(t, &rows, plan.merge_condition);
            dbo.labels
                .set_state(&ctx.label, begun.txn, TxnState::Visible, "");
            st.add_loaded_rows(&ctx.db, &ctx.table, rows.len() as u64);
        } else {
            dbo.labels
                .set_state(&ctx.label, begun.txn, TxnState::Committed, "");
        }
    }
    shared.mark_dirty();
    if visible_after_ms > 0 {
        let shared = shared.clone();
        let (db, table, label, txn, mc) = (
            ctx.db.clone(),
            ctx.table.clone(),
            ctx.label.clone(),
            begun.txn,
            plan.merge_condition,
        );
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(visible_after_ms)).await;
            let mut st = shared.lock();
            if let Some(dbo) = st.catalog.dbs.get_mut(&db) {
                if let Some(t) = dbo.tables.get_mut(&table) {
                    apply::apply(t, &rows, mc);
                }
                dbo.labels.set_state(&label, txn, TxnState::Visible, "");
                st.add_loaded_rows(&db, &table, rows.len() as u64);
            }
            drop(st);
            shared.mark_dirty();
        });
    }
    Ok(())
}
