//! Secrets: with a password in both URIs (from the file and from the environment),
//! the password appears in no log line (even at `trace`), no `check-config` output, no
//! `status` reply and no error message of `run`, `reconcile`, `seed` or a refused
//! configuration. The emulator has no authentication, so connecting with credentials
//! fails: that drives the error paths, which are where secrets usually leak.

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use support::{binary, Harness, Options};

const PASSWORD: &str = "s3cretPa55";
const USERINFO: &str = "syncuser:s3cretPa55";

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_clean(what: &str, text: &str) {
    assert!(
        !text.contains(PASSWORD),
        "{what} leaks the password:\n{text}"
    );
    // Percent-encoded or split forms would leak it as well.
    assert!(
        !text.contains("s3cret"),
        "{what} leaks part of the password:\n{text}"
    );
}

fn run(h: &Harness, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(binary());
    c.args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run datasync");
    let _ = h;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_never_appear_in_output_logs_or_errors() {
    let h = Harness::start(Options {
        userinfo: Some(USERINFO.into()),
        log_level: "trace".into(),
        ..Options::default()
    })
    .await;
    let config = h.config.to_str().unwrap().to_string();
    assert!(std::fs::read_to_string(&h.config)
        .unwrap()
        .contains(PASSWORD));

    // check-config: effective configuration printed, password redacted.
    let out = run(&h, &["check-config", "--config", &config], &[]);
    assert!(out.status.success(), "{out:?}");
    assert_clean("check-config", &text(&out));
    assert!(
        text(&out).contains("syncuser"),
        "user name still shown:\n{}",
        text(&out)
    );

    // The same password coming from the environment.
    let env_uri = h.daemon_uri.clone();
    let out = run(
        &h,
        &["check-config", "--config", &config],
        &[("DATASYNC_CLOUD__URI", &env_uri)],
    );
    assert!(out.status.success(), "{out:?}");
    assert_clean("check-config (env)", &text(&out));

    // A refused configuration mentioning the URI.
    let bad = h.dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "[local]\nuri = \"mongodb://{USERINFO}@127.0.0.1:1/?replicaSet=rs0&notAnOption=1&w=banana\"\n[cloud]\nuri = 42\n[sync]\nbogus = 1\n"
        ),
    )
    .unwrap();
    let out = run(
        &h,
        &["check-config", "--config", bad.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_clean("refused config", &text(&out));
    let out = run(
        &h,
        &["check-config", "--config", &config],
        &[("DATASYNC_LOCAL__URI", "mongodb://syncuser:s3cretPa55@[::1")],
    );
    assert_clean("refused env URI", &text(&out));

    // One-shot commands failing to authenticate.
    for args in [
        vec!["reconcile", "--config", &config, "--json"],
        vec!["seed", "--config", &config, "--count", "3"],
    ] {
        let out = tokio::time::timeout(
            Duration::from_secs(120),
            tokio::task::spawn_blocking({
                let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
                move || {
                    Command::new(binary())
                        .args(&args)
                        .env_remove("RUST_LOG")
                        .output()
                        .unwrap()
                }
            }),
        )
        .await
        .expect("command finishes")
        .unwrap();
        assert!(
            !out.status.success(),
            "{args:?} succeeded without auth support?"
        );
        assert_clean(&format!("{args:?}"), &text(&out));
        println!("secrets: `{}` → exit {:?}", args[0], out.status.code());
    }

    // The daemon: logs at trace level while it retries, status if it answers, SIGTERM.
    let mut daemon = h.spawn_daemon_nowait();
    for _ in 0..80 {
        if !daemon.alive() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Ok(v) = support::try_admin(&h.socket, r#"{"cmd":"status"}"#).await {
        assert_clean("status", &v.to_string());
        let out = h.ctl(&["status"]);
        assert_clean("ctl status", &text(&out));
    }
    let exit = daemon.terminate(Duration::from_secs(15));
    let logs = h.logs();
    assert!(!logs.is_empty(), "daemon logged nothing");
    assert_clean("daemon log", &logs);
    assert!(
        ["syncuser", "***", "auth", "scram"]
            .iter()
            .any(|w| logs.to_lowercase().contains(w)),
        "the log should say why it cannot connect:\n{}",
        h.log_tail(20)
    );
    println!(
        "secrets: daemon exit {exit:?}; {} log lines at trace level, none with the password",
        logs.lines().count()
    );
}
