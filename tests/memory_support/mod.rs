//! Helpers shared by the engine tests over in-memory stores: an engine task that can
//! be stopped or killed, the paused-time runtime properties run on, and their config.
#![allow(dead_code)] // each test file uses a different part

use std::time::Duration;

use datasync::core::{Engine, EngineHandle};
use proptest::prelude::*;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running engine.
pub struct Running {
    /// Its task (abort it to simulate `kill -9`).
    pub task: JoinHandle<()>,
    /// Cancel for a clean stop.
    pub stop: CancellationToken,
    /// Its control handle.
    pub handle: EngineHandle,
}

/// Run `engine` in a task (no reconcile on start beyond the engine's own, `drain`
/// to finish its queue on stop).
pub fn spawn(engine: Engine, drain: Duration) -> Running {
    let handle = engine.handle();
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(async move { engine.run(s, false, drain).await.expect("engine run") });
    Running { task, stop, handle }
}

impl Running {
    /// Stop cleanly (drain, save checkpoints) and return the handle.
    pub async fn stop(self) -> EngineHandle {
        self.stop.cancel();
        self.task.await.expect("engine task");
        self.handle
    }
}

/// Run a property case on a current-thread runtime with paused time.
pub fn block_on<F: std::future::Future<Output = Result<(), TestCaseError>>>(
    f: F,
) -> Result<(), TestCaseError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Proptest settings: `PROPTEST_CASES` cases (default `default_cases`), long shrinking.
pub fn proptest_config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    ProptestConfig {
        cases,
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    }
}
