//! Zero-trust domain types: TLS modes, authorization policies and the trust bundle.
//!
//! The control plane validates `AuthorizationPolicy` resources and service TLS modes into
//! these; `convert` carries them as standard Envoy resources (an upstream TLS transport
//! socket per cluster, one inbound `Listener` per workload holding its TLS mode and RBAC
//! filters, and an SDS `Secret` named [`TRUST_BUNDLE_SECRET`] with the trusted roots).

use serde::{Deserialize, Serialize};

use super::{AccessLogTarget, ServiceRef};

/// The SDS secret that carries the mesh's trusted roots (Istio's name for the same thing,
/// so Envoy configs read familiarly).
pub const TRUST_BUNDLE_SECRET: &str = "ROOTCA";

/// The SDS secret name a cluster or listener uses for the workload's own certificate. The
/// proxy holds its key itself and never receives this secret over xDS; the name only says
/// "the workload certificate" in the Envoy resources.
pub const WORKLOAD_CERT_SECRET: &str = "default";

/// The prefix of every inbound listener name.
pub const INBOUND_LISTENER_PREFIX: &str = "inbound|";

/// The name of a workload's inbound listener: `inbound|<namespace>|<name>`. Served only to
/// an xDS stream authenticated as that workload.
pub fn inbound_listener_name(service: &ServiceRef) -> String {
    format!(
        "{INBOUND_LISTENER_PREFIX}{}|{}",
        service.namespace, service.name
    )
}

/// Whether a listener name is an inbound listener's (starts with
/// [`INBOUND_LISTENER_PREFIX`]), well formed or not: such a listener is never served to
/// another workload, nor decoded as an outbound one.
pub fn is_inbound_listener(name: &str) -> bool {
    name.starts_with(INBOUND_LISTENER_PREFIX)
}

/// The service an inbound listener name belongs to (the inverse of
/// [`inbound_listener_name`]).
pub fn inbound_listener_service(name: &str) -> Option<ServiceRef> {
    let rest = name.strip_prefix(INBOUND_LISTENER_PREFIX)?;
    let (ns, svc) = rest.split_once('|')?;
    if ns.is_empty() || svc.is_empty() || svc.contains('|') {
        return None;
    }
    Some(ServiceRef::new(ns, svc))
}

/// The SPIFFE ID of a service's workloads: `spiffe://<trust-domain>/ns/<ns>/sa/<name>`
/// (standalone workloads run as a service account named after their service).
pub fn spiffe_id(trust_domain: &str, service: &ServiceRef) -> String {
    account_spiffe_id(trust_domain, &service.namespace, &service.name)
}

/// The SPIFFE ID of service account `account` of `namespace`.
pub fn account_spiffe_id(trust_domain: &str, namespace: &str, account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{account}")
}

/// The namespace a SPIFFE ID of the form `spiffe://<td>/ns/<ns>/sa/<sa>` names.
pub fn spiffe_namespace(id: &str) -> Option<&str> {
    let path = id.strip_prefix("spiffe://")?.split_once('/')?.1;
    let rest = path.strip_prefix("ns/")?;
    let (ns, tail) = rest.split_once('/')?;
    tail.starts_with("sa/").then_some(ns)
}

/// How a service's inbound port treats plaintext and TLS connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Only mutual TLS 1.3 from a workload of the mesh; plaintext is refused.
    #[default]
    Mutual,
    /// Both accepted (migration); metrics tell which each request used.
    Permissive,
    /// Plaintext only; clients do not originate TLS to it.
    Disabled,
}

impl TlsMode {
    /// The lowercase name, as written in resources.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Mutual => "mutual",
            TlsMode::Permissive => "permissive",
            TlsMode::Disabled => "disabled",
        }
    }
}

/// What a mesh does with a request no `ALLOW` policy speaks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthzDefault {
    /// Everything not denied is allowed unless the service has `ALLOW` policies.
    #[default]
    Allow,
    /// Only what an `ALLOW` policy allows.
    Deny,
}

