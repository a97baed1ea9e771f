//! API errors, and the one place where they become HTTP statuses.

use http::StatusCode;

use crate::canary::CanaryError;
use crate::identity::ca::CaError;
use crate::identity::tokens::TokenError;
use crate::kubernetes::ca_secret::SharedCaError;
use crate::resources::ResourceError;
use crate::store::StoreError;

/// Why a request failed. [`ApiError::status`] maps each to its HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request or a document in it is invalid (400).
    #[error("{0}")]
    Invalid(String),
    /// No or wrong bearer token (401).
    #[error("missing or invalid bearer token (see DATA_DIR/admin-token)")]
    Unauthorized,
    /// No such resource, revision or route (404).
    #[error("{0}")]
    NotFound(String),
    /// The path exists but not with this method (405).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The request contradicts the store's content (409).
    #[error("{0}")]
    Conflict(String),
    /// The body is over the limit (413).
    #[error("request body over {0} bytes")]
    TooLarge(usize),
    /// The store failed; nothing was applied (500).
    #[error("{0}")]
    Internal(String),
    /// Something the request needs (the Kubernetes API) did not answer in time (503).
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<ResourceError> for ApiError {
    fn from(e: ResourceError) -> Self {
        ApiError::Invalid(e.to_string())
    }
}

impl From<CanaryError> for ApiError {
    fn from(e: CanaryError) -> Self {
        match e {
            CanaryError::UnknownService(_) | CanaryError::NotInProgress(_) => {
                ApiError::NotFound(e.to_string())
            }
            CanaryError::Invalid(m) => ApiError::Invalid(m),
            CanaryError::Conflict(m) => ApiError::Conflict(m),
        }
    }
}

impl From<crate::chaos::ChaosError> for ApiError {
    fn from(e: crate::chaos::ChaosError) -> Self {
        use crate::chaos::ChaosError;
        match e {
            ChaosError::UnknownService(_) | ChaosError::NotRunning(_) => {
                ApiError::NotFound(e.to_string())
            }
            ChaosError::Invalid(m) => ApiError::Invalid(m),
            ChaosError::Running(..) => ApiError::Conflict(e.to_string()),
        }
    }
}

impl From<crate::canary::controller::ActError> for ApiError {
    fn from(e: crate::canary::controller::ActError) -> Self {
        use crate::canary::controller::ActError;
        match e {
            ActError::Canary(e) => e.into(),
            ActError::Store(e) => e.into(),
            ActError::Invalid(m) => ApiError::Internal(m),
            ActError::Edit(e) => e.into(),
        }
    }
}

impl From<crate::edits::EditError> for ApiError {
    fn from(e: crate::edits::EditError) -> Self {
        use crate::edits::EditError;
        use crate::kubernetes::writer::WriteError;
        match e {
            EditError::Invalid(e) => {
                ApiError::Internal(format!("a planned document does not validate: {e}"))
            }
            EditError::Store(e) => e.into(),
            EditError::Cluster(e @ WriteError::Moved(_)) => ApiError::Conflict(e.to_string()),
            EditError::Cluster(e @ (WriteError::Api(_) | WriteError::NotMirroredYet(_))) => {
                tracing::warn!(error = %e, "an edit in the cluster failed");
                ApiError::Unavailable(e.to_string())
            }
            EditError::Cluster(e) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(e) => ApiError::Invalid(e.to_string()),
            StoreError::NotFound(what) => ApiError::NotFound(format!("{what} not found")),
            StoreError::Conflict(what) => ApiError::Conflict(what),
            e @ (StoreError::Db(_) | StoreError::Corrupt(_)) => {
                tracing::error!(error = %e, "store failure");
                ApiError::Internal(format!("{e}; nothing was applied"))
            }
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Invalid(m) => ApiError::Invalid(m),
            e @ TokenError::Persist { .. } => {
                tracing::error!(error = %e, "join token not persisted");
                ApiError::Internal(format!("{e}; no token was created"))
            }
        }
    }
}

impl From<SharedCaError> for ApiError {
    fn from(e: SharedCaError) -> Self {
        match e {
            SharedCaError::Ca(e) => e.into(),
            SharedCaError::Contended => ApiError::Conflict(e.to_string()),
            e @ (SharedCaError::Api(_) | SharedCaError::Invalid(_)) => {
                tracing::error!(error = %e, "CA Secret failure");
                ApiError::Internal(format!(
                    "{e}; see `tandemctl ca status` before trying again"
                ))
            }
        }
    }
}

impl From<CaError> for ApiError {
    fn from(e: CaError) -> Self {
        match e {
            CaError::NotRotatable | CaError::Refused(_) => ApiError::Conflict(e.to_string()),
            CaError::UnknownRoot(_) => ApiError::NotFound(e.to_string()),
            CaError::BadPrefix(m) => ApiError::Invalid(m),
            e @ (CaError::Io { .. }
            | CaError::Invalid { .. }
            | CaError::HalfGiven
            | CaError::Sign(_)) => {
                tracing::error!(error = %e, "CA failure");
                ApiError::Internal(format!("the CA failed: {e}"))
            }
        }
    }
}
