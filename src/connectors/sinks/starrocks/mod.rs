//! StarRocks sink: the [`LoadSink`](crate::pipeline::loader::LoadSink) implementation
//! (`sink`), the Stream Load client (`stream_load`: I/O, retries) and its pure
//! reply classification (`reply`), PostgreSQL → StarRocks type mapping and value
//! conversion (`types`), CSV bodies (`csv`), target table checks/DDL over the FE's MySQL
//! port (`tables`) and the sink's PostgreSQL catalog connection (`catalog`). Keeps
//! invariants 5, 6, 11 and 13 and the "Row semantics".

pub mod catalog;
pub mod csv;
pub mod reply;
pub mod sink;
pub mod stream_load;
pub mod tables;
pub mod types;

pub use reply::{FailureKind, LoadStatus, RejectReason};
pub use sink::StarRocksLoadSink;
pub use stream_load::{
    classify_fail, FailClass, LoadFormat, LoadOutcome, LoadRequest, RejectedRows, RetryPolicy,
    SinkError, StreamLoadClient,
};
pub use tables::{target_table_name, TableAdmin, TableError};
pub use types::{
    map_column, map_relation, to_csv_field, to_json, write_json_value, ColumnMapping, ConvertError,
    MappingError, SrType,
};
