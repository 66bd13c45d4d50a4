//! The Prometheus metrics (`prometheus-client`), refreshed from [`EngineStatus`]
//! snapshots: the engine keeps running totals, so counters advance by the difference
//! since the last snapshot, and histograms are fed by the sampler (lag, once a second)
//! and by each newly finished reconcile. The engine's own histograms (batch sizes,
//! per-event lag; [`EngineStats`]) are cumulative already: a collector encodes the last
//! snapshot as it is.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::core::{
    DirectionReport, EngineStats, EngineStatus, HistogramSnapshot, Side, StreamState,
};

use super::headroom::SideWindow;
use super::pairs::PairMetrics;

/// Label values of a side.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum SideLabel {
    /// The local collection.
    local,
    /// The cloud collection.
    cloud,
}

impl From<Side> for SideLabel {
    fn from(s: Side) -> Self {
        match s {
            Side::Local => SideLabel::local,
            Side::Cloud => SideLabel::cloud,
        }
    }
}

/// `{side}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BySide {
    /// Which side.
    side: SideLabel,
}

/// `{direction}`: `local_to_cloud` or `cloud_to_local`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByDirection {
    /// Where writes went.
    direction: &'static str,
}

/// `{side, state}` for the one-hot stream state.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByState {
    /// Which side.
    side: SideLabel,
    /// Lifecycle state.
    state: &'static str,
}

/// `{result, dry_run}` of a reconcile.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByOutcome {
    /// `ok` or `error`.
    result: &'static str,
    /// `true` for a verification that wrote nothing.
    dry_run: &'static str,
}

/// `{direction, outcome}` of reconciled documents.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByDocOutcome {
    /// Where writes went.
    direction: &'static str,
    /// `inserted`, `updated`, `deleted`, `unchanged` or `kept`.
    outcome: &'static str,
}

const STATES: [(StreamState, &str); 6] = [
    (StreamState::Disabled, "disabled"),
    (StreamState::Starting, "starting"),
    (StreamState::Running, "running"),
    (StreamState::Down, "down"),
    (StreamState::Reconciling, "reconciling"),
    (StreamState::Stopped, "stopped"),
];

fn histogram_seconds() -> Histogram {
    // 5 ms … ~22 min.
    Histogram::new(exponential_buckets(0.005, 2.0, 19))
}

/// Totals already turned into counter increments.
#[derive(Default)]
struct Seen {
    /// Applied local → cloud.
    l2c: u64,
    /// Applied cloud → local.
    c2l: u64,
    /// Conflicts on changes read from local, from cloud.
    conflicts: [u64; 2],
    /// Skipped documents.
    skipped: u64,
    /// `finished_at` of the last reconcile counted (ms since epoch).
    reconcile_at: Option<i64>,
}

