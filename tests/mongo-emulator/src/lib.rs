//! In-memory MongoDB 7.0 single-node replica set speaking the wire protocol, for tests
//! and `datasync demo`. PUBLIC API FROZEN (tests and the demo depend on it).

pub mod query;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// How to start an emulator.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Address to bind; port 0 picks a free port. Default `127.0.0.1:0`.
    pub bind: SocketAddr,
    /// Replica set name reported by `hello`. Default `rs0`.
    pub replica_set: String,
    /// Change events retained for resuming; older tokens → 286. Default 1,000,000.
    pub history_limit: usize,
    /// `host:port` advertised in `hello` (`me`, `hosts`, `primary`); default: the bound
    /// address as `127.0.0.1:PORT`.
    pub advertised_host: Option<String>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            replica_set: "rs0".into(),
            history_limit: 1_000_000,
            advertised_host: None,
        }
    }
}

/// Operation counters, for tests that count server-side work (e.g. no echo writes).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// Commands served, by command name (`insert`, `update`, `find`, `getMore`…).
    pub commands: BTreeMap<String, u64>,
    /// Write statements executed per namespace `db.coll` (each insert document, update
    /// or delete statement counts one, whether or not it changed anything).
    pub write_statements: BTreeMap<String, u64>,
    /// Documents actually changed per namespace (inserted, modified or deleted; a no-op
    /// update does not count).
    pub documents_changed: BTreeMap<String, u64>,
}

/// Cloneable control handle: fault injection and counters. Usable from any thread.
#[derive(Clone)]
pub struct EmulatorHandle {
    _private: (),
}

impl EmulatorHandle {
    /// Close every client connection now (clients see a network error).
    pub fn close_all_connections(&self) {
        todo!()
    }
    /// Fail the next `times` commands named `command` with error `code` (with the
    /// labels MongoDB attaches to that code, e.g. ResumableChangeStreamError,
    /// RetryableWriteError).
    pub fn fail_command(&self, command: &str, code: i32, times: u32) {
        let _ = (command, code, times);
        todo!()
    }
    /// Delay every reply by `delay` (zero to stop).
    pub fn set_reply_delay(&self, delay: Duration) {
        let _ = delay;
        todo!()
    }
    /// Forget all change-stream history before now: resuming from an older token → 286.
    pub fn forget_history(&self) {
        todo!()
    }
    /// Snapshot of the counters.
    pub fn counters(&self) -> Counters {
        todo!()
    }
}

/// A running emulator. Dropping it does not stop it; call [`Emulator::shutdown`].
pub struct Emulator {
    _private: (),
}

impl Emulator {
    /// Bind and start serving on the current tokio runtime.
    pub async fn start(config: EmulatorConfig) -> std::io::Result<Emulator> {
        let _ = config;
        todo!()
    }
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        todo!()
    }
    /// `mongodb://127.0.0.1:PORT/?replicaSet=rs0` (the advertised host).
    pub fn uri(&self) -> String {
        todo!()
    }
    /// Fault injection and counters.
    pub fn handle(&self) -> EmulatorHandle {
        todo!()
    }
    /// Stop accepting, close connections, wait for tasks to end.
    pub async fn shutdown(self) {
        todo!()
    }
}
