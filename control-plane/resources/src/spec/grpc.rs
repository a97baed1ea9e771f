//! `GRPCRoute` as users write it (Gateway API v1, `apis/v1/grpcroute_types.go`), mesh form.
//!
//! Parent and backend references, header matches and filters have the same shapes as in
//! `HTTPRoute`, so they reuse [`ServiceRefSpec`], [`ValueMatchSpec`] and [`FilterSpec`];
//! validation narrows the filter types to the four GRPCRoute allows. GRPCRoute has no
//! `timeouts` or `retry` in Gateway API, so neither is read here (unknown fields).

use serde::{Deserialize, Serialize};

use super::{FilterSpec, ServiceRefSpec, ValueMatchSpec};

/// `GRPCRoute.spec` (mesh form: `parentRefs` are Services).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrpcRouteSpec {
    /// The services whose traffic the route governs.
    #[serde(default)]
    pub parent_refs: Vec<ServiceRefSpec>,
    /// Read only so that validation can reject it with a reason (a mesh route is selected
    /// by its parent Service, not by host name), as a clearer error than "unknown field".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostnames: Option<serde_json::Value>,
    /// Rules.
    #[serde(default)]
    pub rules: Vec<GrpcRuleSpec>,
}

/// One rule of a `GRPCRoute` (Gateway API `GRPCRouteRule`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrpcRuleSpec {
    /// Any one selects the rule; none matches every request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<GrpcMatchSpec>,
    /// Filters: `RequestHeaderModifier`, `ResponseHeaderModifier`, `RequestMirror`,
    /// `ExtensionRef`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<FilterSpec>,
    /// Weighted destinations.
    #[serde(default)]
    pub backend_refs: Vec<ServiceRefSpec>,
}

/// One match of a rule (Gateway API `GRPCRouteMatch`): every condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcMatchSpec {
    /// Service and method condition (absent: every service and method).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<GrpcMethodMatchSpec>,
    /// Header conditions (`type` `Exact`, the default, or `RegularExpression`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatchSpec>,
}

/// `method` of a match (Gateway API `GRPCMethodMatch`): at least one of `service` and
/// `method`; an absent or empty one matches anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcMethodMatchSpec {
    /// Match type (default `Exact`).
    #[serde(default, rename = "type")]
    pub kind: GrpcMethodMatchType,
    /// Fully qualified service, e.g. `grpc.health.v1.Health` (or a regex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Method, e.g. `Check` (or a regex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// How `service` and `method` are compared (Gateway API `GRPCMethodMatchType`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum GrpcMethodMatchType {
    /// Equal, case-sensitive.
    #[default]
    Exact,
    /// Whole-name regular expression (RE2 syntax, the `regex` crate).
    RegularExpression,
}
