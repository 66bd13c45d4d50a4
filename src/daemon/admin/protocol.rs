//! The admin protocol: newline-delimited JSON, one request per line, one reply per line.
//! Parsing is strict (unknown commands, fields and modes are refused with a specific
//! message) so that a typo in a script is an error, not a silent default.

use bson::DateTime;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::core::{
    EngineStatus, Mode, PairStatus, ReconcileReport, Side, StreamState, StreamStatus,
};
use crate::daemon::metrics::Observer;

/// Longest accepted request line, newline excluded.
pub const MAX_LINE: usize = 64 * 1024;

/// A parsed admin request.
#[derive(Debug, Clone, PartialEq)]
pub enum AdminRequest {
    /// `{"cmd":"status"}`.
    Status,
    /// `{"cmd":"sync","mode":…,"dry_run":…,"pair":…}`: one full reconcile of every
    /// pair, or of the named one. If one is already running (cron, start-up, another
    /// client), this waits for it, then runs its own.
    Sync {
        /// Mode to reconcile in; `None`: the configured mode.
        mode: Option<Mode>,
        /// Report what would change without writing.
        dry_run: bool,
        /// Reconcile only this pair; `None`: all of them.
        pair: Option<String>,
    },
    /// `{"cmd":"pause"}`.
    Pause,
    /// `{"cmd":"resume"}`.
    Resume,
}

impl AdminRequest {
    /// The JSON line a client sends (without the newline).
    pub fn to_json(&self) -> String {
        match self {
            AdminRequest::Status => json!({"cmd": "status"}),
            AdminRequest::Pause => json!({"cmd": "pause"}),
            AdminRequest::Resume => json!({"cmd": "resume"}),
            AdminRequest::Sync {
                mode,
                dry_run,
                pair,
            } => {
                let mut m = Map::new();
                m.insert("cmd".into(), "sync".into());
                if let Some(mode) = mode {
                    m.insert("mode".into(), mode.as_str().into());
                }
                m.insert("dry_run".into(), (*dry_run).into());
                if let Some(pair) = pair {
                    m.insert("pair".into(), pair.as_str().into());
                }
                Value::Object(m)
            }
        }
        .to_string()
    }
}

/// Parse one request line (without its newline).
pub fn parse_request(line: &[u8]) -> Result<AdminRequest, String> {
    let text =
        std::str::from_utf8(line).map_err(|e| format!("request is not valid UTF-8 ({e})"))?;
    let value: Value =
        serde_json::from_str(text.trim()).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(obj) = value else {
        return Err("request must be a JSON object like {\"cmd\":\"status\"}".into());
    };
    let cmd = match obj.get("cmd") {
        Some(Value::String(s)) => s.as_str(),
        Some(other) => return Err(format!("field \"cmd\" must be a string, got {other}")),
        None => return Err("missing field \"cmd\"".into()),
    };
    let allowed: &[&str] = match cmd {
        "sync" => &["cmd", "mode", "dry_run", "pair"],
        "status" | "pause" | "resume" => &["cmd"],
        other => {
            return Err(format!(
                "unknown cmd \"{other}\" (expected status, sync, pause or resume)"
            ))
        }
    };
    if let Some(extra) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("unknown field \"{extra}\" for cmd \"{cmd}\""));
    }
    Ok(match cmd {
        "status" => AdminRequest::Status,
        "pause" => AdminRequest::Pause,
        "resume" => AdminRequest::Resume,
        _ => {
            let mode = match obj.get("mode") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.parse::<Mode>()?),
                Some(other) => return Err(format!("field \"mode\" must be a string, got {other}")),
            };
            let dry_run = match obj.get("dry_run") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(other) => {
                    return Err(format!(
                        "field \"dry_run\" must be true or false, got {other}"
                    ))
                }
            };
            let pair = match obj.get("pair") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(other) => {
                    return Err(format!(
                        "field \"pair\" must be a non-empty string, got {other}"
                    ))
                }
            };
            AdminRequest::Sync {
                mode,
                dry_run,
                pair,
            }
        }
    })
}

