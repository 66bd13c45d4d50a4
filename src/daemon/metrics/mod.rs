//! What the daemon shows to monitoring: Prometheus metrics, `/healthz` and `/readyz`
//! over HTTP (`[metrics] listen`), and the oplog headroom of each side (also in `status`
//! and as a warning log under `[alarms] oplog_headroom_min`). Everything is derived in
//! the shell from the engine's [`EngineStatus`], its [`EngineStats`] (cumulative
//! histograms the engine keeps itself) and the saved checkpoints, so the sync core knows
//! nothing of Prometheus.

pub mod headroom;
pub mod health;
pub mod http;
pub mod pairs;
pub mod registry;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::core::{EngineStats, EngineStatus, Side};
use crate::daemon::config::Config;

pub use headroom::{HistoryProbe, MongoProbe, SideWindow};
pub use health::readiness;
pub use registry::Metrics;

/// Shared by the sampler, the headroom monitor, the HTTP server and `status`.
pub struct Observer {
    /// The Prometheus registry and metric handles.
    pub metrics: Metrics,
    /// Per side (local, cloud): saved checkpoint and history window, as last measured.
    windows: Mutex<[SideWindow; 2]>,
    /// Readiness and alarm thresholds.
    config: Config,
    /// When the daemon started.
    started: Instant,
}

impl Observer {
    /// A fresh observer for `config`.
    pub fn new(config: &Config) -> Arc<Observer> {
        Arc::new(Observer {
            metrics: Metrics::new(),
            windows: Mutex::new([SideWindow::default(), SideWindow::default()]),
            config: config.clone(),
            started: Instant::now(),
        })
    }

    /// The configuration the observer judges by.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Seconds since start.
    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Last measurement of `side`.
    pub fn window(&self, side: Side) -> SideWindow {
        self.windows.lock().unwrap_or_else(PoisonError::into_inner)[ix(side)].clone()
    }

    /// Replace the measurement of `side`.
    pub(crate) fn set_window(&self, side: Side, w: SideWindow) {
        self.windows.lock().unwrap_or_else(PoisonError::into_inner)[ix(side)] = w;
    }

    /// Bring the metrics up to date with `status`, the engine's `stats` when known, and
    /// the last windows.
    pub fn refresh(&self, status: &EngineStatus, stats: Option<EngineStats>) {
        if let Some(stats) = stats {
            self.metrics.set_engine_stats(stats);
        }
        let now = unix_now();
        let windows = [self.window(Side::Local), self.window(Side::Cloud)];
        self.metrics
            .refresh(status, &windows, now, self.uptime_s() as i64);
    }
}

/// Index of a side in per-side arrays.
pub(crate) fn ix(side: Side) -> usize {
    match side {
        Side::Local => 0,
        Side::Cloud => 1,
    }
}

/// Seconds since the Unix epoch (cluster times are in these).
pub(crate) fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Once a second until `stop`: refresh the metrics and feed the lag histogram.
pub async fn sample(
    observer: Arc<Observer>,
    controller: Arc<dyn crate::daemon::control::Controller>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                let status = controller.status();
                observer.refresh(&status, controller.stats());
                observer.metrics.sample_lag(&status);
            }
        }
    }
}
