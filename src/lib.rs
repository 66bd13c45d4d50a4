//! datasync keeps two MongoDB collections in sync both ways in near real time.
//!
//! - [`core`]: storage-agnostic engine (queue, last-writer-wins, tombstones, checkpoints,
//!   reconcile), tested with an in-memory store.
//! - [`mongo`]: the thin MongoDB adapter implementing the core's traits.
//! - [`daemon`]: config, admin socket, cron, signals — the shell around the engine.

pub mod core;
pub mod daemon;
pub mod mongo;
