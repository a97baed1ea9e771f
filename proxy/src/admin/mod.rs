//! The admin port: liveness, readiness, config dump, metrics, drain, and the app's
//! health probes ([`app_health`]) for the kubelet.

pub mod app_health;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::discovery::file::ReloadStatus;
use crate::discovery::xds::XdsStatus;
use crate::identity::IdentityStore;
use crate::metrics::Metrics;
use crate::snapshot::Store;
use crate::transport::service_listeners::ServiceListeners;

/// What the admin endpoints report on.
#[derive(Debug)]
pub struct AdminState {
    /// Config snapshots.
    pub store: Arc<Store>,
    /// Metrics.
    pub metrics: Metrics,
    /// Set once config is loaded and listeners bound; cleared when draining.
    pub ready: AtomicBool,
    /// The config file, for the dump.
    pub source: Option<PathBuf>,
    /// The fixed listeners, by role.
    pub listeners: BTreeMap<&'static str, SocketAddr>,
    /// Per-service listeners.
    pub service_listeners: Arc<ServiceListeners>,
    /// Why the last reload was rejected, if it was.
    pub reload: Arc<ReloadStatus>,
    /// Asks the process to drain and exit.
    pub drain_tx: mpsc::Sender<()>,
    /// The xDS connection, in control-plane mode.
    pub xds: Option<Arc<XdsStatus>>,
    /// The workload identity, when the proxy was given a join token.
    pub identity: Option<Arc<IdentityStore>>,
    /// Mutual TLS, with an identity.
    pub tls: Option<Arc<crate::tls::TlsState>>,
    /// The app's probes, answered under `/app-health/`.
    pub app_probes: app_health::AppProbes,
    /// Whether connections are intercepted (transparent mode).
    pub transparent: bool,
}

/// Serves the admin API on `listener` until the process exits.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let state = state.clone();
                async move {
                    let path = req.uri().path();
                    let resp = if req.method() == Method::GET && state.app_probes.has(path) {
                        let (status, body) = state.app_probes.run(path).await;
                        let mut r = Response::new(Full::new(Bytes::from(body)));
                        *r.status_mut() = status;
                        r
                    } else {
                        route(&state, peer, req)
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
}

fn route(state: &AdminState, peer: SocketAddr, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/live") => text(StatusCode::OK, "live\n"),
        (&Method::GET, "/ready") => {
            if state.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        (&Method::GET, "/metrics") => {
            let mut r = Response::new(Full::new(Bytes::from(state.metrics.render())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        (&Method::GET, "/config_dump") => json(config_dump(state)),
        // Mutating calls answer only on loopback, even if the admin port is exposed.
        (&Method::POST, "/drain") if !peer.ip().is_loopback() => text(
            StatusCode::FORBIDDEN,
            "drain is only accepted from loopback\n",
        ),
        (&Method::POST, "/drain") => {
            let _ = state.drain_tx.try_send(());
            text(StatusCode::ACCEPTED, "draining\n")
        }
        (_, "/live" | "/ready" | "/metrics" | "/config_dump" | "/drain") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /live, /ready, /metrics, /config_dump\n",
        ),
    }
}

fn config_dump(state: &AdminState) -> serde_json::Value {
    let snapshot = state.store.load();
    let loaded_at = snapshot
        .loaded_at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let last_error = state.reload.last_error();
    let mut view = serde_json::to_value(&snapshot.view).unwrap_or_default();
    // The roots are public, but PEM in a dump reads like key material to people and
    // scanners; `tls.roots_sha256` names them instead.
    if let Some(b) = view.get_mut("trust_bundle").filter(|b| !b.is_null()) {
        *b = serde_json::json!("see tls.roots_sha256");
    }
    serde_json::json!({
        "version": snapshot.version,
        "loaded_at_unix": loaded_at,
        "source": state.source.as_ref().map(|p| p.display().to_string()),
        "transparent": state.transparent,
        "app_probes": state.app_probes.paths(),
        "listeners": {
            "fixed": state.listeners,
            "services": state.service_listeners.addresses(),
        },
        "last_reload_error": last_error,
        "xds": state.xds.as_ref().map(|x| {
            let detail = x.detail.lock().map(|d| d.clone()).unwrap_or_default();
            serde_json::json!({
                "control_plane": x.control_plane,
                "connected": x.connected.load(Ordering::Acquire),
                "versions": detail.versions,
                "last_nack": detail.last_nack,
            })
        }),
        "identity": state.identity.as_ref().map(|i| i.dump()),
        "tls": state.tls.as_ref().map(|t| t.dump()),
        "routes": view,
        "config": snapshot.config,
    })
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    r
}

fn json(value: serde_json::Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(&value).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}
