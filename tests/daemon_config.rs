//! Configuration: documented defaults, errors that name the key and its source (file or
//! environment variable), validation messages, exit code 2, and `check-config` output.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use datasync::core::{Mode, Side};
use datasync::daemon::config::{self, raw::RawConfig, Config, ConfigSource, LogFormat};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/datasync.example.toml");

fn file(contents: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(contents.as_bytes()).unwrap();
    f
}

fn load(contents: &str) -> (Result<Config, config::ConfigError>, tempfile::NamedTempFile) {
    let f = file(contents);
    (
        config::load(&ConfigSource::Explicit(f.path().to_path_buf())),
        f,
    )
}

fn problems(contents: &str) -> (String, String) {
    let (r, f) = load(contents);
    let err = r.expect_err("config should be refused");
    (err.problems.join("\n"), f.path().display().to_string())
}

fn datasync(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_datasync"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn empty_file_gives_the_documented_defaults() {
    let (c, _f) = load("");
    let c = c.unwrap();
    let uri = "mongodb://127.0.0.1:27017/?replicaSet=rs0";
    assert_eq!(c.mode, Mode::BothWays);
    assert_eq!(
        (
            c.local.uri.as_str(),
            c.local.database.as_str(),
            c.local.collection.as_str()
        ),
        (uri, "datasync", "local_data")
    );
    assert_eq!(
        (
            c.cloud.uri.as_str(),
            c.cloud.database.as_str(),
            c.cloud.collection.as_str()
        ),
        (uri, "datasync", "cloud_data")
    );
    assert_eq!(c.sync.updated_at_field, "updatedAt");
    assert_eq!(c.sync.debounce, Duration::from_millis(50));
    assert_eq!(c.sync.max_batch, 1000);
    assert_eq!(c.sync.queue_capacity, 100_000);
    assert_eq!(c.sync.tie_break, Side::Cloud);
    assert_eq!(c.reconcile.schedule.as_ref().unwrap().expr, "*/5 * * * *");
    assert!(c.reconcile.on_start);
    assert_eq!(c.state.database, "datasync_state");
    assert_eq!(c.state.tombstone_ttl, Duration::from_secs(30 * 86_400));
    assert_eq!(c.admin.socket, Path::new("/run/datasync/admin.sock"));
    assert_eq!(c.log.level, "info");
    assert_eq!(c.log.format, LogFormat::Pretty);
    assert_eq!(c.metrics.listen, None);
    assert_eq!(c.metrics.ready_max_checkpoint_age, Duration::from_secs(300));
    assert_eq!(c.alarms.oplog_headroom_min, Duration::from_secs(3600));
    assert_eq!(c.alarms.oplog_check_interval, Duration::from_secs(60));
}

