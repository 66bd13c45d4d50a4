//! Convergence properties of the sync engine over in-memory stores: random schedules of
//! client writes on both sides (random `updatedAt`, ties and skew), engine crashes
//! (tasks aborted mid-run, restarted from the saved checkpoints), dropped streams and
//! lost history. After a quiet period both sides must be identical and equal to what a
//! reference last-writer-wins model predicts, and the engine's writes must stay bounded
//! by the client's (no ping-pong). One property per mode. `PROPTEST_CASES` overrides
//! the default of 256 cases per property.
//!
//! Model assumptions (each documented where the schedule enforces it): a side never
//! writes two different versions with the same `updatedAt`; a client never overwrites
//! or deletes the only remaining copy of a version with an older `updatedAt` / delete
//! time (LWW would pick content that exists nowhere any more); history is lost
//! on a caught-up engine (what happens between the loss and the fresh stream is only
//! visible as state, so a delete made exactly then cannot be known).
//!
//! The engine decides from state alone; the in-memory store marks the changes its
//! `apply` made (as MongoDB's transaction session ids do), so the echo of a delete the
//! engine made, replayed after a crash with the *server's* time of that delete, is never
//! taken for a client's. Schedules include full reconciles (`ctl sync`) racing the live
//! path. Both-ways schedules, with crashes or without,
//! assert the exact last-writer-wins state under arbitrary skew and ties, plus
//! provenance and the write bound; client clocks may run behind the servers' in
//! schedules without crashes, and in crash schedules with
//! `CORE_PROPERTIES_CLOCKS_BEHIND=1` (by default they stay in step: the rarest cases,
//! found by long runs with clocks behind, are kept below as shrunk tests).
//! `CORE_PROPERTIES_CONVERGED_CRASHES=1` relaxes the crash property to convergence and
//! provenance. The shrunk regression cases below keep the names of the failures they
//! were found as (RELIABILITY.md); several name the echo memory of the engine before
//! issue 17, and still check the same schedules against the state-decided engine.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bson::{doc, DateTime, Document};
use datasync::core::memory::{MemoryState, MemoryStore};
use datasync::core::{Engine, EngineConfig, EngineHandle, Key, Mode, Side, Stores};
use proptest::prelude::*;

mod memory_support;
use memory_support::{block_on, proptest_config, spawn, Running};

const BASE_MS: i64 = 1_800_000_000_000;
const KEYS: u8 = 6;

#[derive(Debug, Clone)]
enum Op {
    /// A client inserts or replaces `key` on `side`.
    Put { side: Side, key: u8, t: u8, v: u8 },
    /// A client deletes `key` on `side` at server time `t`.
    Del { side: Side, key: u8, t: u8 },
    /// Let time pass (ms).
    Wait(u16),
    /// Kill the engine (no drain, no checkpoint save) and start a new one.
    Crash,
    /// The side's change-stream history rolls off.
    LoseHistory(Side),
    /// The side's open streams break (network error).
    DropStreams(Side),
    /// A full reconcile in the engine's mode (`ctl sync`, the cron), awaited.
    Reconcile,
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Local), Just(Side::Cloud)]
}

fn op(sides: BoxedStrategy<Side>) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (sides.clone(), 0..KEYS, 0..12u8, 0..4u8).prop_map(|(side, key, t, v)| Op::Put { side, key, t, v }),
        3 => (sides.clone(), 0..KEYS, 0..12u8).prop_map(|(side, key, t)| Op::Del { side, key, t }),
        3 => (0..300u16).prop_map(Op::Wait),
        1 => Just(Op::Crash),
        1 => side().prop_map(Op::LoseHistory),
        1 => side().prop_map(Op::DropStreams),
        1 => Just(Op::Reconcile),
    ]
}

fn schedule(sides: BoxedStrategy<Side>) -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(sides), 1..30)
}

fn time(t: i64) -> DateTime {
    DateTime::from_millis(BASE_MS + t * 1000)
}

fn key(k: u8) -> Key {
    Key(i32::from(k).into())
}

/// One client change that really happened (produced a change event).
#[derive(Debug, Clone)]
struct Happened {
    side: Side,
    key: u8,
    time: i64,
    doc: Option<Document>,
}

/// Reference last-writer-wins: per key the greatest (time, class) where at equal time a
/// delete beats an upsert, and an upsert from the tie-break side beats the other side.
fn lww_expected(events: &[Happened], tie: Side) -> Vec<Document> {
    let mut best: BTreeMap<u8, (i64, u8, Option<Document>)> = BTreeMap::new();
    for e in events {
        let class = match (&e.doc, e.side == tie) {
            (None, _) => 2,
            (Some(_), true) => 1,
            (Some(_), false) => 0,
        };
        let cand = (e.time, class, e.doc.clone());
        let better = best
            .get(&e.key)
            .is_none_or(|b| (cand.0, cand.1) > (b.0, b.1));
        if better {
            best.insert(e.key, cand);
        }
    }
    best.into_values().filter_map(|(_, _, d)| d).collect()
}

fn start(config: &EngineConfig, stores: &Stores) -> Running {
    spawn(
        Engine::new(config.clone(), stores.clone()),
        Duration::from_secs(30),
    )
}

struct World {
    local: MemoryStore,
    cloud: MemoryStore,
    stores: Stores,
    config: EngineConfig,
    happened: Vec<Happened>,
    used: HashSet<(Side, u8, i64)>,
    crashes: u64,
    losses: u64,
    reconciles: u64,
    /// Latest client time so far (the servers' clock).
    now: i64,
    /// Client clocks never run behind the servers' (used for schedules with crashes:
    /// see the module docs).
    synced_clocks: bool,
}

impl World {
    fn new(mode: Mode, tie: Side) -> Self {
        let local = MemoryStore::new(Side::Local, "updatedAt", 40);
        let cloud = MemoryStore::new(Side::Cloud, "updatedAt", 40);
        // Engine-made changes are stamped with the servers' clock, which follows the
        // schedule's "now" (the latest client time so far; see `tick`).
        local.set_clock(time(0));
        cloud.set_clock(time(0));
        let stores = Stores {
            local: Arc::new(local.clone()),
            cloud: Arc::new(cloud.clone()),
            state: Arc::new(MemoryState::new()),
        };
        let config = EngineConfig {
            mode,
            tie_break: tie,
            max_batch: 4,
            queue_capacity: 4,
            reconcile_batch: 2,
            tombstone_ttl: Duration::from_secs(3650 * 86_400),
            ..EngineConfig::default()
        };
        World {
            local,
            cloud,
            stores,
            config,
            happened: Vec::new(),
            used: HashSet::new(),
            crashes: 0,
            losses: 0,
            reconciles: 0,
            now: 0,
            synced_clocks: false,
        }
    }

    /// In a third of the schedules (by length), batches of 2 from a queue of 8: the
    /// worker then often reads and decides a batch while the one before is written.
    fn pipeline_sometimes(&mut self, len: usize) {
        if len.is_multiple_of(3) {
            self.config.max_batch = 2;
            self.config.queue_capacity = 8;
        }
    }

