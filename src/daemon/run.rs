//! `datasync run`: wires the engine, the admin socket, cron, signals and systemd
//! notifications together around one root [`CancellationToken`], and shuts down in
//! order: stop accepting control input, let the engine drain (bounded), remove the
//! socket, wait for the remaining tasks (bounded).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::core::{Engine, EngineError, Side, Stores, StreamState};
use crate::daemon::admin::{AdminError, AdminServer, Limits};
use crate::daemon::config::{Config, ConfigSource};
use crate::daemon::control::{schedule_channel, Control, Controller, Dispatcher, CONTROL_CAPACITY};
use crate::daemon::logging::LogReload;
use crate::daemon::reload::Reloader;
use crate::daemon::{cron, notify, signals, stores};

/// How long the engine may take to apply what is queued after a stop request; the whole
/// shutdown stays under 10 s.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(8);

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The admin socket could not be set up.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The stores could not be built (bad URI, unreachable at start-up…).
    #[error("cannot open the MongoDB stores: {0}")]
    Stores(String),
    /// The engine stopped with an error.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The engine task panicked.
    #[error("engine task failed: {0}")]
    EngineTask(String),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Options of [`run_with`] beyond the configuration.
pub struct RunOptions {
    /// Where the configuration came from; SIGHUP re-reads it. `None`: no reload.
    pub config_source: Option<ConfigSource>,
    /// Handle to change the log level on SIGHUP.
    pub log_reload: Option<LogReload>,
    /// Install SIGTERM/SIGINT/SIGHUP handlers (the binary does; tests use the token).
    pub signals: bool,
    /// Engine drain bound at shutdown.
    pub drain_deadline: Duration,
    /// Admin socket limits.
    pub admin_limits: Limits,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            config_source: None,
            log_reload: None,
            signals: false,
            drain_deadline: DRAIN_DEADLINE,
            admin_limits: Limits::default(),
        }
    }
}

/// Run the daemon until `shutdown` is cancelled (the library entry point).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), DaemonError> {
    run_with(config, shutdown, RunOptions::default()).await
}

/// [`run`] with options (signals, reload).
pub async fn run_with(
    config: Config,
    shutdown: CancellationToken,
    opts: RunOptions,
) -> Result<(), DaemonError> {
    // Signals are live while connecting too: a stop request during start-up retries
    // ends the daemon cleanly.
    let mut controls = Controls::new(opts.signals)?;
    let stores = tokio::select! {
        r = stores::connect_retrying(&config, &shutdown) => r?,
        _ = controls.stop_requested() => None,
    };
    match stores {
        Some(stores) => run_engine(config, stores, shutdown, opts, controls).await,
        None => {
            controls.close();
            tracing::info!("stopped before MongoDB was reachable");
            Ok(())
        }
    }
}

/// The control channel and, when enabled, the signal handlers feeding it.
pub struct Controls {
    /// Sender cloned by every control source.
    tx: mpsc::Sender<Control>,
    /// The dispatcher's end.
    rx: mpsc::Receiver<Control>,
    /// Signal forwarding, closed at the end of the run.
    signals: Option<signal_hook_tokio::Handle>,
}

impl Controls {
    /// A fresh channel; installs SIGTERM/SIGINT/SIGHUP handlers when `signals`.
    pub fn new(signals: bool) -> Result<Controls, DaemonError> {
        let (tx, rx) = mpsc::channel(CONTROL_CAPACITY);
        let signals = if signals {
            Some(signals::spawn(tx.clone()).map_err(DaemonError::Signals)?)
        } else {
            None
        };
        Ok(Controls { tx, rx, signals })
    }

    /// Before the dispatcher exists: wait for a stop request, dropping anything else.
    async fn stop_requested(&mut self) {
        while let Some(msg) = self.rx.recv().await {
            match msg {
                Control::Shutdown(reason) => {
                    tracing::info!(reason, "stop requested while connecting");
                    return;
                }
                other => tracing::debug!(?other, "control input ignored while connecting"),
            }
        }
    }

    /// A sender for injecting control inputs (embedding, tests).
    pub fn sender(&self) -> mpsc::Sender<Control> {
        self.tx.clone()
    }

    fn close(self) {
        if let Some(h) = self.signals {
            h.close();
        }
    }
}

/// Run the daemon over already-built stores.
pub async fn run_with_stores(
    config: Config,
    stores: Stores,
    shutdown: CancellationToken,
    opts: RunOptions,
) -> Result<(), DaemonError> {
    let controls = Controls::new(opts.signals)?;
    run_engine(config, stores, shutdown, opts, controls).await
}

