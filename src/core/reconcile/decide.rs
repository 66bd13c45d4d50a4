//! The per-key decisions of a reconcile page, without I/O: given both sides' documents
//! (from the scans), the key's sync record and its tombstone, what to write where and
//! what to count. The rules are in the parent module's documentation.

use std::collections::HashMap;
use std::time::Duration;

use bson::{Bson, DateTime, Document};

use crate::core::engine::shared::ix;
use crate::core::quarantine::too_far_ahead;
use crate::core::types::{
    DirectionReport, Key, Mode, ReconcileReport, ScanEntry, Side, Tombstone, Write,
};

/// A key of the page: its document on each side where present, and its sync record.
pub(super) struct Item {
    /// The key.
    pub(super) key: Key,
    /// The local document.
    pub(super) local: Option<ScanEntry>,
    /// The cloud document.
    pub(super) cloud: Option<ScanEntry>,
    /// The sync record's version (`None`: no record, or a malformed one).
    pub(super) synced: Option<DateTime>,
    /// Whether no record document exists at all (so a new one can be inserted).
    pub(super) no_record: bool,
    /// A change of the key waits in the running engine's queue.
    pub(super) queued: bool,
}

/// What a page decided.
#[derive(Default)]
pub(super) struct Plan {
    /// Writes per target side (local, cloud).
    pub(super) writes: [Vec<Write>; 2],
    /// Tombstones superseded by a copy.
    pub(super) remove: Vec<Key>,
    /// Tombstones of deletes inferred from sync records.
    pub(super) record: Vec<Tombstone>,
    /// Keys found equal on both sides whose sync record is missing or different.
    pub(super) agree: Vec<(Key, DateTime)>,
    /// Keys held back: the version to copy (on that side) is too far in the future.
    pub(super) held: Vec<(Key, Side, DateTime)>,
    /// Keys held with different versions by both sides, neither of them the agreed one
    /// (both changed since they last agreed), and the side whose version won.
    pub(super) winners: Vec<(Key, Side)>,
}

fn dir(report: &mut ReconcileReport, target: Side) -> &mut DirectionReport {
    match target {
        Side::Cloud => &mut report.local_to_cloud,
        Side::Local => &mut report.cloud_to_local,
    }
}

/// Whether both documents are byte-identical (what a replace treats as a no-op).
fn same_content(a: &ScanEntry, b: &ScanEntry) -> bool {
    a.doc.as_bytes() == b.doc.as_bytes()
}

/// The document to copy, parsed (`None`, counted as skipped, if it is malformed).
fn parsed(e: &ScanEntry, report: &mut ReconcileReport) -> Option<Document> {
    match e.doc.to_document() {
        Ok(d) => Some(d),
        Err(err) => {
            report.skipped += 1;
            tracing::warn!(key = %e.key, error = %err, "reconcile: malformed document; skipped");
            None
        }
    }
}

fn as_date(v: &Option<Bson>) -> Option<DateTime> {
    match v {
        Some(Bson::DateTime(d)) => Some(*d),
        _ => None,
    }
}

/// The settings the decisions depend on.
pub(super) struct Rules {
    /// Mode reconciled in.
    pub(super) mode: Mode,
    /// Side whose copy wins a tie on equal `updatedAt` with different content.
    pub(super) tie: Side,
    /// Each side's server clock (local, cloud), which the future-timestamp guard
    /// compares that side's versions with.
    pub(super) now: [DateTime; 2],
    /// How far ahead of `now` a version may be and still be copied (`None`: no limit).
    pub(super) max_future: Option<Duration>,
    /// Deciding keys the change streams reported (not a full reconcile): deletes are
    /// never inferred from sync records, their events bring them.
    pub(super) live: bool,
}

impl Rules {
    /// Decide every item of a page (`tombs`: the tombstones of its one-sided keys).
    pub(super) fn decide(
        &self,
        items: &[Item],
        tombs: &HashMap<Key, Tombstone>,
        report: &mut ReconcileReport,
    ) -> Plan {
        let mut plan = Plan::default();
        for it in items {
            if self.mode == Mode::OverwriteLocal {
                overwrite_item(it, &mut plan, report);
            } else {
                self.lww_item(it, tombs, &mut plan, report);
            }
        }
        plan
    }

