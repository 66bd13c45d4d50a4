//! Several collection pairs in one engine, some of them filtered (issue 18), over
//! in-memory stores: one merged change stream per side serves every pair (as MongoDB's
//! database-level stream does), each pair keeps its own queue, checkpoints, sync
//! records and tombstones, and a filtered pair syncs only the documents its filter
//! accepts. Deterministic scenarios first, then a property over random schedules with
//! crashes, dropped streams and full reconciles. `PROPTEST_CASES` overrides the
//! default of 128 cases.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bson::{doc, DateTime, Document};
use datasync::core::memory::{merged_streams, MemoryFilter, MemoryState, MemoryStore};
use datasync::core::{Engine, EngineConfig, Key, Mode, PairSpec, Side, Stores, Streams};
use proptest::prelude::*;

mod memory_support;
use memory_support::{block_on, proptest_config, spawn, Running};

const BASE_MS: i64 = 1_800_000_000_000;

fn at(t: i64) -> DateTime {
    DateTime::from_millis(BASE_MS + t * 1000)
}

fn k(id: i32) -> Key {
    Key(id.into())
}

/// A document of `tenant`.
fn d(id: i32, t: i64, tenant: &str, v: i32) -> Document {
    doc! {"_id": id, "updatedAt": at(t), "tenant": tenant, "v": v}
}

/// The filter of the filtered pairs: tenant "a".
fn tenant_a() -> MemoryFilter {
    Arc::new(|d: &Document| d.get_str("tenant") == Ok("a"))
}

fn in_a(d: &Document) -> bool {
    d.get_str("tenant") == Ok("a")
}

/// One pair's collections and state.
#[derive(Clone)]
struct Pair {
    name: String,
    local: MemoryStore,
    cloud: MemoryStore,
    state: MemoryState,
    mode: Mode,
    filtered: bool,
}

impl Pair {
    fn new(name: &str, mode: Mode, filtered: bool) -> Self {
        let local = MemoryStore::new(Side::Local, "updatedAt", 200);
        let cloud = MemoryStore::new(Side::Cloud, "updatedAt", 200);
        local.set_clock(at(0));
        cloud.set_clock(at(0));
        Pair {
            name: name.into(),
            local,
            cloud,
            state: MemoryState::new(),
            mode,
            filtered,
        }
    }

    fn store(&self, side: Side) -> &MemoryStore {
        match side {
            Side::Local => &self.local,
            Side::Cloud => &self.cloud,
        }
    }

    /// The engine's handle on `side`: filtered for a filtered pair.
    fn view(&self, side: Side) -> MemoryStore {
        let s = self.store(side);
        if self.filtered {
            s.filtered(tenant_a())
        } else {
            s.clone()
        }
    }

    fn set_clock(&self, t: i64) {
        self.local.set_clock(at(t));
        self.cloud.set_clock(at(t));
    }
}

fn base_config() -> EngineConfig {
    EngineConfig {
        tombstone_ttl: Duration::from_secs(3650 * 86_400),
        debounce: Duration::from_millis(20),
        ..EngineConfig::default()
    }
}

/// Start one engine over `pairs`, with `config` as every pair's base settings.
fn start(pairs: &[Pair], config: &EngineConfig) -> Running {
    // The engine's handles: the views, one writer per collection, whose streams the
    // merged sources read (so the engine's own deletes come back marked).
    let views: Vec<(MemoryStore, MemoryStore)> = pairs
        .iter()
        .map(|p| (p.view(Side::Local), p.view(Side::Cloud)))
        .collect();
    let specs = pairs
        .iter()
        .zip(&views)
        .map(|(p, (l, c))| PairSpec {
            name: p.name.clone(),
            config: EngineConfig {
                mode: p.mode,
                filtered: p.filtered,
                ..config.clone()
            },
            stores: Stores {
                local: Arc::new(l.clone()),
                cloud: Arc::new(c.clone()),
                state: Arc::new(p.state.clone()),
            },
        })
        .collect();
    let streams = Streams {
        local: merged_streams(views.iter().map(|v| v.0.clone()).collect()),
        cloud: merged_streams(views.iter().map(|v| v.1.clone()).collect()),
    };
    spawn(Engine::with_pairs(specs, streams), Duration::from_secs(10))
}

