//! Workload identity: the mesh's CA ([`ca`]), join tokens ([`tokens`]) and the identity
//! endpoint that turns a token plus a CSR into a short-lived certificate ([`server`]).
//!
//! Request path: `POST /v1/certificates` on the TLS 1.3 identity endpoint → an
//! [`Authenticator`] turns the credential into the one [`SpiffeId`] it may obtain → the
//! CSR's signature is verified and any identity it asks for must be exactly that one →
//! [`ca::Ca`] signs. Errors become HTTP statuses in [`IdentityError::status`] only.

pub mod ca;
pub mod roots;
pub mod server;
pub mod tokens;

use std::fmt;

use http::StatusCode;

/// The default trust domain.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// A SPIFFE ID of the mesh's shape: `spiffe://<trust-domain>/ns/<namespace>/sa/<account>`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpiffeId {
    /// The trust domain.
    pub trust_domain: String,
    /// The namespace.
    pub namespace: String,
    /// The service account (standalone: the service name).
    pub service_account: String,
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&tandem_xds::domain::account_spiffe_id(
            &self.trust_domain,
            &self.namespace,
            &self.service_account,
        ))
    }
}

/// Turns a credential presented to the identity endpoint into the one identity it may
/// obtain. Join tokens ([`tokens::JoinTokens`]) are the standalone implementation;
/// Kubernetes ServiceAccount tokens checked by TokenReview
/// ([`crate::kubernetes::token_review`]) the cluster's.
pub trait Authenticator: Send + Sync + 'static {
    /// The identity `credential` entitles its bearer to, at Unix time `now`.
    fn authenticate(
        &self,
        credential: &str,
        now: u64,
    ) -> impl std::future::Future<Output = Result<SpiffeId, IdentityError>> + Send;
}

/// Why the identity endpoint refused or failed. [`IdentityError::status`] is the one
/// place these become HTTP statuses.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The request is not understood: bad JSON, malformed or badly signed CSR (400).
    #[error("{0}")]
    BadRequest(String),
    /// The credential is unknown, expired or malformed (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// The credential is valid but does not entitle to what the CSR asks for (403).
    #[error("{0}")]
    Forbidden(String),
    /// Wrong path or method (404/405 folded into 404: nothing else is served).
    #[error("{0}")]
    NotFound(String),
    /// The body is over the limit (413).
    #[error("request body over {0} bytes")]
    TooLarge(usize),
    /// A service the check depends on (the Kubernetes API's TokenReview) cannot answer
    /// now (503: retry).
    #[error("{0}")]
    Unavailable(String),
    /// Signing or persisting failed (500).
    #[error("{0}")]
    Internal(String),
}

impl IdentityError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            IdentityError::BadRequest(_) => StatusCode::BAD_REQUEST,
            IdentityError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            IdentityError::Forbidden(_) => StatusCode::FORBIDDEN,
            IdentityError::NotFound(_) => StatusCode::NOT_FOUND,
            IdentityError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            IdentityError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            IdentityError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<ca::CaError> for IdentityError {
    fn from(e: ca::CaError) -> Self {
        tracing::error!(error = %e, "CA failure");
        IdentityError::Internal(format!("the CA failed: {e}"))
    }
}
