//! What users write: Kubernetes-style documents (`Service`, `Endpoint`, `HTTPRoute`,
//! `GRPCRoute`, `DestinationPolicy`, `FaultInjection`, `AuthorizationPolicy`) in YAML or JSON, validated into a normalized stored
//! form and converted to the domain types of [`tandem_xds::domain`].
//!
//! - [`spec`]: the serde forms of the documents (unknown fields rejected);
//! - [`validate`]: the rules of validity, with the field path of every violation;
//! - [`domain`]: stored documents → [`tandem_xds::domain`] types;
//! - [`status`]: Gateway API route status (`Accepted`, `ResolvedRefs`) from the mesh's state;
//! - [`duration`]: Gateway API duration strings (`1m30s`);
//! - [`clock`]: Unix seconds, and their UTC text.
//!
//! Its own crate so that both sides of the REST API share one vocabulary without `tandemctl`
//! linking the server: the control plane (`tandem-control-plane`, which re-exports this
//! crate as `tandem_control_plane::resources`) validates and stores documents, `tandemctl`
//! parses them before sending, names kinds, reads the admin token from [`TOKEN_FILE`] and
//! prints times with [`clock`]. Nothing here does I/O beyond reading the clock.

pub mod clock;
pub mod domain;
pub mod duration;
pub mod spec;
pub mod status;
pub mod validate;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use validate::{parse_text, validate_documents};

/// The admin token's file name inside the control plane's data dir: the server creates
/// `DATA_DIR/admin-token` on first start, `tandemctl` reads it from there by default.
pub const TOKEN_FILE: &str = "admin-token";

/// The `apiVersion` of Tandem's own kinds.
pub const TANDEM_API_VERSION: &str = "tandem.dev/v1alpha1";
/// The `apiVersion` of `HTTPRoute` and `GRPCRoute` (Gateway API).
pub const GATEWAY_API_VERSION: &str = "gateway.networking.k8s.io/v1";
/// Annotation naming the discovery source that owns an endpoint.
pub const SOURCE_ANNOTATION: &str = "tandem.dev/source";
/// Annotation carrying an API registration's id.
pub const REGISTRATION_ID_ANNOTATION: &str = "tandem.dev/registration-id";
/// Annotation carrying an API registration's TTL in seconds.
pub const REGISTRATION_TTL_ANNOTATION: &str = "tandem.dev/ttl-seconds";
/// HTTPRoute annotation: `"true"` lets every rule's `retry` retry non-idempotent methods
/// (`POST`, `PATCH`) too. Gateway API has no field for this, hence an annotation.
pub const NON_IDEMPOTENT_RETRY_ANNOTATION: &str = "retry.tandem.dev/non-idempotent";
/// Service annotation: where the service's workloads' proxies log the requests they
/// receive (`stdout` or an absolute path), switched on and off from the control plane
/// without restarting them. The same key as the injector's pod annotation.
pub const ACCESS_LOG_ANNOTATION: &str = "config.tandem.dev/access-log";
/// FaultInjection annotation of a chaos experiment: the service under test.
pub const CHAOS_TARGET_ANNOTATION: &str = "chaos.tandem.dev/target";
/// FaultInjection annotation of a chaos experiment: the endpoints of the service under
/// test taken out of load balancing while it exists (`ip:port`, comma list).
pub const CHAOS_EJECTED_ANNOTATION: &str = "chaos.tandem.dev/ejected";

/// The endpoints a FaultInjection document ejects ([`CHAOS_EJECTED_ANNOTATION`]).
pub fn chaos_ejected(doc: &serde_json::Value) -> Vec<String> {
    doc["metadata"]["annotations"][CHAOS_EJECTED_ANNOTATION]
        .as_str()
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The API group of Tandem's filter resources, as an `ExtensionRef` names it.
pub const TANDEM_GROUP: &str = "tandem.dev";
/// Prefix of a `GRPCRoute`'s name in [`tandem_xds::domain::MeshConfig::routes`] (and so in
/// xDS route names and the proxies' `route` metric label: `default/grpc:echo/rule-0`).
/// Both route kinds share that map; `:` is never part of a stored name (a DNS label), so
/// a GRPCRoute can never collide with an HTTPRoute of the same name.
pub const GRPC_ROUTE_PREFIX: &str = "grpc:";

/// The kinds of resource the store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// `tandem.dev/v1alpha1` `Service`.
    Service,
    /// `tandem.dev/v1alpha1` `Endpoint`.
    Endpoint,
    /// `gateway.networking.k8s.io/v1` `HTTPRoute`.
    #[serde(rename = "HTTPRoute")]
    HttpRoute,
    /// `gateway.networking.k8s.io/v1` `GRPCRoute`.
    #[serde(rename = "GRPCRoute")]
    GrpcRoute,
    /// `tandem.dev/v1alpha1` `DestinationPolicy`.
    DestinationPolicy,
    /// `tandem.dev/v1alpha1` `FaultInjection`.
    FaultInjection,
    /// `tandem.dev/v1alpha1` `AuthorizationPolicy`.
    AuthorizationPolicy,
}