async fn settle() {
    tokio::time::sleep(Duration::from_secs(3)).await;
}

#[tokio::test(start_paused = true)]
async fn several_pairs_share_one_stream_per_side_and_stay_apart() {
    let pairs = vec![
        Pair::new("orders", Mode::BothWays, false),
        Pair::new("items", Mode::LocalToCloud, false),
        Pair::new("prices", Mode::CloudToLocal, false),
    ];
    // Existing documents are reconciled at the first start.
    pairs[0].local.put(d(1, 1, "a", 1));
    pairs[1].local.put(d(1, 1, "a", 2));
    pairs[2].cloud.put(d(1, 1, "a", 3));
    let eng = start(&pairs, &base_config());
    settle().await;
    pairs[0].cloud.put(d(2, 2, "a", 10));
    pairs[1].local.put(d(2, 2, "a", 20));
    pairs[2].cloud.put(d(2, 2, "a", 30));
    // One-way pairs leave the other direction alone.
    pairs[1].cloud.put(d(3, 2, "a", 21));
    pairs[2].local.put(d(3, 2, "a", 31));
    settle().await;
    for p in &pairs {
        let (l, c) = (p.local.snapshot(), p.cloud.snapshot());
        match p.mode {
            Mode::BothWays => assert_eq!(l, c, "{}", p.name),
            _ => {
                let src = if p.mode == Mode::LocalToCloud { &l } else { &c };
                let dst = if p.mode == Mode::LocalToCloud { &c } else { &l };
                for doc in src {
                    assert!(dst.contains(doc), "{}: {doc} not copied", p.name);
                }
                assert_eq!(dst.len(), src.len() + 1, "{}: own document kept", p.name);
            }
        }
        // Nothing leaked between pairs: every document carries its pair's values.
        for doc in l.iter().chain(&c) {
            let v = doc.get_i32("v").unwrap();
            let expected = match p.name.as_str() {
                "orders" => [1, 10],
                "items" => [2, 20],
                _ => [3, 30],
            };
            assert!(
                expected.contains(&v) || doc.get_i32("_id") == Ok(3),
                "{}: {doc}",
                p.name
            );
        }
    }
    let status = eng.handle.status();
    assert_eq!(status.pairs.len(), 3);
    assert_eq!(
        status
            .pairs
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["orders", "items", "prices"]
    );
    assert_eq!(
        status.applied_local_to_cloud,
        status
            .pairs
            .iter()
            .map(|p| p.applied_local_to_cloud)
            .sum::<u64>()
    );
    assert!(status.pairs[1].applied_local_to_cloud >= 1, "{status:?}");
    assert_eq!(status.pairs[1].applied_cloud_to_local, 0);
    // One pair reconciled by name; an unknown name is refused.
    pairs[0].local.put(d(9, 5, "a", 90));
    let r = eng
        .handle
        .reconcile_pair("orders", None, true)
        .await
        .expect("known pair")
        .expect("dry run");
    assert!(r.dry_run);
    assert!(eng
        .handle
        .reconcile_pair("nope", None, true)
        .await
        .is_none());
    let handle = eng.stop().await;
    assert_eq!(handle.pair_names(), ["orders", "items", "prices"]);
}

