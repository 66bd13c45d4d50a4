//! Fault injection and operation counters, shared by the library handle and the
//! `emulatorFault` admin command.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

use crate::error::CommandError;
use crate::Counters;

/// Active faults and counters.
#[derive(Debug)]
pub struct Faults {
    /// Command name → (error code, remaining failures).
    fail: Mutex<HashMap<String, (i32, u32)>>,
    /// Delay before every reply.
    delay: Mutex<Duration>,
    /// Bumped to make every connection task close its socket.
    close: watch::Sender<u64>,
    /// Operation counters.
    counters: Mutex<Counters>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            fail: Mutex::new(HashMap::new()),
            delay: Mutex::new(Duration::ZERO),
            close: watch::channel(0).0,
            counters: Mutex::new(Counters::default()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these tiny critical sections leaves consistent data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Faults {
    /// Fail the next `times` commands named `command` with `code`.
    pub fn fail_command(&self, command: &str, code: i32, times: u32) {
        let mut f = lock(&self.fail);
        if times == 0 {
            f.remove(command);
        } else {
            f.insert(command.to_string(), (code, times));
        }
    }
    /// The injected failure for this command, consuming one.
    pub fn take_failure(&self, command: &str, in_txn: bool) -> Option<CommandError> {
        let mut f = lock(&self.fail);
        let entry = f.get_mut(command)?;
        let code = entry.0;
        entry.1 -= 1;
        if entry.1 == 0 {
            f.remove(command);
        }
        Some(
            CommandError::new(code, format!("Failing command {command} via emulatorFault"))
                .with_server_labels(command, in_txn),
        )
    }
    /// Set the reply delay.
    pub fn set_delay(&self, d: Duration) {
        *lock(&self.delay) = d;
    }
    /// Current reply delay.
    pub fn delay(&self) -> Duration {
        *lock(&self.delay)
    }
    /// Close every connection.
    pub fn close_all(&self) {
        self.close.send_modify(|g| *g += 1);
    }
    /// Subscribe to close-all requests.
    pub fn close_signal(&self) -> watch::Receiver<u64> {
        self.close.subscribe()
    }
    /// Count a served command.
    pub fn count_command(&self, name: &str) {
        *lock(&self.counters)
            .commands
            .entry(name.to_string())
            .or_default() += 1;
    }
    /// Count write statements and changed documents on `ns`.
    pub fn count_writes(&self, ns: &str, statements: u64, changed: u64) {
        let mut c = lock(&self.counters);
        if statements > 0 {
            *c.write_statements.entry(ns.to_string()).or_default() += statements;
        }
        if changed > 0 {
            *c.documents_changed.entry(ns.to_string()).or_default() += changed;
        }
    }
    /// Count a change stream cursor opened on `ns` (as its cursor reports it).
    pub fn count_change_stream(&self, ns: &str) {
        *lock(&self.counters)
            .change_streams_opened
            .entry(ns.to_string())
            .or_default() += 1;
    }
    /// Snapshot of the counters.
    pub fn counters(&self) -> Counters {
        lock(&self.counters).clone()
    }
}
