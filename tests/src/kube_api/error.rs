//! API errors and their wire form, the `Status` object: one place decides the HTTP code and
//! `reason` a client sees, so kube-rs's `ErrorResponse` and kubectl read what a real API
//! server would send.

use serde_json::{json, Value};

/// A failed API request: the HTTP code, the machine-readable `reason` and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code (also `Status.code`).
    pub code: u16,
    /// `Status.reason` (`NotFound`, `Conflict`, ...).
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// `Status.details`: the object's name and kind, when one is concerned.
    details: Option<(String, String)>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String) -> Self {
        Self {
            code,
            reason,
            message,
            details: None,
        }
    }

    fn about(mut self, plural: &str, name: &str) -> Self {
        self.details = Some((plural.to_string(), name.to_string()));
        self
    }

    /// 404: no object `name` of type `plural`.
    pub fn not_found(plural: &str, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{plural} \"{name}\" not found")).about(plural, name)
    }

    /// 404 for a path the server does not serve.
    pub fn no_route(path: &str) -> Self {
        Self::new(404, "NotFound", format!("the server could not find {path}"))
    }

    /// 404 for a type the server does not serve (`apiVersion` and plural).
    pub fn unknown_type(api_version: &str, plural: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server does not serve {plural} in {api_version}"),
        )
    }

    /// 409: creating an object whose name is taken.
    pub fn already_exists(plural: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{plural} \"{name}\" already exists"),
        )
        .about(plural, name)
    }

    /// 409: an update whose `resourceVersion` is not the stored one (optimistic concurrency).
    pub fn conflict(plural: &str, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "cannot update {plural} \"{name}\": its resourceVersion changed since it was \
                 read; read it again and retry"
            ),
        )
        .about(plural, name)
    }

    /// 422: the object is malformed (a bad name, a missing required field).
    pub fn invalid(plural: &str, name: &str, why: impl Into<String>) -> Self {
        Self::new(
            422,
            "Invalid",
            format!("{plural} \"{name}\" is invalid: {}", why.into()),
        )
        .about(plural, name)
    }

    /// 400: the request itself is malformed.
    pub fn bad_request(why: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", why.into())
    }

    /// 401: no valid bearer token.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized".to_string())
    }

    /// 405: the verb is not served for this path.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported on {path}"),
        )
    }

    /// 410: the requested resourceVersion has been compacted away.
    pub fn expired(requested: u64, oldest: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {requested} (oldest kept: {oldest})"),
        )
    }

    /// 415: a body or patch type the server does not read.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format: {content_type}"),
        )
    }

    /// The `Status` object sent as the response body (or inside a watch `ERROR` event).
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some((kind, name)) = &self.details {
            status["details"] = json!({ "name": name, "kind": kind });
        }
        status
    }
}
