//! Echo memory: the engine's own recent writes, so that when a write comes back on the
//! target's change stream it is recognised and dropped without any store call. Bounded
//! (oldest entries evicted first) and in memory only: after a restart, echoes are caught
//! by the conditional writes instead (a byte-identical no-op, or a compare) and by the
//! tombstone rule for deletes.
//!
//! Deletes carry no content to compare, so an expected delete echo also remembers the
//! delete time it propagates (`DeleteIfNotNewer { deleted_at }`). The engine's delete
//! happens after that delete (it propagates it), so its echo's server time is not
//! before `deleted_at` minus the allowed clock skew between the two servers; an older
//! delete of the same key still unread in the stream is a client's, and is not taken
//! for the echo (which would leave the real echo to pass for a client delete stamped
//! later than the change it propagates, beating client writes made in between).
//! Nor is a delete made before the newest change already read from that side when the
//! write was recorded: the engine writes after reading it, and one server's clock does
//! not go back, so such a delete (say a client deleting the key again, still unread)
//! is a client's too. Nor, for a delete that removes a version the stream has not shown
//! yet (the engine reads what each delete is about to remove), a delete read before
//! that version's upsert. When the stream had shown nothing of the key, the version may
//! predate the stream and never be shown: the first delete is then taken, in doubt
//! until the key's next delete, and restored as expected if that version's upsert
//! follows it.

//!
//! After a restart the memory starts with the deletes of the previous run still pending
//! (see [`EchoMemory::seed`]): the engine keeps a ledger of the conditional deletes it
//! wrote whose echo the side's saved checkpoint has not passed yet. It is saved before
//! they are sent (as tentative entries), once they returned (those that found nothing
//! are left out) and with every checkpoint, so a stream replaying from that checkpoint
//! recognises their echoes — even for a key whose tombstone was superseded since. Each
//! entry keeps the resume token of the newest change read from the side when its delete
//! was sent (unless the saved checkpoint is past that change): the echo follows that
//! change, so a replayed delete read before it (say the client delete the engine
//! propagated) is not taken for it. Only
//! deletes known to have removed something are expected after a restart: one that
//! found nothing has no echo, and its entry would take the next client delete of the
//! key for one. A tentative entry (a crash while its delete was in flight) leaves its
//! key to the tombstone rule instead, as does every key when the saved list is
//! incomplete (see [`DeleteLedger::complete`]); with a complete list, the replayed
//! deletes of other keys are clients'. Entries of the previous run still unmatched once
//! the stream has caught up are dropped ([`EchoMemory::drop_seeded`]).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bson::DateTime;

use crate::core::doc::{content_hash, updated_at};
use crate::core::queue::EntryDelete;
use crate::core::types::{
    ChangeKind, DeleteLedger, Key, PendingDelete, RemovedVersion, ResumeToken, Side, Write,
};

/// Default number of remembered writes.
pub(crate) const ECHO_CAPACITY: usize = 100_000;

/// Most ledger entries per side: past it, deletes are not ledgered (their echoes after
/// a restart are left to the tombstone rule), which keeps the saved list well under
/// MongoDB's 16 MiB document limit and every save small.
pub(crate) const LEDGER_CAPACITY: usize = 2_000;

/// Where in a side's stream a ledgered delete's echo comes.
#[derive(Debug, Clone)]
enum After {
    /// Anywhere a restart replays.
    Start,
    /// After the change with this resume token: read at this mark (gen, seq) in this
    /// run, or (`None`) not read again yet by a run replaying it.
    Change(Option<(u64, u64)>, ResumeToken),
}

/// A ledgered delete: one the engine wrote whose echo a restart may replay.
#[derive(Debug, Clone)]
struct Ledgered {
    /// The propagated delete time.
    at: Option<DateTime>,
    /// Read mark (gen, seq) of its echo, once read.
    read: Option<(u64, u64)>,
    /// The write returned and removed a document (or the previous run's entry says so).
    /// Otherwise it is in flight, or a tentative entry of the previous run (never
    /// matched: it may have found nothing).
    applied: bool,
    /// Loaded from the previous run.
    seeded: bool,
    /// Where its echo comes.
    after: After,
    /// The version it was about to remove.
    removes: Option<RemovedVersion>,
}

impl Ledgered {
    /// Whether its echo may be the next change read (not a seeded entry waiting for the
    /// replay to pass the change it follows).
    fn armed(&self) -> bool {
        !matches!(self.after, After::Change(None, _))
    }

    /// A write of this run still in flight.
    fn in_flight(&self) -> bool {
        !self.applied && !self.seeded
    }

    /// Its echo is expected now (in flight or applied; not a previous run's tentative
    /// one, nor one whose position the replay has not reached).
    fn expected(&self) -> bool {
        (self.applied || !self.seeded) && self.armed()
    }

    /// Where a checkpoint whose every event before read mark `cut` is done (`None`: the
    /// one the run started from) replays its echo from.
    fn saved_after(&self, cut: Option<(u64, u64)>) -> Option<ResumeToken> {
        match &self.after {
            After::Start => None,
            After::Change(Some(m), _) if cut.is_some_and(|c| before(*m, c)) => None,
            After::Change(_, t) => Some(t.clone()),
        }
    }
}

/// What the engine wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Echo {
    /// A document with this content hash.
    Doc(u64),
    /// A delete propagating one made at this time (`None`: unconditional, any time).
    Deleted(Option<DateTime>),
}

impl Echo {
    /// The echo `write` will produce if applied.
    pub(crate) fn of_write(write: &Write) -> Echo {
        match write {
            Write::UpsertIfNewer { doc, .. } | Write::Replace { doc, .. } => {
                Echo::Doc(content_hash(doc))
            }
            Write::DeleteIfNotNewer { deleted_at, .. } => Echo::Deleted(Some(*deleted_at)),
            Write::Delete { .. } => Echo::Deleted(None),
        }
    }
}

/// An expected echo.
#[derive(Debug, Clone, Copy)]
struct Expected {
    /// What the engine wrote.
    echo: Echo,
    /// Server time of the newest change read from the target side when the write was
    /// recorded: the write's own change is not older.
    not_before: Option<DateTime>,
    /// A delete that can only have removed a document the stream has not shown yet (see
    /// [`Seen`]): its echo follows an upsert of the key not read yet.
    after_upsert: bool,
    /// For a delete: the version it is about to remove (read just before it is sent).
    removes: Option<Removes>,
}

/// The version a delete of the engine is about to remove. Its echo comes after that
/// version's upsert event, so a delete read before it is a client's (say one that
/// removed an older version, and the key was re-created since).
#[derive(Debug, Clone, Copy)]
struct Removes {
    /// Which version.
    version: RemovedVersion,
    /// The stream has shown it.
    shown: bool,
    /// The stream had shown the key when the delete was recorded. Otherwise the version
    /// may predate what the stream shows (its upsert event never comes), so the echo is
    /// not held back; a delete taken for it is doubted until the key's next delete (see
    /// [`Doubted`]).
    followed: bool,
}

/// A delete taken for the echo of an expected delete whose removed version the stream
/// had not shown ([`Removes::followed`] false). If that version's upsert is read next,
/// the delete came before it and was a client's: the expectation is restored, so the
/// real echo, still to come, is recognised.
#[derive(Debug, Clone, Copy)]
struct Doubted {
    /// The expectation the delete consumed.
    expected: Expected,
    /// Read mark of the delete.
    mark: (u64, u64),
    /// Its server time.
    at: DateTime,
    /// `updatedAt` of the version the stream showed just before it.
    removed: Option<DateTime>,
}

impl Expected {
    /// Whether a change of `kind` made at server time `at` can be this write's echo,
    /// the servers' clocks differing by up to `skew`.
    fn matches(&self, kind: &ChangeKind, at: DateTime, skew: Duration) -> bool {
        match (self.echo, kind) {
            (Echo::Doc(h), ChangeKind::Upsert(d)) => h == content_hash(d),
            (Echo::Deleted(w), ChangeKind::Delete) => {
                let skew = i64::try_from(skew.as_millis()).unwrap_or(i64::MAX);
                let after_propagated = w.is_none_or(|w| {
                    at.timestamp_millis() >= w.timestamp_millis().saturating_sub(skew)
                });
                after_propagated
                    && !self.after_upsert
                    && self.not_before.is_none_or(|n| at >= n)
                    && self.removes.is_none_or(|r| r.shown || !r.followed)
            }
            _ => false,
        }
    }
}

