//! tracing set-up for every command: logs go to stderr, `pretty` or `json`, filtered by
//! `log.level` unless `RUST_LOG` is set (then it wins). The filter sits behind a reload
//! handle so SIGHUP can change the level without a restart.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Layer, Registry};

use crate::daemon::config::LogFormat;

/// Changes the log filter of the running process.
pub struct LogReload {
    /// tracing-subscriber's handle on the filter layer.
    handle: reload::Handle<EnvFilter, Registry>,
}

impl LogReload {
    /// Replace the filter with `level` (an `EnvFilter` directive).
    pub fn set(&self, level: &str) -> Result<(), String> {
        let filter = EnvFilter::builder()
            .parse(level)
            .map_err(|e| e.to_string())?;
        self.handle.reload(filter).map_err(|e| e.to_string())
    }
}

/// Install the global subscriber. Returns a reload handle unless `RUST_LOG` decides
/// the filter. Calling it twice is harmless (the second call changes nothing).
pub fn init(level: &str, format: LogFormat) -> Option<LogReload> {
    let from_env = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty());
    let directive = from_env.as_deref().unwrap_or(level);
    let filter = EnvFilter::builder()
        .parse(directive)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let output = match format {
        LogFormat::Json => fmt::layer().json().with_writer(std::io::stderr).boxed(),
        LogFormat::Pretty => fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .is_ok();
    (installed && from_env.is_none()).then_some(LogReload { handle })
}
