//! Row images in the form PostgreSQL sends them: pgoutput TupleData (Int16 column count,
//! then per column `n`, `u`, or `t`/`b` + Int32 length + bytes), kept as shared bytes.
//! A [`RawTuple`] is validated once when it is built; reading its columns afterwards never
//! fails, never panics and never allocates ([`ValueRef`] borrows from the bytes).

use bytes::Bytes;

use super::Value;

/// Column kinds of TupleData.
pub mod kind {
    pub const NULL: u8 = b'n';
    pub const UNCHANGED_TOAST: u8 = b'u';
    pub const TEXT: u8 = b't';
    pub const BINARY: u8 = b'b';
}

/// One column value borrowed from a tuple's bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueRef<'a> {
    Null,
    UnchangedToast,
    Text(&'a [u8]),
    Binary(&'a [u8]),
}

impl std::fmt::Debug for ValueRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ValueRef::Null => f.write_str("Null"),
            ValueRef::UnchangedToast => f.write_str("UnchangedToast"),
            ValueRef::Text(b) => write!(f, "Text({:?})", String::from_utf8_lossy(b)),
            ValueRef::Binary(b) => write!(f, "Binary({} bytes)", b.len()),
        }
    }
}

impl ValueRef<'_> {
    /// An owned copy.
    pub fn to_value(self) -> Value {
        match self {
            ValueRef::Null => Value::Null,
            ValueRef::UnchangedToast => Value::UnchangedToast,
            ValueRef::Text(b) => Value::text(b),
            ValueRef::Binary(b) => Value::binary(b),
        }
    }
}

impl Value {
    /// A borrowed view.
    pub fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Null => ValueRef::Null,
            Value::UnchangedToast => ValueRef::UnchangedToast,
            Value::Text(b) => ValueRef::Text(b),
            Value::Binary(b) => ValueRef::Binary(b),
        }
    }
}

/// Why bytes are not one well-formed TupleData. Offsets count from the tuple's start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TupleError {
    #[error("{what} needs {needed} bytes at offset {offset}, only {remaining} left")]
    Truncated {
        what: &'static str,
        offset: usize,
        needed: usize,
        remaining: usize,
    },
    #[error("invalid tuple column kind byte {value:#04x} at offset {offset}")]
    InvalidKind { offset: usize, value: u8 },
    #[error("invalid {what} {value} at offset {offset} ({remaining} bytes remain after it)")]
    InvalidLength {
        what: &'static str,
        offset: usize,
        value: i64,
        remaining: usize,
    },
    #[error("{count} unexpected bytes after the tuple at offset {offset}")]
    Trailing { offset: usize, count: usize },
}

/// A validated TupleData, shared (cloning is a reference count, not a copy).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RawTuple {
    bytes: Bytes,
    columns: u16,
}

impl std::fmt::Debug for RawTuple {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

fn be_u16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

fn be_i32(b: &[u8], at: usize) -> Option<i32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Walks the TupleData at the start of `buf`; returns its length in bytes and its
/// column count. Every length is checked against what remains before it is used.
pub fn measure(buf: &[u8]) -> Result<(usize, u16), TupleError> {
    let n = be_u16(buf, 0).ok_or(TupleError::Truncated {
        what: "tuple column count",
        offset: 0,
        needed: 2,
        remaining: buf.len(),
    })?;
    if n & 0x8000 != 0 || usize::from(n) > buf.len() - 2 {
        return Err(TupleError::InvalidLength {
            what: "tuple column count",
            offset: 0,
            value: i64::from(n as i16),
            remaining: buf.len() - 2,
        });
    }
    let mut pos = 2usize;
    for _ in 0..n {
        let Some(&k) = buf.get(pos) else {
            return Err(TupleError::Truncated {
                what: "tuple column kind",
                offset: pos,
                needed: 1,
                remaining: 0,
            });
        };
        match k {
            kind::NULL | kind::UNCHANGED_TOAST => pos += 1,
            kind::TEXT | kind::BINARY => {
                let at = pos + 1;
                let len = be_i32(buf, at).ok_or(TupleError::Truncated {
                    what: "value length",
                    offset: at,
                    needed: 4,
                    remaining: buf.len().saturating_sub(at),
                })?;
                let remaining = buf.len() - at - 4;
                let len = usize::try_from(len)
                    .ok()
                    .filter(|l| *l <= remaining)
                    .ok_or(TupleError::InvalidLength {
                        what: "value length",
                        offset: at,
                        value: i64::from(len),
                        remaining,
                    })?;
                pos = at + 4 + len;
            }
            other => {
                return Err(TupleError::InvalidKind {
                    offset: pos,
                    value: other,
                })
            }
        }
    }
    Ok((pos, n))
}

impl RawTuple {
    /// Validates `bytes` as exactly one TupleData.
    pub fn parse(bytes: Bytes) -> Result<RawTuple, TupleError> {
        let (len, columns) = measure(&bytes)?;
        if len != bytes.len() {
            return Err(TupleError::Trailing {
                offset: len,
                count: bytes.len() - len,
            });
        }
        Ok(RawTuple { bytes, columns })
    }

