//! What the spool stores and how: the log is made of **blocks** (one storage value holds
//! many consecutive records: `crc32 (LE) | count (u32 LE) | (len u32 LE | record)*`, keyed
//! by the big-endian sequence of its first record), records in a compact binary form (row
//! images kept as pgoutput TupleData bytes), and `crc32 | bincode(value)` framing for
//! everything else (ledger entries, the commit index). A CRC mismatch or a malformed block
//! or record is an error naming the sequence (invariant 9).

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::{Result, SpoolError};
use crate::core::tuple::{self, RawTuple};
use crate::core::{Change, ChangeOp, CommitInfo, Lsn, OldKind, RelationId, Xid};

/// Version of the on-disk layout. Bump on any change of keys, framing or record types
/// (including the `core::change` types, which are serialised inside records).
/// 2: blocks of records, records in the binary form below (issue 10).
pub const FORMAT_VERSION: u32 = 2;

/// A block is written to storage once it holds this many bytes (and at every flush).
/// Kept well under sled's blob threshold (a quarter of its segment size) and small
/// enough that sled's copy-on-write of a leaf (up to 16 values) stays cheap.
pub const BLOCK_BYTES: usize = 128 << 10;

/// Bytes of a block's header (CRC, record count).
const BLOCK_HEADER: usize = 8;

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
    /// Stored bytes of the transaction's records, this commit record excluded.
    pub bytes: u64,
    /// Change records per relation id.
    pub tables: Vec<(RelationId, u64)>,
    /// The transaction arrived streamed (protocol v2) and was spooled by xid first.
    pub streamed: bool,
}

/// `seq` as a storage key.
pub fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// A storage key back to a sequence.
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

// ---------------------------------------------------------------------------------------
// Records.
//
// change: 1 | rel_version u32 | xid u32 | subxid u32 | relation u32 | lsn u64 | op
//   op: `I` tuple | `U` old(0, `K`, `O`) [tuple] tuple | `D` old(`K`, `O`) tuple
//       | `T` options u8 (1 cascade, 2 restart identity) | count u32 | relation u32 *
//   tuple: len u32 | pgoutput TupleData
// commit: 2 | bincode(CommitRecord)
// Integers are little-endian; TupleData keeps pgoutput's big-endian form.

const KIND_CHANGE: u8 = 1;
const KIND_COMMIT: u8 = 2;
/// Bytes of a change record before its op byte.
const CHANGE_HEAD: usize = 1 + 4 + 4 + 4 + 4 + 8;

/// What a change record is about, read without decoding its row images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeHead {
    pub rel_version: u32,
    pub xid: Xid,
    pub subxid: Xid,
    pub relation: RelationId,
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn write_tuple(out: &mut Vec<u8>, t: &[crate::core::Value]) {
    let at = out.len();
    put_u32(out, 0);
    tuple::write_values(t.iter().map(crate::core::Value::as_ref), out);
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

fn old_byte(k: OldKind) -> u8 {
    match k {
        OldKind::Key => b'K',
        OldKind::Full => b'O',
    }
}

/// Appends a change record.
pub fn encode_change(rel_version: u32, c: &Change, out: &mut Vec<u8>) {
    out.push(KIND_CHANGE);
    put_u32(out, rel_version);
    put_u32(out, c.xid);
    put_u32(out, c.subxid);
    put_u32(out, c.relation);
    out.extend_from_slice(&c.lsn.0.to_le_bytes());
    match &c.op {
        ChangeOp::Insert { new } => {
            out.push(b'I');
            write_tuple(out, new);
        }
        ChangeOp::Update { old, new } => {
            out.push(b'U');
            match old {
                None => out.push(0),
                Some((k, t)) => {
                    out.push(old_byte(*k));
                    write_tuple(out, t);
                }
            }
            write_tuple(out, new);
        }
        ChangeOp::Delete { old: (k, t) } => {
            out.push(b'D');
            out.push(old_byte(*k));
            write_tuple(out, t);
        }
        ChangeOp::Truncate {
            relations,
            cascade,
            restart_identity,
        } => {
            out.push(b'T');
            out.push(u8::from(*cascade) | (u8::from(*restart_identity) << 1));
            put_u32(out, relations.len() as u32);
            for r in relations {
                put_u32(out, *r);
            }
        }
    }
}

/// Appends a commit record.
pub fn encode_commit(c: &CommitRecord, out: &mut Vec<u8>) -> Result<()> {
    out.push(KIND_COMMIT);
    bincode::serialize_into(&mut *out, c).map_err(|e| SpoolError::Storage {
        context: "encoding a commit record".into(),
        message: e.to_string(),
    })
}

/// Appends any record.
pub fn encode_record(r: &SpoolRecord, out: &mut Vec<u8>) -> Result<()> {
    match r {
        SpoolRecord::Change {
            rel_version,
            change,
        } => {
            encode_change(*rel_version, change, out);
            Ok(())
        }
        SpoolRecord::Commit(c) => encode_commit(c, out),
    }
}

/// A bounds-checked reader over one record; errors name the record's sequence.
struct Rd<'a> {
    buf: &'a Bytes,
    pos: usize,
    seq: u64,
}

