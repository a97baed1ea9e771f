//! The serde forms of the documents, as users write them. Unknown fields are rejected;
//! serialization skips empty optional fields so stored documents stay tidy.
//!
//! Field names follow Gateway API v1 (`apis/v1/httproute_types.go`) for `HTTPRoute`,
//! (`apis/v1/grpcroute_types.go`) for `GRPCRoute` ([`grpc`]), and the same camelCase
//! conventions for Tandem's own kinds ([`traffic`], [`authz`]).

mod authz;
mod grpc;
mod traffic;

pub use authz::*;
pub use grpc::*;
pub use traffic::*;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Any document, before its `spec` is read according to its `kind`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Document {
    /// `tandem.dev/v1alpha1` or `gateway.networking.k8s.io/v1`.
    pub api_version: String,
    /// `Service`, `Endpoint`, `HTTPRoute`, `GRPCRoute`, ...
    pub kind: String,
    /// Name, namespace, labels, annotations.
    #[serde(default)]
    pub metadata: Metadata,
    /// The kind's spec.
    #[serde(default)]
    pub spec: serde_json::Value,
    /// Ignored on input (as Kubernetes does); the API reports revisions here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

/// `metadata`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Name (optional for endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace (default `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels (kept, not interpreted).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations; `tandem.dev/source` names an endpoint's discovery source.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// `Service.spec`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Ports.
    #[serde(default)]
    pub ports: Vec<ServicePortSpec>,
    /// Virtual IP addresses (a Kubernetes Service's cluster IPs): connections a
    /// transparent sidecar intercepts to one of these, on one of `ports`, are for this
    /// service. Read as strings so that validation, not serde, words the error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Discover this service's endpoints through DNS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsSpec>,
    /// What the service's inbound ports accept (default: mutual TLS only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MtlsSpec>,
    /// The service accounts its workloads run as (Kubernetes discovery fills these from
    /// the pods); empty: one named after the service. Clients accept a server presenting
    /// any of them, and a proxy holding one of them may serve the service.
    #[serde(
        default,
        rename = "serviceAccounts",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_accounts: Vec<String>,
}

/// `Service.spec.mtls`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MtlsSpec {
    /// `mutual` (default), `permissive` or `disabled`. Read as a string so that
    /// validation, not serde, words the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// One entry of `Service.spec.ports`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServicePortSpec {
    /// Port number.
    pub port: u16,
    /// Optional name (a DNS label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Protocol hint.
    #[serde(default)]
    pub protocol: Protocol,
}

/// `protocol` of a service port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Detect per connection.
    #[default]
    Detect,
    /// HTTP/1.1.
    Http,
    /// HTTP/2 (h2c).
    Http2,
    /// gRPC (HTTP/2).
    Grpc,
    /// Opaque TCP.
    Tcp,
}

/// `Service.spec.dns`: either `name` + `port` (A/AAAA) or `srv` (SRV).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSpec {
    /// Host name resolved with A/AAAA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Port of the endpoints found by `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// SRV name, `_service._proto.domain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srv: Option<String>,
}

/// `Endpoint.spec`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// The service (same namespace) this endpoint is an instance of.
    pub service: String,
    /// `ip:port`.
    pub address: String,
    /// Labels (`version`, `zone`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The one port of the service this address serves (for a service with several
    /// ports whose instances listen on a different port for each); absent: all of them.
    #[serde(
        rename = "servicePort",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub service_port: Option<u16>,
}

/// `HTTPRoute.spec` (mesh form). New fields skip serialization when absent, so documents
/// stored before they existed normalize to the same JSON (re-applying them is a no-op).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteSpec {
    /// The services whose traffic the route governs.
    #[serde(default)]
    pub parent_refs: Vec<ServiceRefSpec>,
    /// Rules.
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

/// A `parentRef` or `backendRef`: a Service, possibly in another namespace.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRefSpec {
    /// `""` or `core` (default `""`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `Service` (the default for backendRefs; required to be Service for parentRefs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Service name.
    pub name: String,
    /// Namespace (default: the route's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Weight (backendRefs only; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i64>,
    /// Per-backend filters (Gateway API `HTTPBackendRef.filters`): read only so that
    /// validation can say they are not supported, instead of "unknown field".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<serde_json::Value>,
}

/// One rule of a route.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleSpec {
    /// Any one selects the rule.
    #[serde(default)]
    pub matches: Vec<MatchSpec>,
    /// Weighted destinations.
    #[serde(default)]
    pub backend_refs: Vec<ServiceRefSpec>,
    /// Filters, applied in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<FilterSpec>,
    /// Timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<TimeoutsSpec>,
    /// Retries (Gateway API `HTTPRouteRetry`, GEP-1731).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
}

/// One match of a rule.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MatchSpec {
    /// Path condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathSpec>,
    /// Header conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatchSpec>,
    /// Query parameter conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<ValueMatchSpec>,
    /// Method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// `path` of a match.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PathSpec {
    /// Match type (default `PathPrefix`).
    #[serde(default, rename = "type")]
    pub kind: PathType,
    /// Value (default `/`).
    #[serde(default = "root_path")]
    pub value: String,
}

fn root_path() -> String {
    "/".to_string()
}

/// Path match types.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum PathType {
    /// Equal.
    Exact,
    /// Segment prefix.
    #[default]
    PathPrefix,
    /// Whole-path regex.
    RegularExpression,
}

/// A header or query parameter condition.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ValueMatchSpec {
    /// Match type (default `Exact`).
    #[serde(default, rename = "type")]
    pub kind: ValueType,
    /// Header or parameter name.
    pub name: String,
    /// Value or regex.
    pub value: String,
}

/// Header and query parameter match types.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum ValueType {
    /// Equal.
    #[default]
    Exact,
    /// Whole-value regex.
    RegularExpression,
}
