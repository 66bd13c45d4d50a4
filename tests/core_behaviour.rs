//! Deterministic behaviour tests of the sync engine over in-memory stores, one scenario
//! each, on paused tokio time.

use std::sync::Arc;
use std::time::Duration;

use bson::{doc, Bson, DateTime, Document};
use datasync::core::memory::{FaultOp, MemoryState, MemoryStore};
use datasync::core::{
    reconcile_once, CollectionStore, Engine, EngineConfig, Key, Mode, Side, StateStore, Stores,
    StreamState,
};

mod memory_support;
use memory_support::{spawn, Running};

const BASE_MS: i64 = 1_800_000_000_000;

fn at(t: i64) -> DateTime {
    DateTime::from_millis(BASE_MS + t * 1000)
}

fn d(id: i32, t: i64, v: &str) -> Document {
    doc! {"_id": id, "updatedAt": at(t), "v": v}
}

fn k(id: i32) -> Key {
    Key(id.into())
}

struct Fixture {
    local: MemoryStore,
    cloud: MemoryStore,
    state: MemoryState,
    stores: Stores,
    config: EngineConfig,
}

fn fixture(mode: Mode) -> Fixture {
    let local = MemoryStore::new(Side::Local, "updatedAt", 1000);
    let cloud = MemoryStore::new(Side::Cloud, "updatedAt", 1000);
    local.set_clock(at(100));
    cloud.set_clock(at(100));
    let state = MemoryState::new();
    let stores = Stores {
        local: Arc::new(local.clone()),
        cloud: Arc::new(cloud.clone()),
        state: Arc::new(state.clone()),
    };
    let config = EngineConfig {
        mode,
        tombstone_ttl: Duration::from_secs(3650 * 86_400),
        ..EngineConfig::default()
    };
    Fixture {
        local,
        cloud,
        state,
        stores,
        config,
    }
}

impl Fixture {
    async fn start(&self) -> Running {
        let engine = Engine::new(self.config.clone(), self.stores.clone());
        let running = spawn(engine, Duration::from_secs(10));
        settle().await;
        running
    }
}

async fn settle() {
    tokio::time::sleep(Duration::from_secs(3)).await;
}

fn token_seq(t: Option<datasync::core::ResumeToken>) -> i64 {
    t.and_then(|t| t.0.get_i64("seq").ok()).unwrap_or(-1)
}

#[tokio::test(start_paused = true)]
async fn stale_write_is_ignored() {
    let f = fixture(Mode::BothWays);
    let eng = f.start().await;
    f.cloud.put(d(1, 10, "new"));
    settle().await;
    assert_eq!(f.local.get(&k(1)), Some(d(1, 10, "new")));
    // A local client with a slow clock overwrites it with an older updatedAt.
    f.local.put(d(1, 5, "stale"));
    settle().await;
    let h = eng.stop().await;
    assert_eq!(f.cloud.get(&k(1)), Some(d(1, 10, "new")));
    assert_eq!(
        f.local.get(&k(1)),
        Some(d(1, 10, "new")),
        "the newer version is written back"
    );
    assert_eq!(h.status().conflicts, 1);
    // The local change was decided against cloud's version.
    assert_eq!(h.status().conflicts_local_to_cloud, 1);
    assert_eq!(h.status().conflicts_cloud_to_local, 0);
}

#[tokio::test(start_paused = true)]
async fn delete_is_not_resurrected_by_reconcile() {
    let f = fixture(Mode::BothWays);
    let eng = f.start().await;
    f.local.put(d(1, 10, "x"));
    settle().await;
    assert!(f.cloud.get(&k(1)).is_some());
    f.local.delete(&k(1), at(20));
    settle().await;
    eng.stop().await;
    assert_eq!(f.cloud.get(&k(1)), None);
    // A stale copy reappears on cloud (e.g. restored from a backup) while stopped.
    f.cloud.put(d(1, 10, "x"));
    let report = reconcile_once(&f.config, &f.stores, Mode::BothWays, false, None)
        .await
        .expect("reconcile");
    assert_eq!(report.cloud_to_local.inserted, 0);
    assert_eq!(report.local_to_cloud.deleted, 1);
    assert_eq!(f.cloud.get(&k(1)), None);
    assert_eq!(f.local.get(&k(1)), None);
    // A version newer than the delete does come back.
    f.cloud.put(d(1, 30, "reborn"));
    reconcile_once(&f.config, &f.stores, Mode::BothWays, false, None)
        .await
        .expect("reconcile");
    assert_eq!(f.local.get(&k(1)), Some(d(1, 30, "reborn")));
    assert!(
        f.state.all_tombstones().is_empty(),
        "superseded tombstone removed"
    );
}

