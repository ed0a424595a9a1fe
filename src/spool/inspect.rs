//! Inspection of a spool: JSON views of records and stats, a full verify, and a small
//! server so the inspection tool works while the daemon holds the spool (sled locks its
//! directory exclusively): JSON lines over `<dir>/inspect.sock`. Keeps invariant 9: verify
//! reports every corrupt or missing record by its sequence.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};
use tracing::{debug, warn};

use super::error::{Result, SpoolError};
use super::record::{decode_record, key_seq, seq_key, Block, SpoolRecord};
use super::{lock, Spool};
use crate::core::{ChangeOp, OldKind, Tuple, Value};

/// Name of the inspection socket inside the spool directory.
pub const SOCKET_NAME: &str = "inspect.sock";

/// Path of the inspection socket of the spool in `dir`.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join(SOCKET_NAME)
}

/// One inspection request (a JSON line on the socket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum InspectRequest {
    Stats,
    /// Summaries of durable records from `from` (default: first pending), at most `limit`.
    List {
        from: Option<u64>,
        limit: usize,
    },
    /// One record in full.
    Show {
        seq: u64,
    },
    /// Summaries of the last `n` durable records.
    Tail {
        n: usize,
    },
    /// Check every pending record (CRC, decoding, continuity, commit index, relations).
    Verify,
    /// Full records `from..=to` (defaults: all pending).
    Export {
        from: Option<u64>,
        to: Option<u64>,
    },
}

/// A problem found by verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub seq: u64,
    pub reason: String,
}

/// Result of [`Spool::verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub checked: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// At most this many problems are listed (the count of checked records stays exact).
const MAX_PROBLEMS: usize = 1000;

