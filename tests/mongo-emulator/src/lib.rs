//! In-memory MongoDB 7.0 single-node replica set speaking the wire protocol, for tests
//! and `datasync demo`.

pub mod query;
