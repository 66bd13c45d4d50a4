//! Filling one batch of a stream: events from history in order, each held to the 16 MiB
//! rule (whole, split into fragments, or refused with 10334), at most 16 MiB of events
//! per batch besides the first, the rest kept for the next `getMore`, and the batch's
//! postBatchResumeToken.

use bson::RawDocumentBuf;

use super::{history_lost, invalidate_event, split, ChangeStream, StreamBatch};
use crate::error::CmdResult;
use crate::oplog::Pos;
use crate::state::Inner;
use crate::token::{ResumeToken, TokenKind};

/// A rendered item waiting for the next batch.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    /// The event or fragment.
    pub(super) doc: RawDocumentBuf,
    /// Its resume token.
    pub(super) token: ResumeToken,
    /// It is an invalidate: returning it closes the stream.
    pub(super) closes: bool,
}

impl ChangeStream {
    /// Take up to `max` events from history (without waiting). A batch holds at most
    /// 16 MiB of events, except that its first item always goes in (as MongoDB's
    /// `getMore` does); what does not fit waits in `pending`.
    pub fn poll(&mut self, inner: &Inner, max: usize) -> CmdResult<StreamBatch> {
        if let Some(ts) = self.pending_invalidate.take() {
            self.closed = true;
            let wall = inner
                .oplog
                .event_at(Pos { ts, op: 0 })
                .map(|e| e.wall)
                .unwrap_or_else(bson::DateTime::now);
            return Ok(StreamBatch {
                events: vec![invalidate_event(ts, wall)?],
                post_batch_resume_token: ResumeToken::new(ts, TokenKind::Invalidate).to_document(),
            });
        }
        let mut batch = Batch {
            events: Vec::new(),
            bytes: 0,
            max,
            last: None,
        };
        while let Some(item) = self.pending.pop_front() {
            if !batch.fits(&item.doc) {
                self.pending.push_front(item);
                return Ok(self.finish(batch, inner, true));
            }
            let closes = item.closes;
            batch.push(item);
            if closes {
                self.closed = true;
                return Ok(self.finish(batch, inner, true));
            }
        }
        if inner.oplog.stream_lost(self.after) {
            return Err(history_lost());
        }
        let mut more = false;
        for ev in inner.oplog.events_after(self.after) {
            if batch.events.len() >= max || batch.bytes >= crate::state::MAX_BSON_SIZE {
                more = true;
                break;
            }
            self.after = ev.pos();
            if !self.sees(ev) {
                continue;
            }
            let rendered = self.render(ev, &inner.store)?;
            let mut items = match self.apply_pipeline(rendered)? {
                Some(out) => self.limit_size(out, ev.pos())?,
                None => Vec::new(),
            };
            if self.invalidated_by(ev) {
                items.push(Pending {
                    doc: invalidate_event(ev.ts, ev.wall)?,
                    token: ResumeToken::new(ev.ts, TokenKind::Invalidate),
                    closes: true,
                });
            }
            for item in items {
                if !self.pending.is_empty() || !batch.fits(&item.doc) {
                    self.pending.push_back(item);
                } else if item.closes {
                    self.closed = true;
                    batch.push(item);
                    return Ok(self.finish(batch, inner, true));
                } else {
                    batch.push(item);
                }
            }
            if !self.pending.is_empty() {
                more = true;
                break;
            }
        }
        Ok(self.finish(batch, inner, more))
    }

    /// The batch's reply: its postBatchResumeToken is the last item's token when the
    /// batch stopped early or ended on an event, else a high-water mark at the present.
    fn finish(&mut self, batch: Batch, inner: &Inner, more: bool) -> StreamBatch {
        if !more {
            let now = Pos::end_of(inner.oplog.now());
            if now.key() > self.after.key() {
                self.after = now;
            }
        }
        let pbrt = match batch.last {
            Some(last) if !self.pending.is_empty() || self.closed || last.pos() == self.after => {
                last
            }
            None if !self.pending.is_empty() => self.last_pbrt,
            _ => ResumeToken::after(self.after),
        };
        self.last_pbrt = pbrt;
        StreamBatch {
            events: batch.events,
            post_batch_resume_token: pbrt.to_document(),
        }
    }

    /// The 16 MiB rule for one event (after the user's stages): returned whole, split
    /// into fragments by `$changeStreamSplitLargeEvent`, or refused with 10334.
    fn limit_size(&mut self, event: RawDocumentBuf, ts: Pos) -> CmdResult<Vec<Pending>> {
        let size = event.as_bytes().len();
        let resumed = match self.resume_fragment {
            Some((at, n)) if at == ts => {
                self.resume_fragment = None;
                Some(usize::from(n))
            }
            Some((at, _)) if at.key() < ts.key() => {
                self.resume_fragment = None;
                None
            }
            _ => None,
        };
        let whole = |doc| Pending {
            doc,
            token: ResumeToken::event(ts),
            closes: false,
        };
        if !self.splits {
            if size > split::MAX_INTERNAL_SIZE {
                return Err(split::too_large(&event, size));
            }
            return Ok(vec![whole(event)]);
        }
        if size <= split::MAX_EVENT_SIZE {
            if resumed.is_some() {
                return Err(split::different_split());
            }
            return Ok(vec![whole(event)]);
        }
        let fragments = split::split(&event, ts)?;
        let skip = resumed.map_or(0, |n| n + 1);
        if skip > fragments.len() {
            return Err(split::different_split());
        }
        Ok(fragments
            .into_iter()
            .skip(skip)
            .map(|(doc, token)| Pending {
                doc,
                token,
                closes: false,
            })
            .collect())
    }
}

/// A batch being filled.
struct Batch {
    /// Items taken.
    events: Vec<RawDocumentBuf>,
    /// Their total size.
    bytes: usize,
    /// Most items.
    max: usize,
    /// The last item's token.
    last: Option<ResumeToken>,
}

impl Batch {
    /// Whether `doc` may join: the first item always does (MongoDB returns one object
    /// of any size it could serialise), later ones while the batch stays within 16 MiB.
    fn fits(&self, doc: &RawDocumentBuf) -> bool {
        self.events.len() < self.max
            && (self.events.is_empty()
                || self.bytes + doc.as_bytes().len() <= crate::state::MAX_BSON_SIZE)
    }
    fn push(&mut self, item: Pending) {
        self.bytes += item.doc.as_bytes().len();
        self.events.push(item.doc);
        self.last = Some(item.token);
    }
}
