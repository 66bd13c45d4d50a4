//! The operations sections, `[metrics]` and `[alarms]`: typed forms and their checks,
//! kept apart from the sync settings in [`super::validate`] because they only shape
//! what the daemon reports, never what it syncs.

use std::net::SocketAddr;
use std::time::Duration;

use super::raw::{RawAlarms, RawDuration, RawMetrics};

/// `[metrics]`, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    /// Where the HTTP endpoint listens; `None`: disabled.
    pub listen: Option<SocketAddr>,
    /// `/readyz` bound on the age of a watched side's saved checkpoint.
    pub ready_max_checkpoint_age: Duration,
}

/// `[alarms]`, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct AlarmsConfig {
    /// Warn when a side's oplog headroom is under this.
    pub oplog_headroom_min: Duration,
    /// Period of the headroom measurement.
    pub oplog_check_interval: Duration,
}

/// Parse `"90s"`, `"30m"`, `"1h"`, `"2d"` or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = digits.parse().map_err(|_| {
        format!("'{text}' is not a duration (e.g. 3600, \"90s\", \"30m\", \"1h\", \"2d\")")
    })?;
    let scale = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{text}' (use s, m, h or d)"
            ))
        }
    };
    Ok(Duration::from_secs(n.saturating_mul(scale)))
}

/// Write a duration back the way a person would (`"1h"`, `"90s"`).
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "0s".into(),
        _ if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        _ if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

impl MetricsConfig {
    /// Check `[metrics]`, pushing one line per problem.
    pub fn validate(raw: &RawMetrics, problems: &mut Vec<String>) -> MetricsConfig {
        let listen = match raw.listen.trim() {
            "" => None,
            text => match text.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(e) => {
                    problems.push(format!(
                        "key `metrics.listen`: '{text}' is not HOST:PORT with an IP address \
                         (e.g. 127.0.0.1:9464): {e}"
                    ));
                    None
                }
            },
        };
        if raw.ready_max_checkpoint_age_s == 0 {
            problems.push("key `metrics.ready_max_checkpoint_age_s` must be greater than 0".into());
        }
        MetricsConfig {
            listen,
            ready_max_checkpoint_age: Duration::from_secs(raw.ready_max_checkpoint_age_s),
        }
    }

    /// Back to the raw form.
    pub fn to_raw(&self) -> RawMetrics {
        RawMetrics {
            listen: self.listen.map(|a| a.to_string()).unwrap_or_default(),
            ready_max_checkpoint_age_s: self.ready_max_checkpoint_age.as_secs(),
        }
    }
}

impl AlarmsConfig {
    /// Check `[alarms]`, pushing one line per problem.
    pub fn validate(raw: &RawAlarms, problems: &mut Vec<String>) -> AlarmsConfig {
        let oplog_headroom_min = match &raw.oplog_headroom_min {
            RawDuration::Seconds(s) => Ok(Duration::from_secs(*s)),
            RawDuration::Text(t) => parse_duration(t),
        }
        .unwrap_or_else(|e| {
            problems.push(format!("key `alarms.oplog_headroom_min`: {e}"));
            Duration::from_secs(3600)
        });
        if raw.oplog_check_interval_s == 0 {
            problems.push("key `alarms.oplog_check_interval_s` must be greater than 0".into());
        }
        AlarmsConfig {
            oplog_headroom_min,
            oplog_check_interval: Duration::from_secs(raw.oplog_check_interval_s.max(1)),
        }
    }

    /// Back to the raw form.
    pub fn to_raw(&self) -> RawAlarms {
        RawAlarms {
            oplog_headroom_min: RawDuration::Text(format_duration(self.oplog_headroom_min)),
            oplog_check_interval_s: self.oplog_check_interval.as_secs(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_and_round_trip() {
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("1 week").is_err());
        assert!(parse_duration("h").is_err());
        for s in [0, 45, 90, 1800, 3600, 172_800] {
            let d = Duration::from_secs(s);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