    /// The tuple at the start of `buf` (a slice of it, no copy) and its length.
    pub fn parse_prefix(buf: &Bytes) -> Result<(RawTuple, usize), TupleError> {
        let (len, columns) = measure(buf)?;
        Ok((
            RawTuple {
                bytes: buf.slice(..len),
                columns,
            },
            len,
        ))
    }

    /// Encodes owned values (tests, test doubles, the spool's tools).
    pub fn from_values(values: &[Value]) -> RawTuple {
        let mut out = Vec::with_capacity(2 + values.len() * 8);
        write_values(values.iter().map(Value::as_ref), &mut out);
        let columns = u16::try_from(values.len()).unwrap_or(u16::MAX);
        RawTuple {
            bytes: Bytes::from(out),
            columns,
        }
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        usize::from(self.columns)
    }

    pub fn is_empty(&self) -> bool {
        self.columns == 0
    }

    /// The TupleData bytes, as sent.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The shared buffer.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The columns in order.
    pub fn iter(&self) -> TupleIter<'_> {
        TupleIter {
            buf: &self.bytes,
            pos: 2,
            left: self.columns,
        }
    }

    /// Column `i` (walks the columns before it).
    pub fn get(&self, i: usize) -> Option<ValueRef<'_>> {
        self.iter().nth(i)
    }

    /// Every column as a [`Value`] sharing this tuple's bytes (no copy of the data).
    pub fn to_values(&self) -> Vec<Value> {
        let mut out = Vec::with_capacity(self.len());
        let mut it = self.iter();
        while let Some((v, off, len)) = it.next_span() {
            let (off, len) = (off as usize, len as usize);
            out.push(match v {
                ValueRef::Null => Value::Null,
                ValueRef::UnchangedToast => Value::UnchangedToast,
                ValueRef::Text(_) => Value::Text(self.bytes.slice(off..off + len)),
                ValueRef::Binary(_) => Value::Binary(self.bytes.slice(off..off + len)),
            });
        }
        out
    }
}

impl From<Vec<Value>> for RawTuple {
    fn from(v: Vec<Value>) -> Self {
        RawTuple::from_values(&v)
    }
}

impl PartialEq<Vec<Value>> for RawTuple {
    fn eq(&self, other: &Vec<Value>) -> bool {
        self.len() == other.len() && self.iter().zip(other).all(|(a, b)| a == b.as_ref())
    }
}

/// Appends TupleData for `values`.
pub fn write_values<'a>(values: impl ExactSizeIterator<Item = ValueRef<'a>>, out: &mut Vec<u8>) {
    let n = u16::try_from(values.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&n.to_be_bytes());
    for v in values.take(usize::from(n)) {
        match v {
            ValueRef::Null => out.push(kind::NULL),
            ValueRef::UnchangedToast => out.push(kind::UNCHANGED_TOAST),
            ValueRef::Text(b) | ValueRef::Binary(b) => {
                out.push(if matches!(v, ValueRef::Text(_)) {
                    kind::TEXT
                } else {
                    kind::BINARY
                });
                let len = i32::try_from(b.len()).unwrap_or(i32::MAX);
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&b[..len as usize]);
            }
        }
    }
}

