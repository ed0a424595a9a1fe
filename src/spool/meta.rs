//! The ledger: the spool's durable bookkeeping in its own sled database (`<dir>/meta`):
//! format version, spool id, durable high-water mark, loaded mark, confirmed LSN, pending
//! counters and the relation (schema) versions still needed. Keeps invariants 3 and 8:
//! the durable mark is written only after the records it covers were flushed, and it
//! survives even when everything is loaded, so a restart knows where to resume.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::{Result, SpoolError};
use super::record::{frame, unframe};
use crate::core::{CommitInfo, Lsn, PgTimestamp, Relation, RelationId};

pub(crate) const KEY_FORMAT: &[u8] = b"format_version";
pub(crate) const KEY_STATE: &[u8] = b"state";
pub(crate) const REL_PREFIX: &[u8] = b"rel/";

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

fn meta_corrupt(key: &str, e: SpoolError) -> SpoolError {
    SpoolError::CorruptMeta {
        key: key.to_string(),
        reason: e.to_string(),
    }
}

/// The meta database.
pub(crate) struct Ledger {
    db: sled::Db,
}

impl Ledger {
    pub(crate) fn new(db: sled::Db) -> Self {
        Ledger { db }
    }

    pub(crate) fn db(&self) -> &sled::Db {
        &self.db
    }

    pub(crate) fn format_version(&self) -> Result<Option<u32>> {
        let v = self
            .db
            .get(KEY_FORMAT)
            .map_err(|e| SpoolError::sled("reading the format version", e))?;
        match v {
            None => Ok(None),
            Some(v) => {
                let arr: [u8; 4] = v.as_ref().try_into().map_err(|_| SpoolError::CorruptMeta {
                    key: "format_version".into(),
                    reason: format!("{} bytes, expected 4", v.len()),
                })?;
                Ok(Some(u32::from_be_bytes(arr)))
            }
        }
    }

    pub(crate) fn init(&self, format: u32, state: &MetaState) -> Result<()> {
        self.db
            .insert(KEY_FORMAT, &format.to_be_bytes())
            .map_err(|e| SpoolError::sled("creating the spool", e))?;
        self.store_state(state)
    }

    pub(crate) fn load_state(&self) -> Result<MetaState> {
        let v = self
            .db
            .get(KEY_STATE)
            .map_err(|e| SpoolError::sled("reading the spool state", e))?
            .ok_or_else(|| SpoolError::CorruptMeta {
                key: "state".into(),
                reason: "missing".into(),
            })?;
        unframe(0, &v).map_err(|e| meta_corrupt("state", e))
    }

    /// Writes and makes durable the state (one atomic insert, then a flush).
    pub(crate) fn store_state(&self, state: &MetaState) -> Result<()> {
        let v = frame(state)?;
        self.db
            .insert(KEY_STATE, v)
            .map_err(|e| SpoolError::sled("writing the spool state", e))?;
        self.db
            .flush()
            .map_err(|e| SpoolError::sled("flushing the spool state", e))?;
        Ok(())
    }

    /// Stores a relation version (not flushed: the next `store_state` flushes it, before
    /// any durable mark that covers records using it).
    pub(crate) fn put_relation(&self, version: u32, rel: &Relation) -> Result<()> {
        self.db
            .insert(rel_key(rel.id, version), frame(rel)?)
            .map_err(|e| SpoolError::sled("storing a relation version", e))?;
        Ok(())
    }

    pub(crate) fn remove_relation(&self, id: RelationId, version: u32) -> Result<()> {
        self.db
            .remove(rel_key(id, version))
            .map_err(|e| SpoolError::sled("removing a relation version", e))?;
        Ok(())
    }

    pub(crate) fn relations(&self) -> Result<BTreeMap<(RelationId, u32), Relation>> {
        let mut out = BTreeMap::new();
        for kv in self.db.scan_prefix(REL_PREFIX) {
            let (k, v) = kv.map_err(|e| SpoolError::sled("reading relation versions", e))?;
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