impl Kind {
    /// Every kind, in store order.
    pub const ALL: [Kind; 7] = [
        Kind::Service,
        Kind::Endpoint,
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::DestinationPolicy,
        Kind::FaultInjection,
        Kind::AuthorizationPolicy,
    ];

    /// The document's `kind` field: `Service`, `Endpoint`, `HTTPRoute`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::Endpoint => "Endpoint",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::DestinationPolicy => "DestinationPolicy",
            Kind::FaultInjection => "FaultInjection",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
        }
    }

    /// The REST API's collection name: `services`, `endpoints`, `routes`, `grpcroutes`,
    /// `policies`, `faults`, `authorizationpolicies`.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Service => "services",
            Kind::Endpoint => "endpoints",
            Kind::HttpRoute => "routes",
            Kind::GrpcRoute => "grpcroutes",
            Kind::DestinationPolicy => "policies",
            Kind::FaultInjection => "faults",
            Kind::AuthorizationPolicy => "authorizationpolicies",
        }
    }

    /// The `apiVersion` its documents are stored with.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::HttpRoute | Kind::GrpcRoute => GATEWAY_API_VERSION,
            Kind::Service
            | Kind::Endpoint
            | Kind::DestinationPolicy
            | Kind::FaultInjection
            | Kind::AuthorizationPolicy => TANDEM_API_VERSION,
        }
    }

    /// The kind of a `kind` field value.
    pub fn from_kind_field(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The kind of a REST collection name (`services`) or CLI word (`service`, `svc`, `route`,
    /// `grpcroute`, `policy`, `dp`, `fault`, `authz`, ...).
    pub fn from_word(s: &str) -> Option<Kind> {
        match s.to_ascii_lowercase().as_str() {
            "services" | "service" | "svc" => Some(Kind::Service),
            "endpoints" | "endpoint" | "ep" => Some(Kind::Endpoint),
            "routes" | "route" | "httproutes" | "httproute" => Some(Kind::HttpRoute),
            "grpcroutes" | "grpcroute" => Some(Kind::GrpcRoute),
            "policies" | "policy" | "destinationpolicies" | "destinationpolicy" | "dp" => {
                Some(Kind::DestinationPolicy)
            }
            "faults" | "fault" | "faultinjections" | "faultinjection" => Some(Kind::FaultInjection),
            "authorizationpolicies"
            | "authorizationpolicy"
            | "authz"
            | "authzpolicies"
            | "authzpolicy" => Some(Kind::AuthorizationPolicy),
            _ => None,
        }
    }

    /// The REST collection names, for messages: `services, endpoints, ... or faults`.
    pub fn plurals_hint() -> String {
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.plural()).collect();
        match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.join(""),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A resource's identity in the store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ResourceKey {
    /// Kind.
    pub kind: Kind,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ResourceKey {
    /// A key.
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ResourceKey {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ResourceKey {
    /// `HTTPRoute default/reviews-split`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// A validated document in its normalized form: namespace and name filled in, defaults
/// applied, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// Identity.
    pub key: ResourceKey,
    /// The normalized document (`apiVersion`, `kind`, `metadata`, `spec`).
    pub doc: serde_json::Value,
}

/// A document that is not valid, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ResourceError {
    /// Field path, e.g. `documents[2].spec.rules[0].backendRefs[1].weight`.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

impl ResourceError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        ResourceError {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// The name of an endpoint that names none: `<service>-<address>` with every character
/// other than `[a-z0-9]` turned into `-` (`reviews-v1-127-0-0-1-9081`).
pub fn derived_endpoint_name(service: &str, address: &std::net::SocketAddr) -> String {
    let addr: String = address
        .to_string()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let addr = addr.trim_matches('-');
    format!("{service}-{addr}")
}
