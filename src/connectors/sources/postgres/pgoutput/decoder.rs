//! Stateful pgoutput decoding: turns XLogData payloads into `ReaderEvent`s in WAL order.
//! Owns the transaction/stream-segment state (which top-level xid changes belong to, and
//! whether in-segment xids are present); a message impossible in the current state is an error.

use crate::core::{Change, ChangeOp, Column, CommitInfo, Lsn, ReaderEvent, Relation, Xid};

use super::messages::{
    PgOutputMessage, COLUMN_FLAG_KEY, MESSAGE_TRANSACTIONAL, TRUNCATE_CASCADE,
    TRUNCATE_RESTART_IDENTITY,
};
use super::parser::{parse, ParseError};

/// Where in the message flow the decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecoderState {
    /// Between transactions.
    Idle,
    /// After Begin, before Commit.
    Transaction { xid: Xid, final_lsn: Lsn },
    /// After Stream Start, before Stream Stop.
    StreamSegment { xid: Xid },
}

impl DecoderState {
    fn describe(self) -> &'static str {
        match self {
            Self::Idle => "outside any transaction or stream segment",
            Self::Transaction { .. } => "inside a transaction",
            Self::StreamSegment { .. } => "inside a stream segment",
        }
    }
}

/// Decodes one replication connection's pgoutput payloads, in order.
#[derive(Debug, Clone)]
pub struct Decoder {
    state: DecoderState,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Self {
            state: DecoderState::Idle,
        }
    }

    /// The current state.
    pub fn state(&self) -> DecoderState {
        self.state
    }

    /// Whether the next payload is parsed as part of a stream segment.
    pub fn in_stream(&self) -> bool {
        matches!(self.state, DecoderState::StreamSegment { .. })
    }

    /// Forgets any open transaction or segment: call when the replication stream restarts.
    pub fn reset(&mut self) {
        self.state = DecoderState::Idle;
    }

    /// Parses and decodes one XLogData payload that started at `wal_start`. `Ok(None)` for
    /// messages with no event (Origin, Type, unknown tags). On error the state is unchanged.
    pub fn decode(
        &mut self,
        wal_start: Lsn,
        payload: &[u8],
    ) -> Result<Option<ReaderEvent>, ParseError> {
        let msg = parse(payload, self.in_stream())?;
        self.decode_message(wal_start, msg)
    }

    /// Decodes an already parsed message (see [`Decoder::decode`]).
    pub fn decode_message(
        &mut self,
        wal_start: Lsn,
        msg: PgOutputMessage,
    ) -> Result<Option<ReaderEvent>, ParseError> {
        let state = self.state;
        let unexpected = |msg: &PgOutputMessage| ParseError::UnexpectedMessage {
            message: msg.kind_name(),
            reason: state.describe(),
            lsn: wal_start,
        };
        let event = match msg {
            PgOutputMessage::Begin {
                final_lsn,
                commit_time,
                xid,
            } => {
                if state != DecoderState::Idle {
                    return Err(unexpected(&msg));
                }
                self.state = DecoderState::Transaction { xid, final_lsn };
                ReaderEvent::Begin {
                    xid,
                    final_lsn,
                    commit_time,
                }
            }
            PgOutputMessage::Commit {
                commit_lsn,
                end_lsn,
                commit_time,
                ..
            } => {
                let DecoderState::Transaction { xid, final_lsn } = state else {
                    return Err(unexpected(&msg));
                };
                if final_lsn != commit_lsn {
                    tracing::warn!(
                        xid,
                        %final_lsn,
                        %commit_lsn,
                        "pgoutput Commit LSN differs from the final LSN its Begin announced"
                    );
                }
                self.state = DecoderState::Idle;
                ReaderEvent::Commit(CommitInfo {
                    xid,
                    commit_lsn,
                    end_lsn,
                    commit_time,
                })
            }
            PgOutputMessage::Origin { commit_lsn, name } => {
                tracing::debug!(origin = %name, %commit_lsn, lsn = %wal_start, "pgoutput Origin message ignored");
                return Ok(None);
            }
            PgOutputMessage::Type {
                id,
                namespace,
                name,
                ..
            } => {
                tracing::debug!(type_oid = id, %namespace, %name, lsn = %wal_start, "pgoutput Type message ignored");
                return Ok(None);
            }
            PgOutputMessage::Relation {
                id,
                namespace,
                name,
                replica_identity,
                columns,
                ..
            } => ReaderEvent::Relation(Relation {
                id,
                namespace: if namespace.is_empty() {
                    "pg_catalog".to_owned()
                } else {
                    namespace
                },
                name,
                replica_identity,
                columns: columns
                    .into_iter()
                    .map(|c| Column {
                        name: c.name,
                        is_key: c.flags & COLUMN_FLAG_KEY != 0,
                        type_oid: c.type_oid,
                        type_modifier: c.type_modifier,
                    })
                    .collect(),
            }),
            PgOutputMessage::Insert { .. }
            | PgOutputMessage::Update { .. }
            | PgOutputMessage::Delete { .. }
            | PgOutputMessage::Truncate { .. } => {
                let carried = msg.stream_xid();
                let (xid, subxid) = match state {
                    DecoderState::Transaction { xid, .. } => (xid, xid),
                    DecoderState::StreamSegment { xid } => (xid, carried.unwrap_or(xid)),
                    DecoderState::Idle => return Err(unexpected(&msg)),
                };
                let (relation, op) = match msg {
                    PgOutputMessage::Insert { relation, new, .. } => {
                        (relation, ChangeOp::Insert { new })
                    }
                    PgOutputMessage::Update {
                        relation, old, new, ..
                    } => (relation, ChangeOp::Update { old, new }),
                    PgOutputMessage::Delete { relation, old, .. } => {
                        (relation, ChangeOp::Delete { old })
                    }
                    PgOutputMessage::Truncate {
                        options, relations, ..
                    } => {
                        let Some(&first) = relations.first() else {
                            return Err(ParseError::UnexpectedMessage {
                                message: "Truncate",
                                reason: "names no relation",
                                lsn: wal_start,
                            });
                        };
                        (
                            first,
                            ChangeOp::Truncate {
                                relations,
                                cascade: options & TRUNCATE_CASCADE != 0,
                                restart_identity: options & TRUNCATE_RESTART_IDENTITY != 0,
                            },
                        )
                    }
                    other => return Err(unexpected(&other)),
                };
                ReaderEvent::Change(Change {
                    xid,
                    subxid,
                    relation,
                    lsn: wal_start,
                    op,
                })
            }
            PgOutputMessage::Message {
                flags,
                lsn,
                prefix,
                content,
                ..
            } => {
                let transactional = flags & MESSAGE_TRANSACTIONAL != 0;
                let xid = if transactional {
                    match state {
                        DecoderState::Transaction { xid, .. }
                        | DecoderState::StreamSegment { xid } => Some(xid),
                        DecoderState::Idle => {
                            return Err(ParseError::UnexpectedMessage {
                                message: "Message (transactional)",
                                reason: state.describe(),
                                lsn: wal_start,
                            })
                        }
                    }
                } else {
                    None
                };
                ReaderEvent::Message {
                    xid,
                    lsn,
                    transactional,
                    prefix,
                    content,
                }
            }
            PgOutputMessage::StreamStart { xid, first_segment } => {
                if state != DecoderState::Idle {
                    return Err(unexpected(&msg));
                }
                self.state = DecoderState::StreamSegment { xid };
                ReaderEvent::StreamStart { xid, first_segment }
            }
            PgOutputMessage::StreamStop => {
                if !matches!(state, DecoderState::StreamSegment { .. }) {
                    return Err(unexpected(&msg));
                }
                self.state = DecoderState::Idle;
                ReaderEvent::StreamStop
            }
            PgOutputMessage::StreamCommit {
                xid,
                commit_lsn,
                end_lsn,
                commit_time,
                ..
            } => {
                if state != DecoderState::Idle {
                    return Err(unexpected(&msg));
                }
                ReaderEvent::StreamCommit(CommitInfo {
                    xid,
                    commit_lsn,
                    end_lsn,
                    commit_time,
                })
            }
            PgOutputMessage::StreamAbort { xid, subxid, .. } => {
                if state != DecoderState::Idle {
                    return Err(unexpected(&msg));
                }
                ReaderEvent::StreamAbort { xid, subxid }
            }
            PgOutputMessage::Unknown { tag } => {
                tracing::warn!(
                    tag = %char::from(tag).escape_default(),
                    tag_byte = tag,
                    lsn = %wal_start,
                    "unknown pgoutput message tag; message skipped"
                );
                return Ok(None);
            }
        };
        Ok(Some(event))
    }
}
