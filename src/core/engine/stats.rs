//! Statistics the engine keeps for monitoring beyond the counters of `status`: stream
//! conflicts per direction, the number of keys of every applied batch, and the
//! end-to-end lag of every change applied from a stream. Histograms have fixed buckets
//! and are cumulative from the engine's start; [`super::EngineHandle::stats`] returns a
//! snapshot that a Prometheus exporter can encode as it is.
//!
//! **Per-event lag.** For each entry of an applied batch that was read from a side the
//! mode propagates and is not the engine's own write coming back: the source server's
//! clock when the batch had been applied (the daemon's clock plus the offset last
//! measured for that server, see [`crate::core::clock`]) minus the server wall time of
//! the entry's newest change (`wallTime` of the change event). It covers the debounce,
//! the wait in the queue, the decision and the writes; the transport from the server
//! to the daemon is inside it too, the checkpoint save after the batch is not. A change
//! coalesced into a newer one of the same key is measured by that newer one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bson::DateTime;
use serde::{Deserialize, Serialize};

use super::shared::{ix, lock, Shared};
use crate::core::queue::QueuedEvent;
use crate::core::types::{Mode, Side};

/// Upper bounds of the batch-size buckets (keys per batch); `+Inf` is implied.
pub const BATCH_SIZE_BOUNDS: [f64; 12] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
];

/// Upper bounds of the lag buckets, seconds; `+Inf` is implied.
pub const LAG_BOUNDS_S: [f64; 18] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0,
];

/// A histogram as of a snapshot, cumulative like Prometheus's: `buckets[i]` counts the
/// observations `<= bounds[i]`; `count` counts them all (the `+Inf` bucket).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HistogramSnapshot {
    /// Upper bounds, ascending (`+Inf` not listed).
    pub bounds: Vec<f64>,
    /// Cumulative count per bound.
    pub buckets: Vec<u64>,
    /// Number of observations.
    pub count: u64,
    /// Sum of the observations.
    pub sum: f64,
}

/// A snapshot of [`Stats`], from [`super::EngineHandle::stats`]. Its default is the
/// snapshot of an engine that did nothing yet (zero counts, the usual buckets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineStats {
    /// Stream conflicts decided against a change read from local (cloud's version was
    /// newer or won the tie-break): the local → cloud direction.
    pub conflicts_local_to_cloud: u64,
    /// Stream conflicts decided against a change read from cloud (cloud → local).
    pub conflicts_cloud_to_local: u64,
    /// Keys (queue entries, one per side and key) per applied batch.
    pub batch_size: HistogramSnapshot,
    /// Per-event end-to-end lag of changes read from local, seconds.
    pub lag_local_to_cloud: HistogramSnapshot,
    /// Per-event end-to-end lag of changes read from cloud, seconds.
    pub lag_cloud_to_local: HistogramSnapshot,
}

/// `batch` has just been applied by the worker: record its size and its changes' lag.
pub(crate) fn batch_applied(sh: &Shared, batch: &[QueuedEvent]) {
    let offsets = *lock(&sh.hub.clocks);
    sh.hub
        .stats
        .batch_applied(batch, sh.config.mode, offsets, DateTime::now());
}

impl Default for EngineStats {
    fn default() -> Self {
        Stats::default().snapshot()
    }
}

/// One fixed-bucket histogram (counts per bucket, not cumulative; the last is `+Inf`).
#[derive(Debug)]
struct Fixed {
    /// Upper bounds.
    bounds: &'static [f64],
    /// One count per bound, then the `+Inf` bucket.
    counts: Vec<u64>,
    /// Sum of the observations.
    sum: f64,
}

impl Fixed {
    fn new(bounds: &'static [f64]) -> Self {
        Fixed {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    fn observe(&mut self, v: f64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i] += 1;
        self.sum += v;
    }

    fn snapshot(&self) -> HistogramSnapshot {
        let mut total = 0;
        let mut cumulative: Vec<u64> = self
            .counts
            .iter()
            .map(|c| {
                total += c;
                total
            })
            .collect();
        let count = cumulative.pop().unwrap_or(0);
        HistogramSnapshot {
            bounds: self.bounds.to_vec(),
            buckets: cumulative,
            count,
            sum: self.sum,
        }
    }
}

/// The histograms, updated together once per batch.
#[derive(Debug)]
struct Histograms {
    /// Keys per batch.
    batch_size: Fixed,
    /// Lag per source side (local, cloud), seconds.
    lag: [Fixed; 2],
}

/// The engine's statistics, owned by `Shared`.
#[derive(Debug)]
pub(crate) struct Stats {
    /// Conflicts per source side of the change decided (local, cloud).
    conflicts: [AtomicU64; 2],
    /// Batch sizes and lags.
    histograms: Mutex<Histograms>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            conflicts: Default::default(),
            histograms: Mutex::new(Histograms {
                batch_size: Fixed::new(&BATCH_SIZE_BOUNDS),
                lag: [Fixed::new(&LAG_BOUNDS_S), Fixed::new(&LAG_BOUNDS_S)],
            }),
        }
    }
}

