//! The shipped systemd unit: its sandboxing scores ≤ 2.5 in systemd's own offline
//! analysis, and it declares what the daemon relies on (notify, watchdog, socket dir).

use std::path::Path;
use std::process::Command;

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/datasync.service");
/// The unit the Debian package installs.
const DEB_UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/debian/datasync.service"
);

fn exposure(output: &str) -> Option<f64> {
    let line = output
        .lines()
        .find(|l| l.contains("Overall exposure level"))?;
    let after = line.split(':').nth(1)?;
    after.split_whitespace().next()?.parse().ok()
}

#[test]
fn unit_sandbox_scores_at_most_2_5_in_systemd_analyze() {
    for unit in [UNIT, DEB_UNIT] {
        sandbox_score_at_most_2_5(unit);
    }
}

fn sandbox_score_at_most_2_5(unit: &str) {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", unit])
        .output()
        .unwrap_or_else(|e| {
            panic!("systemd-analyze is required for this test (Debian package `systemd`): {e}")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let score = exposure(&text)
        .unwrap_or_else(|| panic!("no exposure level in systemd-analyze output:\n{text}"));
    assert!(score <= 2.5, "{unit}: exposure {score} > 2.5:\n{text}");
}

/// The settings of a unit file, comments and blank lines left out.
fn settings(path: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn packaged_unit_differs_from_the_generic_one_only_in_binary_path_and_user() {
    let generic = settings(UNIT);
    let packaged = settings(DEB_UNIT);
    let only = |a: &[String], b: &[String]| -> Vec<String> {
        a.iter().filter(|l| !b.contains(l)).cloned().collect()
    };
    assert_eq!(
        only(&generic, &packaged),
        [
            "ExecStart=/usr/local/bin/datasync run --config /etc/datasync/datasync.toml",
            "DynamicUser=yes"
        ]
    );
    assert_eq!(
        only(&packaged, &generic),
        [
            "ExecStart=/usr/bin/datasync run --config /etc/datasync/datasync.toml",
            "User=datasync",
            "Group=datasync"
        ]
    );
}

#[test]
fn unit_declares_notify_watchdog_reload_and_socket_directory() {
    let unit = std::fs::read_to_string(Path::new(UNIT)).unwrap();
    for line in [
        "Type=notify",
        "ExecStart=/usr/local/bin/datasync run --config /etc/datasync/datasync.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WatchdogSec=30s",
        "Restart=on-failure",
        "DynamicUser=yes",
        "RuntimeDirectory=datasync",
        "StateDirectory=datasync",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    ] {
        assert!(
            unit.lines().any(|l| l.trim() == line),
            "unit lacks `{line}`"
        );
    }
}

#[test]
fn exposure_is_parsed_from_the_summary_line() {
    let sample = "✓ UMask= ok\n→ Overall exposure level for datasync.service: 1.2 OK 🙂\n";
    assert_eq!(exposure(sample), Some(1.2));
    assert_eq!(exposure("nothing here"), None);
}