impl Spool {
    /// Reads every pending durable record and checks it: CRC, decoding, no gaps, commit
    /// records consistent with their transaction and present in the commit index,
    /// relation versions present. Never stops at the first problem.
    pub fn verify(&self) -> Result<VerifyReport> {
        let durable = self.durable_mark().seq;
        let loaded = self.loaded_mark().seq;
        let mut rep = VerifyReport {
            checked: 0,
            first_seq: loaded + 1,
            last_seq: durable,
            problems: Vec::new(),
        };
        let problem = |rep: &mut VerifyReport, seq: u64, reason: String| {
            if rep.problems.len() < MAX_PROBLEMS {
                rep.problems.push(Problem { seq, reason });
            }
        };
        let firsts: Vec<(u64, u64)> = {
            let sh = lock(&self.inner.shared);
            sh.segments
                .iter()
                .filter(|(f, s)| **f <= durable && s.last_seq > loaded)
                .map(|(f, s)| (*f, s.last_seq))
                .collect()
        };
        let mut expected = loaded + 1;
        let mut txn_first = expected;
        let mut txn_changes = 0u64;
        let mut in_txn_unknown_start = true;
        // After an unreadable block, the gap up to the next block is that block's.
        let mut after_bad_block = false;
        for (first, _) in firsts {
            let seg = match self.segment(first) {
                Ok(s) => s,
                Err(e) => {
                    problem(
                        &mut rep,
                        first.max(expected),
                        format!("cannot open segment: {e}"),
                    );
                    continue;
                }
            };
            let start = expected.max(first);
            // Start at the block holding `start` (keyed at or before it).
            let lo = match seg.log.floor(&seq_key(start)) {
                Ok(Some((k, _))) => k,
                _ => seq_key(start).to_vec(),
            };
            let hi = seq_key(durable);
            for kv in seg.log.range(
                std::ops::Bound::Included(&lo[..]),
                std::ops::Bound::Included(&hi[..]),
            ) {
                let (k, v) = match kv {
                    Ok(kv) => kv,
                    Err(e) => {
                        problem(&mut rep, expected, format!("storage error: {e}"));
                        break;
                    }
                };
                let block_first = match key_seq(&k) {
                    Ok(s) => s,
                    Err(e) => {
                        problem(&mut rep, expected, e.to_string());
                        continue;
                    }
                };
                let block = match Block::parse(block_first, bytes::Bytes::from(v)) {
                    Ok(b) => b,
                    Err(e) => {
                        problem(&mut rep, block_first.max(expected), reason_of(e));
                        in_txn_unknown_start = true;
                        after_bad_block = true;
                        txn_changes = 0;
                        continue;
                    }
                };
                if block.last_seq() < expected {
                    continue;
                }
                if block_first > expected && !after_bad_block {
                    problem(
                        &mut rep,
                        expected,
                        format!("records {expected}..{} missing", block_first - 1),
                    );
                    in_txn_unknown_start = true;
                    txn_changes = 0;
                }
                after_bad_block = false;
                let index = match seg.txns.get(&k) {
                    Ok(Some(iv)) => match seg.commits_of(block_first, &iv) {
                        Ok(c) => Ok(c),
                        Err(e) => Err(format!("commit index unreadable: {}", reason_of(e))),
                    },
                    Ok(None) => Ok(Vec::new()),
                    Err(e) => Err(format!("commit index unreadable: {e}")),
                };
                for (seq, rec) in block.records_from(expected.max(block_first)) {
                    if seq > durable {
                        break;
                    }
                    expected = seq + 1;
                    rep.checked += 1;
                    match decode_record(seq, &rec) {
                        Err(e) => {
                            problem(&mut rep, seq, reason_of(e));
                            in_txn_unknown_start = true;
                        }
                        Ok(SpoolRecord::Change {
                            rel_version,
                            change,
                        }) => {
                            if txn_changes == 0 {
                                txn_first = seq;
                            }
                            txn_changes += 1;
                            if self.relation(change.relation, rel_version).is_err() {
                                problem(
                                    &mut rep,
                                    seq,
                                    format!(
                                        "relation {} version {rel_version} is not in the spool",
                                        change.relation
                                    ),
                                );
                            }
                        }
                        Ok(SpoolRecord::Commit(c)) => {
                            if !in_txn_unknown_start
                                && (c.changes != txn_changes
                                    || (txn_changes > 0 && c.first_seq != txn_first))
                            {
                                problem(
                                    &mut rep,
                                    seq,
                                    format!(
                                        "commit says {} changes from {}, log has {txn_changes} from {txn_first}",
                                        c.changes, c.first_seq
                                    ),
                                );
                            }
                            match &index {
                                Ok(list) if list.iter().any(|(s, r)| *s == seq && *r == c) => {}
                                Ok(_) => problem(
                                    &mut rep,
                                    seq,
                                    "commit missing from the commit index".into(),
                                ),
                                Err(e) => problem(&mut rep, seq, e.clone()),
                            }
                            txn_changes = 0;
                            in_txn_unknown_start = false;
                        }
                    }
                }
            }
        }
        if expected <= durable && !after_bad_block {
            problem(
                &mut rep,
                expected,
                format!("records {expected}..{durable} missing"),
            );
        } else if durable > loaded && (txn_changes > 0) {
            problem(
                &mut rep,
                durable,
                "the durable mark is not on a commit record".into(),
            );
        }
        // Mark every problem-free first pass as ok; in_txn_unknown_start only suppresses
        // cascades of the same problem.
        let _ = in_txn_unknown_start;
        Ok(rep)
    }
}

fn reason_of(e: SpoolError) -> String {
    match e {
        SpoolError::Corrupt { reason, .. } => reason,
        other => other.to_string(),
    }
}

fn json_value(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::UnchangedToast => json!({ "unchanged_toast": true }),
        Value::Text(b) => Json::String(String::from_utf8_lossy(b).into_owned()),
        Value::Binary(b) => json!({ "hex": hex::encode(b) }),
    }
}

fn json_tuple(names: &[String], t: &Tuple) -> Json {
    let mut m = serde_json::Map::new();
    for (i, v) in t.iter().enumerate() {
        let name = names
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("column{i}"));
        m.insert(name, json_value(v));
    }
    Json::Object(m)
}