/// Writes remembered per (side, key): the engine may write a key twice in a row (a
/// delete, then the winner written back) and both come back on the stream.
const PER_KEY: usize = 4;

/// The engine's recent writes to one (side, key).
#[derive(Debug, Default)]
struct KeyEchoes {
    /// Writes whose echo has not come back yet, oldest first.
    pending: Vec<Expected>,
    /// Its latest place in [`EchoMemory::order`] (earlier places there are stale).
    stamp: u64,
    /// The target side's read mark (gen, next seq) when the latest write that changed
    /// the document was recorded.
    applied: Option<(u64, u64)>,
    /// The key's latest change read from the target side since the memory follows it.
    seen: Option<Seen>,
    /// `updatedAt` of the version the engine's latest write here copied from a client of
    /// the other side (see [`EchoMemory::copied_client_version`]).
    client_copy: Option<DateTime>,
    /// The latest delete taken for an echo, while it is in doubt. Rare, and this
    /// struct is kept for up to [`ECHO_CAPACITY`] keys: boxed.
    doubted: Option<Box<Doubted>>,
}

/// Upserts remembered per key in [`EchoMemory::recent`].
const SHOWN: usize = 4;

/// Keys followed by [`EchoMemory::recent`] (first read, first forgotten).
const RECENT_KEYS: usize = 16_384;

/// A key's latest change read from a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// A document with this `updatedAt` (`None`: missing or not a date).
    Doc(Option<DateTime>),
    /// A delete.
    Gone,
}

impl Seen {
    /// Whether a delete of everything not newer than `w` (`None`: of anything) cannot
    /// remove what the stream last showed: if it removes a document, one the stream
    /// has not shown yet (a re-creation or an update), whose upsert event comes first.
    fn spares(self, w: Option<DateTime>) -> bool {
        match (self, w) {
            (Seen::Gone, _) => true,
            (Seen::Doc(Some(u)), Some(w)) => u > w,
            (Seen::Doc(_), _) => false,
        }
    }
}

/// What [`EchoMemory::take_echo`] made of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Taken {
    /// The change is the engine's own write.
    pub(crate) echo: bool,
    /// A delete read before this upsert and taken for an echo then was a client's (see
    /// [`Doubted`]): the queue counts it as a client delete coalesced before the upsert.
    pub(crate) client_delete_before: Option<EntryDelete>,
}

/// Recent engine writes by (target side, key).
#[derive(Debug)]
pub(crate) struct EchoMemory {
    /// What is remembered per (side, key).
    entries: HashMap<(Side, Key), KeyEchoes>,
    /// Eviction order: a key is (re)queued with a new stamp when a write is recorded
    /// while nothing of it is pending; places whose stamp is no longer the key's are
    /// stale, skipped and compacted away (so this stays within a small multiple of
    /// `entries`, however often the same keys are written).
    order: VecDeque<(u64, Side, Key)>,
    /// Stamp of the next place in `order`.
    next_stamp: u64,
    /// Maximum (side, key) entries.
    capacity: usize,
    /// Allowed clock difference between the two servers (see the module docs).
    skew: Duration,
    /// Per side (local, cloud): server time of the newest change read.
    last_read: [Option<DateTime>; 2],
    /// Whether a key was ever evicted (its echoes can no longer be recognised).
    evicted: bool,
    /// Name of the `updatedAt` field.
    field: String,
    /// Per side: ledgered deletes by key (see the module docs).
    ledger: [HashMap<Key, Vec<Ledgered>>; 2],
    /// Per side: number of ledger entries.
    ledger_len: [usize; 2],
    /// Per side: the ledger changed since it was last taken for saving.
    ledger_grew: [bool; 2],
    /// Per side: this run did not ledger, or dropped, a delete whose echo may still come
    /// (a full ledger, a key dropped from the memory): saved lists are incomplete.
    lossy: [bool; 2],
    /// Per side: the previous run's list was incomplete, and its changes are still
    /// being replayed (until [`EchoMemory::drop_seeded`]).
    inherited_lossy: [bool; 2],
    /// Per (side, key) recently read, engine writes or not: `updatedAt`s of the latest
    /// upserts read since the key was first read (newest last, at most [`SHOWN`]).
    recent: HashMap<(Side, Key), Vec<DateTime>>,
    /// Order in which keys entered `recent`.
    recent_order: VecDeque<(Side, Key)>,
    /// Per side: read mark and resume token of the newest change read.
    last_change: [Option<((u64, u64), ResumeToken)>; 2],
    /// Per side: read mark of the latest checkpoint this run saved.
    saved_mark: [Option<(u64, u64)>; 2],
    /// Per side: keys of seeded entries waiting for the replay to pass a change, by that
    /// change's resume token (encoded).
    waiting: [HashMap<Vec<u8>, Vec<Key>>; 2],
}

/// Whether `e`'s echo was read before read mark `safe` (same stream generation), or in
/// an earlier generation.
fn passed(e: &Ledgered, safe: Option<(u64, u64)>) -> bool {
    match (e.read, safe) {
        (Some(r), Some(s)) => before(r, s),
        _ => false,
    }
}

/// Whether read mark `a` is before `b` (an earlier generation, or earlier in the same).
fn before(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.0 || (a.0 == b.0 && a.1 < b.1)
}

/// A resume token as a map key (`None` when it cannot be encoded).
fn token_key(t: &ResumeToken) -> Option<Vec<u8>> {
    bson::to_vec(&t.0).ok()
}

fn side_ix(side: Side) -> usize {
    match side {
        Side::Local => 0,
        Side::Cloud => 1,
    }
}

impl EchoMemory {
    /// Empty memory holding up to `capacity` keys, for servers whose clocks differ by
    /// up to `skew`, documents carrying their version in `field`.
    pub(crate) fn new(capacity: usize, skew: Duration, field: &str) -> Self {
        EchoMemory {
            field: field.to_string(),
            entries: HashMap::new(),
            order: VecDeque::new(),
            next_stamp: 0,
            capacity: capacity.max(1),
            skew,
            last_read: [None; 2],
            evicted: false,
            ledger: Default::default(),
            ledger_len: [0; 2],
            ledger_grew: [false; 2],
            lossy: [false; 2],
            inherited_lossy: [false; 2],
            recent: HashMap::new(),
            recent_order: VecDeque::new(),
            last_change: [None, None],
            saved_mark: [None; 2],
            waiting: Default::default(),
        }
    }

    /// Remember that the engine is writing `write` to `side` ([`Self::record`]), and
    /// ledger it if it is a conditional delete (see the module docs).
    pub(crate) fn expect_write(&mut self, side: Side, write: &Write) {
        self.expect_write_removing(side, write, None);
    }

    /// [`Self::expect_write`], for a delete known to be about to remove the version
    /// `removes` (see [`Expected::removes`]).
    pub(crate) fn expect_write_removing(
        &mut self,
        side: Side,
        write: &Write,
        removes: Option<RemovedVersion>,
    ) {
        let (key, echo) = (write.key(), Echo::of_write(write));
        // When the memory has followed the key's changes, a version not shown recently
        // is one the stream has yet to show (the key changed since the latest change
        // read).
        let expected = removes
            .filter(|_| matches!(echo, Echo::Deleted(_)))
            .map(|version| {
                let recent = self.recent.get(&(side, key.clone()));
                let shown = recent.map(|r| r.contains(&version.updated_at));
                Removes {
                    version,
                    shown: shown == Some(true),
                    followed: shown.is_some(),
                }
            });
        self.record(side, key, echo, expected);
        if matches!(write, Write::DeleteIfNotNewer { .. }) {
            self.ledger_delete(side, key, echo, removes);
        }
    }

