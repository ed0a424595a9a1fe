//! The pgoutput messages exactly as PostgreSQL 15 sends them (protocol versions 1 and 2),
//! one variant per message type and one field per protocol field. No meaning is added here:
//! the decoder turns these into `ReaderEvent`s.

use crate::core::{Lsn, OldKind, PgTimestamp, RelationId, ReplicaIdentity, Tuple, Xid};

/// Message tags (the first byte of every pgoutput message).
pub mod tag {
    pub const BEGIN: u8 = b'B';
    pub const COMMIT: u8 = b'C';
    pub const ORIGIN: u8 = b'O';
    pub const RELATION: u8 = b'R';
    pub const TYPE: u8 = b'Y';
    pub const INSERT: u8 = b'I';
    pub const UPDATE: u8 = b'U';
    pub const DELETE: u8 = b'D';
    pub const TRUNCATE: u8 = b'T';
    pub const MESSAGE: u8 = b'M';
    pub const STREAM_START: u8 = b'S';
    pub const STREAM_STOP: u8 = b'E';
    pub const STREAM_COMMIT: u8 = b'c';
    pub const STREAM_ABORT: u8 = b'A';

    /// Every tag this parser understands; anything else is `PgOutputMessage::Unknown`.
    pub const KNOWN: [u8; 14] = [
        BEGIN,
        COMMIT,
        ORIGIN,
        RELATION,
        TYPE,
        INSERT,
        UPDATE,
        DELETE,
        TRUNCATE,
        MESSAGE,
        STREAM_START,
        STREAM_STOP,
        STREAM_COMMIT,
        STREAM_ABORT,
    ];
}

/// Tuple data markers.
pub mod tuple_kind {
    pub const NULL: u8 = b'n';
    pub const UNCHANGED_TOAST: u8 = b'u';
    pub const TEXT: u8 = b't';
    pub const BINARY: u8 = b'b';
    /// Marks the new tuple of Insert/Update.
    pub const NEW: u8 = b'N';
    /// Marks an old tuple holding only the replica identity key.
    pub const OLD_KEY: u8 = b'K';
    /// Marks an old tuple holding the whole old row.
    pub const OLD_FULL: u8 = b'O';
}

/// Column flag bit: the column is part of the replica identity key.
pub const COLUMN_FLAG_KEY: u8 = 1;
/// Truncate option bit: `CASCADE`.
pub const TRUNCATE_CASCADE: u8 = 1;
/// Truncate option bit: `RESTART IDENTITY`.
pub const TRUNCATE_RESTART_IDENTITY: u8 = 2;
/// Logical decoding message flag bit: the message is transactional.
pub const MESSAGE_TRANSACTIONAL: u8 = 1;

/// One column of a Relation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Int8 flags; bit [`COLUMN_FLAG_KEY`] marks a key column.
    pub flags: u8,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

/// Abort details that protocol version 4 (PostgreSQL 16+, `streaming = parallel`) appends
/// to Stream Abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamAbortInfo {
    pub abort_lsn: Lsn,
    pub abort_time: PgTimestamp,
}

