//! The servers' clocks as the future-timestamp guard sees them: each side's offset from
//! the daemon's clock, measured at start-up, at each full reconcile and once a minute,
//! with a warning when it exceeds a second (last-writer-wins compares times written
//! by clients of both sides, so a skewed server or client clock shifts every decision).

use std::sync::Mutex;

use bson::DateTime;
use tokio_util::sync::CancellationToken;

use crate::core::engine::shared::{lock, retry, Stop};
use crate::core::engine::Stores;
use crate::core::types::Side;

/// Skew beyond which a warning is logged.
const WARN_SKEW_MS: i64 = 1_000;

/// Each side's clock offset from the daemon's, in milliseconds (local, cloud).
pub(crate) type Offsets = [i64; 2];

/// Measure both servers' clocks against the daemon's (a side that cannot tell keeps
/// its previous offset), store them in `into` and return them.
pub(crate) async fn measure(
    stores: &Stores,
    into: Option<&Mutex<Offsets>>,
    cancel: &CancellationToken,
    attempts: Option<u32>,
) -> Result<Offsets, Stop> {
    let mut out = into.map(|m| *lock(m)).unwrap_or_default();
    for (i, side) in Side::BOTH.into_iter().enumerate() {
        let store = match side {
            Side::Local => stores.local.as_ref(),
            Side::Cloud => stores.cloud.as_ref(),
        };
        let before = DateTime::now().timestamp_millis();
        let Some(server) = retry("server_time", cancel, attempts, || store.server_time()).await?
        else {
            continue;
        };
        let after = DateTime::now().timestamp_millis();
        // The server read its clock somewhere in the round trip: compare with its middle.
        let offset = server.timestamp_millis() - (before + (after - before) / 2);
        if offset.abs() > WARN_SKEW_MS {
            tracing::warn!(%side, skew_ms = offset, "server clock differs from this machine's by more than 1 s");
        }
        out[i] = offset;
    }
    if let Some(m) = into {
        *lock(m) = out;
    }
    Ok(out)
}

/// Each side's server clock now, from `offsets`.
pub(crate) fn server_now(offsets: Offsets) -> [DateTime; 2] {
    let now = DateTime::now().timestamp_millis();
    offsets.map(|o| DateTime::from_millis(now.saturating_add(o)))
}
