//! Stage two of the configuration: turns [`RawConfig`] into typed settings and refuses
//! values that cannot work (unknown mode, bad cron, zero sizes, unparsable URIs, a state
//! database that would be synced), each with a message naming the key. The collection
//! pairs are resolved and checked in [`super::pairs`].

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds};
use croner::Cron;

pub use super::ops::{AlarmsConfig, MetricsConfig};
use super::raw::{RawAdmin, RawConfig, RawLog, RawReconcile, RawSide, RawState, RawSync};
use super::{pairs, ConfigError};
use crate::core::{EngineConfig, Mode, Side};
use crate::core::{PairSpec, Stores};
use crate::mongo::{redact_text, redact_uri, MongoPair, MongoSides, Namespace};

/// Validated configuration of the daemon and the one-shot commands.
#[derive(Debug, Clone)]
pub struct Config {
    /// Sync direction.
    pub mode: Mode,
    /// The local side.
    pub local: SideConfig,
    /// The cloud side.
    pub cloud: SideConfig,
    /// Queueing and conflict settings.
    pub sync: SyncConfig,
    /// Scheduled / start-up reconcile.
    pub reconcile: ReconcileConfig,
    /// Checkpoints and tombstones.
    pub state: StateConfig,
    /// Admin socket.
    pub admin: AdminConfig,
    /// Logging.
    pub log: LogConfig,
    /// The metrics / health endpoint.
    pub metrics: MetricsConfig,
    /// Warning thresholds.
    pub alarms: AlarmsConfig,
    /// The synced collection pairs, resolved (the `[local]`/`[cloud]` collections are
    /// the one pair of the shorthand).
    pub pairs: Vec<PairConfig>,
}

/// One synced pair of collections, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct PairConfig {
    /// Unique name (default: the local namespace `db.collection`).
    pub name: String,
    /// The local collection.
    pub local: Namespace,
    /// The cloud collection.
    pub cloud: Namespace,
    /// The pair's mode (default: the top-level `mode`).
    pub mode: Mode,
    /// The pair's last-modified field (default: `sync.updated_at_field`).
    pub updated_at_field: String,
    /// Only documents matching this query are synced; `None`: all.
    pub filter: Option<bson::Document>,
}

/// One side's deployment, and the collection of the first pair (the shorthand's one
/// pair when `[[pairs]]` is absent).
#[derive(Debug, Clone, PartialEq)]
pub struct SideConfig {
    /// Connection string (syntax checked; may hold a password: print with
    /// [`redact_uri`]).
    pub uri: String,
    /// Database of the synced collection.
    pub database: String,
    /// The synced collection.
    pub collection: String,
}

/// `[sync]`, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncConfig {
    /// Last-modified field name.
    pub updated_at_field: String,
    /// Coalescing window.
    pub debounce: Duration,
    /// Writes per batch (> 0).
    pub max_batch: usize,
    /// Pending documents bound (> 0).
    pub queue_capacity: usize,
    /// Tie-break winner.
    pub tie_break: Side,
    /// Future-timestamp guard: how far ahead a version may be; `None`: off.
    pub max_future: Option<Duration>,
}

/// `[reconcile]`, typed.
#[derive(Debug, Clone)]
pub struct ReconcileConfig {
    /// Cron schedule; `None` when disabled (empty string).
    pub schedule: Option<Schedule>,
    /// Reconcile at start-up even with checkpoints.
    pub on_start: bool,
}

/// `[state]`, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct StateConfig {
    /// State database on the local deployment.
    pub database: String,
    /// Tombstone lifetime.
    pub tombstone_ttl: Duration,
}

/// `[admin]`, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// Admin socket path.
    pub socket: PathBuf,
}

/// `[log]`, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// A valid `EnvFilter` directive.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable, coloured on a terminal.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// A parsed cron schedule (UTC), with the text it came from.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The expression as configured.
    pub expr: String,
    /// Parsed form.
    cron: Cron,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr
    }
}

impl Schedule {
    /// Parse a 5-field cron expression (or 6 fields, seconds first).
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expr)
            .map_err(|e| e.to_string())?;
        Ok(Schedule {
            expr: expr.to_string(),
            cron,
        })
    }

    /// The first fire time strictly after `now`.
    pub fn next_after(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&now, false).ok()
    }
}

fn nonzero(key: &str, v: u64) -> Result<u64, String> {
    if v == 0 {
        Err(format!("key `{key}` must be greater than 0"))
    } else {
        Ok(v)
    }
}

fn nonempty(key: &str, v: &str) -> Result<String, String> {
    if v.trim().is_empty() {
        Err(format!("key `{key}` must not be empty"))
    } else {
        Ok(v.to_string())
    }
}

