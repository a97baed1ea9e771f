//! The sidecar injector's admission webhook: HTTPS on `--injector-addr` (15017 in the
//! manifests), `POST /inject`, `/inject/namespace-enabled` and
//! `/inject/namespace-enabled/strict` (one per webhook entry, see `tandem_inject::review`)
//! with an AdmissionReview v1, answered by `tandem_inject::review` (all of the logic; this
//! module only serves it), and `GET /healthz` for the Deployment's probes.
//!
//! Each admission gets the settings with the CA's pins as they are at that moment
//! ([`pins`]): every root, signing or only trusted, so that a pod created mid-rotation
//! accepts the identity endpoint's certificate under either root.
//!
//! Statuses: 200 with an AdmissionReview for every AdmissionReview (allowed, patched,
//! or refused in a strict namespace); 400 `{"error": ...}` for a body that is not one;
//! 404 for other paths; 413 for a body over [`MAX_BODY`].

pub mod tls;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tandem_inject::review::{self, Query};
use tandem_inject::Settings;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::identity::ca::Ca;

/// Largest AdmissionReview accepted: the API server's own limit on an object is about
/// 3 MiB, and the review holds it once (twice only for updates, which are not sent).
pub const MAX_BODY: usize = 6 << 20;
/// A client that has not finished its TLS handshake, or sent its headers, by then is
/// dropped (the API server's webhook timeout is at most 30 s).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the webhook on `listener` until the process exits; `tls` is read at every
/// accept, so a renewed certificate serves the next connection; `ca`'s roots at every
/// admission, so a rotation step reaches the next pod.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ArcSwap<rustls::ServerConfig>>,
    settings: Arc<Settings>,
    ca: Arc<Ca>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "injector accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = TlsAcceptor::from(tls.load_full());
        let settings = settings.clone();
        let ca = ca.clone();
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "injector TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "injector TLS handshake timed out");
                        return;
                    }
                };
            let svc = service_fn(move |req| {
                let (settings, ca) = (settings.clone(), ca.clone());
                async move { Ok::<_, Infallible>(handle(&settings, &ca, req).await) }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT);
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
                tracing::debug!(%peer, error = %e, "injector connection ended with an error");
            }
        });
    }
}

/// The pins a proxy injected now gets: the SHA-256 of every root of `ca`, in its order.
pub fn pins(ca: &Ca) -> Vec<String> {
    ca.status().into_iter().map(|r| r.sha256).collect()
}

async fn handle(settings: &Settings, ca: &Ca, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let query = Query::from_path(req.uri().path());
    match (req.method(), req.uri().path(), query) {
        (&Method::GET, "/healthz", _) => reply(StatusCode::OK, &json!({"status": "ok"})),
        (&Method::POST, _, Some(query)) => {
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    return error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("body over {MAX_BODY} bytes"),
                    );
                }
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
            };
            let settings = Settings {
                ca_pins: pins(ca),
                ..settings.clone()
            };
            match review::review(&body, query, &settings) {
                Ok(answer) => {
                    log(&answer);
                    reply(StatusCode::OK, &answer)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "injector: malformed AdmissionReview");
                    error(StatusCode::BAD_REQUEST, e.to_string())
                }
            }
        }
        (_, path, _) => error(
            StatusCode::NOT_FOUND,
            format!("no route {path}: the injector serves POST /inject[/namespace-enabled[/strict]] and GET /healthz"),
        ),
    }
}

/// One line per admission that changed something or said something.
fn log(answer: &Value) {
    let r = &answer["response"];
    let uid = r["uid"].as_str().unwrap_or_default();
    if r["allowed"] == false {
        tracing::warn!(uid, reason = %r["status"]["message"], "injector: pod refused (strict namespace)");
    } else if r.get("patch").is_some() {
        tracing::info!(uid, warnings = %r["warnings"], "injector: proxy injected");
    } else if let Some(w) = r.get("warnings") {
        tracing::warn!(uid, warnings = %w, "injector: pod admitted without a proxy");
    }
}

fn error(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    reply(status, &json!({"error": message}))
}

fn reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut bytes = serde_json::to_vec(body).unwrap_or_default();
    bytes.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}
