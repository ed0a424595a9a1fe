//! Property and fuzz tests of the pgoutput parser and decoder: round trips of random valid
//! messages, random bytes, and mutated seed messages from `tests/corpus/pgoutput/` (truncations,
//! bit flips, corrupted length fields) must never panic, and whatever parses must re-encode exactly.

use std::path::PathBuf;

use dbmazz::connectors::sources::postgres::pgoutput::messages::{tag, StreamAbortInfo};
use dbmazz::connectors::sources::postgres::pgoutput::{
    encode, parse, Decoder, PgOutputMessage, RelationColumn,
};
use dbmazz::core::{Lsn, OldKind, ReplicaIdentity, Tuple, Value};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Strategies

fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), 0..8)
        .prop_map(String::from_iter)
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(Value::UnchangedToast),
        bytes(12).prop_map(|b| Value::Text(b.into())),
        bytes(12).prop_map(|b| Value::Binary(b.into())),
    ]
}

fn tuple() -> impl Strategy<Value = Tuple> {
    prop::collection::vec(value(), 0..6)
}

fn old_kind() -> impl Strategy<Value = OldKind> {
    prop_oneof![Just(OldKind::Key), Just(OldKind::Full)]
}

fn lsn() -> impl Strategy<Value = Lsn> {
    any::<u64>().prop_map(Lsn)
}

fn replica_identity() -> impl Strategy<Value = ReplicaIdentity> {
    prop_oneof![
        Just(ReplicaIdentity::Default),
        Just(ReplicaIdentity::Nothing),
        Just(ReplicaIdentity::Full),
        Just(ReplicaIdentity::Index),
    ]
}

fn column() -> impl Strategy<Value = RelationColumn> {
    (any::<u8>(), name(), any::<u32>(), any::<i32>()).prop_map(
        |(flags, name, type_oid, type_modifier)| RelationColumn {
            flags,
            name,
            type_oid,
            type_modifier,
        },
    )
}

/// Any valid message; `xid` fields are `Some` or `None` at random (in or out of a segment).
fn message() -> impl Strategy<Value = PgOutputMessage> {
    let sxid = || proptest::option::of(any::<u32>());
    prop_oneof![
        (lsn(), any::<i64>(), any::<u32>()).prop_map(|(final_lsn, commit_time, xid)| {
            PgOutputMessage::Begin {
                final_lsn,
                commit_time,
                xid,
            }
        }),
        (any::<u8>(), lsn(), lsn(), any::<i64>()).prop_map(
            |(flags, commit_lsn, end_lsn, commit_time)| PgOutputMessage::Commit {
                flags,
                commit_lsn,
                end_lsn,
                commit_time,
            }
        ),
        (lsn(), name()).prop_map(|(commit_lsn, name)| PgOutputMessage::Origin { commit_lsn, name }),
        (
            sxid(),
            any::<u32>(),
            name(),
            name(),
            replica_identity(),
            prop::collection::vec(column(), 0..5)
        )
            .prop_map(|(xid, id, namespace, name, replica_identity, columns)| {
                PgOutputMessage::Relation {
                    xid,
                    id,
                    namespace,
                    name,
                    replica_identity,
                    columns,
                }
            }),
        (sxid(), any::<u32>(), name(), name()).prop_map(|(xid, id, namespace, name)| {
            PgOutputMessage::Type {
                xid,
                id,
                namespace,
                name,
            }
        }),
        (sxid(), any::<u32>(), tuple()).prop_map(|(xid, relation, new)| PgOutputMessage::Insert {
            xid,
            relation,
            new
        }),
        (
            sxid(),
            any::<u32>(),
            proptest::option::of((old_kind(), tuple())),
            tuple()
        )
            .prop_map(|(xid, relation, old, new)| PgOutputMessage::Update {
                xid,
                relation,
                old,
                new,
            }),
        (sxid(), any::<u32>(), old_kind(), tuple()).prop_map(|(xid, relation, k, t)| {
            PgOutputMessage::Delete {
                xid,
                relation,
                old: (k, t),
            }
        }),
        (
            sxid(),
            any::<u8>(),
            prop::collection::vec(any::<u32>(), 0..6)
        )
            .prop_map(|(xid, options, relations)| PgOutputMessage::Truncate {
                xid,
                options,
                relations,
            }),
        (sxid(), any::<u8>(), lsn(), name(), bytes(20)).prop_map(
            |(xid, flags, lsn, prefix, content)| PgOutputMessage::Message {
                xid,
                flags,
                lsn,
                prefix,
                content,
            }
        ),
        (any::<u32>(), any::<bool>())
            .prop_map(|(xid, first_segment)| PgOutputMessage::StreamStart { xid, first_segment }),
        Just(PgOutputMessage::StreamStop),
        (any::<u32>(), any::<u8>(), lsn(), lsn(), any::<i64>()).prop_map(
            |(xid, flags, commit_lsn, end_lsn, commit_time)| PgOutputMessage::StreamCommit {
                xid,
                flags,
                commit_lsn,
                end_lsn,
                commit_time,
            }
        ),
        (
            any::<u32>(),
            any::<u32>(),
            proptest::option::of((lsn(), any::<i64>()))
        )
            .prop_map(|(xid, subxid, abort)| PgOutputMessage::StreamAbort {
                xid,
                subxid,
                abort: abort.map(|(abort_lsn, abort_time)| StreamAbortInfo {
                    abort_lsn,
                    abort_time
                }),
            }),
        any::<u8>()
            .prop_filter("unknown tag", |t| !tag::KNOWN.contains(t))
            .prop_map(|tag| PgOutputMessage::Unknown { tag }),
    ]
}

