//! `datasync run`: wires the engine, the admin socket, cron, signals and systemd
//! notifications together around one root [`CancellationToken`], and shuts down in
//! order: stop accepting control input, let the engine drain (bounded), remove the
//! socket, wait for the remaining tasks (bounded).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::core::{Engine, EngineError, Side, Stores, StreamState};
use crate::daemon::admin::{AdminError, AdminServer, Limits};
use crate::daemon::config::{Config, ConfigSource};
use crate::daemon::connecting::{self, Configured};
use crate::daemon::control::{schedule_channel, Control, Controller, Dispatcher, CONTROL_CAPACITY};
use crate::daemon::logging::LogReload;
use crate::daemon::metrics::http::StatusSource;
use crate::daemon::metrics::{self, HistoryProbe, MongoProbe, Observer};
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
    /// The metrics endpoint could not listen.
    #[error("{0}")]
    Metrics(std::io::Error),
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
    /// Where checkpoints and the oplog window are read for readiness and headroom
    /// (built from the MongoDB clients when `None` and the daemon connects itself).
    pub history_probe: Option<Arc<dyn HistoryProbe>>,
    /// Told the address the metrics endpoint listens on (useful with port 0).
    pub metrics_bound: Option<oneshot::Sender<SocketAddr>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            config_source: None,
            log_reload: None,
            signals: false,
            drain_deadline: DRAIN_DEADLINE,
            admin_limits: Limits::default(),
            history_probe: None,
            metrics_bound: None,
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
    mut opts: RunOptions,
) -> Result<(), DaemonError> {
    // Signals and the admin socket are live while connecting too: a stop request during
    // start-up retries ends the daemon cleanly, and `status` says what it is waiting for.
    let mut controls = Controls::new(opts.signals)?;
    controls.serve_admin(&config, &shutdown, opts.admin_limits.clone())?;
    let (error_tx, error_rx) = watch::channel(None);
    let configured = Configured::of(&config);
    let connecting = {
        let (configured, error) = (configured.clone(), error_rx.clone());
        StatusSource::connecting(move || configured.status(error.borrow().clone()))
    };
    let bound = opts.metrics_bound.take();
    controls
        .serve_metrics_early(&config, &shutdown, bound, connecting)
        .await?;
    let started = std::time::Instant::now();
    let stores = tokio::select! {
        r = stores::connect_retrying(&config, &shutdown, &error_tx) => r,
        _ = controls.serve_while_connecting(&configured, started, error_rx) => Ok(None),
    };
    match stores {
        Ok(Some(connected)) => {
            if opts.history_probe.is_none() {
                opts.history_probe = Some(Arc::new(MongoProbe {
                    states: connected.pairs.iter().map(|p| p.state.clone()).collect(),
                    clients: Some([
                        (connected.local_client, config.local.uri.clone()),
                        (connected.cloud_client, config.cloud.uri.clone()),
                    ]),
                }));
            }
            let engine = Engine::with_pairs(config.pair_specs(connected.pairs), connected.streams);
            run_engine(config, engine, shutdown, opts, controls).await
        }
        Ok(None) => {
            controls.finish().await;
            tracing::info!("stopped before MongoDB was reachable");
            Ok(())
        }
        Err(e) => {
            controls.finish().await;
            Err(e)
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
    /// Tasks of the run (the admin server once started).
    tasks: TaskTracker,
    /// Stops the admin server early when the run ends before the shell started.
    admin_stop: Option<CancellationToken>,
    /// The metrics endpoint when it was started before the engine existed.
    metrics: Option<EarlyMetrics>,
}

/// A metrics endpoint serving before the engine exists.
struct EarlyMetrics {
    /// Shared with the shell once it starts.
    observer: Arc<Observer>,
    /// Switched to the engine by the shell.
    source: StatusSource,
    /// Stops the endpoint when the run ends before the shell started.
    stop: CancellationToken,
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
        Ok(Controls {
            tx,
            rx,
            signals,
            tasks: TaskTracker::new(),
            admin_stop: None,
            metrics: None,
        })
    }

    /// Bind the admin socket and serve it into this channel (once). Binding first also
    /// means a second daemon on the same socket fails before touching any data.
    fn serve_admin(
        &mut self,
        config: &Config,
        shutdown: &CancellationToken,
        limits: Limits,
    ) -> Result<(), DaemonError> {
        if self.admin_stop.is_some() {
            return Ok(());
        }
        let admin = AdminServer::bind(&config.admin.socket)?;
        tracing::info!(mode = %config.mode, socket = %config.admin.socket.display(), "datasync starting");
        let stop = shutdown.child_token();
        self.tasks.spawn(
            admin
                .serve(self.tx.clone(), stop.clone(), limits)
                .instrument(tracing::info_span!("admin")),
        );
        self.admin_stop = Some(stop);
        Ok(())
    }

    /// Listen on `[metrics] listen` (when set) before the engine exists, showing
    /// `source`'s status until the shell switches it to the engine.
    async fn serve_metrics_early(
        &mut self,
        config: &Config,
        shutdown: &CancellationToken,
        bound: Option<oneshot::Sender<SocketAddr>>,
        source: StatusSource,
    ) -> Result<(), DaemonError> {
        let Some(addr) = config.metrics.listen else {
            return Ok(());
        };
        let observer = Observer::new(config);
        let stop = shutdown.child_token();
        metrics::http::spawn(&self.tasks, addr, &observer, source.clone(), &stop, bound)
            .await
            .map_err(DaemonError::Metrics)?;
        self.metrics = Some(EarlyMetrics {
            observer,
            source,
            stop,
        });
        Ok(())
    }

    /// Before the dispatcher exists: answer `status` (streams `starting`, with the last
    /// connection error) and refuse other admin requests with a clear error, until a
    /// stop is requested.
    async fn serve_while_connecting(
        &mut self,
        configured: &Configured,
        started: std::time::Instant,
        last_error: watch::Receiver<Option<String>>,
    ) {
        while let Some(msg) = self.rx.recv().await {
            match msg {
                Control::Shutdown(reason) => {
                    tracing::info!(reason, "stop requested while connecting");
                    return;
                }
                Control::Admin { request, reply } => {
                    let error = last_error.borrow().clone();
                    let _ = reply.send(connecting::reply(&request, configured, started, error));
                }
                other => tracing::debug!(?other, "control input ignored while connecting"),
            }
        }
    }

    /// A sender for injecting control inputs (embedding, tests).
    pub fn sender(&self) -> mpsc::Sender<Control> {
        self.tx.clone()
    }

    /// End a run that never reached the shell: stop the admin server (removing its
    /// socket) and the signal handlers.
    async fn finish(self) {
        if let Some(stop) = &self.admin_stop {
            stop.cancel();
        }
        if let Some(m) = &self.metrics {
            m.stop.cancel();
        }
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(1), self.tasks.wait()).await;
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
    mut opts: RunOptions,
) -> Result<(), DaemonError> {
    let controls = Controls::new(opts.signals)?;
    if opts.history_probe.is_none() {
        opts.history_probe = Some(Arc::new(MongoProbe {
            states: vec![stores.state.clone()],
            clients: None,
        }));
    }
    let engine = Engine::new(config.engine_config(), stores);
    run_engine(config, engine, shutdown, opts, controls).await
}

async fn run_engine(
    config: Config,
    engine: Engine,
    shutdown: CancellationToken,
    opts: RunOptions,
    controls: Controls,
) -> Result<(), DaemonError> {
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
    let mut controls = controls;
    controls.serve_admin(&config, &shutdown, opts.admin_limits.clone())?;
    let Controls {
        tx: control_tx,
        rx: control_rx,
        signals: signal_handle,
        tasks,
        admin_stop: _,
        metrics: early,
    } = controls;
    let observer = match early {
        Some(m) => {
            m.source.set_engine(controller.clone());
            m.observer
        }
        None => {
            let observer = Observer::new(&config);
            if let Some(addr) = config.metrics.listen {
                let source = StatusSource::engine(controller.clone());
                let stop = shutdown.child_token();
                metrics::http::spawn(&tasks, addr, &observer, source, &stop, opts.metrics_bound)
                    .await
                    .map_err(DaemonError::Metrics)?;
            }
            observer
        }
    };
    let (schedule_tx, schedule_rx) = schedule_channel(&config);
    let (next_tx, next_rx) = watch::channel(None);

    let mut engine_task = tokio::spawn(engine(shutdown.child_token()));
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
    tasks.spawn(metrics::sample(
        observer.clone(),
        controller.clone(),
        shutdown.child_token(),
    ));
    if let Some(probe) = opts.history_probe {
        tasks.spawn(
            metrics::headroom::monitor(
                observer.clone(),
                probe,
                config.mode,
                shutdown.child_token(),
            )
            .instrument(tracing::info_span!("headroom")),
        );
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
    )
    .with_observer(observer);
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
