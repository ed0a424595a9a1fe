//! Pure parser of one pgoutput message from a byte slice: no I/O, no panics, and no
//! allocation sized by a length field before that length is checked against the bytes that
//! remain. Malformed input is a [`ParseError`] naming the field and its offset.

use bytes::Bytes;

use crate::core::{Lsn, OldKind, RawTuple, ReplicaIdentity, Tuple};

use super::messages::{
    tag, tag_name, tuple_kind, PgOutputMessage, RelationColumn, StreamAbortInfo,
};

/// Why a pgoutput payload could not be parsed or decoded. Offsets count from the tag byte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty pgoutput message (no tag byte)")]
    Empty,
    #[error(
        "truncated pgoutput {message} message: {what} needs {needed} bytes at offset {offset}, \
         only {remaining} left"
    )]
    Truncated {
        message: &'static str,
        what: &'static str,
        offset: usize,
        needed: usize,
        remaining: usize,
    },
    #[error("pgoutput {message} message: invalid {what} byte {value:#04x} at offset {offset}")]
    InvalidByte {
        message: &'static str,
        what: &'static str,
        offset: usize,
        value: u8,
    },
    #[error(
        "pgoutput {message} message: invalid {what} {value} at offset {offset} \
         ({remaining} bytes remain after it)"
    )]
    InvalidLength {
        message: &'static str,
        what: &'static str,
        offset: usize,
        value: i64,
        remaining: usize,
    },
    #[error("pgoutput {message} message: {what} at offset {offset} has no NUL terminator")]
    UnterminatedString {
        message: &'static str,
        what: &'static str,
        offset: usize,
    },
    #[error("pgoutput {message} message: {what} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        message: &'static str,
        what: &'static str,
        offset: usize,
    },
    #[error("pgoutput {message} message: {count} unexpected trailing bytes at offset {offset}")]
    TrailingBytes {
        message: &'static str,
        offset: usize,
        count: usize,
    },
    /// A well-formed message that cannot occur where it arrived (decoder state).
    #[error("pgoutput {message} message at {lsn} {reason}")]
    UnexpectedMessage {
        message: &'static str,
        reason: &'static str,
        lsn: Lsn,
    },
}

/// Parses one pgoutput message. `in_stream` says whether the message arrived inside a
/// stream segment (between Stream Start and Stream Stop, protocol 2), where Relation, Type,
/// Insert, Update, Delete, Truncate and Message carry an Int32 xid right after the tag.
/// An unknown tag is `Ok(PgOutputMessage::Unknown { tag })`.
pub fn parse(buf: &[u8], in_stream: bool) -> Result<PgOutputMessage, ParseError> {
    parse_in(buf, None, in_stream)
}

/// [`parse`] over a message held in `Bytes` (as the replication connection hands it
/// over): row images are slices of `buf`, not copies.
pub fn parse_bytes(buf: &Bytes, in_stream: bool) -> Result<PgOutputMessage, ParseError> {
    parse_in(buf, Some(buf), in_stream)
}

