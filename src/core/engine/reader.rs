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

/// Run `side`'s reader until `stop` is cancelled.
pub(crate) async fn run(sh: Arc<Shared>, side: Side, stop: CancellationToken) {
    let mut failures = 0u32;
    let mut fresh = false; // history lost: ignore the saved checkpoint
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
                    Ok(Some(t)) => Some(t),
                    Ok(None) => None,
                    Err(_) => break,
                },
            }
        };
        let needs_reconcile = from.is_none();
        if needs_reconcile {
            lock(&sh.trackers[ix(side)]).reset();
            lock(&sh.saved)[ix(side)] = None;
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
        match stream_loop(&sh, side, stream.as_mut(), &stop, &mut failures).await {
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
                let (gen, seq) = lock(&sh.trackers[ix(side)]).read_event(token);
                tracing::debug!(
                    %side,
                    key = %ev.key,
                    op = ev.kind.name(),
                    at = %ev.server_time,
                    own = ev.own,
                    "change read"
                );
                if ev.own {
                    // The engine's own write coming back (the store says so): no client
                    // changed anything, so there is nothing to decide.
                    lock(&sh.trackers[ix(side)]).done(gen, seq);
                    continue;
                }
                let pushed = tokio::select! {
                    _ = stop.cancelled() => return End::Stopped,
                    old = sh.queue.push(QueuedEvent::new(ev, gen, seq)) => old,
                };
                if let Some((gen, seq)) = pushed {
                    lock(&sh.trackers[ix(side)]).done(gen, seq);
                }
            }
            Ok(StreamItem::Progress(token)) => {
                *failures = 0;
                lock(&sh.trackers[ix(side)]).read_progress(token);
                sh.caught_up[ix(side)].fetch_add(1, Ordering::SeqCst);
            }
            Err(e) if e.is_history_lost() => return End::Lost(e),
            Err(e) => return End::Reopen(e),
        }
    }
}
