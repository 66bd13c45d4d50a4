//! Per-pair series (`pair` label) beside the unlabelled totals of [`super::Metrics`]:
//! with several collection pairs in one daemon, a total that moves says nothing about
//! which pair is busy, stuck or conflicting.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::core::PairStatus;

/// `{pair}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByPair {
    /// The pair's name.
    pair: String,
}

/// `{pair, direction}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByPairDirection {
    /// The pair's name.
    pair: String,
    /// Where writes went: `local_to_cloud` or `cloud_to_local`.
    direction: &'static str,
}

/// The per-pair metrics.
#[derive(Default)]
pub struct PairMetrics {
    /// Per pair: applied local → cloud, cloud → local, conflicts already counted.
    seen: Mutex<HashMap<String, [u64; 3]>>,
    /// Change-stream writes applied, per pair and direction.
    applied: Family<ByPairDirection, Counter>,
    /// Conflicts decided on the streams, per pair.
    conflicts: Family<ByPair, Counter>,
    /// Distinct documents waiting in each pair's queue.
    queue_depth: Family<ByPair, Gauge>,
}

impl PairMetrics {
    /// Register the families under `r` (prefix `datasync_pair_`).
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "pair_applied",
            "Change-stream writes applied, per collection pair and direction",
            self.applied.clone(),
        );
        r.register(
            "pair_conflicts",
            "Conflicts decided on the streams, per collection pair",
            self.conflicts.clone(),
        );
        r.register(
            "pair_queue_depth",
            "Distinct documents waiting to be applied, per collection pair",
            self.queue_depth.clone(),
        );
    }

    /// Advance the counters to the pairs' running totals and set the gauges.
    pub fn refresh(&self, pairs: &[PairStatus]) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        for p in pairs {
            let last = seen.entry(p.name.clone()).or_default();
            let totals = [
                p.applied_local_to_cloud,
                p.applied_cloud_to_local,
                p.conflicts,
            ];
            for (i, direction) in ["local_to_cloud", "cloud_to_local"].into_iter().enumerate() {
                let label = ByPairDirection {
                    pair: p.name.clone(),
                    direction,
                };
                self.applied
                    .get_or_create(&label)
                    .inc_by(totals[i].saturating_sub(last[i]));
            }
            self.conflicts
                .get_or_create(&ByPair {
                    pair: p.name.clone(),
                })
                .inc_by(totals[2].saturating_sub(last[2]));
            for (l, t) in last.iter_mut().zip(totals) {
                *l = (*l).max(t);
            }
            self.queue_depth
                .get_or_create(&ByPair {
                    pair: p.name.clone(),
                })
                .set(p.queue_depth as i64);
        }
    }
}
