//! Crash safety: under steady mixed load on both sides (inserts, `$set` updates,
//! replacements, deletes, both sides writing the same keys), the real `datasync run`
//! process is killed with SIGKILL at random moments and restarted; after the load stops,
//! quiescence and a `ctl sync`, both collections must be identical and every key at the
//! version last-writer-wins expects from the client-side log (see `support::load`).

mod support;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::load::{self, Model};
use support::rng::Rng;
use support::{env_u64, Harness, Options};

/// Parameters of one crash run.
struct Plan {
    /// SIGKILLs.
    kills: u64,
    /// Random run time before each kill, ms range.
    up_ms: (u64, u64),
    /// Random down time before each restart, ms range.
    down_ms: (u64, u64),
    /// Pause of each writer between operations.
    pace: Duration,
    /// Pairs beside the loaded one (see `support::Options::extra_pairs`).
    extra_pairs: usize,
}

async fn crash_run(plan: Plan) {
    let seed = Rng::seed_from_env();
    eprintln!("crash: seed {seed} (RELIABILITY_SEED to replay the schedule)");
    let mut rng = Rng::new(seed);
    let h = Harness::start(Options {
        extra_pairs: plan.extra_pairs,
        ..Options::default()
    })
    .await;
    let model = Arc::new(Mutex::new(Model::default()));
    let mut daemon = h.spawn_daemon().await;
    let (stop, writers) = load::start_load(&h, &model, seed, plan.pace);
    let started = Instant::now();
    for i in 0..plan.kills {
        tokio::time::sleep(Duration::from_millis(rng.range(plan.up_ms.0, plan.up_ms.1))).await;
        assert!(
            daemon.alive(),
            "daemon exited on its own before kill {i}:\n{}",
            h.log_tail(30)
        );
        daemon.kill9();
        tokio::time::sleep(Duration::from_millis(
            rng.range(plan.down_ms.0, plan.down_ms.1),
        ))
        .await;
        daemon = h.spawn_daemon().await;
    }
    // Let the last incarnation run under load for a while too.
    tokio::time::sleep(Duration::from_millis(plan.up_ms.1)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer task");
    }
    let load_time = started.elapsed();
    assert!(
        h.wait_converged(Duration::from_secs(2), Duration::from_secs(120))
            .await,
        "no quiescence within 120 s; log tail:\n{}",
        h.log_tail(30)
    );
    let reply = h.ctl_sync();
    assert_eq!(reply["ok"], true, "{reply}");
    assert!(
        h.wait_converged(Duration::from_secs(1), Duration::from_secs(60))
            .await,
        "not converged after ctl sync"
    );
    let verdict = load::verify(&h, &model).await;
    let (writes, deletes, retries, keys) = {
        let m = model.lock().unwrap();
        (m.writes, m.deletes, m.retries, m.keys.len())
    };
    println!(
        "crash: {} kills, {} writes, {} lost, {} resurrected, {} diverged \
         ({keys} keys, {deletes} deletes, {retries} client retries, load {:.1} s, \
         ctl sync after quiescence: {})",
        plan.kills,
        writes,
        verdict.lost.len(),
        verdict.resurrected.len(),
        verdict.diverged.len(),
        load_time.as_secs_f64(),
        reply["report"],
    );
    assert!(
        verdict.clean(),
        "seed {seed}: {verdict:#?}\nlog tail:\n{}",
        h.log_tail(40)
    );
    assert!(daemon.alive(), "daemon must still be running");
    // A final clean stop still works after all that.
    let status = daemon.terminate(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM exit: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_mixed_load_loses_nothing() {
    crash_run(Plan {
        kills: 5,
        up_ms: (1500, 4000),
        down_ms: (0, 400),
        pace: Duration::from_millis(4),
        extra_pairs: 0,
    })
    .await;
}

/// The same with the loaded collections as one of three pairs: one database-level
/// stream per side, every pair's checkpoint saved together (issue 18).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_three_pairs_over_shared_streams_loses_nothing() {
    crash_run(Plan {
        kills: 5,
        up_ms: (1500, 4000),
        down_ms: (0, 400),
        pace: Duration::from_millis(4),
        extra_pairs: 2,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run with scripts/reliability-long.sh"]
async fn sigkill_under_mixed_load_loses_nothing_long() {
    crash_run(Plan {
        kills: env_u64("RELIABILITY_KILLS", 25),
        up_ms: (
            env_u64("RELIABILITY_UP_MIN_MS", 300),
            env_u64("RELIABILITY_UP_MAX_MS", 5000),
        ),
        down_ms: (0, env_u64("RELIABILITY_DOWN_MAX_MS", 1000)),
        pace: Duration::from_millis(env_u64("RELIABILITY_PACE_MS", 2)),
        extra_pairs: env_u64("RELIABILITY_EXTRA_PAIRS", 0) as usize,
    })
    .await;
}
