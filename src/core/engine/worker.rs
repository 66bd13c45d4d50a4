//! The apply worker: takes debounced batches from the queue (unless paused), resolves
//! and applies them under the apply lock, and saves checkpoints after every batch and
//! once a second when idle. On drain it empties the queue ignoring the debounce.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::keyed::apply_batch;
use super::shared::{ix, lock, retry, Shared, Stop};
use crate::core::types::Side;

/// How often checkpoints are saved while nothing is applied.
const IDLE_SAVE: Duration = Duration::from_secs(1);

/// Pause after a batch that was not full: every batch costs a few round trips
/// (tombstones, apply, checkpoint), so under a stream of events it pays to let them
/// accumulate a little. Far below any useful debounce.
const MIN_ROUND: Duration = Duration::from_millis(1);

/// Save every watched side's safe checkpoint if it moved.
pub(crate) async fn save_checkpoints(sh: &Shared, cancel: &CancellationToken) -> Result<(), Stop> {
    for side in Side::BOTH {
        if !sh.config.mode.watches(side) {
            continue;
        }
        let safe = lock(&sh.trackers[ix(side)]).safe();
        let Some(safe) = safe else {
            continue;
        };
        if lock(&sh.saved)[ix(side)].as_ref() == Some(&safe) {
            continue;
        }
        let state = sh.stores.state.as_ref();
        retry("save_checkpoint", cancel, None, || {
            state.save_checkpoint(side, &safe)
        })
        .await?;
        lock(&sh.saved)[ix(side)] = Some(safe);
    }
    Ok(())
}

async fn apply_one(
    sh: &Shared,
    batch: Vec<crate::core::queue::QueuedEvent>,
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    let _guard = sh.apply_lock.lock().await;
    let span = tracing::debug_span!("batch", size = batch.len());
    apply_batch(sh, &batch, cancel).instrument(span).await?;
    super::stats::batch_applied(sh, &batch);
    save_checkpoints(sh, cancel).await
}

/// Run until `drain` is cancelled, then apply what is queued and return.
/// `hard` stops everything at once (retries included).
pub(crate) async fn run(sh: &Shared, drain: CancellationToken, hard: CancellationToken) {
    let mut paused = sh.paused.subscribe();
    loop {
        if *paused.borrow_and_update() {
            tokio::select! {
                _ = drain.cancelled() => break,
                _ = paused.changed() => continue,
                _ = tokio::time::sleep(IDLE_SAVE) => {
                    if save_checkpoints(sh, &hard).await.is_err() { return; }
                    continue;
                }
            }
        }
        tokio::select! {
            biased;
            _ = drain.cancelled() => break,
            _ = paused.changed() => continue,
            batch = sh.queue.next_batch(sh.config.max_batch) => {
                let small = batch.len() < sh.config.max_batch;
                if apply_one(sh, batch, &hard).await.is_err() { return; }
                if small {
                    // Let the readers queue more before the next (per-batch priced) round.
                    tokio::time::sleep(MIN_ROUND).await;
                }
            }
            _ = tokio::time::sleep(IDLE_SAVE) => {
                if save_checkpoints(sh, &hard).await.is_err() { return; }
            }
        }
    }
    if !sh.is_paused() {
        loop {
            let batch = sh.queue.drain_now(sh.config.max_batch);
            if batch.is_empty() {
                break;
            }
            if apply_one(sh, batch, &hard).await.is_err() {
                return;
            }
        }
    }
    let _ = save_checkpoints(sh, &hard).await;
}
