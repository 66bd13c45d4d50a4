//! SIGHUP: re-read the configuration file and apply what can change live (log level,
//! debounce, reconcile schedule). Anything else that changed is logged as needing a
//! restart; an invalid new file is logged and the running configuration is kept.
//! Changed collection pairs (`[[pairs]]` or the shorthand) are such a change: the
//! running pairs keep syncing, and a warning says a restart is needed.

use std::time::Duration;

use crate::daemon::config::{self, Config, ConfigSource, Schedule};
use crate::daemon::logging::LogReload;

/// What a reload changes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReloadPlan {
    /// New log filter.
    pub log_level: Option<String>,
    /// New debounce window.
    pub debounce: Option<Duration>,
    /// New schedule (`Some(None)`: disable).
    pub schedule: Option<Option<Schedule>>,
    /// Keys that changed but only take effect after a restart.
    pub needs_restart: Vec<&'static str>,
    /// The collection pairs changed (added, removed or edited): the running ones are
    /// kept until a restart.
    pub pairs_changed: bool,
}

/// Compare the running configuration with a newly loaded one.
pub fn plan(old: &Config, new: &Config) -> ReloadPlan {
    let mut p = ReloadPlan::default();
    if old.log.level != new.log.level {
        p.log_level = Some(new.log.level.clone());
    }
    if old.sync.debounce != new.sync.debounce {
        p.debounce = Some(new.sync.debounce);
    }
    if old.reconcile.schedule != new.reconcile.schedule {
        p.schedule = Some(new.reconcile.schedule.clone());
    }
    let restart = [
        ("mode", old.mode != new.mode),
        ("local", old.local != new.local),
        ("cloud", old.cloud != new.cloud),
        (
            "sync.updated_at_field",
            old.sync.updated_at_field != new.sync.updated_at_field,
        ),
        ("sync.max_batch", old.sync.max_batch != new.sync.max_batch),
        (
            "sync.queue_capacity",
            old.sync.queue_capacity != new.sync.queue_capacity,
        ),
        ("sync.tie_break", old.sync.tie_break != new.sync.tie_break),
        (
            "reconcile.on_start",
            old.reconcile.on_start != new.reconcile.on_start,
        ),
        ("state", old.state != new.state),
        ("admin.socket", old.admin != new.admin),
        ("log.format", old.log.format != new.log.format),
        ("metrics", old.metrics != new.metrics),
        ("alarms", old.alarms != new.alarms),
    ];
    p.pairs_changed = old.pairs != new.pairs;
    p.needs_restart = restart
        .iter()
        .filter(|(_, c)| *c)
        .map(|(k, _)| *k)
        .collect();
    p
}

/// Holds what a reload needs between signals.
pub struct Reloader {
    /// Where the configuration came from.
    source: ConfigSource,
    /// The configuration in force.
    current: Config,
    /// Handle on the log filter; `None` when `RUST_LOG` fixed it.
    log: Option<LogReload>,
}

impl Reloader {
    /// A reloader for a daemon started with `current` from `source`.
    pub fn new(source: ConfigSource, current: Config, log: Option<LogReload>) -> Self {
        Reloader {
            source,
            current,
            log,
        }
    }

    /// Re-read and apply the log level here; returns the plan for the engine and cron
    /// (or `None` when the new file is invalid).
    pub fn reload(&mut self) -> Option<ReloadPlan> {
        let new = match config::load(&self.source) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: configuration not reloaded, keeping the running one");
                return None;
            }
        };
        let plan = plan(&self.current, &new);
        // Report first, then switch the level, so the report is logged at the old one.
        if let Some(d) = plan.debounce {
            tracing::info!(
                debounce_ms = d.as_millis() as u64,
                "SIGHUP: debounce changed"
            );
        }
        if let Some(s) = &plan.schedule {
            let expr = s.as_ref().map_or("", |s| s.expr.as_str());
            tracing::info!(schedule = expr, "SIGHUP: reconcile schedule changed");
        }
        if !plan.needs_restart.is_empty() {
            tracing::warn!(keys = ?plan.needs_restart, "SIGHUP: these changes need a restart to take effect");
        }
        if plan.pairs_changed {
            let names = |c: &Config| c.pairs.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
            tracing::warn!(running = ?names(&self.current), configured = ?names(&new),
                "SIGHUP: the collection pairs changed; pair changes need a restart, the running pairs are kept");
        }
        if plan == ReloadPlan::default() {
            tracing::info!("SIGHUP: configuration re-read, nothing changed");
        }
        if let Some(level) = &plan.log_level {
            match &self.log {
                Some(log) => {
                    tracing::info!(level = %level, "SIGHUP: log level changing");
                    if let Err(e) = log.set(level) {
                        tracing::warn!(error = %e, "SIGHUP: log level not changed");
                    }
                }
                None => tracing::info!("SIGHUP: log.level changed but RUST_LOG is set and wins"),
            }
        }
        self.current = new;
        Some(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::config::raw::RawConfig;

    fn config(edit: impl FnOnce(&mut RawConfig)) -> Config {
        let mut raw = RawConfig::default();
        edit(&mut raw);
        Config::validate(&raw).unwrap()
    }

    #[test]
    fn unchanged_config_plans_nothing() {
        assert_eq!(
            plan(&config(|_| {}), &config(|_| {})),
            ReloadPlan::default()
        );
    }

    #[test]
    fn live_settings_are_applied_and_others_need_a_restart() {
        let old = config(|_| {});
        let new = config(|r| {
            r.log.level = "debug".into();
            r.sync.debounce_ms = 200;
            r.reconcile.schedule = String::new();
            r.mode = "cloud-to-local".into();
            r.cloud.collection = Some("elsewhere".into());
        });
        let p = plan(&old, &new);
        assert_eq!(p.log_level.as_deref(), Some("debug"));
        assert_eq!(p.debounce, Some(Duration::from_millis(200)));
        assert_eq!(p.schedule, Some(None));
        assert_eq!(p.needs_restart, vec!["mode", "cloud"]);
        let p = plan(
            &config(|_| {}),
            &config(|r| {
                r.metrics.listen = "127.0.0.1:9464".into();
                r.alarms.oplog_check_interval_s = 5;
            }),
        );
        assert_eq!(p.needs_restart, vec!["metrics", "alarms"]);
        assert!(!p.pairs_changed);
    }

    #[test]
    fn changed_pairs_are_flagged_for_a_restart() {
        let pair = |filter: &str| crate::daemon::config::raw::RawPair {
            name: None,
            local: "app.orders".into(),
            cloud: "hub.orders".into(),
            mode: None,
            filter: Some(crate::daemon::config::raw::RawFilter::Json(filter.into())),
            updated_at_field: None,
        };
        let old = config(|r| r.pairs = vec![pair(r#"{"t": 1}"#)]);
        let same = config(|r| r.pairs = vec![pair(r#"{"t": 1}"#)]);
        assert_eq!(plan(&old, &same), ReloadPlan::default());
        let new = config(|r| r.pairs = vec![pair(r#"{"t": 2}"#)]);
        let p = plan(&old, &new);
        assert!(p.pairs_changed);
        assert!(p.needs_restart.is_empty());
    }
}
