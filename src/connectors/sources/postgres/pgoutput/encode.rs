//! Writes any [`PgOutputMessage`] back to pgoutput bytes: the inverse of the parser, used by
//! round-trip tests, the fuzz corpus and test doubles. Pure; never used on the live path.
//! Lengths that do not fit the wire's Int16/Int32 are saturated (such a message is invalid).

use crate::core::{Lsn, OldKind, Tuple, Value};

use super::messages::{tuple_kind, PgOutputMessage};

/// Encodes one message. Stream xids are written exactly when the `xid` field is `Some`.
pub fn encode(msg: &PgOutputMessage) -> Vec<u8> {
    let mut out = vec![msg.tag()];
    match msg {
        PgOutputMessage::Begin {
            final_lsn,
            commit_time,
            xid,
        } => {
            lsn(&mut out, *final_lsn);
            out.extend_from_slice(&commit_time.to_be_bytes());
            out.extend_from_slice(&xid.to_be_bytes());
        }
        PgOutputMessage::Commit {
            flags,
            commit_lsn,
            end_lsn,
            commit_time,
        } => {
            out.push(*flags);
            lsn(&mut out, *commit_lsn);
            lsn(&mut out, *end_lsn);
            out.extend_from_slice(&commit_time.to_be_bytes());
        }
        PgOutputMessage::Origin { commit_lsn, name } => {
            lsn(&mut out, *commit_lsn);
            cstring(&mut out, name);
        }
        PgOutputMessage::Relation {
            xid,
            id,
            namespace,
            name,
            replica_identity,
            columns,
        } => {
            stream_xid(&mut out, *xid);
            out.extend_from_slice(&id.to_be_bytes());
            cstring(&mut out, namespace);
            cstring(&mut out, name);
            out.push(replica_identity_byte(*replica_identity));
            count16(&mut out, columns.len());
            for col in columns {
                out.push(col.flags);
                cstring(&mut out, &col.name);
                out.extend_from_slice(&col.type_oid.to_be_bytes());
                out.extend_from_slice(&col.type_modifier.to_be_bytes());
            }
        }
        PgOutputMessage::Type {
            xid,
            id,
            namespace,
            name,
        } => {
            stream_xid(&mut out, *xid);
            out.extend_from_slice(&id.to_be_bytes());
            cstring(&mut out, namespace);
            cstring(&mut out, name);
        }
        PgOutputMessage::Insert { xid, relation, new } => {
            stream_xid(&mut out, *xid);
            out.extend_from_slice(&relation.to_be_bytes());
            out.push(tuple_kind::NEW);
            tuple(&mut out, new);
        }
        PgOutputMessage::Update {
            xid,
            relation,
            old,
            new,
        } => {
            stream_xid(&mut out, *xid);
            out.extend_from_slice(&relation.to_be_bytes());
            if let Some((kind, old)) = old {
                out.push(old_marker(*kind));
                tuple(&mut out, old);
            }
            out.push(tuple_kind::NEW);
            tuple(&mut out, new);
        }
        PgOutputMessage::Delete { xid, relation, old } => {
            stream_xid(&mut out, *xid);
            out.extend_from_slice(&relation.to_be_bytes());
            out.push(old_marker(old.0));
            tuple(&mut out, &old.1);
        }
        PgOutputMessage::Truncate {
            xid,
            options,
            relations,
        } => {
            stream_xid(&mut out, *xid);
            count32(&mut out, relations.len());
            out.push(*options);
            for r in relations {
                out.extend_from_slice(&r.to_be_bytes());
            }
        }
        PgOutputMessage::Message {
            xid,
            flags,
            lsn: at,
            prefix,
            content,
        } => {
            stream_xid(&mut out, *xid);
            out.push(*flags);
            lsn(&mut out, *at);
            cstring(&mut out, prefix);
            count32(&mut out, content.len());
            out.extend_from_slice(content);
        }
        PgOutputMessage::StreamStart { xid, first_segment } => {
            out.extend_from_slice(&xid.to_be_bytes());
            out.push(u8::from(*first_segment));
        }
        PgOutputMessage::StreamStop => {}
        PgOutputMessage::StreamCommit {
            xid,
            flags,
            commit_lsn,
            end_lsn,
            commit_time,
        } => {
            out.extend_from_slice(&xid.to_be_bytes());
            out.push(*flags);
            lsn(&mut out, *commit_lsn);
            lsn(&mut out, *end_lsn);
            out.extend_from_slice(&commit_time.to_be_bytes());
        }
        PgOutputMessage::StreamAbort { xid, subxid, abort } => {
            out.extend_from_slice(&xid.to_be_bytes());
            out.extend_from_slice(&subxid.to_be_bytes());
            if let Some(a) = abort {
                lsn(&mut out, a.abort_lsn);
                out.extend_from_slice(&a.abort_time.to_be_bytes());
            }
        }
        PgOutputMessage::Unknown { .. } => {}
    }
    out
}

fn replica_identity_byte(ri: crate::core::ReplicaIdentity) -> u8 {
    use crate::core::ReplicaIdentity as R;
    match ri {
        R::Default => b'd',
        R::Nothing => b'n',
        R::Full => b'f',
        R::Index => b'i',
    }
}

fn old_marker(kind: OldKind) -> u8 {
    match kind {
        OldKind::Key => tuple_kind::OLD_KEY,
        OldKind::Full => tuple_kind::OLD_FULL,
    }
}

fn lsn(out: &mut Vec<u8>, l: Lsn) {
    out.extend_from_slice(&l.0.to_be_bytes());
}

fn stream_xid(out: &mut Vec<u8>, xid: Option<u32>) {
    if let Some(x) = xid {
        out.extend_from_slice(&x.to_be_bytes());
    }
}

fn cstring(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

fn count16(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&i16::try_from(n).unwrap_or(i16::MAX).to_be_bytes());
}

fn count32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&i32::try_from(n).unwrap_or(i32::MAX).to_be_bytes());
}

fn tuple(out: &mut Vec<u8>, t: &Tuple) {
    count16(out, t.len());
    for v in t {
        match v {
            Value::Null => out.push(tuple_kind::NULL),
            Value::UnchangedToast => out.push(tuple_kind::UNCHANGED_TOAST),
            Value::Text(b) => {
                out.push(tuple_kind::TEXT);
                count32(out, b.len());
                out.extend_from_slice(b);
            }
            Value::Binary(b) => {
                out.push(tuple_kind::BINARY);
                count32(out, b.len());
                out.extend_from_slice(b);
            }
        }
    }
}