fn parse_in(
    buf: &[u8],
    owner: Option<&Bytes>,
    in_stream: bool,
) -> Result<PgOutputMessage, ParseError> {
    let Some(&t) = buf.first() else {
        return Err(ParseError::Empty);
    };
    if !tag::KNOWN.contains(&t) {
        return Ok(PgOutputMessage::Unknown { tag: t });
    }
    let mut c = Cursor {
        buf,
        owner,
        pos: 1,
        message: tag_name(t),
    };
    let msg = match t {
        tag::BEGIN => PgOutputMessage::Begin {
            final_lsn: c.lsn("final LSN")?,
            commit_time: c.i64("commit timestamp")?,
            xid: c.u32("xid")?,
        },
        tag::COMMIT => PgOutputMessage::Commit {
            flags: c.u8("flags")?,
            commit_lsn: c.lsn("commit LSN")?,
            end_lsn: c.lsn("end LSN")?,
            commit_time: c.i64("commit timestamp")?,
        },
        tag::ORIGIN => PgOutputMessage::Origin {
            commit_lsn: c.lsn("origin commit LSN")?,
            name: c.cstring("origin name")?,
        },
        tag::RELATION => {
            let xid = c.stream_xid(in_stream)?;
            let id = c.u32("relation OID")?;
            let namespace = c.cstring("namespace")?;
            let name = c.cstring("relation name")?;
            let off = c.pos;
            let ri = c.u8("replica identity")?;
            let replica_identity = ReplicaIdentity::from_byte(ri).ok_or(c.invalid_byte(
                "replica identity",
                off,
                ri,
            ))?;
            // Each column takes at least flags(1) + name NUL(1) + type OID(4) + typmod(4).
            let ncols = c.count16("column count", 10)?;
            let mut columns = Vec::with_capacity(ncols);
            for _ in 0..ncols {
                columns.push(RelationColumn {
                    flags: c.u8("column flags")?,
                    name: c.cstring("column name")?,
                    type_oid: c.u32("column type OID")?,
                    type_modifier: c.i32("column type modifier")?,
                });
            }
            PgOutputMessage::Relation {
                xid,
                id,
                namespace,
                name,
                replica_identity,
                columns,
            }
        }
        tag::TYPE => PgOutputMessage::Type {
            xid: c.stream_xid(in_stream)?,
            id: c.u32("type OID")?,
            namespace: c.cstring("type namespace")?,
            name: c.cstring("type name")?,
        },
        tag::INSERT => {
            let xid = c.stream_xid(in_stream)?;
            let relation = c.u32("relation OID")?;
            c.expect_byte("new tuple marker", tuple_kind::NEW)?;
            PgOutputMessage::Insert {
                xid,
                relation,
                new: c.tuple()?,
            }
        }
        tag::UPDATE => {
            let xid = c.stream_xid(in_stream)?;
            let relation = c.u32("relation OID")?;
            let off = c.pos;
            let marker = c.u8("tuple marker")?;
            let (old, new_marker_off, new_marker) = match marker {
                tuple_kind::OLD_KEY | tuple_kind::OLD_FULL => {
                    let kind = old_kind(marker);
                    let old = c.tuple()?;
                    let noff = c.pos;
                    (Some((kind, old)), noff, c.u8("new tuple marker")?)
                }
                m => (None, off, m),
            };
            if new_marker != tuple_kind::NEW {
                return Err(c.invalid_byte("new tuple marker", new_marker_off, new_marker));
            }
            PgOutputMessage::Update {
                xid,
                relation,
                old,
                new: c.tuple()?,
            }
        }
        tag::DELETE => {
            let xid = c.stream_xid(in_stream)?;
            let relation = c.u32("relation OID")?;
            let off = c.pos;
            let marker = c.u8("old tuple marker")?;
            if marker != tuple_kind::OLD_KEY && marker != tuple_kind::OLD_FULL {
                return Err(c.invalid_byte("old tuple marker", off, marker));
            }
            PgOutputMessage::Delete {
                xid,
                relation,
                old: (old_kind(marker), c.tuple()?),
            }
        }
        tag::TRUNCATE => {
            let xid = c.stream_xid(in_stream)?;
            let count_off = c.pos;
            let n = c.i32("relation count")?;
            let options = c.u8("options")?;
            let remaining = c.remaining();
            let n = usize::try_from(n)
                .ok()
                .filter(|n| *n <= remaining / 4)
                .ok_or(ParseError::InvalidLength {
                    message: c.message,
                    what: "relation count",
                    offset: count_off,
                    value: i64::from(n),
                    remaining,
                })?;
            let mut relations = Vec::with_capacity(n);
            for _ in 0..n {
                relations.push(c.u32("relation OID")?);
            }
            PgOutputMessage::Truncate {
                xid,
                options,
                relations,
            }
        }
        tag::MESSAGE => {
            let xid = c.stream_xid(in_stream)?;
            let flags = c.u8("flags")?;
            let lsn = c.lsn("message LSN")?;
            let prefix = c.cstring("prefix")?;
            let content = c.sized_bytes("content length")?.to_vec();
            PgOutputMessage::Message {
                xid,
                flags,
                lsn,
                prefix,
                content,
            }
        }
        tag::STREAM_START => {
            let xid = c.u32("xid")?;
            let off = c.pos;
            let first = c.u8("first segment flag")?;
            let first_segment = match first {
                0 => false,
                1 => true,
                v => return Err(c.invalid_byte("first segment flag", off, v)),
            };
            PgOutputMessage::StreamStart { xid, first_segment }
        }
        tag::STREAM_STOP => PgOutputMessage::StreamStop,
        tag::STREAM_COMMIT => PgOutputMessage::StreamCommit {
            xid: c.u32("xid")?,
            flags: c.u8("flags")?,
            commit_lsn: c.lsn("commit LSN")?,
            end_lsn: c.lsn("end LSN")?,
            commit_time: c.i64("commit timestamp")?,
        },
        tag::STREAM_ABORT => {
            let xid = c.u32("xid")?;
            let subxid = c.u32("subxid")?;
            // Protocol 4 (PostgreSQL 16+, streaming = parallel) appends the abort LSN and
            // timestamp; their layout is fixed, so they are parsed rather than skipped.
            let abort = if c.remaining() > 0 {
                Some(StreamAbortInfo {
                    abort_lsn: c.lsn("abort LSN")?,
                    abort_time: c.i64("abort timestamp")?,
                })
            } else {
                None
            };
            PgOutputMessage::StreamAbort { xid, subxid, abort }
        }
        other => return Ok(PgOutputMessage::Unknown { tag: other }),
    };
    c.finish()?;
    Ok(msg)
}

