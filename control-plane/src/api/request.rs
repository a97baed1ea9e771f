//! What every handler needs from a request and from the state: the JSON body (errors
//! with the field path), a query parameter, store calls on the blocking pool (they
//! fsync), and Kubernetes mode's refusals. Kept apart from the router so that handlers
//! and router do not import each other.

use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::{ApiError, ApiState, Call};
use crate::resources::Kind;
use crate::store::{Store, StoreError};

/// The request body as `T`; an error names the field path.
pub(super) fn body<T: DeserializeOwned>(call: &Call) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(&call.body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            ApiError::Invalid(format!("body: {inner}"))
        } else {
            ApiError::Invalid(format!("{path}: {inner}"))
        }
    })
}

/// The value of query parameter `name`, as sent.
pub(super) fn query(call: &Call, name: &str) -> Option<String> {
    call.query.as_deref()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| v.to_string())
    })
}

/// Runs `f` on the store on the blocking pool.
pub(super) async fn blocking<T, F>(state: &ApiState, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
{
    let store: Arc<Store> = state.store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| ApiError::Internal(format!("store task failed: {e}")))?
        .map_err(ApiError::from)
}

/// In Kubernetes mode, the kinds mirrored from the cluster are written there, not here.
pub(super) fn cluster_owned(state: &ApiState, kind: Kind) -> Result<(), ApiError> {
    if state.kubernetes && crate::kubernetes::kinds::owned_kinds().contains(&kind) {
        return Err(ApiError::Conflict(format!(
            "{kind} is the cluster's in Kubernetes mode: change it with kubectl (the control plane mirrors it)"
        )));
    }
    Ok(())
}

/// Whole-config writes (rollback, restore) would fight the cluster's copy.
pub(super) fn refuse_in_kubernetes(state: &ApiState, what: &str) -> Result<(), ApiError> {
    if state.kubernetes {
        return Err(ApiError::Conflict(format!(
            "{what} is not available in Kubernetes mode: the cluster holds routes and policies (use kubectl, or your GitOps history)"
        )));
    }
    Ok(())
}
