//! One stream reader per watched side: opens the change stream from the checkpoint,
//! feeds the queue (waiting when it is full), reopens after the newest item read
//! (what it read is still queued) after transient errors with backoff (100 ms → 5 s), and answers lost history (or a first
//! start without checkpoint) by opening a fresh stream *first* and then running a full
//! reconcile, so nothing written during the reconcile is missed.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bson::Document;
use tokio_util::sync::CancellationToken;

use super::shared::{backoff, ix, lock, retry, Shared, Stop};
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

/// Whether changes read may still be echoes of writes the echo memory never saw: those
/// of a previous run, replayed from the saved checkpoint until the stream first catches
/// up (the previous run wrote nothing after this one started).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Replay {
    /// Opened from the saved checkpoint; not caught up yet.
    Possible,
    /// Caught up once since, or opened without a checkpoint.
    Over,
}

/// Run `side`'s reader until `stop` is cancelled.
pub(crate) async fn run(sh: Arc<Shared>, side: Side, stop: CancellationToken) {
    let mut failures = 0u32;
    let mut fresh = false; // history lost: ignore the saved checkpoint
    let mut replay = Replay::Over;
    loop {
        if stop.is_cancelled() {
            break;
        }
        sh.set_stream(side, StreamState::Starting, None);
        let state = sh.stores.state.as_ref();
        let from: Option<ResumeToken> = if fresh {
            None
        } else {
            let reopen = lock(&sh.trackers[ix(side)]).reopen_point();
            match reopen {
                Some(t) => Some(t),
                None => match retry("load_checkpoint", &stop, None, || {
                    state.load_checkpoint(side)
                })
                .await
                {
                    Ok(Some(t)) => {
                        replay = Replay::Possible;
                        // The previous run's deletes whose echoes may follow `t`.
                        match retry("load_pending_deletes", &stop, None, || {
                            state.load_pending_deletes(side)
                        })
                        .await
                        {
                            Ok(pending) => lock(&sh.echo).seed(side, &pending),
                            Err(_) => break,
                        }
                        Some(t)
                    }
                    Ok(None) => None,
                    Err(_) => break,
                },
            }
        };
        let needs_reconcile = from.is_none();
        if needs_reconcile {
            // A stream opened now holds nothing a previous run wrote.
            replay = Replay::Over;
            lock(&sh.trackers[ix(side)]).reset();
            lock(&sh.saved)[ix(side)] = None;
            lock(&sh.echo).clear_ledger(side);
        }
        let ticket = sh.reconcile_started.load(Ordering::SeqCst);
        let opened = tokio::select! {
            _ = stop.cancelled() => break,
            r = sh.store(side).open_stream(from.clone()) => r,
        };
        let mut stream = match opened {
            Ok(s) => s,
            Err(e) if e.is_history_lost() => {
                tracing::warn!(%side, error = %e, "resume point lost; full reconcile follows");
                if let Err(Stop::Cancelled) = retry("clear_checkpoint", &stop, None, || {
                    state.clear_checkpoint(side)
                })
                .await
                {
                    break;
                }
                sh.set_stream(side, StreamState::Reconciling, Some(&e));
                fresh = true;
                continue;
            }
            Err(e) => {
                sh.set_stream(side, StreamState::Down, Some(&e));
                tracing::warn!(%side, error = %e, "cannot open change stream; retrying");
                failures += 1;
                if sleep_or_stop(&stop, backoff(failures - 1, e.kind)).await {
                    break;
                }
                continue;
            }
        };
        lock(&sh.trackers[ix(side)]).reopened(from);
        fresh = false;
        if needs_reconcile {
            sh.set_stream(side, StreamState::Reconciling, None);
            tracing::info!(%side, "no usable checkpoint: full reconcile before streaming");
            match run_reconcile(&sh, None, false, Some(ticket), &stop).await {
                Ok(_) => {}
                Err(Stop::Cancelled) => break,
                Err(Stop::Failed(e)) => {
                    sh.set_stream(side, StreamState::Down, Some(&e));
                    fresh = true;
                    continue;
                }
            }
        }
        sh.set_stream(side, StreamState::Running, None);
        match stream_loop(
            &sh,
            side,
            stream.as_mut(),
            &stop,
            &mut failures,
            &mut replay,
        )
        .await
        {
            End::Stopped => break,
            End::Reopen(e) => {
                sh.set_stream(side, StreamState::Down, Some(&e));
                tracing::warn!(%side, error = %e, "change stream failed; reopening after the last change read");
                failures += 1;
                if sleep_or_stop(&stop, backoff(failures - 1, e.kind)).await {
                    break;
                }
            }
            End::Lost(e) => {
                tracing::warn!(%side, error = %e, "change stream history lost; full reconcile follows");
                sh.set_stream(side, StreamState::Reconciling, Some(&e));
                if retry("clear_checkpoint", &stop, None, || {
                    state.clear_checkpoint(side)
                })
                .await
                .is_err()
                {
                    break;
                }
                fresh = true;
            }
        }
    }
    sh.set_stream(side, StreamState::Stopped, None);
}

