//! Typed errors of the sync core. Stores map their native failures onto
//! [`StoreErrorKind`] so the engine can decide between retrying, reconciling and
//! giving up without knowing what the store is.

use thiserror::Error;

/// What kind of failure a store reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The change stream cannot resume from the given token because the history is gone
    /// (MongoDB code 286). The engine answers with a full reconcile and a fresh stream.
    HistoryLost,
    /// The watched collection was dropped or renamed (MongoDB `invalidate`). The engine
    /// reopens a fresh stream after a reconcile.
    Invalidated,
    /// Network error, failover, timeout, server shutting down: retry with backoff.
    Transient,
    /// Anything else (bad credentials, bad namespace…): retried with a long backoff,
    /// reported in status, never a crash.
    Fatal,
}

/// Error returned by a store call.
#[derive(Debug, Clone, Error)]
#[error("{kind:?}: {message}")]
pub struct StoreError {
    /// Classification that drives the engine's reaction.
    pub kind: StoreErrorKind,
    /// Human-readable description, with secrets already removed.
    pub message: String,
}

impl StoreError {
    /// Build an error of `kind`.
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        StoreError {
            kind,
            message: message.into(),
        }
    }
    /// Shorthand for a transient error.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::Transient, message)
    }
    /// Shorthand for lost history.
    pub fn history_lost(message: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::HistoryLost, message)
    }
    /// Whether the stream must be rebuilt by a full reconcile.
    pub fn is_history_lost(&self) -> bool {
        matches!(
            self.kind,
            StoreErrorKind::HistoryLost | StoreErrorKind::Invalidated
        )
    }
    /// Whether retrying the same call soon is expected to succeed.
    pub fn is_transient(&self) -> bool {
        self.kind == StoreErrorKind::Transient
    }
}

/// Error of the engine as a whole.
#[derive(Debug, Error)]
pub enum EngineError {
    /// A store call failed and could not be retried here.
    #[error("store error on {side}: {source}")]
    Store {
        /// Side whose store failed (local for the state store).
        side: crate::core::Side,
        /// The failure.
        #[source]
        source: StoreError,
    },
    /// The engine is shutting down and refused new work.
    #[error("engine is shutting down")]
    ShuttingDown,
    /// Invalid engine configuration.
    #[error("invalid engine configuration: {0}")]
    Config(String),
}