/// One stream in `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamReply {
    /// Lifecycle state (`disabled`, `starting`, `running`, `down`, `reconciling`, `stopped`).
    pub state: StreamState,
    /// Lag of the newest applied event, `null` before the first event.
    pub lag_ms: Option<u64>,
    /// Last error on this stream, secrets removed.
    #[serde(default)]
    pub last_error: Option<String>,
}

impl From<&StreamStatus> for StreamReply {
    fn from(s: &StreamStatus) -> Self {
        StreamReply {
            state: s.state,
            lag_ms: s.lag_ms,
            last_error: s.last_error.clone(),
        }
    }
}

/// Both streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamsReply {
    /// Local stream.
    pub local: StreamReply,
    /// Cloud stream.
    pub cloud: StreamReply,
}

/// Applied change-stream writes per direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppliedReply {
    /// Writes made on cloud from local events.
    pub local_to_cloud: u64,
    /// Writes made on local from cloud events.
    pub cloud_to_local: u64,
}

/// Stream conflicts per direction of the change decided.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConflictsReply {
    /// Conflicts on changes read from local (propagating local → cloud).
    pub local_to_cloud: u64,
    /// Conflicts on changes read from cloud (propagating cloud → local).
    pub cloud_to_local: u64,
}

/// The last finished reconcile: its report plus `finished_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastReconcile {
    /// The report.
    #[serde(flatten)]
    pub report: ReconcileReport,
    /// When it finished (RFC 3339, UTC).
    pub finished_at: String,
}

impl From<&(DateTime, ReconcileReport)> for LastReconcile {
    fn from((at, report): &(DateTime, ReconcileReport)) -> Self {
        LastReconcile {
            report: report.clone(),
            finished_at: rfc3339(*at),
        }
    }
}

/// Reply to `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReply {
    /// Always true.
    pub ok: bool,
    /// Configured mode.
    pub mode: Mode,
    /// Whether applying is paused.
    pub paused: bool,
    /// Seconds since the daemon started.
    pub uptime_s: u64,
    /// Distinct documents waiting to be applied.
    pub queue_depth: u64,
    /// Per-side stream state and lag.
    pub streams: StreamsReply,
    /// Applied writes per direction.
    pub applied: AppliedReply,
    /// Conflicts decided (both directions).
    pub conflicts: u64,
    /// `conflicts` per direction (absent from older daemons).
    #[serde(default)]
    pub conflicts_by_direction: ConflictsReply,
    /// Documents skipped as malformed.
    pub skipped: u64,
    /// Keys held back now: their `updatedAt` is further in the future than
    /// `sync.max_future_ms` allows.
    pub quarantined: u64,
    /// Last finished reconcile, or null.
    pub last_reconcile: Option<LastReconcile>,
    /// Next scheduled reconcile (RFC 3339, UTC), null when unscheduled.
    pub next_reconcile_at: Option<String>,
    /// Saved checkpoint and oplog headroom per side (absent from older daemons).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oplog: Option<OplogReply>,
    /// Each collection pair (the fields above are their totals; absent from older
    /// daemons).
    #[serde(default)]
    pub pairs: Vec<PairReply>,
}

/// One collection pair in `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairReply {
    /// The pair's name (`ctl sync --pair NAME`).
    pub name: String,
    /// Its mode.
    pub mode: Mode,
    /// `reconciling`, `paused`, `running` or `stopped`.
    pub state: String,
    /// The larger of its two directions' lag; null before the first event.
    pub lag_ms: Option<u64>,
    /// Distinct documents waiting in its queue.
    pub queue_depth: u64,
    /// Applied writes per direction.
    pub applied: AppliedReply,
    /// Conflicts decided.
    pub conflicts: u64,
    /// Documents skipped as malformed.
    pub skipped: u64,
    /// Keys held back by the future-timestamp guard.
    pub quarantined: u64,
    /// Its last finished reconcile, or null.
    pub last_reconcile: Option<LastReconcile>,
}

