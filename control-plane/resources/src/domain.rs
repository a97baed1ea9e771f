//! Stored (normalized, already validated) documents → [`tandem_xds::domain`] types.
//!
//! Defaults that Gateway API or Tandem define for absent fields are applied here, not in
//! the stored document, so a stored document shows what its author wrote.
//!
//! `GRPCRoute`s become the same domain [`HttpRoute`] as `HTTPRoute`s ([`grpc`]), so xDS
//! generation and the proxy treat both alike.

mod grpc;

pub use grpc::{grpc_route, grpc_route_name, method_path};

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use tandem_xds::domain::{
    AppProtocol, AuthorizationPolicy, AuthzAction, AuthzRule, Backend, CallPolicy,
    DestinationPolicy, Endpoint, FaultAbort, FaultDelay, FaultInjection, Fraction, Header,
    HeaderModifier, HttpRoute, LoadBalancer, OutlierDetection, PathMatch, PathModifier,
    PathPattern, PoolLimits, Principal, RequestMirror, RequestRedirect, RetryBudget, RetryPolicy,
    RouteFilters, RouteMatch, RouteRule, RouteTimeouts, Service, ServicePort, ServiceRef,
    StringMatch, TlsMode, UrlRewrite, ValueMatch, DEFAULT_RETRY_BACKOFF,
};

use super::spec::{
    AuthorizationPolicySpec, AuthzActionSpec, AuthzSourceSpec, DestinationPolicySpec, EndpointSpec,
    FaultInjectionSpec, FilterSpec, FilterType, FractionSpec, HeaderFilterSpec, HttpRouteSpec,
    LoadBalancerSpec, MatchSpec, MirrorSpec, OutlierDetectionSpec, PathModifierSpec,
    PathModifierType, PathType, Protocol, RetrySpec, ServiceRefSpec, ServiceSpec, TargetRefSpec,
    TimeoutsSpec, ValueMatchSpec, ValueType,
};
use super::validate::{duration, metadata_of};
use super::{ResourceError, NON_IDEMPOTENT_RETRY_ANNOTATION};

/// Redirect status when `statusCode` is absent (Gateway API's default).
pub const DEFAULT_REDIRECT_STATUS: u16 = 302;
/// Retries when a `retry` stanza gives no `attempts` (Gateway API leaves it to us): one,
/// the least that still recovers from a single failed endpoint.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 1;
/// `outlierDetection.consecutive5xx` when neither count is given.
pub const DEFAULT_CONSECUTIVE_5XX: u32 = 5;
/// `outlierDetection.baseEjectionTime` default.
pub const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(30);
/// `outlierDetection.maxEjectionTime` default.
pub const DEFAULT_MAX_EJECTION: Duration = Duration::from_secs(300);
/// `outlierDetection.maxEjectionPercent` default.
pub const DEFAULT_MAX_EJECTION_PERCENT: u32 = 50;
/// Share of requests a fault's `delay` or `abort` applies to when `percent` is absent.
pub const DEFAULT_FAULT_PERCENT: f64 = 100.0;

fn spec_of<T: DeserializeOwned>(doc: &Value) -> Result<T, ResourceError> {
    let spec = doc.get("spec").cloned().unwrap_or(Value::Null);
    serde_json::from_value(spec).map_err(|e| ResourceError::new("spec", e.to_string()))
}

fn identity(doc: &Value) -> (String, String) {
    let meta = metadata_of(doc);
    (
        meta.namespace.unwrap_or_default(),
        meta.name.unwrap_or_default(),
    )
}

/// The typed spec of a stored `Service`.
pub fn service_spec(doc: &Value) -> Result<ServiceSpec, ResourceError> {
    spec_of(doc)
}

/// The typed spec of a stored `Endpoint`.
pub fn endpoint_spec(doc: &Value) -> Result<EndpointSpec, ResourceError> {
    spec_of(doc)
}