impl Stats {
    /// `n` conflicts on changes read from `source` (the direction they propagate in).
    pub(crate) fn conflicts(&self, source: Side, n: u64) {
        self.conflicts[ix(source)].fetch_add(n, Ordering::Relaxed);
    }

    /// Conflicts so far per source side (local, cloud).
    pub(crate) fn conflict_counts(&self) -> [u64; 2] {
        [0, 1].map(|i| self.conflicts[i].load(Ordering::Relaxed))
    }

    /// `batch` has been applied at `now` (the daemon's clock) in `mode`; `offsets` are
    /// the servers' clock offsets from the daemon's, ms (local, cloud).
    pub(crate) fn batch_applied(
        &self,
        batch: &[QueuedEvent],
        mode: Mode,
        offsets: [i64; 2],
        now: DateTime,
    ) {
        if batch.is_empty() {
            return;
        }
        let mut h = lock(&self.histograms);
        h.batch_size.observe(batch.len() as f64);
        for q in batch {
            let side = q.event.side;
            if !mode.propagates(side) {
                continue;
            }
            let server_now = now.timestamp_millis().saturating_add(offsets[ix(side)]);
            let lag_ms = server_now
                .saturating_sub(q.event.server_time.timestamp_millis())
                .max(0);
            h.lag[ix(side)].observe(lag_ms as f64 / 1000.0);
        }
    }

    /// A snapshot of everything.
    pub(crate) fn snapshot(&self) -> EngineStats {
        let [l2c, c2l] = self.conflict_counts();
        let h = lock(&self.histograms);
        EngineStats {
            conflicts_local_to_cloud: l2c,
            conflicts_cloud_to_local: c2l,
            batch_size: h.batch_size.snapshot(),
            lag_local_to_cloud: h.lag[ix(Side::Local)].snapshot(),
            lag_cloud_to_local: h.lag[ix(Side::Cloud)].snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::types::{ChangeEvent, ChangeKind, Key, ResumeToken};

    fn entry(side: Side, server_ms: i64) -> QueuedEvent {
        QueuedEvent::new(
            ChangeEvent {
                side,
                key: Key(bson::Bson::Int64(server_ms)),
                kind: ChangeKind::Delete,
                token: ResumeToken(bson::Document::new()),
                server_time: DateTime::from_millis(server_ms),
                own: false,
                pair: 0,
            },
            0,
            0,
        )
    }

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let mut f = Fixed::new(&BATCH_SIZE_BOUNDS);
        for v in [1.0, 1.0, 2.0, 3.0, 5.0, 7000.0] {
            f.observe(v);
        }
        let s = f.snapshot();
        assert_eq!(s.bounds.len(), s.buckets.len());
        assert_eq!(s.count, 6);
        assert_eq!(s.sum, 7012.0);
        // <= 1: two; <= 2: three; <= 5: five; <= 5000: still five; +Inf: six.
        assert_eq!(&s.buckets[..3], &[2, 3, 5]);
        assert_eq!(*s.buckets.last().unwrap(), 5);
    }

    #[test]
    fn a_batch_counts_its_keys_and_the_lag_of_propagated_client_changes() {
        let stats = Stats::default();
        let now = DateTime::from_millis(100_000);
        let batch = vec![
            // 1.5 s old by the local server's clock (which is 0.5 s ahead).
            entry(Side::Local, 99_000),
            // 20 ms old on cloud's (exact).
            entry(Side::Cloud, 99_980),
        ];
        stats.batch_applied(&batch, Mode::BothWays, [500, 0], now);
        stats.batch_applied(&batch[..1], Mode::LocalToCloud, [0, 0], now);
        // Cloud is not propagated in local-to-cloud.
        stats.batch_applied(&batch[1..2], Mode::LocalToCloud, [0, 0], now);
        stats.conflicts(Side::Cloud, 2);
        let s = stats.snapshot();
        assert_eq!((s.batch_size.count, s.batch_size.sum), (3, 4.0));
        assert_eq!(s.lag_local_to_cloud.count, 2);
        assert!((s.lag_local_to_cloud.sum - 2.5).abs() < 1e-9);
        assert_eq!(s.lag_cloud_to_local.count, 1);
        assert!((s.lag_cloud_to_local.sum - 0.02).abs() < 1e-9);
        assert_eq!(s.lag_cloud_to_local.buckets[0], 0);
        assert_eq!(s.lag_cloud_to_local.buckets[2], 1);
        assert_eq!(
            (s.conflicts_local_to_cloud, s.conflicts_cloud_to_local),
            (0, 2)
        );
    }
}