/// The columns of a validated tuple, in order, each with its position in the bytes.
pub struct TupleIter<'a> {
    buf: &'a [u8],
    pos: usize,
    left: u16,
}

impl<'a> TupleIter<'a> {
    /// The next column with the offset and length of its data in the tuple's bytes
    /// (0, 0 for NULL and unchanged TOAST).
    pub fn next_span(&mut self) -> Option<(ValueRef<'a>, u32, u32)> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let k = *self.buf.get(self.pos)?;
        match k {
            kind::NULL => {
                self.pos += 1;
                Some((ValueRef::Null, 0, 0))
            }
            kind::UNCHANGED_TOAST => {
                self.pos += 1;
                Some((ValueRef::UnchangedToast, 0, 0))
            }
            _ => {
                let len = usize::try_from(be_i32(self.buf, self.pos + 1)?).ok()?;
                let start = self.pos + 5;
                let data = self.buf.get(start..start.checked_add(len)?)?;
                self.pos = start + len;
                let v = if k == kind::TEXT {
                    ValueRef::Text(data)
                } else {
                    ValueRef::Binary(data)
                };
                Some((v, start as u32, len as u32))
            }
        }
    }
}

impl<'a> Iterator for TupleIter<'a> {
    type Item = ValueRef<'a>;

    fn next(&mut self) -> Option<ValueRef<'a>> {
        self.next_span().map(|(v, _, _)| v)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::from(self.left), Some(usize::from(self.left)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Value> {
        vec![
            Value::Text(b"1".to_vec().into()),
            Value::Null,
            Value::UnchangedToast,
            Value::Binary(vec![0, 1, 2].into()),
            Value::Text(Vec::new().into()),
        ]
    }

    #[test]
    fn values_round_trip_and_spans_point_at_the_data() {
        let t = RawTuple::from_values(&sample());
        assert_eq!(t.len(), 5);
        assert_eq!(t.to_values(), sample());
        assert_eq!(t, sample());
        let again = RawTuple::parse(t.bytes().clone()).unwrap();
        assert_eq!(again, t);
        let mut it = t.iter();
        let (v, off, len) = it.next_span().unwrap();
        assert_eq!(v, ValueRef::Text(b"1"));
        assert_eq!(&t.as_bytes()[off as usize..(off + len) as usize], b"1");
        assert_eq!(t.get(3), Some(ValueRef::Binary(&[0, 1, 2])));
        assert_eq!(t.get(5), None);
    }

    #[test]
    fn every_truncation_and_trailing_byte_is_an_error() {
        let t = RawTuple::from_values(&sample());
        let b = t.as_bytes();
        for len in 0..b.len() {
            assert!(
                RawTuple::parse(Bytes::copy_from_slice(&b[..len])).is_err(),
                "{len}"
            );
        }
        let mut more = b.to_vec();
        more.push(0);
        assert!(matches!(
            RawTuple::parse(Bytes::from(more)),
            Err(TupleError::Trailing { count: 1, .. })
        ));
    }

    #[test]
    fn bad_kinds_and_lengths_are_errors_not_panics() {
        assert!(matches!(
            RawTuple::parse(Bytes::from_static(&[0, 1, b'x'])),
            Err(TupleError::InvalidKind { offset: 2, .. })
        ));
        assert!(
            RawTuple::parse(Bytes::from_static(&[0, 1, b't', 0xff, 0xff, 0xff, 0xff])).is_err()
        );
        assert!(RawTuple::parse(Bytes::from_static(&[0x80, 0])).is_err());
        let (p, len) = RawTuple::parse_prefix(&Bytes::from_static(&[0, 1, b'n', 9, 9])).unwrap();
        assert_eq!((p.len(), len), (1, 3));
    }
}