impl Rd<'_> {
    fn bad(&self, what: &str) -> SpoolError {
        SpoolError::Corrupt {
            seq: self.seq,
            reason: format!("undecodable record: {what} at offset {}", self.pos),
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&[u8]> {
        let end = self.pos.checked_add(n).ok_or_else(|| self.bad(what))?;
        let s = self.buf.get(self.pos..end).ok_or_else(|| self.bad(what))?;
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        let s = self.take(4, what)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        let s = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }

    fn tuple(&mut self) -> Result<RawTuple> {
        let len = self.u32("tuple length")? as usize;
        let start = self.pos;
        self.take(len, "tuple")?;
        RawTuple::parse(self.buf.slice(start..start + len)).map_err(|e| SpoolError::Corrupt {
            seq: self.seq,
            reason: format!("undecodable row image: {e}"),
        })
    }

    fn old(&mut self, kind: u8) -> Result<OldKind> {
        match kind {
            b'K' => Ok(OldKind::Key),
            b'O' => Ok(OldKind::Full),
            _ => Err(self.bad("old tuple kind")),
        }
    }

    fn finish(&self) -> Result<()> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(self.bad("trailing bytes"))
        }
    }
}

/// Reads the head of a change record (`None` for a commit record).
pub fn change_head(seq: u64, rec: &[u8]) -> Result<Option<ChangeHead>> {
    match rec.first() {
        Some(&KIND_COMMIT) => Ok(None),
        Some(&KIND_CHANGE) if rec.len() > CHANGE_HEAD => {
            let u =
                |at: usize| u32::from_le_bytes([rec[at], rec[at + 1], rec[at + 2], rec[at + 3]]);
            Ok(Some(ChangeHead {
                rel_version: u(1),
                xid: u(5),
                subxid: u(9),
                relation: u(13),
            }))
        }
        _ => Err(SpoolError::Corrupt {
            seq,
            reason: "undecodable record: unknown record kind or short header".into(),
        }),
    }
}

/// Decodes one record (row images are slices of `rec`, not copies).
pub fn decode_record(seq: u64, rec: &Bytes) -> Result<SpoolRecord> {
    let mut r = Rd {
        buf: rec,
        pos: 0,
        seq,
    };
    match r.u8("record kind")? {
        KIND_COMMIT => bincode::deserialize(&rec[1..])
            .map(SpoolRecord::Commit)
            .map_err(|e| SpoolError::Corrupt {
                seq,
                reason: format!("undecodable commit record: {e}"),
            }),
        KIND_CHANGE => {
            let rel_version = r.u32("relation version")?;
            let xid = r.u32("xid")?;
            let subxid = r.u32("subxid")?;
            let relation = r.u32("relation")?;
            let lsn = Lsn(r.u64("lsn")?);
            let op = match r.u8("op")? {
                b'I' => ChangeOp::Insert {
                    new: r.tuple()?.to_values(),
                },
                b'U' => {
                    let old = match r.u8("old tuple kind")? {
                        0 => None,
                        k => {
                            let k = r.old(k)?;
                            Some((k, r.tuple()?.to_values()))
                        }
                    };
                    ChangeOp::Update {
                        old,
                        new: r.tuple()?.to_values(),
                    }
                }
                b'D' => {
                    let k = r.u8("old tuple kind")?;
                    let k = r.old(k)?;
                    ChangeOp::Delete {
                        old: (k, r.tuple()?.to_values()),
                    }
                }
                b'T' => {
                    let options = r.u8("truncate options")?;
                    let n = r.u32("relation count")? as usize;
                    if n > (rec.len() - r.pos) / 4 {
                        return Err(r.bad("relation count"));
                    }
                    let mut relations = Vec::with_capacity(n);
                    for _ in 0..n {
                        relations.push(r.u32("relation")?);
                    }
                    ChangeOp::Truncate {
                        relations,
                        cascade: options & 1 != 0,
                        restart_identity: options & 2 != 0,
                    }
                }
                _ => return Err(r.bad("op")),
            };
            r.finish()?;
            Ok(SpoolRecord::Change {
                rel_version,
                change: Change {
                    xid,
                    subxid,
                    relation,
                    lsn,
                    op,
                },
            })
        }
        _ => Err(r.bad("record kind")),
    }
}