async fn run_engine(
    config: Config,
    stores: Stores,
    shutdown: CancellationToken,
    opts: RunOptions,
    controls: Controls,
) -> Result<(), DaemonError> {
    let engine = Engine::new(config.engine_config(), stores);
    let handle = engine.handle();
    let on_start = config.reconcile.on_start;
    let drain = opts.drain_deadline;
    run_shell(
        config,
        Arc::new(handle),
        move |token| engine.run(token, on_start, drain),
        shutdown,
        opts,
        controls,
    )
    .await
}

/// The shell around any engine: `engine` is started with a child token and must return
/// after that token is cancelled and its drain is done.
pub async fn run_shell<F, Fut>(
    config: Config,
    controller: Arc<dyn Controller>,
    engine: F,
    shutdown: CancellationToken,
    opts: RunOptions,
    controls: Controls,
) -> Result<(), DaemonError>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), EngineError>> + Send + 'static,
{
    // Bind first: a second daemon on the same socket fails before touching any data.
    let admin = AdminServer::bind(&config.admin.socket)?;
    tracing::info!(mode = %config.mode, socket = %config.admin.socket.display(), "datasync starting");

    let tasks = TaskTracker::new();
    let Controls {
        tx: control_tx,
        rx: control_rx,
        signals: signal_handle,
    } = controls;
    let (schedule_tx, schedule_rx) = schedule_channel(&config);
    let (next_tx, next_rx) = watch::channel(None);

    let mut engine_task = tokio::spawn(engine(shutdown.child_token()));
    tasks.spawn(
        admin
            .serve(
                control_tx.clone(),
                shutdown.child_token(),
                opts.admin_limits,
            )
            .instrument(tracing::info_span!("admin")),
    );
    tasks.spawn(
        cron::run(
            schedule_rx,
            next_tx,
            control_tx.clone(),
            shutdown.child_token(),
        )
        .instrument(tracing::info_span!("cron")),
    );
    if let Some(period) = notify::watchdog_period() {
        tracing::info!(
            ping_every_ms = period.as_millis() as u64,
            "systemd watchdog enabled"
        );
        tasks.spawn(watchdog(period, control_tx.clone(), shutdown.child_token()));
    }
    tasks.spawn(ready_when_started(
        controller.clone(),
        config.mode,
        shutdown.child_token(),
    ));
    let reloader = opts
        .config_source
        .map(|source| Reloader::new(source, config.clone(), opts.log_reload));
    let dispatcher = Dispatcher::new(
        controller,
        next_rx,
        schedule_tx,
        reloader,
        shutdown.clone(),
        tasks.clone(),
    );
    tasks.spawn(
        dispatcher
            .run(control_rx)
            .instrument(tracing::info_span!("control")),
    );
    drop(control_tx);

    let early = tokio::select! {
        _ = shutdown.cancelled() => None,
        r = &mut engine_task => Some(r),
    };
    notify::stopping();
    shutdown.cancel();
    let joined = match early {
        Some(r) => {
            tracing::error!("engine stopped before shutdown was requested");
            r
        }
        None => {
            tracing::info!("stopping: draining the queue and saving checkpoints");
            match tokio::time::timeout(
                opts.drain_deadline + Duration::from_secs(1),
                &mut engine_task,
            )
            .await
            {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!("engine did not finish draining in time");
                    engine_task.abort();
                    Ok(Ok(()))
                }
            }
        }
    };
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(1), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some tasks did not stop in time");
    }
    if let Some(h) = signal_handle {
        h.close();
    }
    let result = match joined {
        Ok(r) => r.map_err(DaemonError::from),
        Err(e) => Err(DaemonError::EngineTask(e.to_string())),
    };
    match &result {
        Ok(()) => tracing::info!("datasync stopped"),
        Err(e) => tracing::error!(error = %e, "datasync stopped with an error"),
    }
    result
}

async fn watchdog(period: Duration, control: mpsc::Sender<Control>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                if control.send(Control::Watchdog).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// READY=1 once every watched stream is running, reconciling or down-and-retrying (the
/// daemon is up either way), i.e. the engine has started its readers.
async fn ready_when_started(
    controller: Arc<dyn Controller>,
    mode: crate::core::Mode,
    stop: CancellationToken,
) {
    loop {
        let status = controller.status();
        let started = Side::BOTH.iter().all(|&side| {
            let s = if side == Side::Local {
                &status.local
            } else {
                &status.cloud
            };
            !mode.watches(side)
                || matches!(
                    s.state,
                    StreamState::Running | StreamState::Reconciling | StreamState::Down
                )
        });
        if started {
            tracing::info!(local = ?status.local.state, cloud = ?status.cloud.state, "streams started");
            notify::ready();
            notify::status("syncing");
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}
