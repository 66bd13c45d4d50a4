//! Domain vocabulary of the sync core: sides, modes, keys, change events, writes and
//! reports. Nothing here knows about MongoDB I/O; BSON values are used only because they
//! are the data model both sides share.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use bson::{Bson, DateTime, Document, RawDocumentBuf};
use serde::{Deserialize, Serialize};

/// One of the two deployments being kept in sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    /// The MongoDB next to the client (edge / offline-first).
    Local,
    /// The central MongoDB.
    Cloud,
}

impl Side {
    /// Both sides, local first.
    pub const BOTH: [Side; 2] = [Side::Local, Side::Cloud];

    /// The side a change from `self` is applied to.
    pub fn other(self) -> Side {
        match self {
            Side::Local => Side::Cloud,
            Side::Cloud => Side::Local,
        }
    }

    /// Lower-case name used in config, logs and status.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Local => "local",
            Side::Cloud => "cloud",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Side {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "local" => Ok(Side::Local),
            "cloud" => Ok(Side::Cloud),
            other => Err(format!(
                "unknown side '{other}' (expected 'local' or 'cloud')"
            )),
        }
    }
}

/// Which way changes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Changes flow both ways, last writer (by `updatedAt`) wins.
    #[default]
    BothWays,
    /// Only local changes are applied to cloud (LWW); cloud is never written back to local.
    LocalToCloud,
    /// Only cloud changes are applied to local (LWW); local is never written back to cloud.
    CloudToLocal,
    /// Cloud is authoritative: local is made identical to cloud, whatever `updatedAt` says.
    OverwriteLocal,
}

impl Mode {
    /// All modes, for tests and help texts.
    pub const ALL: [Mode; 4] = [
        Mode::BothWays,
        Mode::LocalToCloud,
        Mode::CloudToLocal,
        Mode::OverwriteLocal,
    ];

    /// Name as written in config and on the admin socket.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::BothWays => "both-ways",
            Mode::LocalToCloud => "local-to-cloud",
            Mode::CloudToLocal => "cloud-to-local",
            Mode::OverwriteLocal => "overwrite-local",
        }
    }

    /// Whether changes seen on `from` are propagated to `from.other()` in this mode.
    pub fn propagates(self, from: Side) -> bool {
        match self {
            Mode::BothWays => true,
            Mode::LocalToCloud => from == Side::Local,
            Mode::CloudToLocal | Mode::OverwriteLocal => from == Side::Cloud,
        }
    }

    /// Whether the engine must watch `side`'s change stream in this mode.
    /// (`overwrite-local` watches local too, to undo local edits.)
    pub fn watches(self, side: Side) -> bool {
        self.propagates(side) || (self == Mode::OverwriteLocal && side == Side::Local)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown mode '{s}' (expected one of: both-ways, local-to-cloud, cloud-to-local, overwrite-local)"
                )
            })
    }
}

/// A document key: any BSON `_id`. Ordered and compared the way MongoDB orders `_id`
/// values (see [`crate::core::key::compare_bson`]), so that merge-joins over two sorted
/// scans line up with the server's sort order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Key(pub Bson);

impl Key {
    /// The raw `_id` value.
    pub fn as_bson(&self) -> &Bson {
        &self.0
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        crate::core::key::compare_bson(&self.0, &other.0)
    }
}
impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        crate::core::key::hash_bson(&self.0, state)
    }
}
impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Opaque resume token of a change stream, persisted as a checkpoint. The core never
/// looks inside; stores produce and consume it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ResumeToken(pub Document);

/// What happened to a document.
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeKind {
    /// Insert, update or replace: the document as it is now (post-image).
    Upsert(Document),
    /// The document was deleted.
    Delete,
}

impl ChangeKind {
    /// Short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            ChangeKind::Upsert(_) => "upsert",
            ChangeKind::Delete => "delete",
        }
    }
}

/// One change read from a side's change stream.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    /// Side whose stream produced the event.
    pub side: Side,
    /// `_id` of the changed document.
    pub key: Key,
    /// The change itself.
    pub kind: ChangeKind,
    /// Token to resume *after* this event.
    pub token: ResumeToken,
    /// Server wall-clock time of the change. For deletes it is the delete time used by
    /// last-writer-wins (a delete carries no `updatedAt`).
    pub server_time: DateTime,
    /// The engine's own write coming back: the store recognises the writes it made for
    /// this engine (on MongoDB, by the session of the transaction they were made in),
    /// across restarts. Such a change is no client's: nothing is decided for it.
    pub own: bool,
    /// Index of the collection pair the changed collection belongs to (set by a
    /// [`crate::core::StreamSource`] reading several; 0 for a single collection's).
    pub pair: usize,
}

/// An item read from a change stream.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // frozen API; one item at a time, never stored in bulk
pub enum StreamItem {
    /// A change to a document of the watched collection.
    Event(ChangeEvent),
    /// No new events, but the stream has advanced: resuming from this token skips
    /// nothing (MongoDB's `postBatchResumeToken`). Lets idle streams checkpoint.
    Progress(ResumeToken),
}

/// One document as returned by a sorted scan: its key, raw `updatedAt` value and the
/// whole document (a reconcile compares and copies it without another round trip).
#[derive(Debug, Clone, PartialEq)]
pub struct ScanEntry {
    /// `_id` of the document.
    pub key: Key,
    /// The configured `updatedAt` field's value, `None` when missing. Not validated:
    /// the engine decides what a non-DateTime value means.
    pub updated_at: Option<Bson>,
    /// The full document, as the server sent it: compared byte for byte (what MongoDB
    /// calls identical) and only parsed when it is copied.
    pub doc: RawDocumentBuf,
}