    /// Current `updatedAt` (in schedule seconds) of `k` on `side`.
    fn updated(&self, side: Side, k: u8) -> Option<i64> {
        let d = self.store(side).get(&key(k))?;
        Some((d.get_datetime("updatedAt").ok()?.timestamp_millis() - BASE_MS) / 1000)
    }

    fn store(&self, side: Side) -> &MemoryStore {
        match side {
            Side::Local => &self.local,
            Side::Cloud => &self.cloud,
        }
    }

    /// Advance both servers' clocks to client time `t` (clocks never go back).
    fn tick(&mut self, t: i64) {
        if t > self.now {
            self.now = t;
            self.local.set_clock(time(t));
            self.cloud.set_clock(time(t));
        }
    }

    /// Play `ops`; returns the engine still running.
    async fn play(&mut self, ops: &[Op], mut eng: Running) -> Running {
        for op in ops {
            match *op {
                Op::Put { side, key: k, t, v } => {
                    let mut t = i64::from(t);
                    if self.synced_clocks {
                        t = t.max(self.now);
                    }
                    // A client never destroys the only copy of a newer version with an
                    // older `updatedAt` (it would be lost on both sides, whatever LWW
                    // says): then its clock reads just past that version.
                    let (mine, theirs) = (self.updated(side, k), self.updated(side.other(), k));
                    let copy_elsewhere =
                        self.store(side).get(&key(k)) == self.store(side.other()).get(&key(k));
                    if let Some(m) = mine {
                        if m >= t && !copy_elsewhere && theirs.is_none_or(|o| o <= m) {
                            t = m + 1;
                        }
                    }
                    // Two versions with the same updatedAt from the same side are
                    // ambiguous by design (no total order): not generated.
                    if !self.used.insert((side, k, t)) {
                        continue;
                    }
                    let d = doc! {"_id": i32::from(k), "updatedAt": time(t), "v": i32::from(v), "by": side.as_str()};
                    self.tick(t);
                    if self.store(side).put(d.clone()) {
                        self.happened.push(Happened {
                            side,
                            key: k,
                            time: t,
                            doc: Some(d),
                        });
                    }
                }
                Op::Del { side, key: k, t } => {
                    let mut t = i64::from(t);
                    // Same rule for deletes: a delete older than the only copy of a
                    // version would have to resurrect content that no longer exists.
                    let (mine, theirs) = (self.updated(side, k), self.updated(side.other(), k));
                    let copy_elsewhere =
                        self.store(side).get(&key(k)) == self.store(side.other()).get(&key(k));
                    if let Some(m) = mine {
                        if m > t && !copy_elsewhere && theirs.is_none_or(|o| o <= m) {
                            t = m;
                        }
                    }
                    self.tick(t);
                    if self.store(side).delete(&key(k), time(t)) {
                        self.happened.push(Happened {
                            side,
                            key: k,
                            time: t,
                            doc: None,
                        });
                    }
                }
                Op::Wait(ms) => tokio::time::sleep(Duration::from_millis(u64::from(ms))).await,
                Op::Crash => {
                    eng.task.abort();
                    let _ = (&mut eng.task).await;
                    self.crashes += 1;
                    eng = start(&self.config, &self.stores);
                }
                Op::LoseHistory(side) => {
                    // Changes made between the loss and the fresh stream are only seen
                    // as state by the reconcile: a delete there is undone by the other
                    // side's copy (inherent: the stream cannot report it). So the loss
                    // hits a caught-up engine, and the schedule resumes once the fresh
                    // stream is open.
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    self.losses += 1;
                    self.store(side).lose_history();
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                Op::DropStreams(side) => self.store(side).drop_streams(),
                Op::Reconcile => {
                    self.reconciles += 1;
                    eng.handle.reconcile(None, false).await.expect("reconcile");
                }
            }
        }
        eng
    }

    async fn quiesce(&self, eng: Running) -> EngineHandle {
        tokio::time::sleep(Duration::from_secs(30)).await;
        eng.stop.cancel();
        eng.task.await.expect("engine task");
        eng.handle
    }

    fn engine_changes(&self) -> u64 {
        self.local.counters().engine_changes + self.cloud.counters().engine_changes
    }

    fn client_writes(&self) -> u64 {
        self.local.counters().client_writes + self.cloud.counters().client_writes
    }

    /// No ping-pong: each client change costs the engine a bounded number of writes,
    /// plus what reconciles (one per start and per history loss) may write per key.
    fn check_write_bound(&self) -> Result<(), TestCaseError> {
        let reconciles = 1 + 2 * (self.crashes + self.losses) + self.reconciles;
        let bound = 3 * self.client_writes() + 2 * u64::from(KEYS) * reconciles;
        prop_assert!(
            self.engine_changes() <= bound,
            "engine made {} changes for {} client writes (bound {bound})",
            self.engine_changes(),
            self.client_writes()
        );
        Ok(())
    }
}

/// What a both-ways schedule must end in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Identical sides holding the exact last-writer-wins state.
    Exact,
    /// Identical sides holding only versions some client wrote (the crash property's
    /// default: see the module docs).
    Converged,
}

/// The check of the crash property: `Exact`, or `Converged` when the environment sets
/// `CORE_PROPERTIES_CONVERGED_CRASHES` (see the module docs).
fn crash_check() -> Check {
    if std::env::var_os("CORE_PROPERTIES_CONVERGED_CRASHES").is_some() {
        Check::Converged
    } else {
        Check::Exact
    }
}

/// Both-ways run of `ops` with tie-break side `tie`. With `crashes`, client clocks
/// never run behind the servers'; without, crash steps are left out.
async fn two_way(
    ops: Vec<Op>,
    tie: Side,
    crashes: bool,
    check: Check,
) -> Result<(), TestCaseError> {
    two_way_with(ops, tie, crashes, crashes, check).await
}

/// [`two_way`], choosing whether client clocks may run behind the servers'
/// (`synced_clocks` false) separately.
async fn two_way_with(
    ops: Vec<Op>,
    tie: Side,
    crashes: bool,
    synced_clocks: bool,
    check: Check,
) -> Result<(), TestCaseError> {
    // A full reconcile (`ctl sync`) may race deletes still in the queue: it lets the
    // streams catch up and leaves queued keys to the live path (RELIABILITY.md, 35).
    let ops: Vec<Op> = ops
        .into_iter()
        .filter(|o| crashes || !matches!(o, Op::Crash))
        .collect();
    let mut w = World::new(Mode::BothWays, tie);
    w.synced_clocks = synced_clocks;
    // Schedules of odd length run without the engine's fast paths: the same
    // properties hold either way.
    w.config.fast_paths = ops.len().is_multiple_of(2);
    w.pipeline_sometimes(ops.len());
    let eng = start(&w.config, &w.stores);
    // First start reconciles and saves its first checkpoints; from then on every crash
    // restarts from a checkpoint.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let eng = w.play(&ops, eng).await;
    w.quiesce(eng).await;
    prop_assert_eq!(w.local.snapshot(), w.cloud.snapshot(), "sides differ");
    match check {
        Check::Exact => prop_assert_eq!(
            w.local.snapshot(),
            lww_expected(&w.happened, tie),
            "not the last-writer-wins state"
        ),
        Check::Converged => {
            for d in w.local.snapshot() {
                let written = w.happened.iter().any(|h| h.doc.as_ref() == Some(&d));
                prop_assert!(written, "invented {:?}", d);
            }
        }
    }
    w.check_write_bound()
}

