//! Configuration: a TOML file (default [`DEFAULT_CONFIG_PATH`]) overridden by
//! `DATASYNC_<SECTION>__<KEY>` environment variables, merged by figment. Loading happens
//! in two stages: [`raw::RawConfig`] (the input as written, unknown keys refused) and
//! [`validate::Config`] (typed, checked). Every error names the key and its source.

pub mod filter;
pub mod ops;
pub mod pairs;
pub mod raw;
pub mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::{Figment, Source};

pub use raw::RawConfig;
pub use validate::{
    AdminConfig, AlarmsConfig, Config, LogConfig, LogFormat, MetricsConfig, PairConfig,
    ReconcileConfig, Schedule, SideConfig, StateConfig, SyncConfig,
};

/// Where the daemon looks for its file when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/datasync/datasync.toml";
/// Prefix of the environment overrides; sections and keys are separated by `__`.
pub const ENV_PREFIX: &str = "DATASYNC_";

/// Top-level names the environment may override. Other `DATASYNC_*` variables (such as
/// `DATASYNC_TEST_MONGODB_URI`) are not configuration and are ignored, while a typo
/// inside a known section (`DATASYNC_SYNC__DEBOUNCE`) is still an error. `pairs` is
/// absent: an array of tables cannot be written as `KEY=value` variables, so pairs come
/// from the file only (`DATASYNC_PAIRS…` is ignored).
const ENV_SECTIONS: [&str; 10] = [
    "mode",
    "local",
    "cloud",
    "sync",
    "reconcile",
    "state",
    "admin",
    "log",
    "metrics",
    "alarms",
];

/// A configuration that cannot be used. Exit code 2 at the binary edge.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// One line per problem, each naming the key and where its value came from.
    pub problems: Vec<String>,
}

impl ConfigError {
    /// A single problem.
    pub fn one(problem: impl Into<String>) -> Self {
        ConfigError {
            problems: vec![problem.into()],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}", self.problems.join("; "))
    }
}

impl std::error::Error for ConfigError {}

/// Which file to read.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigSource {
    /// `--config PATH`: the file must exist.
    Explicit(PathBuf),
    /// No `--config`: [`DEFAULT_CONFIG_PATH`] if it exists, defaults otherwise.
    Default,
}

impl ConfigSource {
    /// `Explicit` when a path was given on the command line.
    pub fn from_arg(path: Option<PathBuf>) -> Self {
        path.map_or(ConfigSource::Default, ConfigSource::Explicit)
    }

    /// The file path to read, if any (`None`: the default file is absent).
    pub fn file(&self) -> Result<Option<PathBuf>, ConfigError> {
        match self {
            ConfigSource::Explicit(p) if p.is_file() => Ok(Some(p.clone())),
            ConfigSource::Explicit(p) => Err(ConfigError::one(format!(
                "config file {} does not exist or is not a file",
                p.display()
            ))),
            ConfigSource::Default => {
                let p = PathBuf::from(DEFAULT_CONFIG_PATH);
                Ok(p.is_file().then_some(p))
            }
        }
    }
}

/// Load and validate: defaults, then the file, then the environment.
pub fn load(source: &ConfigSource) -> Result<Config, ConfigError> {
    let file = source.file()?;
    let fig = figment(file.as_deref());
    let raw = fig.extract::<RawConfig>().map_err(from_figment)?;
    Config::validate(&raw).map_err(|e| ConfigError {
        problems: e.problems.iter().map(|p| with_source(&fig, p)).collect(),
    })
}

/// "key `pairs[2].filter`: …" → "key `pairs[2].filter`: … (in file /etc/…)": a
/// validation problem gets the source of its key, as parse errors do.
fn with_source(fig: &Figment, problem: &str) -> String {
    let Some(rest) = problem.strip_prefix("key `") else {
        return problem.to_string();
    };
    let Some((key, _)) = rest.split_once('`') else {
        return problem.to_string();
    };
    let lookup = key.split('[').next().unwrap_or(key);
    let path: Vec<String> = key
        .split('.')
        .map(|s| s.split('[').next().unwrap_or(s).to_string())
        .collect();
    let source = match fig.find_metadata(lookup) {
        Some(md) => match &md.source {
            Some(Source::File(f)) => format!(" (in file {})", f.display()),
            _ if md.name.contains("environment") => {
                format!(" (from environment variable {})", env_var_for(&path))
            }
            _ => String::new(),
        },
        None => String::new(),
    };
    format!("{problem}{source}")
}

/// Stage one only: the merged raw values.
pub fn load_raw(source: &ConfigSource) -> Result<RawConfig, ConfigError> {
    let file = source.file()?;
    figment(file.as_deref())
        .extract::<RawConfig>()
        .map_err(from_figment)
}

fn figment(file: Option<&Path>) -> Figment {
    let mut fig = Figment::from(Serialized::defaults(RawConfig::default()));
    if let Some(path) = file {
        fig = fig.merge(Toml::file_exact(path));
    }
    fig.merge(env_provider())
}

fn env_provider() -> Env {
    Env::prefixed(ENV_PREFIX).split("__").filter(|key| {
        let first = key.as_str().split('.').next().unwrap_or_default();
        ENV_SECTIONS.iter().any(|s| s.eq_ignore_ascii_case(first))
    })
}

/// The environment variable that sets `path` (`["sync","debounce_ms"]` →
/// `DATASYNC_SYNC__DEBOUNCE_MS`).
pub fn env_var_for(path: &[String]) -> String {
    format!("{ENV_PREFIX}{}", path.join("__").to_ascii_uppercase())
}

fn from_figment(err: figment::Error) -> ConfigError {
    let problems = err.into_iter().map(|e| describe(&e)).collect();
    ConfigError { problems }
}

/// "key `sync.debounce_ms` from environment variable DATASYNC_SYNC__DEBOUNCE_MS: …".
fn describe(e: &figment::Error) -> String {
    let mut path = e.path.clone();
    // An unknown field is reported on its parent table: name the field itself.
    if let figment::error::Kind::UnknownField(field, _) = &e.kind {
        path.push(field.clone());
    }
    let key = if path.is_empty() {
        "(top level)".to_string()
    } else {
        path.join(".")
    };
    let source = match e.metadata.as_ref() {
        Some(md) => match &md.source {
            Some(Source::File(f)) => format!("in file {}", f.display()),
            _ if md.name.contains("environment") => {
                format!("from environment variable {}", env_var_for(&path))
            }
            _ => format!("from {}", md.name),
        },
        None => "in the configuration".to_string(),
    };
    format!("key `{key}` {source}: {}", e.kind)
}