// ---------------------------------------------------------------------------------------
// Blocks.

/// A block being filled (the writer's, or a streamed transaction's).
#[derive(Debug)]
pub(crate) struct BlockBuilder {
    pub first_seq: u64,
    buf: Vec<u8>,
    count: u32,
}

impl BlockBuilder {
    pub(crate) fn new(first_seq: u64) -> Self {
        let mut buf = Vec::with_capacity(BLOCK_BYTES + 1024);
        buf.resize(BLOCK_HEADER, 0);
        BlockBuilder {
            first_seq,
            buf,
            count: 0,
        }
    }

    /// Starts over at `first_seq`, keeping the buffer (unless a huge record grew it).
    pub(crate) fn reset(&mut self, first_seq: u64) {
        if self.buf.capacity() > 4 * BLOCK_BYTES {
            *self = Self::new(first_seq);
            return;
        }
        self.buf.truncate(BLOCK_HEADER);
        self.count = 0;
        self.first_seq = first_seq;
    }

    pub(crate) fn count(&self) -> u64 {
        u64::from(self.count)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub(crate) fn is_full(&self) -> bool {
        self.buf.len() >= BLOCK_BYTES
    }

    /// Appends a record written by `f`; returns its stored size (length prefix included).
    pub(crate) fn push_with(&mut self, f: impl FnOnce(&mut Vec<u8>) -> Result<()>) -> Result<u64> {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        if let Err(e) = f(&mut self.buf) {
            self.buf.truncate(at);
            return Err(e);
        }
        let len = self.buf.len() - at - 4;
        let Ok(len32) = u32::try_from(len) else {
            self.buf.truncate(at);
            return Err(SpoolError::Protocol(format!(
                "a record of {len} bytes is larger than the spool can store (4 GiB)"
            )));
        };
        self.buf[at..at + 4].copy_from_slice(&len32.to_le_bytes());
        self.count += 1;
        Ok(len as u64 + 4)
    }

    /// Appends an already encoded record.
    pub(crate) fn push_raw(&mut self, rec: &[u8]) -> Result<u64> {
        self.push_with(|out| {
            out.extend_from_slice(rec);
            Ok(())
        })
    }

    /// Keeps only the first `n` records.
    pub(crate) fn truncate(&mut self, n: u64) {
        if n >= self.count() {
            return;
        }
        let mut pos = BLOCK_HEADER;
        for _ in 0..n {
            let len = u32::from_le_bytes([
                self.buf[pos],
                self.buf[pos + 1],
                self.buf[pos + 2],
                self.buf[pos + 3],
            ]) as usize;
            pos += 4 + len;
        }
        self.buf.truncate(pos);
        self.count = n as u32;
    }

    /// The stored value: header filled in (count, CRC).
    pub(crate) fn finish(&mut self) -> &[u8] {
        self.buf[4..8].copy_from_slice(&self.count.to_le_bytes());
        let crc = crc32fast::hash(&self.buf[4..]);
        self.buf[..4].copy_from_slice(&crc.to_le_bytes());
        &self.buf
    }
}

/// A stored block, checked (CRC, structure) and shared.
#[derive(Debug, Clone)]
pub struct Block {
    pub first_seq: u64,
    data: Bytes,
    count: u64,
}

impl Block {
    /// Checks a stored value: CRC, then that the record lengths add up exactly.
    pub fn parse(first_seq: u64, data: Bytes) -> Result<Block> {
        let corrupt = |reason: String| SpoolError::Corrupt {
            seq: first_seq,
            reason,
        };
        if data.len() < BLOCK_HEADER {
            return Err(corrupt(format!(
                "block of {} bytes is shorter than its header",
                data.len()
            )));
        }
        let stored = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        let actual = crc32fast::hash(&data[4..]);
        if stored != actual {
            return Err(corrupt(format!(
                "CRC mismatch: stored {stored:08x}, computed {actual:08x} (block of records from {first_seq})"
            )));
        }
        let count = u64::from(u32::from_le_bytes([data[4], data[5], data[6], data[7]]));
        let mut pos = BLOCK_HEADER;
        for i in 0..count {
            let len = data
                .get(pos..pos + 4)
                .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
                .filter(|l| pos + 4 + l <= data.len())
                .ok_or_else(|| SpoolError::Corrupt {
                    seq: first_seq + i,
                    reason: "record runs past the end of its block".into(),
                })?;
            pos += 4 + len;
        }
        if pos != data.len() || count == 0 {
            return Err(corrupt(format!(
                "block holds {count} records and {} unexpected bytes",
                data.len() - pos
            )));
        }
        Ok(Block {
            first_seq,
            data,
            count,
        })
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sequence of its last record.
    pub fn last_seq(&self) -> u64 {
        self.first_seq + self.count - 1
    }

    pub fn contains(&self, seq: u64) -> bool {
        seq >= self.first_seq && seq <= self.last_seq()
    }

    /// Stored bytes (header included).
    pub fn stored_len(&self) -> usize {
        self.data.len()
    }

    /// The records from `seq` on, as `(seq, bytes)` (slices of the block, no copies).
    pub fn records_from(&self, seq: u64) -> BlockRecords<'_> {
        let mut it = BlockRecords {
            block: self,
            pos: BLOCK_HEADER,
            next: self.first_seq,
        };
        while it.next < seq && it.next <= self.last_seq() {
            it.skip_one();
        }
        it
    }
}

/// Iterator over a block's records.
pub struct BlockRecords<'a> {
    block: &'a Block,
    pos: usize,
    next: u64,
}

