//! Human-readable rendering of reconcile reports and daemon status for the terminal.

use datasync::core::{DirectionReport, ReconcileReport};
use datasync::daemon::admin::{PairReply, StatusReply};

fn direction(name: &str, d: &DirectionReport) -> String {
    format!(
        "  {name:<15} inserted {:>8}  updated {:>8}  deleted {:>8}  unchanged {:>8}  kept {:>8}",
        d.inserted, d.updated, d.deleted, d.unchanged, d.kept
    )
}

/// Multi-line text of a reconcile report.
pub fn report_text(r: &ReconcileReport) -> String {
    let title = if r.dry_run {
        "reconcile (dry run: nothing written)"
    } else {
        "reconcile"
    };
    [
        format!("{title}  mode {}  {} ms", r.mode, r.duration_ms),
        direction("local → cloud", &r.local_to_cloud),
        direction("cloud → local", &r.cloud_to_local),
        format!(
            "  conflicts {}  skipped {}  held back (future updatedAt) {}",
            r.conflicts, r.skipped, r.quarantined
        ),
    ]
    .join("\n")
}

/// Multi-line text of a status reply.
pub fn status_text(s: &StatusReply) -> String {
    let stream = |name: &str, st: &datasync::daemon::admin::protocol::StreamReply| {
        let lag = st.lag_ms.map_or("-".to_string(), |l| format!("{l} ms"));
        let err = st
            .last_error
            .as_deref()
            .map_or(String::new(), |e| format!("  last error: {e}"));
        format!(
            "  {name:<6} {:<12} lag {lag}{err}",
            format!("{:?}", st.state).to_lowercase()
        )
    };
    let mut lines = vec![
        format!(
            "mode {}  {}  up {} s  queue {}",
            s.mode,
            if s.paused { "PAUSED" } else { "running" },
            s.uptime_s,
            s.queue_depth
        ),
        "streams".to_string(),
        stream("local", &s.streams.local),
        stream("cloud", &s.streams.cloud),
        format!(
            "applied  local → cloud {}  cloud → local {}  conflicts {} (local → cloud {}, cloud → local {})  skipped {}  held back {}",
            s.applied.local_to_cloud,
            s.applied.cloud_to_local,
            s.conflicts,
            s.conflicts_by_direction.local_to_cloud,
            s.conflicts_by_direction.cloud_to_local,
            s.skipped,
            s.quarantined
        ),
    ];
    if !s.pairs.is_empty() {
        lines.push(format!("pairs ({})", s.pairs.len()));
        lines.extend(s.pairs.iter().map(pair_line));
    }
    match &s.last_reconcile {
        Some(l) => lines.push(format!(
            "last reconcile at {}:\n{}",
            l.finished_at,
            report_text(&l.report)
        )),
        None => lines.push("last reconcile: none".into()),
    }
    lines.push(format!(
        "next reconcile: {}",
        s.next_reconcile_at.as_deref().unwrap_or("not scheduled")
    ));
    if let Some(o) = &s.oplog {
        lines.push(format!("oplog (alarm under {} s)", o.headroom_min_s));
        for (name, side) in [("local", &o.local), ("cloud", &o.cloud)] {
            if let Some(w) = side {
                lines.push(oplog_line(name, w));
            }
        }
    }
    lines.join("\n")
}

/// One pair: name, state, lag, queue, applied both ways, conflicts.
fn pair_line(p: &PairReply) -> String {
    let lag = p.lag_ms.map_or("-".to_string(), |l| format!("{l} ms"));
    format!(
        "  {}  {}  lag {lag}  queue {}  applied local → cloud {}  cloud → local {}  conflicts {}",
        p.name,
        p.state,
        p.queue_depth,
        p.applied.local_to_cloud,
        p.applied.cloud_to_local,
        p.conflicts
    )
}

fn oplog_line(name: &str, w: &datasync::daemon::admin::OplogSideReply) -> String {
    let age = w
        .checkpoint_age_s
        .map_or("-".to_string(), |a| format!("{a} s"));
    let headroom = match (&w.headroom_s, &w.unavailable) {
        (Some(h), _) => format!("headroom {h} s{}", if w.low { "  LOW" } else { "" }),
        (None, Some(why)) => format!("headroom unknown: {why}"),
        (None, None) => "headroom not measured yet".to_string(),
    };
    format!("  {name:<6} checkpoint age {age}  {headroom}")
}
