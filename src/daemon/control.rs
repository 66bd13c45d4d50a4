//! Every control input — admin requests, cron ticks, signals, the systemd watchdog —
//! becomes one [`Control`] value sent to one [`Dispatcher`], so there is a single place
//! that decides what the daemon does and in which order.
//!
//! Manual `sync` while a reconcile is running: the request waits for that reconcile to
//! finish, then runs its own (the engine serialises reconciles). A cron tick that finds
//! a reconcile already running is skipped, so a slow reconcile never piles up ticks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::core::{EngineError, EngineHandle, EngineStats, EngineStatus, Mode, ReconcileReport};
use crate::daemon::admin::protocol::{AdminReply, AdminRequest, OplogReply, StatusReply};
use crate::daemon::config::{Config, Schedule};
use crate::daemon::metrics::Observer;
use crate::daemon::reload::Reloader;

/// Capacity of the control channel. Senders (admin connections, cron, signals,
/// watchdog) are few and slow; when it is full they wait.
pub const CONTROL_CAPACITY: usize = 64;

/// The operations the daemon needs from the engine (implemented by
/// [`EngineHandle`]; tests use a stand-in).
#[async_trait]
pub trait Controller: Send + Sync + 'static {
    /// Current status snapshot.
    fn status(&self) -> EngineStatus;
    /// The engine's cumulative histograms (batch sizes, per-event lag); `None` when
    /// there are none (a stand-in).
    fn stats(&self) -> Option<EngineStats> {
        None
    }
    /// Stop applying.
    fn pause(&self);
    /// Resume applying.
    fn resume(&self);
    /// Change the debounce window live.
    fn set_debounce(&self, debounce: Duration);
    /// One full reconcile of every pair (waits for a running one first).
    async fn reconcile(
        &self,
        mode: Option<Mode>,
        dry_run: bool,
    ) -> Result<ReconcileReport, EngineError>;
    /// Names of the collection pairs, in configuration order.
    fn pair_names(&self) -> Vec<String> {
        self.status().pairs.into_iter().map(|p| p.name).collect()
    }
    /// One full reconcile of the pair `name` only; `None`: there is no such pair.
    async fn reconcile_pair(
        &self,
        name: &str,
        mode: Option<Mode>,
        dry_run: bool,
    ) -> Option<Result<ReconcileReport, EngineError>>;
}

#[async_trait]
impl Controller for EngineHandle {
    fn status(&self) -> EngineStatus {
        EngineHandle::status(self)
    }
    fn stats(&self) -> Option<EngineStats> {
        Some(EngineHandle::stats(self))
    }
    fn pause(&self) {
        EngineHandle::pause(self)
    }
    fn resume(&self) {
        EngineHandle::resume(self)
    }
    fn set_debounce(&self, debounce: Duration) {
        EngineHandle::set_debounce(self, debounce)
    }
    async fn reconcile(
        &self,
        mode: Option<Mode>,
        dry_run: bool,
    ) -> Result<ReconcileReport, EngineError> {
        EngineHandle::reconcile(self, mode, dry_run).await
    }
    fn pair_names(&self) -> Vec<String> {
        EngineHandle::pair_names(self)
    }
    async fn reconcile_pair(
        &self,
        name: &str,
        mode: Option<Mode>,
        dry_run: bool,
    ) -> Option<Result<ReconcileReport, EngineError>> {
        EngineHandle::reconcile_pair(self, name, mode, dry_run).await
    }
}

/// One control input.
#[derive(Debug)]
pub enum Control {
    /// An admin socket request and where to send its reply.
    Admin {
        /// The parsed request.
        request: AdminRequest,
        /// Reply channel of the connection.
        reply: oneshot::Sender<AdminReply>,
    },
    /// The cron schedule fired.
    CronTick,
    /// SIGHUP: re-read the configuration file.
    Reload,
    /// SIGTERM / SIGINT: stop.
    Shutdown(&'static str),
    /// Time to tell systemd we are alive (sent at half the watchdog interval; answering
    /// it from the dispatcher proves the control loop is not stuck).
    Watchdog,
}

/// Shared view of the cron task's next fire time.
pub type NextFire = watch::Receiver<Option<DateTime<Utc>>>;

/// Consumes [`Control`] values.
pub struct Dispatcher {
    /// The engine (or a stand-in).
    controller: Arc<dyn Controller>,
    /// When the daemon started (for `uptime_s`).
    started: Instant,
    /// Next cron fire time, published by the cron task.
    next_fire: NextFire,
    /// Pushes a new schedule to the cron task (SIGHUP).
    schedule: watch::Sender<Option<Schedule>>,
    /// Re-reads the config on SIGHUP; `None` when reloading is not possible.
    reloader: Option<Reloader>,
    /// Root shutdown token.
    shutdown: CancellationToken,
    /// Tracks spawned reconciles.
    tasks: TaskTracker,
    /// Reconciles currently started from here (cron or admin).
    reconciling: Arc<AtomicUsize>,
    /// Metrics and oplog windows, for `status` and failed-reconcile counts.
    observer: Option<Arc<Observer>>,
}

impl Dispatcher {
    /// A dispatcher for `controller`.
    pub fn new(
        controller: Arc<dyn Controller>,
        next_fire: NextFire,
        schedule: watch::Sender<Option<Schedule>>,
        reloader: Option<Reloader>,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        Dispatcher {
            controller,
            started: Instant::now(),
            next_fire,
            schedule,
            reloader,
            shutdown,
            tasks,
            reconciling: Arc::new(AtomicUsize::new(0)),
            observer: None,
        }
    }