#[tokio::test(start_paused = true)]
async fn a_document_moving_out_of_the_filter_leaves_the_target_and_back_in_arrives() {
    let p = Pair::new("tenant-a", Mode::BothWays, true);
    // Cloud holds another tenant's document: never touched.
    p.cloud.put(d(50, 1, "b", 500));
    let eng = start(std::slice::from_ref(&p), &base_config());
    settle().await;
    p.set_clock(2);
    p.local.put(d(1, 2, "a", 1));
    settle().await;
    assert_eq!(p.cloud.get(&k(1)), Some(d(1, 2, "a", 1)), "arrives");
    // Moves out of the filter on local: removed from cloud (it came from local).
    p.set_clock(3);
    p.local.put(d(1, 3, "b", 1));
    settle().await;
    assert_eq!(p.cloud.get(&k(1)), None, "left the filter: removed");
    assert_eq!(
        p.local.get(&k(1)),
        Some(d(1, 3, "b", 1)),
        "source untouched"
    );
    // And back in: arrives again.
    p.set_clock(4);
    p.local.put(d(1, 4, "a", 2));
    settle().await;
    assert_eq!(p.cloud.get(&k(1)), Some(d(1, 4, "a", 2)), "back in");
    // The same on the other side: cloud moves it out, local loses its copy.
    p.set_clock(5);
    p.cloud.put(d(1, 5, "b", 3));
    settle().await;
    assert_eq!(p.local.get(&k(1)), None);
    assert_eq!(p.cloud.get(&k(1)), Some(d(1, 5, "b", 3)));
    // A local document whose `_id` another tenant holds on cloud is not copied over it.
    p.set_clock(6);
    p.local.put(d(50, 6, "a", 7));
    settle().await;
    let report = eng.handle.reconcile(None, false).await.expect("reconcile");
    assert_eq!(p.cloud.get(&k(50)), Some(d(50, 1, "b", 500)), "{report:?}");
    assert_eq!(p.local.get(&k(50)), Some(d(50, 6, "a", 7)));
    // Other tenants' changes on either side never reach the other side.
    p.set_clock(7);
    p.cloud.put(d(60, 7, "b", 600));
    p.local.put(d(61, 7, "b", 610));
    settle().await;
    eng.handle.reconcile(None, false).await.expect("reconcile");
    assert_eq!(p.local.get(&k(60)), None);
    assert_eq!(p.cloud.get(&k(61)), None);
    let status = eng.stop().await.status();
    assert_eq!(status.pairs[0].skipped, 0, "{status:?}");
}

#[tokio::test(start_paused = true)]
async fn a_pair_added_later_is_reconciled_and_the_others_resume() {
    let a = Pair::new("a", Mode::BothWays, false);
    let b = Pair::new("b", Mode::BothWays, false);
    let eng = start(std::slice::from_ref(&a), &base_config());
    settle().await;
    a.local.put(d(1, 1, "a", 1));
    settle().await;
    eng.stop().await;
    // While stopped: a change on `a` (its stream replays it) and documents in `b`.
    a.local.put(d(2, 2, "a", 2));
    b.local.put(d(1, 1, "a", 10));
    b.cloud.put(d(2, 1, "a", 20));
    let pairs = [a.clone(), b.clone()];
    let eng = start(&pairs, &base_config());
    settle().await;
    assert_eq!(a.local.snapshot(), a.cloud.snapshot());
    assert_eq!(b.local.snapshot(), b.cloud.snapshot());
    assert_eq!(b.local.snapshot().len(), 2);
    let status = eng.handle.status();
    // `b` was fully reconciled before streaming; `a` resumed from its checkpoint.
    assert!(status.pairs[1].last_reconcile.is_some(), "{status:?}");
    assert!(status.pairs[0].last_reconcile.is_none(), "{status:?}");
    eng.stop().await;
}

// ---------------------------------------------------------------------------------
// The property.