/// A change to a valid encoding.
#[derive(Debug, Clone)]
enum Mutation {
    Truncate(usize),
    FlipBit(usize, u8),
    SetByte(usize, u8),
    /// Overwrite 4 bytes (an Int32 length/count) with a hostile value.
    Length32(usize, u32),
    /// Overwrite 2 bytes (an Int16 count) with a hostile value.
    Length16(usize, u16),
    Insert(usize, u8),
    Remove(usize),
}

fn hostile32() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0x7FFF_FFFF),
        Just(0xFFFF_FFFF),
        Just(0x8000_0000),
        Just(0x0000_FFFF),
        Just(0),
        Just(1),
        any::<u32>(),
    ]
}

fn hostile16() -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(0x7FFF),
        Just(0xFFFF),
        Just(0x8000),
        Just(0),
        any::<u16>()
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let pos = any::<prop::sample::Index>();
    prop_oneof![
        pos.clone()
            .prop_map(|i| Mutation::Truncate(i.index(usize::MAX))),
        (pos.clone(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i.index(usize::MAX), b)),
        (pos.clone(), any::<u8>()).prop_map(|(i, v)| Mutation::SetByte(i.index(usize::MAX), v)),
        (pos.clone(), hostile32()).prop_map(|(i, v)| Mutation::Length32(i.index(usize::MAX), v)),
        (pos.clone(), hostile16()).prop_map(|(i, v)| Mutation::Length16(i.index(usize::MAX), v)),
        (pos.clone(), any::<u8>()).prop_map(|(i, v)| Mutation::Insert(i.index(usize::MAX), v)),
        pos.prop_map(|i| Mutation::Remove(i.index(usize::MAX))),
    ]
}

fn apply(buf: &mut Vec<u8>, m: &Mutation) {
    if buf.is_empty() {
        return;
    }
    let len = buf.len();
    match *m {
        Mutation::Truncate(p) => buf.truncate(p % len),
        Mutation::FlipBit(p, b) => buf[p % len] ^= 1 << b,
        Mutation::SetByte(p, v) => buf[p % len] = v,
        Mutation::Length32(p, v) => {
            for (k, b) in v.to_be_bytes().into_iter().enumerate() {
                if let Some(slot) = buf.get_mut(p % len + k) {
                    *slot = b;
                }
            }
        }
        Mutation::Length16(p, v) => {
            for (k, b) in v.to_be_bytes().into_iter().enumerate() {
                if let Some(slot) = buf.get_mut(p % len + k) {
                    *slot = b;
                }
            }
        }
        Mutation::Insert(p, v) => buf.insert(p % (len + 1), v),
        Mutation::Remove(p) => {
            buf.remove(p % len);
        }
    }
}

