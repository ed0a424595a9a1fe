//! The ledger: the spool's durable bookkeeping in its own database (`<dir>/meta`):
//! format version, spool id, durable high-water mark, loaded mark, confirmed LSN, pending
//! counters, the relation (schema) versions still needed, the source identity and the
//! loader's journal. Keeps invariants 3, 8 and 12: the durable mark is written only after
//! the records it covers were synced, every state change is one atomic batch synced
//! before it is published, and the marks survive even when everything is loaded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::error::{Result, SpoolError};
use super::lock;
use super::record::{frame, unframe};
use super::storage::{Database, Store, StoreResult, Tree, WriteBatch, DEFAULT_TREE};
use crate::core::{CommitInfo, Lsn, PgTimestamp, Relation, RelationId};

pub(crate) const KEY_FORMAT: &[u8] = b"format_version";
pub(crate) const KEY_STATE: &[u8] = b"state";
pub(crate) const REL_PREFIX: &[u8] = b"rel/";
/// The source this spool belongs to (framed `identity::SourceIdentity`).
pub(crate) const KEY_SOURCE: &[u8] = b"source";
/// The loader's journal (framed opaque bytes).
pub(crate) const KEY_JOURNAL: &[u8] = b"loader_journal";

/// The last durable commit: what the loader may read up to, and where replication resumes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurableMark {
    /// Sequence of the last durable commit record (0: none yet).
    pub seq: u64,
    /// Commit LSN of the last durable transaction (empty transactions included).
    pub commit_lsn: Lsn,
    /// End LSN of that commit: where replication resumes after a restart.
    pub end_lsn: Lsn,
}

/// What the loader has loaded into the sink and confirmed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadedMark {
    /// Every record up to and including this sequence is loaded (0: none).
    pub seq: u64,
    /// The LSN the loader confirms to PostgreSQL.
    pub confirmed_lsn: Lsn,
}

/// The oldest transaction still waiting for the loader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingTxn {
    pub commit_seq: u64,
    pub commit_lsn: Lsn,
    pub commit_time: PgTimestamp,
}

/// Counters of what is durable and not yet loaded, kept up to date on every flush and
/// every `mark_loaded` (never recomputed by a scan).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub records: u64,
    pub txns: u64,
    pub bytes: u64,
    pub per_table: BTreeMap<RelationId, u64>,
    pub oldest: Option<PendingTxn>,
}

impl Counters {
    pub(crate) fn add_txn(
        &mut self,
        commit_seq: u64,
        info: &CommitInfo,
        changes: u64,
        bytes: u64,
        tables: &[(RelationId, u64)],
    ) {
        self.records += changes + 1;
        self.txns += 1;
        self.bytes += bytes;
        for (t, n) in tables {
            *self.per_table.entry(*t).or_default() += n;
        }
        if self.oldest.is_none() {
            self.oldest = Some(PendingTxn {
                commit_seq,
                commit_lsn: info.commit_lsn,
                commit_time: info.commit_time,
            });
        }
    }

    pub(crate) fn remove_txn(&mut self, changes: u64, bytes: u64, tables: &[(RelationId, u64)]) {
        self.records = self.records.saturating_sub(changes + 1);
        self.txns = self.txns.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(bytes);
        for (t, n) in tables {
            if let Some(c) = self.per_table.get_mut(t) {
                *c = c.saturating_sub(*n);
                if *c == 0 {
                    self.per_table.remove(t);
                }
            }
        }
    }
}

/// Everything of the ledger that changes, stored as one framed value so each update is a
/// single atomic sled insert.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaState {
    pub spool_id: u64,
    pub durable: DurableMark,
    pub loaded: LoadedMark,
    pub counters: Counters,
    /// Last log sequence using each relation version, for garbage collection of versions.
    pub rel_last_used: BTreeMap<(RelationId, u32), u64>,
}

/// Key of a relation version.
pub(crate) fn rel_key(id: RelationId, version: u32) -> Vec<u8> {
    let mut k = REL_PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k.extend_from_slice(&version.to_be_bytes());
    k
}

pub(crate) fn parse_rel_key(k: &[u8]) -> Option<(RelationId, u32)> {
    let rest = k.strip_prefix(REL_PREFIX)?;
    if rest.len() != 8 {
        return None;
    }
    let id = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let v = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
    Some((id, v))
}

pub(crate) fn meta_corrupt(key: &str, e: SpoolError) -> SpoolError {
    SpoolError::CorruptMeta {
        key: key.to_string(),
        reason: e.to_string(),
    }
}

/// The meta database. A write error (a full disk: the engine's handle then keeps
/// failing) poisons the handle; `reopen` replaces it.
pub(crate) struct Ledger {
    store: Arc<dyn Store>,
    path: PathBuf,
    handle: Mutex<Option<LedgerDb>>,
    poisoned: AtomicBool,
}

struct LedgerDb {
    tree: Box<dyn Tree>,
    // Declared last: the tree is dropped before the database.
    db: Box<dyn Database>,
}

fn open_ledger_db(store: &dyn Store, path: &Path) -> Result<LedgerDb> {
    let db = store.open(path, 1 << 20).map_err(|e| {
        SpoolError::store(format!("opening the spool ledger {}", path.display()), e)
    })?;
    let tree = db
        .tree(DEFAULT_TREE)
        .map_err(|e| SpoolError::store("opening the spool ledger", e))?;
    Ok(LedgerDb { tree, db })
}

impl Ledger {
    pub(crate) fn open(store: Arc<dyn Store>, path: PathBuf) -> Result<Self> {
        let db = open_ledger_db(store.as_ref(), &path)?;
        Ok(Ledger {
            store,
            path,
            handle: Mutex::new(Some(db)),
            poisoned: AtomicBool::new(false),
        })
    }

