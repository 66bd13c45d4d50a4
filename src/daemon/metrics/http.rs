//! The HTTP endpoint: `GET /metrics` (Prometheus text format 0.0.4), `GET /healthz`
//! (the process answers) and `GET /readyz` (see [`super::health`]). Plain HTTP/1.1 on
//! hyper; no TLS or authentication, so it listens where `[metrics] listen` says
//! (loopback in the example) and shows no secrets.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::{readiness, unix_now, Observer};
use crate::core::{EngineStats, EngineStatus, Side};
use crate::daemon::control::Controller;

/// Where the endpoint reads the engine's status: the engine once it exists, a
/// "connecting" status before (the endpoint is up while MongoDB is still unreachable:
/// `/healthz` answers, `/readyz` says the streams are starting).
#[derive(Clone)]
pub struct StatusSource {
    /// The engine, once the daemon reached MongoDB.
    engine: Arc<OnceLock<Arc<dyn Controller>>>,
    /// The status to show until then.
    connecting: Arc<dyn Fn() -> EngineStatus + Send + Sync>,
}

impl StatusSource {
    /// No engine yet: `connecting` gives the status meanwhile.
    pub fn connecting(connecting: impl Fn() -> EngineStatus + Send + Sync + 'static) -> Self {
        StatusSource {
            engine: Arc::new(OnceLock::new()),
            connecting: Arc::new(connecting),
        }
    }

    /// Read `engine` from the start.
    pub fn engine(engine: Arc<dyn Controller>) -> Self {
        let fallback = engine.clone();
        let source = StatusSource::connecting(move || fallback.status());
        source.set_engine(engine);
        source
    }

    /// From now on, read `engine` (the first engine set wins).
    pub fn set_engine(&self, engine: Arc<dyn Controller>) {
        let _ = self.engine.set(engine);
    }

    /// The current status.
    pub fn status(&self) -> EngineStatus {
        match self.engine.get() {
            Some(e) => e.status(),
            None => (self.connecting)(),
        }
    }

    /// The engine's histograms, once there is an engine that keeps them.
    pub fn stats(&self) -> Option<EngineStats> {
        self.engine.get().and_then(|e| e.stats())
    }
}

/// Content type of the Prometheus text format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Open connections at most; beyond it new ones are closed at once (a scraper and a
/// health checker need a few; this bounds what a misbehaving client can hold).
const MAX_CONNECTIONS: usize = 32;

/// A client must send a request's headers within this time, or it is disconnected.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serve `listener` until `stop`; open connections are closed gracefully.
pub async fn serve(
    listener: TcpListener,
    observer: Arc<Observer>,
    source: StatusSource,
    stop: CancellationToken,
) {
    let conns = TaskTracker::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "metrics connection refused: too many open");
            continue;
        };
        let (observer, source, stop) = (observer.clone(), source.clone(), stop.clone());
        conns.spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req| {
                let reply = answer(&req, &observer, &source);
                async move { Ok::<_, Infallible>(reply) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "metrics connection ended with an error");
            }
        });
    }
    conns.close();
    conns.wait().await;
}

/// Bind `addr` and serve the endpoint on `tasks` until `stop`; `bound` is told the
/// address (useful with port 0). A bind error names the address and the key.
pub async fn spawn(
    tasks: &TaskTracker,
    addr: SocketAddr,
    observer: &Arc<Observer>,
    source: StatusSource,
    stop: &CancellationToken,
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} ([metrics] listen): {e}"),
        )
    })?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "metrics endpoint listening (/metrics, /healthz, /readyz)");
    if let Some(tx) = bound {
        let _ = tx.send(addr);
    }
    tasks.spawn(
        serve(listener, observer.clone(), source, stop.clone())
            .instrument(tracing::info_span!("metrics")),
    );
    Ok(())
}

fn answer(
    req: &Request<Incoming>,
    observer: &Observer,
    source: &StatusSource,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            let status = source.status();
            observer.refresh(&status, source.stats());
            reply(StatusCode::OK, PROMETHEUS_TEXT, observer.metrics.encode())
        }
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            let status = source.status();
            let windows = [observer.window(Side::Local), observer.window(Side::Cloud)];
            let bound = observer.config().metrics.ready_max_checkpoint_age;
            match readiness(&status, &windows, unix_now(), bound) {
                Ok(()) => reply(StatusCode::OK, "text/plain", "ready\n".into()),
                Err(reasons) => reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("not ready: {}\n", reasons.join("; ")),
                ),
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found (try /metrics, /healthz, /readyz)\n".into(),
        ),
    }
}

fn reply(code: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}
