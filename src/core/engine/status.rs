//! What `status` shows of a running engine: each side's stream, each pair, the totals.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bson::DateTime;
use serde::{Deserialize, Serialize};

use super::shared::{ix, lock, Hub, Shared};
use crate::core::types::{Mode, ReconcileReport, Side};

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
    /// Conflicts decided (the target was newer or won the tie-break), both directions.
    pub conflicts: u64,
    /// Of `conflicts`, those on changes read from local (propagating local → cloud).
    #[serde(default)]
    pub conflicts_local_to_cloud: u64,
    /// Of `conflicts`, those on changes read from cloud (propagating cloud → local).
    #[serde(default)]
    pub conflicts_cloud_to_local: u64,
    /// Documents skipped as malformed (bad or missing `updatedAt`, write refused).
    pub skipped: u64,
    /// Keys held back now because their `updatedAt` is too far in the future.
    #[serde(default)]
    pub quarantined: u64,
    /// Last completed reconcile, if any, and when it finished.
    pub last_reconcile: Option<(DateTime, ReconcileReport)>,
    /// Each collection pair (the fields above are their totals).
    #[serde(default)]
    pub pairs: Vec<PairStatus>,
}

/// Status of one collection pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairStatus {
    /// The pair's name.
    pub name: String,
    /// Its mode.
    pub mode: Mode,
    /// `starting` (the daemon has not reached MongoDB yet), `reconciling` (its first
    /// full reconcile), `paused`, `running` or `stopped`.
    pub state: String,
    /// The larger of its two directions' lag (see [`StreamStatus::lag_ms`]).
    pub lag_ms: Option<u64>,
    /// Distinct keys waiting in its queue.
    pub queue_depth: u64,
    /// Writes applied to cloud.
    pub applied_local_to_cloud: u64,
    /// Writes applied to local.
    pub applied_cloud_to_local: u64,
    /// Conflicts decided.
    pub conflicts: u64,
    /// Documents skipped as malformed.
    pub skipped: u64,
    /// Keys held back by the future-timestamp guard.
    pub quarantined: u64,
    /// Its last completed reconcile.
    pub last_reconcile: Option<(DateTime, ReconcileReport)>,
}

/// Lag of pair `sh` from `side`: see [`StreamStatus::lag_ms`].
pub(super) fn pair_lag(sh: &Shared, side: Side) -> Option<u64> {
    if !sh.config.mode.watches(side) {
        return None;
    }
    let applied = lock(&sh.applied_time)[ix(side)];
    let idle = !sh.queue.has_pending(side) && sh.in_flight[ix(side)].load(Ordering::SeqCst) == 0;
    applied.map(|t| {
        if idle {
            0
        } else {
            (DateTime::now().timestamp_millis() - t.timestamp_millis()).max(0) as u64
        }
    })
}

pub(super) fn stream_status(hub: &Hub, pairs: &[Arc<Shared>], side: Side) -> StreamStatus {
    let mut st = lock(&hub.streams)[ix(side)].clone();
    if st.state == StreamState::Disabled {
        return st;
    }
    st.lag_ms = pairs.iter().filter_map(|p| pair_lag(p, side)).max();
    st
}

pub(super) fn pair_status(sh: &Shared) -> PairStatus {
    let c = &sh.counters;
    let state = if sh.reconciling.load(Ordering::SeqCst) {
        "reconciling"
    } else if !sh.hub.running.load(Ordering::SeqCst) {
        "stopped"
    } else if sh.hub.is_paused() {
        "paused"
    } else {
        "running"
    };
    PairStatus {
        name: sh.name.clone(),
        mode: sh.config.mode,
        state: state.into(),
        lag_ms: Side::BOTH.into_iter().filter_map(|s| pair_lag(sh, s)).max(),
        queue_depth: sh.queue.len() as u64,
        applied_local_to_cloud: c.local_to_cloud.load(Ordering::Relaxed),
        applied_cloud_to_local: c.cloud_to_local.load(Ordering::Relaxed),
        conflicts: c.conflicts.load(Ordering::Relaxed),
        skipped: c.skipped.load(Ordering::Relaxed),
        quarantined: lock(&sh.quarantine).len() as u64,
        last_reconcile: lock(&sh.last_reconcile).clone(),
    }
}
