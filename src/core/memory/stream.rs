//! The in-memory change stream: walks the retained log from a sequence number, waits on
//! a watch channel when caught up, and reports `Progress` right after opening and then
//! once per idle second (like MongoDB's `postBatchResumeToken`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use super::{token, FaultOp, Shared};
use crate::core::doc::key_of;
use crate::core::error::StoreError;
use crate::core::store::ChangeStream;
use crate::core::types::{ChangeEvent, ChangeKind, StreamItem};

/// How long an idle stream waits before reporting progress.
const IDLE_PROGRESS: Duration = Duration::from_secs(1);

/// One open stream over a [`super::MemoryStore`].
pub(crate) struct MemoryStream {
    /// The collection.
    shared: Arc<Shared>,
    /// Sequence of the last change delivered (or the opening point).
    pos: u64,
    /// Store epoch at opening; a newer epoch means the stream was dropped.
    epoch: u64,
    /// Wakes the stream on new changes.
    rx: watch::Receiver<u64>,
    /// Whether the opening `Progress` was sent.
    opened: bool,
    /// Writer identity of the handle that opened it (see [`super::MemoryStore`]).
    writer: u64,
}

impl MemoryStream {
    pub(crate) fn new(shared: Arc<Shared>, pos: u64, epoch: u64, writer: u64) -> Self {
        let rx = shared.notify.subscribe();
        MemoryStream {
            shared,
            pos,
            epoch,
            rx,
            opened: false,
            writer,
        }
    }

    fn poll_now(&mut self) -> Option<Result<StreamItem, StoreError>> {
        let mut inner = self.shared.lock();
        if inner.epoch != self.epoch {
            return Some(Err(StoreError::transient(
                "change stream closed by the server",
            )));
        }
        if let Some(e) = inner.take_fault(FaultOp::Next) {
            return Some(Err(e));
        }
        if self.pos < inner.floor {
            return Some(Err(StoreError::history_lost(
                "stream fell off the retained history",
            )));
        }
        if self.pos < inner.seq {
            let first = inner.log.front().map(|e| e.seq).unwrap_or(inner.seq + 1);
            let idx = (self.pos + 1).saturating_sub(first) as usize;
            let e = inner.log.get(idx)?.clone();
            self.pos = e.seq;
            let key = match &e.kind {
                ChangeKind::Upsert(d) => key_of(d),
                ChangeKind::Delete => e.key.clone(),
            };
            return Some(Ok(StreamItem::Event(ChangeEvent {
                side: inner.side,
                key,
                kind: e.kind,
                token: token(e.seq),
                server_time: e.time,
                own: e.writer == Some(self.writer),
                pair: 0,
            })));
        }
        if !self.opened {
            self.opened = true;
            return Some(Ok(StreamItem::Progress(token(self.pos))));
        }
        None
    }
}

#[async_trait]
impl ChangeStream for MemoryStream {
    async fn next(&mut self) -> Result<StreamItem, StoreError> {
        loop {
            self.rx.borrow_and_update();
            if let Some(item) = self.poll_now() {
                return item;
            }
            match tokio::time::timeout(IDLE_PROGRESS, self.rx.changed()).await {
                Ok(_) => continue,
                Err(_) => {
                    if let Some(item) = self.poll_now() {
                        return item;
                    }
                    return Ok(StreamItem::Progress(token(self.pos)));
                }
            }
        }
    }
}
