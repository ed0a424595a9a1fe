//! Pure pgoutput decoding (protocol versions 1 and 2), no I/O: `messages` mirrors the wire,
//! `parser` reads one message from bytes, `decoder` tracks transaction/stream state and
//! yields `ReaderEvent`s, `encode` writes messages back (tests, fuzzing, test doubles).

pub mod decoder;
pub mod encode;
pub mod messages;
pub mod parser;

pub use decoder::{Decoder, DecoderState};
pub use encode::encode;
pub use messages::{PgOutputMessage, RelationColumn, StreamAbortInfo};
pub use parser::{parse, ParseError};
