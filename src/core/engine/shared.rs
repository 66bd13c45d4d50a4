//! State shared by the engine's tasks and its handle. [`Hub`] is what all collection
//! pairs share: one change stream per side, its checkpoint trackers and status, pause
//! and stop. [`Shared`] is one pair's: configuration, stores, queue, counters. Plus the
//! retry helper every store call goes through.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bson::DateTime;
use tokio_util::sync::CancellationToken;

use super::{EngineConfig, Stores, StreamState, StreamStatus};
use crate::core::checkpoint::Tracker;
use crate::core::error::{StoreError, StoreErrorKind};
use crate::core::own_copies::OwnCopies;
use crate::core::quarantine::Quarantine;
use crate::core::queue::Queue;
use crate::core::store::CollectionStore;
use crate::core::store::{StateStore, StreamSource};
use crate::core::types::{ReconcileReport, ResumeToken, Side};
use std::sync::Arc;

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

/// Where the checkpoints of one pair go.
pub(crate) struct CheckpointTarget {
    /// The pair's state store.
    pub(crate) state: Arc<dyn StateStore>,
    /// The sides (local, cloud) whose stream the pair reads.
    pub(crate) watches: [bool; 2],
    /// Per side, whether the stream's position is the pair's: false from finding no
    /// usable checkpoint of the pair until its full reconcile has finished, so a crash
    /// meanwhile leaves it without one (and the reconcile runs again).
    pub(crate) current: [AtomicBool; 2],
}

/// What every pair shares: one change stream per side, read by one reader.
pub(crate) struct Hub {
    /// Where each side's stream comes from.
    pub(crate) sources: [Arc<dyn StreamSource>; 2],
    /// Whether any pair reads the side's stream (local, cloud).
    pub(crate) watches: [bool; 2],
    /// Every pair's checkpoints, by pair index.
    pub(crate) targets: Vec<CheckpointTarget>,
    /// Checkpoint bookkeeping per side.
    pub(crate) trackers: [Mutex<Tracker>; 2],
    /// Last checkpoint saved per side (to skip redundant saves).
    pub(crate) saved: Mutex<[Option<ResumeToken>; 2]>,
    /// Serialises checkpoint saves of the pairs' workers.
    pub(crate) save_lock: tokio::sync::Mutex<()>,
    /// When checkpoints were last saved (see the worker's `save_after_batch`).
    pub(crate) last_save: Mutex<Option<std::time::Instant>>,
    /// Whether applying is paused.
    pub(crate) paused: tokio::sync::watch::Sender<bool>,
    /// Stream status per side.
    pub(crate) streams: Mutex<[StreamStatus; 2]>,
    /// Per side (local, cloud), how many times its stream reported having nothing more
    /// to read (a full reconcile waits for the streams to catch up first).
    pub(crate) caught_up: [AtomicU64; 2],
    /// Cancelled when the engine stops for good: ends retry loops.
    pub(crate) hard_stop: CancellationToken,
    /// Whether `run` is active.
    pub(crate) running: AtomicBool,
    /// Each server's clock offset from the daemon's (local, cloud), in milliseconds.
    pub(crate) clocks: Mutex<[i64; 2]>,
    /// Conflicts per direction, batch sizes and per-event lag of all pairs (monitoring).
    pub(crate) stats: super::stats::Stats,
}

impl Hub {
    /// A hub reading `sources` for pairs whose checkpoints go to `targets`.
    pub(crate) fn new(sources: [Arc<dyn StreamSource>; 2], targets: Vec<CheckpointTarget>) -> Self {
        let watches = [0, 1].map(|i| targets.iter().any(|t| t.watches[i]));
        let status = |i: usize| StreamStatus {
            // Until `run` opens it (a reconcile requested meanwhile waits for it).
            state: if watches[i] {
                StreamState::Starting
            } else {
                StreamState::Disabled
            },
            lag_ms: None,
            last_error: None,
        };
        Hub {
            sources,
            watches,
            targets,
            trackers: Default::default(),
            saved: Mutex::new([None, None]),
            save_lock: tokio::sync::Mutex::new(()),
            last_save: Mutex::new(None),
            paused: tokio::sync::watch::channel(false).0,
            streams: Mutex::new([status(0), status(1)]),
            caught_up: [AtomicU64::new(0), AtomicU64::new(0)],
            hard_stop: CancellationToken::new(),
            running: AtomicBool::new(false),
            clocks: Mutex::new([0, 0]),
            stats: Default::default(),
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

    /// Whether `side`'s stream is read at all.
    pub(crate) fn watches(&self, side: Side) -> bool {
        self.watches[ix(side)]
    }
}

/// One collection pair: everything its worker, reconciles and status share.
pub(crate) struct Shared {
    /// The streams, checkpoints and controls all pairs share.
    pub(crate) hub: Arc<Hub>,
    /// The pair's name.
    pub(crate) name: String,
    /// Validated configuration.
    pub(crate) config: EngineConfig,
    /// The stores.
    pub(crate) stores: Stores,
    /// The coalescing queue.
    pub(crate) queue: Queue,
    /// Status counters.
    pub(crate) counters: Counters,
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
    /// Per side, the entries of the batch being applied (the lag of an idle pair is 0).
    pub(crate) in_flight: [AtomicU64; 2],
    /// Whether the pair's first full reconcile (no usable checkpoint) is running.
    pub(crate) reconciling: AtomicBool,
    /// Keys held back by the future-timestamp guard.
    pub(crate) quarantine: Mutex<Quarantine>,
    /// The notes of the pair's copies (see [`crate::core::own_copies`]).
    pub(crate) own_copies: Mutex<OwnCopies>,
}

impl Shared {
    /// Shared state of pair `name` for `config` over `stores`.
    pub(crate) fn new(hub: Arc<Hub>, name: String, config: EngineConfig, stores: Stores) -> Self {
        Shared {
            hub,
            name,
            queue: Queue::new(
                config.queue_capacity,
                config.debounce,
                &config.updated_at_field,
            ),
            counters: Counters::default(),
            applied_time: Mutex::new([None, None]),
            last_reconcile: Mutex::new(None),
            apply_lock: tokio::sync::Mutex::new(()),
            reconcile_lock: tokio::sync::Mutex::new(0),
            reconcile_started: AtomicU64::new(0),
            in_flight: [AtomicU64::new(0), AtomicU64::new(0)],
            reconciling: AtomicBool::new(false),
            quarantine: Mutex::new(Quarantine::default()),
            own_copies: Mutex::new(OwnCopies::new(config.queue_capacity)),
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

    /// Whether applying is paused.
    pub(crate) fn is_paused(&self) -> bool {
        self.hub.is_paused()
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