#[test]
fn metrics_and_alarm_keys_parse_and_bad_values_name_the_key() {
    let (c, _f) =
        load("[metrics]\nlisten = \"127.0.0.1:9464\"\n[alarms]\noplog_headroom_min = \"30m\"\n");
    let c = c.unwrap();
    assert_eq!(c.metrics.listen, Some("127.0.0.1:9464".parse().unwrap()));
    assert_eq!(c.alarms.oplog_headroom_min, Duration::from_secs(1800));
    let (c, _f) = load("[alarms]\noplog_headroom_min = 7200\n");
    assert_eq!(
        c.unwrap().alarms.oplog_headroom_min,
        Duration::from_secs(7200)
    );
    let (msg, _) = problems("[metrics]\nlisten = \"localhost\"\n");
    assert!(msg.contains("metrics.listen"), "{msg}");
    let (msg, _) = problems("[alarms]\noplog_headroom_min = \"1 week\"\n");
    assert!(msg.contains("alarms.oplog_headroom_min"), "{msg}");
    // Digits-only environment values arrive as numbers and are seconds.
    let out = datasync(
        &["check-config"],
        &[
            ("DATASYNC_ALARMS__OPLOG_HEADROOM_MIN", "5400"),
            ("DATASYNC_METRICS__LISTEN", "127.0.0.1:9464"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed: RawConfig = toml::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(printed.metrics.listen, "127.0.0.1:9464");
    assert_eq!(
        printed.alarms.oplog_headroom_min,
        datasync::daemon::config::raw::RawDuration::Text("90m".into())
    );
}

#[test]
fn example_file_parses_validates_and_states_every_default() {
    let raw = config::load_raw(&ConfigSource::Explicit(EXAMPLE.into())).unwrap();
    assert_eq!(raw, RawConfig::default());
    Config::validate(&raw).unwrap();
}

#[test]
fn unknown_key_in_file_names_the_key_and_the_file() {
    let (msg, path) = problems("[sync]\ndebounce = 5\n");
    assert!(msg.contains("sync.debounce"), "{msg}");
    assert!(msg.contains(&path), "{msg}");
    let (msg, path) = problems("modes = \"both-ways\"\n");
    assert!(msg.contains("modes"), "{msg}");
    assert!(msg.contains(&path), "{msg}");
}

#[test]
fn wrong_type_in_file_names_the_key_and_the_file() {
    let (msg, path) = problems("[sync]\ndebounce_ms = \"fast\"\n");
    assert!(msg.contains("sync.debounce_ms"), "{msg}");
    assert!(msg.contains(&path), "{msg}");
}

#[test]
fn invalid_values_are_refused_with_a_message_per_key() {
    let (msg, _) = problems(
        r#"
mode = "sideways"
[sync]
debounce_ms = 0
max_batch = 0
tie_break = "both"
[reconcile]
schedule = "every five minutes"
[local]
uri = "http://example.com"
[log]
format = "xml"
"#,
    );
    for needle in [
        "`mode`",
        "sideways",
        "`sync.debounce_ms` must be greater than 0",
        "`sync.max_batch` must be greater than 0",
        "`sync.tie_break`",
        "`reconcile.schedule`",
        "`local.uri`",
        "`log.format`",
    ] {
        assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
    }
}

#[test]
fn syncing_the_daemons_own_state_collection_is_refused() {
    let (msg, _) =
        problems("[state]\ndatabase = \"datasync\"\n[local]\ncollection = \"checkpoints\"\n");
    assert!(
        msg.contains("state.database") && msg.contains("checkpoints"),
        "{msg}"
    );
}

#[test]
fn same_collection_on_both_sides_is_refused() {
    let (msg, _) = problems("[cloud]\ncollection = \"local_data\"\n");
    assert!(msg.contains("same collection"), "{msg}");
}

#[test]
fn empty_schedule_disables_cron_and_seconds_field_is_accepted() {
    let (c, _f) = load("[reconcile]\nschedule = \"\"\n");
    assert!(c.unwrap().reconcile.schedule.is_none());
    let (c, _f) = load("[reconcile]\nschedule = \"*/10 * * * * *\"\n");
    assert!(c.unwrap().reconcile.schedule.is_some());
}

#[test]
fn wrong_type_in_env_names_the_variable_and_exits_2() {
    let f = file("");
    let out = datasync(
        &["check-config", "--config", f.path().to_str().unwrap()],
        &[("DATASYNC_SYNC__DEBOUNCE_MS", "soon")],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("DATASYNC_SYNC__DEBOUNCE_MS"), "{err}");
    assert!(err.contains("sync.debounce_ms"), "{err}");
}

#[test]
fn unknown_key_in_env_names_the_variable() {
    let f = file("");
    let out = datasync(
        &["check-config", "--config", f.path().to_str().unwrap()],
        &[("DATASYNC_SYNC__DEBOUNCE", "5")],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("DATASYNC_SYNC__DEBOUNCE"), "{err}");
}

#[test]
fn env_overrides_the_file_and_unrelated_datasync_vars_are_ignored() {
    let f = file("mode = \"local-to-cloud\"\n[sync]\ndebounce_ms = 20\n");
    let out = datasync(
        &["check-config", "--config", f.path().to_str().unwrap()],
        &[
            ("DATASYNC_SYNC__DEBOUNCE_MS", "75"),
            ("DATASYNC_MODE", "cloud-to-local"),
            ("DATASYNC_LOCAL__COLLECTION", "edge"),
            ("DATASYNC_TEST_MONGODB_URI", "mongodb://elsewhere/"),
        ],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed: RawConfig = toml::from_str(&stdout).unwrap();
    assert_eq!(printed.sync.debounce_ms, 75);
    assert_eq!(printed.mode, "cloud-to-local");
    assert_eq!(printed.local.collection.as_deref(), Some("edge"));
}

#[test]
fn check_config_redacts_passwords_and_prints_valid_toml() {
    let f = file("[local]\nuri = \"mongodb://app:hunter2@db.example:27017/?replicaSet=rs0\"\n");
    let out = datasync(
        &["check-config", "--config", f.path().to_str().unwrap()],
        &[],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(
        stdout.contains("mongodb://app:***@db.example:27017/"),
        "{stdout}"
    );
    let printed: RawConfig = toml::from_str(&stdout).unwrap();
    assert_eq!(printed.cloud.uri, RawConfig::default().cloud.uri);
    assert_eq!(printed.cloud.collection.as_deref(), Some("cloud_data"));
}

#[test]
fn bad_or_missing_config_exits_2_for_every_command() {
    let bad = file("[sync]\nmax_batch = -1\n");
    let bad = bad.path().to_str().unwrap();
    let missing = "/nonexistent/datasync.toml";
    for path in [bad, missing] {
        for args in [
            vec!["run", "--config", path],
            vec!["check-config", "--config", path],
            vec!["reconcile", "--config", path],
            vec!["seed", "--config", path, "--count", "1"],
        ] {
            let out = datasync(&args, &[]);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{args:?}: {}",
                text(&out.stderr)
            );
            assert!(text(&out.stderr).contains("invalid configuration"));
        }
    }
    let out = datasync(&["check-config", "--config", missing], &[]);
    assert!(text(&out.stderr).contains(missing));
}

const TWO_PAIRS: &str = r#"
mode = "local-to-cloud"
[sync]
updated_at_field = "modifiedAt"
[[pairs]]
local = "app.orders.v2"
cloud = "hub.orders"
name = "orders"
filter = { tenantId = "edge-7", n = { "$gte" = 3 } }
[[pairs]]
local = "app.customers"
cloud = "hub.customers"
mode = "both-ways"
updated_at_field = "updatedAt"
filter = '{"tenantId": "edge-7", "n": {"$gte": 3}}'
[[pairs]]
local = "app.audit"
cloud = "hub.audit"
"#;

#[test]
fn pairs_take_inline_table_and_json_filters_and_their_defaults() {
    let (c, _f) = load(TWO_PAIRS);
    let c = c.unwrap();
    let names: Vec<&str> = c.pairs.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["orders", "app.customers", "app.audit"]);
    let orders = &c.pairs[0];
    // Split at the first dot: collection names may hold dots, database names may not.
    assert_eq!(
        (
            orders.local.database.as_str(),
            orders.local.collection.as_str()
        ),
        ("app", "orders.v2")
    );
    assert_eq!(orders.cloud.to_string(), "hub.orders");
    assert_eq!(orders.mode, Mode::LocalToCloud);
    assert_eq!(orders.updated_at_field, "modifiedAt");
    // Figment hands TOML tables over with sorted keys.
    let want = bson::doc! {"n": {"$gte": 3}, "tenantId": "edge-7"};
    assert_eq!(orders.filter.as_ref(), Some(&want));
    let customers = &c.pairs[1];
    assert_eq!(customers.mode, Mode::BothWays);
    assert_eq!(customers.updated_at_field, "updatedAt");
    assert_eq!(
        customers.filter.as_ref(),
        Some(&bson::doc! {"tenantId": "edge-7", "n": {"$gte": 3}})
    );
    let audit = &c.pairs[2];
    assert_eq!(
        (audit.mode, audit.filter.as_ref()),
        (Mode::LocalToCloud, None)
    );
    // `[local]`/`[cloud]` describe the first pair for the one-pair commands.
    assert_eq!(c.local.collection, "orders.v2");
    assert_eq!(c.mongo_sides().pairs.len(), 3);
}

#[test]
fn shorthand_gives_one_pair_named_after_the_local_namespace() {
    let (c, _f) = load("mode = \"cloud-to-local\"\n[local]\ncollection = \"edge\"\n");
    let c = c.unwrap();
    assert_eq!(c.pairs.len(), 1);
    assert_eq!(c.pairs[0].name, "datasync.edge");
    assert_eq!(c.pairs[0].cloud.to_string(), "datasync.cloud_data");
    assert_eq!(c.pairs[0].mode, Mode::CloudToLocal);
}

#[test]
fn each_bad_pair_is_refused_naming_its_key_and_the_file() {
    let cases: [(&str, &[&str]); 10] = [
        ("[[pairs]]\nlocal = \"orders\"\ncloud = \"hub.orders\"\n", &["pairs[0].local", "database.collection"]),
        ("[[pairs]]\nlocal = \"app.\"\ncloud = \"hub.orders\"\n", &["pairs[0].local"]),
        ("[[pairs]]\nlocal = \"app.orders\"\ncloud = \"\"\n", &["pairs[0].cloud"]),
        (
            "[[pairs]]\nlocal = \"a.x\"\ncloud = \"b.x\"\nname = \"n\"\n[[pairs]]\nlocal = \"a.y\"\ncloud = \"b.y\"\nname = \"n\"\n",
            &["pairs[1].name", "already used"],
        ),
        (
            "[[pairs]]\nlocal = \"datasync_state.orders\"\ncloud = \"hub.orders\"\n",
            &["pairs[0].local", "state.database"],
        ),
        (
            "[[pairs]]\nlocal = \"a.x\"\ncloud = \"hub.orders\"\n[[pairs]]\nlocal = \"a.y\"\ncloud = \"hub.orders\"\n",
            &["pairs[1].cloud", "hub.orders", "one pair"],
        ),
        ("[[pairs]]\nlocal = \"a.x\"\ncloud = \"b.x\"\nmode = \"sideways\"\n", &["pairs[0].mode", "sideways"]),
        ("[[pairs]]\nlocal = \"a.x\"\ncloud = \"b.x\"\nfilter = '[1, 2]'\n", &["pairs[0].filter", "query document"]),
        ("[[pairs]]\nlocal = \"a.x\"\ncloud = \"b.x\"\nfilter = '{\"$where\": \"1\"}'\n", &["pairs[0].filter", "`$where`"]),
        (
            "[[pairs]]\nlocal = \"a.x\"\ncloud = \"b.x\"\n[[pairs]]\nlocal = \"a.y\"\ncloud = \"b.y\"\nfilter = { loc = { \"$near\" = [0, 0] } }\n",
            &["pairs[1].filter", "`$near`"],
        ),
    ];
    for (contents, needles) in cases {
        let (msg, path) = problems(contents);
        for needle in needles.iter().copied().chain([path.as_str()]) {
            assert!(
                msg.contains(needle),
                "missing {needle:?} for\n{contents}\nin: {msg}"
            );
        }
    }
}

#[test]
fn shorthand_collection_and_pairs_together_name_both_keys() {
    let (msg, path) =
        problems("[local]\ncollection = \"x\"\n[[pairs]]\nlocal = \"a.x\"\ncloud = \"b.x\"\n");
    assert!(
        msg.contains("`local.collection`") && msg.contains("`pairs`") && msg.contains(&path),
        "{msg}"
    );
}

#[test]
fn pairs_cannot_come_from_the_environment() {
    let f = file("");
    let out = datasync(
        &["check-config", "--config", f.path().to_str().unwrap()],
        &[("DATASYNC_PAIRS", "[{local=\"a.x\",cloud=\"b.x\"}]")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed: RawConfig = toml::from_str(&text(&out.stdout)).unwrap();
    assert!(printed.pairs.is_empty());
}

#[test]
fn check_config_shows_the_resolved_pairs_and_round_trips() {
    let f = file(&format!(
        "{TWO_PAIRS}[local]\nuri = \"mongodb://app:hunter2@db.example:27017/?replicaSet=rs0\"\n"
    ));
    let out = datasync(
        &["check-config", "--config", f.path().to_str().unwrap()],
        &[],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(
        stdout.contains("# resolved collection pairs (3):"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            r#"#   orders: local app.orders.v2 <-> cloud hub.orders  mode local-to-cloud  updated_at_field modifiedAt  filter {"n":{"$gte":3},"tenantId":"edge-7"}"#
        ),
        "{stdout}"
    );
    assert!(stdout.contains("filter none (all documents)"), "{stdout}");
    assert!(
        stdout.contains(r#"filter = '{"tenantId":"edge-7","n":{"$gte":3}}'"#)
            || stdout.contains(r#"filter = "{\"tenantId\":\"edge-7\",\"n\":{\"$gte\":3}}""#),
        "{stdout}"
    );
    let printed: RawConfig = toml::from_str(&stdout).unwrap();
    assert_eq!(printed.pairs.len(), 3);
    assert_eq!(printed.local.collection, None);
    let again = Config::validate(&printed).unwrap();
    let (orig, _f) = load(TWO_PAIRS);
    assert_eq!(again.pairs, orig.unwrap().pairs);
}