#[tokio::test(start_paused = true)]
async fn equal_timestamp_conflict_goes_to_tie_break_side() {
    for tie in Side::BOTH {
        let mut f = fixture(Mode::BothWays);
        f.config.tie_break = tie;
        // Reconcile path (first start).
        f.local.put(d(1, 10, "local"));
        f.cloud.put(d(1, 10, "cloud"));
        let eng = f.start().await;
        // Stream path: both sides write the same updatedAt concurrently.
        f.local.put(d(2, 10, "local"));
        f.cloud.put(d(2, 10, "cloud"));
        settle().await;
        eng.stop().await;
        let winner = tie.as_str();
        for id in [1, 2] {
            assert_eq!(
                f.local.get(&k(id)),
                Some(d(id, 10, winner)),
                "tie {tie}, key {id}"
            );
            assert_eq!(
                f.cloud.get(&k(id)),
                Some(d(id, 10, winner)),
                "tie {tie}, key {id}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn echo_costs_no_write_to_origin() {
    let f = fixture(Mode::BothWays);
    let eng = f.start().await;
    for i in 0..5 {
        f.local.put(d(i, 10, "a"));
    }
    settle().await;
    eng.stop().await;
    assert_eq!(f.cloud.snapshot().len(), 5);
    assert_eq!(f.cloud.counters().engine_changes, 5);
    assert_eq!(
        f.local.counters().apply_statements,
        0,
        "nothing written back to the origin"
    );
}

/// Keys the engine fetched from local and cloud after five local inserts settled.
async fn fetched_after_five_copies(mode: Mode, fast_paths: bool) -> u64 {
    let mut f = fixture(mode);
    f.config.fast_paths = fast_paths;
    let eng = f.start().await;
    let before = f.local.counters().fetched_keys + f.cloud.counters().fetched_keys;
    for i in 0..5 {
        f.local.put(d(i, 10, "a"));
    }
    settle().await;
    eng.stop().await;
    assert_eq!(f.cloud.snapshot().len(), 5);
    assert_eq!(f.local.counters().apply_statements, 0);
    f.local.counters().fetched_keys + f.cloud.counters().fetched_keys - before
}

#[tokio::test(start_paused = true)]
async fn the_engines_own_copies_coming_back_are_not_decided_again_with_the_fast_paths() {
    // The inserts' batch reads 5 keys on each side; without the fast paths the copies'
    // echoes on cloud are a second batch deciding the same 5 keys from state.
    assert_eq!(fetched_after_five_copies(Mode::BothWays, true).await, 10);
    assert_eq!(fetched_after_five_copies(Mode::BothWays, false).await, 20);
}

#[tokio::test(start_paused = true)]
async fn with_the_fast_paths_a_one_way_source_is_not_read_again() {
    // local-to-cloud never writes local, so the inserts' documents as local's stream
    // read them are local's state: the batch reads the 5 keys from cloud only.
    assert_eq!(fetched_after_five_copies(Mode::LocalToCloud, true).await, 5);
    assert_eq!(
        fetched_after_five_copies(Mode::LocalToCloud, false).await,
        10
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_writing_back_the_bytes_the_engine_copied_is_still_decided() {
    // The engine copies v10 to cloud; a cloud client writes v20, then writes the old
    // v10 bytes back (a clock behind): local's v20 must win again (last writer wins),
    // whatever the engine remembers of its copy.
    let f = fixture(Mode::BothWays);
    let eng = f.start().await;
    f.local.put(d(1, 10, "a"));
    settle().await;
    assert_eq!(f.cloud.get(&k(1)), Some(d(1, 10, "a")));
    f.cloud.put(d(1, 20, "b"));
    settle().await;
    assert_eq!(f.local.get(&k(1)), Some(d(1, 20, "b")));
    f.cloud.put(d(1, 10, "a"));
    settle().await;
    eng.stop().await;
    assert_eq!(f.cloud.get(&k(1)), Some(d(1, 20, "b")));
    assert_eq!(f.local.get(&k(1)), Some(d(1, 20, "b")));
}

#[tokio::test(start_paused = true)]
async fn echo_after_restart_costs_at_most_a_no_op() {
    let f = fixture(Mode::BothWays);
    let eng = f.start().await;
    f.local.put(d(1, 10, "a"));
    settle().await;
    eng.task.abort(); // echo memory lost
    let _ = eng.task.await;
    // Make the engine re-read cloud's echo: resume cloud from before it.
    f.state
        .save_checkpoint(
            Side::Cloud,
            &datasync::core::ResumeToken(doc! {"seq": 0_i64}),
        )
        .await
        .expect("save");
    let before = f.local.counters();
    let eng = f.start().await;
    eng.stop().await;
    assert_eq!(
        f.local.counters().engine_changes,
        before.engine_changes,
        "no change on the origin"
    );
    assert_eq!(f.local.get(&k(1)), Some(d(1, 10, "a")));
}

#[tokio::test(start_paused = true)]
async fn checkpoint_never_passes_unapplied_event() {
    let f = fixture(Mode::BothWays);
    let eng = f.start().await;
    let first_seq = token_seq(f.state.checkpoint(Side::Local));
    eng.handle.pause();
    f.local.put(d(1, 10, "a"));
    f.local.put(d(2, 10, "b"));
    settle().await;
    assert_eq!(eng.handle.status().queue_depth, 2);
    assert!(
        token_seq(f.state.checkpoint(Side::Local)) <= first_seq,
        "checkpoint passed unapplied events"
    );
    eng.handle.resume();
    settle().await;
    assert_eq!(token_seq(f.state.checkpoint(Side::Local)), first_seq + 2);
    eng.stop().await;
    assert_eq!(f.cloud.snapshot().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn history_lost_triggers_reconcile() {
    let f = fixture(Mode::BothWays);
    let eng = f.start().await;
    eng.stop().await;
    // While stopped: changes on local, and local's history rolls off.
    f.local.put(d(1, 10, "a"));
    f.local.put(d(2, 10, "b"));
    f.local.lose_history();
    let eng = f.start().await;
    let status = eng.handle.status();
    assert_eq!(status.local.state, StreamState::Running);
    let (_, report) = status.last_reconcile.expect("a reconcile ran");
    assert_eq!(
        report.local_to_cloud.inserted, 2,
        "changes lost with the history were reconciled"
    );
    // Streaming continues after the reconcile.
    f.local.put(d(3, 10, "c"));
    settle().await;
    eng.stop().await;
    assert_eq!(f.cloud.snapshot(), f.local.snapshot());
    assert_eq!(f.cloud.snapshot().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn bad_updated_at_is_skipped_not_blocking() {
    let f = fixture(Mode::BothWays);
    let eng = f.start().await;
    f.local.put(doc! {"_id": 1, "updatedAt": "yesterday"});
    f.local.put(doc! {"_id": 2, "v": 1});
    f.local.put(d(3, 10, "good"));
    settle().await;
    let status = eng.handle.status();
    eng.stop().await;
    assert_eq!(status.skipped, 2);
    assert_eq!(f.cloud.snapshot(), vec![d(3, 10, "good")]);
    assert_eq!(
        token_seq(f.state.checkpoint(Side::Local)),
        3,
        "checkpoint moved past the bad documents"
    );
}

#[tokio::test(start_paused = true)]
async fn queue_backpressure_bounds_pending_keys() {
    let mut f = fixture(Mode::BothWays);
    f.config.queue_capacity = 3;
    let eng = f.start().await;
    eng.handle.pause();
    for i in 0..10 {
        f.local.put(d(i, 10, "x"));
    }
    settle().await;
    assert_eq!(
        eng.handle.status().queue_depth,
        3,
        "readers wait at capacity"
    );
    eng.handle.resume();
    settle().await;
    eng.stop().await;
    assert_eq!(f.cloud.snapshot().len(), 10);
}

#[tokio::test(start_paused = true)]
async fn reconcile_memory_is_bounded_by_page() {
    let mut f = fixture(Mode::BothWays);
    f.config.reconcile_batch = 7;
    for i in 0..100 {
        f.local.put(d(i, 10, "l"));
        if i % 2 == 0 {
            f.cloud.put(d(i, if i % 4 == 0 { 20 } else { 10 }, "c"));
        }
    }
    f.cloud.put(d(500, 1, "only-cloud"));
    let r = reconcile_once(&f.config, &f.stores, Mode::BothWays, false, None)
        .await
        .expect("reconcile");
    assert_eq!(f.local.snapshot(), f.cloud.snapshot());
    for s in [&f.local, &f.cloud] {
        assert!(s.counters().max_scan_limit <= 7);
        assert!(s.counters().max_fetch_keys <= 7);
    }
    assert_eq!(r.local_to_cloud.inserted, 50);
    assert_eq!(r.cloud_to_local.inserted, 1);
    assert_eq!(r.conflicts, 50);
    // Half of the shared keys are newer on cloud, half tie (cloud is the tie-break).
    assert_eq!(r.cloud_to_local.updated, 50);
    assert_eq!(r.local_to_cloud.updated, 0);
}

#[tokio::test(start_paused = true)]
async fn dry_run_reconcile_writes_nothing() {
    let f = fixture(Mode::BothWays);
    f.local.put(d(1, 10, "a"));
    f.cloud.put(doc! {"_id": 2, "updatedAt": Bson::Int32(3)});
    let r = reconcile_once(&f.config, &f.stores, Mode::BothWays, true, None)
        .await
        .expect("reconcile");
    assert!(r.dry_run);
    assert_eq!(r.local_to_cloud.inserted, 1);
    assert_eq!(r.skipped, 1);
    assert_eq!(
        f.cloud.counters().apply_calls + f.local.counters().apply_calls,
        0
    );
}

#[tokio::test(start_paused = true)]
async fn overwrite_local_undoes_local_edits() {
    let f = fixture(Mode::OverwriteLocal);
    f.cloud.put(d(1, 10, "cloud"));
    f.local.put(d(2, 10, "local-only"));
    f.cloud.put(doc! {"_id": 3, "v": "no updatedAt"});
    let eng = f.start().await;
    assert_eq!(
        f.local.snapshot(),
        f.cloud.snapshot(),
        "reconcile made local identical"
    );
    f.local.put(d(1, 99, "local edit"));
    f.local.delete(&k(3), at(50));
    settle().await;
    eng.stop().await;
    assert_eq!(f.local.snapshot(), f.cloud.snapshot());
    assert_eq!(f.cloud.counters().apply_statements, 0);
}

#[tokio::test(start_paused = true)]
async fn transient_faults_are_retried_without_loss() {
    let f = fixture(Mode::BothWays);
    let eng = f.start().await;
    f.cloud.fail_next(FaultOp::Apply, 3);
    f.local.fail_next(FaultOp::Next, 1);
    f.state.fail_next(2);
    f.local.put(d(1, 10, "a"));
    f.local.drop_streams();
    f.local.put(d(2, 10, "b"));
    tokio::time::sleep(Duration::from_secs(10)).await;
    eng.stop().await;
    assert_eq!(f.cloud.snapshot(), f.local.snapshot());
    assert_eq!(f.cloud.snapshot().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_the_queue_ignoring_debounce() {
    let mut f = fixture(Mode::BothWays);
    f.config.debounce = Duration::from_secs(3600);
    let eng = f.start().await;
    f.local.put(d(1, 10, "a"));
    tokio::time::sleep(Duration::from_millis(10)).await;
    eng.stop().await;
    assert_eq!(f.cloud.get(&k(1)), Some(d(1, 10, "a")));
    assert_eq!(token_seq(f.state.checkpoint(Side::Local)), 1);
}

#[tokio::test(start_paused = true)]
async fn same_side_delete_older_than_version_loses_after_crash() {
    // Regression (found by proptest): upsert u=3 then delete at t=0 on one side, engine
    // killed before reading them; on restart the entries coalesce.
    let f = fixture(Mode::BothWays);
    let eng = f.start().await;
    f.local.put(d(3, 3, "x"));
    f.local.delete(&k(3), at(0));
    eng.task.abort();
    let _ = eng.task.await;
    let eng = f.start().await;
    settle().await;
    eng.stop().await;
    assert_eq!(f.local.get(&k(3)), Some(d(3, 3, "x")));
    assert_eq!(f.cloud.get(&k(3)), Some(d(3, 3, "x")));
}

#[tokio::test(start_paused = true)]
async fn store_counts_and_tokens_are_exposed() {
    let f = fixture(Mode::BothWays);
    f.local.put(d(1, 1, "a"));
    assert_eq!(f.local.count().await.expect("count"), 1);
    assert_eq!(token_seq(Some(f.local.latest_token())), 1);
}

#[tokio::test(start_paused = true)]
async fn write_back_after_own_side_delete_is_not_taken_for_a_delete() {
    // Regression (found by proptest): the engine deletes a stale local version and
    // writes the newer cloud version back; both echoes coalesce on local's stream and
    // the engine's delete (stamped with the server clock) must not win.
    let f = fixture(Mode::BothWays);
    f.local.set_clock(at(6));
    f.cloud.set_clock(at(5));
    let mut f = f;
    f.config.max_batch = 4;
    f.config.queue_capacity = 4;
    f.config.reconcile_batch = 2;
    f.config.tie_break = Side::Local;
    let eng = f.start().await;
    f.local.put(d(2, 2, "l"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    f.local.lose_history();
    tokio::time::sleep(Duration::from_secs(2)).await;
    f.local.delete(&k(2), at(1));
    f.local.put(d(2, 0, "l"));
    settle().await;
    eng.stop().await;
    assert_eq!(f.local.snapshot(), vec![d(2, 2, "l")]);
    assert_eq!(f.cloud.snapshot(), vec![d(2, 2, "l")]);
}

/// The one-way modes' source and target.
fn one_way_sides(mode: Mode) -> (Side, Side) {
    match mode {
        Mode::LocalToCloud => (Side::Local, Side::Cloud),
        _ => (Side::Cloud, Side::Local),
    }
}

impl Fixture {
    fn side(&self, side: Side) -> &MemoryStore {
        match side {
            Side::Local => &self.local,
            Side::Cloud => &self.cloud,
        }
    }
}

/// The direction report of a reconcile into `target`.
fn into(r: &datasync::core::ReconcileReport, target: Side) -> &datasync::core::DirectionReport {
    match target {
        Side::Cloud => &r.local_to_cloud,
        Side::Local => &r.cloud_to_local,
    }
}

/// Each row of README's mode table for a one-way reconcile (issue 16): the source's
/// documents and deletes of documents that came from it reach the target; the target's
/// own documents (never synced, or edited there since) are left alone; the source is
/// never written. A dry run counts the same.
#[tokio::test(start_paused = true)]
async fn one_way_reconcile_follows_the_mode_table() {
    for mode in [Mode::LocalToCloud, Mode::CloudToLocal] {
        let (src, dst) = one_way_sides(mode);
        let f = fixture(mode);
        let (s, t) = (f.side(src), f.side(dst));
        // 1: new on the source → inserted.
        s.put(d(1, 10, "new"));
        // 2: source newer → updated.
        s.put(d(2, 20, "src newer"));
        t.put(d(2, 10, "old"));
        // 3: the target's own newer edit of a shared key → left alone.
        s.put(d(3, 10, "src"));
        t.put(d(3, 20, "target's edit"));
        // 4: the target's own document (another client's), never synced → kept.
        t.put(d(4, 10, "target's own"));
        // 5: synced, then deleted on the source while its history was lost → deleted.
        t.put(d(5, 10, "synced"));
        // 6: synced, deleted on the source, but edited on the target since → kept.
        t.put(d(6, 30, "edited on the target"));
        // 7: a tombstone of the source's delete covers it → deleted.
        t.put(d(7, 10, "deleted on the source"));
        // 8: a tombstone of the *target's* delete (from a both-ways past) → kept.
        t.put(d(8, 10, "target re-created"));
        // 9: malformed and only on the target → skipped, not deleted.
        t.put(doc! {"_id": 9, "v": "no updatedAt"});
        f.state
            .record_synced(&[(k(5), at(10)), (k(6), at(10))])
            .await
            .expect("records");
        f.state
            .record_tombstones(&[
                datasync::core::Tombstone {
                    key: k(7),
                    deleted_at: at(15),
                    origin: src,
                },
                datasync::core::Tombstone {
                    key: k(8),
                    deleted_at: at(15),
                    origin: dst,
                },
            ])
            .await
            .expect("tombstones");
        let before = t.snapshot();
        let dry = reconcile_once(&f.config, &f.stores, mode, true, None)
            .await
            .expect("dry run");
        assert_eq!(t.snapshot(), before, "{mode}: a dry run wrote");
        let r = reconcile_once(&f.config, &f.stores, mode, false, None)
            .await
            .expect("reconcile");
        let got = into(&r, dst);
        assert_eq!(
            (got.inserted, got.updated, got.deleted, got.kept),
            (1, 1, 2, 3),
            "{mode}: {r:?}"
        );
        assert_eq!(into(&dry, dst), got, "{mode}: the dry run counts the same");
        assert_eq!(r.skipped, 1, "{mode}");
        assert_eq!(
            t.snapshot(),
            vec![
                d(1, 10, "new"),
                d(2, 20, "src newer"),
                d(3, 20, "target's edit"),
                d(4, 10, "target's own"),
                d(6, 30, "edited on the target"),
                d(8, 10, "target re-created"),
                doc! {"_id": 9, "v": "no updatedAt"},
            ],
            "{mode}"
        );
        assert_eq!(s.counters().apply_calls, 0, "{mode}: the source is written");
        assert_eq!(
            f.state.synced(&k(5)),
            None,
            "{mode}: record of a delete kept"
        );
        // A second pass finds nothing to do and still keeps the target's own.
        let again = reconcile_once(&f.config, &f.stores, mode, false, None)
            .await
            .expect("reconcile");
        let got = into(&again, dst);
        assert_eq!(
            (got.inserted, got.updated, got.deleted),
            (0, 0, 0),
            "{mode}"
        );
        assert_eq!(got.kept, 3, "{mode}");
    }
}

/// The live path of a one-way mode (issue 16): source inserts, updates and deletes of
/// synced documents reach the target; the target's own documents and its own newer
/// edits survive; nothing is written to the source.
#[tokio::test(start_paused = true)]
async fn one_way_live_changes_leave_the_targets_own_documents_alone() {
    for mode in [Mode::LocalToCloud, Mode::CloudToLocal] {
        let (src, dst) = one_way_sides(mode);
        let f = fixture(mode);
        let (s, t) = (f.side(src), f.side(dst));
        t.put(d(1, 5, "target's own, from before"));
        let eng = f.start().await;
        t.put(d(2, 10, "target's own, written live"));
        s.put(d(3, 10, "from the source"));
        s.put(d(4, 10, "shared"));
        settle().await;
        t.put(d(4, 30, "target's newer edit"));
        s.put(d(4, 20, "older source edit"));
        s.put(d(5, 10, "synced then deleted"));
        settle().await;
        s.delete(&k(5), at(40));
        settle().await;
        let h = eng.stop().await;
        assert_eq!(
            t.snapshot(),
            vec![
                d(1, 5, "target's own, from before"),
                d(2, 10, "target's own, written live"),
                d(3, 10, "from the source"),
                d(4, 30, "target's newer edit"),
            ],
            "{mode}"
        );
        assert_eq!(s.counters().apply_calls, 0, "{mode}: the source is written");
        let (_, r) = h.status().last_reconcile.expect("start-up reconcile");
        assert_eq!(into(&r, dst).kept, 1, "{mode}: {r:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn client_change_read_before_an_engine_write_keeps_its_echo_expected() {
    // Regression (found by proptest): a cloud client change read after the engine had
    // planned a delete on cloud made the echo memory forget that delete; its echo then
    // came back as a genuine delete stamped with the server clock.
    let mut f = fixture(Mode::BothWays);
    f.local.set_clock(at(0));
    f.cloud.set_clock(at(0));
    f.config.max_batch = 4;
    f.config.queue_capacity = 4;
    f.config.reconcile_batch = 2;
    f.config.tie_break = Side::Local;
    let eng = f.start().await;
    f.local.set_clock(at(5));
    f.cloud.set_clock(at(5));
    f.local.put(d(3, 5, "l"));
    f.local.put(d(2, 0, "l"));
    f.cloud.put(d(2, 0, "c"));
    f.local.delete(&k(2), at(0));
    tokio::time::sleep(Duration::from_millis(51)).await;
    f.local.put(d(2, 1, "l"));
    settle().await;
    eng.stop().await;
    assert_eq!(f.local.get(&k(2)), Some(d(2, 1, "l")));
}

#[tokio::test(start_paused = true)]
async fn delete_made_while_down_is_not_resurrected_after_history_loss() {
    let f = fixture(Mode::BothWays);
    let eng = f.start().await;
    f.local.put(d(1, 10, "doomed"));
    f.local.put(d(2, 10, "kept"));
    settle().await;
    eng.stop().await;
    assert_eq!(f.cloud.get(&k(1)), Some(d(1, 10, "doomed")));
    assert_eq!(f.state.synced(&k(1)), Some(at(10)), "sync recorded");
    // While stopped: cloud deletes it, and cloud's history (with the delete) is lost.
    f.cloud.delete(&k(1), at(50));
    f.cloud.lose_history();
    let eng = f.start().await;
    let status = eng.handle.status();
    let (_, report) = status.last_reconcile.expect("a reconcile ran");
    assert_eq!(report.cloud_to_local.deleted, 1, "{report:?}");
    assert_eq!(report.local_to_cloud.inserted, 0, "{report:?}");
    eng.stop().await;
    assert_eq!(
        f.local.get(&k(1)),
        None,
        "delete made while down resurrected"
    );
    assert_eq!(f.cloud.get(&k(1)), None);
    assert_eq!(f.local.get(&k(2)), Some(d(2, 10, "kept")));
    assert_eq!(f.cloud.get(&k(2)), Some(d(2, 10, "kept")));
    let tombs = f.state.all_tombstones();
    assert_eq!(tombs.len(), 1);
    assert_eq!(
        (tombs[0].origin, tombs[0].deleted_at),
        (Side::Cloud, at(10))
    );
    assert_eq!(
        f.state.synced(&k(1)),
        None,
        "sync record of a deleted key removed"
    );
    assert_eq!(f.state.synced(&k(2)), Some(at(10)));
}

#[tokio::test(start_paused = true)]
async fn edit_made_after_the_last_sync_beats_a_delete_of_unknown_time() {
    let f = fixture(Mode::BothWays);
    let eng = f.start().await;
    f.local.put(d(1, 10, "v1"));
    settle().await;
    eng.stop().await;
    assert_eq!(f.state.synced(&k(1)), Some(at(10)));
    // While stopped: local edits it, cloud deletes it (later, but that time is lost with
    // the history): the edit made after the last sync wins.
    f.local.put(d(1, 20, "edited"));
    f.cloud.delete(&k(1), at(30));
    f.local.lose_history();
    f.cloud.lose_history();
    let eng = f.start().await;
    eng.stop().await;
    assert_eq!(f.local.get(&k(1)), Some(d(1, 20, "edited")));
    assert_eq!(f.cloud.get(&k(1)), Some(d(1, 20, "edited")));
    assert_eq!(f.state.synced(&k(1)), Some(at(20)));
}

#[tokio::test(start_paused = true)]
async fn one_way_reconcile_restores_a_source_document_deleted_on_the_target() {
    let f = fixture(Mode::LocalToCloud);
    f.local.put(d(1, 10, "x"));
    let r = reconcile_once(&f.config, &f.stores, Mode::LocalToCloud, false, None)
        .await
        .expect("reconcile");
    assert_eq!(r.local_to_cloud.inserted, 1);
    assert_eq!(f.state.synced(&k(1)), Some(at(10)));
    // The target deletes it: in a one-way mode the target follows the source, so the
    // sync record does not turn this into a delete of the source.
    f.cloud.delete(&k(1), at(20));
    let r = reconcile_once(&f.config, &f.stores, Mode::LocalToCloud, false, None)
        .await
        .expect("reconcile");
    assert_eq!(r.local_to_cloud.inserted, 1);
    assert_eq!(r.cloud_to_local.deleted, 0);
    assert_eq!(f.local.get(&k(1)), Some(d(1, 10, "x")));
    assert_eq!(f.cloud.get(&k(1)), Some(d(1, 10, "x")));
}

#[tokio::test(start_paused = true)]
async fn reconcile_records_documents_already_equal_and_dry_run_records_nothing() {
    let f = fixture(Mode::BothWays);
    f.local.put(d(1, 10, "same"));
    f.cloud.put(d(1, 10, "same"));
    reconcile_once(&f.config, &f.stores, Mode::BothWays, true, None)
        .await
        .expect("dry run");
    assert_eq!(f.state.synced(&k(1)), None, "a dry run records nothing");
    reconcile_once(&f.config, &f.stores, Mode::BothWays, false, None)
        .await
        .expect("reconcile");
    assert_eq!(f.state.synced(&k(1)), Some(at(10)));
    // Now a delete on cloud with no event at all (e.g. made while another tool ran):
    // the next reconcile deletes local's synced copy instead of copying it back.
    f.cloud.delete(&k(1), at(20));
    let r = reconcile_once(&f.config, &f.stores, Mode::BothWays, true, None)
        .await
        .expect("dry run");
    assert_eq!(
        r.cloud_to_local.deleted, 1,
        "dry run counts the inferred delete"
    );
    assert!(f.local.get(&k(1)).is_some(), "dry run deletes nothing");
    reconcile_once(&f.config, &f.stores, Mode::BothWays, false, None)
        .await
        .expect("reconcile");
    assert_eq!(f.local.get(&k(1)), None);
}

#[tokio::test(start_paused = true)]
async fn delete_wins_over_an_older_version_the_engine_recreated_after_it() {
    // Regression (found by the fault suite): a cloud client deletes a key while the
    // engine propagates an older local update of it in the same batch. The engine's
    // upsert re-creates the key on cloud; its echo is read while the batch is still
    // being applied (slow replies), so the echo memory no longer shows the write when
    // the cloud delete is resolved. The delete is newer: it must win on both sides.
    let f = fixture(Mode::BothWays);
    let eng = f.start().await;
    f.local.put(d(1, 10, "v0"));
    settle().await;
    assert_eq!(f.cloud.get(&k(1)), Some(d(1, 10, "v0")));
    f.cloud.set_reply_delay(Duration::from_secs(1));
    f.local.put(d(1, 20, "local update"));
    f.cloud.delete(&k(1), at(50));
    settle().await;
    eng.stop().await;
    assert_eq!(f.local.snapshot(), Vec::<Document>::new());
    assert_eq!(f.cloud.snapshot(), Vec::<Document>::new());
    let tombs = f.state.all_tombstones();
    assert!(
        tombs
            .iter()
            .any(|t| t.key == k(1) && t.deleted_at == at(50)),
        "{tombs:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn key_synced_during_a_reconcile_is_not_taken_for_a_delete() {
    // Regression (found by the long crash test: 10 new keys lost on both sides): the
    // local scan reached the end of the collection; then a new local key was synced to
    // cloud (sync record written) before cloud's scan reached it. It looked cloud-only
    // with a sync record — the shape of "local deleted it" — and was deleted.
    // (Local-to-cloud: cloud-only is "only on the target", mirrored by a delete.)
    for mode in [Mode::BothWays, Mode::LocalToCloud] {
        let mut f = fixture(mode);
        f.config.reconcile_batch = 2;
        f.local.put(d(1, 1, "a"));
        f.cloud.put(d(1, 1, "a"));
        // Cloud's first scan fails: the retry waits 100 ms after local's scan is done.
        f.cloud.fail_next(FaultOp::Scan, 1);
        let (config, stores) = (f.config.clone(), f.stores.clone());
        let task = tokio::spawn(async move {
            reconcile_once(&config, &stores, mode, false, None)
                .await
                .expect("reconcile")
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Meanwhile a client writes key 5 on local and the engine syncs it.
        let new = d(5, 2, "new");
        f.local.put(new.clone());
        f.cloud.put(new.clone());
        f.state
            .record_synced(&[(k(5), at(2))])
            .await
            .expect("record");
        let report = task.await.expect("task");
        assert_eq!(
            f.local.snapshot(),
            vec![d(1, 1, "a"), new.clone()],
            "{mode:?}"
        );
        assert_eq!(
            f.cloud.snapshot(),
            vec![d(1, 1, "a"), new],
            "{mode:?}: {report:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn sync_records_are_joined_by_key_across_pages() {
    // Pages of 3 keys; records also exist for keys on neither side (skipped by the
    // join) and are missing for some keys. Every lost delete is still found, wherever
    // its key falls in a page, and keys without a record are copied.
    let mut f = fixture(Mode::BothWays);
    f.config.reconcile_batch = 3;
    let mut records = Vec::new();
    for i in 0..30 {
        f.local.put(d(i, 10, "x"));
        if i % 4 != 1 {
            f.cloud.put(d(i, 10, "x"));
        }
        if i % 5 != 3 {
            records.push((k(i), at(10)));
        }
        records.push((Key(Bson::Double(i as f64 + 0.5)), at(10)));
    }
    f.state.record_synced(&records).await.expect("records");
    let r = reconcile_once(&f.config, &f.stores, Mode::BothWays, false, None)
        .await
        .expect("reconcile");
    for i in 0..30 {
        let on_cloud = i % 4 != 1;
        let recorded = i % 5 != 3;
        let expect_local = on_cloud || !recorded;
        assert_eq!(f.local.get(&k(i)).is_some(), expect_local, "local {i}");
        assert_eq!(f.cloud.get(&k(i)).is_some(), expect_local, "cloud {i}");
        // Every key both sides now hold is recorded at its version; deleted ones not.
        let want = if expect_local { Some(at(10)) } else { None };
        assert_eq!(f.state.synced(&k(i)), want, "record {i}");
    }
    let lost = (0..30).filter(|i| i % 4 == 1 && i % 5 != 3).count() as u64;
    let created = (0..30).filter(|i| i % 4 == 1 && i % 5 == 3).count() as u64;
    assert_eq!(r.cloud_to_local.deleted, lost);
    assert_eq!(r.local_to_cloud.inserted, created);
}

/// Issue 20's future-timestamp guard: a version further ahead of its server's clock than
/// `max_future` is not propagated (status and the reconcile report count it), and is
/// decided again once the clock reaches it; the live path and the reconcile agree, in
/// both-ways and in a one-way mode.
#[tokio::test(start_paused = true)]
async fn future_dated_version_is_held_back_until_the_clock_reaches_it() {
    for mode in [Mode::BothWays, Mode::LocalToCloud] {
        let mut f = fixture(mode);
        f.config.max_future = Some(Duration::from_secs(5));
        let eng = f.start().await;
        // The servers' clocks read t100: t200 is 100 s ahead.
        f.local.put(d(1, 200, "from a clock set ahead"));
        f.local.put(d(2, 101, "fine"));
        settle().await;
        assert_eq!(f.cloud.get(&k(1)), None, "{mode}: future version copied");
        assert_eq!(f.cloud.get(&k(2)), Some(d(2, 101, "fine")), "{mode}");
        assert_eq!(eng.handle.status().quarantined, 1, "{mode}");
        let r = eng.handle.reconcile(None, false).await.expect("reconcile");
        assert_eq!(r.quarantined, 1, "{mode}: {r:?}");
        assert_eq!(f.cloud.get(&k(1)), None, "{mode}: reconcile copied it");
        // The clocks reach it (within max_future): it is decided again and copied.
        f.local.set_clock(at(196));
        f.cloud.set_clock(at(196));
        tokio::time::sleep(Duration::from_secs(65)).await;
        assert_eq!(
            f.cloud.get(&k(1)),
            Some(d(1, 200, "from a clock set ahead")),
            "{mode}: not released"
        );
        let h = eng.stop().await;
        assert_eq!(h.status().quarantined, 0, "{mode}");
    }
}

/// A held-back key whose document changes to a sane version is released by that change.
#[tokio::test(start_paused = true)]
async fn held_back_key_is_released_when_the_document_changes() {
    let mut f = fixture(Mode::BothWays);
    f.config.max_future = Some(Duration::from_secs(5));
    let eng = f.start().await;
    f.cloud.put(d(1, 500, "far ahead"));
    settle().await;
    assert_eq!(eng.handle.status().quarantined, 1);
    f.cloud.put(d(1, 100, "corrected"));
    settle().await;
    let h = eng.stop().await;
    assert_eq!(f.local.get(&k(1)), Some(d(1, 100, "corrected")));
    assert_eq!(h.status().quarantined, 0);
}

/// A full reconcile the engine starts itself (here after lost history) writes nothing
/// while applying is paused; it runs once applying resumes.
#[tokio::test(start_paused = true)]
async fn reconcile_after_lost_history_waits_while_paused() {
    let f = fixture(Mode::BothWays);
    let eng = f.start().await;
    eng.handle.pause();
    f.local.put(d(1, 10, "while paused"));
    f.local.lose_history();
    f.local.drop_streams();
    settle().await;
    settle().await;
    assert_eq!(f.cloud.get(&k(1)), None, "a paused engine wrote");
    assert_eq!(f.cloud.counters().apply_calls, 0);
    eng.handle.resume();
    settle().await;
    assert_eq!(f.cloud.get(&k(1)), Some(d(1, 10, "while paused")));
    eng.stop().await;
}