    /// Whether copying version `u` of `key` from `from` waits for the clock (held back).
    fn hold(
        &self,
        key: &Key,
        from: Side,
        u: DateTime,
        plan: &mut Plan,
        report: &mut ReconcileReport,
    ) -> bool {
        if !too_far_ahead(u, self.now[ix(from)], self.max_future) {
            return false;
        }
        report.quarantined += 1;
        plan.held.push((key.clone(), from, u));
        true
    }

    fn lww_item(
        &self,
        it: &Item,
        tombs: &HashMap<Key, Tombstone>,
        plan: &mut Plan,
        report: &mut ReconcileReport,
    ) {
        let mode = self.mode;
        let tie = self.tie;
        let key = &it.key;
        let upsert = |doc: Document, u: DateTime, from: Side| Write::UpsertIfNewer {
            key: key.clone(),
            doc,
            updated_at: u,
            or_equal: from == tie,
        };
        match (&it.local, &it.cloud) {
            (Some(l), Some(c)) => {
                let (Some(a), Some(b)) = (as_date(&l.updated_at), as_date(&c.updated_at)) else {
                    report.skipped += 1;
                    tracing::warn!(%key, "reconcile: updatedAt missing or not a DateTime; skipped");
                    return;
                };
                // Both-ways: a delete not older than both versions beats both (tombstones
                // of keys on both sides are only looked up in both-ways); one older than
                // both is superseded.
                if let Some(t) = tombs.get(key).filter(|_| mode == Mode::BothWays) {
                    if t.deleted_at >= a.max(b) {
                        for side in Side::BOTH {
                            dir(report, side).deleted += 1;
                            plan.writes[ix(side)].push(Write::DeleteIfNotNewer {
                                key: key.clone(),
                                deleted_at: t.deleted_at,
                            });
                        }
                        return;
                    }
                    if t.deleted_at < a.min(b) && !self.live {
                        plan.remove.push(key.clone());
                    }
                }
                if a == b && same_content(l, c) {
                    for s in Side::BOTH {
                        if mode.propagates(s) {
                            dir(report, s.other()).unchanged += 1;
                        }
                    }
                    agree(plan, it, Some(a));
                    return;
                }
                report.conflicts += 1;
                let winner = if a > b {
                    Side::Local
                } else if b > a {
                    Side::Cloud
                } else {
                    tie
                };
                // Contested: the losing version is not the one both sides last agreed
                // on either (both changed since), so a client's change lost.
                let lost = if winner == Side::Local { b } else { a };
                if it.synced != Some(lost) {
                    plan.winners.push((key.clone(), winner));
                }
                if !mode.propagates(winner) {
                    return;
                }
                if self.hold(key, winner, a.max(b), plan, report) {
                    return;
                }
                let Some(doc) = parsed(if winner == Side::Local { l } else { c }, report) else {
                    return;
                };
                dir(report, winner.other()).updated += 1;
                plan.writes[ix(winner.other())].push(upsert(doc, a.max(b), winner));
            }
            (Some(e), None) | (None, Some(e)) => {
                let side = if it.local.is_some() {
                    Side::Local
                } else {
                    Side::Cloud
                };
                let Some(u) = as_date(&e.updated_at) else {
                    report.skipped += 1;
                    tracing::warn!(%key, %side, "reconcile: updatedAt missing or not a DateTime; skipped");
                    return;
                };
                // A queued change decides the key soon: no delete is inferred meanwhile.
                let live = self.live || it.queued;
                match one_sided(mode, side, u, it.synced, tombs.get(key), live) {
                    OneSided::Delete { at, infer } => {
                        dir(report, side).deleted += 1;
                        if infer {
                            plan.record.push(Tombstone {
                                key: key.clone(),
                                deleted_at: at,
                                origin: side.other(),
                            });
                        }
                        plan.writes[ix(side)].push(Write::DeleteIfNotNewer {
                            key: key.clone(),
                            deleted_at: at,
                        });
                    }
                    OneSided::Copy => {
                        if self.hold(key, side, u, plan, report) {
                            return;
                        }
                        let Some(doc) = parsed(e, report) else {
                            return;
                        };
                        // A superseded tombstone is dropped by a full reconcile; the live
                        // path leaves it to that (one write fewer per batch; the version
                        // copied beats it either way).
                        if tombs.contains_key(key) && !self.live {
                            plan.remove.push(key.clone());
                        }
                        dir(report, side.other()).inserted += 1;
                        plan.writes[ix(side.other())].push(upsert(doc, u, side));
                    }
                    OneSided::Keep => dir(report, side).kept += 1,
                    OneSided::Wait => {}
                }
            }
            (None, None) => {}
        }
    }
}