    /// Expect the echo of the previous run's delete at `at` of `side`'s `key`, which was
    /// about to remove `removes`: the memory does not follow the key, so a delete taken
    /// for it stays in doubt until that version shows (see [`Doubted`]).
    fn expect_seeded(
        &mut self,
        side: Side,
        key: &Key,
        at: Option<DateTime>,
        removes: Option<RemovedVersion>,
    ) {
        let expected = removes.map(|version| Removes {
            version,
            shown: false,
            followed: false,
        });
        self.record(side, key, Echo::Deleted(at), expected);
    }

    /// Ledger the delete `echo` the engine is about to write to `side` (after
    /// [`Self::record`]), about to remove `removes`; false when the ledger is full.
    pub(crate) fn ledger_delete(
        &mut self,
        side: Side,
        key: &Key,
        echo: Echo,
        removes: Option<RemovedVersion>,
    ) -> bool {
        let Echo::Deleted(at) = echo else {
            return false;
        };
        let i = side_ix(side);
        if self.ledger_len[i] >= LEDGER_CAPACITY {
            self.lossy[i] = true;
            return false;
        }
        self.ledger_grew[i] = true;
        let after = match &self.last_change[i] {
            Some((m, t)) => After::Change(Some(*m), t.clone()),
            None => After::Start,
        };
        self.ledger[i]
            .entry(key.clone())
            .or_default()
            .push(Ledgered {
                at,
                read: None,
                applied: false,
                seeded: false,
                after,
                removes,
            });
        self.ledger_len[i] += 1;
        true
    }

    /// The ledgered delete at `at` of `side`'s `key` returned having removed a document:
    /// it is saved from now on (if its echo has not been passed meanwhile).
    pub(crate) fn ledger_applied(&mut self, side: Side, key: &Key, at: Option<DateTime>) {
        let i = side_ix(side);
        if let Some(e) = self.ledger[i]
            .get_mut(key)
            .and_then(|l| l.iter_mut().find(|e| e.in_flight() && e.at == at))
        {
            e.applied = true;
            self.ledger_grew[i] = true;
        }
    }

    /// Remove one ledger entry of `side`'s `key` matching `pick`.
    fn unledger(&mut self, side: Side, key: &Key, pick: impl Fn(&Ledgered) -> bool) -> bool {
        let i = side_ix(side);
        let Some(list) = self.ledger[i].get_mut(key) else {
            return false;
        };
        let Some(pos) = list.iter().position(pick) else {
            return false;
        };
        list.remove(pos);
        if list.is_empty() {
            self.ledger[i].remove(key);
        }
        self.ledger_len[i] -= 1;
        self.ledger_grew[i] = true;
        true
    }

    /// Undo [`Self::ledger_read`] of the entry of a delete at `at` read at `mark`. An
    /// entry dropped meanwhile (a saved checkpoint passed `mark`) leaves the saved lists
    /// incomplete.
    fn ledger_unread(&mut self, side: Side, key: &Key, at: Option<DateTime>, mark: (u64, u64)) {
        let i = side_ix(side);
        match self.ledger[i]
            .get_mut(key)
            .and_then(|l| l.iter_mut().find(|e| e.read == Some(mark) && e.at == at))
        {
            Some(e) => {
                e.read = None;
                self.ledger_grew[i] = true;
            }
            None => self.lossy[i] = true,
        }
    }

    /// Mark the oldest unread ledger entry of a delete at `at` read at `mark`.
    fn ledger_read(&mut self, side: Side, key: &Key, at: Option<DateTime>, mark: (u64, u64)) {
        if let Some(e) = self.ledger[side_ix(side)].get_mut(key).and_then(|l| {
            l.iter_mut()
                .find(|e| e.expected() && e.read.is_none() && e.at == at)
        }) {
            e.read = Some(mark);
        }
    }

    /// `side`'s ledger as it should be saved with a checkpoint whose every event before
    /// read mark `safe` is done (entries whose echo was read before it are left out),
    /// or alone (`safe` = `None`). Writes still in flight are tentative. Clears the
    /// "grew" flag.
    pub(crate) fn pending_deletes(&mut self, side: Side, safe: Option<(u64, u64)>) -> DeleteLedger {
        let i = side_ix(side);
        self.ledger_grew[i] = false;
        let passed = |e: &Ledgered| passed(e, safe);
        let cut = safe.or(self.saved_mark[i]);
        let deletes = self.ledger[i]
            .iter()
            .flat_map(|(k, l)| {
                l.iter().filter(|e| !passed(e)).map(|e| PendingDelete {
                    key: k.clone(),
                    deleted_at: e.at,
                    tentative: !e.applied,
                    after: e.saved_after(cut),
                    removes: e.removes,
                })
            })
            .collect();
        DeleteLedger {
            deletes,
            complete: !self.lossy[i] && !self.inherited_lossy[i],
        }
    }

    /// Whether `side`'s ledger changed since it was last taken for saving.
    pub(crate) fn ledger_grew(&self, side: Side) -> bool {
        self.ledger_grew[side_ix(side)]
    }

    /// Whether, while `side`'s stream replays the previous run's changes, a delete of
    /// `key` may be the echo of one of that run's deletes the memory does not expect:
    /// its list was incomplete (and the memory does not follow the key), or has a
    /// tentative entry for the key.
    pub(crate) fn unsure(&self, side: Side, key: &Key) -> bool {
        let i = side_ix(side);
        (self.inherited_lossy[i] && !self.knows(side, key))
            || self.ledger[i]
                .get(key)
                .is_some_and(|l| l.iter().any(|e| e.seeded && !e.applied))
    }

    /// A checkpoint of `side` whose every event before read mark `safe` is done was
    /// saved: forget the entries whose echo was read before it.
    pub(crate) fn checkpoint_saved(&mut self, side: Side, safe: (u64, u64)) {
        let i = side_ix(side);
        self.saved_mark[i] = Some(safe);
        let mut removed = 0;
        self.ledger[i].retain(|_, l| {
            let n = l.len();
            l.retain(|e| !passed(e, Some(safe)));
            removed += n - l.len();
            !l.is_empty()
        });
        self.ledger_len[i] -= removed;
    }

    /// Forget `side`'s ledger and recently read changes (its stream starts afresh:
    /// nothing before is replayed, and changes in between are never shown).
    pub(crate) fn clear_ledger(&mut self, side: Side) {
        self.drop_seeded(side);
        let i = side_ix(side);
        self.ledger[i].clear();
        self.ledger_len[i] = 0;
        self.ledger_grew[i] = false;
        self.lossy[i] = false;
        self.last_change[i] = None;
        self.saved_mark[i] = None;
        // What the old stream showed says nothing of what the new one will.
        self.recent.retain(|(s, _), _| *s != side);
        self.recent_order.retain(|(s, _)| *s != side);
    }

    /// Start `side` with the previous run's pending deletes: the echoes of those known
    /// to have removed a document are expected, once the replay has passed the change
    /// each follows ([`PendingDelete::after`], see [`Self::read_change`]); tentative
    /// ones only make their key [`Self::unsure`]. All stay ledgered until passed, or
    /// until the stream catches up.
    pub(crate) fn seed(&mut self, side: Side, pending: &DeleteLedger) {
        let i = side_ix(side);
        self.inherited_lossy[i] = !pending.complete || pending.deletes.len() > LEDGER_CAPACITY;
        for p in pending.deletes.iter().take(LEDGER_CAPACITY) {
            // A token that cannot be encoded cannot be waited for: expected anywhere.
            let wait = p
                .after
                .as_ref()
                .and_then(|t| Some((t.clone(), token_key(t)?)));
            let after = match wait {
                Some((t, bytes)) => {
                    self.waiting[i]
                        .entry(bytes)
                        .or_default()
                        .push(p.key.clone());
                    After::Change(None, t)
                }
                None => {
                    if !p.tentative {
                        self.expect_seeded(side, &p.key, p.deleted_at, p.removes);
                    }
                    After::Start
                }
            };
            self.ledger[i]
                .entry(p.key.clone())
                .or_default()
                .push(Ledgered {
                    at: p.deleted_at,
                    read: None,
                    applied: !p.tentative,
                    seeded: true,
                    after,
                    removes: p.removes,
                });
            self.ledger_len[i] += 1;
        }
    }

