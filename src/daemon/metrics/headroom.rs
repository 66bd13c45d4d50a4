//! Oplog headroom per side: how much history the server still keeps behind the saved
//! checkpoint (checkpoint cluster time minus the oldest `local.oplog.rs` entry). When it
//! runs out while the daemon is down or slow, the next start needs a full reconcile and
//! deletes made in the gap are unknown; so it is measured every
//! `[alarms] oplog_check_interval_s`, shown in `status` and the metrics, and logged as a
//! warning when it falls under `[alarms] oplog_headroom_min`. A server that does not let
//! us read its oplog is reported once; the daemon carries on without the figure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bson::Timestamp;
use mongodb::Client;
use tokio_util::sync::CancellationToken;

use crate::core::{Mode, Side, StateStore};
use crate::mongo::oplog::{oldest_entry, token_time, WindowError};

use super::{ix, Observer};

/// The checkpoint is re-read at least this often (readiness depends on its age).
const CHECKPOINT_POLL: Duration = Duration::from_secs(5);

/// One side's last measurement.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SideWindow {
    /// Cluster time (Unix seconds) of the saved checkpoint; `None` before the first.
    pub checkpoint_time: Option<i64>,
    /// Time (Unix seconds) of the oldest oplog entry the server keeps, when known.
    pub oldest_time: Option<i64>,
    /// Why the oldest entry cannot be read on this side (said once, then not retried).
    pub unavailable: Option<String>,
    /// Whether the headroom is under `[alarms] oplog_headroom_min`.
    pub low: bool,
}

impl SideWindow {
    /// Seconds of history kept behind the checkpoint (negative: already lost).
    pub fn headroom_s(&self) -> Option<i64> {
        Some(self.checkpoint_time? - self.oldest_time?)
    }

    /// Age of the saved checkpoint at `now_unix`.
    pub fn checkpoint_age_s(&self, now_unix: i64) -> Option<u64> {
        self.checkpoint_time
            .map(|t| now_unix.saturating_sub(t).max(0) as u64)
    }
}

/// Where the monitor reads checkpoints and history windows (MongoDB in the daemon, a
/// stand-in in tests).
#[async_trait]
pub trait HistoryProbe: Send + Sync + 'static {
    /// Cluster time of `side`'s saved checkpoint, `None` when there is none (or its
    /// token carries no time).
    async fn checkpoint_time(&self, side: Side) -> Result<Option<Timestamp>, String>;
    /// Timestamp of the oldest history entry `side`'s server keeps.
    async fn oldest_entry(&self, side: Side) -> Result<Timestamp, WindowError>;
}

/// [`HistoryProbe`] over the state store and, when known, each side's client.
pub struct MongoProbe {
    /// Where each pair's checkpoints are saved (they share one stream per side, so
    /// their positions agree but for a pair added since; the oldest counts).
    pub states: Vec<Arc<dyn StateStore>>,
    /// (client, uri for redaction) of local and cloud; `None` when the daemon was given
    /// stores without clients.
    pub clients: Option<[(Client, String); 2]>,
}

#[async_trait]
impl HistoryProbe for MongoProbe {
    async fn checkpoint_time(&self, side: Side) -> Result<Option<Timestamp>, String> {
        let mut oldest: Option<Timestamp> = None;
        for state in &self.states {
            let token = state.load_checkpoint(side).await.map_err(|e| e.message)?;
            if let Some(t) = token.and_then(|t| token_time(&t.0)) {
                oldest = Some(oldest.map_or(t, |o| {
                    if (t.time, t.increment) < (o.time, o.increment) {
                        t
                    } else {
                        o
                    }
                }));
            }
        }
        Ok(oldest)
    }

    async fn oldest_entry(&self, side: Side) -> Result<Timestamp, WindowError> {
        match &self.clients {
            Some(c) => oldest_entry(&c[ix(side)].0, &c[ix(side)].1).await,
            None => Err(WindowError::Unavailable(
                "no MongoDB client for this side (stores were given directly)".into(),
            )),
        }
    }
}

/// Measure until `stop`: checkpoints every few seconds, the oplog window every
/// `[alarms] oplog_check_interval_s`.
pub async fn monitor(
    observer: Arc<Observer>,
    probe: Arc<dyn HistoryProbe>,
    mode: Mode,
    stop: CancellationToken,
) {
    let alarms = observer.config().alarms.clone();
    let poll = alarms.oplog_check_interval.min(CHECKPOINT_POLL);
    let mut last_window: Option<Instant> = None;
    loop {
        let window_due = last_window.is_none_or(|t| t.elapsed() >= alarms.oplog_check_interval);
        if window_due {
            last_window = Some(Instant::now());
        }
        for side in Side::BOTH.into_iter().filter(|&s| mode.watches(s)) {
            let mut w = observer.window(side);
            match probe.checkpoint_time(side).await {
                Ok(t) => w.checkpoint_time = t.map(|t| i64::from(t.time)),
                Err(e) => tracing::debug!(%side, error = %e, "cannot read the saved checkpoint"),
            }
            if window_due && w.unavailable.is_none() {
                match probe.oldest_entry(side).await {
                    Ok(t) => w.oldest_time = Some(i64::from(t.time)),
                    Err(WindowError::Unavailable(why)) => {
                        tracing::warn!(%side, reason = %why,
                            "oplog headroom cannot be read on this side; carrying on without it");
                        w.oldest_time = None;
                        w.unavailable = Some(why);
                    }
                    Err(WindowError::Transient(e)) => {
                        tracing::debug!(%side, error = %e, "oplog window not read this time")
                    }
                }
            }
            judge(side, &mut w, alarms.oplog_headroom_min);
            observer.set_window(side, w);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// Warn when the headroom falls under `min` (once per crossing), say when it recovers.
fn judge(side: Side, w: &mut SideWindow, min: Duration) {
    let Some(headroom) = w.headroom_s() else {
        return;
    };
    let low = headroom < min.as_secs() as i64;
    if low && !w.low {
        tracing::warn!(%side, headroom_s = headroom, min_s = min.as_secs(),
            "oplog headroom under alarms.oplog_headroom_min: if the daemon stops or falls \
             behind for longer, it will need a full reconcile and deletes in that window \
             will be unknown");
    } else if !low && w.low {
        tracing::info!(%side, headroom_s = headroom, "oplog headroom back above the alarm");
    }
    w.low = low;
}
