//! One stream reader per watched side, for every pair reading it: opens the change stream from the checkpoint,
//! feeds the queue (waiting when it is full), reopens after the newest item read
//! (what it read is still queued) after transient errors with backoff (100 ms → 5 s), and answers lost history (or a first
//! start without checkpoint) by opening a fresh stream *first* and then running a full
//! reconcile, so nothing written during the reconcile is missed.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bson::Document;
use tokio_util::sync::CancellationToken;

use std::collections::BTreeSet;

use super::shared::{backoff, ix, lock, retry, Hub, Shared, Stop};
use super::{run_reconcile, StreamState};
use crate::core::error::StoreError;
use crate::core::queue::QueuedEvent;
use crate::core::store::ChangeStream;
use crate::core::types::{ResumeToken, Side, StreamItem};

/// How a streaming session ended.
enum End {
    /// Stop requested.
    Stopped,
    /// Reopen after the newest item read, after this error.
    Reopen(StoreError),
    /// History lost: reconcile and start over.
    Lost(StoreError),
}

/// The token most of `loaded` hold (the first such on a tie), if any holds one.
fn plurality(loaded: &[Option<ResumeToken>]) -> Option<ResumeToken> {
    let mut best: Option<(&ResumeToken, usize)> = None;
    for t in loaded.iter().flatten() {
        let n = loaded.iter().filter(|o| o.as_ref() == Some(t)).count();
        if best.is_none_or(|(_, m)| n > m) {
            best = Some((t, n));
        }
    }
    best.map(|(t, _)| t.clone())
}

/// Clear `side`'s checkpoint of every pair in `which`; false when stopped.
async fn clear_checkpoints(
    pairs: &[Arc<Shared>],
    which: &[usize],
    side: Side,
    stop: &CancellationToken,
) -> bool {
    for &i in which {
        let state = pairs[i].stores.state.as_ref();
        if let Err(Stop::Cancelled) = retry("clear_checkpoint", stop, None, || {
            state.clear_checkpoint(side)
        })
        .await
        {
            return false;
        }
    }
    true
}

/// Run `side`'s reader, for every pair reading that side, until `stop` is cancelled.
pub(crate) async fn run(
    hub: Arc<Hub>,
    pairs: Arc<[Arc<Shared>]>,
    side: Side,
    stop: CancellationToken,
) {
    let watching: Vec<usize> = (0..pairs.len())
        .filter(|&i| pairs[i].config.mode.watches(side))
        .collect();
    let mut failures = 0u32;
    let mut fresh = false; // history lost: ignore the saved checkpoints
                           // Pairs to reconcile before streaming: no usable checkpoint (first start, a pair
                           // added, history lost), kept until their reconcile has finished.
    let mut stale: BTreeSet<usize> = BTreeSet::new();
    loop {
        if stop.is_cancelled() {
            break;
        }
        hub.set_stream(side, StreamState::Starting, None);
        let reopen = lock(&hub.trackers[ix(side)]).reopen_point();
        let from: Option<ResumeToken> = if fresh {
            stale.extend(watching.iter().copied());
            None
        } else if let Some(t) = reopen {
            Some(t)
        } else {
            // Every pair keeps the position it was saved at; they agree unless a pair
            // was added (or its checkpoint lost): the stream opens where most are, and
            // the others are reconciled first.
            let loads = watching.iter().map(|&i| {
                let state = pairs[i].stores.state.as_ref();
                retry("load_checkpoint", &stop, None, move || {
                    state.load_checkpoint(side)
                })
            });
            let mut loaded = Vec::new();
            for r in futures::future::join_all(loads).await {
                match r {
                    Ok(t) => loaded.push(t),
                    Err(_) => return hub.set_stream(side, StreamState::Stopped, None),
                }
            }
            let from = plurality(&loaded);
            for (n, &i) in watching.iter().enumerate() {
                if loaded[n] != from || from.is_none() {
                    stale.insert(i);
                }
            }
            from
        };
        if from.is_none() {
            lock(&hub.trackers[ix(side)]).reset();
            lock(&hub.saved)[ix(side)] = None;
        }
        for &i in &stale {
            hub.targets[i].current[ix(side)].store(false, Ordering::SeqCst);
        }
        let tickets: Vec<(usize, u64)> = stale
            .iter()
            .map(|&i| (i, pairs[i].reconcile_started.load(Ordering::SeqCst)))
            .collect();
        let opened = tokio::select! {
            _ = stop.cancelled() => break,
            r = hub.sources[ix(side)].open_stream(from.clone()) => r,
        };
        let mut stream = match opened {
            Ok(s) => s,
            Err(e) if e.is_history_lost() => {
                tracing::warn!(%side, error = %e, "resume point lost; full reconcile follows");
                if !clear_checkpoints(&pairs, &watching, side, &stop).await {
                    break;
                }
                hub.set_stream(side, StreamState::Reconciling, Some(&e));
                fresh = true;
                continue;
            }
            Err(e) => {
                hub.set_stream(side, StreamState::Down, Some(&e));
                tracing::warn!(%side, error = %e, "cannot open change stream; retrying");
                failures += 1;
                if sleep_or_stop(&stop, backoff(failures - 1, e.kind)).await {
                    break;
                }
                continue;
            }
        };
        lock(&hub.trackers[ix(side)]).reopened(from);
        fresh = false;
        if !stale.is_empty() {
            hub.set_stream(side, StreamState::Reconciling, None);
            match reconcile_stale(&hub, &pairs, side, &tickets, &mut stale, &stop).await {
                Ok(()) => {}
                Err(Stop::Cancelled) => break,
                Err(Stop::Failed(e)) => {
                    hub.set_stream(side, StreamState::Down, Some(&e));
                    failures += 1;
                    if sleep_or_stop(&stop, backoff(failures - 1, e.kind)).await {
                        break;
                    }
                    continue;
                }
            }
        }
        hub.set_stream(side, StreamState::Running, None);
        match stream_loop(&hub, &pairs, side, stream.as_mut(), &stop, &mut failures).await {
            End::Stopped => break,
            End::Reopen(e) => {
                hub.set_stream(side, StreamState::Down, Some(&e));
                tracing::warn!(%side, error = %e, "change stream failed; reopening after the last change read");
                failures += 1;
                if sleep_or_stop(&stop, backoff(failures - 1, e.kind)).await {
                    break;
                }
            }
            End::Lost(e) => {
                tracing::warn!(%side, error = %e, "change stream history lost; full reconcile follows");
                hub.set_stream(side, StreamState::Reconciling, Some(&e));
                if !clear_checkpoints(&pairs, &watching, side, &stop).await {
                    break;
                }
                fresh = true;
            }
        }
    }
    hub.set_stream(side, StreamState::Stopped, None);
}