/// A stored `Service` as a domain [`Service`] (`grpc` becomes HTTP/2).
pub fn service(doc: &Value) -> Result<Service, ResourceError> {
    let (namespace, name) = identity(doc);
    let spec = service_spec(doc)?;
    let access_log = match metadata_of(doc)
        .annotations
        .get(crate::ACCESS_LOG_ANNOTATION)
    {
        // Validated at apply time, like the spec.
        Some(v) => super::validate::access_log("", v)?,
        None => None,
    };
    Ok(Service {
        id: ServiceRef::new(namespace, name),
        ports: spec
            .ports
            .into_iter()
            .map(|p| ServicePort {
                name: p.name,
                port: p.port,
                protocol: match p.protocol {
                    Protocol::Detect => AppProtocol::Detect,
                    Protocol::Http => AppProtocol::Http,
                    Protocol::Http2 | Protocol::Grpc => AppProtocol::Http2,
                    Protocol::Tcp => AppProtocol::Tcp,
                },
            })
            .collect(),
        // Validated at apply time; absent means the mesh's default, mutual TLS.
        tls_mode: match spec.mtls.and_then(|m| m.mode) {
            Some(mode) => super::validate::tls_mode("spec.mtls.mode", &mode)?,
            None => TlsMode::default(),
        },
        addresses: spec
            .addresses
            .iter()
            .enumerate()
            .map(|(i, a)| super::validate::virtual_address(&format!("spec.addresses[{i}]"), a))
            .collect::<Result<_, _>>()?,
        service_accounts: spec.service_accounts,
        access_log,
    })
}

/// A stored `Endpoint` as a domain [`Endpoint`].
pub fn endpoint(doc: &Value) -> Result<Endpoint, ResourceError> {
    let (namespace, _) = identity(doc);
    let spec = endpoint_spec(doc)?;
    let address: SocketAddr = spec
        .address
        .parse()
        .map_err(|_| ResourceError::new("spec.address", "not ip:port"))?;
    Ok(Endpoint {
        service: ServiceRef::new(namespace, spec.service),
        address,
        labels: spec.labels,
        service_port: spec.service_port,
    })
}

/// A stored `HTTPRoute` as a domain [`HttpRoute`]; `created` is the revision that first
/// created it.
pub fn http_route(doc: &Value, created: u64) -> Result<HttpRoute, ResourceError> {
    let (namespace, name) = identity(doc);
    let spec: HttpRouteSpec = spec_of(doc)?;
    let parents = parents(&spec.parent_refs, &namespace);
    let non_idempotent = metadata_of(doc)
        .annotations
        .get(NON_IDEMPOTENT_RETRY_ANNOTATION)
        .is_some_and(|v| v == "true");
    let rules = spec
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let at = format!("spec.rules[{i}]");
            Ok(RouteRule {
                matches: r.matches.iter().map(route_match).collect(),
                backends: backends(&r.backend_refs, &namespace),
                filters: route_filters(&at, &r.filters, &namespace)?,
                timeouts: r
                    .timeouts
                    .as_ref()
                    .map(|t| timeouts(&format!("{at}.timeouts"), t))
                    .transpose()?
                    .unwrap_or_default(),
                retry: r
                    .retry
                    .as_ref()
                    .map(|rt| retry(&format!("{at}.retry"), rt, non_idempotent))
                    .transpose()?,
            })
        })
        .collect::<Result<Vec<_>, ResourceError>>()?;
    Ok(HttpRoute {
        namespace: namespace.clone(),
        name,
        parents,
        parent_ports: parent_ports(&spec.parent_refs, &namespace),
        rules,
        created,
    })
}

/// A route's `parentRefs` as services; a ref without namespace is in the route's.
fn parents(refs: &[ServiceRefSpec], namespace: &str) -> Vec<ServiceRef> {
    refs.iter()
        .map(|p| {
            ServiceRef::new(
                p.namespace.clone().unwrap_or_else(|| namespace.to_string()),
                p.name.clone(),
            )
        })
        .collect()
}

/// The ports `parentRefs` limit their services to (Gateway API `parentRef.port`); a service
/// named once without a port is governed on all its ports, so it is left out.
fn parent_ports(refs: &[ServiceRefSpec], namespace: &str) -> BTreeMap<ServiceRef, BTreeSet<u16>> {
    let mut limited: BTreeMap<ServiceRef, BTreeSet<u16>> = BTreeMap::new();
    let mut whole = BTreeSet::new();
    for p in refs {
        let svc = ServiceRef::new(
            p.namespace.clone().unwrap_or_else(|| namespace.to_string()),
            p.name.clone(),
        );
        match p.port {
            Some(port) => {
                limited.entry(svc).or_default().insert(port);
            }
            None => {
                whole.insert(svc);
            }
        }
    }
    limited.retain(|svc, _| !whole.contains(svc));
    limited
}

