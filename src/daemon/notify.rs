//! systemd notifications (`Type=notify`): READY=1 once the streams have started,
//! STOPPING=1 at shutdown, WATCHDOG=1 pings. Every call is a no-op without systemd
//! (`NOTIFY_SOCKET` unset), so the daemon runs the same in a terminal or a test.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(state: NotifyState<'_>) {
    if let Err(e) = sd_notify::notify(&[state]) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Tell systemd start-up is complete.
pub fn ready() {
    send(NotifyState::Ready);
}

/// Tell systemd we are stopping.
pub fn stopping() {
    send(NotifyState::Stopping);
}

/// Watchdog keep-alive.
pub fn watchdog() {
    send(NotifyState::Watchdog);
}

/// Free-form status line shown by `systemctl status`.
pub fn status(text: &str) {
    send(NotifyState::Status(text));
}

/// Half the watchdog interval when systemd enabled the watchdog for this process.
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}
