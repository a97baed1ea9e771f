//! Tandem's domain config types, independent of any wire format.
//!
//! The control plane validates what users write (YAML/JSON, Kubernetes style) into these
//! types; `convert` turns a [`MeshConfig`] into xDS resources, and the proxy turns xDS
//! resources it receives back into a [`ProxyView`]. Protobuf never appears here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod observe;
mod security;
mod traffic;

pub use observe::*;
pub use security::*;
pub use traffic::*;

/// The namespace used when a resource names none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The DNS suffix of fully qualified service names (`reviews.default.svc.cluster.local`).
pub const CLUSTER_DOMAIN: &str = "svc.cluster.local";

/// A service's identity: name and namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceRef {
    /// Namespace (default `default`).
    pub namespace: String,
    /// Name, DNS-label-like.
    pub name: String,
}

impl ServiceRef {
    /// A reference to `name` in `namespace`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ServiceRef {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// `name.namespace.svc.cluster.local`: the name of its xDS cluster and route config.
    pub fn fqdn(&self) -> String {
        format!("{}.{}.{}", self.name, self.namespace, CLUSTER_DOMAIN)
    }

    /// The xDS name of the cluster and route config of this service's `port`, for a
    /// service with several ports (`name.namespace.svc.cluster.local:8080`, the name a
    /// proxyless gRPC client dials); a service with one port uses [`ServiceRef::fqdn`].
    pub fn port_name(&self, port: u16) -> String {
        format!("{}:{port}", self.fqdn())
    }

    /// Every name a client may use for the service, shortest first: `name` (only in the
    /// default namespace), `name.namespace`, `name.namespace.svc`, the FQDN. These are
    /// its xDS listener names (so `xds:///name` works for proxyless gRPC).
    pub fn aliases(&self) -> Vec<String> {
        let mut names = Vec::with_capacity(4);
        if self.namespace == DEFAULT_NAMESPACE {
            names.push(self.name.clone());
        }
        names.push(format!("{}.{}", self.name, self.namespace));
        names.push(format!("{}.{}.svc", self.name, self.namespace));
        names.push(self.fqdn());
        names
    }
}

/// The protocol a service port speaks (a hint: detection still runs where unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppProtocol {
    /// Unknown: detect per connection.
    #[default]
    Detect,
    /// HTTP/1.1.
    Http,
    /// HTTP/2 (h2c); gRPC is HTTP/2.
    Http2,
    /// Opaque TCP (server-speaks-first protocols included).
    Tcp,
}

/// One port of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    /// Optional port name.
    pub name: Option<String>,
    /// Port number.
    pub port: u16,
    /// Protocol hint.
    pub protocol: AppProtocol,
}

/// A service: a name in a namespace, its ports, and nothing about where it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Identity.
    pub id: ServiceRef,
    /// Ports (may be empty: a virtual service reached only through routes).
    pub ports: Vec<ServicePort>,
    /// What its inbound ports accept (and so whether clients originate mutual TLS).
    #[serde(default)]
    pub tls_mode: TlsMode,
    /// Virtual addresses (a Kubernetes cluster IP, Tandem's `spec.addresses`): a
    /// connection a transparent sidecar intercepts to one of these, on one of `ports`, is
    /// for this service.
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
    /// The service accounts its workloads run as (Kubernetes: the pods' ServiceAccounts);
    /// empty: one account named after the service (standalone). A client accepts a server
    /// presenting any of them, and a proxy authenticated as one may serve this service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    /// Where its workloads' proxies log the requests they receive (`None`: as each
    /// proxy's own flags say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLogTarget>,
}

impl Service {
    /// The service accounts its workloads run as: [`Service::service_accounts`], or the
    /// service's own name when none are listed.
    pub fn accounts(&self) -> Vec<&str> {
        if self.service_accounts.is_empty() {
            vec![self.id.name.as_str()]
        } else {
            self.service_accounts.iter().map(String::as_str).collect()
        }
    }

    /// Whether each of its ports is a cluster and route config of its own
    /// ([`ServiceRef::port_name`]): a service with several ports, whose endpoints may
    /// listen on a different port for each.
    pub fn per_port(&self) -> bool {
        self.ports.len() > 1
    }
}

/// One instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The service it belongs to.
    pub service: ServiceRef,
    /// Where it listens.
    pub address: SocketAddr,
    /// Labels (`version: v2`, `topology.kubernetes.io/zone: a`, ...).
    pub labels: BTreeMap<String, String>,
    /// The one service port it serves (a Kubernetes Service port whose target port is
    /// `address`'s); `None`: every port of the service, at `address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_port: Option<u16>,
}

