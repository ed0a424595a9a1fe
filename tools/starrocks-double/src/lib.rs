//! StarRocks test double: a faithful stand-in for the FE (HTTP :8030, MySQL :9030) and BE
//! (HTTP :8040) for dbmazz's tests, benchmarks and demo. A test tool, not a database.
