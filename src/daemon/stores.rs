//! Builds the engine's [`Stores`] from the configuration through the MongoDB adapter.

use crate::core::Stores;
use crate::daemon::config::Config;
use crate::daemon::run::DaemonError;

/// Connect both sides and the state store.
pub async fn connect(config: &Config) -> Result<Stores, DaemonError> {
    let _ = config;
    Err(DaemonError::Stores(
        "the MongoDB adapter is not part of this build yet".into(),
    ))
}
