//! The shipped systemd unit: its sandboxing scores ≤ 2.5 in systemd's own offline
//! analysis, and it declares what the daemon relies on (notify, watchdog, socket dir).

use std::path::Path;
use std::process::Command;

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/datasync.service");

fn exposure(output: &str) -> Option<f64> {
    let line = output
        .lines()
        .find(|l| l.contains("Overall exposure level"))?;
    let after = line.split(':').nth(1)?;
    after.split_whitespace().next()?.parse().ok()
}

#[test]
fn unit_sandbox_scores_at_most_2_5_in_systemd_analyze() {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", UNIT])
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
    assert!(score <= 2.5, "exposure {score} > 2.5:\n{text}");
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
