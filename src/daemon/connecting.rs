//! What the daemon serves before MongoDB is reached: `status` from the configuration
//! (streams and pairs `starting`, with the last connection error), and a clear error for
//! every request that needs MongoDB.

use crate::core::{EngineStatus, Mode, PairStatus, Side, StreamState, StreamStatus};
use crate::daemon::admin::{AdminReply, AdminRequest, StatusReply};
use crate::daemon::config::Config;

/// The reply to an admin request while MongoDB has not been reached yet.
pub(crate) fn reply(
    request: &AdminRequest,
    configured: &Configured,
    started: std::time::Instant,
    error: Option<String>,
) -> AdminReply {
    match request {
        AdminRequest::Status => AdminReply::Status(Box::new(StatusReply::new(
            &configured.status(error),
            started.elapsed().as_secs(),
            None,
        ))),
        _ => AdminReply::Error(match error {
            Some(e) => format!("not connected to MongoDB yet (retrying; last error: {e})"),
            None => "not connected to MongoDB yet (connecting)".into(),
        }),
    }
}

/// What the configuration says will run, for the status served while MongoDB has not
/// been reached yet.
#[derive(Debug, Clone)]
pub(crate) struct Configured {
    /// The top-level mode.
    mode: Mode,
    /// Each pair's name and mode.
    pairs: Vec<(String, Mode)>,
}

impl Configured {
    pub(crate) fn of(config: &Config) -> Self {
        Configured {
            mode: config.mode,
            pairs: config
                .pairs
                .iter()
                .map(|p| (p.name.clone(), p.mode))
                .collect(),
        }
    }

    /// The status while MongoDB has not been reached yet: watched streams and every
    /// configured pair `starting`, with the last connection error.
    pub(crate) fn status(&self, error: Option<String>) -> EngineStatus {
        let mode = self.mode;
        let stream = |side: Side| StreamStatus {
            state: if mode.watches(side) {
                StreamState::Starting
            } else {
                StreamState::Disabled
            },
            lag_ms: None,
            last_error: error.clone(),
        };
        let pair = |(name, mode): &(String, Mode)| PairStatus {
            name: name.clone(),
            mode: *mode,
            state: "starting".into(),
            lag_ms: None,
            queue_depth: 0,
            applied_local_to_cloud: 0,
            applied_cloud_to_local: 0,
            conflicts: 0,
            skipped: 0,
            quarantined: 0,
            last_reconcile: None,
        };
        EngineStatus {
            mode,
            paused: false,
            queue_depth: 0,
            local: stream(Side::Local),
            cloud: stream(Side::Cloud),
            applied_local_to_cloud: 0,
            applied_cloud_to_local: 0,
            conflicts: 0,
            conflicts_local_to_cloud: 0,
            conflicts_cloud_to_local: 0,
            skipped: 0,
            quarantined: 0,
            last_reconcile: None,
            pairs: self.pairs.iter().map(pair).collect(),
        }
    }
}
