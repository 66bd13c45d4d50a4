//! Builds the engine's [`Stores`] from the configuration through the MongoDB adapter.
//! At start-up an unreachable deployment is retried (it may be booting with us) until
//! shutdown; a configuration the adapter refuses is an error at once.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::core::StoreErrorKind;
use crate::daemon::config::Config;
use crate::daemon::run::DaemonError;
use crate::mongo::Connected;

/// Wait between connection attempts at start-up.
const RETRY: Duration = Duration::from_secs(5);

/// Connect both sides and the state store once.
pub async fn connect(config: &Config) -> Result<Connected, DaemonError> {
    config
        .mongo_sides()
        .connect()
        .await
        .map_err(|e| DaemonError::Stores(e.message))
}

/// Connect, retrying transient failures until `shutdown` (then `Ok(None)`).
pub async fn connect_retrying(
    config: &Config,
    shutdown: &CancellationToken,
    last_error: &tokio::sync::watch::Sender<Option<String>>,
) -> Result<Option<Connected>, DaemonError> {
    let sides = config.mongo_sides();
    loop {
        match sides.connect().await {
            Ok(c) => return Ok(Some(c)),
            Err(e) if e.kind == StoreErrorKind::Fatal => {
                return Err(DaemonError::Stores(e.message))
            }
            Err(e) => {
                tracing::warn!(error = %e.message, retry_in_s = RETRY.as_secs(), "cannot reach MongoDB yet");
                last_error.send_replace(Some(format!("cannot reach MongoDB yet: {}", e.message)));
                crate::daemon::notify::status("waiting for MongoDB");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}
