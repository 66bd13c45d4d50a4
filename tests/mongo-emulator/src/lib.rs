//! In-memory MongoDB 7.0 single-node replica set speaking the wire protocol, for tests
//! and `datasync demo`. PUBLIC API FROZEN (tests and the demo depend on it).

pub mod query;

mod changestream;
mod commands;
mod error;
mod failpoint;
mod faults;
mod oplog;
mod server;
mod state;
mod store;
mod token;
mod txn;
mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::state::Shared;

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
    /// Change stream cursors opened, by the namespace their cursor reports: `db.coll`
    /// for a collection, `db.$cmd.aggregate` for a database, `admin.$cmd.aggregate` for
    /// the cluster (a resume reopens, so it counts again).
    pub change_streams_opened: BTreeMap<String, u64>,
}

/// Cloneable control handle: fault injection and counters. Usable from any thread.
#[derive(Clone)]
pub struct EmulatorHandle {
    /// The running server's shared state.
    shared: Arc<Shared>,
}

impl EmulatorHandle {
    /// Close every client connection now (clients see a network error).
    pub fn close_all_connections(&self) {
        self.shared.faults.close_all();
    }
    /// Fail the next `times` commands named `command` with error `code` (with the
    /// labels MongoDB attaches to that code, e.g. ResumableChangeStreamError,
    /// RetryableWriteError).
    pub fn fail_command(&self, command: &str, code: i32, times: u32) {
        self.shared.faults.fail_command(command, code, times);
    }
    /// Delay every reply by `delay` (zero to stop).
    pub fn set_reply_delay(&self, delay: Duration) {
        self.shared.faults.set_delay(delay);
    }
    /// Forget all change-stream history before now: resuming from an older token → 286.
    pub fn forget_history(&self) {
        self.shared.inner().oplog.forget();
    }
    /// Snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.shared.faults.counters()
    }
}

/// A running emulator. Dropping it does not stop it; call [`Emulator::shutdown`].
pub struct Emulator {
    /// Bound address.
    addr: SocketAddr,
    /// Connection string for clients.
    uri: String,
    /// Shared server state.
    shared: Arc<Shared>,
    /// Cancelled by [`Emulator::shutdown`].
    shutdown: CancellationToken,
    /// Accept loop and connection tasks.
    tracker: TaskTracker,
}

impl Emulator {
    /// Bind and start serving on the current tokio runtime.
    pub async fn start(config: EmulatorConfig) -> std::io::Result<Emulator> {
        let listener = tokio::net::TcpListener::bind(config.bind).await?;
        let addr = listener.local_addr()?;
        let advertised = config.advertised_host.clone().unwrap_or_else(|| {
            let ip = if addr.ip().is_unspecified() {
                std::net::IpAddr::from([127, 0, 0, 1])
            } else {
                addr.ip()
            };
            SocketAddr::new(ip, addr.port()).to_string()
        });
        let uri = format!("mongodb://{advertised}/?replicaSet={}", config.replica_set);
        let shared = Arc::new(Shared::new(
            config.replica_set,
            advertised,
            config.history_limit,
        ));
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracker.spawn(server::serve(
            listener,
            shared.clone(),
            shutdown.clone(),
            tracker.clone(),
        ));
        Ok(Emulator {
            addr,
            uri,
            shared,
            shutdown,
            tracker,
        })
    }
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// `mongodb://127.0.0.1:PORT/?replicaSet=rs0` (the advertised host).
    pub fn uri(&self) -> String {
        self.uri.clone()
    }
    /// Fault injection and counters.
    pub fn handle(&self) -> EmulatorHandle {
        EmulatorHandle {
            shared: self.shared.clone(),
        }
    }
    /// Stop accepting, close connections, wait for tasks to end.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}
