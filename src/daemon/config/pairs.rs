//! The synced collection pairs: resolved from `[[pairs]]` tables or from the one-pair
//! shorthand (`[local]`/`[cloud]` `database` and `collection`), and checked here so
//! each problem names its key (`pairs[2].filter`) rather than surfacing later as an
//! adapter error about a collection.

use std::collections::HashMap;

use super::filter::{check_filter, parse_filter, to_extended_json};
use super::raw::{RawConfig, RawFilter, RawPair, RawSide};
use super::validate::PairConfig;
use crate::core::Mode;
use crate::mongo::Namespace;

/// Database of the shorthand's collections when `[local]`/`[cloud] database` is absent.
pub const DEFAULT_DATABASE: &str = "datasync";
/// The shorthand's local collection when `[local] collection` is absent.
pub const DEFAULT_LOCAL_COLLECTION: &str = "local_data";
/// The shorthand's cloud collection when `[cloud] collection` is absent.
pub const DEFAULT_CLOUD_COLLECTION: &str = "cloud_data";

/// Characters MongoDB refuses in a database name.
const BAD_DATABASE_CHARS: &[char] = &['/', '\\', '.', ' ', '"', '$', '\0'];

/// The pairs of `raw`, pushing one line per problem (each naming its key). `mode` is
/// the already-parsed top-level mode.
pub fn resolve(raw: &RawConfig, mode: Mode, problems: &mut Vec<String>) -> Vec<PairConfig> {
    let pairs = if raw.pairs.is_empty() {
        vec![shorthand(raw, mode, problems)]
    } else {
        for (name, side) in [("local", &raw.local), ("cloud", &raw.cloud)] {
            for (key, given) in [
                ("database", side.database.is_some()),
                ("collection", side.collection.is_some()),
            ] {
                if given {
                    problems.push(format!(
                        "key `{name}.{key}` and key `pairs` are both given: `[{name}] \
                         database/collection` is the one-pair shorthand; with [[pairs]] \
                         name each pair's collections in `pairs[N].local` / `pairs[N].cloud`"
                    ));
                }
            }
        }
        raw.pairs
            .iter()
            .enumerate()
            .map(|(i, p)| table(i, p, raw, mode, problems))
            .collect()
    };
    check_overlaps(raw, &pairs, problems);
    pairs
}

/// The key of a pair's field: `pairs[2].filter`, or the shorthand's own keys.
fn key(index: Option<usize>, field: &str) -> String {
    match index {
        Some(i) => format!("pairs[{i}].{field}"),
        None => match field {
            "local" => "local.collection".into(),
            "cloud" => "cloud.collection".into(),
            other => other.into(),
        },
    }
}

fn shorthand(raw: &RawConfig, mode: Mode, problems: &mut Vec<String>) -> PairConfig {
    let ns = |name: &str, side: &RawSide, collection: &str, problems: &mut Vec<String>| {
        let database = side.database.as_deref().unwrap_or(DEFAULT_DATABASE);
        let collection = side.collection.as_deref().unwrap_or(collection);
        for (key, v) in [("database", database), ("collection", collection)] {
            if v.trim().is_empty() {
                problems.push(format!("key `{name}.{key}` must not be empty"));
            }
        }
        Namespace {
            database: database.into(),
            collection: collection.into(),
        }
    };
    let local = ns("local", &raw.local, DEFAULT_LOCAL_COLLECTION, problems);
    let cloud = ns("cloud", &raw.cloud, DEFAULT_CLOUD_COLLECTION, problems);
    PairConfig {
        name: local.to_string(),
        local,
        cloud,
        mode,
        updated_at_field: raw.sync.updated_at_field.clone(),
        filter: None,
    }
}

/// `db.collection`, split at the first dot (database names cannot hold dots).
pub fn parse_namespace(text: &str) -> Result<Namespace, String> {
    let form = "expected `database.collection`, e.g. \"app.orders\"";
    let Some((database, collection)) = text.split_once('.') else {
        return Err(format!("'{text}' has no dot: {form}"));
    };
    if database.is_empty() || collection.is_empty() {
        return Err(format!(
            "'{text}' has an empty database or collection: {form}"
        ));
    }
    if let Some(c) = database.chars().find(|c| BAD_DATABASE_CHARS.contains(c)) {
        return Err(format!("database '{database}' may not contain {c:?}"));
    }
    if collection.contains('$') || collection.contains('\0') {
        return Err(format!(
            "collection '{collection}' may not contain '$' or NUL"
        ));
    }
    if collection.starts_with("system.") {
        return Err(format!("'{text}' is a MongoDB system collection"));
    }
    Ok(Namespace {
        database: database.into(),
        collection: collection.into(),
    })
}

