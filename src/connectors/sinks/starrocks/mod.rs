//! StarRocks sink: Stream Load client (labels, response checks, retries), PostgreSQL →
//! StarRocks type mapping and value conversion, CSV bodies, and target table checks/DDL
//! over the FE's MySQL port. Keeps invariants 5, 6 and 11 and the "Row semantics".

pub mod csv;
pub mod stream_load;
pub mod tables;
pub mod types;

pub use stream_load::{
    classify_fail, label, FailClass, FilteredLoad, LoadFormat, LoadOutcome, LoadRequest,
    LoadStatus, RetryPolicy, SinkError, StreamLoadClient,
};
pub use tables::{target_table_name, TableAdmin, TableError};
pub use types::{
    map_column, map_relation, to_csv_field, to_json, write_json_value, ColumnMapping, ConvertError,
    MappingError, SrType,
};