    /// Report oplog windows in `status` and count failed reconciles in `observer`.
    pub fn with_observer(mut self, observer: Arc<Observer>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Handle control inputs until shutdown.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Control>) {
        loop {
            let msg = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                msg = rx.recv() => msg,
            };
            let Some(msg) = msg else { break };
            self.handle(msg);
        }
        // Refuse whatever is still queued instead of leaving clients hanging.
        rx.close();
        while let Ok(msg) = rx.try_recv() {
            if let Control::Admin { reply, .. } = msg {
                let _ = reply.send(AdminReply::Error("daemon is shutting down".into()));
            }
        }
    }

    fn handle(&mut self, msg: Control) {
        match msg {
            Control::Admin { request, reply } => self.admin(request, reply),
            Control::CronTick => {
                if self.reconciling.load(Ordering::SeqCst) > 0 {
                    tracing::info!("scheduled reconcile skipped: one is already running");
                } else {
                    tracing::info!("scheduled reconcile starting");
                    self.spawn_reconcile(None, false, None, None, "cron");
                }
            }
            Control::Reload => match self.reloader.as_mut() {
                Some(r) => {
                    if let Some(plan) = r.reload() {
                        if let Some(d) = plan.debounce {
                            self.controller.set_debounce(d);
                        }
                        if let Some(s) = plan.schedule {
                            self.schedule.send_replace(s);
                        }
                    }
                }
                None => tracing::warn!("SIGHUP ignored: no configuration file to re-read"),
            },
            Control::Shutdown(reason) => {
                tracing::info!(reason, "shutting down");
                self.shutdown.cancel();
            }
            Control::Watchdog => crate::daemon::notify::watchdog(),
        }
    }

    fn admin(&mut self, request: AdminRequest, reply: oneshot::Sender<AdminReply>) {
        tracing::debug!(?request, "admin request");
        let answer = match request {
            AdminRequest::Status => {
                let next = *self.next_fire.borrow();
                let status = &self.controller.status();
                let mut reply = StatusReply::new(status, self.started.elapsed().as_secs(), next);
                if let Some(o) = &self.observer {
                    reply.oplog = Some(OplogReply::new(o, status.mode));
                }
                AdminReply::Status(Box::new(reply))
            }
            AdminRequest::Pause => {
                self.controller.pause();
                tracing::info!("applying paused by admin request");
                AdminReply::Ok
            }
            AdminRequest::Resume => {
                self.controller.resume();
                tracing::info!("applying resumed by admin request");
                AdminReply::Ok
            }
            AdminRequest::Sync {
                pair: Some(pair), ..
            } if !self.controller.pair_names().contains(&pair) => {
                AdminReply::Error(unknown_pair(&pair, &self.controller.pair_names()))
            }
            AdminRequest::Sync {
                mode,
                dry_run,
                pair,
            } => {
                self.spawn_reconcile(mode, dry_run, pair, Some(reply), "admin");
                return;
            }
        };
        let _ = reply.send(answer);
    }

    /// Reconcile every pair, or only `pair` (already checked to exist), in a task.
    fn spawn_reconcile(
        &self,
        mode: Option<Mode>,
        dry_run: bool,
        pair: Option<String>,
        reply: Option<oneshot::Sender<AdminReply>>,
        origin: &'static str,
    ) {
        let controller = self.controller.clone();
        let reconciling = self.reconciling.clone();
        let observer = self.observer.clone();
        reconciling.fetch_add(1, Ordering::SeqCst);
        self.tasks.spawn(async move {
            let result = match &pair {
                None => Some(controller.reconcile(mode, dry_run).await),
                Some(name) => controller.reconcile_pair(name, mode, dry_run).await,
            };
            reconciling.fetch_sub(1, Ordering::SeqCst);
            let pair_name = pair.as_deref().unwrap_or("(all)");
            let answer = match result {
                None => AdminReply::Error(unknown_pair(pair_name, &controller.pair_names())),
                Some(Ok(report)) => {
                    tracing::info!(origin, pair = pair_name, mode = %report.mode, dry_run,
                        conflicts = report.conflicts, duration_ms = report.duration_ms,
                        "reconcile finished");
                    AdminReply::Report(report)
                }
                Some(Err(e)) => {
                    tracing::warn!(origin, pair = pair_name, error = %e, "reconcile failed");
                    if let Some(o) = &observer {
                        o.metrics.reconcile_failed(dry_run);
                    }
                    AdminReply::Error(format!("reconcile failed: {e}"))
                }
            };
            if let Some(reply) = reply {
                let _ = reply.send(answer);
            }
        });
    }
}

/// The error reply for a `sync` naming a pair that does not exist.
fn unknown_pair(name: &str, names: &[String]) -> String {
    format!(
        "unknown pair \"{name}\" (pairs: {})",
        names
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Build a config's initial schedule channel pair for the cron task.
pub fn schedule_channel(
    config: &Config,
) -> (
    watch::Sender<Option<Schedule>>,
    watch::Receiver<Option<Schedule>>,
) {
    watch::channel(config.reconcile.schedule.clone())
}
