//! StarRocks sink: Stream Load client, type mapping, target table checks.