/// One-way modes (issue 16): clients write the source and, on keys of their own (which
/// the source never has, as another client's documents in a hub), the target; each
/// client's clock moves forward. Every source change must arrive (the source's keys
/// end identical on the target, deletes included), the target's own keys must survive
/// exactly as its clients left them, and the source is never written.
async fn one_way(mode: Mode, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let source = if mode == Mode::LocalToCloud {
        Side::Local
    } else {
        Side::Cloud
    };
    let mut w = World::new(mode, Side::Cloud);
    // Monotonic client time per side: rewrite each write's time to its position. The
    // target's clients write keys `KEYS..2*KEYS` only.
    let own = |side: Side, key: u8| if side == source { key } else { key + KEYS };
    let ops: Vec<Op> = ops
        .into_iter()
        .enumerate()
        .map(|(i, op)| match op {
            Op::Put { side, key, v, .. } => Op::Put {
                side,
                key: own(side, key),
                t: i as u8,
                v,
            },
            Op::Del { side, key, .. } => Op::Del {
                side,
                key: own(side, key),
                t: i as u8,
            },
            other => other,
        })
        .collect();
    // Odd-length schedules run without the fast paths (as in `two_way_with`).
    w.config.fast_paths = ops.len().is_multiple_of(2);
    w.pipeline_sometimes(ops.len());
    let eng = start(&w.config, &w.stores);
    // First start reconciles and saves its first checkpoints; from then on every crash
    // restarts from a checkpoint.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let eng = w.play(&ops, eng).await;
    w.quiesce(eng).await;
    let from_source: Vec<Happened> = w
        .happened
        .iter()
        .filter(|h| h.side == source)
        .cloned()
        .collect();
    let src = w.store(source).snapshot();
    prop_assert_eq!(&src, &lww_expected(&from_source, Side::Cloud));
    // Source keys and target-own keys are disjoint: the target holds both sets.
    prop_assert_eq!(
        w.store(source.other()).snapshot(),
        lww_expected(&w.happened, Side::Cloud),
        "target is not the source's documents plus its own"
    );
    prop_assert_eq!(
        w.store(source).counters().apply_statements,
        0,
        "one-way wrote to its source"
    );
    w.check_write_bound()
}

/// `overwrite-local`: clients write both sides; local must end identical to cloud, and
/// cloud is never written.
async fn overwrite(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut w = World::new(Mode::OverwriteLocal, Side::Cloud);
    let eng = start(&w.config, &w.stores);
    // First start reconciles and saves its first checkpoints; from then on every crash
    // restarts from a checkpoint.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let eng = w.play(&ops, eng).await;
    w.quiesce(eng).await;
    let cloud_events: Vec<Happened> = w
        .happened
        .iter()
        .filter(|h| h.side == Side::Cloud)
        .cloned()
        .collect();
    let mut last: BTreeMap<u8, Option<Document>> = BTreeMap::new();
    for h in cloud_events {
        last.insert(h.key, h.doc);
    }
    let cloud_expected: Vec<Document> = last.into_values().flatten().collect();
    prop_assert_eq!(
        w.cloud.snapshot(),
        cloud_expected,
        "cloud changed by the engine"
    );
    prop_assert_eq!(
        w.local.snapshot(),
        w.cloud.snapshot(),
        "local is not identical to cloud"
    );
    prop_assert_eq!(w.cloud.counters().apply_statements, 0);
    w.check_write_bound()
}

proptest! {
    #![proptest_config(proptest_config(256))]

    #[test]
    fn both_ways_converges_to_last_writer_wins(ops in schedule(side().boxed()), tie in side()) {
        block_on(two_way(ops, tie, false, Check::Exact))?;
    }

    #[test]
    fn both_ways_converges_through_crashes(ops in schedule(side().boxed()), tie in side()) {
        let synced_clocks = std::env::var_os("CORE_PROPERTIES_CLOCKS_BEHIND").is_none();
        block_on(two_way_with(ops, tie, true, synced_clocks, crash_check()))?;
    }

    #[test]
    fn local_to_cloud_delivers_the_source_and_keeps_the_targets_own(ops in schedule(side().boxed())) {
        block_on(one_way(Mode::LocalToCloud, ops))?;
    }

    #[test]
    fn cloud_to_local_delivers_the_source_and_keeps_the_targets_own(ops in schedule(side().boxed())) {
        block_on(one_way(Mode::CloudToLocal, ops))?;
    }

    #[test]
    fn overwrite_local_makes_local_identical_to_cloud(ops in schedule(side().boxed())) {
        block_on(overwrite(ops))?;
    }
}

/// Shrunk case found by `both_ways_converges_to_last_writer_wins`. A client deletes key
/// 0 on local (t0) and re-writes it (t1) while the engine propagates cloud's delete (t5)
/// to local; those local changes are still unread when the engine's delete lands (the
/// stream was down). The client delete (t0) used to be taken for the echo of the
/// engine's delete, so the real echo then passed for a client delete stamped with the
/// server's later time (t8) and beat the client's next write (t6) on both sides. A
/// delete echo now only matches a delete not older than the one it propagates.
#[test]
fn reported_case_delete_both_sides_then_put_and_stream_drop() {
    use Side::{Cloud, Local};
    let ops = vec![
        put(Local, 0, 0, 0),
        Op::Wait(51),
        del(Local, 0, 0),
        del(Cloud, 0, 5),
        put(Local, 0, 1, 0),
        put(Local, 1, 8, 0),
        Op::DropStreams(Local),
        Op::Wait(51),
        put(Local, 0, 6, 0),
    ];
    block_on(two_way(ops, Local, false, Check::Exact)).unwrap();
}

fn put(side: Side, key: u8, t: u8, v: u8) -> Op {
    Op::Put { side, key, t, v }
}

fn del(side: Side, key: u8, t: u8) -> Op {
    Op::Del { side, key, t }
}

/// The engine propagates cloud's delete (t6) to local, where it removes the version it
/// had copied there (t0); a local client writes key 1 again (t7) after a crash. The
/// replayed echo of the engine's delete (server time t7) used to pass for a client
/// delete and win the tie with that write.
#[test]
fn replayed_echo_of_a_propagated_delete_does_not_beat_a_write_after_a_crash() {
    use Side::{Cloud, Local};
    let ops = vec![
        put(Cloud, 1, 0, 0),
        del(Cloud, 1, 6),
        put(Cloud, 1, 0, 0),
        put(Local, 2, 7, 0),
        Op::Wait(50),
        Op::Crash,
        put(Local, 1, 0, 0),
    ];
    block_on(two_way(ops, Local, true, Check::Exact)).unwrap();
}

