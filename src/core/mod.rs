//! The storage-agnostic sync core: domain types, storage traits, the engine (queue,
//! conflict resolution, checkpoints, reconcile) and an in-memory store for tests. It
//! never imports `mongodb`.

mod checkpoint;
pub(crate) mod clock;
pub mod doc;
pub mod engine;
pub mod error;
pub mod key;
pub mod memory;
mod own_copies;
pub mod quarantine;
mod queue;
mod reconcile;
pub mod store;
mod synced;
pub mod types;

pub use engine::{
    reconcile_once, Engine, EngineConfig, EngineHandle, EngineStats, EngineStatus,
    HistogramSnapshot, PairSpec, PairStatus, Stores, StreamState, StreamStatus, Streams,
};
pub use error::{EngineError, StoreError, StoreErrorKind};
pub use store::{ChangeStream, CollectionStore, CollectionStream, StateStore, StreamSource};
pub use types::*;
