//! State shared by the engine's tasks and its handle: configuration, stores, the queue,
//! checkpoint trackers, counters and stream status, plus the retry helper
//! every store call goes through.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bson::DateTime;
use tokio_util::sync::CancellationToken;

use super::{EngineConfig, Stores, StreamState, StreamStatus};
use crate::core::checkpoint::Tracker;
use crate::core::error::{StoreError, StoreErrorKind};
use crate::core::quarantine::Quarantine;
use crate::core::queue::Queue;
use crate::core::store::CollectionStore;
use crate::core::types::{ReconcileReport, ResumeToken, Side};

/// Lock a std mutex, ignoring poisoning (a panicking task is already a bug report).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Index of a side in per-side arrays.
pub(crate) fn ix(side: Side) -> usize {
    match side {
        Side::Local => 0,
        Side::Cloud => 1,
    }
}

/// Counters shown by `status`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Writes applied to cloud from local events.
    pub(crate) local_to_cloud: AtomicU64,
    /// Writes applied to local from cloud events.
    pub(crate) cloud_to_local: AtomicU64,
    /// Conflicts decided.
    pub(crate) conflicts: AtomicU64,
    /// Documents skipped.
    pub(crate) skipped: AtomicU64,
}

/// Everything the engine's tasks share.
pub(crate) struct Shared {
    /// Validated configuration.
    pub(crate) config: EngineConfig,
    /// The stores.
    pub(crate) stores: Stores,
    /// The coalescing queue.
    pub(crate) queue: Queue,
    /// Checkpoint bookkeeping per side.
    pub(crate) trackers: [Mutex<Tracker>; 2],
    /// Last checkpoint saved per side (to skip redundant saves).
    pub(crate) saved: Mutex<[Option<ResumeToken>; 2]>,
    /// Whether applying is paused.
    pub(crate) paused: tokio::sync::watch::Sender<bool>,
    /// Status counters.
    pub(crate) counters: Counters,
    /// Stream status per side.
    pub(crate) streams: Mutex<[StreamStatus; 2]>,
    /// Server time of the newest applied event per side.
    pub(crate) applied_time: Mutex<[Option<DateTime>; 2]>,
    /// Last completed reconcile.
    pub(crate) last_reconcile: Mutex<Option<(DateTime, ReconcileReport)>>,
    /// Serialises batch application with reconcile pages.
    pub(crate) apply_lock: tokio::sync::Mutex<()>,
    /// Serialises reconciles; holds the id of the last completed one.
    pub(crate) reconcile_lock: tokio::sync::Mutex<u64>,
    /// Number of reconciles started so far.
    pub(crate) reconcile_started: AtomicU64,
    /// Per side (local, cloud), how many times its stream reported having nothing more
    /// to read (a full reconcile waits for the streams to catch up first).
    pub(crate) caught_up: [AtomicU64; 2],
    /// Cancelled when the engine stops for good: ends retry loops.
    pub(crate) hard_stop: CancellationToken,
    /// Whether `run` is active.
    pub(crate) running: AtomicBool,
    /// Keys held back by the future-timestamp guard.
    pub(crate) quarantine: Mutex<Quarantine>,
    /// Each server's clock offset from the daemon's (local, cloud), in milliseconds.
    pub(crate) clocks: Mutex<[i64; 2]>,
    /// Conflicts per direction, batch sizes and per-event lag (monitoring).
    pub(crate) stats: super::stats::Stats,
}

impl Shared {
    /// Shared state for `config` over `stores`.
    pub(crate) fn new(config: EngineConfig, stores: Stores) -> Self {
        let status = |side: Side| StreamStatus {
            // Until `run` opens it (a reconcile requested meanwhile waits for it).
            state: if config.mode.watches(side) {
                StreamState::Starting
            } else {
                StreamState::Disabled
            },
            lag_ms: None,
            last_error: None,
        };
        Shared {
            queue: Queue::new(
                config.queue_capacity,
                config.debounce,
                &config.updated_at_field,
            ),
            trackers: Default::default(),
            saved: Mutex::new([None, None]),
            paused: tokio::sync::watch::channel(false).0,
            counters: Counters::default(),
            streams: Mutex::new([status(Side::Local), status(Side::Cloud)]),
            applied_time: Mutex::new([None, None]),
            last_reconcile: Mutex::new(None),
            apply_lock: tokio::sync::Mutex::new(()),
            reconcile_lock: tokio::sync::Mutex::new(0),
            reconcile_started: AtomicU64::new(0),
            caught_up: [AtomicU64::new(0), AtomicU64::new(0)],
            hard_stop: CancellationToken::new(),
            running: AtomicBool::new(false),
            quarantine: Mutex::new(Quarantine::default()),
            clocks: Mutex::new([0, 0]),
            stats: Default::default(),
            config,
            stores,
        }
    }

    /// The collection of `side`.
    pub(crate) fn store(&self, side: Side) -> &dyn CollectionStore {
        match side {
            Side::Local => self.stores.local.as_ref(),
            Side::Cloud => self.stores.cloud.as_ref(),
        }
    }

    /// Update `side`'s stream state (and last error, when given).
    pub(crate) fn set_stream(&self, side: Side, state: StreamState, error: Option<&StoreError>) {
        let mut s = lock(&self.streams);
        s[ix(side)].state = state;
        if let Some(e) = error {
            s[ix(side)].last_error = Some(e.to_string());
        }
    }

    /// Whether applying is paused.
    pub(crate) fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }
}

/// How a retry loop ends without a value.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The engine is stopping.
    Cancelled,
    /// Attempts exhausted (or a non-retryable error) with this error.
    Failed(StoreError),
}

/// Backoff before attempt `n` (0-based) after an error of `kind`.
pub(crate) fn backoff(n: u32, kind: StoreErrorKind) -> Duration {
    let base = Duration::from_millis(100) * 2u32.saturating_pow(n.min(6));
    let cap = if kind == StoreErrorKind::Fatal {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(5)
    };
    base.min(cap)
}

/// Run `call` until it succeeds, backing off between attempts. `max_attempts: None`
/// retries forever (the engine never gives up on a store); history loss is returned at
/// once (the caller must reconcile).
pub(crate) async fn retry<T, F, Fut>(
    what: &str,
    cancel: &CancellationToken,
    max_attempts: Option<u32>,
    mut call: F,
) -> Result<T, Stop>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut n = 0u32;
    loop {
        let res = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(Stop::Cancelled),
            r = call() => r,
        };
        match res {
            Ok(v) => return Ok(v),
            Err(e) => {
                n += 1;
                if e.is_history_lost() || max_attempts.is_some_and(|m| n >= m) {
                    return Err(Stop::Failed(e));
                }
                tracing::warn!(call = what, attempt = n, error = %e, "store call failed; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return Err(Stop::Cancelled),
                    _ = tokio::time::sleep(backoff(n - 1, e.kind)) => {}
                }
            }
        }
    }
}