/// Same hole, the client's own write (t6) being removed by the propagated delete (t6
/// wins the tie) before the crash.
#[test]
fn replayed_echo_after_a_lost_tie_does_not_beat_a_write_after_a_crash() {
    use Side::{Cloud, Local};
    let ops = vec![
        put(Cloud, 1, 0, 0),
        Op::Wait(100),
        del(Cloud, 1, 6),
        put(Local, 1, 0, 0),
        put(Local, 2, 7, 0),
        Op::Wait(50),
        Op::Crash,
        put(Local, 1, 0, 1),
    ];
    block_on(two_way(ops, Local, true, Check::Exact)).unwrap();
}

/// Shrunk case of `both_ways_converges_to_last_writer_wins` (found by CI): a local and
/// a cloud delete of one key in the same batch. The local group records a tombstone
/// first; the cloud delete (t6, the winner) was then taken for the echo of an engine
/// delete that tombstone explained — but a tombstone recorded in the same batch
/// explains no change read before it.
#[test]
fn delete_is_not_taken_for_an_echo_of_a_tombstone_made_in_the_same_batch() {
    use Side::{Cloud, Local};
    let ops = vec![
        put(Cloud, 5, 0, 0),
        Op::LoseHistory(Local),
        del(Cloud, 5, 6),
        del(Local, 5, 0),
        Op::Wait(51),
        put(Local, 5, 1, 0),
    ];
    block_on(two_way(ops, Local, false, Check::Exact)).unwrap();
}

/// Shrunk case of `both_ways_converges_through_crashes` (1 in ~20,000 random cases).
/// After the crash, cloud's stream replays the echo of the engine's earlier write of
/// key 5 (t3), although cloud has held local's newer t4 since. Local's client deletes
/// key 5 (an old delete, t0); the replayed t3 is then copied into the empty key, and
/// the echo of that copy hid the delete's entry, so nothing brought t4 back: local
/// held t3 and cloud t4. An engine write that came over a client change is now
/// checked against the other side.
#[test]
fn reported_case_crash_then_local_delete_diverges() {
    use Side::{Cloud, Local};
    let ops = vec![
        put(Local, 5, 3, 0),
        put(Local, 0, 0, 0),
        put(Local, 1, 0, 0),
        Op::Wait(50),
        put(Cloud, 0, 4, 0),
        put(Local, 4, 0, 0),
        put(Local, 5, 0, 0),
        put(Local, 1, 0, 0),
        put(Local, 2, 0, 0),
        Op::Crash,
        put(Local, 1, 0, 0),
        Op::Wait(51),
        del(Local, 5, 0),
    ];
    block_on(two_way(ops, Local, true, Check::Exact)).unwrap();
}

/// Shrunk case of `both_ways_converges_to_last_writer_wins` (about 1 in 200,000
/// cases). Cloud deletes key 2 (t6) although local's t10 exists, re-creates it (t0),
/// deletes it again (t6) and writes t1. The engine re-applies the first delete on cloud
/// (its `DeleteIfNotNewer{t6}` removes t1) and writes local's t10 back. The second
/// client delete, unread when that write was recorded, was taken for its echo; the
/// real echo then passed for a client delete stamped with the server's later time and
/// deleted t10 on both sides. An expected echo now only matches a change not older than
/// the newest change already read from that side.
#[test]
fn own_side_delete_echo_is_not_matched_by_a_later_client_delete() {
    use Side::{Cloud, Local};
    let ops = vec![
        put(Local, 2, 10, 0),
        Op::Wait(51),
        put(Cloud, 1, 0, 0),
        del(Cloud, 2, 6),
        Op::DropStreams(Local),
        put(Cloud, 3, 0, 0),
        put(Cloud, 4, 0, 0),
        put(Cloud, 2, 0, 0),
        put(Cloud, 0, 0, 0),
        del(Cloud, 2, 6),
        put(Cloud, 2, 1, 0),
    ];
    block_on(two_way(ops, Local, false, Check::Exact)).unwrap();
}

/// Shrunk case of `both_ways_converges_to_last_writer_wins` (about 1 in 200,000
/// cases). Cloud deletes key 3 (t0) while local deletes it too (t6); the engine's
/// propagation of cloud's delete finds nothing to delete on local. Local's delete had
/// been read before the engine wrote to that key, so the echo memory did not know the
/// key, and with cloud's tombstone the delete was taken for the echo of the engine's
/// (after a restart such a delete can be one): cloud's later t1 then won over local's
/// t6 delete. Outside a replay after a restart, the memory has seen every write of the
/// run, so a change of a key it does not know is a client's.
#[test]
fn client_delete_is_not_taken_for_an_echo_without_a_restart() {
    use Side::{Cloud, Local};
    let ops = vec![
        put(Local, 3, 0, 0),
        Op::Wait(51),
        put(Cloud, 2, 0, 0),
        del(Cloud, 3, 0),
        put(Local, 0, 0, 0),
        put(Local, 1, 0, 0),
        del(Local, 3, 6),
        Op::Wait(50),
        put(Cloud, 3, 1, 0),
    ];
    block_on(two_way(ops, Local, false, Check::Exact)).unwrap();
}

/// Shrunk case of `both_ways_converges_to_last_writer_wins` (about 1 in 200,000
/// cases). Local deletes key 5 (t3) and writes it again (t4); cloud deletes it (t10)
/// and writes t0. Propagating local's delete removed cloud's t0, and the echo of that
/// engine delete joined cloud's entry after cloud's own t10 delete: the entry was
/// dropped as the engine's own write, so local's t4 beat the t10 delete. A client
/// delete coalesced before an engine delete is now propagated with its own time.
#[test]
fn client_delete_before_the_engines_delete_in_one_entry_still_counts() {
    use Side::{Cloud, Local};
    let ops = vec![
        put(Local, 5, 0, 0),
        Op::Wait(51),
        put(Local, 3, 0, 0),
        put(Local, 4, 0, 0),
        del(Local, 5, 3),
        del(Cloud, 5, 10),
        put(Local, 2, 0, 0),
        put(Cloud, 5, 0, 0),
        put(Local, 0, 0, 0),
        put(Local, 5, 4, 0),
        put(Local, 0, 0, 0),
    ];
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    block_on(two_way(ops, Local, false, Check::Exact)).unwrap();
}

