//! The engine: reads both change streams into the coalescing queue, resolves and applies
//! batches, saves checkpoints only behind applied work, reconciles on start, on history
//! loss and on request. PUBLIC API FROZEN (the daemon depends on it); internals are the
//! core's to shape (split into submodules as it grows).

use std::sync::Arc;
use std::time::Duration;

use bson::DateTime;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::core::error::EngineError;
use crate::core::store::{CollectionStore, StateStore};
use crate::core::types::{Mode, ReconcileReport, Side};

/// Validated engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Direction(s) of sync.
    pub mode: Mode,
    /// Name of the last-modified field (BSON DateTime) used by last-writer-wins.
    pub updated_at_field: String,
    /// Events for one key within this window collapse into the latest one.
    pub debounce: Duration,
    /// Maximum writes per batch sent to a store.
    pub max_batch: usize,
    /// Maximum distinct keys pending in the queue; stream readers wait beyond it.
    pub queue_capacity: usize,
    /// Side whose version wins when `updatedAt` is equal and contents differ.
    pub tie_break: Side,
    /// Documents per scan page during a full reconcile (bounds its memory).
    pub reconcile_batch: usize,
    /// Tombstones older than this are expired.
    pub tombstone_ttl: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            mode: Mode::BothWays,
            updated_at_field: "updatedAt".into(),
            debounce: Duration::from_millis(50),
            max_batch: 1000,
            queue_capacity: 100_000,
            tie_break: Side::Cloud,
            reconcile_batch: 1000,
            tombstone_ttl: Duration::from_secs(30 * 86_400),
        }
    }
}

/// The stores the engine works on.
#[derive(Clone)]
pub struct Stores {
    /// The local collection.
    pub local: Arc<dyn CollectionStore>,
    /// The cloud collection.
    pub cloud: Arc<dyn CollectionStore>,
    /// Checkpoints and tombstones (on the local deployment).
    pub state: Arc<dyn StateStore>,
}

/// Lifecycle of one side's change stream, as shown by `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StreamState {
    /// Not watched in this mode.
    Disabled,
    /// Opening (or re-opening) the stream.
    Starting,
    /// Streaming.
    Running,
    /// Failing; being retried with backoff.
    Down,
    /// History lost or first start: a full reconcile is running before streaming.
    Reconciling,
    /// Stopped (shutdown).
    Stopped,
}

/// Status of one side's stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamStatus {
    /// Lifecycle state.
    pub state: StreamState,
    /// Now minus the server time of the newest event applied from this stream, or 0 when
    /// the stream is idle and fully applied; `None` before the first event.
    pub lag_ms: Option<u64>,
    /// Last error seen on this stream, secrets removed.
    pub last_error: Option<String>,
}

/// A snapshot of the engine for `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineStatus {
    /// Configured mode.
    pub mode: Mode,
    /// Whether applying is paused.
    pub paused: bool,
    /// Distinct keys waiting in the queue.
    pub queue_depth: u64,
    /// Local stream.
    pub local: StreamStatus,
    /// Cloud stream.
    pub cloud: StreamStatus,
    /// Writes applied to cloud from local events.
    pub applied_local_to_cloud: u64,
    /// Writes applied to local from cloud events.
    pub applied_cloud_to_local: u64,
    /// Conflicts decided (the target was newer or won the tie-break).
    pub conflicts: u64,
    /// Documents skipped as malformed (bad or missing `updatedAt`, write refused).
    pub skipped: u64,
    /// Last completed reconcile, if any, and when it finished.
    pub last_reconcile: Option<(DateTime, ReconcileReport)>,
}

/// Cheap, cloneable control handle on a running (or not yet running) engine.
#[derive(Clone)]
pub struct EngineHandle {
    // core helper: shared state lives here (Arc<...>).
    _private: (),
}

impl EngineHandle {
    /// Current status snapshot.
    pub fn status(&self) -> EngineStatus {
        todo!()
    }
    /// Stop applying events (they are still read and queued, up to the queue capacity).
    pub fn pause(&self) {
        todo!()
    }
    /// Resume applying events.
    pub fn resume(&self) {
        todo!()
    }
    /// Change the debounce window live (SIGHUP).
    pub fn set_debounce(&self, debounce: Duration) {
        let _ = debounce;
        todo!()
    }
    /// Run one full reconcile in `mode` (default: the configured one). If one is already
    /// running, waits for it to finish and then runs. Applies even while paused.
    pub async fn reconcile(
        &self,
        mode: Option<Mode>,
        dry_run: bool,
    ) -> Result<ReconcileReport, EngineError> {
        let _ = (mode, dry_run);
        todo!()
    }
}

/// The sync engine.
pub struct Engine {
    _private: (),
}

impl Engine {
    /// Build an engine over `stores`.
    pub fn new(config: EngineConfig, stores: Stores) -> Self {
        let _ = (config, stores);
        todo!()
    }

    /// A control handle (clone freely).
    pub fn handle(&self) -> EngineHandle {
        todo!()
    }

    /// Run until `shutdown` is cancelled: reconcile first when there is no checkpoint,
    /// when `reconcile_on_start`, or when history was lost; then stream. On shutdown:
    /// stop reading, apply what is queued (bounded by `drain_deadline`), save
    /// checkpoints, return. Never returns early on transient store errors.
    pub async fn run(
        self,
        shutdown: CancellationToken,
        reconcile_on_start: bool,
        drain_deadline: Duration,
    ) -> Result<(), EngineError> {
        let _ = (shutdown, reconcile_on_start, drain_deadline);
        todo!()
    }
}

/// One full reconcile without a running engine (`datasync reconcile`). `progress` is
/// called with the number of keys examined so far, now and then.
pub async fn reconcile_once(
    config: &EngineConfig,
    stores: &Stores,
    mode: Mode,
    dry_run: bool,
    progress: Option<Arc<dyn Fn(u64) + Send + Sync>>,
) -> Result<ReconcileReport, EngineError> {
    let _ = (config, stores, mode, dry_run, progress);
    todo!()
}
