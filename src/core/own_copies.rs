//! [`OwnCopies`]: a hint that spares the live path deciding the engine's own copies
//! again when they come back on the target's change stream.
//!
//! Every copy the engine makes produces a change event on the side it was written to.
//! Decided from state, such a key costs a batch's reads and finds both sides agreeing.
//! The hint remembers, per side and key, a fingerprint of the bytes of the last copy
//! the engine *applied* there. A later queue entry of that side and key that is a plain
//! upsert (no delete coalesced into it, no older version that could still win) whose
//! document has exactly those bytes is dropped without a decision:
//!
//! - the side holds byte for byte what the engine wrote, and the sync record of that
//!   write was saved in the same batch, so deciding the key would change nothing;
//! - anything else seen for the key on that side (another entry, a delete, another
//!   engine write) forgets the note first, so a stale note never matches;
//! - changes of the other side come with their own events and are decided.
//!
//! It is an optimisation only, off with [`crate::core::EngineConfig::fast_paths`]: the
//! notes live in memory, a restart starts without them (the echoes are then decided,
//! as any change is), and the property tests run with it on and off. Bounded: a side
//! holding `cap` notes starts over empty (a note lost costs one decision).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;

use crate::core::engine::shared::ix;
use crate::core::types::{Key, Side};

/// A 128-bit fingerprint of a document's BSON bytes (two independently keyed
/// SipHashes, keyed once per process).
pub(crate) type Fingerprint = u128;

/// The fingerprint of `bytes`.
pub(crate) fn fingerprint(bytes: &[u8]) -> Fingerprint {
    static KEYS: OnceLock<(RandomState, RandomState)> = OnceLock::new();
    let (a, b) = KEYS.get_or_init(|| (RandomState::new(), RandomState::new()));
    (u128::from(a.hash_one(bytes)) << 64) | u128::from(b.hash_one(bytes))
}

/// The engine's last applied copy per side and key (see the module docs).
#[derive(Debug)]
pub(crate) struct OwnCopies {
    /// Notes per side (local, cloud).
    notes: [HashMap<Key, Fingerprint>; 2],
    /// Notes per side at most.
    cap: usize,
}

impl OwnCopies {
    /// An empty hint holding at most `cap` notes per side.
    pub(crate) fn new(cap: usize) -> Self {
        OwnCopies {
            notes: Default::default(),
            cap: cap.max(1),
        }
    }

    /// The engine applied a copy with fingerprint `fp` of `key` to `side`.
    pub(crate) fn note(&mut self, side: Side, key: &Key, fp: Fingerprint) {
        let notes = &mut self.notes[ix(side)];
        if notes.len() >= self.cap && !notes.contains_key(key) {
            notes.clear();
        }
        notes.insert(key.clone(), fp);
    }

    /// Something other than a matching copy happened to `key` on `side`.
    pub(crate) fn forget(&mut self, side: Side, key: &Key) {
        self.notes[ix(side)].remove(key);
    }

    /// Whether `side`'s current document of `key`, with fingerprint `fp`, is exactly
    /// the engine's last copy there. The note is used up either way.
    pub(crate) fn take_match(&mut self, side: Side, key: &Key, fp: Fingerprint) -> bool {
        self.notes[ix(side)].remove(key) == Some(fp)
    }

    /// Notes held (both sides).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.notes.iter().map(HashMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use bson::Bson;

    use super::*;

    fn key(n: i32) -> Key {
        Key(Bson::Int32(n))
    }

    #[test]
    fn a_note_matches_once_and_only_its_side_and_bytes() {
        let mut w = OwnCopies::new(10);
        let fp = fingerprint(b"copy");
        w.note(Side::Cloud, &key(1), fp);
        assert!(!w.take_match(Side::Local, &key(1), fp), "other side");
        assert!(!w.take_match(Side::Cloud, &key(2), fp), "other key");
        assert!(w.take_match(Side::Cloud, &key(1), fp));
        assert!(!w.take_match(Side::Cloud, &key(1), fp), "used up");
    }

    #[test]
    fn a_mismatch_or_forget_uses_the_note_up() {
        let mut w = OwnCopies::new(10);
        let fp = fingerprint(b"copy");
        w.note(Side::Local, &key(1), fp);
        assert!(!w.take_match(Side::Local, &key(1), fingerprint(b"client")));
        assert!(!w.take_match(Side::Local, &key(1), fp), "stale note kept");
        w.note(Side::Local, &key(1), fp);
        w.forget(Side::Local, &key(1));
        assert!(!w.take_match(Side::Local, &key(1), fp));
    }

    #[test]
    fn a_full_side_starts_over() {
        let mut w = OwnCopies::new(3);
        for n in 0..3 {
            w.note(Side::Local, &key(n), fingerprint(&[n as u8]));
        }
        w.note(Side::Local, &key(2), fingerprint(b"again"));
        assert_eq!(w.len(), 3, "replacing a note does not count");
        w.note(Side::Local, &key(9), fingerprint(b"new"));
        assert_eq!(w.len(), 1);
        assert!(w.take_match(Side::Local, &key(9), fingerprint(b"new")));
    }

    #[test]
    fn fingerprints_tell_bytes_apart() {
        assert_eq!(fingerprint(b"abc"), fingerprint(b"abc"));
        assert_ne!(fingerprint(b"abc"), fingerprint(b"abd"));
    }
}