/// Shrunk case of `both_ways_converges_to_last_writer_wins` (about 1 in 400,000
/// cases). Local and cloud both write key 2 at t4; local wins the tie and the engine
/// writes local's version over cloud's, whose stream is down. Local then deletes the
/// key (an old delete, t0). Cloud's own t4 change, read before the engine's write, was
/// then copied into local's empty key: a version that had already lost on cloud, and
/// the sides ended on different versions. A client upsert read before an engine write
/// that changed its key is now left out: that conditional write beat it.
#[test]
fn client_write_that_lost_to_the_engines_write_is_not_copied_later() {
    use Side::{Cloud, Local};
    let ops = vec![
        Op::DropStreams(Cloud),
        Op::Wait(59),
        put(Local, 2, 4, 0),
        put(Cloud, 2, 4, 0),
        Op::Wait(42),
        Op::DropStreams(Cloud),
        Op::Wait(9),
        del(Local, 2, 0),
    ];
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    block_on(two_way(ops, Local, false, Check::Exact)).unwrap();
}

/// Shrunk case of `both_ways_converges_to_last_writer_wins` (about 1 in 400,000
/// cases). Same start as the case above, but cloud's own t11 change is read only after
/// the engine wrote local's (tie-winning) t11 over it, so it is still copied into
/// local's empty key. The entry of local's delete then re-checks that copy against
/// cloud; the re-check used to push it over cloud's equal-time version (local being the
/// tie-break side). A version the engine wrote from the other side now loses a tie
/// there: the other side's newer write replaced it, and is written back.
#[test]
fn recheck_of_an_engine_write_keeps_the_tie_winner() {
    use Side::{Cloud, Local};
    let ops = vec![
        put(Cloud, 0, 0, 0),
        Op::DropStreams(Cloud),
        put(Local, 2, 11, 0),
        put(Cloud, 2, 11, 0),
        put(Cloud, 4, 0, 0),
        put(Cloud, 5, 0, 0),
        put(Cloud, 1, 0, 0),
        Op::Wait(51),
        del(Local, 2, 0),
        Op::DropStreams(Local),
    ];
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    block_on(two_way(ops, Local, false, Check::Exact)).unwrap();
}

/// Shrunk case of `both_ways_converges_to_last_writer_wins` (found once in a
/// 400,000-case run; it fails on older code too). Local and cloud both delete key 1 at
/// t7; local's client re-creates it (t1) while local's stream is down. Propagating
/// cloud's delete removes that t1 on local, but local's own t7 delete, still unread,
/// was then taken for the echo of that write (same time, read after the write was
/// recorded), so the real echo passed for a client delete at the server's later time
/// (t8) and removed cloud's t8 on both sides. Read in stream order, this is the same
/// sequence as `same_time_echo_then_a_client_delete_is_propagated` (a delete not after
/// the propagated one, a client upsert not newer than it, a later delete), where the
/// first delete is the echo: times alone cannot tell them apart. The engine now reads
/// the version each conditional delete is about to remove (one fetch per side), and
/// its echo matches only once the stream has shown that version (here t1, shown after
/// local's own delete).
#[test]
fn same_time_client_delete_read_late_is_not_taken_for_the_engines_echo() {
    use Side::{Cloud, Local};
    let ops = vec![
        put(Local, 1, 0, 0),
        Op::Wait(51),
        del(Local, 1, 7),
        put(Local, 2, 8, 0),
        del(Cloud, 1, 7),
        put(Local, 1, 1, 0),
        Op::DropStreams(Local),
        Op::Wait(50),
        put(Cloud, 1, 8, 0),
    ];
    block_on(two_way(ops, Local, false, Check::Exact)).unwrap();
}

/// Shrunk case of `both_ways_converges_through_crashes` (once in 267,000 cases). Cloud
/// deletes key 1 (t0); local writes t1 and deletes it (t1) before the engine propagates
/// cloud's delete, which so finds nothing to delete, and cloud's tombstone (t0) stays.
/// After a crash, local's genuine delete, replayed, used to match that tombstone and be
/// dropped as the echo of a delete that never happened: cloud kept t1. A tombstone whose
/// deletes all found nothing is now marked quiet, and a quiet one explains no echo.
#[test]
fn replayed_delete_is_not_taken_for_the_echo_of_a_delete_that_found_nothing() {
    use Side::{Cloud, Local};
    let ops = vec![
        put(Local, 1, 0, 0),
        Op::Wait(51),
        Op::DropStreams(Cloud),
        del(Cloud, 1, 0),
        Op::DropStreams(Local),
        put(Local, 1, 0, 0),
        Op::Wait(101),
        del(Local, 1, 0),
        put(Cloud, 2, 0, 0),
        Op::DropStreams(Local),
        Op::Wait(50),
        Op::Crash,
    ];
    block_on(two_way(ops, Local, true, Check::Exact)).unwrap();
}

/// Shrunk case of `both_ways_converges_to_last_writer_wins`, found while trying a fix
/// for `same_time_client_delete_read_late_is_not_taken_for_the_engines_echo`: cloud's delete (t10) propagated to local comes back at
/// the same time t10; local's client then writes t1 (its clock behind) and deletes the
/// key at t11, tying with cloud's t11. That delete is a client's and must reach cloud
/// (a delete wins a tie).
#[test]
fn same_time_echo_then_a_client_delete_is_propagated() {
    use Side::{Cloud, Local};
    let ops = vec![
        put(Cloud, 4, 0, 0),
        del(Cloud, 4, 10),
        put(Local, 4, 0, 0),
        Op::LoseHistory(Local),
        put(Cloud, 4, 11, 0),
        put(Local, 4, 1, 0),
        del(Local, 4, 11),
    ];
    block_on(two_way(ops, Local, false, Check::Exact)).unwrap();
}

/// Shrunk case of `both_ways_converges_through_crashes` with the exact check (the
/// crash-time hole, about 1 in 5,000 cases before the fix). Local deletes key 2 (t10);
/// the engine propagates it to cloud, whose echo comes at cloud's t12. Local's client
/// writes key 2 again (t11), which supersedes the tombstone and is copied to cloud; then
/// a crash. Cloud's stream replays the echo of the engine's delete: no tombstone
/// explains it any more, so it passed for a client delete at t12 and removed t11 on
/// both sides. Propagated deletes are now ledgered with the checkpoint, and the replay
/// recognises their echoes.
#[test]
fn replayed_echo_of_a_delete_whose_tombstone_was_superseded_is_recognised() {
    use Side::Local;
    let ops = vec![
        put(Local, 2, 0, 0),
        Op::Wait(50),
        put(Local, 3, 0, 0),
        del(Local, 2, 10),
        put(Local, 1, 0, 0),
        put(Local, 1, 0, 0),
        Op::Wait(50),
        put(Local, 0, 0, 0),
        put(Local, 2, 0, 0),
        put(Local, 0, 0, 0),
        Op::Crash,
        put(Local, 3, 0, 0),
    ];
    block_on(two_way(ops, Local, true, Check::Exact)).unwrap();
}

