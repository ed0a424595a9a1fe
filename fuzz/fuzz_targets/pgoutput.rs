//! libFuzzer target over one pgoutput payload, parsed both outside and inside a stream
//! segment: parsing must never panic, whatever parses must re-encode to its input, and the
//! decoder must never panic. Seeds: tests/corpus/pgoutput/ (raw payloads, one per file).
#![no_main]

use dbmazz::connectors::sources::postgres::pgoutput::{encode, parse, Decoder, PgOutputMessage};
use dbmazz::core::Lsn;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: &[u8]| {
    for in_stream in [false, true] {
        match parse(payload, in_stream) {
            Ok(PgOutputMessage::Unknown { .. }) | Err(_) => {}
            Ok(msg) => assert_eq!(encode(&msg), payload),
        }
        let mut d = Decoder::new();
        if in_stream {
            let start = PgOutputMessage::StreamStart {
                xid: 1,
                first_segment: true,
            };
            let _ = d.decode(Lsn(0), &encode(&start));
        }
        let _ = d.decode(Lsn(1), payload);
    }
});