/// What a policy does with the requests its rules match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AuthzAction {
    /// Allow them (and, once a service has one, deny what no allow rule matches).
    #[default]
    Allow,
    /// Deny them; evaluated before any allow.
    Deny,
}

/// A client a rule names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type", content = "value")]
pub enum Principal {
    /// Exactly this SPIFFE ID.
    Identity(String),
    /// Any workload whose SPIFFE ID names this namespace.
    Namespace(String),
    /// Any authenticated client (mutual TLS with a mesh certificate).
    Authenticated,
}

/// A path pattern: `*` alone matches any path, `/api/*` is a prefix, `*.js` a suffix,
/// anything else must be equal (Istio's rule).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type", content = "value")]
pub enum PathPattern {
    /// Any path.
    Any,
    /// Equal.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Ends with.
    Suffix(String),
}

impl PathPattern {
    /// Parses the pattern syntax described on the type.
    pub fn parse(s: &str) -> PathPattern {
        if s == "*" {
            PathPattern::Any
        } else if let Some(p) = s.strip_suffix('*') {
            PathPattern::Prefix(p.to_string())
        } else if let Some(p) = s.strip_prefix('*') {
            PathPattern::Suffix(p.to_string())
        } else {
            PathPattern::Exact(s.to_string())
        }
    }

    /// Whether `path` (without the query) matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Any => true,
            PathPattern::Exact(p) => path == p,
            PathPattern::Prefix(p) => path.starts_with(p.as_str()),
            PathPattern::Suffix(p) => path.ends_with(p.as_str()),
        }
    }
}

/// One rule: every non-empty list must have a member that matches (an empty list matches
/// anything), so `from: [ns a], methods: [GET]` means "GET from namespace a".
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AuthzRule {
    /// Clients (any of them).
    pub from: Vec<Principal>,
    /// Request paths (HTTP only).
    pub paths: Vec<PathPattern>,
    /// Request methods, uppercase (HTTP only).
    pub methods: Vec<String>,
    /// Ports the connection reached the proxy on.
    pub ports: Vec<u16>,
}

impl AuthzRule {
    /// Whether the rule only makes sense for HTTP (names paths or methods).
    pub fn is_http_only(&self) -> bool {
        !self.paths.is_empty() || !self.methods.is_empty()
    }
}

/// A Tandem `AuthorizationPolicy` (`tandem.dev/v1alpha1`): who may call a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationPolicy {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The service it protects; `None`: every service of its namespace.
    pub target: Option<ServiceRef>,
    /// Allow or deny.
    pub action: AuthzAction,
    /// Rules; any one matching is a match. An `ALLOW` policy without rules allows nothing
    /// (and so denies everything not allowed elsewhere).
    pub rules: Vec<AuthzRule>,
}

impl AuthorizationPolicy {
    /// Whether it applies to `service`.
    pub fn applies_to(&self, service: &ServiceRef) -> bool {
        match &self.target {
            Some(t) => t == service,
            None => self.namespace == service.namespace,
        }
    }
}

/// Mesh-wide security settings, from the control plane's flags and CA.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MeshSecurity {
    /// SPIFFE trust domain (`cluster.local`).
    pub trust_domain: String,
    /// What happens to requests no policy allows when a service has no `ALLOW` policy.
    pub default_action: AuthzDefault,
    /// Every trusted root, PEM, the signing root first; empty: no identity in this mesh.
    pub trust_bundle_pem: String,
}

/// A workload's inbound side as its proxy enforces it (one inbound listener).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundPolicy {
    /// Whose inbound side.
    pub service: ServiceRef,
    /// What the inbound port accepts.
    pub mode: TlsMode,
    /// A matching rule denies (checked first).
    pub deny: Vec<AuthzRule>,
    /// `None`: allowed unless denied; `Some(rules)`: allowed only if one matches.
    pub allow: Option<Vec<AuthzRule>>,
    /// Where the proxy logs the requests it receives, as the control plane asks (`None`:
    /// as the proxy's own flags say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLogTarget>,
}