/// Parsing must never panic; whatever parses must be exactly what the bytes say: the
/// encoder writes the same bytes back (only an unknown tag's payload is not looked at).
fn check_parse(buf: &[u8], in_stream: bool) {
    match parse(buf, in_stream) {
        Ok(PgOutputMessage::Unknown { tag }) => {
            assert_eq!(Some(&tag), buf.first());
            assert!(!tag::KNOWN.contains(&tag));
        }
        Ok(msg) => {
            assert_eq!(
                encode(&msg),
                buf,
                "parsed {msg:?} does not re-encode to its input"
            );
            if msg.stream_xid().is_some() {
                assert!(in_stream);
            }
        }
        Err(e) => {
            // Errors render (and name their message/field); no panic in Display.
            assert!(!e.to_string().is_empty());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Corpus

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/pgoutput")
}

/// One seed per message kind (and per in-stream variant); file names ending in `_stream`
/// hold messages that are parsed inside a stream segment.
fn seeds() -> Vec<(&'static str, PgOutputMessage)> {
    let t = |s: &str| Value::Text(s.as_bytes().to_vec().into());
    vec![
        (
            "begin",
            PgOutputMessage::Begin {
                final_lsn: Lsn(0x16_B374_D848),
                commit_time: 760_000_000_000_000,
                xid: 747,
            },
        ),
        (
            "commit",
            PgOutputMessage::Commit {
                flags: 0,
                commit_lsn: Lsn(0x16_B374_D848),
                end_lsn: Lsn(0x16_B374_D878),
                commit_time: 760_000_000_000_000,
            },
        ),
        (
            "origin",
            PgOutputMessage::Origin {
                commit_lsn: Lsn(0x100),
                name: "node1".into(),
            },
        ),
        (
            "relation",
            PgOutputMessage::Relation {
                xid: None,
                id: 16384,
                namespace: "public".into(),
                name: "orders".into(),
                replica_identity: ReplicaIdentity::Default,
                columns: vec![
                    RelationColumn {
                        flags: 1,
                        name: "id".into(),
                        type_oid: 20,
                        type_modifier: -1,
                    },
                    RelationColumn {
                        flags: 0,
                        name: "note".into(),
                        type_oid: 25,
                        type_modifier: -1,
                    },
                    RelationColumn {
                        flags: 0,
                        name: "amount".into(),
                        type_oid: 1700,
                        type_modifier: 0x000C_0006,
                    },
                ],
            },
        ),
        (
            "relation_stream",
            PgOutputMessage::Relation {
                xid: Some(1001),
                id: 16385,
                namespace: String::new(),
                name: "pg_t".into(),
                replica_identity: ReplicaIdentity::Full,
                columns: vec![RelationColumn {
                    flags: 0,
                    name: "a".into(),
                    type_oid: 23,
                    type_modifier: -1,
                }],
            },
        ),
        (
            "type",
            PgOutputMessage::Type {
                xid: None,
                id: 16400,
                namespace: "public".into(),
                name: "mood".into(),
            },
        ),
        (
            "type_stream",
            PgOutputMessage::Type {
                xid: Some(1001),
                id: 16400,
                namespace: "public".into(),
                name: "mood".into(),
            },
        ),
        (
            "insert",
            PgOutputMessage::Insert {
                xid: None,
                relation: 16384,
                new: vec![
                    t("1"),
                    Value::Null,
                    Value::UnchangedToast,
                    Value::Binary(vec![0, 1, 2, 0xFF].into()),
                ],
            },
        ),
        (
            "insert_stream",
            PgOutputMessage::Insert {
                xid: Some(1002),
                relation: 16384,
                new: vec![t("2"), t("tab\there\nnewline"), t("12.500000")],
            },
        ),
        (
            "update",
            PgOutputMessage::Update {
                xid: None,
                relation: 16384,
                old: None,
                new: vec![t("1"), t("x"), Value::UnchangedToast],
            },
        ),
        (
            "update_key",
            PgOutputMessage::Update {
                xid: None,
                relation: 16384,
                old: Some((OldKind::Key, vec![t("1"), Value::Null, Value::Null])),
                new: vec![t("3"), t("x"), Value::UnchangedToast],
            },
        ),
        (
            "update_full_stream",
            PgOutputMessage::Update {
                xid: Some(1001),
                relation: 16384,
                old: Some((OldKind::Full, vec![t("1"), t("old"), t("1.0")])),
                new: vec![t("1"), t("new"), t("2.0")],
            },
        ),
        (
            "delete_key",
            PgOutputMessage::Delete {
                xid: None,
                relation: 16384,
                old: (OldKind::Key, vec![t("1"), Value::Null, Value::Null]),
            },
        ),
        (
            "delete_full_stream",
            PgOutputMessage::Delete {
                xid: Some(1003),
                relation: 16384,
                old: (OldKind::Full, vec![t("1"), t("a"), t("0")]),
            },
        ),
        (
            "truncate",
            PgOutputMessage::Truncate {
                xid: None,
                options: 3,
                relations: vec![16384, 16385],
            },
        ),
        (
            "truncate_stream",
            PgOutputMessage::Truncate {
                xid: Some(1001),
                options: 0,
                relations: vec![16384],
            },
        ),
        (
            "message_transactional",
            PgOutputMessage::Message {
                xid: None,
                flags: 1,
                lsn: Lsn(0x2000),
                prefix: "audit".into(),
                content: b"{\"k\":1}".to_vec(),
            },
        ),
        (
            "message_nontransactional",
            PgOutputMessage::Message {
                xid: None,
                flags: 0,
                lsn: Lsn(0x2008),
                prefix: "heartbeat".into(),
                content: vec![],
            },
        ),
        (
            "message_stream",
            PgOutputMessage::Message {
                xid: Some(1001),
                flags: 1,
                lsn: Lsn(0x2010),
                prefix: "p".into(),
                content: b"z".to_vec(),
            },
        ),
        (
            "stream_start",
            PgOutputMessage::StreamStart {
                xid: 1001,
                first_segment: true,
            },
        ),
        ("stream_stop", PgOutputMessage::StreamStop),
        (
            "stream_commit",
            PgOutputMessage::StreamCommit {
                xid: 1001,
                flags: 0,
                commit_lsn: Lsn(0x1_0000_0000),
                end_lsn: Lsn(0x1_0000_0030),
                commit_time: 5,
            },
        ),
        (
            "stream_abort",
            PgOutputMessage::StreamAbort {
                xid: 1001,
                subxid: 1003,
                abort: None,
            },
        ),
        (
            "stream_abort_v4",
            PgOutputMessage::StreamAbort {
                xid: 1001,
                subxid: 1001,
                abort: Some(StreamAbortInfo {
                    abort_lsn: Lsn(0x3000),
                    abort_time: 9,
                }),
            },
        ),
    ]
}

fn in_stream(name: &str) -> bool {
    name.ends_with("_stream")
}

/// The committed corpus holds exactly the encoder's bytes for every seed. Set
/// `PGOUTPUT_WRITE_CORPUS=1` to (re)write it after changing the seeds.
#[test]
fn corpus_matches_seeds() {
    let dir = corpus_dir();
    let write = std::env::var_os("PGOUTPUT_WRITE_CORPUS").is_some();
    if write {
        std::fs::create_dir_all(&dir).unwrap();
    }
    for (name, msg) in seeds() {
        let path = dir.join(format!("{name}.bin"));
        let bytes = encode(&msg);
        if write {
            std::fs::write(&path, &bytes).unwrap();
        }
        let stored = std::fs::read(&path).unwrap_or_else(|e| {
            panic!("{}: {e} (run with PGOUTPUT_WRITE_CORPUS=1)", path.display())
        });
        assert_eq!(stored, bytes, "{name}: corpus file differs from its seed");
        assert_eq!(parse(&stored, in_stream(name)).unwrap(), msg, "{name}");
    }
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(files, seeds().len(), "stray files in {}", dir.display());
}

fn corpus() -> &'static [(bool, Vec<u8>)] {
    static CORPUS: std::sync::OnceLock<Vec<(bool, Vec<u8>)>> = std::sync::OnceLock::new();
    CORPUS.get_or_init(load_corpus)
}

fn load_corpus() -> Vec<(bool, Vec<u8>)> {
    let mut out: Vec<(bool, Vec<u8>)> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            (in_stream(&stem), std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(out.len() >= 20, "corpus too small: {}", out.len());
    out
}

/// Every corpus message decodes in a decoder placed in the state it belongs to.
#[test]
fn corpus_decodes_in_context() {
    for (stream, bytes) in corpus() {
        let stream = *stream;
        let mut d = Decoder::new();
        let tag = bytes[0];
        let start = encode(&PgOutputMessage::StreamStart {
            xid: 1001,
            first_segment: true,
        });
        let begin = encode(&PgOutputMessage::Begin {
            final_lsn: Lsn(1),
            commit_time: 0,
            xid: 1,
        });
        if stream || tag == tag::STREAM_STOP {
            d.decode(Lsn(0), &start).unwrap();
        } else if ![
            tag::BEGIN,
            tag::STREAM_START,
            tag::STREAM_COMMIT,
            tag::STREAM_ABORT,
        ]
        .contains(&tag)
        {
            // Everything else occurs inside a transaction.
            d.decode(Lsn(0), &begin).unwrap();
        }
        let r = d.decode(Lsn(0x10), bytes);
        assert!(r.is_ok(), "{:?}: {r:?}", parse(bytes, stream));
    }
}

// ---------------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn round_trip(msg in message()) {
        let bytes = encode(&msg);
        let in_stream = msg.stream_xid().is_some();
        prop_assert_eq!(parse(&bytes, in_stream), Ok(msg.clone()));
        prop_assert_eq!(bytes[0], msg.tag());
    }

    #[test]
    fn random_bytes_never_panic(buf in bytes(64), in_stream in any::<bool>()) {
        check_parse(&buf, in_stream);
    }

    #[test]
    fn random_bytes_after_known_tag_never_panic(
        t in prop::sample::select(tag::KNOWN.to_vec()),
        rest in bytes(48),
        in_stream in any::<bool>(),
    ) {
        let mut buf = vec![t];
        buf.extend_from_slice(&rest);
        check_parse(&buf, in_stream);
    }

    #[test]
    fn mutated_valid_messages_never_panic(
        msg in message(),
        mutations in prop::collection::vec(mutation(), 1..4),
        in_stream in any::<bool>(),
    ) {
        let mut buf = encode(&msg);
        for m in &mutations {
            apply(&mut buf, m);
        }
        check_parse(&buf, in_stream);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5_000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_corpus_never_panics(
        pick in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..5),
        in_stream in any::<bool>(),
    ) {
        let corpus = corpus();
        let (_, seed) = &corpus[pick.index(corpus.len())];
        let mut buf = seed.clone();
        for m in &mutations {
            apply(&mut buf, m);
        }
        check_parse(&buf, in_stream);
    }

    /// A decoder fed any sequence of valid and mutated payloads never panics, and its
    /// stream flag follows the successful Stream Start/Stop events.
    #[test]
    fn decoder_never_panics_on_sequences(
        steps in prop::collection::vec(
            (message(), proptest::option::of(mutation())), 1..24),
    ) {
        let mut d = Decoder::new();
        for (i, (msg, m)) in steps.into_iter().enumerate() {
            let mut buf = encode(&msg);
            if let Some(m) = m {
                apply(&mut buf, &m);
            }
            let was_in_stream = d.in_stream();
            match d.decode(Lsn(i as u64), &buf) {
                Ok(Some(dbmazz::core::ReaderEvent::StreamStart { .. })) => prop_assert!(d.in_stream()),
                Ok(Some(dbmazz::core::ReaderEvent::StreamStop)) => prop_assert!(!d.in_stream()),
                Ok(Some(dbmazz::core::ReaderEvent::Change(c))) => {
                    prop_assert_eq!(c.lsn, Lsn(i as u64));
                    if !was_in_stream {
                        prop_assert_eq!(c.xid, c.subxid);
                    }
                }
                Ok(_) => {}
                Err(_) => prop_assert_eq!(d.in_stream(), was_in_stream),
            }
        }
    }
}

