//! Typed changes as they leave the reader and enter the spool.
//!
//! These types are the contract between the reader, the spool and the loader. The spool
//! stores changes in its own binary form (`spool::record`, row images as pgoutput
//! TupleData), so changing what a change carries needs a spool format bump. Values are
//! shared bytes (`bytes::Bytes`): the loader's values are slices of the spool's blocks.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Lsn;

/// PostgreSQL relation (table) OID.
pub type RelationId = u32;
/// PostgreSQL transaction id (32-bit, as pgoutput sends it).
pub type Xid = u32;
/// Microseconds since 2000-01-01 00:00:00 UTC (PostgreSQL's epoch), as pgoutput sends times.
pub type PgTimestamp = i64;

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01).
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// `REPLICA IDENTITY` of a relation, as pgoutput reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaIdentity {
    /// `d`: the primary key.
    Default,
    /// `n`: nothing; UPDATE/DELETE carry no old key.
    Nothing,
    /// `f`: all columns.
    Full,
    /// `i`: a unique index.
    Index,
}

impl ReplicaIdentity {
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'd' => Some(Self::Default),
            b'n' => Some(Self::Nothing),
            b'f' => Some(Self::Full),
            b'i' => Some(Self::Index),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Nothing => "nothing",
            Self::Full => "full",
            Self::Index => "index",
        }
    }
}

/// One column of a relation, as the Relation message describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    /// Part of the replica identity key (flag bit 1 in pgoutput).
    pub is_key: bool,
    pub type_oid: u32,
    /// `atttypmod`: e.g. numeric precision/scale, varchar length; -1 when none.
    pub type_modifier: i32,
}

/// The schema of a relation at some point of the WAL. A new Relation message for the
/// same id (after DDL) is a new version; the spool keeps every version it still needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relation {
    pub id: RelationId,
    pub namespace: String,
    pub name: String,
    pub replica_identity: ReplicaIdentity,
    pub columns: Vec<Column>,
}

impl Relation {
    /// `schema.table`, for messages.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.namespace, self.name)
    }
}

/// One column value of a tuple, as pgoutput sends it (text format).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Value {
    /// SQL NULL (`n`).
    Null,
    /// An unchanged TOASTed value that the server did not send (`u`): the loader must not
    /// overwrite the target column with anything.
    UnchangedToast,
    /// The value in PostgreSQL's text output format (`t`), in the server encoding. Shared
    /// bytes: decoded from the spool it is a slice of the stored block (no copy), and
    /// cloning it (the planner does) is a reference count, not an allocation.
    Text(#[serde(with = "shared_bytes")] Bytes),
    /// The value in binary format (`b`), only if binary transfer was requested.
    Binary(#[serde(with = "shared_bytes")] Bytes),
}

impl Value {
    /// A text value (copies `b`; tests and tools).
    pub fn text(b: impl AsRef<[u8]>) -> Value {
        Value::Text(Bytes::copy_from_slice(b.as_ref()))
    }

    /// A binary value (copies `b`; tests and tools).
    pub fn binary(b: impl AsRef<[u8]>) -> Value {
        Value::Binary(Bytes::copy_from_slice(b.as_ref()))
    }
}

/// serde for [`Bytes`] as a byte string (like `serde_bytes` for `Vec<u8>`).
mod shared_bytes {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        serde_bytes::ByteBuf::deserialize(d).map(|b| Bytes::from(b.into_vec()))
    }
}

impl std::fmt::Debug for Value {
    /// As its borrowed view prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.as_ref(), f)
    }
}

/// A row image: one value per column of the relation version it was decoded with.
pub type Tuple = Vec<Value>;

/// Which old image an UPDATE/DELETE carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OldKind {
    /// `K`: only the replica identity key columns are set, the others are Null.
    Key,
    /// `O`: the full old row (REPLICA IDENTITY FULL).
    Full,
}

/// What happened to a row (or, for TRUNCATE, to whole tables).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeOp {
    Insert {
        new: Tuple,
    },
    Update {
        /// The old image, when the server sent one (key changed, or REPLICA IDENTITY FULL).
        old: Option<(OldKind, Tuple)>,
        new: Tuple,
    },
    Delete {
        old: (OldKind, Tuple),
    },
    /// TRUNCATE of one or more relations; `cascade`/`restart_identity` as sent.
    Truncate {
        relations: Vec<RelationId>,
        cascade: bool,
        restart_identity: bool,
    },
}

/// One decoded row change. `relation` is the relation id for row operations; for
/// TRUNCATE it is the first truncated relation (all of them are in the op).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Top-level transaction id (from Begin, or Stream Start for streamed transactions).
    pub xid: Xid,
    /// The xid the change message itself carried in a streamed transaction (a
    /// subtransaction's xid, needed to apply a Stream Abort of that subtransaction);
    /// equal to `xid` otherwise.
    pub subxid: Xid,
    pub relation: RelationId,
    /// WAL position of the message that carried this change.
    pub lsn: Lsn,
    pub op: ChangeOp,
}

/// Commit details of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitInfo {
    pub xid: Xid,
    /// LSN of the commit record.
    pub commit_lsn: Lsn,
    /// End of the commit record: where replication resumes after this transaction.
    pub end_lsn: Lsn,
    pub commit_time: PgTimestamp,
}

/// What the reader hands to the spool, in WAL order. A transaction is `Begin`, its
/// changes, `Commit`. A streamed (protocol v2) transaction arrives as changes tagged with
/// its xid between `StreamStart`/`StreamStop` segments, possibly interleaved with other
/// transactions, and ends with `StreamCommit` or `StreamAbort`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReaderEvent {
    /// A (possibly new) schema version of a relation; precedes its first use.
    Relation(Relation),
    Begin {
        xid: Xid,
        /// The commit LSN the transaction will have (pgoutput's final_lsn).
        final_lsn: Lsn,
        commit_time: PgTimestamp,
    },
    Change(Change),
    Commit(CommitInfo),
    /// Start of a segment of a streamed in-progress transaction.
    StreamStart {
        xid: Xid,
        first_segment: bool,
    },
    StreamStop,
    StreamCommit(CommitInfo),
    /// Abort of a streamed transaction (`subxid == xid`) or of one of its subtransactions.
    StreamAbort {
        xid: Xid,
        subxid: Xid,
    },
    /// The replication stream (re)started at `from` after a connection loss. The reader
    /// resumes at the end of the last complete transaction it handed over, so whatever
    /// was open (an unfinished transaction, every in-progress streamed transaction) will
    /// be sent again from its start and must be discarded by the consumer now.
    Restart {
        from: Lsn,
    },
    /// `pg_logical_emit_message`. Transactional ones arrive inside their transaction.
    Message {
        xid: Option<Xid>,
        lsn: Lsn,
        transactional: bool,
        prefix: String,
        content: Vec<u8>,
    },
}
