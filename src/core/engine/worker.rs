//! The apply worker: takes debounced batches from the queue (unless paused), decides
//! and applies them under the apply lock (reading and deciding the next batch while one
//! is written, when they share no key), and saves checkpoints after every batch and
//! once a second when idle. On drain it empties the queue ignoring the debounce.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use super::keyed::{decide_batch, finish_batch, DecidedBatch};
use super::shared::{ix, lock, retry, Hub, Shared, Stop};
use crate::core::queue::QueuedEvent;
use crate::core::types::{Key, Side};

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
    let one_at_a_time = hub.save_lock.lock().await;
    save_locked(hub, one_at_a_time, cancel).await
}

/// [`save_checkpoints`] with the save lock held (`_held`).
async fn save_locked(
    hub: &Hub,
    _held: tokio::sync::MutexGuard<'_, ()>,
    cancel: &CancellationToken,
) -> Result<(), Stop> {
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

/// At most this many batches are applied in one hold of the apply lock, so a reconcile
/// waiting for it gets its turn under a sustained load.
const CHAIN: usize = 16;

/// Entries that must be due (at most a full batch) for the next batch to be decided
/// while one is written. Fewer wait for the write to finish, so more come due and the
/// next batch is larger: every batch costs the servers about ten commands whatever its
/// size, which a server running one command at a time (the emulator) pays in
/// throughput (BENCHMARKS.md, figure 2w).
const OVERLAP_AT: usize = 500;

/// Apply `first`, and while the queue has more entries due (and `more` says so), the
/// batches after it: the next batch is read and decided while the current one is
/// written, unless they share a key (then it waits, so it decides from the state the
/// current one leaves). Returns the size of the last batch applied.
async fn apply_chain(
    sh: &Shared,
    first: Vec<QueuedEvent>,
    cancel: &CancellationToken,
    more: &(dyn Fn() -> bool + Sync),
) -> Result<usize, Stop> {
    let _guard = sh.apply_lock.lock().await;
    let mut cur = first;
    begin(sh, &cur);
    let mut decided = decide_batch(sh, &cur, cancel)
        .instrument(tracing::debug_span!("batch", size = cur.len()))
        .await?;
    for n in 1.. {
        let next =
            if n < CHAIN && more() && sh.queue.due_at_least(OVERLAP_AT.min(sh.config.max_batch)) {
                sh.queue.take_due(sh.config.max_batch)
            } else {
                Vec::new()
            };
        if next.is_empty() {
            finish(sh, &cur, decided, cancel).await?;
            return Ok(cur.len());
        }
        begin(sh, &next);
        let span = tracing::debug_span!("batch", size = next.len());
        let next_decided = if shares_a_key(&cur, &next) {
            finish(sh, &cur, decided, cancel).await?;
            decide_batch(sh, &next, cancel).instrument(span).await?
        } else {
            let (finished, next_decided) = tokio::join!(
                finish(sh, &cur, decided, cancel),
                decide_batch(sh, &next, cancel).instrument(span)
            );
            finished?;
            next_decided?
        };
        cur = next;
        decided = next_decided;
    }
    unreachable!("the loop returns")
}

/// The entries of `batch` per side (local, cloud), counted in one pass.
fn per_side(batch: &[QueuedEvent]) -> [u64; 2] {
    let mut n = [0; 2];
    for q in batch {
        n[ix(q.event.side)] += 1;
    }
    n
}

/// Count `batch` as being applied.
fn begin(sh: &Shared, batch: &[QueuedEvent]) {
    for (flight, n) in sh.in_flight.iter().zip(per_side(batch)) {
        flight.fetch_add(n, Ordering::SeqCst);
    }
}

/// Write what was decided for `batch`, count it, and save checkpoints as due.
async fn finish(
    sh: &Shared,
    batch: &[QueuedEvent],
    decided: DecidedBatch,
    cancel: &CancellationToken,
) -> Result<(), Stop> {
    let span = tracing::debug_span!("batch", size = batch.len());
    let applied = finish_batch(sh, batch, decided, cancel)
        .instrument(span)
        .await;
    for (flight, n) in sh.in_flight.iter().zip(per_side(batch)) {
        flight.fetch_sub(n, Ordering::SeqCst);
    }
    applied?;
    super::stats::batch_applied(sh, batch);
    save_after_batch(&sh.hub, cancel).await
}

/// Whether `a` and `b` have a key in common.
fn shares_a_key(a: &[QueuedEvent], b: &[QueuedEvent]) -> bool {
    let keys: HashSet<&Key> = a.iter().map(|q| &q.event.key).collect();
    b.iter().any(|q| keys.contains(&q.event.key))
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
        if !due {
            return Ok(());
        }
        // Another worker saving now saves this batch's position too, or the next will.
        return match hub.save_lock.try_lock() {
            Ok(held) => save_locked(hub, held, cancel).await,
            Err(_) => Ok(()),
        };
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
                let more = || !drain.is_cancelled() && !sh.is_paused();
                let Ok(last) = apply_chain(sh, batch, &hard, &more).await else { return };
                if last < sh.config.max_batch {
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
            if apply_chain(sh, batch, &hard, &|| false).await.is_err() {
                return;
            }
        }
    }
    let _ = save_checkpoints(&sh.hub, &hard).await;
}