/// Shrunk case of `both_ways_converges_through_crashes` with the exact check, found on
/// a first version of the delete ledger that saved deletes before sending them. Cloud's
/// older delete (t0) of local's t4 is propagated and finds nothing to delete, but was
/// saved; after a crash the replay expected its echo, and local's client delete (t4)
/// passed for it. Only deletes known to have removed a document are saved now.
#[test]
fn a_delete_that_found_nothing_is_not_expected_to_echo_after_a_crash() {
    use Side::{Cloud, Local};
    let ops = vec![
        put(Local, 0, 4, 0),
        Op::Wait(51),
        del(Cloud, 0, 0),
        Op::Wait(50),
        Op::Crash,
        del(Local, 0, 4),
    ];
    block_on(two_way(ops, Local, true, Check::Exact)).unwrap();
}

/// Shrunk case of `both_ways_converges_through_crashes` with the exact check (no crash
/// needed; it fails on the code before this session's changes too). Cloud is the
/// tie-break side. The engine copies local's t1 over cloud's client t0; both clients
/// then write key 1 at t2. Cloud's entry (its t0, then the echo of the copy) re-checks
/// the copy against local, which lost to local's t2; local's t2 was written back over
/// cloud's own t2 as if that were the engine's copy, so cloud's tie winner was lost.
/// The write-back wins ties only where it replaces a copy of the same `updatedAt`.
#[test]
fn recheck_write_back_does_not_beat_the_tie_winner_of_its_side() {
    use Side::{Cloud, Local};
    let ops = vec![
        put(Local, 2, 0, 0),
        put(Cloud, 1, 0, 0),
        put(Local, 3, 0, 0),
        put(Local, 0, 0, 0),
        put(Local, 1, 1, 0),
        Op::Wait(51),
        put(Local, 0, 0, 0),
        put(Local, 0, 0, 0),
        put(Cloud, 1, 0, 0),
        put(Local, 1, 0, 0),
        Op::DropStreams(Cloud),
    ];
    block_on(two_way(ops, Cloud, true, Check::Exact)).unwrap();
}

/// Shrunk case of `both_ways_converges_through_crashes` with the exact check (it fails
/// on the code before this session's changes too). Cloud's entry (t0, its delete at t6,
/// t6 again) resolves to the delete, which the engine applies to cloud itself (the
/// delete wins the tie with t6) while local's newer t7 is written back. After a crash
/// cloud's stream replays the echo of that own-side delete (server time t7); the
/// tombstone it would match was superseded by t7, so it passed for a client delete at
/// t7 and removed t7 on both sides. The ledger now keeps own-side deletes too.
#[test]
fn replayed_echo_of_an_own_side_delete_is_recognised() {
    use Side::{Cloud, Local};
    let ops = vec![
        put(Cloud, 0, 0, 0),
        del(Cloud, 0, 6),
        put(Cloud, 0, 0, 0),
        put(Local, 1, 0, 0),
        Op::Wait(1),
        put(Local, 0, 0, 0),
        put(Local, 0, 0, 0),
        Op::Wait(49),
        Op::Crash,
    ];
    block_on(two_way(ops, Local, true, Check::Exact)).unwrap();
}

/// Shrunk case of `both_ways_converges_to_last_writer_wins` (it fails on the code
/// before this session's changes too). The engine's copy of local's t3 came back on
/// cloud's stream; while that stream is down, cloud's client deletes it and writes an
/// older version (its clock behind), which the engine's propagation of local's delete
/// (t2) removes. Cloud's client delete, read first, used to be taken for the echo of
/// that write, and the real echo for a client delete at the server's later time (t9),
/// which removed local's t4. A delete that cannot remove what the stream last showed
/// (a version newer than the delete it propagates) now echoes only after an upsert.
#[test]
fn client_delete_before_the_version_the_engine_deleted_is_not_its_echo() {
    use Side::{Cloud, Local};
    let ops = vec![
        put(Local, 5, 3, 0),
        Op::Wait(51),
        del(Local, 5, 2),
        Op::DropStreams(Cloud),
        del(Cloud, 5, 0),
        put(Cloud, 5, 0, 0),
        del(Local, 0, 9),
        Op::Wait(50),
        put(Local, 5, 4, 0),
    ];
    block_on(two_way(ops, Local, false, Check::Exact)).unwrap();
}

/// Crash property with client clocks behind the servers' (exact check). Local writes key
/// 4 (t0) and deletes it (t2); its client then writes it stamped t1, behind the delete,
/// so that version loses; the engine crashes before handling it. After the restart,
/// local deletes the key (t5) and writes it again stamped t3 (behind again). Replaying,
/// the tombstone rule took the t5 delete for the echo of an own-side delete of the
/// engine (which it never made): the t3 version then won on both sides. The saved
/// delete ledger now lists the deletes in flight (tentative) as well, and says whether
/// it is complete; a complete list leaves the tombstone rule to keys with a tentative
/// entry.
#[test]
fn client_delete_replayed_after_a_crash_is_not_taken_for_an_unlisted_echo() {
    use Side::Local;
    let ops = vec![
        put(Local, 4, 0, 0),
        Op::Wait(50),
        del(Local, 4, 2),
        Op::Wait(51),
        put(Local, 4, 1, 0),
        Op::Crash,
        del(Local, 4, 5),
        put(Local, 4, 3, 0),
    ];
    for tie in Side::BOTH {
        block_on(two_way_with(ops.clone(), tie, true, false, Check::Exact)).unwrap();
    }
}

/// Crash property with client clocks behind the servers' (exact check). The engine
/// copies cloud's key 2 (t6, cloud wins ties) to local; cloud's client overwrites it
/// stamped t0 (behind), and the engine crashes. Replaying, local's copy is not known
/// for an echo and goes back to cloud (right: t6 beats t0), and its echo makes the
/// engine re-check the key against local, whose client has meanwhile written its own
/// version stamped t6. The re-check took the copy for local's version (as for a
/// client change) and let local's t6 replace it on cloud. A copy made from a replayed
/// change now has no known origin, and the usual tie rule decides.
#[test]
fn recheck_of_a_copy_made_from_a_replayed_change_keeps_the_tie_winner() {
    use Side::{Cloud, Local};
    let ops = vec![
        put(Local, 0, 0, 0),
        put(Cloud, 2, 6, 0),
        Op::Wait(51),
        put(Cloud, 2, 0, 0),
        put(Local, 3, 0, 0),
        put(Local, 0, 1, 0),
        Op::Crash,
        Op::Wait(51),
        put(Local, 2, 6, 0),
    ];
    block_on(two_way_with(ops, Cloud, true, false, Check::Exact)).unwrap();
}