/// Sleep `d`; true when stopped meanwhile.
async fn sleep_or_stop(stop: &CancellationToken, d: std::time::Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

async fn stream_loop(
    sh: &Shared,
    side: Side,
    stream: &mut dyn ChangeStream,
    stop: &CancellationToken,
    failures: &mut u32,
    replay: &mut Replay,
) -> End {
    // Progress reported after an event, or a second one, means the stream caught up (a
    // stream may report its opening position before reading anything).
    let mut caught_up_signs = 0u32;
    loop {
        let item = tokio::select! {
            _ = stop.cancelled() => return End::Stopped,
            r = stream.next() => r,
        };
        match item {
            Ok(StreamItem::Event(mut ev)) => {
                *failures = 0;
                caught_up_signs = 1;
                ev.side = side;
                // The token moves to the tracker (and a copy to the echo memory): nothing
                // after it reads `ev.token`.
                let token = std::mem::replace(&mut ev.token, ResumeToken(Document::new()));
                let position = token.clone();
                let (gen, seq) = lock(&sh.trackers[ix(side)]).read_event(token);
                if ev.own && sh.decides_from_state() {
                    // The engine's own write coming back (the store says so): no client
                    // changed anything, so nothing is to be decided.
                    tracing::trace!(%side, key = %ev.key, op = ev.kind.name(), "own write read");
                    lock(&sh.trackers[ix(side)]).done(gen, seq);
                    continue;
                }
                // The engine's own write coming back: recognised here, in stream order.
                // With nothing pending for the key it is done at once; otherwise it
                // joins the entry flagged, so it neither counts as a client change nor
                // hides one.
                // A change may be the echo of a delete the memory does not know: one of
                // the previous run's that its saved ledger does not list for sure, or
                // one of an unknown key after the memory evicted keys.
                let (taken, echo_unknown, replayed) = {
                    let mut echo = lock(&sh.echo);
                    let known = echo.knows(side, &ev.key);
                    let replaying = *replay == Replay::Possible;
                    let unknown =
                        (replaying && echo.unsure(side, &ev.key)) || (!known && echo.evicted_any());
                    let taken = echo.take_echo(side, &ev.key, &ev.kind, ev.server_time, (gen, seq));
                    echo.read_change(side, (gen, seq), &position);
                    (taken, unknown, replaying && !known)
                };
                let engine_write = taken.echo;
                tracing::debug!(
                    %side,
                    key = %ev.key,
                    op = ev.kind.name(),
                    at = %ev.server_time,
                    echo = engine_write,
                    "change read"
                );
                if engine_write && !sh.queue.contains(side, &ev.key) {
                    lock(&sh.trackers[ix(side)]).done(gen, seq);
                    continue;
                }
                let mut queued = QueuedEvent::new(ev, gen, seq);
                queued.engine_write = engine_write;
                queued.echo_unknown = echo_unknown;
                queued.replayed = replayed;
                if let Some(d) = taken.client_delete_before {
                    // A delete taken for an echo earlier was a client's.
                    queued.max_delete = Some(d);
                    queued.client_before = true;
                }
                let pushed = tokio::select! {
                    _ = stop.cancelled() => return End::Stopped,
                    old = sh.queue.push(queued) => old,
                };
                if let Some((gen, seq)) = pushed {
                    lock(&sh.trackers[ix(side)]).done(gen, seq);
                }
            }
            Ok(StreamItem::Progress(token)) => {
                *failures = 0;
                caught_up_signs += 1;
                if caught_up_signs >= 2 && *replay == Replay::Possible {
                    tracing::debug!(%side, "caught up with the changes of the previous run");
                    *replay = Replay::Over;
                    lock(&sh.echo).drop_seeded(side);
                }
                lock(&sh.trackers[ix(side)]).read_progress(token);
                sh.caught_up[ix(side)].fetch_add(1, Ordering::SeqCst);
            }
            Err(e) if e.is_history_lost() => return End::Lost(e),
            Err(e) => return End::Reopen(e),
        }
    }
}