impl Endpoint {
    /// The zone label, used as the xDS locality.
    pub fn zone(&self) -> Option<&str> {
        self.labels
            .get("topology.kubernetes.io/zone")
            .or_else(|| self.labels.get("zone"))
            .map(String::as_str)
    }
}

/// How a string is matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type", content = "value")]
pub enum StringMatch {
    /// Equal.
    Exact(String),
    /// A linear-time (RE2 syntax) regular expression that must match the whole value.
    Regex(String),
}

/// How the request path is matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type", content = "value")]
pub enum PathMatch {
    /// Equal.
    Exact(String),
    /// Prefix on `/`-separated segments (Gateway API `PathPrefix`): `/a` matches `/a` and
    /// `/a/b` but not `/ab`.
    Prefix(String),
    /// Whole-path regular expression (RE2 syntax).
    Regex(String),
}

impl Default for PathMatch {
    fn default() -> Self {
        PathMatch::Prefix("/".to_string())
    }
}

/// A header (or query parameter) that must be present with a matching value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueMatch {
    /// Header name (lowercase) or query parameter name (case-sensitive).
    pub name: String,
    /// The value match.
    pub value: StringMatch,
}

/// One way a request can select a rule; all given conditions must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RouteMatch {
    /// Path condition (default: prefix `/`).
    pub path: PathMatch,
    /// Header conditions.
    pub headers: Vec<ValueMatch>,
    /// Query parameter conditions.
    pub query_params: Vec<ValueMatch>,
    /// Method condition (`GET`, ...).
    pub method: Option<String>,
}

/// A weighted destination of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    /// The backend service.
    pub service: ServiceRef,
    /// Port on the backend: selects its cluster when it has several ports (see
    /// `convert::to_xds`); a service with one port is one cluster whatever the port.
    pub port: Option<u16>,
    /// Relative weight; 0 means deployed but receiving no traffic.
    pub weight: u32,
}

/// One rule of a route: conditions and where matching requests go.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RouteRule {
    /// Any one of these selects the rule (empty: matches everything).
    pub matches: Vec<RouteMatch>,
    /// Weighted destinations (empty or all-zero weights: 500, as in Gateway API).
    pub backends: Vec<Backend>,
    /// Filters.
    pub filters: RouteFilters,
    /// Timeouts.
    pub timeouts: RouteTimeouts,
    /// Retries beyond the always-on retry of requests never written upstream.
    pub retry: Option<RetryPolicy>,
}

/// A Gateway API `HTTPRoute` in its mesh form: rules for traffic addressed to its parents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRoute {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The services whose traffic this route governs.
    pub parents: Vec<ServiceRef>,
    /// The ports a parent's traffic is governed on (Gateway API `parentRef.port`); a
    /// parent absent here: all of its ports.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parent_ports: BTreeMap<ServiceRef, BTreeSet<u16>>,
    /// Rules in the order written.
    pub rules: Vec<RouteRule>,
    /// The revision that first created this route: older routes win precedence ties, as
    /// Gateway API orders by creation time.
    pub created: u64,
}

impl HttpRoute {
    /// Whether this route governs `parent`'s traffic on `port` (`None`: traffic to the
    /// service whatever its port, as for a service with at most one port).
    pub fn governs(&self, parent: &ServiceRef, port: Option<u16>) -> bool {
        self.parents.contains(parent)
            && match (self.parent_ports.get(parent), port) {
                (Some(ports), Some(port)) => ports.contains(&port),
                _ => true,
            }
    }
}

/// Everything the mesh knows at one revision: the input to xDS generation.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MeshConfig {
    /// Services by identity.
    pub services: BTreeMap<ServiceRef, Service>,
    /// Endpoints, grouped by service, in address order.
    pub endpoints: BTreeMap<ServiceRef, Vec<Endpoint>>,
    /// Routes by (namespace, name).
    pub routes: BTreeMap<(String, String), HttpRoute>,
    /// Destination policies by (namespace, name); the oldest wins where two target one
    /// service (the control plane rejects that at apply time).
    pub policies: BTreeMap<(String, String), DestinationPolicy>,
    /// `FaultInjection`s by (namespace, name), referenced from route filters.
    pub faults: BTreeMap<(String, String), FaultInjection>,
    /// `AuthorizationPolicy`s by (namespace, name).
    #[serde(default)]
    pub authz: BTreeMap<(String, String), AuthorizationPolicy>,
    /// Trust domain, trusted roots and the default authorization action.
    #[serde(default)]
    pub security: MeshSecurity,
}

/// A rule's destination as the proxy sees it: an xDS cluster name and a weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterWeight {
    /// xDS cluster name.
    pub cluster: String,
    /// Relative weight (0: no traffic).
    pub weight: u32,
}