fn table(
    i: usize,
    p: &RawPair,
    raw: &RawConfig,
    mode: Mode,
    problems: &mut Vec<String>,
) -> PairConfig {
    let mut ns = |field: &str, text: &str| {
        parse_namespace(text.trim()).unwrap_or_else(|e| {
            problems.push(format!("key `pairs[{i}].{field}`: {e}"));
            Namespace {
                database: String::new(),
                collection: String::new(),
            }
        })
    };
    let local = ns("local", &p.local);
    let cloud = ns("cloud", &p.cloud);
    let name = p.name.clone().unwrap_or_else(|| p.local.trim().to_string());
    if name.trim().is_empty() {
        problems.push(format!("key `pairs[{i}].name` must not be empty"));
    }
    let mode = match &p.mode {
        None => mode,
        Some(m) => m.parse::<Mode>().unwrap_or_else(|e| {
            problems.push(format!("key `pairs[{i}].mode`: {e}"));
            mode
        }),
    };
    let updated_at_field = p
        .updated_at_field
        .clone()
        .unwrap_or_else(|| raw.sync.updated_at_field.clone());
    if updated_at_field.trim().is_empty() || updated_at_field == "_id" {
        problems.push(format!(
            "key `pairs[{i}].updated_at_field` must not be empty or `_id`"
        ));
    }
    let filter = p.filter.as_ref().and_then(|f| {
        parse_filter(f)
            .and_then(|d| check_filter(&d).map(|()| d))
            .map_err(|e| problems.push(format!("key `pairs[{i}].filter`: {e}")))
            .ok()
    });
    PairConfig {
        name,
        local,
        cloud,
        mode,
        updated_at_field,
        filter,
    }
}

/// Duplicate names, the state database, a collection in two pairs, a collection paired
/// with itself.
fn check_overlaps(raw: &RawConfig, pairs: &[PairConfig], problems: &mut Vec<String>) {
    let index = |i: usize| (!raw.pairs.is_empty()).then_some(i);
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut seen: [HashMap<&Namespace, usize>; 2] = Default::default();
    let same_uri = raw.local.uri == raw.cloud.uri;
    for (i, p) in pairs.iter().enumerate() {
        if let Some(first) = names.insert(&p.name, i) {
            problems.push(format!(
                "key `{}`: pair name \"{}\" is already used by pairs[{first}]",
                key(index(i), "name"),
                p.name
            ));
        }
        for (s, (field, ns)) in [("local", &p.local), ("cloud", &p.cloud)]
            .into_iter()
            .enumerate()
        {
            if ns.database.is_empty() {
                continue;
            }
            let k = match index(i) {
                Some(_) => key(index(i), field),
                None => format!("{field}.database"),
            };
            // The state database lives on the local deployment.
            if ns.database == raw.state.database && (s == 0 || same_uri) {
                problems.push(format!(
                    "key `{k}`: collection {ns} is in the daemon's own state database \
                     (key `state.database` = \"{}\"); sync another database or change \
                     state.database",
                    raw.state.database
                ));
            }
            if let Some(first) = seen[s].insert(ns, i) {
                problems.push(format!(
                    "key `{}`: {field} collection {ns} is already synced by pairs[{first}] \
                     (\"{}\"); a collection can be in one pair only",
                    key(index(i), field),
                    pairs[first].name
                ));
            }
        }
        if same_uri && !p.local.database.is_empty() && p.local == p.cloud {
            problems.push(format!(
                "key `{}`: local and cloud are the same collection ({}) at the same \
                 local.uri and cloud.uri; nothing to sync",
                key(index(i), "cloud"),
                p.local
            ));
        }
    }
}

/// Whether `pairs` is exactly what the shorthand gives (then `check-config` prints the
/// shorthand back rather than `[[pairs]]`).
pub fn is_shorthand(pairs: &[PairConfig], mode: Mode, updated_at_field: &str) -> bool {
    matches!(pairs, [p] if p.name == p.local.to_string()
        && p.mode == mode
        && p.updated_at_field == updated_at_field
        && p.filter.is_none())
}

/// Back to `[[pairs]]` tables with every default written out.
pub fn to_raw(pairs: &[PairConfig]) -> Vec<RawPair> {
    pairs
        .iter()
        .map(|p| RawPair {
            name: Some(p.name.clone()),
            local: p.local.to_string(),
            cloud: p.cloud.to_string(),
            mode: Some(p.mode.as_str().into()),
            filter: p
                .filter
                .as_ref()
                .map(|f| RawFilter::Json(to_extended_json(f))),
            updated_at_field: Some(p.updated_at_field.clone()),
        })
        .collect()
}

/// One line per pair, as TOML comments: what `check-config` appends.
pub fn summary(pairs: &[PairConfig]) -> String {
    let mut out = format!("\n# resolved collection pairs ({}):\n", pairs.len());
    for p in pairs {
        let filter = p
            .filter
            .as_ref()
            .map_or_else(|| "none (all documents)".into(), to_extended_json);
        out.push_str(&format!(
            "#   {}: local {} <-> cloud {}  mode {}  updated_at_field {}  filter {}\n",
            p.name, p.local, p.cloud, p.mode, p.updated_at_field, filter
        ));
    }
    out
}
