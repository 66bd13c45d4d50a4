//! Unix signals as control inputs: SIGTERM/SIGINT → [`Control::Shutdown`] (a second one
//! forces an immediate exit), SIGHUP → [`Control::Reload`].

use futures::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_tokio::{Handle, Signals};
use tokio::sync::mpsc;

use crate::daemon::control::Control;

/// Exit status used when a second SIGTERM/SIGINT cuts the drain short.
pub const FORCED_EXIT_CODE: i32 = 130;

/// Install the handlers and spawn the task that forwards signals. Close the returned
/// handle to stop it.
pub fn spawn(control: mpsc::Sender<Control>) -> std::io::Result<Handle> {
    let signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    let handle = signals.handle();
    tokio::spawn(forward(signals, control));
    Ok(handle)
}

async fn forward(mut signals: Signals, control: mpsc::Sender<Control>) {
    let mut stopping = false;
    while let Some(signal) = signals.next().await {
        match signal {
            SIGHUP => {
                tracing::info!("SIGHUP received: reloading configuration");
                let _ = control.send(Control::Reload).await;
            }
            _ if stopping => {
                tracing::warn!(
                    signal,
                    "second stop signal: exiting without finishing the drain"
                );
                std::process::exit(FORCED_EXIT_CODE);
            }
            _ => {
                stopping = true;
                let reason = if signal == SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                let _ = control.send(Control::Shutdown(reason)).await;
            }
        }
    }
}