/// A rule's `backendRefs`; `weight` defaults to 1, as in Gateway API.
fn backends(refs: &[ServiceRefSpec], namespace: &str) -> Vec<Backend> {
    refs.iter()
        .map(|b| Backend {
            service: ServiceRef::new(
                b.namespace.clone().unwrap_or_else(|| namespace.to_string()),
                b.name.clone(),
            ),
            port: b.port,
            weight: u32::try_from(b.weight.unwrap_or(1)).unwrap_or(0),
        })
        .collect()
}

fn route_match(m: &MatchSpec) -> RouteMatch {
    let path = match &m.path {
        None => PathMatch::default(),
        Some(p) => match p.kind {
            PathType::Exact => PathMatch::Exact(p.value.clone()),
            PathType::PathPrefix => PathMatch::Prefix(p.value.clone()),
            PathType::RegularExpression => PathMatch::Regex(p.value.clone()),
        },
    };
    RouteMatch {
        path,
        headers: m.headers.iter().map(value_match).collect(),
        query_params: m.query_params.iter().map(value_match).collect(),
        method: m.method.clone(),
    }
}

fn value_match(v: &ValueMatchSpec) -> ValueMatch {
    ValueMatch {
        name: v.name.clone(),
        value: match v.kind {
            ValueType::Exact => StringMatch::Exact(v.value.clone()),
            ValueType::RegularExpression => StringMatch::Regex(v.value.clone()),
        },
    }
}

fn route_filters(
    at: &str,
    filters: &[FilterSpec],
    namespace: &str,
) -> Result<RouteFilters, ResourceError> {
    let mut out = RouteFilters::default();
    for (i, f) in filters.iter().enumerate() {
        let fat = format!("{at}.filters[{i}]");
        let missing = || ResourceError::new(format!("{fat}.{}", f.kind.field()), "missing");
        match f.kind {
            FilterType::RequestHeaderModifier => {
                out.request_headers =
                    header_modifier(f.request_header_modifier.as_ref().ok_or_else(missing)?);
            }
            FilterType::ResponseHeaderModifier => {
                out.response_headers =
                    header_modifier(f.response_header_modifier.as_ref().ok_or_else(missing)?);
            }
            FilterType::RequestRedirect => {
                let r = f.request_redirect.as_ref().ok_or_else(missing)?;
                out.redirect = Some(RequestRedirect {
                    scheme: r.scheme.clone(),
                    hostname: r.hostname.clone(),
                    path: r
                        .path
                        .as_ref()
                        .map(|p| path_modifier(&fat, p))
                        .transpose()?,
                    port: r.port.and_then(|p| u16::try_from(p).ok()),
                    status_code: r
                        .status_code
                        .and_then(|c| u16::try_from(c).ok())
                        .unwrap_or(DEFAULT_REDIRECT_STATUS),
                });
            }
            FilterType::UrlRewrite => {
                let u = f.url_rewrite.as_ref().ok_or_else(missing)?;
                out.rewrite = Some(UrlRewrite {
                    hostname: u.hostname.clone(),
                    path: u
                        .path
                        .as_ref()
                        .map(|p| path_modifier(&fat, p))
                        .transpose()?,
                });
            }
            FilterType::RequestMirror => {
                let m = f.request_mirror.as_ref().ok_or_else(missing)?;
                out.mirrors.push(mirror(m, namespace));
            }
            FilterType::ExtensionRef => {
                let e = f.extension_ref.as_ref().ok_or_else(missing)?;
                out.fault = Some(e.name.clone());
            }
        }
    }
    Ok(out)
}

fn header_modifier(h: &HeaderFilterSpec) -> HeaderModifier {
    let headers = |list: &[super::spec::HeaderSpec]| {
        list.iter()
            .map(|e| Header {
                name: e.name.to_ascii_lowercase(),
                value: e.value.clone(),
            })
            .collect()
    };
    HeaderModifier {
        set: headers(&h.set),
        add: headers(&h.add),
        remove: h.remove.iter().map(|n| n.to_ascii_lowercase()).collect(),
    }
}

fn path_modifier(at: &str, p: &PathModifierSpec) -> Result<PathModifier, ResourceError> {
    match p.kind {
        PathModifierType::ReplaceFullPath => p
            .replace_full_path
            .clone()
            .map(PathModifier::ReplaceFullPath)
            .ok_or_else(|| ResourceError::new(format!("{at}.path.replaceFullPath"), "missing")),
        PathModifierType::ReplacePrefixMatch => p
            .replace_prefix_match
            .clone()
            .map(PathModifier::ReplacePrefixMatch)
            .ok_or_else(|| ResourceError::new(format!("{at}.path.replacePrefixMatch"), "missing")),
    }
}