const KEYS: u8 = 4;
const PAIRS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    /// A client writes `key` of pair `pair` on `side`, for tenant a or b.
    Put {
        pair: usize,
        side: Side,
        key: u8,
        t: u8,
        a: bool,
        v: u8,
    },
    /// A client deletes `key` of pair `pair` on `side`.
    Del {
        pair: usize,
        side: Side,
        key: u8,
        t: u8,
    },
    /// Let time pass (ms).
    Wait(u16),
    /// Kill the engine and start a new one from the saved checkpoints.
    Crash,
    /// Break every open stream of `side`.
    DropStreams(Side),
    /// A full reconcile of every pair (`ctl sync`).
    Reconcile,
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Local), Just(Side::Cloud)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..PAIRS, side(), 0..KEYS, 0..12u8, any::<bool>(), 0..4u8)
            .prop_map(|(pair, side, key, t, a, v)| Op::Put { pair, side, key, t, a, v }),
        3 => (0..PAIRS, side(), 0..KEYS, 0..12u8)
            .prop_map(|(pair, side, key, t)| Op::Del { pair, side, key, t }),
        3 => (0..300u16).prop_map(Op::Wait),
        1 => Just(Op::Crash),
        1 => side().prop_map(Op::DropStreams),
        1 => Just(Op::Reconcile),
    ]
}

/// The pairs of the property: an unfiltered both-ways pair, a filtered both-ways pair
/// and a filtered `local-to-cloud` pair.
fn property_pairs() -> Vec<Pair> {
    vec![
        Pair::new("all", Mode::BothWays, false),
        Pair::new("tenant-a", Mode::BothWays, true),
        Pair::new("push-a", Mode::LocalToCloud, true),
    ]
}

/// The key a client of `side` writes: a one-way pair's target clients write keys of
/// their own (`KEYS..2*KEYS`), as another client's documents in a hub.
fn own_key(p: &Pair, side: Side, key: u8) -> u8 {
    if p.mode == Mode::LocalToCloud && side == Side::Cloud {
        key + KEYS
    } else {
        key
    }
}

/// What a client last did to one key of one collection.
type Last = BTreeMap<(usize, Side, u8), Option<Document>>;