    /// `side`'s stream showed the change with `token`, read at `mark` (after
    /// [`Self::take_echo`]): seeded deletes that follow it are expected from now on.
    pub(crate) fn read_change(&mut self, side: Side, mark: (u64, u64), token: &ResumeToken) {
        let i = side_ix(side);
        self.last_change[i] = Some((mark, token.clone()));
        if self.waiting[i].is_empty() {
            return;
        }
        let Some(keys) = token_key(token).and_then(|b| self.waiting[i].remove(&b)) else {
            return;
        };
        for key in keys {
            let mut armed = Vec::new();
            for e in self.ledger[i].get_mut(&key).into_iter().flatten() {
                if matches!(&e.after, After::Change(None, t) if t == token) {
                    e.after = After::Change(Some(mark), token.clone());
                    if e.applied {
                        armed.push((e.at, e.removes));
                    }
                }
            }
            for (at, removes) in armed {
                self.expect_seeded(side, &key, at, removes);
            }
        }
    }

    /// `side`'s stream caught up with the previous run's changes: the seeded deletes
    /// whose echo did not come never will (their writes found nothing, or were never
    /// sent); forget them, so they cannot pass for a later client delete.
    pub(crate) fn drop_seeded(&mut self, side: Side) {
        let i = side_ix(side);
        self.inherited_lossy[i] = false;
        self.waiting[i].clear();
        let stale: Vec<(Key, Option<DateTime>, bool)> = self.ledger[i]
            .iter()
            .flat_map(|(k, l)| {
                l.iter()
                    .filter(|e| e.seeded && e.read.is_none())
                    .map(|e| (k.clone(), e.at, e.expected()))
            })
            .collect();
        for (k, at, expected) in stale {
            self.unledger(side, &k, |e| {
                e.seeded && e.read.is_none() && e.at == at && e.expected() == expected
            });
            if expected {
                // Seeded first: the oldest such expectation (a later one may be a
                // write of this run, still to come back).
                if let Some(ke) = self.entries.get_mut(&(side, k)) {
                    let echo = Echo::Deleted(at);
                    if let Some(p) = ke.pending.iter().position(|e| e.echo == echo) {
                        ke.pending.remove(p);
                    }
                }
            }
        }
    }