/// A record that a document was deleted, so a reconcile does not resurrect it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tombstone {
    /// `_id` of the deleted document.
    pub key: Key,
    /// Server time of the delete (compared with `updatedAt` by last-writer-wins).
    pub deleted_at: DateTime,
    /// Side the delete was first seen on.
    pub origin: Side,
}

/// A write the engine asks a store to make. Conditional variants encode last-writer-wins
/// so that the store can decide atomically in one round trip (MongoDB: a filtered
/// upsert / delete).
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Replace-or-insert `doc` (which contains `_id`) only if the target is missing or
    /// its `updatedAt` is older than `updated_at` (or equal, when `or_equal`). A target
    /// whose `updatedAt` is missing or not a DateTime is left alone.
    UpsertIfNewer {
        /// Key of `doc`.
        key: Key,
        /// Full document to write, `_id` included.
        doc: Document,
        /// The document's `updatedAt`.
        updated_at: DateTime,
        /// Also overwrite a target with exactly this `updatedAt` (tie-break winner).
        or_equal: bool,
    },
    /// Delete the target only if its `updatedAt` is at or before `deleted_at`.
    DeleteIfNotNewer {
        /// Key to delete.
        key: Key,
        /// Time of the delete being propagated.
        deleted_at: DateTime,
    },
    /// Unconditional replace-or-insert (used by `overwrite-local`).
    Replace {
        /// Key of `doc`.
        key: Key,
        /// Full document to write, `_id` included.
        doc: Document,
    },
    /// Unconditional delete (used by `overwrite-local`).
    Delete {
        /// Key to delete.
        key: Key,
    },
}

impl Write {
    /// Short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Write::UpsertIfNewer {
                or_equal: false, ..
            } => "upsert-if-newer",
            Write::UpsertIfNewer { or_equal: true, .. } => "upsert-if-not-older",
            Write::Replace { .. } => "replace",
            Write::DeleteIfNotNewer { .. } => "delete-if-not-newer",
            Write::Delete { .. } => "delete",
        }
    }

    /// The key this write targets.
    pub fn key(&self) -> &Key {
        match self {
            Write::UpsertIfNewer { key, .. }
            | Write::DeleteIfNotNewer { key, .. }
            | Write::Replace { key, .. }
            | Write::Delete { key } => key,
        }
    }
}

/// Result of one [`Write`] in a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    /// The target changed (or, for an upsert, was created or rewritten).
    Applied,
    /// The condition did not hold (target newer, or nothing to delete): nothing changed.
    /// Includes a duplicate-key race on a conditional upsert.
    NotApplied,
    /// This one write failed for a reason specific to it (e.g. document too large);
    /// the others in the batch are unaffected. The engine reports and skips it.
    Failed(String),
}

/// Counts for one direction of a reconcile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectionReport {
    /// Documents created on the target.
    pub inserted: u64,
    /// Documents overwritten on the target.
    pub updated: u64,
    /// Documents deleted from the target.
    pub deleted: u64,
    /// Documents already identical on both sides (counted once, in each direction the
    /// mode covers).
    pub unchanged: u64,
    /// Documents only the target holds that a one-way mode leaves alone: the target's
    /// own, never synced from the source (or changed there since).
    #[serde(default)]
    pub kept: u64,
}

/// Result of a full reconcile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileReport {
    /// Mode the reconcile ran in.
    pub mode: Mode,
    /// Nothing was written: the counts say what would have been.
    pub dry_run: bool,
    /// Writes made (or that would be made) on cloud from local.
    pub local_to_cloud: DirectionReport,
    /// Writes made (or that would be made) on local from cloud.
    pub cloud_to_local: DirectionReport,
    /// Keys present on both sides with different content, decided by LWW/tie-break.
    pub conflicts: u64,
    /// Documents skipped because their `updatedAt` is missing or not a DateTime.
    pub skipped: u64,
    /// Versions held back because their `updatedAt` is further in the future than
    /// `sync.max_future_ms` allows (see [`crate::core::quarantine`]).
    #[serde(default)]
    pub quarantined: u64,
    /// Wall time of the reconcile.
    pub duration_ms: u64,
}

impl DirectionReport {
    /// Both reports' counts added up.
    pub fn plus(&self, o: &DirectionReport) -> DirectionReport {
        DirectionReport {
            inserted: self.inserted + o.inserted,
            updated: self.updated + o.updated,
            deleted: self.deleted + o.deleted,
            unchanged: self.unchanged + o.unchanged,
            kept: self.kept + o.kept,
        }
    }
}

impl ReconcileReport {
    /// Two reconciles (of different pairs) as one: counts and durations added up; the
    /// mode is this one's.
    pub fn plus(&self, o: &ReconcileReport) -> ReconcileReport {
        ReconcileReport {
            mode: self.mode,
            dry_run: self.dry_run,
            local_to_cloud: self.local_to_cloud.plus(&o.local_to_cloud),
            cloud_to_local: self.cloud_to_local.plus(&o.cloud_to_local),
            conflicts: self.conflicts + o.conflicts,
            skipped: self.skipped + o.skipped,
            quarantined: self.quarantined + o.quarantined,
            duration_ms: self.duration_ms + o.duration_ms,
        }
    }
}
