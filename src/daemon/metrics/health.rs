//! `/readyz`: the daemon is ready when every watched stream is running, applying is not
//! paused, and every watched side's saved checkpoint is younger than
//! `[metrics] ready_max_checkpoint_age_s`. The reasons it is not are listed, so a failing
//! probe says what to look at.

use std::time::Duration;

use crate::core::{EngineStatus, Side, StreamState};

use super::headroom::SideWindow;

/// `Ok` when ready, else one line per reason.
pub fn readiness(
    status: &EngineStatus,
    windows: &[SideWindow; 2],
    now_unix: i64,
    max_checkpoint_age: Duration,
) -> Result<(), Vec<String>> {
    let mut reasons = Vec::new();
    if status.paused {
        reasons.push("applying is paused".to_string());
    }
    for (side, stream, window) in [
        (Side::Local, &status.local, &windows[0]),
        (Side::Cloud, &status.cloud, &windows[1]),
    ] {
        if !status.mode.watches(side) {
            continue;
        }
        if stream.state != StreamState::Running {
            let state = serde_json::to_value(stream.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| format!("{:?}", stream.state));
            reasons.push(format!("{side} stream is {state}"));
        }
        match window.checkpoint_age_s(now_unix) {
            None => reasons.push(format!("{side} has no saved checkpoint yet")),
            Some(age) if age > max_checkpoint_age.as_secs() => reasons.push(format!(
                "{side} checkpoint is {age} s old (bound {} s)",
                max_checkpoint_age.as_secs()
            )),
            Some(_) => {}
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}