/// Fully reconcile the `stale` pairs (with the reconcile tickets taken before the
/// stream opened), one after the other; each done is removed from `stale` and its
/// checkpoints may be saved again.
async fn reconcile_stale(
    hub: &Hub,
    pairs: &[Arc<Shared>],
    side: Side,
    tickets: &[(usize, u64)],
    stale: &mut BTreeSet<usize>,
    stop: &CancellationToken,
) -> Result<(), Stop> {
    for &(i, ticket) in tickets {
        if !stale.contains(&i) {
            continue;
        }
        let p = &pairs[i];
        tracing::info!(%side, pair = %p.name, "no usable checkpoint: full reconcile before streaming");
        p.reconciling.store(true, Ordering::SeqCst);
        let r = run_reconcile(p, None, false, Some(ticket), stop).await;
        p.reconciling.store(false, Ordering::SeqCst);
        r?;
        stale.remove(&i);
        hub.targets[i].current[ix(side)].store(true, Ordering::SeqCst);
    }
    // Save the position to the reconciled pairs too, even if it did not move.
    lock(&hub.saved)[ix(side)] = None;
    Ok(())
}

/// Sleep `d`; true when stopped meanwhile.
async fn sleep_or_stop(stop: &CancellationToken, d: std::time::Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

async fn stream_loop(
    hub: &Hub,
    pairs: &[Arc<Shared>],
    side: Side,
    stream: &mut dyn ChangeStream,
    stop: &CancellationToken,
    failures: &mut u32,
) -> End {
    loop {
        let item = tokio::select! {
            _ = stop.cancelled() => return End::Stopped,
            r = stream.next() => r,
        };
        match item {
            Ok(StreamItem::Event(mut ev)) => {
                *failures = 0;
                ev.side = side;
                // The token moves to the tracker: nothing after it reads `ev.token`.
                let token = std::mem::replace(&mut ev.token, ResumeToken(Document::new()));
                let (gen, seq) = lock(&hub.trackers[ix(side)]).read_event(token);
                tracing::debug!(
                    %side,
                    key = %ev.key,
                    op = ev.kind.name(),
                    at = %ev.server_time,
                    own = ev.own,
                    pair = ev.pair,
                    "change read"
                );
                let pair = pairs.get(ev.pair).filter(|p| p.config.mode.watches(side));
                let Some(pair) = pair.filter(|_| !ev.own) else {
                    // The engine's own write coming back (the store says so): no client
                    // changed anything, so there is nothing to decide. Or a change of a
                    // pair that does not read this side.
                    lock(&hub.trackers[ix(side)]).done(gen, seq);
                    continue;
                };
                let pushed = tokio::select! {
                    _ = stop.cancelled() => return End::Stopped,
                    old = pair.queue.push(QueuedEvent::new(ev, gen, seq)) => old,
                };
                if let Some((gen, seq)) = pushed {
                    lock(&hub.trackers[ix(side)]).done(gen, seq);
                }
            }
            Ok(StreamItem::Progress(token)) => {
                *failures = 0;
                lock(&hub.trackers[ix(side)]).read_progress(token);
                hub.caught_up[ix(side)].fetch_add(1, Ordering::SeqCst);
            }
            Err(e) if e.is_history_lost() => return End::Lost(e),
            Err(e) => return End::Reopen(e),
        }
    }
}