    /// Remember that the engine is writing `echo` to `side` (call before the write, so
    /// the reader can recognise the echo whenever it arrives; [`Self::forget`] it if the
    /// write changed nothing); `removes`: for a delete, the version it is about to
    /// remove.
    fn record(&mut self, side: Side, key: &Key, echo: Echo, removes: Option<Removes>) {
        let not_before = self.last_read[side_ix(side)];
        let k = self.entries.entry((side, key.clone())).or_default();
        let after_upsert = match echo {
            Echo::Deleted(w) => k.seen.is_some_and(|s| s.spares(w)),
            Echo::Doc(_) => false,
        };
        k.client_copy = None;
        let list = &mut k.pending;
        if list.is_empty() {
            k.stamp = self.next_stamp;
            self.next_stamp += 1;
            self.order.push_back((k.stamp, side, key.clone()));
        }
        if list.capacity() == 0 {
            // Usually the only one: up to `ECHO_CAPACITY` keys keep this allocation.
            list.reserve_exact(1);
        }
        list.push(Expected {
            echo,
            not_before,
            after_upsert,
            removes,
        });
        let dropped = (list.len() > PER_KEY).then(|| list.remove(0).echo);
        if let Some(Echo::Deleted(at)) = dropped {
            // No longer recognised here: nor after a restart.
            if self.unledger(side, key, |e| {
                e.expected() && e.read.is_none() && e.at == at
            }) {
                self.lossy[side_ix(side)] = true;
            }
        }
        while self.entries.len() > self.capacity {
            match self.order.pop_front() {
                Some((stamp, side, key)) => {
                    let old = (side, key);
                    if self.entries.get(&old).is_none_or(|k| k.stamp != stamp) {
                        continue; // stale: the key was queued again since
                    }
                    self.entries.remove(&old);
                    self.evicted = true;
                    // Its echo can no longer be recognised here either.
                    let i = side_ix(old.0);
                    if let Some(l) = self.ledger[i].remove(&old.1) {
                        self.ledger_len[i] -= l.len();
                        self.ledger_grew[i] = true;
                        self.lossy[i] |= l.iter().any(|e| e.read.is_none());
                    }
                }
                None => break,
            }
        }
        if self.order.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.order.retain(|(stamp, side, key)| {
                entries
                    .get(&(*side, key.clone()))
                    .is_some_and(|k| k.stamp == *stamp)
            });
        }
    }

    /// Drop a remembered write that did not happen (one occurrence: another write of
    /// the same kind may have happened and still has its echo coming).
    pub(crate) fn forget(&mut self, side: Side, key: &Key, echo: Echo) {
        if let Some(k) = self.entries.get_mut(&(side, key.clone())) {
            if let Some(i) = k.pending.iter().rposition(|e| e.echo == echo) {
                k.pending.remove(i);
            }
        }
        if let Echo::Deleted(at) = echo {
            self.unledger(side, key, |e| e.in_flight() && e.at == at);
        }
    }

    /// The engine's write to `side`'s `key`, recorded when `side`'s read mark was `mark`
    /// (see [`crate::core::checkpoint::Tracker::mark`]), changed the document.
    pub(crate) fn applied(&mut self, side: Side, key: &Key, mark: (u64, u64)) {
        if let Some(k) = self.entries.get_mut(&(side, key.clone())) {
            k.applied = k.applied.max(Some(mark));
        }
    }

    /// Whether a change of `side`'s `key` with read sequence `seq` (generation `gen`)
    /// was read before a write of the engine to that key changed the document: that
    /// conditional write then compared itself with the change (or a later state) and
    /// won.
    pub(crate) fn overwritten_after(&self, side: Side, key: &Key, gen: u64, seq: u64) -> bool {
        self.entries
            .get(&(side, key.clone()))
            .and_then(|k| k.applied)
            .is_some_and(|(g, next)| g == gen && seq < next)
    }

    /// The engine's latest write to `side`'s `key` (recorded) copies a version with
    /// `updatedAt` `u` that a client of the other side wrote (read live from its stream,
    /// not replayed after a restart). Any other copy (one made from a replayed change,
    /// which may be the echo of the previous run's copy from `side` itself; a winner
    /// written back, or a re-check's, which may be a copy the engine made from `side`)
    /// has no known origin.
    pub(crate) fn copied_client_version(&mut self, side: Side, key: &Key, u: DateTime) {
        if let Some(k) = self.entries.get_mut(&(side, key.clone())) {
            k.client_copy = Some(u);
        }
    }

    /// Whether the engine's latest write to `side`'s `key` is a copy of the other side's
    /// client version with `updatedAt` `u` ([`Self::copied_client_version`]).
    pub(crate) fn copy_of_client_version(&self, side: Side, key: &Key, u: DateTime) -> bool {
        self.entries
            .get(&(side, key.clone()))
            .is_some_and(|k| k.client_copy == Some(u))
    }

    /// Note a change of `side`'s `key` read from its stream in [`Self::recent`].
    fn note_read(&mut self, side: Side, key: &Key, kind: &ChangeKind) {
        let id = (side, key.clone());
        let shown = match self.recent.get_mut(&id) {
            Some(s) => s,
            None => {
                if self.recent_order.len() >= RECENT_KEYS {
                    if let Some(old) = self.recent_order.pop_front() {
                        self.recent.remove(&old);
                    }
                }
                self.recent_order.push_back(id.clone());
                self.recent.entry(id).or_default()
            }
        };
        if let ChangeKind::Upsert(d) = kind {
            if let Some(u) = updated_at(d, &self.field) {
                if shown.len() == SHOWN {
                    shown.remove(0);
                }
                shown.push(u);
            }
        }
    }

    /// Whether the memory has followed `side`'s `key` since the engine wrote it (an
    /// unknown key may still see echoes of writes from before a restart).
    pub(crate) fn knows(&self, side: Side, key: &Key) -> bool {
        self.entries.contains_key(&(side, key.clone()))
    }

    /// Whether a key was ever evicted: a change of a key the memory does not know may
    /// then be the echo of one of the engine's writes.
    pub(crate) fn evicted_any(&self) -> bool {
        self.evicted
    }

    /// Whether a change read from `side`, made at server time `at`, is the engine's own
    /// write. Called by the reader for every change, in stream order: a match consumes
    /// that write and the ones before it; a mismatch (a client change from before the
    /// write) leaves the memory alone.
    pub(crate) fn take_echo(
        &mut self,
        side: Side,
        key: &Key,
        kind: &ChangeKind,
        at: DateTime,
        mark: (u64, u64),
    ) -> Taken {
        let last = &mut self.last_read[side_ix(side)];
        *last = (*last).max(Some(at));
        self.note_read(side, key, kind);
        let Some(k) = self.entries.get_mut(&(side, key.clone())) else {
            return Taken::default();
        };
        let mut doubted = None;
        let shown_before = match k.seen {
            Some(Seen::Doc(u)) => u,
            _ => None,
        };
        k.seen = Some(match kind {
            ChangeKind::Upsert(d) => {
                let u = updated_at(d, &self.field);
                for e in &mut k.pending {
                    e.after_upsert = false;
                    if let (Some(r), Some(u)) = (&mut e.removes, u) {
                        r.shown |= r.version.updated_at == u;
                    }
                }
                // The very version removed (another document with its `updatedAt`, say
                // a client re-creating the key at that time, says nothing).
                let h = content_hash(d);
                doubted = k
                    .doubted
                    .as_deref()
                    .filter(|x| x.expected.removes.is_some_and(|r| r.version.hash == h))
                    .copied();
                Seen::Doc(u)
            }
            ChangeKind::Delete => {
                k.doubted = None;
                Seen::Gone
            }
        });
        let list = &mut k.pending;
        let skew = self.skew;
        let found = list.iter().position(|e| e.matches(kind, at, skew));
        if let (Some(d), None) = (doubted, found) {
            // The doubted delete came before the version its expectation removes: a
            // client's. The echo is still to come, after this upsert.
            k.doubted = None;
            let mut restored = d.expected;
            if let Some(r) = &mut restored.removes {
                r.shown = true;
            }
            list.insert(0, restored);
            if let Echo::Deleted(w @ Some(_)) = restored.echo {
                self.ledger_unread(side, key, w, d.mark);
            }
            return Taken {
                echo: false,
                client_delete_before: Some(EntryDelete {
                    at: d.at,
                    removed: d.removed,
                }),
            };
        }
        match found {
            Some(i) => {
                if !matches!(kind, ChangeKind::Upsert(_)) {
                    let e = list[i];
                    k.doubted = e.removes.is_some_and(|r| !r.followed && !r.shown).then(|| {
                        Box::new(Doubted {
                            expected: e,
                            mark,
                            at,
                            removed: shown_before,
                        })
                    });
                }
                // The writes before it changed nothing, or their echoes were missed. An
                // upsert echo leaves the expected deletes before it: it may be the echo
                // of an identical copy made before them (a previous run's, replayed),
                // and a missed upsert echo costs a no-op compare, a missed delete echo
                // a wrong delete.
                let upsert = matches!(kind, ChangeKind::Upsert(_));
                let taken: Vec<Echo> = if upsert {
                    let mut taken = Vec::new();
                    let mut j = 0;
                    for _ in 0..=i {
                        if matches!(list[j].echo, Echo::Deleted(_)) {
                            j += 1;
                        } else {
                            taken.push(list.remove(j).echo);
                        }
                    }
                    taken
                } else {
                    list.drain(..=i).map(|e| e.echo).collect()
                };
                for echo in taken {
                    if let Echo::Deleted(w) = echo {
                        self.ledger_read(side, key, w, mark);
                    }
                }
                Taken {
                    echo: true,
                    client_delete_before: None,
                }
            }
            None => Taken::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    const NO_SKEW: Duration = Duration::ZERO;
    /// A read mark for tests that do not look at the ledger.
    const M: (u64, u64) = (0, 0);

    impl EchoMemory {
        /// [`Self::take_echo`], for checks of whether the change was the engine's write.
        fn is_echo(
            &mut self,
            side: Side,
            key: &Key,
            kind: &ChangeKind,
            at: DateTime,
            mark: (u64, u64),
        ) -> bool {
            self.take_echo(side, key, kind, at, mark).echo
        }
    }

    fn t(ms: i64) -> DateTime {
        DateTime::from_millis(ms)
    }

    fn upsert(d: &bson::Document) -> Echo {
        Echo::Doc(content_hash(d))
    }

    #[test]
    fn matching_write_is_an_echo_once() {
        let mut m = EchoMemory::new(2, NO_SKEW, "u");
        let k = Key(1.into());
        let d = doc! {"_id": 1, "v": 1};
        let up = ChangeKind::Upsert(d.clone());
        m.record(Side::Cloud, &k, upsert(&d), None);
        m.record(Side::Cloud, &k, Echo::Deleted(None), None);
        assert!(!m.is_echo(Side::Local, &k, &up, t(0), M));
        assert!(m.is_echo(Side::Cloud, &k, &up, t(0), M));
        assert!(m.is_echo(Side::Cloud, &k, &ChangeKind::Delete, t(0), M));
        assert!(
            !m.is_echo(Side::Cloud, &k, &ChangeKind::Delete, t(0), M),
            "consumed"
        );
        assert!(!m.is_echo(Side::Cloud, &k, &up, t(0), M));
    }

    #[test]
    fn a_write_that_did_not_happen_is_forgotten_once() {
        let mut m = EchoMemory::new(4, NO_SKEW, "u");
        let k = Key(1.into());
        m.record(Side::Local, &k, Echo::Deleted(None), None);
        m.record(Side::Local, &k, Echo::Deleted(None), None);
        m.forget(Side::Local, &k, Echo::Deleted(None));
        assert!(
            m.is_echo(Side::Local, &k, &ChangeKind::Delete, t(0), M),
            "the applied one still echoes"
        );
        assert!(!m.is_echo(Side::Local, &k, &ChangeKind::Delete, t(0), M));
    }

    #[test]
    fn an_older_client_delete_is_not_taken_for_a_propagated_delete() {
        let mut m = EchoMemory::new(4, Duration::from_millis(500), "u");
        let k = Key(1.into());
        // The engine propagates a delete made at 10 s; a client delete of the same key
        // made at 9 s (before the propagated one) is still unread in the stream.
        m.record(Side::Local, &k, Echo::Deleted(Some(t(10_000))), None);
        assert!(!m.is_echo(Side::Local, &k, &ChangeKind::Delete, t(9_000), M));
        // Within the allowed skew of the other server's clock, it is the echo.
        assert!(m.is_echo(Side::Local, &k, &ChangeKind::Delete, t(9_600), M));
        assert!(!m.is_echo(Side::Local, &k, &ChangeKind::Delete, t(12_000), M));
    }

    #[test]
    fn a_delete_older_than_a_change_read_before_the_write_is_not_its_echo() {
        let mut m = EchoMemory::new(4, NO_SKEW, "u");
        let k = Key(1.into());
        let other = Key(2.into());
        // A change stamped 10 s has been read from local when the engine records its
        // delete propagating one made at 6 s.
        assert!(!m.is_echo(Side::Local, &other, &ChangeKind::Delete, t(10_000), M));
        m.record(Side::Local, &k, Echo::Deleted(Some(t(6_000))), None);
        // A client's delete at 7 s, made before that change, is read next: not the echo.
        assert!(!m.is_echo(Side::Local, &k, &ChangeKind::Delete, t(7_000), M));
        assert!(m.is_echo(Side::Local, &k, &ChangeKind::Delete, t(10_000), M));
        // Changes read from the other side do not move this side's bound.
        let up = ChangeKind::Upsert(doc! {"_id": 1});
        assert!(!m.is_echo(Side::Local, &k, &up, t(15_000), M));
        m.record(Side::Local, &k, Echo::Deleted(None), None);
        assert!(!m.is_echo(Side::Cloud, &other, &ChangeKind::Delete, t(20_000), M));
        assert!(m.is_echo(Side::Local, &k, &ChangeKind::Delete, t(16_000), M));
    }

    #[test]
    fn a_delete_that_cannot_remove_what_the_stream_showed_echoes_after_an_upsert() {
        let mut m = EchoMemory::new(4, NO_SKEW, "u");
        let k = Key(1.into());
        let copy = doc! {"_id": 1, "u": t(3_000)};
        let up = |u: i64| ChangeKind::Upsert(doc! {"_id": 1, "u": t(u)});
        // The engine's copy (version 3 s) came back; then it propagates a delete of
        // everything not newer than 2 s, which cannot remove that copy.
        m.record(Side::Cloud, &k, upsert(&copy), None);
        assert!(m.is_echo(Side::Cloud, &k, &ChangeKind::Upsert(copy), t(3_000), M));
        m.record(Side::Cloud, &k, Echo::Deleted(Some(t(2_000))), None);
        // A client deleted the copy (3 s) and wrote version 1 s before the engine's
        // delete removed it: the first delete is the client's.
        assert!(!m.is_echo(Side::Cloud, &k, &ChangeKind::Delete, t(3_000), M));
        assert!(!m.is_echo(Side::Cloud, &k, &up(1_000), t(3_000), M));
        assert!(m.is_echo(Side::Cloud, &k, &ChangeKind::Delete, t(9_000), M));
        // After a version the delete can remove (1 s), its echo may come at once.
        assert!(!m.is_echo(Side::Cloud, &k, &up(1_000), t(9_500), M));
        m.record(Side::Cloud, &k, Echo::Deleted(Some(t(2_000))), None);
        assert!(m.is_echo(Side::Cloud, &k, &ChangeKind::Delete, t(10_000), M));
        // After a delete, only a re-created document can be removed.
        m.record(Side::Cloud, &k, Echo::Deleted(None), None);
        assert!(!m.is_echo(Side::Cloud, &k, &ChangeKind::Delete, t(11_000), M));
    }

    #[test]
    fn a_change_read_before_an_applied_write_is_overwritten() {
        let mut m = EchoMemory::new(4, NO_SKEW, "u");
        let k = Key(1.into());
        let d = doc! {"_id": 1, "v": 1};
        m.record(Side::Cloud, &k, upsert(&d), None);
        // Recorded when cloud's next read sequence was 5 (generation 0).
        m.applied(Side::Cloud, &k, (0, 5));
        assert!(m.overwritten_after(Side::Cloud, &k, 0, 4));
        assert!(
            !m.overwritten_after(Side::Cloud, &k, 0, 5),
            "read after the write"
        );
        assert!(
            !m.overwritten_after(Side::Cloud, &k, 1, 4),
            "another generation"
        );
        assert!(!m.overwritten_after(Side::Local, &k, 0, 4), "another side");
        // Still known once the echo came back.
        assert!(m.is_echo(Side::Cloud, &k, &ChangeKind::Upsert(d), t(0), M));
        assert!(m.overwritten_after(Side::Cloud, &k, 0, 4));
        // A key the memory does not follow has no mark.
        let other = Key(2.into());
        m.applied(Side::Cloud, &other, (0, 9));
        assert!(!m.overwritten_after(Side::Cloud, &other, 0, 1));
    }

    /// (key, deleted_at ms, tentative), sorted.
    fn keys_of(pending: &DeleteLedger) -> Vec<(i32, Option<i64>, bool)> {
        let mut v: Vec<(i32, Option<i64>, bool)> = pending
            .deletes
            .iter()
            .map(|p| {
                (
                    p.key.0.as_i32().unwrap(),
                    p.deleted_at.map(|t| t.timestamp_millis()),
                    p.tentative,
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn ledgered_deletes_stay_until_a_saved_checkpoint_passes_their_echo() {
        let mut m = EchoMemory::new(8, NO_SKEW, "u");
        let (k1, k2, k3) = (Key(1.into()), Key(2.into()), Key(3.into()));
        for k in [&k1, &k2, &k3] {
            m.expect_write(
                Side::Cloud,
                &Write::DeleteIfNotNewer {
                    key: k.clone(),
                    deleted_at: t(5),
                },
            );
        }
        // Saved before the writes are sent, tentative.
        assert!(m.ledger_grew(Side::Cloud));
        let before = m.pending_deletes(Side::Cloud, None);
        assert!(before.complete);
        assert_eq!(
            keys_of(&before),
            [(1, Some(5), true), (2, Some(5), true), (3, Some(5), true)]
        );
        assert!(!m.ledger_grew(Side::Cloud), "taken for saving");
        // Key 1's echo is read at seq 7 (generation 0), before its write returned.
        assert!(m.is_echo(Side::Cloud, &k1, &ChangeKind::Delete, t(6), (0, 7)));
        // Keys 1 and 2 removed a document; key 3's write found nothing (no echo).
        m.ledger_applied(Side::Cloud, &k1, Some(t(5)));
        m.ledger_applied(Side::Cloud, &k2, Some(t(5)));
        m.forget(Side::Cloud, &k3, Echo::Deleted(Some(t(5))));
        assert!(m.ledger_grew(Side::Cloud));
        assert_eq!(
            keys_of(&m.pending_deletes(Side::Cloud, None)),
            [(1, Some(5), false), (2, Some(5), false)]
        );
        assert!(!m.ledger_grew(Side::Cloud), "taken for saving");
        // A checkpoint with events up to seq 7 done does not pass it; one past it does.
        assert_eq!(
            keys_of(&m.pending_deletes(Side::Cloud, Some((0, 7)))).len(),
            2
        );
        assert_eq!(
            keys_of(&m.pending_deletes(Side::Cloud, Some((0, 8)))),
            [(2, Some(5), false)]
        );
        m.checkpoint_saved(Side::Cloud, (0, 8));
        assert_eq!(
            keys_of(&m.pending_deletes(Side::Cloud, None)),
            [(2, Some(5), false)]
        );
        assert!(
            m.pending_deletes(Side::Local, None).deletes.is_empty(),
            "per side"
        );
        m.clear_ledger(Side::Cloud);
        assert!(m.pending_deletes(Side::Cloud, None).deletes.is_empty());
    }

    fn pending(key: i32, at: i64, tentative: bool) -> PendingDelete {
        PendingDelete {
            key: Key(key.into()),
            deleted_at: Some(t(at)),
            tentative,
            after: None,
            removes: None,
        }
    }

    #[test]
    fn seeded_deletes_are_echoes_until_the_stream_catches_up() {
        let mut m = EchoMemory::new(8, NO_SKEW, "u");
        let (k1, k2, k3, k4) = (Key(1.into()), Key(2.into()), Key(3.into()), Key(4.into()));
        let seeded = DeleteLedger {
            deletes: vec![
                pending(1, 5, false),
                pending(2, 5, false),
                pending(3, 5, true),
            ],
            complete: true,
        };
        m.seed(Side::Local, &seeded);
        assert!(!m.ledger_grew(Side::Local), "already saved");
        // A complete list: only the key with a tentative entry is unsure.
        assert!(!m.unsure(Side::Local, &k1));
        assert!(m.unsure(Side::Local, &k3));
        assert!(!m.unsure(Side::Local, &k4));
        assert!(m.pending_deletes(Side::Local, None).complete);
        // Key 1's echo is replayed: recognised, from any time after the delete. A
        // tentative entry is never taken for an echo.
        assert!(m.is_echo(Side::Local, &k1, &ChangeKind::Delete, t(50), (0, 0)));
        assert!(!m.is_echo(Side::Local, &k3, &ChangeKind::Delete, t(50), (0, 1)));
        assert_eq!(
            keys_of(&m.pending_deletes(Side::Local, Some((0, 2)))),
            [(2, Some(5), false), (3, Some(5), true)],
            "kept until the stream catches up, in case of another crash"
        );
        m.drop_seeded(Side::Local);
        assert!(!m.unsure(Side::Local, &k3));
        // Key 2's never came: a later delete is a client's.
        assert!(!m.is_echo(Side::Local, &k2, &ChangeKind::Delete, t(60), (0, 1)));
        assert_eq!(
            keys_of(&m.pending_deletes(Side::Local, Some((0, 0)))),
            [(1, Some(5), false)],
            "key 1 stays until a checkpoint passes its echo"
        );
        m.checkpoint_saved(Side::Local, (0, 1));
        assert!(m.pending_deletes(Side::Local, None).deletes.is_empty());
    }

    fn tok(n: i32) -> ResumeToken {
        ResumeToken(doc! {"n": n})
    }

    #[test]
    fn a_ledgered_delete_is_saved_with_the_change_its_echo_follows() {
        let mut m = EchoMemory::new(8, NO_SKEW, "u");
        let (k1, k2) = (Key(1.into()), Key(2.into()));
        let delete = |k: i32, at: i64| Write::DeleteIfNotNewer {
            key: Key(k.into()),
            deleted_at: t(at),
        };
        // Nothing read yet: its echo may come anywhere after the checkpoint.
        m.expect_write(Side::Cloud, &delete(1, 5));
        assert!(!m.is_echo(Side::Cloud, &k2, &ChangeKind::Delete, t(6), (0, 0)));
        m.read_change(Side::Cloud, (0, 0), &tok(7));
        m.expect_write(Side::Cloud, &delete(2, 5));
        let after = |l: DeleteLedger| -> Vec<_> {
            let mut v: Vec<_> = l.deletes.into_iter().map(|p| (p.key, p.after)).collect();
            v.sort_by_key(|(k, _)| k.to_string());
            v
        };
        assert_eq!(
            after(m.pending_deletes(Side::Cloud, None)),
            [(k1.clone(), None), (k2.clone(), Some(tok(7)))],
            "the change read before key 2's delete is replayed from the saved checkpoint"
        );
        // A checkpoint past that change: both echoes may come anywhere after it.
        assert_eq!(
            after(m.pending_deletes(Side::Cloud, Some((0, 1)))),
            [(k1.clone(), None), (k2.clone(), None)]
        );
        m.checkpoint_saved(Side::Cloud, (0, 1));
        assert_eq!(
            after(m.pending_deletes(Side::Cloud, None)),
            [(k1, None), (k2, None)],
            "saved alone: the saved checkpoint is past that change"
        );
    }

    #[test]
    fn a_seeded_delete_is_not_expected_before_the_change_it_follows() {
        let mut m = EchoMemory::new(8, NO_SKEW, "u");
        let k = Key(1.into());
        let mut p = pending(1, 5, false);
        p.after = Some(tok(3));
        m.seed(
            Side::Local,
            &DeleteLedger {
                deletes: vec![p.clone()],
                complete: true,
            },
        );
        // The replay shows the client delete the engine's delete propagated, then the
        // change read before the engine's delete was sent, then the echo.
        assert!(!m.is_echo(Side::Local, &k, &ChangeKind::Delete, t(5), (0, 0)));
        m.read_change(Side::Local, (0, 0), &tok(2));
        let other = Key(9.into());
        assert!(!m.is_echo(Side::Local, &other, &ChangeKind::Delete, t(6), (0, 1)));
        m.read_change(Side::Local, (0, 1), &tok(3));
        assert_eq!(
            m.pending_deletes(Side::Local, None).deletes,
            [p],
            "saved as it was until the checkpoint passes that change"
        );
        assert!(m.is_echo(Side::Local, &k, &ChangeKind::Delete, t(7), (0, 2)));
        m.read_change(Side::Local, (0, 2), &tok(4));
        m.checkpoint_saved(Side::Local, (0, 3));
        assert!(m.pending_deletes(Side::Local, None).deletes.is_empty());
        // A seeded entry whose change never came back is dropped with the others.
        let mut p = pending(1, 8, false);
        p.after = Some(tok(99));
        m.seed(
            Side::Local,
            &DeleteLedger {
                deletes: vec![p],
                complete: true,
            },
        );
        m.drop_seeded(Side::Local);
        assert!(m.pending_deletes(Side::Local, None).deletes.is_empty());
        assert!(!m.is_echo(Side::Local, &k, &ChangeKind::Delete, t(9), (0, 3)));
    }

    #[test]
    fn a_seeded_delete_taken_before_the_version_it_removes_was_a_clients() {
        let mut m = EchoMemory::new(8, NO_SKEW, "u");
        let k = Key(1.into());
        let mut p = pending(1, 5, false);
        p.removes = removing(1, 3);
        let seeded = DeleteLedger {
            deletes: vec![p.clone()],
            complete: true,
        };
        m.seed(Side::Local, &seeded);
        assert_eq!(
            m.pending_deletes(Side::Local, None).deletes,
            [p],
            "saved again"
        );
        // The replay shows a client's delete, then the version the engine's delete
        // removed, then the echo.
        assert!(m.is_echo(Side::Local, &k, &ChangeKind::Delete, t(6), (0, 0)));
        let removed = ChangeKind::Upsert(doc! {"_id": 1, "u": t(3)});
        let taken = m.take_echo(Side::Local, &k, &removed, t(7), (0, 1));
        assert!(!taken.echo);
        assert_eq!(taken.client_delete_before, Some(client_delete(6)));
        assert!(m.is_echo(Side::Local, &k, &ChangeKind::Delete, t(8), (0, 2)));
    }

    #[test]
    fn an_incomplete_list_leaves_unknown_keys_unsure_until_the_stream_catches_up() {
        let mut m = EchoMemory::new(8, NO_SKEW, "u");
        let (k1, k2) = (Key(1.into()), Key(2.into()));
        let seeded = DeleteLedger {
            deletes: vec![pending(1, 5, false)],
            complete: false,
        };
        m.seed(Side::Cloud, &seeded);
        assert!(!m.unsure(Side::Cloud, &k1), "followed");
        assert!(m.unsure(Side::Cloud, &k2));
        assert!(!m.unsure(Side::Local, &k2), "per side");
        assert!(
            !m.pending_deletes(Side::Cloud, None).complete,
            "saved incomplete while replaying"
        );
        m.drop_seeded(Side::Cloud);
        assert!(!m.unsure(Side::Cloud, &k2));
        assert!(m.pending_deletes(Side::Cloud, None).complete);
    }

    #[test]
    fn the_ledger_is_bounded_and_follows_evictions() {
        let mut m = EchoMemory::new(2, NO_SKEW, "u");
        let echo = Echo::Deleted(None);
        for i in 0..3 {
            let k = Key(i.into());
            m.record(Side::Local, &k, echo, None);
            assert!(m.ledger_delete(Side::Local, &k, echo, None));
            m.ledger_applied(Side::Local, &k, None);
        }
        // Key 0 was evicted: its echo is no longer recognised, nor ledgered, and the
        // list says it is incomplete.
        let saved = m.pending_deletes(Side::Local, None);
        assert_eq!(keys_of(&saved), [(1, None, false), (2, None, false)]);
        assert!(!saved.complete);
        assert!(m.pending_deletes(Side::Cloud, None).complete, "per side");
        let mut m = EchoMemory::new(LEDGER_CAPACITY + 10, NO_SKEW, "u");
        for i in 0..LEDGER_CAPACITY {
            assert!(m.ledger_delete(Side::Local, &Key((i as i64).into()), echo, None));
        }
        assert!(m.pending_deletes(Side::Local, None).complete);
        assert!(!m.ledger_delete(Side::Local, &Key((-1_i64).into()), echo, None));
        assert!(
            !m.pending_deletes(Side::Local, None).complete,
            "one left out"
        );
        assert!(m.ledger_delete(Side::Cloud, &Key((-1_i64).into()), echo, None));
        assert!(!m.ledger_delete(Side::Cloud, &Key(1.into()), Echo::Doc(1), None));
        m.clear_ledger(Side::Local);
        assert!(
            m.pending_deletes(Side::Local, None).complete,
            "a fresh stream"
        );
    }

    /// A client delete at `t(at)` uncovered before an upsert of the version it did not
    /// remove (the stream had not shown the key before it).
    fn client_delete(at: i64) -> EntryDelete {
        EntryDelete {
            at: t(at),
            removed: None,
        }
    }

    /// What a delete removes: `{_id: key, u: t(u)}`.
    fn removing(key: i32, u: i64) -> Option<RemovedVersion> {
        Some(RemovedVersion {
            updated_at: t(u),
            hash: content_hash(&doc! {"_id": key, "u": t(u)}),
        })
    }

    #[test]
    fn a_delete_echo_follows_the_version_it_removes() {
        let mut m = EchoMemory::new(8, NO_SKEW, "u");
        let (k, other) = (Key(1.into()), Key(2.into()));
        let up = |u: i64| ChangeKind::Upsert(doc! {"_id": 1, "u": t(u)});
        let del = |w: i64| Write::DeleteIfNotNewer {
            key: k.clone(),
            deleted_at: t(w),
        };
        assert!(!m.is_echo(Side::Local, &k, &up(0), t(0), M));
        // The engine deletes version t1, which the stream has not shown yet (a client
        // deleted t0 and re-created the key, both unread): the client's delete, read
        // first, is not the echo, even at the propagated time.
        m.expect_write_removing(Side::Local, &del(7), removing(1, 1));
        assert!(!m.is_echo(Side::Local, &k, &ChangeKind::Delete, t(7), M));
        assert!(!m.is_echo(Side::Local, &k, &up(1), t(8), M));
        assert!(m.is_echo(Side::Local, &k, &ChangeKind::Delete, t(8), M));
        // A version already shown: the next delete is the echo.
        assert!(!m.is_echo(Side::Local, &k, &up(2), t(9), M));
        m.expect_write_removing(Side::Local, &del(9), removing(1, 2));
        assert!(m.is_echo(Side::Local, &k, &ChangeKind::Delete, t(9), M));
        // A key whose changes were never read: nothing to go by, any delete matches.
        let w = Write::DeleteIfNotNewer {
            key: other.clone(),
            deleted_at: t(7),
        };
        m.expect_write_removing(Side::Local, &w, removing(2, 1));
        assert!(m.is_echo(Side::Local, &other, &ChangeKind::Delete, t(10), M));
        // A fresh stream forgets what the old one showed.
        assert!(!m.is_echo(Side::Cloud, &k, &up(3), t(3), M));
        m.clear_ledger(Side::Cloud);
        let w = Write::DeleteIfNotNewer {
            key: k.clone(),
            deleted_at: t(7),
        };
        m.expect_write_removing(Side::Cloud, &w, removing(1, 3));
        assert!(m.is_echo(Side::Cloud, &k, &ChangeKind::Delete, t(7), M));
    }

    #[test]
    fn a_delete_taken_before_the_version_the_echo_removes_was_a_clients() {
        let mut m = EchoMemory::new(8, NO_SKEW, "u");
        let k = Key(1.into());
        let up = |u: i64| ChangeKind::Upsert(doc! {"_id": 1, "u": t(u)});
        let del = Write::DeleteIfNotNewer {
            key: k.clone(),
            deleted_at: t(7),
        };
        let mark = |seq| (0, seq);
        // The stream has shown nothing of the key: the delete read first is taken for
        // the echo of the engine's delete of t1...
        m.expect_write_removing(Side::Local, &del, removing(1, 1));
        assert!(m.is_echo(Side::Local, &k, &ChangeKind::Delete, t(7), mark(0)));
        // ...until t1's upsert follows it: it was a client's, deleting an older version,
        // and the echo is still to come (and still ledgered).
        let taken = m.take_echo(Side::Local, &k, &up(1), t(8), mark(1));
        assert!(!taken.echo);
        assert_eq!(taken.client_delete_before, Some(client_delete(7)));
        assert_eq!(
            m.pending_deletes(Side::Local, Some(mark(2))).deletes.len(),
            1
        );
        assert!(m.is_echo(Side::Local, &k, &ChangeKind::Delete, t(9), mark(2)));
        assert!(!m.is_echo(Side::Local, &k, &ChangeKind::Delete, t(10), mark(3)));
        assert!(m
            .pending_deletes(Side::Local, Some(mark(3)))
            .deletes
            .is_empty());
        // Another key not shown yet. Taken, then another version and a delete: the
        // doubt ends with that delete.
        let k = Key(2.into());
        let up = |u: i64| ChangeKind::Upsert(doc! {"_id": 2, "u": t(u)});
        let del = Write::DeleteIfNotNewer {
            key: k.clone(),
            deleted_at: t(7),
        };
        m.expect_write_removing(Side::Local, &del, removing(2, 1));
        assert!(m.is_echo(Side::Local, &k, &ChangeKind::Delete, t(11), mark(4)));
        // Another document with the removed version's `updatedAt` (a client re-creating
        // the key at that time) is not that version.
        let other = ChangeKind::Upsert(doc! {"_id": 2, "u": t(1), "by": "client"});
        let taken = m.take_echo(Side::Local, &k, &other, t(11), mark(4));
        assert_eq!(taken, Taken::default());
        assert!(!m.is_echo(Side::Local, &k, &up(2), t(12), mark(5)));
        assert!(!m.is_echo(Side::Local, &k, &ChangeKind::Delete, t(13), mark(6)));
        assert!(!m.is_echo(Side::Local, &k, &up(1), t(14), mark(7)));
        assert!(!m.is_echo(Side::Local, &k, &ChangeKind::Delete, t(15), mark(8)));
    }

    #[test]
    fn memory_is_bounded() {
        let mut m = EchoMemory::new(2, NO_SKEW, "u");
        for i in 0..5 {
            m.record(Side::Local, &Key(i.into()), Echo::Deleted(None), None);
        }
        assert_eq!(m.entries.len(), 2);
        assert!(m.evicted_any());
        assert!(m.is_echo(Side::Local, &Key(4.into()), &ChangeKind::Delete, t(0), M));
        assert!(!m.is_echo(Side::Local, &Key(0.into()), &ChangeKind::Delete, t(0), M));
    }

    /// Regression: every write recorded after the key's previous echo had come back
    /// queued the key for eviction again, and the queue was only ever shortened by
    /// evictions: with fewer keys than the capacity it grew by one place per write, for
    /// as long as the daemon ran (and a stale place evicted a key written since).
    #[test]
    fn rewriting_the_same_keys_keeps_the_eviction_order_bounded() {
        let mut m = EchoMemory::new(1_000, NO_SKEW, "u");
        for i in 0..20_000 {
            for key in [1, 2] {
                let d = doc! {"_id": key, "v": i};
                m.record(Side::Cloud, &Key(key.into()), upsert(&d), None);
                let echo = ChangeKind::Upsert(d);
                assert!(m.is_echo(Side::Cloud, &Key(key.into()), &echo, t(0), M));
            }
        }
        assert_eq!(m.entries.len(), 2);
        assert!(m.order.len() <= 2 * 2 + 64, "{} places", m.order.len());
        assert!(!m.evicted_any());
    }

    /// The least recently (re)queued key is evicted, not one written again since.
    #[test]
    fn eviction_skips_keys_written_again() {
        let mut m = EchoMemory::new(2, NO_SKEW, "u");
        let key = |i: i32| Key(i.into());
        let d = |i: i32, v: i32| doc! {"_id": i, "v": v};
        m.record(Side::Local, &key(1), upsert(&d(1, 1)), None);
        m.record(Side::Local, &key(2), upsert(&d(2, 1)), None);
        // Key 1's echo comes back, then it is written again: now the newest.
        let echo = ChangeKind::Upsert(d(1, 1));
        assert!(m.is_echo(Side::Local, &key(1), &echo, t(0), M));
        m.record(Side::Local, &key(1), upsert(&d(1, 2)), None);
        m.record(Side::Local, &key(3), upsert(&d(3, 1)), None);
        assert!(m.knows(Side::Local, &key(1)), "written again: kept");
        assert!(!m.knows(Side::Local, &key(2)), "the oldest: evicted");
        assert!(m.knows(Side::Local, &key(3)));
    }
}
