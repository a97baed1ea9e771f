//! `POST /v1/tokens`: creates a join token for one service's identity.

use http::StatusCode;
use serde::Deserialize;
use tandem_xds::domain::DEFAULT_NAMESPACE;

use super::request::body;
use super::{ApiError, ApiState, Call};
use crate::identity::tokens::DEFAULT_TTL;
use crate::resources::clock::unix_now;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    service: String,
    #[serde(default)]
    namespace: Option<String>,
    /// A duration such as `1h` or `30m` (Gateway API syntax).
    #[serde(default)]
    ttl: Option<String>,
}

/// Creates a token; the answer is the only place its text ever appears.
pub(super) async fn create(
    state: &ApiState,
    call: &Call,
) -> Result<(StatusCode, Option<serde_json::Value>), ApiError> {
    let req: CreateRequest = body(call)?;
    let ttl = match &req.ttl {
        Some(t) => crate::resources::duration::parse(t).map_err(ApiError::Invalid)?,
        None => DEFAULT_TTL,
    };
    let namespace = req
        .namespace
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    let tokens = state.tokens.clone();
    // The token file is fsynced: off the async workers.
    let created = tokio::task::spawn_blocking(move || {
        tokens.create(&namespace, &req.service, ttl, unix_now())
    })
    .await
    .map_err(|e| ApiError::Internal(format!("token task failed: {e}")))??;
    let value = serde_json::to_value(created).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((StatusCode::CREATED, Some(value)))
}
