//! Framing of everything the spool stores: `crc32 (LE) | bincode(value)`, and the records
//! of the log. Keys are big-endian `u64` sequences so sled's order is the log's order.
//! A CRC mismatch or decode failure is an error naming the sequence (invariant 9).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::{Result, SpoolError};
use crate::core::{Change, CommitInfo, RelationId};

/// Version of the on-disk layout. Bump on any change of keys, framing or record types
/// (including the `core::change` types, which are serialised inside records).
pub const FORMAT_VERSION: u32 = 1;

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpoolRecord {
    /// A row change, decoded with relation `change.relation` at schema `rel_version`.
    Change { rel_version: u32, change: Change },
    /// The end of a transaction whose changes are the records `first_seq..seq`.
    Commit(CommitRecord),
}

impl SpoolRecord {
    pub fn as_commit(&self) -> Option<&CommitRecord> {
        match self {
            SpoolRecord::Commit(c) => Some(c),
            SpoolRecord::Change { .. } => None,
        }
    }
}

/// A commit record, which also summarises its transaction (for counters and the loader).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRecord {
    pub info: CommitInfo,
    /// Sequence of the transaction's first change record.
    pub first_seq: u64,
    /// Number of change records of the transaction (`seq - first_seq`).
    pub changes: u64,
    /// Framed bytes of the transaction's records, this commit record excluded.
    pub bytes: u64,
    /// Change records per relation id.
    pub tables: Vec<(RelationId, u64)>,
    /// The transaction arrived streamed (protocol v2) and was spooled by xid first.
    pub streamed: bool,
}

/// A change of an in-progress streamed transaction, kept by xid until Stream Commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEntry {
    pub rel_version: u32,
    pub change: Change,
}

/// `seq` as a sled key.
pub fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// A sled key back to a sequence.
pub fn key_seq(key: &[u8]) -> Result<u64> {
    let arr: [u8; 8] = key.try_into().map_err(|_| SpoolError::Corrupt {
        seq: 0,
        reason: format!("log key of {} bytes, expected 8", key.len()),
    })?;
    Ok(u64::from_be_bytes(arr))
}

/// `crc32 | bincode(value)`.
pub fn frame<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let payload = bincode::serialize(value).map_err(|e| SpoolError::Storage {
        context: "encoding a spool record".into(),
        message: e.to_string(),
    })?;
    let crc = crc32fast::hash(&payload);
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Checks the CRC and decodes; `seq` names the record in the error.
pub fn unframe<T: DeserializeOwned>(seq: u64, bytes: &[u8]) -> Result<T> {
    if bytes.len() < 4 {
        return Err(SpoolError::Corrupt {
            seq,
            reason: format!("value of {} bytes is shorter than its CRC", bytes.len()),
        });
    }
    let (crc, payload) = bytes.split_at(4);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let actual = crc32fast::hash(payload);
    if stored != actual {
        return Err(SpoolError::Corrupt {
            seq,
            reason: format!("CRC mismatch: stored {stored:08x}, computed {actual:08x}"),
        });
    }
    bincode::deserialize(payload).map_err(|e| SpoolError::Corrupt {
        seq,
        reason: format!("undecodable record: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{ChangeOp, Lsn, Value};

    fn change() -> SpoolRecord {
        SpoolRecord::Change {
            rel_version: 2,
            change: Change {
                xid: 7,
                subxid: 7,
                relation: 16384,
                lsn: Lsn(0x10),
                op: ChangeOp::Insert {
                    new: vec![Value::Text(b"a\tb\n".to_vec()), Value::Null],
                },
            },
        }
    }

    #[test]
    fn frame_round_trip() {
        let r = change();
        let bytes = frame(&r).unwrap();
        assert_eq!(unframe::<SpoolRecord>(5, &bytes).unwrap(), r);
    }

    #[test]
    fn every_flipped_byte_is_detected_with_its_sequence() {
        let bytes = frame(&change()).unwrap();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            match unframe::<SpoolRecord>(42, &b) {
                Err(SpoolError::Corrupt { seq, .. }) => assert_eq!(seq, 42),
                other => panic!("byte {i}: expected corruption, got {other:?}"),
            }
        }
    }

    #[test]
    fn truncated_values_are_corrupt() {
        let bytes = frame(&change()).unwrap();
        for len in 0..bytes.len() {
            assert!(matches!(
                unframe::<SpoolRecord>(9, &bytes[..len]),
                Err(SpoolError::Corrupt { seq: 9, .. })
            ));
        }
    }

    #[test]
    fn keys_sort_like_sequences() {
        assert!(seq_key(255) < seq_key(256));
        assert_eq!(key_seq(&seq_key(123_456)).unwrap(), 123_456);
    }
}
