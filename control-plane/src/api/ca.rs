//! The CA's roots: `GET /v1/ca/roots` (status), `POST /v1/ca/roots` (rotate: add a new,
//! not yet signing root), `POST /v1/ca/roots/<sha256-prefix>/activate` (make it sign),
//! `DELETE /v1/ca/roots/<sha256-prefix>` (stop trusting a non-signing root), and
//! `GET /v1/ca/proxies` (each scraped proxy's certificate and bundle expiry), and
//! `GET /v1/ca/bundle` (the trust bundle, PEM: the injector webhook's `caBundle`).
//!
//! CA changes write files (fsynced): they run on the blocking pool. In Kubernetes mode
//! they are written to the CA Secret, which every replica follows.

use std::sync::Arc;

use http::{Method, StatusCode};
use serde_json::json;

use super::{ApiError, ApiState, Call};
use crate::identity::ca::{Ca, CaError, RootStatus};
use crate::kubernetes::ca_secret::Step;

type Answer = Result<(StatusCode, Option<serde_json::Value>), ApiError>;

/// Dispatches `/v1/ca/...` (`rest` is what follows `ca`).
pub(super) async fn handle(state: &ApiState, call: &Call, rest: &[&str]) -> Answer {
    let m = &call.method;
    match (rest, m) {
        (["roots"], &Method::GET) => Ok((StatusCode::OK, Some(status(&state.ca)))),
        (["roots"], &Method::POST) => {
            let added = step(state, Step::Rotate, |ca| ca.rotate()).await?;
            tracing::info!(sha256 = %added.sha256, "CA: new root added to the trust bundle (not signing yet)");
            Ok((StatusCode::CREATED, Some(answer(&state.ca, "added", added))))
        }
        (["roots", prefix, "activate"], &Method::POST) => {
            let prefix = prefix.to_string();
            let signing = step(state, Step::Activate(prefix.clone()), move |ca| {
                ca.activate(&prefix)
            })
            .await?;
            tracing::info!(sha256 = %signing.sha256, "CA: root activated; new certificates chain to it");
            Ok((
                StatusCode::OK,
                Some(answer(&state.ca, "activated", signing)),
            ))
        }
        (["roots", prefix], &Method::DELETE) => {
            let prefix = prefix.to_string();
            let gone = step(state, Step::Remove(prefix.clone()), move |ca| {
                ca.remove(&prefix)
            })
            .await?;
            tracing::info!(sha256 = %gone.sha256, "CA: root removed from the trust bundle");
            Ok((StatusCode::OK, Some(answer(&state.ca, "removed", gone))))
        }
        (["bundle"], &Method::GET) => Ok((
            StatusCode::OK,
            Some(json!({"trust_bundle_pem": state.ca.trust_bundle_pem()})),
        )),
        (["proxies"], &Method::GET) => {
            let items = state.telemetry.identities(&state.store.proxies().list());
            Ok((StatusCode::OK, Some(json!({ "items": items }))))
        }
        (["roots"] | ["roots", _, "activate"] | ["roots", _] | ["proxies"] | ["bundle"], _) => {
            Err(ApiError::MethodNotAllowed)
        }
        _ => Err(ApiError::NotFound(format!("no route {}", call.path))),
    }
}

fn status(ca: &Ca) -> serde_json::Value {
    json!({"rotatable": ca.rotatable(), "roots": ca.status()})
}

fn answer(ca: &Ca, what: &str, root: RootStatus) -> serde_json::Value {
    let mut v = status(ca);
    v[what] = json!(root);
    v
}

/// A rotation step: through the CA Secret in Kubernetes mode (whichever replica takes
/// it, every replica follows), else on the local CA.
async fn step<F>(state: &ApiState, shared: Step, local: F) -> Result<RootStatus, ApiError>
where
    F: FnOnce(&Ca) -> Result<RootStatus, CaError> + Send + 'static,
{
    match &state.shared_ca {
        Some(ca) => ca.change(shared).await.map_err(ApiError::from),
        None => blocking(state, local).await,
    }
}

async fn blocking<T, F>(state: &ApiState, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Ca) -> Result<T, CaError> + Send + 'static,
{
    let ca: Arc<Ca> = state.ca.clone();
    tokio::task::spawn_blocking(move || f(&ca))
        .await
        .map_err(|e| ApiError::Internal(format!("CA task failed: {e}")))?
        .map_err(ApiError::from)
}