/// The mutation fuzzing is not vacuous: mutated messages both parse (to something that
/// re-encodes exactly) and fail, and hostile length fields are among the failures.
#[test]
fn mutations_reach_both_outcomes() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
    );
    let strategy = (message(), mutation());
    let (mut ok, mut err, mut length_errors) = (0, 0, 0);
    for _ in 0..3_000 {
        let (msg, m) = strategy.new_tree(&mut runner).unwrap().current();
        let mut buf = encode(&msg);
        apply(&mut buf, &m);
        check_parse(&buf, msg.stream_xid().is_some());
        match parse(&buf, msg.stream_xid().is_some()) {
            Ok(_) => ok += 1,
            Err(e) => {
                err += 1;
                if matches!(
                    e,
                    dbmazz::connectors::sources::postgres::pgoutput::ParseError::InvalidLength { .. }
                ) {
                    length_errors += 1;
                }
            }
        }
    }
    assert!(ok > 300 && err > 300, "ok {ok}, err {err}");
    assert!(length_errors > 50, "length errors {length_errors}");
}

/// One unit of a generated replication session.
#[derive(Debug, Clone)]
enum Block {
    /// Begin, `n` inserts, Commit.
    Plain { xid: u32, n: usize },
    /// Stream Start, changes carrying the given (sub)xids, Stream Stop, then optionally
    /// Stream Commit (`Some(true)`) or Stream Abort (`Some(false)`).
    Segment {
        xid: u32,
        first: bool,
        subxids: Vec<u32>,
        end: Option<bool>,
    },
}

