//! `TokenReview` (authentication.k8s.io/v1): the test registers which ServiceAccount tokens
//! are valid and for which audiences; a review answers in the real response's shape.
//!
//! As on a real server: a review without `spec.audiences` is checked against the API
//! server's own audience; a token is authenticated only for the audiences it was issued for
//! that the review asks about, and the answer's `status.audiences` is that intersection.
//! A refused token is `authenticated: false` with an `error`, still a `201 Created` review.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{json, Value};

use super::error::ApiError;

/// The audience of the API server itself, used when a review names none.
pub const API_SERVER_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// Who a registered token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Account {
    namespace: String,
    service_account: String,
    audiences: Vec<String>,
    uid: String,
}

/// The tokens a test has declared valid.
#[derive(Debug, Default)]
pub struct Tokens(Mutex<HashMap<String, Account>>);

impl Tokens {
    /// Declares `token` a token of ServiceAccount `namespace/service_account`, valid for
    /// `audiences`.
    pub fn register(
        &self,
        token: &str,
        namespace: &str,
        service_account: &str,
        audiences: &[&str],
    ) {
        let account = Account {
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
            uid: format!("sa-{namespace}-{service_account}"),
        };
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.to_string(), account);
    }

    /// Forgets `token` (a revoked or expired token).
    pub fn revoke(&self, token: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token);
    }

    /// Whether `token` is a registered token for the API server's own audience, so a client
    /// may call the API with it as a pod's ServiceAccount does.
    pub fn authenticates_api(&self, token: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .is_some_and(|a| a.audiences.iter().any(|x| x == API_SERVER_AUDIENCE))
    }

    /// Answers a `TokenReview` create request with the review and its `status`.
    pub fn review(&self, request: &Value) -> Result<Value, ApiError> {
        if !request.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        let token = request["spec"]["token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::invalid("tokenreviews", "", "spec.token: Required value"))?;
        let wanted: Vec<String> = match request["spec"]["audiences"].as_array() {
            Some(list) if !list.is_empty() => list
                .iter()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect(),
            _ => vec![API_SERVER_AUDIENCE.to_string()],
        };
        let account = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned();
        let status = match account {
            None => json!({ "authenticated": false, "user": {}, "error": "invalid bearer token" }),
            Some(a) => {
                let granted: Vec<&String> =
                    wanted.iter().filter(|w| a.audiences.contains(w)).collect();
                if granted.is_empty() {
                    json!({
                        "authenticated": false,
                        "user": {},
                        "error": format!(
                            "token audiences {:?} are invalid for the target audiences {:?}",
                            a.audiences, wanted
                        ),
                    })
                } else {
                    json!({
                        "authenticated": true,
                        "user": {
                            "username": format!("system:serviceaccount:{}:{}", a.namespace, a.service_account),
                            "uid": a.uid,
                            "groups": [
                                "system:serviceaccounts",
                                format!("system:serviceaccounts:{}", a.namespace),
                                "system:authenticated",
                            ],
                        },
                        "audiences": granted,
                    })
                }
            }
        };
        let mut review = request.clone();
        review["apiVersion"] = json!("authentication.k8s.io/v1");
        review["kind"] = json!("TokenReview");
        if !review["metadata"].is_object() {
            review["metadata"] = json!({});
        }
        review["metadata"]["creationTimestamp"] = Value::Null;
        review["status"] = status;
        Ok(review)
    }
}