/// The registry and its metrics.
pub struct Metrics {
    /// What `/metrics` encodes.
    registry: Registry,
    /// Totals seen at the last refresh.
    seen: Mutex<Seen>,
    /// Change-stream writes applied, per direction.
    applied: Family<ByDirection, Counter>,
    /// Conflicts decided on the streams, per direction.
    conflicts: Family<ByDirection, Counter>,
    /// The engine's last [`EngineStats`], encoded by [`EngineCollector`].
    engine_stats: Arc<Mutex<EngineStats>>,
    /// Documents skipped as malformed.
    skipped: Counter,
    /// Distinct documents waiting in the queue.
    queue_depth: Gauge,
    /// Keys held back by the future-timestamp guard.
    quarantined: Gauge,
    /// 1 while applying is paused.
    paused: Gauge,
    /// One-hot stream state per side.
    stream_state: Family<ByState, Gauge>,
    /// Current lag per side (seconds).
    lag: Family<BySide, Gauge<f64, AtomicU64>>,
    /// Lag sampled once a second per side.
    lag_sampled: Family<BySide, Histogram, fn() -> Histogram>,
    /// Reconcile durations.
    reconcile_duration: Family<ByOutcome, Histogram, fn() -> Histogram>,
    /// Finished reconciles by result.
    reconciles: Family<ByOutcome, Counter>,
    /// Documents a reconcile handled, by direction and outcome.
    reconcile_docs: Family<ByDocOutcome, Counter>,
    /// Conflicts decided by reconciles.
    reconcile_conflicts: Counter,
    /// Saved checkpoint age per side.
    checkpoint_age: Family<BySide, Gauge>,
    /// Oplog headroom per side (absent when unknown).
    headroom: Family<BySide, Gauge>,
    /// 1 when the headroom of a side can be read.
    headroom_readable: Family<BySide, Gauge>,
    /// 1 when a side's headroom is under the alarm.
    headroom_low: Family<BySide, Gauge>,
    /// Seconds since start.
    uptime: Gauge,
    /// The same counts per collection pair (`pair` label).
    pairs: PairMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric registered under the `datasync_` prefix.
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Registry::with_prefix("datasync"),
            seen: Mutex::new(Seen::default()),
            applied: Family::default(),
            conflicts: Family::default(),
            engine_stats: Arc::default(),
            skipped: Counter::default(),
            queue_depth: Gauge::default(),
            quarantined: Gauge::default(),
            paused: Gauge::default(),
            stream_state: Family::default(),
            lag: Family::default(),
            lag_sampled: Family::new_with_constructor(histogram_seconds),
            reconcile_duration: Family::new_with_constructor(histogram_seconds),
            reconciles: Family::default(),
            reconcile_docs: Family::default(),
            reconcile_conflicts: Counter::default(),
            checkpoint_age: Family::default(),
            headroom: Family::default(),
            headroom_readable: Family::default(),
            headroom_low: Family::default(),
            uptime: Gauge::default(),
            pairs: PairMetrics::default(),
        };
        m.register_all()
    }

    fn register_all(mut self) -> Metrics {
        let r = &mut self.registry;
        r.register(
            "applied",
            "Change-stream writes applied, per direction",
            self.applied.clone(),
        );
        r.register(
            "conflicts",
            "Conflicts decided on the streams, per direction of the change decided",
            self.conflicts.clone(),
        );
        r.register_collector(Box::new(EngineCollector {
            stats: self.engine_stats.clone(),
        }));
        r.register(
            "skipped_documents",
            "Documents skipped as malformed (bad or missing updatedAt, write refused)",
            self.skipped.clone(),
        );
        r.register(
            "queue_depth",
            "Distinct documents waiting to be applied",
            self.queue_depth.clone(),
        );
        r.register(
            "quarantined_documents",
            "Documents held back because their updatedAt is too far in the future (sync.max_future_ms)",
            self.quarantined.clone(),
        );
        r.register("paused", "1 while applying is paused", self.paused.clone());
        r.register(
            "stream_state",
            "1 for the current state of each side's change stream",
            self.stream_state.clone(),
        );
        r.register(
            "stream_lag_seconds",
            "Now minus the server time of the newest applied event (0 when idle and caught up)",
            self.lag.clone(),
        );
        r.register(
            "stream_lag_sampled_seconds",
            "Stream lag sampled once a second",
            self.lag_sampled.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Duration of finished reconciles",
            self.reconcile_duration.clone(),
        );
        r.register(
            "reconciles",
            "Finished reconciles by result",
            self.reconciles.clone(),
        );
        r.register(
            "reconcile_documents",
            "Documents handled by reconciles (dry runs excluded)",
            self.reconcile_docs.clone(),
        );
        r.register(
            "reconcile_conflicts",
            "Conflicts decided by reconciles (dry runs excluded)",
            self.reconcile_conflicts.clone(),
        );
        r.register(
            "checkpoint_age_seconds",
            "Now minus the cluster time of the saved checkpoint",
            self.checkpoint_age.clone(),
        );
        r.register(
            "oplog_headroom_seconds",
            "History the server keeps behind the saved checkpoint",
            self.headroom.clone(),
        );
        r.register(
            "oplog_headroom_readable",
            "1 when the side's oplog window can be read",
            self.headroom_readable.clone(),
        );
        r.register(
            "oplog_headroom_low",
            "1 when the headroom is under alarms.oplog_headroom_min",
            self.headroom_low.clone(),
        );
        r.register(
            "uptime_seconds",
            "Seconds since the daemon started",
            self.uptime.clone(),
        );
        self.pairs.register(r);
        self
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }

    /// Bring gauges and counters up to date.
    pub fn refresh(&self, s: &EngineStatus, windows: &[SideWindow; 2], now: i64, uptime: i64) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let advance = |c: &Counter, last: &mut u64, now: u64| {
            c.inc_by(now.saturating_sub(*last));
            *last = (*last).max(now);
        };
        advance(
            &self.applied.get_or_create(&dir("local_to_cloud")),
            &mut seen.l2c,
            s.applied_local_to_cloud,
        );
        advance(
            &self.applied.get_or_create(&dir("cloud_to_local")),
            &mut seen.c2l,
            s.applied_cloud_to_local,
        );
        advance(
            &self.conflicts.get_or_create(&dir("local_to_cloud")),
            &mut seen.conflicts[0],
            s.conflicts_local_to_cloud,
        );
        advance(
            &self.conflicts.get_or_create(&dir("cloud_to_local")),
            &mut seen.conflicts[1],
            s.conflicts_cloud_to_local,
        );
        advance(&self.skipped, &mut seen.skipped, s.skipped);
        self.pairs.refresh(&s.pairs);
        self.queue_depth.set(s.queue_depth as i64);
        self.quarantined.set(s.quarantined as i64);
        self.paused.set(i64::from(s.paused));
        self.uptime.set(uptime);
        for (side, st, w) in [
            (Side::Local, &s.local, &windows[0]),
            (Side::Cloud, &s.cloud, &windows[1]),
        ] {
            let label = BySide { side: side.into() };
            for (state, name) in STATES {
                let l = ByState {
                    side: side.into(),
                    state: name,
                };
                self.stream_state
                    .get_or_create(&l)
                    .set(i64::from(st.state == state));
            }
            self.lag
                .get_or_create(&label)
                .set(st.lag_ms.unwrap_or(0) as f64 / 1000.0);
            match w.checkpoint_age_s(now) {
                Some(age) => {
                    self.checkpoint_age.get_or_create(&label).set(age as i64);
                }
                None => {
                    self.checkpoint_age.remove(&label);
                }
            }
            match w.headroom_s() {
                Some(h) => {
                    self.headroom.get_or_create(&label).set(h);
                }
                None => {
                    self.headroom.remove(&label);
                }
            }
            self.headroom_readable
                .get_or_create(&label)
                .set(i64::from(w.unavailable.is_none()));
            self.headroom_low
                .get_or_create(&label)
                .set(i64::from(w.low));
        }
        if let Some((at, report)) = &s.last_reconcile {
            let at = at.timestamp_millis();
            if seen.reconcile_at != Some(at) {
                seen.reconcile_at = Some(at);
                let outcome = ByOutcome {
                    result: "ok",
                    dry_run: bool_label(report.dry_run),
                };
                self.reconciles.get_or_create(&outcome).inc();
                self.reconcile_duration
                    .get_or_create(&outcome)
                    .observe(report.duration_ms as f64 / 1000.0);
                if !report.dry_run {
                    self.count_docs("local_to_cloud", &report.local_to_cloud);
                    self.count_docs("cloud_to_local", &report.cloud_to_local);
                    self.reconcile_conflicts.inc_by(report.conflicts);
                }
            }
        }
    }

    /// Show the engine's histograms as of `stats` (cumulative since the engine started).
    pub fn set_engine_stats(&self, stats: EngineStats) {
        *self
            .engine_stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = stats;
    }

    /// Feed the lag histogram (once a second, by the sampler).
    pub fn sample_lag(&self, s: &EngineStatus) {
        for (side, st) in [(Side::Local, &s.local), (Side::Cloud, &s.cloud)] {
            if let Some(ms) = st.lag_ms {
                self.lag_sampled
                    .get_or_create(&BySide { side: side.into() })
                    .observe(ms as f64 / 1000.0);
            }
        }
    }

    /// A reconcile asked for by cron or `ctl sync` failed.
    pub fn reconcile_failed(&self, dry_run: bool) {
        self.reconciles
            .get_or_create(&ByOutcome {
                result: "error",
                dry_run: bool_label(dry_run),
            })
            .inc();
    }

    fn count_docs(&self, direction: &'static str, d: &DirectionReport) {
        for (outcome, n) in [
            ("inserted", d.inserted),
            ("updated", d.updated),
            ("deleted", d.deleted),
            ("unchanged", d.unchanged),
            ("kept", d.kept),
        ] {
            self.reconcile_docs
                .get_or_create(&ByDocOutcome { direction, outcome })
                .inc_by(n);
        }
    }
}