/// A record as JSON; `full` adds the row images.
pub fn record_json(spool: &Spool, seq: u64, rec: &SpoolRecord, full: bool) -> Json {
    match rec {
        SpoolRecord::Commit(c) => json!({
            "seq": seq,
            "type": "commit",
            "xid": c.info.xid,
            "commit_lsn": c.info.commit_lsn.to_string(),
            "end_lsn": c.info.end_lsn.to_string(),
            "commit_time": c.info.commit_time,
            "first_seq": c.first_seq,
            "changes": c.changes,
            "bytes": c.bytes,
            "tables": c.tables,
            "streamed": c.streamed,
        }),
        SpoolRecord::Change {
            rel_version,
            change,
        } => {
            let rel = spool.relation(change.relation, *rel_version).ok();
            let names: Vec<String> = rel
                .as_ref()
                .map(|r| r.columns.iter().map(|c| c.name.clone()).collect())
                .unwrap_or_default();
            let op = match &change.op {
                ChangeOp::Insert { .. } => "insert",
                ChangeOp::Update { .. } => "update",
                ChangeOp::Delete { .. } => "delete",
                ChangeOp::Truncate { .. } => "truncate",
            };
            let mut j = json!({
                "seq": seq,
                "type": "change",
                "op": op,
                "xid": change.xid,
                "subxid": change.subxid,
                "lsn": change.lsn.to_string(),
                "relation_id": change.relation,
                "relation": rel.as_ref().map(|r| r.qualified_name()),
                "rel_version": rel_version,
            });
            if full {
                let kind = |k: &OldKind| match k {
                    OldKind::Key => "key",
                    OldKind::Full => "full",
                };
                let extra = match &change.op {
                    ChangeOp::Insert { new } => json!({ "new": json_tuple(&names, new) }),
                    ChangeOp::Update { old, new } => json!({
                        "new": json_tuple(&names, new),
                        "old": old.as_ref().map(|(k, t)| json!({ "kind": kind(k), "row": json_tuple(&names, t) })),
                    }),
                    ChangeOp::Delete { old } => {
                        json!({ "old": { "kind": kind(&old.0), "row": json_tuple(&names, &old.1) } })
                    }
                    ChangeOp::Truncate {
                        relations,
                        cascade,
                        restart_identity,
                    } => json!({
                        "relations": relations,
                        "cascade": cascade,
                        "restart_identity": restart_identity,
                    }),
                };
                if let (Json::Object(a), Json::Object(b)) = (&mut j, extra) {
                    a.extend(b);
                }
            }
            j
        }
    }
}

const CHUNK: usize = 1024;

/// Answers one request, emitting JSON values in order.
pub fn handle(
    spool: &Spool,
    req: &InspectRequest,
    emit: &mut dyn FnMut(Json) -> std::io::Result<()>,
) -> Result<()> {
    let io = |e: std::io::Error| SpoolError::io("writing inspection output", e);
    let durable = spool.durable_mark().seq;
    let loaded = spool.loaded_mark().seq;
    match req {
        InspectRequest::Stats => {
            emit(serde_json::to_value(spool.stats()).unwrap_or(Json::Null)).map_err(io)
        }
        InspectRequest::Verify => {
            let rep = spool.verify()?;
            emit(serde_json::to_value(rep).unwrap_or(Json::Null)).map_err(io)
        }
        InspectRequest::Show { seq } => {
            let rec = spool.get(*seq)?;
            emit(record_json(spool, *seq, &rec, true)).map_err(io)
        }
        InspectRequest::List { from, limit } => {
            let start = from.unwrap_or(loaded + 1).max(1);
            each(spool, start, durable, *limit, false, emit)
        }
        InspectRequest::Tail { n } => {
            let start = durable.saturating_sub(*n as u64).max(loaded) + 1;
            each(spool, start, durable, *n, false, emit)
        }
        InspectRequest::Export { from, to } => {
            let start = from.unwrap_or(loaded + 1).max(1);
            let end = to.unwrap_or(durable).min(durable);
            each(spool, start, end, usize::MAX, true, emit)
        }
    }
}