    /// A write failed: the handle must be reopened before the next write.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Replaces the handle, stores `relations` again (relation versions written since
    /// the last sync may be lost with the old handle) and syncs.
    pub(crate) fn reopen(&self, relations: &BTreeMap<(RelationId, u32), Relation>) -> Result<()> {
        let mut h = lock(&self.handle);
        *h = None;
        let db = open_ledger_db(self.store.as_ref(), &self.path)?;
        let mut batch = WriteBatch::new();
        for ((id, v), rel) in relations {
            batch.insert(rel_key(*id, *v), frame(rel)?);
        }
        if !batch.is_empty() {
            db.tree
                .apply_batch(&batch)
                .map_err(|e| SpoolError::store("storing relation versions again", e))?;
        }
        db.db
            .sync()
            .map_err(|e| SpoolError::store("syncing the spool ledger", e))?;
        *h = Some(db);
        self.poisoned.store(false, Ordering::Release);
        Ok(())
    }

    fn read<T>(&self, what: &str, f: impl FnOnce(&dyn Tree) -> StoreResult<T>) -> Result<T> {
        let h = lock(&self.handle);
        let db = h.as_ref().ok_or_else(|| closed(what))?;
        f(db.tree.as_ref()).map_err(|e| SpoolError::store(what, e))
    }

    /// A write, then (with `sync`) a sync of the whole ledger. Any failure poisons it.
    fn write(
        &self,
        what: &str,
        sync: bool,
        f: impl FnOnce(&dyn Tree) -> StoreResult<()>,
    ) -> Result<()> {
        let h = lock(&self.handle);
        let db = h.as_ref().ok_or_else(|| closed(what))?;
        let r = f(db.tree.as_ref()).and_then(|()| if sync { db.db.sync() } else { Ok(()) });
        r.map_err(|e| {
            self.poisoned.store(true, Ordering::Release);
            SpoolError::store(what, e)
        })
    }

    pub(crate) fn format_version(&self) -> Result<Option<u32>> {
        let v = self.read("reading the format version", |t| t.get(KEY_FORMAT))?;
        match v {
            None => Ok(None),
            Some(v) => {
                let arr: [u8; 4] =
                    v.as_slice()
                        .try_into()
                        .map_err(|_| SpoolError::CorruptMeta {
                            key: "format_version".into(),
                            reason: format!("{} bytes, expected 4", v.len()),
                        })?;
                Ok(Some(u32::from_be_bytes(arr)))
            }
        }
    }

    /// Creates the ledger of a new spool (durable when it returns).
    pub(crate) fn init(&self, format: u32, state: &MetaState) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.insert(KEY_FORMAT, format.to_be_bytes());
        batch.insert(KEY_STATE, frame(state)?);
        self.write("creating the spool", true, |t| t.apply_batch(&batch))
    }

    pub(crate) fn load_state(&self) -> Result<MetaState> {
        let v = self
            .read("reading the spool state", |t| t.get(KEY_STATE))?
            .ok_or_else(|| SpoolError::CorruptMeta {
                key: "state".into(),
                reason: "missing".into(),
            })?;
        unframe(0, &v).map_err(|e| meta_corrupt("state", e))
    }

    /// Writes the state together with `extra` (one atomic batch) and syncs the ledger.
    pub(crate) fn commit(&self, state: &MetaState, mut extra: WriteBatch) -> Result<()> {
        extra.insert(KEY_STATE, frame(state)?);
        self.write("writing the spool state", true, |t| t.apply_batch(&extra))
    }

    /// Writes `batch` atomically and syncs the ledger.
    pub(crate) fn commit_batch(&self, what: &str, batch: &WriteBatch) -> Result<()> {
        self.write(what, true, |t| t.apply_batch(batch))
    }

    /// A framed value of the ledger (`None` when missing).
    pub(crate) fn get_framed<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        name: &str,
    ) -> Result<Option<T>> {
        match self.read("reading the spool ledger", |t| t.get(key))? {
            None => Ok(None),
            Some(v) => unframe(0, &v).map(Some).map_err(|e| meta_corrupt(name, e)),
        }
    }

    /// Stores a relation version (not synced: the next state commit syncs it, before
    /// any durable mark that covers records using it).
    pub(crate) fn put_relation(&self, version: u32, rel: &Relation) -> Result<()> {
        let value = frame(rel)?;
        let key = rel_key(rel.id, version);
        self.write("storing a relation version", false, |t| {
            t.insert(&key, &value)
        })
    }

    pub(crate) fn relations(&self) -> Result<BTreeMap<(RelationId, u32), Relation>> {
        let kvs: Vec<(Vec<u8>, Vec<u8>)> = self.read("reading relation versions", |t| {
            t.scan_prefix(REL_PREFIX).collect::<StoreResult<Vec<_>>>()
        })?;
        let mut out = BTreeMap::new();
        for (k, v) in kvs {
            let (id, ver) = parse_rel_key(&k).ok_or_else(|| SpoolError::CorruptMeta {
                key: String::from_utf8_lossy(&k).into_owned(),
                reason: "bad relation key".into(),
            })?;
            let rel: Relation =
                unframe(0, &v).map_err(|e| meta_corrupt(&format!("rel/{id}/{ver}"), e))?;
            out.insert((id, ver), rel);
        }
        Ok(out)
    }
}

fn closed(what: &str) -> SpoolError {
    SpoolError::Storage {
        context: what.to_string(),
        message: "the ledger is closed after an earlier storage error; it is reopened \
                  before the next write"
            .into(),
    }
}
