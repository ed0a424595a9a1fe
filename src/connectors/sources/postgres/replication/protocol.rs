//! The streaming-replication sub-protocol inside CopyData: XLogData and primary keepalive
//! from the server, standby status updates to it. Pure byte handling, no I/O.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::core::{Lsn, PG_EPOCH_OFFSET_MICROS};

/// A message from the walsender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationMessage {
    /// `w`: a chunk of decoded WAL (one pgoutput message).
    XLogData {
        wal_start: Lsn,
        wal_end: Lsn,
        send_time: i64,
        data: Bytes,
    },
    /// `k`: the server's position; `reply_requested` means "answer now or be cut off".
    Keepalive {
        wal_end: Lsn,
        send_time: i64,
        reply_requested: bool,
    },
}

/// Malformed replication messages.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("replication message of {len} bytes is too short for tag {tag:?}")]
    Short { tag: char, len: usize },
    #[error("unknown replication message tag {0:?}")]
    UnknownTag(char),
    #[error("empty replication message")]
    Empty,
}

/// Parses the payload of one CopyData message.
pub fn parse(mut buf: Bytes) -> Result<ReplicationMessage, ProtocolError> {
    if buf.is_empty() {
        return Err(ProtocolError::Empty);
    }
    let tag = buf.get_u8();
    match tag {
        b'w' => {
            if buf.len() < 24 {
                return Err(ProtocolError::Short {
                    tag: 'w',
                    len: buf.len() + 1,
                });
            }
            let wal_start = Lsn(buf.get_u64());
            let wal_end = Lsn(buf.get_u64());
            let send_time = buf.get_i64();
            Ok(ReplicationMessage::XLogData {
                wal_start,
                wal_end,
                send_time,
                data: buf,
            })
        }
        b'k' => {
            if buf.len() < 17 {
                return Err(ProtocolError::Short {
                    tag: 'k',
                    len: buf.len() + 1,
                });
            }
            Ok(ReplicationMessage::Keepalive {
                wal_end: Lsn(buf.get_u64()),
                send_time: buf.get_i64(),
                reply_requested: buf.get_u8() != 0,
            })
        }
        other => Err(ProtocolError::UnknownTag(other as char)),
    }
}

/// Current time in PostgreSQL's epoch (microseconds since 2000-01-01 UTC).
pub fn pg_now() -> i64 {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    unix - PG_EPOCH_OFFSET_MICROS
}

/// Encodes a standby status update (`r`): `write` = received, `flush`/`apply` = confirmed.
pub fn standby_status_update(write: Lsn, flush: Lsn, apply: Lsn, now: i64, reply: bool) -> Bytes {
    let mut b = BytesMut::with_capacity(34);
    b.put_u8(b'r');
    b.put_u64(write.0);
    b.put_u64(flush.0);
    b.put_u64(apply.0);
    b.put_i64(now);
    b.put_u8(u8::from(reply));
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_xlogdata_and_keepalive() {
        let mut b = BytesMut::new();
        b.put_u8(b'w');
        b.put_u64(10);
        b.put_u64(20);
        b.put_i64(30);
        b.put_slice(b"BEGIN");
        assert_eq!(
            parse(b.freeze()).unwrap(),
            ReplicationMessage::XLogData {
                wal_start: Lsn(10),
                wal_end: Lsn(20),
                send_time: 30,
                data: Bytes::from_static(b"BEGIN")
            }
        );
        let mut k = BytesMut::new();
        k.put_u8(b'k');
        k.put_u64(99);
        k.put_i64(5);
        k.put_u8(1);
        assert_eq!(
            parse(k.freeze()).unwrap(),
            ReplicationMessage::Keepalive {
                wal_end: Lsn(99),
                send_time: 5,
                reply_requested: true
            }
        );
    }

    #[test]
    fn rejects_short_and_unknown() {
        assert!(parse(Bytes::from_static(b"w\0\0")).is_err());
        assert!(parse(Bytes::from_static(b"k")).is_err());
        assert!(parse(Bytes::from_static(b"z")).is_err());
        assert!(parse(Bytes::new()).is_err());
    }

    #[test]
    fn status_update_layout() {
        let b = standby_status_update(Lsn(1), Lsn(2), Lsn(3), 4, true);
        assert_eq!(b.len(), 34);
        assert_eq!(b[0], b'r');
        assert_eq!(&b[1..9], &1u64.to_be_bytes());
        assert_eq!(&b[9..17], &2u64.to_be_bytes());
        assert_eq!(&b[17..25], &3u64.to_be_bytes());
        assert_eq!(&b[25..33], &4i64.to_be_bytes());
        assert_eq!(b[33], 1);
    }
}