fn each(
    spool: &Spool,
    start: u64,
    end: u64,
    limit: usize,
    full: bool,
    emit: &mut dyn FnMut(Json) -> std::io::Result<()>,
) -> Result<()> {
    let mut next = start;
    let mut left = limit;
    while next <= end && left > 0 {
        let batch = spool.read_range(next, end, left.min(CHUNK))?;
        let Some((last, _)) = batch.last() else { break };
        next = last + 1;
        left -= batch.len();
        for (seq, rec) in &batch {
            emit(record_json(spool, *seq, rec, full))
                .map_err(|e| SpoolError::io("writing inspection output", e))?;
        }
    }
    Ok(())
}

/// The daemon side: serves inspection requests on `<dir>/inspect.sock` until dropped.
pub struct InspectServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

/// Starts the inspection server of an open spool (called by the daemon).
pub fn serve(spool: Spool) -> Result<InspectServer> {
    let path = socket_path(spool.dir());
    // We hold the spool's lock, so a socket file left here is stale.
    if path.exists() {
        let _ = std::fs::remove_file(&path);
    }
    let listener = UnixListener::bind(&path)
        .map_err(|e| SpoolError::io(format!("binding {}", path.display()), e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| SpoolError::io("configuring the inspection socket", e))?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let thread = std::thread::Builder::new()
        .name("spool-inspect".into())
        .spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Err(e) = serve_one(&spool, stream) {
                            debug!(error = %e, "inspection client failed");
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => {
                        warn!(error = %e, "inspection socket accept failed");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            }
        })
        .map_err(|e| SpoolError::io("starting the inspection thread", e))?;
    Ok(InspectServer {
        stop,
        thread: Some(thread),
        path,
    })
}

impl Drop for InspectServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve_one(spool: &Spool, stream: UnixStream) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut out = std::io::BufWriter::new(stream);
    let req: InspectRequest = match serde_json::from_str(line.trim()) {
        Ok(r) => r,
        Err(e) => {
            writeln!(out, "{}", json!({ "error": format!("bad request: {e}") }))?;
            return out.flush();
        }
    };
    let mut emit = |v: Json| writeln!(out, "{}", json!({ "item": v }));
    let r = handle(spool, &req, &mut emit);
    let end = match r {
        Ok(()) => json!({ "end": true }),
        Err(e) => json!({ "error": e.to_string() }),
    };
    writeln!(out, "{end}")?;
    out.flush()
}

/// The client side: sends `req` to the daemon serving the spool in `dir`. Returns
/// `Ok(false)` when nobody listens there (open the spool directly instead).
pub fn request(
    dir: &Path,
    req: &InspectRequest,
    emit: &mut dyn FnMut(Json) -> std::io::Result<()>,
) -> Result<bool> {
    let path = socket_path(dir);
    let stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(_) => return Ok(false),
    };
    let io = |e: std::io::Error| SpoolError::io(format!("talking to {}", path.display()), e);
    let mut w = stream.try_clone().map_err(io)?;
    let line = serde_json::to_string(req).map_err(|e| SpoolError::Storage {
        context: "encoding an inspection request".into(),
        message: e.to_string(),
    })?;
    writeln!(w, "{line}").map_err(io)?;
    let reader = BufReader::new(stream);
    for line in reader.lines() {
        let line = line.map_err(io)?;
        let v: Json = serde_json::from_str(&line).map_err(|e| SpoolError::Storage {
            context: "reading an inspection answer".into(),
            message: e.to_string(),
        })?;
        if let Some(item) = v.get("item") {
            emit(item.clone()).map_err(io)?;
        } else if v.get("end").is_some() {
            return Ok(true);
        } else if let Some(err) = v.get("error") {
            return Err(SpoolError::Storage {
                context: "the daemon answered an inspection request".into(),
                message: err.as_str().unwrap_or("unknown error").to_string(),
            });
        }
    }
    Err(SpoolError::Storage {
        context: "reading an inspection answer".into(),
        message: "connection closed before the end of the answer".into(),
    })
}
