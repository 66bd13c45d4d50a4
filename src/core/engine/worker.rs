//! The apply worker: takes debounced batches from the queue (unless paused), resolves
//! and applies them under the apply lock, and saves checkpoints after every batch and
//! once a second when idle. On drain it empties the queue ignoring the debounce.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::keyed::apply_batch;
use super::shared::{ix, lock, retry, Hub, Shared, Stop};
use crate::core::types::Side;
use std::sync::atomic::Ordering;

/// How often checkpoints are saved while nothing is applied.
const IDLE_SAVE: Duration = Duration::from_secs(1);

/// Pause after a batch that was not full: every batch costs a few round trips
/// (tombstones, apply, checkpoint), so under a stream of events it pays to let them
/// accumulate a little. Far below any useful debounce.
const MIN_ROUND: Duration = Duration::from_millis(1);

/// Save every watched side's safe checkpoint, if it moved, to every pair reading that
/// side (all pairs share the side's one stream, so they share its position; a pair
/// whose first reconcile has not finished has nothing read yet: see the reader).
pub(crate) async fn save_checkpoints(hub: &Hub, cancel: &CancellationToken) -> Result<(), Stop> {
    let _one_at_a_time = hub.save_lock.lock().await;
    for side in Side::BOTH {
        if !hub.watches(side) {
            continue;
        }
        let safe = lock(&hub.trackers[ix(side)]).safe();
        let Some(safe) = safe else {
            continue;
        };
        if lock(&hub.saved)[ix(side)].as_ref() == Some(&safe) {
            continue;
        }
        let saves = hub
            .targets
            .iter()
            .filter(|t| t.watches[ix(side)] && t.current[ix(side)].load(Ordering::SeqCst))
            .map(|t| {
                let (state, safe) = (t.state.as_ref(), &safe);
                retry("save_checkpoint", cancel, None, move || {
                    state.save_checkpoint(side, safe)
                })
            });
        for r in futures::future::join_all(saves).await {
            r?;
        }
        lock(&hub.saved)[ix(side)] = Some(safe);
    }
    *lock(&hub.last_save) = Some(std::time::Instant::now());
    Ok(())
}

async fn apply_one(
    sh: &Shared,
    batch: Vec<crate::core::queue::QueuedEvent>,
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    let _guard = sh.apply_lock.lock().await;
    let span = tracing::debug_span!("batch", size = batch.len());
    let counts = Side::BOTH.map(|s| batch.iter().filter(|q| q.event.side == s).count() as u64);
    for side in Side::BOTH {
        sh.in_flight[ix(side)].fetch_add(counts[ix(side)], Ordering::SeqCst);
    }
    let applied = apply_batch(sh, &batch, cancel).instrument(span).await;
    for side in Side::BOTH {
        sh.in_flight[ix(side)].fetch_sub(counts[ix(side)], Ordering::SeqCst);
    }
    applied?;
    super::stats::batch_applied(sh, &batch);
    save_after_batch(&sh.hub, cancel).await
}

/// How often checkpoints are saved after batches when several pairs share the streams:
/// each save writes every pair's checkpoint, and the pairs' workers apply batches
/// concurrently (saving every 200 ms cost 20 pairs a third of their lag p99 in
/// BENCHMARKS.md's figure 6).
const PAIRS_SAVE: Duration = Duration::from_millis(1000);

/// After a batch: one pair saves at once (as it always did); several save at most
/// every [`PAIRS_SAVE`], by whichever worker comes first (saving later only means a
/// restart replays a little more, which re-decides keys from state).
async fn save_after_batch(hub: &Hub, cancel: &CancellationToken) -> Result<(), Stop> {
    if hub.targets.len() > 1 {
        let due = lock(&hub.last_save).is_none_or(|t| t.elapsed() >= PAIRS_SAVE);
        if !due || hub.save_lock.try_lock().is_err() {
            return Ok(());
        }
    }
    save_checkpoints(hub, cancel).await
}

/// Run until `drain` is cancelled, then apply what is queued and return.
/// `hard` stops everything at once (retries included).
pub(crate) async fn run(sh: &Shared, drain: CancellationToken, hard: CancellationToken) {
    let mut paused = sh.hub.paused.subscribe();
    loop {
        if *paused.borrow_and_update() {
            tokio::select! {
                _ = drain.cancelled() => break,
                _ = paused.changed() => continue,
                _ = tokio::time::sleep(IDLE_SAVE) => {
                    if save_checkpoints(&sh.hub, &hard).await.is_err() { return; }
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
                if save_checkpoints(&sh.hub, &hard).await.is_err() { return; }
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
    let _ = save_checkpoints(&sh.hub, &hard).await;
}