/// A path change as the proxy applies it (xDS `path_redirect` / `regex_rewrite`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathRewrite {
    /// The path becomes this value.
    Full(String),
    /// Every match of `pattern` (RE2) in the path is replaced by `substitution`, in which
    /// `\1`… name capture groups (RE2 style, as Envoy writes them).
    Regex {
        /// Pattern.
        pattern: String,
        /// Replacement.
        substitution: String,
    },
}

/// A redirect as the proxy answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyRedirect {
    /// New scheme.
    pub scheme: Option<String>,
    /// New host.
    pub host: Option<String>,
    /// New port.
    pub port: Option<u16>,
    /// New path.
    pub path: Option<PathRewrite>,
    /// Status code.
    pub status: u16,
}

/// A mirror as the proxy sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyMirror {
    /// The shadow cluster.
    pub cluster: String,
    /// Share of requests mirrored.
    pub fraction: Fraction,
}

/// Retries as the proxy applies them (xDS `RetryPolicy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyRetry {
    /// Retries after the first attempt.
    pub attempts: u32,
    /// Retried statuses (connection failures always are).
    pub codes: Vec<u16>,
    /// Base backoff (jittered, doubling per retry).
    pub backoff_base: Duration,
    /// Longest backoff.
    pub backoff_max: Duration,
    /// Retry only `GET`, `HEAD`, `OPTIONS`, `PUT`, `DELETE`, `TRACE`.
    pub idempotent_only: bool,
}

/// One routing entry as the proxy evaluates it: first entry that matches wins.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProxyRoute {
    /// Route name (for metrics: `route` label), e.g. `default/reviews-split/rule-0`.
    pub name: String,
    /// The condition (one match; a rule with several matches becomes several routes).
    pub matches: RouteMatch,
    /// Weighted destinations; empty means answer 500 (no backend).
    pub clusters: Vec<ClusterWeight>,
    /// Request header changes.
    pub request_headers: HeaderModifier,
    /// Response header changes.
    pub response_headers: HeaderModifier,
    /// Answer with a redirect instead of forwarding.
    pub redirect: Option<ProxyRedirect>,
    /// New `Host` before forwarding.
    pub host_rewrite: Option<String>,
    /// New path before forwarding.
    pub path_rewrite: Option<PathRewrite>,
    /// Shadow copies.
    pub mirrors: Vec<ProxyMirror>,
    /// Injected faults.
    pub fault: Option<FaultInjection>,
    /// Whole-request timeout (`None`: the proxy's default).
    pub timeout: Option<Duration>,
    /// Per-attempt timeout.
    pub per_try_timeout: Option<Duration>,
    /// Retries.
    pub retry: Option<ProxyRetry>,
}

/// A cluster as the proxy sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProxyCluster {
    /// Upstream protocol hint.
    pub protocol: AppProtocol,
    /// Endpoint addresses with their zone, if any.
    pub endpoints: Vec<SocketAddr>,
    /// How it is called.
    pub policy: CallPolicy,
    /// Mutual TLS to its endpoints (`None`: plaintext).
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
}

/// Everything a proxy needs, decoded from xDS resources (or built from a static file).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProxyView {
    /// Listener (service alias) name → route config name.
    pub listeners: BTreeMap<String, String>,
    /// Route config name → routes in evaluation order (Gateway API precedence applied).
    pub route_configs: BTreeMap<String, Vec<ProxyRoute>>,
    /// Cluster name → cluster.
    pub clusters: BTreeMap<String, ProxyCluster>,
    /// This workload's inbound side (only on a stream authenticated as the workload).
    #[serde(default)]
    pub inbound: Option<InboundPolicy>,
    /// The roots to trust (`None`: none announced; the proxy keeps what its CA gave it).
    #[serde(default)]
    pub trust_bundle: Option<TrustBundle>,
    /// Services' virtual `address:port`s, for connections a transparent sidecar
    /// intercepts (xDS: listeners with an address that is not bound).
    #[serde(default)]
    pub addresses: BTreeMap<SocketAddr, AddressTarget>,
}

/// What an intercepted connection to a service's virtual `address:port` is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressTarget {
    /// The port's protocol: HTTP routes, opaque TCP goes to `cluster`, detect tries HTTP
    /// first.
    pub protocol: AppProtocol,
    /// The route configuration HTTP requests take (`None` for an opaque TCP port).
    pub route_config: Option<String>,
    /// The cluster opaque TCP goes to (`None` for an HTTP-only port).
    pub cluster: Option<String>,
}

/// The xDS name of the listener for a service's virtual `address:port`, as Istio names
/// its outbound listeners (`10.96.0.10_8080`).
pub fn address_listener_name(addr: SocketAddr) -> String {
    format!("{}_{}", addr.ip(), addr.port())
}