fn mirror(m: &MirrorSpec, namespace: &str) -> RequestMirror {
    let b = &m.backend_ref;
    let fraction = match (&m.percent, &m.fraction) {
        // An integer percentage is exact in parts per million.
        (Some(p), _) => Fraction::from_percent(*p as f64),
        (None, Some(f)) => fraction(f),
        (None, None) => Fraction::ALL,
    };
    RequestMirror {
        backend: ServiceRef::new(
            b.namespace.clone().unwrap_or_else(|| namespace.to_string()),
            b.name.clone(),
        ),
        fraction,
    }
}

/// `numerator / denominator` in parts per million, rounded to nearest.
fn fraction(f: &FractionSpec) -> Fraction {
    let den = u64::try_from(f.denominator.unwrap_or(100))
        .unwrap_or(100)
        .max(1);
    let num = u64::try_from(f.numerator).unwrap_or(0).min(den);
    let ppm = (num * u64::from(Fraction::MILLION) + den / 2) / den;
    Fraction(u32::try_from(ppm).unwrap_or(Fraction::MILLION))
}

/// `0s` is Gateway API's "no timeout"; it becomes `None`, the same as an absent field.
fn timeouts(at: &str, t: &TimeoutsSpec) -> Result<RouteTimeouts, ResourceError> {
    let read = |field: &str, v: &Option<String>| {
        v.as_deref()
            .map(|s| duration(&format!("{at}.{field}"), s))
            .transpose()
            .map(|d| d.filter(|d| !d.is_zero()))
    };
    Ok(RouteTimeouts {
        request: read("request", &t.request)?,
        backend_request: read("backendRequest", &t.backend_request)?,
    })
}

fn retry(at: &str, r: &RetrySpec, non_idempotent: bool) -> Result<RetryPolicy, ResourceError> {
    Ok(RetryPolicy {
        attempts: r
            .attempts
            .and_then(|a| u32::try_from(a).ok())
            .unwrap_or(DEFAULT_RETRY_ATTEMPTS),
        codes: r
            .codes
            .iter()
            .filter_map(|c| u16::try_from(*c).ok())
            .collect(),
        backoff: r
            .backoff
            .as_deref()
            .map(|b| duration(&format!("{at}.backoff"), b))
            .transpose()?
            .unwrap_or(DEFAULT_RETRY_BACKOFF),
        non_idempotent,
    })
}

/// The service a stored `DestinationPolicy` governs.
pub fn policy_target(doc: &Value) -> Result<ServiceRef, ResourceError> {
    let (namespace, _) = identity(doc);
    let spec: DestinationPolicySpec = spec_of(doc)?;
    Ok(target(&spec.target_ref, &namespace))
}

fn target(t: &TargetRefSpec, namespace: &str) -> ServiceRef {
    ServiceRef::new(
        t.namespace.clone().unwrap_or_else(|| namespace.to_string()),
        t.name.clone(),
    )
}

/// A stored `DestinationPolicy` as a domain [`DestinationPolicy`], defaults applied.
pub fn destination_policy(doc: &Value) -> Result<DestinationPolicy, ResourceError> {
    let (namespace, name) = identity(doc);
    let spec: DestinationPolicySpec = spec_of(doc)?;
    let count = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
    let lb = match spec.load_balancer {
        None | Some(LoadBalancerSpec::PeakEwma) => LoadBalancer::PeakEwma,
        Some(LoadBalancerSpec::LeastRequest) => LoadBalancer::LeastRequest,
        Some(LoadBalancerSpec::RoundRobin) => LoadBalancer::RoundRobin,
    };
    let limits = spec
        .connection_pool
        .map(|p| PoolLimits {
            max_connections: count(p.max_connections),
            max_pending_requests: count(p.max_pending_requests),
            max_requests: count(p.max_requests),
        })
        .unwrap_or_default();
    let outlier = spec
        .outlier_detection
        .as_ref()
        .map(|o| outlier_detection(o, count))
        .transpose()?;
    let defaults = RetryBudget::default();
    let retry_budget = spec
        .retry_budget
        .map(|b| RetryBudget {
            percent: count(b.percent).unwrap_or(defaults.percent),
            min_retries_per_second: count(b.min_retries_per_second)
                .unwrap_or(defaults.min_retries_per_second),
        })
        .unwrap_or(defaults);
    Ok(DestinationPolicy {
        target: target(&spec.target_ref, &namespace),
        namespace,
        name,
        policy: CallPolicy {
            lb,
            limits,
            outlier,
            retry_budget,
        },
    })
}