fn block() -> impl Strategy<Value = Block> {
    prop_oneof![
        (1u32..1000, 0usize..4).prop_map(|(xid, n)| Block::Plain { xid, n }),
        (
            1000u32..2000,
            any::<bool>(),
            prop::collection::vec(0u32..3, 0..4),
            proptest::option::of(any::<bool>())
        )
            .prop_map(|(xid, first, subs, end)| Block::Segment {
                xid,
                first,
                subxids: subs.into_iter().map(|s| xid + s * 5000).collect(),
                end,
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5_000, ..ProptestConfig::default() })]

    /// Model test: a valid session (plain transactions and stream segments, interleaved)
    /// decodes to exactly the events the model expects, with top-level xid and subxid right.
    #[test]
    fn valid_sessions_decode_as_modelled(blocks in prop::collection::vec(block(), 1..8)) {
        use dbmazz::core::{Change, ChangeOp, CommitInfo, ReaderEvent};
        let mut wire: Vec<PgOutputMessage> = Vec::new();
        let mut expected: Vec<ReaderEvent> = Vec::new();
        let row = |i: usize| vec![Value::Text(i.to_string().into_bytes().into())];
        for b in &blocks {
            match b {
                Block::Plain { xid, n } => {
                    let base = wire.len() as u64;
                    wire.push(PgOutputMessage::Begin { final_lsn: Lsn(base), commit_time: 1, xid: *xid });
                    expected.push(ReaderEvent::Begin { xid: *xid, final_lsn: Lsn(base), commit_time: 1 });
                    for i in 0..*n {
                        let lsn = Lsn(wire.len() as u64);
                        wire.push(PgOutputMessage::Insert { xid: None, relation: 7, new: row(i) });
                        expected.push(ReaderEvent::Change(Change {
                            xid: *xid, subxid: *xid, relation: 7, lsn,
                            op: ChangeOp::Insert { new: row(i) },
                        }));
                    }
                    wire.push(PgOutputMessage::Commit {
                        flags: 0, commit_lsn: Lsn(base), end_lsn: Lsn(base + 1), commit_time: 1,
                    });
                    expected.push(ReaderEvent::Commit(CommitInfo {
                        xid: *xid, commit_lsn: Lsn(base), end_lsn: Lsn(base + 1), commit_time: 1,
                    }));
                }
                Block::Segment { xid, first, subxids, end } => {
                    wire.push(PgOutputMessage::StreamStart { xid: *xid, first_segment: *first });
                    expected.push(ReaderEvent::StreamStart { xid: *xid, first_segment: *first });
                    for (i, sub) in subxids.iter().enumerate() {
                        let lsn = Lsn(wire.len() as u64);
                        let old = (OldKind::Key, row(i));
                        wire.push(PgOutputMessage::Delete { xid: Some(*sub), relation: 9, old: old.clone() });
                        expected.push(ReaderEvent::Change(Change {
                            xid: *xid, subxid: *sub, relation: 9, lsn,
                            op: ChangeOp::Delete { old },
                        }));
                    }
                    wire.push(PgOutputMessage::StreamStop);
                    expected.push(ReaderEvent::StreamStop);
                    match end {
                        Some(true) => {
                            let info = CommitInfo {
                                xid: *xid, commit_lsn: Lsn(5), end_lsn: Lsn(6), commit_time: 2,
                            };
                            wire.push(PgOutputMessage::StreamCommit {
                                xid: *xid, flags: 0, commit_lsn: Lsn(5), end_lsn: Lsn(6), commit_time: 2,
                            });
                            expected.push(ReaderEvent::StreamCommit(info));
                        }
                        Some(false) => {
                            let subxid = subxids.last().copied().unwrap_or(*xid);
                            wire.push(PgOutputMessage::StreamAbort { xid: *xid, subxid, abort: None });
                            expected.push(ReaderEvent::StreamAbort { xid: *xid, subxid });
                        }
                        None => {}
                    }
                }
            }
        }
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for (i, m) in wire.iter().enumerate() {
            if let Some(ev) = d.decode(Lsn(i as u64), &encode(m)).unwrap() {
                got.push(ev);
            }
        }
        prop_assert_eq!(got, expected);
        prop_assert!(!d.in_stream());
    }
}