fn old_kind(marker: u8) -> OldKind {
    if marker == tuple_kind::OLD_FULL {
        OldKind::Full
    } else {
        OldKind::Key
    }
}

/// A read position over one message; every read is bounds-checked.
struct Cursor<'a> {
    buf: &'a [u8],
    /// `buf` as shared bytes, when it is: values are sliced from it instead of copied.
    owner: Option<&'a Bytes>,
    pos: usize,
    message: &'static str,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn invalid_byte(&self, what: &'static str, offset: usize, value: u8) -> ParseError {
        ParseError::InvalidByte {
            message: self.message,
            what,
            offset,
            value,
        }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ParseError> {
        let remaining = self.remaining();
        let truncated = ParseError::Truncated {
            message: self.message,
            what,
            offset: self.pos,
            needed: n,
            remaining,
        };
        let end = self.pos.checked_add(n).ok_or(truncated.clone())?;
        let s = self.buf.get(self.pos..end).ok_or(truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], ParseError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, ParseError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn i16(&mut self, what: &'static str) -> Result<i16, ParseError> {
        Ok(i16::from_be_bytes(self.array(what)?))
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, ParseError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, ParseError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, ParseError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    fn lsn(&mut self, what: &'static str) -> Result<Lsn, ParseError> {
        Ok(Lsn(u64::from_be_bytes(self.array(what)?)))
    }

    fn stream_xid(&mut self, in_stream: bool) -> Result<Option<u32>, ParseError> {
        if in_stream {
            Ok(Some(self.u32("stream xid")?))
        } else {
            Ok(None)
        }
    }

    fn expect_byte(&mut self, what: &'static str, expected: u8) -> Result<(), ParseError> {
        let off = self.pos;
        let b = self.u8(what)?;
        if b == expected {
            Ok(())
        } else {
            Err(self.invalid_byte(what, off, b))
        }
    }

    /// A NUL-terminated UTF-8 string.
    fn cstring(&mut self, what: &'static str) -> Result<String, ParseError> {
        let off = self.pos;
        let rest = self.buf.get(off..).unwrap_or_default();
        let len = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or(ParseError::UnterminatedString {
                message: self.message,
                what,
                offset: off,
            })?;
        let bytes = self.take(len + 1, what)?;
        let s = std::str::from_utf8(bytes.get(..len).unwrap_or_default()).map_err(|_| {
            ParseError::InvalidUtf8 {
                message: self.message,
                what,
                offset: off,
            }
        })?;
        Ok(s.to_owned())
    }

    /// An Int16 element count, checked to be non-negative and small enough that `count`
    /// elements of at least `min_size` bytes each fit in what remains.
    fn count16(&mut self, what: &'static str, min_size: usize) -> Result<usize, ParseError> {
        let off = self.pos;
        let n = self.i16(what)?;
        let remaining = self.remaining();
        usize::try_from(n)
            .ok()
            .filter(|n| n.saturating_mul(min_size) <= remaining)
            .ok_or(ParseError::InvalidLength {
                message: self.message,
                what,
                offset: off,
                value: i64::from(n),
                remaining,
            })
    }

    /// An Int32 length followed by that many bytes.
    fn sized_bytes(&mut self, what: &'static str) -> Result<&'a [u8], ParseError> {
        let off = self.pos;
        let n = self.i32(what)?;
        let remaining = self.remaining();
        let n = usize::try_from(n).ok().filter(|n| *n <= remaining).ok_or(
            ParseError::InvalidLength {
                message: self.message,
                what,
                offset: off,
                value: i64::from(n),
                remaining,
            },
        )?;
        self.take(n, what)
    }

    /// TupleData: Int16 column count, then per column `n`, `u`, `t` + data or `b` + data.
    /// Checked first; then every value is a slice of the message's bytes (when it is held
    /// in `Bytes`) or of one copy of the tuple (one allocation per tuple).
    fn tuple(&mut self) -> Result<Tuple, ParseError> {
        let start = self.pos;
        let n = self.count16("tuple column count", 1)?;
        for _ in 0..n {
            let off = self.pos;
            match self.u8("tuple column kind")? {
                tuple_kind::NULL | tuple_kind::UNCHANGED_TOAST => {}
                tuple_kind::TEXT => {
                    self.sized_bytes("text value length")?;
                }
                tuple_kind::BINARY => {
                    self.sized_bytes("binary value length")?;
                }
                other => return Err(self.invalid_byte("tuple column kind", off, other)),
            }
        }
        let bytes = match self.owner {
            Some(owner) => owner.slice(start..self.pos),
            None => Bytes::copy_from_slice(&self.buf[start..self.pos]),
        };
        // The same walk over the same bytes: cannot fail after the checks above.
        let raw = RawTuple::parse(bytes).map_err(|_| ParseError::InvalidLength {
            message: self.message,
            what: "tuple",
            offset: start,
            value: n as i64,
            remaining: self.remaining(),
        })?;
        Ok(raw.to_values())
    }

    fn finish(self) -> Result<(), ParseError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(ParseError::TrailingBytes {
                message: self.message,
                offset: self.pos,
                count,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Hand-checked byte-level tests: every message type as protocol 1 and 2 send it.

    use super::*;
    use crate::connectors::sources::postgres::pgoutput::encode::encode;
    use crate::connectors::sources::postgres::pgoutput::messages::StreamAbortInfo;
    use crate::core::Value;

    /// Parses `bytes`, checks the result, and checks the encoder writes the same bytes.
    fn check(bytes: &[u8], in_stream: bool, expected: PgOutputMessage) {
        let got = parse(bytes, in_stream).unwrap();
        assert_eq!(got, expected);
        let shared = Bytes::copy_from_slice(bytes);
        assert_eq!(parse_bytes(&shared, in_stream).unwrap(), expected);
        assert_eq!(
            encode(&expected),
            bytes,
            "encoder disagrees with the wire bytes"
        );
    }

    fn text(s: &str) -> Value {
        Value::Text(s.as_bytes().to_vec().into())
    }

    #[test]
    fn begin() {
        #[rustfmt::skip]
        let bytes = [
            b'B',
            0x00, 0x00, 0x00, 0x16, 0xB3, 0x74, 0xD8, 0x48, // final LSN 16/B374D848
            0x00, 0x02, 0xB1, 0x2C, 0x3A, 0x1F, 0x00, 0x01, // commit time
            0x00, 0x00, 0x02, 0xEB,                         // xid 747
        ];
        check(
            &bytes,
            false,
            PgOutputMessage::Begin {
                final_lsn: Lsn(0x16_B374_D848),
                commit_time: 0x0002_B12C_3A1F_0001,
                xid: 747,
            },
        );
    }

    #[test]
    fn commit() {
        #[rustfmt::skip]
        let bytes = [
            b'C',
            0x00,                                           // flags
            0x00, 0x00, 0x00, 0x16, 0xB3, 0x74, 0xD8, 0x48, // commit LSN
            0x00, 0x00, 0x00, 0x16, 0xB3, 0x74, 0xD8, 0x78, // end LSN
            0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE, // commit time -2
        ];
        check(
            &bytes,
            false,
            PgOutputMessage::Commit {
                flags: 0,
                commit_lsn: Lsn(0x16_B374_D848),
                end_lsn: Lsn(0x16_B374_D878),
                commit_time: -2,
            },
        );
    }

    #[test]
    fn origin() {
        #[rustfmt::skip]
        let bytes = [
            b'O',
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, // origin commit LSN 0/100
            b'n', b'o', b'd', b'e', b'1', 0x00,             // "node1"
        ];
        check(
            &bytes,
            false,
            PgOutputMessage::Origin {
                commit_lsn: Lsn(0x100),
                name: "node1".into(),
            },
        );
    }

    #[test]
    fn relation_v1() {
        #[rustfmt::skip]
        let bytes = [
            b'R',
            0x00, 0x00, 0x40, 0x00,             // OID 16384
            b'p', b'u', b'b', 0x00,             // namespace "pub"
            b't', 0x00,                         // name "t"
            b'f',                               // replica identity full
            0x00, 0x02,                         // 2 columns
            0x01, b'i', b'd', 0x00,             // flags=key, "id"
            0x00, 0x00, 0x00, 0x17,             // int4 (23)
            0xFF, 0xFF, 0xFF, 0xFF,             // typmod -1
            0x00, b'v', 0x00,                   // flags=0, "v"
            0x00, 0x00, 0x06, 0xA4,             // numeric (1700)
            0x00, 0x0A, 0x00, 0x06,             // typmod (10,2)+4
        ];
        check(
            &bytes,
            false,
            PgOutputMessage::Relation {
                xid: None,
                id: 16384,
                namespace: "pub".into(),
                name: "t".into(),
                replica_identity: ReplicaIdentity::Full,
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
                        type_oid: 1700,
                        type_modifier: 0x000A_0006,
                    },
                ],
            },
        );
    }

    #[test]
    fn relation_in_stream_carries_xid() {
        #[rustfmt::skip]
        let bytes = [
            b'R',
            0x00, 0x00, 0x03, 0xE9, // stream xid 1001
            0x00, 0x00, 0x04, 0xD2, // OID 1234
            0x00,                   // namespace "" (pg_catalog)
            b'x', 0x00,             // name "x"
            b'd',                   // default
            0x00, 0x00,             // no columns
        ];
        let expected = PgOutputMessage::Relation {
            xid: Some(1001),
            id: 1234,
            namespace: String::new(),
            name: "x".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: vec![],
        };
        check(&bytes, true, expected);
        // The same bytes outside a segment are misread, and that must be an error.
        assert!(parse(&bytes, false).is_err());
    }

    #[test]
    fn type_message_v1_and_in_stream() {
        #[rustfmt::skip]
        let v1 = [
            b'Y',
            0x00, 0x00, 0x40, 0x10,             // type OID 16400
            b'p', b'u', b'b', 0x00,             // "pub"
            b'm', b'o', b'o', b'd', 0x00,       // "mood"
        ];
        check(
            &v1,
            false,
            PgOutputMessage::Type {
                xid: None,
                id: 16400,
                namespace: "pub".into(),
                name: "mood".into(),
            },
        );
        let mut v2 = vec![b'Y', 0x00, 0x00, 0x00, 0x07];
        v2.extend_from_slice(&v1[1..]);
        check(
            &v2,
            true,
            PgOutputMessage::Type {
                xid: Some(7),
                id: 16400,
                namespace: "pub".into(),
                name: "mood".into(),
            },
        );
    }

    #[test]
    fn insert_with_all_four_tuple_kinds() {
        #[rustfmt::skip]
        let bytes = [
            b'I',
            0x00, 0x00, 0x40, 0x00,                   // OID 16384
            b'N',
            0x00, 0x04,                               // 4 columns
            b't', 0x00, 0x00, 0x00, 0x02, b'4', b'2', // text "42"
            b'n',                                     // null
            b'u',                                     // unchanged toast
            b'b', 0x00, 0x00, 0x00, 0x03, 0x00, 0xFF, 0x0A, // binary
        ];
        check(
            &bytes,
            false,
            PgOutputMessage::Insert {
                xid: None,
                relation: 16384,
                new: vec![
                    text("42"),
                    Value::Null,
                    Value::UnchangedToast,
                    Value::Binary(vec![0x00, 0xFF, 0x0A].into()),
                ],
            },
        );
    }

    /// The reader's path: values are slices of the received message, not copies.
    #[test]
    fn parse_bytes_slices_values_out_of_the_message() {
        #[rustfmt::skip]
        let msg = Bytes::from(vec![
            b'I', 0x00, 0x00, 0x40, 0x00, b'N', 0x00, 0x02,
            b't', 0x00, 0x00, 0x00, 0x02, b'4', b'2',
            b'b', 0x00, 0x00, 0x00, 0x01, 0x07,
        ]);
        let PgOutputMessage::Insert { new, .. } = parse_bytes(&msg, false).unwrap() else {
            panic!("not an insert");
        };
        let range = msg.as_ptr() as usize..msg.as_ptr() as usize + msg.len();
        for v in &new {
            let (Value::Text(b) | Value::Binary(b)) = v else {
                panic!("{v:?}")
            };
            assert!(range.contains(&(b.as_ptr() as usize)), "{v:?} was copied");
        }
        assert_eq!(new, vec![text("42"), Value::Binary(vec![7].into())]);
    }

    #[test]
    fn insert_in_stream_and_empty_text() {
        #[rustfmt::skip]
        let bytes = [
            b'I',
            0x00, 0x00, 0x03, 0xEA,                   // subxid 1002
            0x00, 0x00, 0x40, 0x00,                   // OID
            b'N',
            0x00, 0x01,
            b't', 0x00, 0x00, 0x00, 0x00,             // empty text
        ];
        check(
            &bytes,
            true,
            PgOutputMessage::Insert {
                xid: Some(1002),
                relation: 16384,
                new: vec![text("")],
            },
        );
    }

    #[test]
    fn update_without_old_tuple() {
        #[rustfmt::skip]
        let bytes = [
            b'U',
            0x00, 0x00, 0x40, 0x00,
            b'N', 0x00, 0x01, b't', 0x00, 0x00, 0x00, 0x01, b'a',
        ];
        check(
            &bytes,
            false,
            PgOutputMessage::Update {
                xid: None,
                relation: 16384,
                old: None,
                new: vec![text("a")],
            },
        );
    }

    #[test]
    fn update_with_key_old_tuple() {
        #[rustfmt::skip]
        let bytes = [
            b'U',
            0x00, 0x00, 0x40, 0x00,
            b'K', 0x00, 0x02, b't', 0x00, 0x00, 0x00, 0x01, b'1', b'n',
            b'N', 0x00, 0x02, b't', 0x00, 0x00, 0x00, 0x01, b'2', b'u',
        ];
        check(
            &bytes,
            false,
            PgOutputMessage::Update {
                xid: None,
                relation: 16384,
                old: Some((OldKind::Key, vec![text("1"), Value::Null])),
                new: vec![text("2"), Value::UnchangedToast],
            },
        );
    }

    #[test]
    fn update_with_full_old_tuple_in_stream() {
        #[rustfmt::skip]
        let bytes = [
            b'U',
            0xFF, 0xFF, 0xFF, 0xFE,             // xid 4294967294
            0x00, 0x00, 0x40, 0x00,
            b'O', 0x00, 0x01, b't', 0x00, 0x00, 0x00, 0x01, b'x',
            b'N', 0x00, 0x01, b't', 0x00, 0x00, 0x00, 0x01, b'y',
        ];
        check(
            &bytes,
            true,
            PgOutputMessage::Update {
                xid: Some(u32::MAX - 1),
                relation: 16384,
                old: Some((OldKind::Full, vec![text("x")])),
                new: vec![text("y")],
            },
        );
    }

    #[test]
    fn delete_key_and_full() {
        #[rustfmt::skip]
        let key = [
            b'D', 0x00, 0x00, 0x40, 0x00,
            b'K', 0x00, 0x01, b't', 0x00, 0x00, 0x00, 0x01, b'7',
        ];
        check(
            &key,
            false,
            PgOutputMessage::Delete {
                xid: None,
                relation: 16384,
                old: (OldKind::Key, vec![text("7")]),
            },
        );
        #[rustfmt::skip]
        let full_in_stream = [
            b'D', 0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x40, 0x00,
            b'O', 0x00, 0x02, b't', 0x00, 0x00, 0x00, 0x01, b'7', b'n',
        ];
        check(
            &full_in_stream,
            true,
            PgOutputMessage::Delete {
                xid: Some(9),
                relation: 16384,
                old: (OldKind::Full, vec![text("7"), Value::Null]),
            },
        );
    }

    #[test]
    fn truncate_options() {
        for options in 0u8..=3 {
            #[rustfmt::skip]
            let bytes = [
                b'T',
                0x00, 0x00, 0x00, 0x02, // 2 relations
                options,
                0x00, 0x00, 0x40, 0x00,
                0x00, 0x00, 0x40, 0x01,
            ];
            check(
                &bytes,
                false,
                PgOutputMessage::Truncate {
                    xid: None,
                    options,
                    relations: vec![16384, 16385],
                },
            );
        }
        #[rustfmt::skip]
        let in_stream = [
            b'T', 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x01, 0x03, 0x00, 0x00, 0x40, 0x00,
        ];
        check(
            &in_stream,
            true,
            PgOutputMessage::Truncate {
                xid: Some(5),
                options: 3,
                relations: vec![16384],
            },
        );
    }

    #[test]
    fn logical_messages() {
        #[rustfmt::skip]
        let transactional = [
            b'M',
            0x01,                                           // transactional
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, // LSN 0/2000
            b'p', 0x00,                                     // prefix "p"
            0x00, 0x00, 0x00, 0x03, b'a', 0x00, b'b',       // content "a\0b"
        ];
        check(
            &transactional,
            false,
            PgOutputMessage::Message {
                xid: None,
                flags: 1,
                lsn: Lsn(0x2000),
                prefix: "p".into(),
                content: b"a\0b".to_vec(),
            },
        );
        #[rustfmt::skip]
        let non_transactional = [
            b'M', 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x08,
            0x00,                                           // empty prefix
            0x00, 0x00, 0x00, 0x00,                         // empty content
        ];
        check(
            &non_transactional,
            false,
            PgOutputMessage::Message {
                xid: None,
                flags: 0,
                lsn: Lsn(0x2008),
                prefix: String::new(),
                content: vec![],
            },
        );
        #[rustfmt::skip]
        let in_stream = [
            b'M', 0x00, 0x00, 0x03, 0xE9, 0x01,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x10,
            b'q', 0x00, 0x00, 0x00, 0x00, 0x01, b'z',
        ];
        check(
            &in_stream,
            true,
            PgOutputMessage::Message {
                xid: Some(1001),
                flags: 1,
                lsn: Lsn(0x2010),
                prefix: "q".into(),
                content: b"z".to_vec(),
            },
        );
    }

    #[test]
    fn stream_start_and_stop() {
        check(
            &[b'S', 0x00, 0x00, 0x03, 0xE9, 0x01],
            false,
            PgOutputMessage::StreamStart {
                xid: 1001,
                first_segment: true,
            },
        );
        check(
            &[b'S', 0x00, 0x00, 0x03, 0xE9, 0x00],
            false,
            PgOutputMessage::StreamStart {
                xid: 1001,
                first_segment: false,
            },
        );
        assert_eq!(
            parse(&[b'S', 0x00, 0x00, 0x03, 0xE9, 0x02], false),
            Err(ParseError::InvalidByte {
                message: "Stream Start",
                what: "first segment flag",
                offset: 5,
                value: 2,
            })
        );
        check(b"E", true, PgOutputMessage::StreamStop);
        check(b"E", false, PgOutputMessage::StreamStop);
    }

    #[test]
    fn stream_commit() {
        #[rustfmt::skip]
        let bytes = [
            b'c',
            0x00, 0x00, 0x03, 0xE9,                         // xid
            0x00,                                           // flags
            0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, // commit LSN 1/0
            0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x30, // end LSN 1/30
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, // time
        ];
        check(
            &bytes,
            false,
            PgOutputMessage::StreamCommit {
                xid: 1001,
                flags: 0,
                commit_lsn: Lsn(0x1_0000_0000),
                end_lsn: Lsn(0x1_0000_0030),
                commit_time: 5,
            },
        );
    }

    #[test]
    fn stream_abort_v2_and_v4() {
        let v2 = [b'A', 0x00, 0x00, 0x03, 0xE9, 0x00, 0x00, 0x03, 0xEB];
        check(
            &v2,
            false,
            PgOutputMessage::StreamAbort {
                xid: 1001,
                subxid: 1003,
                abort: None,
            },
        );
        #[rustfmt::skip]
        let v4 = [
            b'A', 0x00, 0x00, 0x03, 0xE9, 0x00, 0x00, 0x03, 0xE9,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x30, 0x00, // abort LSN
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, // abort time
        ];
        check(
            &v4,
            false,
            PgOutputMessage::StreamAbort {
                xid: 1001,
                subxid: 1001,
                abort: Some(StreamAbortInfo {
                    abort_lsn: Lsn(0x3000),
                    abort_time: 9,
                }),
            },
        );
        // A partial v4 tail is truncation, not silently ignored.
        assert!(matches!(
            parse(&v4[..12], false),
            Err(ParseError::Truncated {
                what: "abort LSN",
                offset: 9,
                ..
            })
        ));
        let mut long = v4.to_vec();
        long.push(0);
        assert_eq!(
            parse(&long, false),
            Err(ParseError::TrailingBytes {
                message: "Stream Abort",
                offset: 25,
                count: 1,
            })
        );
    }

    #[test]
    fn unknown_tags_are_not_errors() {
        // 'b' is protocol 3's Begin Prepare, 'K' Commit Prepared: unknown here.
        assert_eq!(
            parse(&[b'b', 1, 2, 3], false),
            Ok(PgOutputMessage::Unknown { tag: b'b' })
        );
        assert_eq!(
            parse(b"K", true),
            Ok(PgOutputMessage::Unknown { tag: b'K' })
        );
        assert_eq!(
            parse(&[0xFF], false),
            Ok(PgOutputMessage::Unknown { tag: 0xFF })
        );
    }

    #[test]
    fn empty_and_truncated_input() {
        assert_eq!(parse(&[], false), Err(ParseError::Empty));
        assert_eq!(
            parse(&[b'B', 0, 0, 0], false),
            Err(ParseError::Truncated {
                message: "Begin",
                what: "final LSN",
                offset: 1,
                needed: 8,
                remaining: 3,
            })
        );
        // Every strict prefix of a valid message is an error.
        let full = encode(&PgOutputMessage::Update {
            xid: Some(3),
            relation: 1,
            old: Some((OldKind::Key, vec![text("k")])),
            new: vec![text("n"), Value::Binary(vec![1].into())],
        });
        for cut in 0..full.len() {
            assert!(parse(&full[..cut], true).is_err(), "prefix {cut} parsed");
        }
    }

    #[test]
    fn malicious_lengths_are_errors_not_allocations() {
        #[rustfmt::skip]
        let huge_text = [
            b'I', 0x00, 0x00, 0x40, 0x00, b'N', 0x00, 0x01,
            b't', 0x7F, 0xFF, 0xFF, 0xFF, b'x',
        ];
        assert_eq!(
            parse(&huge_text, false),
            Err(ParseError::InvalidLength {
                message: "Insert",
                what: "text value length",
                offset: 9,
                value: i64::from(i32::MAX),
                remaining: 1,
            })
        );
        let negative_text = [
            b'I', 0, 0, 0x40, 0, b'N', 0, 1, b'b', 0xFF, 0xFF, 0xFF, 0xFF,
        ];
        assert!(matches!(
            parse(&negative_text, false),
            Err(ParseError::InvalidLength { value: -1, .. })
        ));
        // 32767 columns announced, 1 byte left.
        let many_cols = [b'I', 0, 0, 0x40, 0, b'N', 0x7F, 0xFF, b'n'];
        assert!(matches!(
            parse(&many_cols, false),
            Err(ParseError::InvalidLength {
                what: "tuple column count",
                offset: 6,
                ..
            })
        ));
        let negative_cols = [b'I', 0, 0, 0x40, 0, b'N', 0xFF, 0xFF];
        assert!(matches!(
            parse(&negative_cols, false),
            Err(ParseError::InvalidLength { value: -1, .. })
        ));
        let huge_truncate = [b'T', 0x7F, 0xFF, 0xFF, 0xFF, 0x00, 0, 0, 0, 1];
        assert!(matches!(
            parse(&huge_truncate, false),
            Err(ParseError::InvalidLength {
                what: "relation count",
                offset: 1,
                ..
            })
        ));
        let huge_message = [b'M', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x7F, 0xFF, 0xFF, 0xFF];
        assert!(matches!(
            parse(&huge_message, false),
            Err(ParseError::InvalidLength {
                what: "content length",
                offset: 11,
                ..
            })
        ));
        // 10 columns announced for a Relation, only 9 bytes follow.
        let relation = [
            b'R', 0, 0, 0, 1, 0, b'x', 0, b'd', 0, 1, 1, b'a', 0, 0, 0, 0, 0x17, 0, 0,
        ];
        assert!(matches!(
            parse(&relation, false),
            Err(ParseError::InvalidLength {
                what: "column count",
                ..
            })
        ));
    }

    #[test]
    fn malformed_fields() {
        assert_eq!(
            parse(&[b'O', 0, 0, 0, 0, 0, 0, 0, 0, b'a', b'b'], false),
            Err(ParseError::UnterminatedString {
                message: "Origin",
                what: "origin name",
                offset: 9,
            })
        );
        assert_eq!(
            parse(&[b'O', 0, 0, 0, 0, 0, 0, 0, 0, 0xC3, 0x28, 0], false),
            Err(ParseError::InvalidUtf8 {
                message: "Origin",
                what: "origin name",
                offset: 9,
            })
        );
        assert_eq!(
            parse(&[b'R', 0, 0, 0, 1, 0, b'x', 0, b'z', 0, 0], false),
            Err(ParseError::InvalidByte {
                message: "Relation",
                what: "replica identity",
                offset: 8,
                value: b'z',
            })
        );
        assert_eq!(
            parse(&[b'I', 0, 0, 0, 1, b'N', 0, 1, b'x'], false),
            Err(ParseError::InvalidByte {
                message: "Insert",
                what: "tuple column kind",
                offset: 8,
                value: b'x',
            })
        );
        assert_eq!(
            parse(&[b'I', 0, 0, 0, 1, b'K', 0, 0], false),
            Err(ParseError::InvalidByte {
                message: "Insert",
                what: "new tuple marker",
                offset: 5,
                value: b'K',
            })
        );
        assert_eq!(
            parse(&[b'U', 0, 0, 0, 1, b'K', 0, 0, b'O', 0, 0], false),
            Err(ParseError::InvalidByte {
                message: "Update",
                what: "new tuple marker",
                offset: 8,
                value: b'O',
            })
        );
        assert_eq!(
            parse(&[b'D', 0, 0, 0, 1, b'N', 0, 0], false),
            Err(ParseError::InvalidByte {
                message: "Delete",
                what: "old tuple marker",
                offset: 5,
                value: b'N',
            })
        );
        assert_eq!(
            parse(&[b'E', 0], false),
            Err(ParseError::TrailingBytes {
                message: "Stream Stop",
                offset: 1,
                count: 1,
            })
        );
    }

    #[test]
    fn errors_say_what_and_where() {
        let e = parse(&[b'B', 0, 0, 0], false).unwrap_err().to_string();
        assert!(
            e.contains("Begin") && e.contains("final LSN") && e.contains("offset 1"),
            "{e}"
        );
    }
}