impl BlockRecords<'_> {
    fn len_at(&self) -> usize {
        let d = &self.block.data;
        u32::from_le_bytes([
            d[self.pos],
            d[self.pos + 1],
            d[self.pos + 2],
            d[self.pos + 3],
        ]) as usize
    }

    fn skip_one(&mut self) {
        self.pos += 4 + self.len_at();
        self.next += 1;
    }
}

impl Iterator for BlockRecords<'_> {
    type Item = (u64, Bytes);

    fn next(&mut self) -> Option<(u64, Bytes)> {
        if self.next > self.block.last_seq() {
            return None;
        }
        // `Block::parse` checked every length.
        let len = self.len_at();
        let start = self.pos + 4;
        let rec = self.block.data.slice(start..start + len);
        let seq = self.next;
        self.pos = start + len;
        self.next += 1;
        Some((seq, rec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{CommitInfo, Value};

    fn change(op: ChangeOp) -> SpoolRecord {
        SpoolRecord::Change {
            rel_version: 2,
            change: Change {
                xid: 7,
                subxid: 9,
                relation: 16384,
                lsn: Lsn(0x10),
                op,
            },
        }
    }

    fn t(s: &str) -> Value {
        Value::Text(s.as_bytes().to_vec().into())
    }

    fn samples() -> Vec<SpoolRecord> {
        vec![
            change(ChangeOp::Insert {
                new: vec![t("a\tb\n"), Value::Null],
            }),
            change(ChangeOp::Update {
                old: None,
                new: vec![t("1"), Value::UnchangedToast],
            }),
            change(ChangeOp::Update {
                old: Some((
                    OldKind::Full,
                    vec![t("0"), Value::Binary(vec![1, 2].into())],
                )),
                new: vec![t("1"), t("")],
            }),
            change(ChangeOp::Delete {
                old: (OldKind::Key, vec![t("1"), Value::Null]),
            }),
            change(ChangeOp::Truncate {
                relations: vec![1, 2, 3],
                cascade: true,
                restart_identity: false,
            }),
            SpoolRecord::Commit(CommitRecord {
                info: CommitInfo {
                    xid: 7,
                    commit_lsn: Lsn(0x20),
                    end_lsn: Lsn(0x28),
                    commit_time: 5,
                },
                first_seq: 1,
                changes: 5,
                bytes: 300,
                tables: vec![(16384, 5)],
                streamed: true,
            }),
        ]
    }

    fn block_of(recs: &[SpoolRecord], first: u64) -> Vec<u8> {
        let mut b = BlockBuilder::new(first);
        for r in recs {
            b.push_with(|out| encode_record(r, out)).unwrap();
        }
        b.finish().to_vec()
    }

    #[test]
    fn records_round_trip_through_a_block() {
        let recs = samples();
        let block = Block::parse(40, Bytes::from(block_of(&recs, 40))).unwrap();
        assert_eq!(block.count(), recs.len() as u64);
        assert_eq!(block.last_seq(), 40 + recs.len() as u64 - 1);
        let back: Vec<(u64, SpoolRecord)> = block
            .records_from(40)
            .map(|(s, r)| (s, decode_record(s, &r).unwrap()))
            .collect();
        let want: Vec<(u64, SpoolRecord)> = (40..).zip(recs.iter().cloned()).collect();
        assert_eq!(back, want);
        // From the middle.
        let (s, r) = block.records_from(43).next().unwrap();
        assert_eq!((s, decode_record(s, &r).unwrap()), want[3]);
        assert_eq!(
            change_head(40, &block.records_from(40).next().unwrap().1).unwrap(),
            Some(ChangeHead {
                rel_version: 2,
                xid: 7,
                subxid: 9,
                relation: 16384
            })
        );
    }

    #[test]
    fn every_flipped_byte_of_a_block_is_detected_with_a_sequence() {
        let bytes = block_of(&samples(), 42);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            match Block::parse(42, Bytes::from(b)) {
                Err(SpoolError::Corrupt { seq, .. }) => assert!(seq >= 42, "{seq}"),
                other => panic!("byte {i}: expected corruption, got {other:?}"),
            }
        }
    }

    #[test]
    fn truncated_blocks_are_corrupt() {
        let bytes = block_of(&samples(), 9);
        for len in 0..bytes.len() {
            assert!(matches!(
                Block::parse(9, Bytes::copy_from_slice(&bytes[..len])),
                Err(SpoolError::Corrupt { .. })
            ));
        }
    }

    #[test]
    fn malformed_records_are_errors_naming_their_sequence() {
        let mut enc = Vec::new();
        encode_record(&samples()[2], &mut enc).unwrap();
        for len in 0..enc.len() {
            assert!(matches!(
                decode_record(77, &Bytes::copy_from_slice(&enc[..len])),
                Err(SpoolError::Corrupt { seq: 77, .. })
            ));
        }
        for i in 0..enc.len() {
            let mut e = enc.clone();
            e[i] = 0xff;
            // Never a panic; either a different valid record or an error.
            let _ = decode_record(77, &Bytes::from(e));
        }
    }

    #[test]
    fn builder_truncates_and_frames_like_parse_expects() {
        let recs = samples();
        let mut b = BlockBuilder::new(5);
        for r in &recs {
            b.push_with(|out| encode_record(r, out)).unwrap();
        }
        b.truncate(2);
        let block = Block::parse(5, Bytes::copy_from_slice(b.finish())).unwrap();
        assert_eq!(block.count(), 2);
        assert_eq!(
            decode_record(6, &block.records_from(6).next().unwrap().1).unwrap(),
            recs[1]
        );
    }

    #[test]
    fn frame_round_trip_and_corruption() {
        let v = (1u64, "x".to_string());
        let bytes = frame(&v).unwrap();
        assert_eq!(unframe::<(u64, String)>(5, &bytes).unwrap(), v);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(matches!(
                unframe::<(u64, String)>(42, &b),
                Err(SpoolError::Corrupt { seq: 42, .. })
            ));
        }
    }

    #[test]
    fn keys_sort_like_sequences() {
        assert!(seq_key(255) < seq_key(256));
        assert_eq!(key_seq(&seq_key(123_456)).unwrap(), 123_456);
    }
}
