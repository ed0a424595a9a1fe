//! Stateful pgoutput decoding: turns XLogData payloads into `ReaderEvent`s in WAL order.
//! Owns the transaction/stream-segment state (which top-level xid changes belong to, and
//! whether in-segment xids are present); a message impossible in the current state is an error.

use bytes::Bytes;

use crate::core::{Change, ChangeOp, Column, CommitInfo, Lsn, ReaderEvent, Relation, Xid};

use super::messages::{
    PgOutputMessage, COLUMN_FLAG_KEY, MESSAGE_TRANSACTIONAL, TRUNCATE_CASCADE,
    TRUNCATE_RESTART_IDENTITY,
};
use super::parser::{parse, parse_bytes, ParseError};

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

    /// [`Decoder::decode`] of a payload held in `Bytes`: row values are slices of it.
    pub fn decode_bytes(
        &mut self,
        wal_start: Lsn,
        payload: &Bytes,
    ) -> Result<Option<ReaderEvent>, ParseError> {
        let msg = parse_bytes(payload, self.in_stream())?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::sources::postgres::pgoutput::encode::encode;
    use crate::connectors::sources::postgres::pgoutput::messages::RelationColumn;
    use crate::core::{OldKind, ReplicaIdentity, Value};

    fn feed(d: &mut Decoder, at: u64, msg: &PgOutputMessage) -> Option<ReaderEvent> {
        d.decode(Lsn(at), &encode(msg)).unwrap()
    }

    fn begin(xid: Xid) -> PgOutputMessage {
        PgOutputMessage::Begin {
            final_lsn: Lsn(0x500),
            commit_time: 77,
            xid,
        }
    }

    fn insert(xid: Option<Xid>) -> PgOutputMessage {
        PgOutputMessage::Insert {
            xid,
            relation: 16384,
            new: vec![Value::Text(b"1".to_vec().into())],
        }
    }

    #[test]
    fn plain_transaction() {
        let mut d = Decoder::new();
        assert_eq!(
            feed(&mut d, 0x100, &begin(42)),
            Some(ReaderEvent::Begin {
                xid: 42,
                final_lsn: Lsn(0x500),
                commit_time: 77
            })
        );
        let rel = PgOutputMessage::Relation {
            xid: None,
            id: 16384,
            namespace: String::new(),
            name: "pg_class_copy".into(),
            replica_identity: ReplicaIdentity::Index,
            columns: vec![
                RelationColumn {
                    flags: 1,
                    name: "id".into(),
                    type_oid: 23,
                    type_modifier: -1,
                },
                RelationColumn {
                    flags: 0,
                    name: "v".into(),
                    type_oid: 25,
                    type_modifier: -1,
                },
            ],
        };
        let Some(ReaderEvent::Relation(r)) = feed(&mut d, 0x110, &rel) else {
            panic!("no relation event");
        };
        assert_eq!(r.namespace, "pg_catalog");
        assert_eq!(r.replica_identity, ReplicaIdentity::Index);
        assert!(r.columns[0].is_key && !r.columns[1].is_key);
        assert_eq!(r.columns[1].type_oid, 25);

        assert_eq!(
            feed(&mut d, 0x120, &insert(None)),
            Some(ReaderEvent::Change(Change {
                xid: 42,
                subxid: 42,
                relation: 16384,
                lsn: Lsn(0x120),
                op: ChangeOp::Insert {
                    new: vec![Value::Text(b"1".to_vec().into())]
                },
            }))
        );
        let upd = PgOutputMessage::Update {
            xid: None,
            relation: 16384,
            old: Some((OldKind::Full, vec![Value::Null])),
            new: vec![Value::UnchangedToast],
        };
        let Some(ReaderEvent::Change(c)) = feed(&mut d, 0x130, &upd) else {
            panic!("no change");
        };
        assert_eq!(
            c.op,
            ChangeOp::Update {
                old: Some((OldKind::Full, vec![Value::Null])),
                new: vec![Value::UnchangedToast]
            }
        );
        let del = PgOutputMessage::Delete {
            xid: None,
            relation: 16385,
            old: (OldKind::Key, vec![Value::Text(b"9".to_vec().into())]),
        };
        let Some(ReaderEvent::Change(c)) = feed(&mut d, 0x140, &del) else {
            panic!("no change");
        };
        assert_eq!(c.relation, 16385);
        assert!(matches!(
            c.op,
            ChangeOp::Delete {
                old: (OldKind::Key, _)
            }
        ));
        let tr = PgOutputMessage::Truncate {
            xid: None,
            options: 2,
            relations: vec![7, 8],
        };
        assert_eq!(
            feed(&mut d, 0x150, &tr),
            Some(ReaderEvent::Change(Change {
                xid: 42,
                subxid: 42,
                relation: 7,
                lsn: Lsn(0x150),
                op: ChangeOp::Truncate {
                    relations: vec![7, 8],
                    cascade: false,
                    restart_identity: true
                },
            }))
        );
        let msg = PgOutputMessage::Message {
            xid: None,
            flags: 1,
            lsn: Lsn(0x155),
            prefix: "audit".into(),
            content: b"x".to_vec(),
        };
        assert_eq!(
            feed(&mut d, 0x155, &msg),
            Some(ReaderEvent::Message {
                xid: Some(42),
                lsn: Lsn(0x155),
                transactional: true,
                prefix: "audit".into(),
                content: b"x".to_vec()
            })
        );
        let commit = PgOutputMessage::Commit {
            flags: 0,
            commit_lsn: Lsn(0x500),
            end_lsn: Lsn(0x530),
            commit_time: 77,
        };
        assert_eq!(
            feed(&mut d, 0x160, &commit),
            Some(ReaderEvent::Commit(CommitInfo {
                xid: 42,
                commit_lsn: Lsn(0x500),
                end_lsn: Lsn(0x530),
                commit_time: 77
            }))
        );
        assert_eq!(d.state(), DecoderState::Idle);
    }

    #[test]
    fn truncate_cascade_bit() {
        let mut d = Decoder::new();
        feed(&mut d, 1, &begin(1));
        let tr = PgOutputMessage::Truncate {
            xid: None,
            options: 1,
            relations: vec![3],
        };
        let Some(ReaderEvent::Change(c)) = feed(&mut d, 2, &tr) else {
            panic!("no change");
        };
        assert_eq!(
            c.op,
            ChangeOp::Truncate {
                relations: vec![3],
                cascade: true,
                restart_identity: false
            }
        );
        let empty = PgOutputMessage::Truncate {
            xid: None,
            options: 0,
            relations: vec![],
        };
        assert!(matches!(
            d.decode(Lsn(3), &encode(&empty)),
            Err(ParseError::UnexpectedMessage {
                message: "Truncate",
                ..
            })
        ));
    }

    #[test]
    fn streamed_transaction_uses_top_level_xid_and_carried_subxid() {
        let mut d = Decoder::new();
        assert_eq!(
            feed(
                &mut d,
                0x10,
                &PgOutputMessage::StreamStart {
                    xid: 1000,
                    first_segment: true
                }
            ),
            Some(ReaderEvent::StreamStart {
                xid: 1000,
                first_segment: true
            })
        );
        assert!(d.in_stream());
        // In-segment messages carry the xid; parsing without it would be misaligned.
        let Some(ReaderEvent::Change(c)) = feed(&mut d, 0x20, &insert(Some(1001))) else {
            panic!("no change");
        };
        assert_eq!((c.xid, c.subxid, c.lsn), (1000, 1001, Lsn(0x20)));
        let Some(ReaderEvent::Change(c)) = feed(&mut d, 0x28, &insert(Some(1000))) else {
            panic!("no change");
        };
        assert_eq!((c.xid, c.subxid), (1000, 1000));
        let msg = PgOutputMessage::Message {
            xid: Some(1000),
            flags: 1,
            lsn: Lsn(0x2C),
            prefix: "p".into(),
            content: vec![],
        };
        assert!(matches!(
            feed(&mut d, 0x2C, &msg),
            Some(ReaderEvent::Message {
                xid: Some(1000),
                transactional: true,
                ..
            })
        ));
        assert_eq!(
            feed(&mut d, 0x30, &PgOutputMessage::StreamStop),
            Some(ReaderEvent::StreamStop)
        );
        assert!(!d.in_stream());
        assert_eq!(
            feed(
                &mut d,
                0x40,
                &PgOutputMessage::StreamAbort {
                    xid: 1000,
                    subxid: 1001,
                    abort: None
                }
            ),
            Some(ReaderEvent::StreamAbort {
                xid: 1000,
                subxid: 1001
            })
        );
        // A plain transaction can run between segments.
        feed(&mut d, 0x48, &begin(2000));
        let Some(ReaderEvent::Change(c)) = feed(&mut d, 0x49, &insert(None)) else {
            panic!("no change");
        };
        assert_eq!((c.xid, c.subxid), (2000, 2000));
        feed(
            &mut d,
            0x4A,
            &PgOutputMessage::Commit {
                flags: 0,
                commit_lsn: Lsn(0x500),
                end_lsn: Lsn(0x510),
                commit_time: 0,
            },
        );
        feed(
            &mut d,
            0x50,
            &PgOutputMessage::StreamStart {
                xid: 1000,
                first_segment: false,
            },
        );
        feed(&mut d, 0x60, &PgOutputMessage::StreamStop);
        assert_eq!(
            feed(
                &mut d,
                0x70,
                &PgOutputMessage::StreamCommit {
                    xid: 1000,
                    flags: 0,
                    commit_lsn: Lsn(0x900),
                    end_lsn: Lsn(0x930),
                    commit_time: 5
                }
            ),
            Some(ReaderEvent::StreamCommit(CommitInfo {
                xid: 1000,
                commit_lsn: Lsn(0x900),
                end_lsn: Lsn(0x930),
                commit_time: 5
            }))
        );
    }

    #[test]
    fn in_segment_relation_is_parsed_with_its_xid() {
        let mut d = Decoder::new();
        feed(
            &mut d,
            1,
            &PgOutputMessage::StreamStart {
                xid: 5,
                first_segment: true,
            },
        );
        let rel = PgOutputMessage::Relation {
            xid: Some(5),
            id: 9,
            namespace: "s".into(),
            name: "t".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: vec![],
        };
        let Some(ReaderEvent::Relation(r)) = feed(&mut d, 2, &rel) else {
            panic!("no relation");
        };
        assert_eq!(r.qualified_name(), "s.t");
    }

    #[test]
    fn ignored_messages() {
        let mut d = Decoder::new();
        let origin = PgOutputMessage::Origin {
            commit_lsn: Lsn(1),
            name: "o".into(),
        };
        let ty = PgOutputMessage::Type {
            xid: None,
            id: 1,
            namespace: "n".into(),
            name: "t".into(),
        };
        assert_eq!(feed(&mut d, 1, &origin), None);
        assert_eq!(feed(&mut d, 2, &ty), None);
        assert_eq!(d.decode(Lsn(3), b"Pxyz").unwrap(), None);
        assert_eq!(d.state(), DecoderState::Idle);
        // Non-transactional messages need no transaction.
        let msg = PgOutputMessage::Message {
            xid: None,
            flags: 0,
            lsn: Lsn(4),
            prefix: "p".into(),
            content: b"c".to_vec(),
        };
        assert!(matches!(
            feed(&mut d, 4, &msg),
            Some(ReaderEvent::Message {
                xid: None,
                transactional: false,
                ..
            })
        ));
    }

    #[test]
    fn impossible_states_are_errors_and_leave_state_alone() {
        let commit = PgOutputMessage::Commit {
            flags: 0,
            commit_lsn: Lsn(1),
            end_lsn: Lsn(2),
            commit_time: 0,
        };
        let start = PgOutputMessage::StreamStart {
            xid: 9,
            first_segment: true,
        };
        let tmsg = PgOutputMessage::Message {
            xid: None,
            flags: 1,
            lsn: Lsn(1),
            prefix: String::new(),
            content: vec![],
        };
        let abort = PgOutputMessage::StreamAbort {
            xid: 9,
            subxid: 9,
            abort: None,
        };
        let mut d = Decoder::new();
        for m in [
            insert(None),
            commit.clone(),
            PgOutputMessage::StreamStop,
            tmsg,
        ] {
            let err = d.decode(Lsn(0x77), &encode(&m)).unwrap_err();
            assert!(
                matches!(err, ParseError::UnexpectedMessage { lsn: Lsn(0x77), .. }),
                "{m:?}: {err}"
            );
            assert_eq!(d.state(), DecoderState::Idle);
        }
        feed(&mut d, 1, &begin(3));
        for m in [
            begin(4),
            start.clone(),
            PgOutputMessage::StreamStop,
            abort.clone(),
        ] {
            assert!(d.decode(Lsn(2), &encode(&m)).is_err(), "{m:?}");
            assert_eq!(
                d.state(),
                DecoderState::Transaction {
                    xid: 3,
                    final_lsn: Lsn(0x500)
                }
            );
        }
        d.reset();
        feed(&mut d, 3, &start);
        for m in [begin(4), commit, start.clone(), abort] {
            // (parsed with in_stream = true; none of these carry a stream xid)
            assert!(d.decode(Lsn(4), &encode(&m)).is_err(), "{m:?}");
            assert_eq!(d.state(), DecoderState::StreamSegment { xid: 9 });
        }
        // A malformed payload is an error too, and also leaves the state alone.
        assert!(d.decode(Lsn(5), &[b'I', 0]).is_err());
        assert!(d.in_stream());
    }

    #[test]
    fn error_message_names_message_and_state() {
        let mut d = Decoder::new();
        let e = d
            .decode(Lsn(0x16_B374_D848), &encode(&insert(None)))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "pgoutput Insert message at 16/B374D848 outside any transaction or stream segment"
        );
    }
}