fn outlier_detection(
    o: &OutlierDetectionSpec,
    count: impl Fn(Option<i64>) -> Option<u32>,
) -> Result<OutlierDetection, ResourceError> {
    let at = "spec.outlierDetection";
    let time = |field: &str, v: &Option<String>, default: Duration| {
        v.as_deref()
            .map(|s| duration(&format!("{at}.{field}"), s))
            .transpose()
            .map(|d| d.unwrap_or(default))
    };
    let consecutive_5xx = count(o.consecutive_5xx);
    let consecutive_gateway_errors = count(o.consecutive_gateway_errors);
    Ok(OutlierDetection {
        // With neither count given, 5xx ejection is what "outlier detection" means.
        consecutive_5xx: if consecutive_5xx.is_none() && consecutive_gateway_errors.is_none() {
            Some(DEFAULT_CONSECUTIVE_5XX)
        } else {
            consecutive_5xx
        },
        consecutive_gateway_errors,
        base_ejection_time: time(
            "baseEjectionTime",
            &o.base_ejection_time,
            DEFAULT_BASE_EJECTION,
        )?,
        max_ejection_time: time(
            "maxEjectionTime",
            &o.max_ejection_time,
            DEFAULT_MAX_EJECTION,
        )?,
        max_ejection_percent: count(o.max_ejection_percent).unwrap_or(DEFAULT_MAX_EJECTION_PERCENT),
    })
}

/// A stored `FaultInjection` as a domain [`FaultInjection`] (its namespace and name are
/// the key it is stored under in [`tandem_xds::domain::MeshConfig::faults`]).
pub fn fault_injection(doc: &Value) -> Result<FaultInjection, ResourceError> {
    let spec: FaultInjectionSpec = spec_of(doc)?;
    let share = |p: Option<f64>| Fraction::from_percent(p.unwrap_or(DEFAULT_FAULT_PERCENT));
    Ok(FaultInjection {
        delay: spec
            .delay
            .map(|d| {
                Ok::<_, ResourceError>(FaultDelay {
                    duration: duration("spec.delay.fixedDelay", &d.fixed_delay)?,
                    fraction: share(d.percent),
                })
            })
            .transpose()?,
        abort: spec.abort.map(|a| FaultAbort {
            status: u16::try_from(a.http_status).unwrap_or(500),
            fraction: share(a.percent),
        }),
    })
}

/// A stored `AuthorizationPolicy` as a domain [`AuthorizationPolicy`]: `ALLOW` when no
/// action is given, path patterns parsed, ports narrowed (validated at apply time).
pub fn authorization_policy(doc: &Value) -> Result<AuthorizationPolicy, ResourceError> {
    let (namespace, name) = identity(doc);
    let spec: AuthorizationPolicySpec = spec_of(doc)?;
    let rules = spec
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let from = r
                .from
                .iter()
                .enumerate()
                .map(|(j, f)| principal(&format!("spec.rules[{i}].from[{j}]"), f))
                .collect::<Result<Vec<_>, _>>()?;
            let ports = r
                .ports
                .iter()
                .enumerate()
                .map(|(j, p)| {
                    u16::try_from(*p).map_err(|_| {
                        ResourceError::new(format!("spec.rules[{i}].ports[{j}]"), "not a port")
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(AuthzRule {
                from,
                paths: r.paths.iter().map(|p| PathPattern::parse(p)).collect(),
                methods: r.methods.clone(),
                ports,
            })
        })
        .collect::<Result<Vec<_>, ResourceError>>()?;
    Ok(AuthorizationPolicy {
        target: spec.target_ref.as_ref().map(|t| target(t, &namespace)),
        action: match spec.action {
            None | Some(AuthzActionSpec::Allow) => AuthzAction::Allow,
            Some(AuthzActionSpec::Deny) => AuthzAction::Deny,
        },
        rules,
        namespace,
        name,
    })
}

fn principal(at: &str, f: &AuthzSourceSpec) -> Result<Principal, ResourceError> {
    match (&f.principal, &f.namespace, f.authenticated) {
        (Some(id), None, None) => Ok(Principal::Identity(id.clone())),
        (None, Some(ns), None) => Ok(Principal::Namespace(ns.clone())),
        (None, None, Some(true)) => Ok(Principal::Authenticated),
        _ => Err(ResourceError::new(
            at,
            "give exactly one of principal, namespace or authenticated",
        )),
    }
}