async fn run_schedule(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let pairs = property_pairs();
    let mut cfg = base_config();
    cfg.max_batch = 4;
    cfg.queue_capacity = 4;
    cfg.reconcile_batch = 2;
    let mut eng = start(&pairs, &cfg);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut now = 0i64;
    let mut last: Last = BTreeMap::new();
    let mut written: Vec<(usize, Document)> = Vec::new();
    let mut client_writes = 0u64;
    let mut restarts = 0u64;
    for op in ops {
        match op {
            Op::Put {
                pair,
                side,
                key,
                t,
                a,
                v,
            } => {
                let p = &pairs[pair];
                let key = own_key(p, side, key);
                // Client clocks move forward (filters and LWW are what is tested here;
                // skew is the single-pair properties' business).
                now = now.max(i64::from(t)) + 1;
                p.set_clock(now);
                let tenant = if a { "a" } else { "b" };
                let doc = d(i32::from(key), now, tenant, i32::from(v));
                if p.store(side).put(doc.clone()) {
                    client_writes += 1;
                    last.insert((pair, side, key), Some(doc.clone()));
                    written.push((pair, doc));
                }
            }
            Op::Del { pair, side, key, t } => {
                let p = &pairs[pair];
                let key = own_key(p, side, key);
                now = now.max(i64::from(t)) + 1;
                p.set_clock(now);
                if p.store(side).delete(&k(i32::from(key)), at(now)) {
                    client_writes += 1;
                    last.insert((pair, side, key), None);
                }
            }
            Op::Wait(ms) => tokio::time::sleep(Duration::from_millis(u64::from(ms))).await,
            Op::Crash => {
                eng.task.abort();
                let _ = (&mut eng.task).await;
                restarts += 1;
                eng = start(&pairs, &cfg);
            }
            Op::DropStreams(side) => {
                for p in &pairs {
                    p.store(side).drop_streams();
                }
            }
            Op::Reconcile => {
                restarts += 1;
                eng.handle.reconcile(None, false).await.expect("reconcile");
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    eng.stop().await;
    for (i, p) in pairs.iter().enumerate() {
        check_pair(i, p, &last, &written)?;
        // No ping-pong: the engine's writes stay bounded by the clients'.
        let engine = p.local.counters().engine_changes + p.cloud.counters().engine_changes;
        let bound = 3 * client_writes + 2 * u64::from(KEYS) * (1 + 2 * restarts);
        prop_assert!(engine <= bound, "{}: {engine} engine writes", p.name);
    }
    Ok(())
}

/// Pair `i` converged on its filtered set and never wrote outside it.
fn check_pair(
    i: usize,
    p: &Pair,
    last: &Last,
    written: &[(usize, Document)],
) -> Result<(), TestCaseError> {
    for key in 0..2 * KEYS {
        let kk = k(i32::from(key));
        let (l, c) = (p.local.get(&kk), p.cloud.get(&kk));
        // A document outside the filter is exactly what its side's client left there:
        // the engine neither wrote nor deleted it.
        for (side, doc) in [(Side::Local, &l), (Side::Cloud, &c)] {
            let outside = |d: &Document| p.filtered && !in_a(d);
            if let Some(Some(mine)) = last.get(&(i, side, key)) {
                if outside(mine) {
                    prop_assert_eq!(
                        doc.as_ref(),
                        Some(mine),
                        "{} {} {}: out-of-filter document touched",
                        p.name,
                        side,
                        key
                    );
                }
            }
            if let Some(doc) = doc {
                if outside(doc) {
                    prop_assert_eq!(
                        last.get(&(i, side, key)),
                        Some(&Some(doc.clone())),
                        "{} {} {}: engine wrote outside the filter",
                        p.name,
                        side,
                        key
                    );
                }
                // No invention, no leak from another pair.
                prop_assert!(
                    written.iter().any(|(j, w)| *j == i && w == doc),
                    "{} {} {}: {:?} was never written to this pair",
                    p.name,
                    side,
                    key,
                    doc
                );
            }
        }
        let time = |d: &Document| d.get_datetime("updatedAt").ok().copied();
        let outside = |d: &Option<Document>| p.filtered && d.as_ref().is_some_and(|d| !in_a(d));
        if p.mode == Mode::LocalToCloud && key >= KEYS {
            // The target's own documents: exactly as its clients left them.
            let mine = last.get(&(i, Side::Cloud, key)).cloned().flatten();
            prop_assert_eq!(
                &c,
                &mine,
                "{} key {}: the target's own document changed",
                p.name,
                key
            );
            prop_assert_eq!(
                &l,
                &None,
                "{} key {}: one-way wrote its source",
                p.name,
                key
            );
        } else if p.mode == Mode::LocalToCloud && outside(&l) {
            // Moved out of the filter at the source: the copy left the target.
            prop_assert_eq!(
                &c,
                &None,
                "{} key {}: a document that left the filter stayed",
                p.name,
                key
            );
        } else if outside(&l) || outside(&c) {
            // A document outside the filter on one side blocks the key; a version in the
            // filter on the other side survives only if it is newer (a document that
            // left the filter removes the older copies: last writer wins).
            for (inside, out) in [(&l, &c), (&c, &l)] {
                if let (Some(inside), Some(out)) = (inside, out) {
                    if in_a(inside) && !in_a(out) {
                        prop_assert!(
                            time(inside) > time(out),
                            "{} key {}: {:?} outlived {:?}, which left the filter later",
                            p.name,
                            key,
                            inside,
                            out
                        );
                    }
                }
            }
        } else {
            prop_assert_eq!(&l, &c, "{} key {}: sides differ", p.name, key);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(proptest_config(128))]

    #[test]
    fn several_filtered_pairs_converge_on_their_filtered_sets(ops in proptest::collection::vec(op(), 1..30)) {
        block_on(run_schedule(ops))?;
    }
}