fn side(name: &str, raw: &RawSide, problems: &mut Vec<String>) -> String {
    if let Err(e) = mongodb::options::ConnectionString::parse(&raw.uri) {
        problems.push(format!(
            "key `{name}.uri` is not a valid MongoDB connection string ({}): {}",
            redact_uri(&raw.uri),
            redact_text(&e.to_string(), &[&raw.uri])
        ));
    }
    raw.uri.clone()
}

impl Config {
    /// Check every value of `raw`; all problems are reported at once.
    pub fn validate(raw: &RawConfig) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let mut ok = |r: Result<u64, String>| {
            r.unwrap_or_else(|e| {
                problems.push(e);
                1
            })
        };
        let debounce_ms = ok(nonzero("sync.debounce_ms", raw.sync.debounce_ms));
        let max_batch = ok(nonzero("sync.max_batch", raw.sync.max_batch));
        let queue_capacity = ok(nonzero("sync.queue_capacity", raw.sync.queue_capacity));
        let ttl_days = ok(nonzero(
            "state.tombstone_ttl_days",
            raw.state.tombstone_ttl_days,
        ));

        let mode = raw.mode.parse::<Mode>().unwrap_or_else(|e| {
            problems.push(format!("key `mode`: {e}"));
            Mode::default()
        });
        let tie_break = raw.sync.tie_break.parse::<Side>().unwrap_or_else(|e| {
            problems.push(format!("key `sync.tie_break`: {e}"));
            Side::Cloud
        });
        let schedule = if raw.reconcile.schedule.trim().is_empty() {
            None
        } else {
            Schedule::parse(raw.reconcile.schedule.trim())
                .map_err(|e| {
                    problems.push(format!(
                        "key `reconcile.schedule`: invalid cron expression '{}': {e}",
                        raw.reconcile.schedule
                    ))
                })
                .ok()
        };
        let local_uri = side("local", &raw.local, &mut problems);
        let cloud_uri = side("cloud", &raw.cloud, &mut problems);
        let pairs = pairs::resolve(raw, mode, &mut problems);
        // The first pair's collections (the shorthand's, or `pairs[0]`'s).
        let side_config = |uri: String, ns: &Namespace| SideConfig {
            uri,
            database: ns.database.clone(),
            collection: ns.collection.clone(),
        };
        let local = side_config(local_uri, &pairs[0].local);
        let cloud = side_config(cloud_uri, &pairs[0].cloud);
        for (key, v) in [
            ("sync.updated_at_field", &raw.sync.updated_at_field),
            ("state.database", &raw.state.database),
            ("admin.socket", &raw.admin.socket),
        ] {
            if let Err(e) = nonempty(key, v) {
                problems.push(e);
            }
        }
        if raw.sync.updated_at_field == "_id" {
            problems.push("key `sync.updated_at_field` must not be `_id`".into());
        }
        if problems.is_empty() {
            let sides = adapter_sides(&local.uri, &cloud.uri, &pairs, &raw.state.database);
            if let Err(e) = sides.validate() {
                problems.push(format!("key `pairs`: {e}"));
            }
        }
        let format = match raw.log.format.as_str() {
            "pretty" => LogFormat::Pretty,
            "json" => LogFormat::Json,
            other => {
                problems.push(format!(
                    "key `log.format`: unknown format '{other}' (expected 'pretty' or 'json')"
                ));
                LogFormat::Pretty
            }
        };
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&raw.log.level) {
            problems.push(format!(
                "key `log.level`: invalid filter '{}': {e}",
                raw.log.level
            ));
        }
        let metrics = MetricsConfig::validate(&raw.metrics, &mut problems);
        let alarms = AlarmsConfig::validate(&raw.alarms, &mut problems);
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        Ok(Config {
            pairs,
            mode,
            local,
            cloud,
            sync: SyncConfig {
                updated_at_field: raw.sync.updated_at_field.clone(),
                debounce: Duration::from_millis(debounce_ms),
                max_batch: max_batch as usize,
                queue_capacity: queue_capacity as usize,
                tie_break,
                max_future: (raw.sync.max_future_ms > 0)
                    .then(|| Duration::from_millis(raw.sync.max_future_ms)),
            },
            reconcile: ReconcileConfig {
                schedule,
                on_start: raw.reconcile.on_start,
            },
            state: StateConfig {
                database: raw.state.database.clone(),
                tombstone_ttl: Duration::from_secs(ttl_days * 86_400),
            },
            admin: AdminConfig {
                socket: PathBuf::from(&raw.admin.socket),
            },
            log: LogConfig {
                level: raw.log.level.clone(),
                format,
            },
            metrics,
            alarms,
        })
    }

    /// The adapter's view: both deployments, the pairs and the state database.
    pub fn mongo_sides(&self) -> MongoSides {
        MongoSides {
            tombstone_ttl: self.state.tombstone_ttl,
            ..adapter_sides(
                &self.local.uri,
                &self.cloud.uri,
                &self.pairs,
                &self.state.database,
            )
        }
    }

    /// The engine's settings (those of the first pair, for what pairs may change).
    pub fn engine_config(&self) -> EngineConfig {
        let first = &self.pairs[0];
        EngineConfig {
            mode: first.mode,
            updated_at_field: first.updated_at_field.clone(),
            filtered: first.filter.is_some(),
            debounce: self.sync.debounce,
            max_batch: self.sync.max_batch,
            queue_capacity: self.sync.queue_capacity,
            tie_break: self.sync.tie_break,
            max_future: self.sync.max_future,
            tombstone_ttl: self.state.tombstone_ttl,
            ..EngineConfig::default()
        }
    }

    /// The engine's pairs over `stores` (one per pair, in order).
    pub fn pair_specs(&self, stores: Vec<Stores>) -> Vec<PairSpec> {
        let base = self.engine_config();
        self.pairs
            .iter()
            .zip(stores)
            .map(|(p, stores)| PairSpec {
                name: p.name.clone(),
                config: EngineConfig {
                    mode: p.mode,
                    updated_at_field: p.updated_at_field.clone(),
                    filtered: p.filter.is_some(),
                    ..base.clone()
                },
                stores,
            })
            .collect()
    }

    /// Back to the raw form (round-trips through [`Config::validate`]), passwords
    /// redacted: what `check-config` prints.
    pub fn to_raw_redacted(&self) -> RawConfig {
        let shorthand = pairs::is_shorthand(&self.pairs, self.mode, &self.sync.updated_at_field);
        let side = |s: &SideConfig| RawSide {
            uri: redact_uri(&s.uri),
            database: shorthand.then(|| s.database.clone()),
            collection: shorthand.then(|| s.collection.clone()),
        };
        RawConfig {
            pairs: if shorthand {
                Vec::new()
            } else {
                pairs::to_raw(&self.pairs)
            },
            mode: self.mode.as_str().into(),
            local: side(&self.local),
            cloud: side(&self.cloud),
            sync: RawSync {
                updated_at_field: self.sync.updated_at_field.clone(),
                debounce_ms: self.sync.debounce.as_millis() as u64,
                max_batch: self.sync.max_batch as u64,
                queue_capacity: self.sync.queue_capacity as u64,
                tie_break: self.sync.tie_break.as_str().into(),
                max_future_ms: self.sync.max_future.map_or(0, |d| d.as_millis() as u64),
            },
            reconcile: RawReconcile {
                schedule: self
                    .reconcile
                    .schedule
                    .as_ref()
                    .map(|s| s.expr.clone())
                    .unwrap_or_default(),
                on_start: self.reconcile.on_start,
            },
            state: RawState {
                database: self.state.database.clone(),
                tombstone_ttl_days: self.state.tombstone_ttl.as_secs() / 86_400,
            },
            admin: RawAdmin {
                socket: self.admin.socket.display().to_string(),
            },
            log: RawLog {
                level: self.log.level.clone(),
                format: match self.log.format {
                    LogFormat::Pretty => "pretty".into(),
                    LogFormat::Json => "json".into(),
                },
            },
            metrics: self.metrics.to_raw(),
            alarms: self.alarms.to_raw(),
        }
    }

    /// The effective configuration as TOML, passwords redacted, followed by the
    /// resolved pairs as comments.
    pub fn to_toml_redacted(&self) -> String {
        // RawConfig holds only strings, integers, booleans and tables of them (filters
        // are printed as JSON strings): serialising cannot fail.
        let toml = toml::to_string(&self.to_raw_redacted()).expect("RawConfig serialises to TOML");
        toml + &pairs::summary(&self.pairs)
    }
}

/// The adapter's view of `pairs` (tombstone TTL left at its default).
fn adapter_sides(
    local_uri: &str,
    cloud_uri: &str,
    pairs: &[PairConfig],
    state_database: &str,
) -> MongoSides {
    MongoSides {
        local_uri: local_uri.to_string(),
        cloud_uri: cloud_uri.to_string(),
        pairs: pairs
            .iter()
            .map(|p| MongoPair {
                name: p.name.clone(),
                local: p.local.clone(),
                cloud: p.cloud.clone(),
                updated_at_field: p.updated_at_field.clone(),
                filter: p.filter.clone(),
            })
            .collect(),
        state_database: state_database.to_string(),
        tombstone_ttl: Duration::from_secs(30 * 86_400),
        app_name: "datasync".into(),
    }
}
