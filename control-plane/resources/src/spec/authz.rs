//! `AuthorizationPolicy` (`tandem.dev/v1alpha1`) as users write it: Istio's shape, flattened
//! (`from` lists principals directly; `paths`, `methods` and `ports` sit on the rule).
//!
//! Ports are read as `i64` so that validation, not serde, says the allowed range.

use serde::{Deserialize, Serialize};

use super::TargetRefSpec;

/// `AuthorizationPolicy.spec`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    /// The protected service (same namespace); absent: every service of the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRefSpec>,
    /// `ALLOW` (default) or `DENY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<AuthzActionSpec>,
    /// Any one matching is a match; an `ALLOW` policy without rules allows nothing.
    #[serde(default)]
    pub rules: Vec<AuthzRuleSpec>,
}

/// `action` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AuthzActionSpec {
    /// Allow what the rules match (and deny the rest once any ALLOW policy applies).
    Allow,
    /// Deny what the rules match, before any allow.
    Deny,
}

/// One entry of `rules`: every non-empty list must have a matching member.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzRuleSpec {
    /// Clients, any of them (absent: anyone, authenticated or not).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<AuthzSourceSpec>,
    /// Path patterns (`/exact`, `/prefix/*`, `*.suffix`, `*`); HTTP only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Uppercase HTTP methods; HTTP only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Ports the connection reached the workload on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<i64>,
}

/// One entry of `from`: exactly one of the fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzSourceSpec {
    /// Exactly this SPIFFE ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// Any workload of this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `true`: any client with a mesh certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticated: Option<bool>,
}