/// What becomes of a key held by one side only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OneSided {
    /// The other side deleted it: delete it where it is, if not newer than `at`; `infer`
    /// when no tombstone says so (the sync record does) and one is to be recorded.
    Delete {
        /// The delete's time (a tombstone's, or the sync record's version).
        at: DateTime,
        /// The delete is inferred from the sync record.
        infer: bool,
    },
    /// Copy it to the other side.
    Copy,
    /// Leave it alone: the other side is a one-way target that never had it (counted as
    /// `kept`).
    Keep,
    /// Leave it to the other side's delete event, still unread (live path only).
    Wait,
}

/// The rule for a key only `side` holds, at version `u`, in an LWW mode (`synced`: its
/// sync record, `tomb`: its tombstone).
///
/// - Both-ways: a tombstone not older than `u`, or a sync record not older than `u` (the
///   version was synced, so the other side deleted it since), means a delete; otherwise
///   the document is copied.
/// - One-way, `side` is the source: copied (a delete on the target is undone).
/// - One-way, `side` is the target: deleted only when the document provably came from
///   the source, that is when the sync record covers `u` (and the source no longer has
///   it) or a tombstone of the source's delete covers `u`. Anything else is the
///   target's own document, which a one-way mode never touches: kept.
pub(super) fn one_sided(
    mode: Mode,
    side: Side,
    u: DateTime,
    synced: Option<DateTime>,
    tomb: Option<&Tombstone>,
    live: bool,
) -> OneSided {
    let both = mode == Mode::BothWays;
    let source = mode.propagates(side);
    // In a one-way mode only the source's deletes count.
    let tomb = tomb.filter(|t| both || t.origin == side.other());
    let covering = tomb.filter(|t| t.deleted_at >= u);
    if both || !source {
        if let Some(t) = covering {
            return OneSided::Delete {
                at: t.deleted_at,
                infer: false,
            };
        }
        if let Some(r) = synced.filter(|r| u <= *r) {
            if !live {
                return OneSided::Delete { at: r, infer: true };
            }
            // The live path never infers a delete: the other side's delete event
            // follows with its real time (a tombstone older than this version means it
            // came already, and lost to the version).
            if tomb.is_none() {
                return OneSided::Wait;
            }
        }
    }
    if source {
        OneSided::Copy
    } else {
        OneSided::Keep
    }
}

/// Plan recording `v` as the agreed version of the item unless that is already recorded.
fn agree(plan: &mut Plan, it: &Item, v: Option<DateTime>) {
    if let Some(v) = v {
        if it.synced != Some(v) {
            plan.agree.push((it.key.clone(), v));
        }
    }
}

fn overwrite_item(it: &Item, plan: &mut Plan, report: &mut ReconcileReport) {
    let key = it.key.clone();
    match (&it.local, &it.cloud) {
        (Some(_), None) => {
            report.cloud_to_local.deleted += 1;
            plan.writes[0].push(Write::Delete { key });
        }
        (None, Some(c)) => {
            let Some(doc) = parsed(c, report) else { return };
            report.cloud_to_local.inserted += 1;
            plan.writes[0].push(Write::Replace { key, doc });
        }
        (Some(l), Some(c)) => {
            if same_content(l, c) {
                report.cloud_to_local.unchanged += 1;
                agree(plan, it, as_date(&c.updated_at));
            } else {
                let Some(doc) = parsed(c, report) else { return };
                report.conflicts += 1;
                report.cloud_to_local.updated += 1;
                plan.writes[0].push(Write::Replace { key, doc });
            }
        }
        (None, None) => {}
    }
}