impl From<&PairStatus> for PairReply {
    fn from(p: &PairStatus) -> Self {
        PairReply {
            name: p.name.clone(),
            mode: p.mode,
            state: p.state.clone(),
            lag_ms: p.lag_ms,
            queue_depth: p.queue_depth,
            applied: AppliedReply {
                local_to_cloud: p.applied_local_to_cloud,
                cloud_to_local: p.applied_cloud_to_local,
            },
            conflicts: p.conflicts,
            skipped: p.skipped,
            quarantined: p.quarantined,
            last_reconcile: p.last_reconcile.as_ref().map(LastReconcile::from),
        }
    }
}

/// One side's history window in `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OplogSideReply {
    /// Seconds since the saved checkpoint's cluster time; null before the first.
    pub checkpoint_age_s: Option<u64>,
    /// Seconds of history the server keeps behind the checkpoint; null when unknown
    /// (negative: the checkpoint is already out of the oplog).
    pub headroom_s: Option<i64>,
    /// True when the headroom is under `[alarms] oplog_headroom_min`.
    pub low: bool,
    /// Why the headroom cannot be read on this side, if so.
    pub unavailable: Option<String>,
}

/// Both sides' history windows; a side not watched in this mode is null.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OplogReply {
    /// Local side.
    pub local: Option<OplogSideReply>,
    /// Cloud side.
    pub cloud: Option<OplogSideReply>,
    /// The alarm threshold, seconds.
    pub headroom_min_s: u64,
}

impl OplogReply {
    /// From the observer's last measurements.
    pub fn new(o: &Observer, mode: Mode) -> Self {
        let now = chrono::Utc::now().timestamp();
        let side = |side: Side| {
            mode.watches(side).then(|| {
                let w = o.window(side);
                OplogSideReply {
                    checkpoint_age_s: w.checkpoint_age_s(now),
                    headroom_s: w.headroom_s(),
                    low: w.low,
                    unavailable: w.unavailable.clone(),
                }
            })
        };
        OplogReply {
            local: side(Side::Local),
            cloud: side(Side::Cloud),
            headroom_min_s: o.config().alarms.oplog_headroom_min.as_secs(),
        }
    }
}

impl StatusReply {
    /// Build from an engine snapshot.
    pub fn new(
        s: &EngineStatus,
        uptime_s: u64,
        next_reconcile_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Self {
        StatusReply {
            ok: true,
            mode: s.mode,
            paused: s.paused,
            uptime_s,
            queue_depth: s.queue_depth,
            streams: StreamsReply {
                local: (&s.local).into(),
                cloud: (&s.cloud).into(),
            },
            applied: AppliedReply {
                local_to_cloud: s.applied_local_to_cloud,
                cloud_to_local: s.applied_cloud_to_local,
            },
            conflicts: s.conflicts,
            conflicts_by_direction: ConflictsReply {
                local_to_cloud: s.conflicts_local_to_cloud,
                cloud_to_local: s.conflicts_cloud_to_local,
            },
            skipped: s.skipped,
            quarantined: s.quarantined,
            last_reconcile: s.last_reconcile.as_ref().map(LastReconcile::from),
            next_reconcile_at: next_reconcile_at
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            oplog: None,
            pairs: s.pairs.iter().map(PairReply::from).collect(),
        }
    }
}

fn rfc3339(t: DateTime) -> String {
    t.to_chrono()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A reply line.
#[derive(Debug, Clone, PartialEq)]
pub enum AdminReply {
    /// Reply to `status`.
    Status(Box<StatusReply>),
    /// Reply to `sync`: `{"ok":true,"report":{…}}`.
    Report(ReconcileReport),
    /// `{"ok":true}` (pause, resume).
    Ok,
    /// `{"ok":false,"error":"…"}`.
    Error(String),
}

impl AdminReply {
    /// The JSON line sent back (without the newline).
    pub fn to_json(&self) -> String {
        match self {
            AdminReply::Status(s) => serde_json::to_value(s),
            AdminReply::Report(r) => {
                serde_json::to_value(r).map(|r| json!({"ok": true, "report": r}))
            }
            AdminReply::Ok => Ok(json!({"ok": true})),
            AdminReply::Error(e) => Ok(json!({"ok": false, "error": e})),
        }
        // Plain data with string keys: serialising to a Value cannot fail.
        .expect("reply serialises to JSON")
        .to_string()
    }
}