fn dir(direction: &'static str) -> ByDirection {
    ByDirection { direction }
}

fn bool_label(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

/// Encodes the engine's cumulative histograms at each scrape.
#[derive(Debug)]
struct EngineCollector {
    /// The last snapshot (all zero before the engine reports).
    stats: Arc<Mutex<EngineStats>>,
}

impl Collector for EngineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut e = encoder.encode_descriptor(
            "batch_size",
            "Keys (one per side and document) in each batch the engine applied from the streams",
            None,
            MetricType::Histogram,
        )?;
        encode_histogram(&mut e, &s.batch_size)?;
        let mut e = encoder.encode_descriptor(
            "event_lag_seconds",
            "Per change applied from a stream: source server's clock when its batch was applied minus the change's server wall time",
            None,
            MetricType::Histogram,
        )?;
        for (direction, h) in [
            ("local_to_cloud", &s.lag_local_to_cloud),
            ("cloud_to_local", &s.lag_cloud_to_local),
        ] {
            let labels = dir(direction);
            encode_histogram(&mut e.encode_family(&labels)?, h)?;
        }
        Ok(())
    }
}

/// Encode a cumulative snapshot (the encoder wants each bucket's own count).
fn encode_histogram(e: &mut MetricEncoder<'_>, h: &HistogramSnapshot) -> std::fmt::Result {
    let mut below = 0;
    let mut buckets: Vec<(f64, u64)> = h
        .bounds
        .iter()
        .zip(&h.buckets)
        .map(|(bound, cumulative)| {
            let own = cumulative.saturating_sub(below);
            below = below.max(*cumulative);
            (*bound, own)
        })
        .collect();
    buckets.push((f64::INFINITY, h.count.saturating_sub(below)));
    e.encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)
}