/// Crash property, exact check (about 1 in 150,000 cases). Both clients write key 5 at
/// t11 while local's stream is down; the engine copies cloud's version (the tie
/// winner) over local's. Cloud's client then deletes the key with an older stamp (t0),
/// and the engine crashes. Replaying, local's losing t11 was copied into cloud's empty
/// key (fix 11's read marks died with the crash), and the copy of cloud's t11 that
/// follows it in local's stream then lost the tie to it. A client upsert replayed for
/// a key the echo memory does not follow is now left out when its side no longer holds
/// that document: the later change decides.
#[test]
fn replayed_client_write_overwritten_before_a_crash_is_not_copied() {
    use Side::{Cloud, Local};
    let ops = vec![
        put(Local, 0, 0, 0),
        put(Local, 1, 0, 0),
        Op::DropStreams(Local),
        put(Local, 5, 11, 0),
        put(Local, 2, 0, 0),
        put(Cloud, 5, 0, 0),
        put(Local, 3, 0, 0),
        Op::Wait(51),
        del(Cloud, 5, 0),
        Op::Crash,
    ];
    block_on(two_way(ops, Cloud, true, Check::Exact)).unwrap();
}

/// Shrunk case of `both_ways_converges_to_last_writer_wins` (found at once by a seed
/// the crash property with clocks behind had recorded). Cloud wins
/// ties. The engine copies cloud's key 0 (t9) to local; cloud's client writes it
/// stamped t0 (behind), which loses, and deletes it (t0) while the engine writes the
/// winner, fetched from local, back to cloud. That write-back joins cloud's entry after
/// the client delete, so it is re-checked against local, whose client has meanwhile
/// written its own t9. The re-check took the written-back copy for local's version and
/// let local's t9 replace it on cloud (fix 12's rule). A winner written back is now a
/// copy of unknown origin (it may be, as here, the engine's own copy of the side's
/// version), and the plain tie rule decides.
#[test]
fn recheck_of_a_written_back_winner_keeps_the_tie_winner() {
    use Side::{Cloud, Local};
    let ops = vec![
        put(Local, 2, 0, 0),
        put(Local, 5, 0, 0),
        put(Local, 4, 0, 0),
        put(Cloud, 0, 9, 0),
        Op::Wait(51),
        del(Local, 2, 0),
        del(Local, 4, 0),
        put(Local, 1, 0, 0),
        put(Cloud, 0, 0, 0),
        del(Cloud, 2, 0),
        del(Cloud, 0, 0),
        Op::Wait(51),
        put(Local, 0, 9, 0),
    ];
    block_on(two_way(ops, Cloud, false, Check::Exact)).unwrap();
}

/// Shrunk case of `both_ways_converges_to_last_writer_wins` (a default 256-case run;
/// fails on older code too): the sides diverged. Local writes key 3 (t8), copied to
/// cloud, then deletes it with an older stamp (t5); cloud's client writes t9, which the
/// engine copies into local's empty key before local's delete is read, and then writes
/// t0 over it (clock behind). Local's delete, read late, went to cloud and removed that
/// t0 (right: t5 beats t0), but local's copy of t9, newer than the delete, stayed on
/// local alone: its echo brings nothing, and the delete's own-side write just lost to
/// it. An own-side delete that loses to a newer version of its side (read before the
/// delete is sent) now copies that version to the other side.
#[test]
fn delete_beaten_on_its_own_side_by_the_engines_copy_does_not_diverge() {
    use Side::{Cloud, Local};
    let ops = vec![
        put(Local, 3, 8, 0),
        Op::Wait(51),
        del(Local, 3, 5),
        put(Cloud, 3, 0, 0),
        put(Local, 2, 0, 0),
        put(Local, 1, 0, 0),
        Op::DropStreams(Local),
        put(Local, 0, 0, 0),
        put(Local, 4, 0, 0),
        Op::Wait(100),
        put(Cloud, 3, 0, 0),
    ];
    block_on(two_way(ops, Local, false, Check::Exact)).unwrap();
}

/// Shrunk case of `both_ways_converges_through_crashes` with the exact check (once in
/// 232,000 cases; no crash needed). Local wins ties. Local writes key 2 (t12), which
/// the engine copies over cloud's t11. Cloud's entry (its client's t11, then that
/// copy) is re-checked against local, whose client has meanwhile deleted the key with
/// an older stamp: the re-check puts local's t12 back there (right). Local's entry (the
/// delete, then that re-check's write) is re-checked in turn against cloud, whose
/// client has meanwhile written its own t12; fix 12's rule took the re-check's write
/// for cloud's version and let cloud's t12 replace it on local, though local's wins
/// the tie. The rule now applies only to a copy of a version the other side's client
/// wrote, read live; any other copy is left to the plain tie rule.
#[test]
fn recheck_of_a_recheck_keeps_the_tie_winner() {
    use Side::{Cloud, Local};
    let ops = vec![
        put(Cloud, 1, 0, 0),
        put(Local, 0, 0, 0),
        put(Local, 2, 11, 0),
        put(Cloud, 2, 0, 0),
        put(Local, 2, 0, 0),
        put(Local, 1, 0, 0),
        Op::Wait(51),
        Op::DropStreams(Local),
        del(Local, 2, 0),
        Op::Wait(100),
        put(Cloud, 2, 0, 0),
    ];
    block_on(two_way(ops, Local, true, Check::Exact)).unwrap();
}

/// Shrunk case of `both_ways_converges_through_crashes` (exact check, clocks behind;
/// once in 567,000 cases). Local wins ties. The engine copies local's key 3 (t9) to
/// cloud and crashes; cloud's stream replays its client's t0 and delete (t8), and
/// cloud's client writes t1 over the copy. The engine propagates the delete (it loses on
/// local), its own-side delete removes t1 on cloud, and local's t9 is written back
/// there. The replayed echo of the first copy, identical to the write-back, matched the
/// write-back's expected echo and consumed the own-side delete's before it, so that
/// delete's echo later passed for a client delete and removed t9 on both sides. An
/// upsert echo no longer consumes the expected deletes before it.
#[test]
fn replayed_echo_of_an_identical_copy_does_not_consume_an_expected_delete() {
    use Side::{Cloud, Local};
    let ops = vec![
        put(Cloud, 3, 0, 0),
        del(Cloud, 3, 8),
        put(Cloud, 0, 5, 0),
        Op::DropStreams(Cloud),
        put(Local, 0, 0, 0),
        put(Local, 3, 9, 0),
        Op::Wait(50),
        put(Local, 2, 0, 0),
        put(Local, 1, 0, 0),
        Op::Crash,
        put(Cloud, 3, 1, 0),
    ];
    block_on(two_way_with(ops, Local, true, false, Check::Exact)).unwrap();
}