/// One pgoutput message. Fields named `xid: Option<Xid>` are the Int32 that protocol 2
/// inserts right after the tag inside a stream segment: `Some` exactly when the message was
/// parsed (or is to be encoded) as part of a stream segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgOutputMessage {
    /// `B`
    Begin {
        final_lsn: Lsn,
        commit_time: PgTimestamp,
        xid: Xid,
    },
    /// `C`
    Commit {
        flags: u8,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time: PgTimestamp,
    },
    /// `O`
    Origin { commit_lsn: Lsn, name: String },
    /// `R`. `namespace` is empty for `pg_catalog`, as sent.
    Relation {
        xid: Option<Xid>,
        id: RelationId,
        namespace: String,
        name: String,
        /// Int8 `relreplident`: `d`, `n`, `f` or `i` (any other byte is a parse error).
        replica_identity: ReplicaIdentity,
        columns: Vec<RelationColumn>,
    },
    /// `Y`
    Type {
        xid: Option<Xid>,
        id: u32,
        namespace: String,
        name: String,
    },
    /// `I`
    Insert {
        xid: Option<Xid>,
        relation: RelationId,
        new: Tuple,
    },
    /// `U`: optional `K`/`O` old tuple, then the `N` new tuple.
    Update {
        xid: Option<Xid>,
        relation: RelationId,
        old: Option<(OldKind, Tuple)>,
        new: Tuple,
    },
    /// `D`: a `K` or `O` old tuple.
    Delete {
        xid: Option<Xid>,
        relation: RelationId,
        old: (OldKind, Tuple),
    },
    /// `T`. `options` bits: [`TRUNCATE_CASCADE`], [`TRUNCATE_RESTART_IDENTITY`].
    Truncate {
        xid: Option<Xid>,
        options: u8,
        relations: Vec<RelationId>,
    },
    /// `M` (`pg_logical_emit_message`). `flags` bit [`MESSAGE_TRANSACTIONAL`].
    Message {
        xid: Option<Xid>,
        flags: u8,
        lsn: Lsn,
        prefix: String,
        content: Vec<u8>,
    },
    /// `S`
    StreamStart { xid: Xid, first_segment: bool },
    /// `E`
    StreamStop,
    /// `c`
    StreamCommit {
        xid: Xid,
        flags: u8,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time: PgTimestamp,
    },
    /// `A`. `abort` is present only under protocol 4 with parallel streaming.
    StreamAbort {
        xid: Xid,
        subxid: Xid,
        abort: Option<StreamAbortInfo>,
    },
    /// A tag this parser does not know (e.g. protocol 3 two-phase messages). The rest of
    /// the payload is not looked at; the caller logs and skips it.
    Unknown { tag: u8 },
}

impl PgOutputMessage {
    /// The message's tag byte.
    pub fn tag(&self) -> u8 {
        match self {
            Self::Begin { .. } => tag::BEGIN,
            Self::Commit { .. } => tag::COMMIT,
            Self::Origin { .. } => tag::ORIGIN,
            Self::Relation { .. } => tag::RELATION,
            Self::Type { .. } => tag::TYPE,
            Self::Insert { .. } => tag::INSERT,
            Self::Update { .. } => tag::UPDATE,
            Self::Delete { .. } => tag::DELETE,
            Self::Truncate { .. } => tag::TRUNCATE,
            Self::Message { .. } => tag::MESSAGE,
            Self::StreamStart { .. } => tag::STREAM_START,
            Self::StreamStop => tag::STREAM_STOP,
            Self::StreamCommit { .. } => tag::STREAM_COMMIT,
            Self::StreamAbort { .. } => tag::STREAM_ABORT,
            Self::Unknown { tag } => *tag,
        }
    }

    /// The in-segment xid of message kinds that can carry one (`None` for all others, and
    /// for those kinds outside a stream segment).
    pub fn stream_xid(&self) -> Option<Xid> {
        match self {
            Self::Relation { xid, .. }
            | Self::Type { xid, .. }
            | Self::Insert { xid, .. }
            | Self::Update { xid, .. }
            | Self::Delete { xid, .. }
            | Self::Truncate { xid, .. }
            | Self::Message { xid, .. } => *xid,
            _ => None,
        }
    }

    /// A short name for logs and errors.
    pub fn kind_name(&self) -> &'static str {
        tag_name(self.tag())
    }
}

/// A short name for a tag, for logs and errors.
pub fn tag_name(tag: u8) -> &'static str {
    match tag {
        tag::BEGIN => "Begin",
        tag::COMMIT => "Commit",
        tag::ORIGIN => "Origin",
        tag::RELATION => "Relation",
        tag::TYPE => "Type",
        tag::INSERT => "Insert",
        tag::UPDATE => "Update",
        tag::DELETE => "Delete",
        tag::TRUNCATE => "Truncate",
        tag::MESSAGE => "Message",
        tag::STREAM_START => "Stream Start",
        tag::STREAM_STOP => "Stream Stop",
        tag::STREAM_COMMIT => "Stream Commit",
        tag::STREAM_ABORT => "Stream Abort",
        _ => "unknown",
    }
}
