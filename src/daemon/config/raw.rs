//! Stage one of the configuration: the values exactly as written in the TOML file and
//! the `DATASYNC_*` environment, with the documented defaults. Unknown keys are refused
//! here (`deny_unknown_fields`); meaning (modes, cron, URIs) is checked in
//! [`super::validate`].

use serde::{Deserialize, Serialize};

/// The whole configuration file, as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Sync direction: `both-ways`, `local-to-cloud`, `cloud-to-local`, `overwrite-local`.
    pub mode: String,
    /// The local deployment and collection.
    pub local: RawSide,
    /// The cloud deployment and collection.
    pub cloud: RawSide,
    /// Change-stream sync tuning.
    pub sync: RawSync,
    /// Scheduled and start-up full reconciles.
    pub reconcile: RawReconcile,
    /// Where checkpoints and tombstones live (on the local deployment).
    pub state: RawState,
    /// The admin Unix socket.
    pub admin: RawAdmin,
    /// Logging.
    pub log: RawLog,
    /// The Prometheus / health HTTP endpoint.
    pub metrics: RawMetrics,
    /// Thresholds that make the daemon warn.
    pub alarms: RawAlarms,
    /// `[[pairs]]`: the synced collection pairs. Empty: the one pair of the
    /// `[local]`/`[cloud]` `database`/`collection` shorthand. Read from the file only
    /// (the environment cannot express an array of tables).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pairs: Vec<RawPair>,
}

/// One side: a deployment and, for the one-pair shorthand, a collection in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSide {
    /// MongoDB connection string (must reach a replica set: change streams need one).
    pub uri: String,
    /// Shorthand: database of the one synced collection (default `datasync`); must be
    /// absent when `[[pairs]]` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Shorthand: the one synced collection (default `local_data` / `cloud_data`); must
    /// be absent when `[[pairs]]` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
}

/// One `[[pairs]]` table: a local and a cloud collection kept in sync.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPair {
    /// Unique name (status, metrics, `ctl sync --pair`); default: the `local` string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Local collection as `database.collection` (split at the first dot).
    pub local: String,
    /// Cloud collection as `database.collection` (split at the first dot).
    pub cloud: String,
    /// The pair's mode; default: the top-level `mode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Only documents matching this MongoDB query are synced; default: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<RawFilter>,
    /// The pair's last-modified field; default: `sync.updated_at_field`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at_field: Option<String>,
}

/// A pair's filter as written: a TOML inline table, or a string of MongoDB Extended
/// JSON (for what TOML cannot say, such as `{"$date": …}` or keys with dots).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RawFilter {
    /// `filter = '{"tenantId": "edge-7"}'`.
    Json(String),
    /// `filter = { tenantId = "edge-7" }`.
    Table(serde_json::Map<String, serde_json::Value>),
}

/// `[sync]`: how change events are queued, batched and decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSync {
    /// Last-modified field (BSON DateTime) compared by last-writer-wins.
    pub updated_at_field: String,
    /// Events for the same document within this many milliseconds collapse into one.
    pub debounce_ms: u64,
    /// Maximum writes per batch sent to one side.
    pub max_batch: u64,
    /// Maximum distinct documents pending; stream readers wait beyond it.
    pub queue_capacity: u64,
    /// Side that wins when `updatedAt` is equal and contents differ: `local` or `cloud`.
    pub tie_break: String,
    /// A version whose `updatedAt` is further ahead of the clock than this many
    /// milliseconds is held back until the clock reaches it; 0 disables the guard.
    pub max_future_ms: u64,
}

/// `[reconcile]`: full comparisons of both collections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReconcile {
    /// Cron expression (5 fields, or 6 with seconds first), UTC; empty disables.
    pub schedule: String,
    /// Run a full reconcile at start-up even when checkpoints exist.
    pub on_start: bool,
}

/// `[state]`: the daemon's own bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    /// Database on the local deployment for checkpoints and tombstones.
    pub database: String,
    /// Tombstones older than this many days are expired (TTL index).
    pub tombstone_ttl_days: u64,
}

/// `[admin]`: the control socket used by `datasync ctl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Path of the Unix socket (created mode 0600, parent directory created if missing).
    pub socket: String,
}

/// `[log]`: tracing output (to stderr).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// Filter directive (`info`, `debug`, `datasync=debug,mongodb=warn`…); `RUST_LOG` wins.
    pub level: String,
    /// `pretty` (human) or `json` (one object per line).
    pub format: String,
}

/// `[metrics]`: `GET /metrics`, `/healthz`, `/readyz` over plain HTTP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// `HOST:PORT` to listen on (`127.0.0.1:9464`); empty (the default) disables it.
    pub listen: String,
    /// `/readyz` fails when a watched stream's saved checkpoint is older than this many
    /// seconds.
    pub ready_max_checkpoint_age_s: u64,
}

/// A duration written as seconds (`3600`) or with a unit (`"90s"`, `"30m"`, `"1h"`,
/// `"2d"`); environment variables holding only digits arrive as numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RawDuration {
    /// Seconds.
    Seconds(u64),
    /// A number followed by `s`, `m`, `h` or `d`.
    Text(String),
}

/// `[alarms]`: conditions logged as warnings and shown in `status` and the metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlarms {
    /// Warn when a side's oplog headroom (saved checkpoint minus the oldest entry the
    /// server keeps) falls under this.
    pub oplog_headroom_min: RawDuration,
    /// How often (seconds) the oplog headroom is measured.
    pub oplog_check_interval_s: u64,
}

/// Default connection string of both sides (the original system's single replica set).
pub const DEFAULT_URI: &str = "mongodb://127.0.0.1:27017/?replicaSet=rs0";
/// Default admin socket path (systemd `RuntimeDirectory=datasync`).
pub const DEFAULT_SOCKET: &str = "/run/datasync/admin.sock";

impl Default for RawConfig {
    fn default() -> Self {
        let side = || RawSide {
            uri: DEFAULT_URI.into(),
            database: None,
            collection: None,
        };
        RawConfig {
            pairs: Vec::new(),
            mode: "both-ways".into(),
            local: side(),
            cloud: side(),
            sync: RawSync {
                updated_at_field: "updatedAt".into(),
                debounce_ms: 50,
                max_batch: 1000,
                queue_capacity: 100_000,
                tie_break: "cloud".into(),
                max_future_ms: 300_000,
            },
            reconcile: RawReconcile {
                schedule: "*/5 * * * *".into(),
                on_start: true,
            },
            state: RawState {
                database: "datasync_state".into(),
                tombstone_ttl_days: 30,
            },
            admin: RawAdmin {
                socket: DEFAULT_SOCKET.into(),
            },
            log: RawLog {
                level: "info".into(),
                format: "pretty".into(),
            },
            metrics: RawMetrics {
                listen: String::new(),
                ready_max_checkpoint_age_s: 300,
            },
            alarms: RawAlarms {
                oplog_headroom_min: RawDuration::Text("1h".into()),
                oplog_check_interval_s: 60,
            },
        }
    }
}