/// Shrunk case of `both_ways_converges_to_last_writer_wins` (once in 424,000 cases;
/// RELIABILITY.md failure 28). Local wins ties. Local deletes key 2 (t6) and its client writes t1 (behind);
/// cloud writes t6 and deletes it (t6), then writes t7 before the engine handles the
/// delete. Propagating cloud's delete removes local's t1 while local's stream, down,
/// has shown nothing of the key yet; local's own t6 delete, read late, is taken for
/// that delete's echo (same time), and the real echo then passes for a client delete
/// at the server's later time and removes t7 on both sides. Failure 19's check needs
/// the stream to have shown the key before; here it had not. Fix: such a match is in
/// doubt until the key's next delete; local's t1 upsert, read after it, is the version
/// the engine's delete removed, so the delete taken was a client's and the echo is
/// expected again.
#[test]
fn same_time_client_delete_of_a_key_not_shown_yet_is_not_taken_for_the_engines_echo() {
    use Side::{Cloud, Local};
    let ops = vec![
        put(Local, 2, 0, 0),
        del(Local, 2, 6),
        put(Cloud, 2, 6, 0),
        put(Local, 2, 1, 0),
        del(Cloud, 2, 0),
        Op::DropStreams(Local),
        put(Local, 3, 11, 0),
        Op::Wait(50),
        put(Cloud, 2, 7, 0),
    ];
    block_on(two_way(ops, Local, false, Check::Exact)).unwrap();
}

/// Shrunk case of `both_ways_converges_through_crashes` (exact check, clocks behind;
/// once in 175,000 cases; RELIABILITY.md failure 27). Local wins ties. Cloud deletes key 5 (t5) after the
/// engine copied local's t0 there; the engine propagates the delete (it loses to
/// local's t6), its own-side delete removes the copy on cloud, local's t6 is written
/// back, and the engine crashes. Cloud's stream replays from before the client's t5
/// delete: the ledgered own-side delete (saved with the checkpoint, expected from any
/// time) matches that client delete, which has its time, and the real echo, later,
/// passes for a client delete at the server's time and removes t6 on both sides. Fix:
/// a saved ledger entry keeps the resume token of the change read just before its
/// delete was sent, and a replay expects its echo only after that change.
#[test]
fn replayed_client_delete_is_not_taken_for_the_echo_of_its_own_side_delete() {
    use Side::{Cloud, Local};
    let ops = vec![
        put(Cloud, 5, 0, 0),
        Op::DropStreams(Cloud),
        put(Cloud, 0, 10, 0),
        del(Cloud, 5, 5),
        Op::Wait(80),
        put(Local, 2, 0, 0),
        put(Local, 0, 0, 0),
        put(Local, 5, 0, 0),
        Op::Wait(70),
        put(Local, 5, 6, 0),
        Op::Crash,
    ];
    block_on(two_way_with(ops, Local, true, false, Check::Exact)).unwrap();
}

/// Shrunk case of `both_ways_converges_through_crashes` (clocks behind; found after
/// 32,578 cases by the first long run of failure 28's fix, RELIABILITY.md failure 29).
/// Local wins ties. Cloud writes key 3 (t2) and deletes it; local writes t3, deletes
/// it and re-creates it with t0 (its clock behind), all unread while local's stream
/// lags. Propagating cloud's delete removes local's t0: local's own delete, read
/// first, is taken for that delete's echo, in doubt; t0's upsert then shows it was a
/// client's. Restoring the expected echo alone lost that client delete, so t3, read
/// before it, came back on both sides. Fix: the revealed client delete joins the
/// upsert's queue entry as a client delete coalesced before it.
#[test]
fn a_delete_found_to_be_a_clients_after_it_was_taken_for_an_echo_still_counts() {
    use Side::{Cloud, Local};
    let ops = vec![
        put(Local, 5, 0, 0),
        put(Cloud, 3, 2, 0),
        del(Cloud, 3, 0),
        put(Local, 4, 0, 0),
        put(Local, 3, 3, 0),
        del(Local, 3, 0),
        put(Local, 3, 0, 0),
        put(Local, 1, 0, 0),
        Op::DropStreams(Local),
        put(Local, 0, 0, 0),
    ];
    block_on(two_way_with(ops, Local, true, false, Check::Exact)).unwrap();
}

/// Shrunk case of `both_ways_converges_through_crashes` (clocks behind; after 289,006
/// cases of the long run of fix 29, RELIABILITY.md failure 30; passes on the code
/// before fix 28). Local wins ties. The engine copies cloud's key 0 (t1) to local,
/// crashes, and after the restart propagates cloud's delete, removing that copy on
/// local (a key the restarted memory had not seen). Its echo is taken, in doubt; then
/// a local client re-creates the key with the same `updatedAt` (t1, its clock behind)
/// and writes t2. Fix 28 took the re-creation for the removed version, so the real
/// echo passed for a client delete at the server's time and removed t2. Fix: the
/// doubt ends only on the removed version itself (same content), not on any document
/// with its `updatedAt`.
#[test]
fn a_client_recreating_a_key_at_the_removed_versions_time_does_not_uncover_an_echo() {
    use Side::{Cloud, Local};
    let ops = vec![
        put(Cloud, 0, 1, 0),
        del(Local, 0, 3),
        Op::LoseHistory(Local),
        del(Cloud, 0, 1),
        Op::Crash,
        Op::Wait(51),
        put(Local, 0, 1, 0),
        put(Local, 1, 0, 0),
        put(Local, 0, 0, 0),
    ];
    block_on(two_way_with(ops, Local, true, false, Check::Exact)).unwrap();
}

/// Shrunk case of `both_ways_converges_through_crashes` (clocks behind; after 260,461
/// cases; RELIABILITY.md failure 31; fails on the code of earlier sessions too). Local
/// wins ties. With local's stream lagging, local's client deletes key 3 (server time
/// t8) and re-creates it with t1 (its clock behind); the engine propagates cloud's
/// delete (t1), removing that t1 on local, and crashes. The replay shows local's
/// client delete first: the ledgered delete took it for its echo, the real echo then
/// passed for a client delete at the server's later time, and removed local's t9
/// written after the restart. Fix: the ledger keeps the version each delete was about
/// to remove, so the replay of that version after the delete taken uncovers it as a
/// client's (fix 28, after a restart).
#[test]
fn replayed_client_delete_before_the_version_a_ledgered_delete_removed_is_not_its_echo() {
    use Side::{Cloud, Local};
    let ops = vec![
        put(Local, 3, 0, 0),
        Op::Wait(51),
        put(Local, 0, 11, 0),
        Op::DropStreams(Local),
        del(Local, 3, 8),
        put(Local, 3, 1, 0),
        del(Cloud, 3, 1),
        Op::Wait(50),
        Op::Crash,
        put(Local, 3, 9, 0),
    ];
    block_on(two_way_with(ops, Local, true, false, Check::Exact)).unwrap();
}

/// Issue 16: the target's own document (another client's, never synced) survives the
/// full reconcile (`ctl sync`) after the source's history loss.
#[test]
fn one_way_target_own_document_survives_a_reconcile_after_history_loss() {
    use Side::{Cloud, Local};
    for (mode, source, target) in [
        (Mode::LocalToCloud, Local, Cloud),
        (Mode::CloudToLocal, Cloud, Local),
    ] {
        let ops = vec![
            put(target, 0, 0, 0),
            put(source, 1, 1, 0),
            Op::LoseHistory(source),
            Op::Reconcile,
            put(source, 2, 2, 0),
        ];
        block_on(one_way(mode, ops)).unwrap();
    }
}
