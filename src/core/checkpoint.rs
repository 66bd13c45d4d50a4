//! Which resume token of a side is safe to save. Every event read gets a read-sequence
//! number; while it is pending (queued or in flight) we keep the token *before* it. The
//! safe checkpoint is the token before the smallest pending sequence, or the newest token
//! read when nothing is pending. Memory is one token per pending queue entry, not per
//! event read: an event coalesced into an existing entry is done at once, the entry
//! keeping the position of its first event. Pending tokens are kept as their BSON
//! bytes (a parsed one-field document costs several times more).

use std::collections::BTreeMap;

use bson::{Document, RawDocument, RawDocumentBuf};

use crate::core::types::ResumeToken;

/// A resume token as the tracker keeps it.
#[derive(Debug, Clone)]
enum Stored {
    /// Its BSON bytes (always, in practice).
    Bytes(Box<[u8]>),
    /// A token that cannot be encoded (a key with a NUL byte), kept as it is.
    Parsed(Document),
}

impl Stored {
    fn new(token: ResumeToken) -> Stored {
        match RawDocumentBuf::from_document(&token.0) {
            Ok(raw) => Stored::Bytes(raw.into_bytes().into_boxed_slice()),
            Err(_) => Stored::Parsed(token.0),
        }
    }

    fn token(&self) -> ResumeToken {
        match self {
            // Justified: the bytes were encoded from a `Document` by `Stored::new`.
            Stored::Bytes(b) => ResumeToken(
                RawDocument::from_bytes(b)
                    .and_then(Document::try_from)
                    .expect("bytes encoded from a Document decode back"),
            ),
            Stored::Parsed(d) => ResumeToken(d.clone()),
        }
    }
}

/// Checkpoint bookkeeping of one side's stream.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    /// Generation of the current stream; bumped on history loss so stale pending
    /// events cannot hold back (or leak tokens into) the new stream's checkpoint.
    gen: u64,
    /// Next read-sequence number.
    next_seq: u64,
    /// Pending events: read-sequence → token just before the event (`None` when the
    /// stream was opened without a token and nothing was read before it).
    pending: BTreeMap<u64, Option<Stored>>,
    /// Token after the newest item read (event or progress).
    latest: Option<ResumeToken>,
}

impl Tracker {
    /// A stream was (re)opened at `from` in the same generation: the next event's
    /// predecessor is `from`.
    pub(crate) fn reopened(&mut self, from: Option<ResumeToken>) {
        self.latest = from;
    }

    /// Start a new generation (after history loss): forget everything pending.
    pub(crate) fn reset(&mut self) {
        self.gen += 1;
        self.pending.clear();
        self.latest = None;
    }

    /// Record a read event whose resume token is `token`; returns its (gen, seq).
    pub(crate) fn read_event(&mut self, token: ResumeToken) -> (u64, u64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let before = self.latest.replace(token).map(Stored::new);
        self.pending.insert(seq, before);
        (self.gen, seq)
    }

    /// Record a progress token (nothing between the last item and it).
    pub(crate) fn read_progress(&mut self, token: ResumeToken) {
        self.latest = Some(token);
    }

    /// The event (gen, seq) was applied, skipped or superseded.
    pub(crate) fn done(&mut self, gen: u64, seq: u64) {
        if gen == self.gen {
            self.pending.remove(&seq);
        }
    }

    /// Where a stream of the same process reopens: after the newest item read. Events
    /// read but not yet applied are still queued, so nothing is skipped, and none is
    /// decided twice. Falls back to [`Self::safe`] before the first item.
    pub(crate) fn reopen_point(&self) -> Option<ResumeToken> {
        self.latest.clone().or_else(|| self.safe())
    }

    /// The token it is safe to resume after, if any.
    pub(crate) fn safe(&self) -> Option<ResumeToken> {
        match self.pending.values().next() {
            Some(before) => before.as_ref().map(Stored::token),
            None => self.latest.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn t(n: i64) -> ResumeToken {
        ResumeToken(doc! {"seq": n})
    }

    #[test]
    fn checkpoint_never_passes_unapplied_event() {
        let mut tr = Tracker::default();
        tr.reopened(Some(t(0)));
        let a = tr.read_event(t(1));
        let b = tr.read_event(t(2));
        let c = tr.read_event(t(3));
        assert_eq!(tr.safe(), Some(t(0)));
        tr.done(b.0, b.1);
        tr.done(c.0, c.1);
        // `a` is still unapplied: the checkpoint stays before it.
        assert_eq!(tr.safe(), Some(t(0)));
        tr.done(a.0, a.1);
        assert_eq!(tr.safe(), Some(t(3)));
        tr.read_progress(t(9));
        assert_eq!(tr.safe(), Some(t(9)));
    }

    #[test]
    fn a_reopened_stream_resumes_after_the_newest_read_item() {
        let mut tr = Tracker::default();
        assert_eq!(tr.reopen_point(), None);
        tr.reopened(Some(t(0)));
        let a = tr.read_event(t(1));
        tr.read_event(t(2));
        // Both still queued: saving must stay before them, but a stream reopened by
        // this process must not deliver them a second time.
        assert_eq!(tr.safe(), Some(t(0)));
        assert_eq!(tr.reopen_point(), Some(t(2)));
        tr.reopened(tr.reopen_point());
        tr.done(a.0, a.1);
        assert_eq!(tr.safe(), Some(t(1)), "the second event is still pending");
    }

    #[test]
    fn stale_generation_is_ignored_after_reset() {
        let mut tr = Tracker::default();
        let a = tr.read_event(t(1));
        tr.reset();
        tr.read_progress(t(50));
        let b = tr.read_event(t(51));
        tr.done(a.0, a.1);
        assert_eq!(tr.safe(), Some(t(50)));
        tr.done(b.0, b.1);
        assert_eq!(tr.safe(), Some(t(51)));
    }
}
