//! The REST API (JSON over HTTP/1.1, bearer token), as `tandemctl` uses it.
//!
//! [`serve`] accepts connections; every request is authenticated, its body read within
//! [`MAX_BODY`], then routed by [`routes`]; errors become statuses in [`error`] only.
//! The one exception is the web page ([`web`]: `GET /` and `/ui/...`), read-only,
//! answered before the token check.

mod ca;
pub(crate) mod canary;
mod chaos;
pub mod error;
mod request;
mod routes;
pub(crate) mod stat;
mod tokens;
pub(crate) mod web;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub use error::ApiError;

use crate::auth::AdminToken;
use crate::discovery::registrations::Registrations;
use crate::identity::ca::Ca;
use crate::identity::tokens::JoinTokens;
use crate::store::Store;
use crate::telemetry::Telemetry;

/// Largest accepted request body: 4 MiB.
pub const MAX_BODY: usize = 4 << 20;

/// What the API serves from.
#[derive(Debug)]
pub struct ApiState {
    /// The store.
    pub store: Arc<Store>,
    /// The admin token every request must carry.
    pub token: AdminToken,
    /// Endpoint registrations (TTL + heartbeat).
    pub registrations: Arc<Registrations>,
    /// The proxies' metrics, as scraped (canary status).
    pub telemetry: Arc<Telemetry>,
    /// Join tokens (`POST /v1/tokens` creates one).
    pub tokens: Arc<JoinTokens>,
    /// The CA (`/v1/ca/...`: root status and rotation).
    pub ca: Arc<Ca>,
    /// The guarded-canary controller's latest judgements (`canary status`).
    pub judgements: Arc<crate::canary::controller::Judgements>,
    /// How each chaos experiment stands or ended (`chaos status`).
    pub chaos: Arc<crate::chaos::controller::Verdicts>,
    /// Kubernetes mode with the CA in its Secret: rotation steps go through the Secret
    /// (every replica follows it), not to `ca` directly.
    pub shared_ca: Option<Arc<crate::kubernetes::ca_secret::SharedCa>>,
    /// Kubernetes mode: routes and policies are the cluster's, and writes of them here
    /// are refused.
    pub kubernetes: bool,
    /// Where canary and chaos edits go (the cluster in Kubernetes mode).
    pub edits: crate::edits::Edits,
}

/// Serves the API on `listener` until the process exits.
pub async fn serve(listener: TcpListener, state: Arc<ApiState>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "api accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "api connection ended with an error");
            }
        });
    }
}

/// A request with its body read.
pub(crate) struct Call {
    pub method: http::Method,
    pub path: String,
    pub query: Option<String>,
    pub body: Bytes,
}

async fn handle(state: &ApiState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    // Before the token check: the page must load for someone without the token, and it
    // can only be read (any method but GET there is a 405).
    let (method, uri) = (req.method(), req.uri());
    if let Some(page) = web::serve(state, method, uri.path(), uri.query()).await {
        return page;
    }
    match handle_inner(state, req).await {
        Ok((status, body)) => json(status, body),
        Err(e) => {
            let status = e.status();
            json(status, Some(serde_json::json!({"error": e.to_string()})))
        }
    }
}

async fn handle_inner(
    state: &ApiState,
    req: Request<Incoming>,
) -> Result<(StatusCode, Option<serde_json::Value>), ApiError> {
    if !state.token.verify(req.headers().get(header::AUTHORIZATION)) {
        return Err(ApiError::Unauthorized);
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ApiError::TooLarge(MAX_BODY));
    }
    let (parts, body) = req.into_parts();
    let body = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::TooLarge(MAX_BODY)
            } else {
                ApiError::Invalid(format!("reading the body: {e}"))
            }
        })?
        .to_bytes();
    let call = Call {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        body,
    };
    routes::route(state, call).await
}

fn json(status: StatusCode, body: Option<serde_json::Value>) -> Response<Full<Bytes>> {
    let bytes = match body {
        Some(v) => {
            let mut b = serde_json::to_vec_pretty(&v).unwrap_or_default();
            b.push(b'\n');
            Bytes::from(b)
        }
        None => Bytes::new(),
    };
    let mut r = Response::new(Full::new(bytes));
    *r.status_mut() = status;
    if status != StatusCode::NO_CONTENT {
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
    }
    r
}