/// How a cluster's endpoints are called: mutual TLS with these expected server identities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamTls {
    /// The SPIFFE IDs the server may present (one per service account its workloads run
    /// as), sorted, never empty.
    pub identities: Vec<String>,
}

/// The trusted roots as a proxy receives them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustBundle {
    /// Every trusted root, PEM; the first is the one the CA signs with now.
    pub roots_pem: String,
}

impl super::MeshConfig {
    /// The inbound side of `service` as its proxy must enforce it: its TLS mode, every deny
    /// rule of the policies that apply to it, and the allow rules, which exist (`Some`) as
    /// soon as one `ALLOW` policy applies or the mesh default is `deny`.
    pub fn inbound_policy(&self, service: &ServiceRef) -> InboundPolicy {
        let svc = self.services.get(service);
        let mode = svc.map(|s| s.tls_mode).unwrap_or_default();
        let mut deny = Vec::new();
        let mut allow: Option<Vec<AuthzRule>> = match self.security.default_action {
            AuthzDefault::Allow => None,
            AuthzDefault::Deny => Some(Vec::new()),
        };
        for p in self.authz.values().filter(|p| p.applies_to(service)) {
            match p.action {
                AuthzAction::Deny => deny.extend(p.rules.iter().cloned()),
                AuthzAction::Allow => allow
                    .get_or_insert_with(Vec::new)
                    .extend(p.rules.iter().cloned()),
            }
        }
        InboundPolicy {
            service: service.clone(),
            mode,
            deny,
            allow,
            access_log: svc.and_then(|s| s.access_log.clone()),
        }
    }

    /// How clients call `service`: mutual TLS expecting the SPIFFE ID of one of its
    /// service accounts, unless its mode is `disabled` or the mesh has no trust bundle.
    pub fn upstream_tls(&self, service: &ServiceRef) -> Option<UpstreamTls> {
        let svc = self.services.get(service)?;
        if svc.tls_mode == TlsMode::Disabled || self.security.trust_bundle_pem.is_empty() {
            return None;
        }
        let mut identities: Vec<String> = svc
            .accounts()
            .into_iter()
            .map(|sa| account_spiffe_id(&self.security.trust_domain, &service.namespace, sa))
            .collect();
        identities.sort();
        identities.dedup();
        Some(UpstreamTls { identities })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_names_round_trip_and_reject_junk() {
        let s = ServiceRef::new("shop", "cart");
        let n = inbound_listener_name(&s);
        assert_eq!(n, "inbound|shop|cart");
        assert_eq!(inbound_listener_service(&n), Some(s));
        for bad in [
            "cart",
            "inbound|",
            "inbound|a",
            "inbound||b",
            "inbound|a|b|c",
        ] {
            assert_eq!(inbound_listener_service(bad), None, "{bad}");
        }
    }

    #[test]
    fn spiffe_namespace_reads_only_well_formed_ids() {
        let id = spiffe_id("cluster.local", &ServiceRef::new("shop", "cart"));
        assert_eq!(id, "spiffe://cluster.local/ns/shop/sa/cart");
        assert_eq!(spiffe_namespace(&id), Some("shop"));
        assert_eq!(spiffe_namespace("spiffe://td/foo/shop/sa/x"), None);
        assert_eq!(spiffe_namespace("https://td/ns/shop/sa/x"), None);
    }

    #[test]
    fn path_patterns_follow_istio_syntax() {
        assert!(PathPattern::parse("*").matches("/x"));
        assert!(PathPattern::parse("/api/*").matches("/api/v1"));
        assert!(!PathPattern::parse("/api/*").matches("/apix"));
        assert!(PathPattern::parse("*.js").matches("/a/b.js"));
        assert!(PathPattern::parse("/a").matches("/a"));
        assert!(!PathPattern::parse("/a").matches("/a/"));
    }
}
