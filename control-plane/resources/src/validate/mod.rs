//! The rules of validity. Every error names the field: `documents[2].spec.rules[0].
//! backendRefs[1].weight: must be ≤ 1000000`. Nothing here touches the store.
//!
//! - this module: documents, metadata, `Service`, `Endpoint`, shared checks;
//! - [`route`]: `HTTPRoute` (matches, backends, timeouts, retry), with its rule
//!   [`filters`];
//! - [`grpc`]: `GRPCRoute` (service/method and header matches, backends, filters);
//! - [`policy`]: `DestinationPolicy` and `FaultInjection`;
//! - [`authz`]: `AuthorizationPolicy` (principals, paths, methods, ports).

mod authz;
mod filters;
mod grpc;
mod policy;
mod route;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use tandem_xds::domain::{TlsMode, DEFAULT_NAMESPACE};

pub use authz::{MAX_AUTHZ_LIST, MAX_AUTHZ_RULES, MAX_AUTHZ_VALUE};
pub use filters::{MAX_HEADER_ACTIONS, MAX_HEADER_VALUE, MAX_PATH_LEN, REDIRECT_CODES};
pub use grpc::GRPC_FILTER_TYPES;
pub use policy::{policy_targets_unique, MAX_CONSECUTIVE, MAX_MIN_RETRIES_PER_SECOND};
pub use route::MAX_RETRY_ATTEMPTS;

use super::spec::{
    AuthorizationPolicySpec, DestinationPolicySpec, DnsSpec, Document, EndpointSpec,
    FaultInjectionSpec, GrpcRouteSpec, HttpRouteSpec, Metadata, ServiceSpec,
};
use super::{derived_endpoint_name, Kind, Resource, ResourceError, ResourceKey};

/// Most `backendRefs` per rule.
pub const MAX_BACKEND_REFS: usize = 16;
/// Most `matches` per rule.
pub const MAX_MATCHES: usize = 16;
/// Most `rules` per route.
pub const MAX_RULES: usize = 64;
/// Most `parentRefs` per route (as in Gateway API).
pub const MAX_PARENT_REFS: usize = 32;
/// Most header (and, separately, query parameter) conditions per match (as in Gateway API).
pub const MAX_VALUE_MATCHES: usize = 16;
/// Largest backend weight.
pub const MAX_WEIGHT: i64 = 1_000_000;
/// Longest regular expression, in bytes.
pub const MAX_REGEX_LEN: usize = 1024;

/// Splits YAML or JSON text (one or many `---`-separated documents; a top-level list is
/// flattened; empty documents are skipped) into JSON values, without validating them.
pub fn parse_text(text: &str) -> Result<Vec<Value>, ResourceError> {
    let mut out = Vec::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let yaml = serde_yaml::Value::deserialize(de)
            .map_err(|e| ResourceError::new(format!("documents[{i}]"), e.to_string()))?;
        let json = serde_json::to_value(&yaml)
            .map_err(|e| ResourceError::new(format!("documents[{i}]"), e.to_string()))?;
        match json {
            Value::Null => {}
            Value::Array(items) => out.extend(items.into_iter().filter(|v| !v.is_null())),
            other => out.push(other),
        }
    }
    Ok(out)
}

/// Validates documents (as sent to `POST /v1/apply`) into normalized resources. All or
/// nothing: the first error is returned with its path, `documents[i]....`.
pub fn validate_documents(docs: Vec<Value>) -> Result<Vec<Resource>, ResourceError> {
    let mut out: Vec<Resource> = Vec::with_capacity(docs.len());
    let mut seen: BTreeMap<ResourceKey, usize> = BTreeMap::new();
    for (i, doc) in docs.into_iter().enumerate() {
        let at = format!("documents[{i}]");
        let resource = validate_document(&at, doc)?;
        if let Some(first) = seen.insert(resource.key.clone(), i) {
            return Err(ResourceError::new(
                format!("{at}.metadata.name"),
                format!("{} is also documents[{first}]", resource.key),
            ));
        }
        out.push(resource);
    }
    policy_targets_unique(&out, &[], |i| format!("documents[{i}]"))?;
    Ok(out)
}

/// Validates one document; `at` prefixes every error path.
pub fn validate_document(at: &str, doc: Value) -> Result<Resource, ResourceError> {
    if !doc.is_object() {
        return Err(ResourceError::new(at, "a document must be a mapping"));
    }
    let doc: Document = from_value(at, doc)?;
    let kind = Kind::from_kind_field(&doc.kind).ok_or_else(|| {
        ResourceError::new(
            format!("{at}.kind"),
            format!(
                "unknown kind {:?}: expected Service, Endpoint, HTTPRoute, GRPCRoute, \
                 DestinationPolicy, FaultInjection or AuthorizationPolicy",
                doc.kind
            ),
        )
    })?;
    let expected = kind.api_version();
    let version_ok = doc.api_version == expected
        || (kind == Kind::HttpRoute && doc.api_version == "gateway.networking.k8s.io/v1beta1");
    if !version_ok {
        return Err(ResourceError::new(
            format!("{at}.apiVersion"),
            format!(
                "{:?} is not served for {kind}: use {expected}",
                doc.api_version
            ),
        ));
    }
    let mut meta = doc.metadata;
    let namespace = meta
        .namespace
        .clone()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
    dns_label(&format!("{at}.metadata.namespace"), &namespace)?;
    meta.namespace = Some(namespace.clone());
    let spec_at = format!("{at}.spec");
    let spec = match kind {
        Kind::Service => {
            let spec: ServiceSpec = from_value(&spec_at, doc.spec)?;
            service(&spec_at, &spec)?;
            if let Some(v) = meta.annotations.get(crate::ACCESS_LOG_ANNOTATION) {
                access_log(at, v)?;
            }
            to_json(&spec)
        }
        Kind::Endpoint => {
            let spec: EndpointSpec = from_value(&spec_at, doc.spec)?;
            let addr = endpoint(&spec_at, &spec)?;
            if spec.service_port == Some(0) {
                return Err(ResourceError::new(
                    format!("{spec_at}.servicePort"),
                    "must be a port, 1-65535",
                ));
            }
            if meta.name.is_none() {
                // Two ports of a service may target one address: one name each.
                let name = derived_endpoint_name(&spec.service, &addr);
                meta.name = Some(match spec.service_port {
                    Some(port) => format!("{name}-for-{port}"),
                    None => name,
                });
            }
            to_json(&EndpointSpec {
                address: addr.to_string(),
                ..spec
            })
        }
        Kind::HttpRoute => {
            route::annotations(at, &meta)?;
            let mut spec: HttpRouteSpec = from_value(&spec_at, doc.spec)?;
            route::route(&spec_at, &mut spec)?;
            to_json(&spec)
        }
        Kind::GrpcRoute => {
            let mut spec: GrpcRouteSpec = from_value(&spec_at, doc.spec)?;
            grpc::grpc_route(&spec_at, &mut spec)?;
            to_json(&spec)
        }
        Kind::DestinationPolicy => {
            let spec: DestinationPolicySpec = from_value(&spec_at, doc.spec)?;
            policy::destination_policy(&spec_at, &spec)?;
            to_json(&spec)
        }
        Kind::FaultInjection => {
            let spec: FaultInjectionSpec = from_value(&spec_at, doc.spec)?;
            policy::fault_injection(&spec_at, &spec)?;
            to_json(&spec)
        }
        Kind::AuthorizationPolicy => {
            let spec: AuthorizationPolicySpec = from_value(&spec_at, doc.spec)?;
            authz::authorization_policy(&spec_at, &namespace, &spec)?;
            to_json(&spec)
        }
    };
    let name = match &meta.name {
        Some(n) => n.clone(),
        None => {
            return Err(ResourceError::new(
                format!("{at}.metadata.name"),
                "required",
            ))
        }
    };
    // Derived endpoint names may exceed a label; everything users name must be a label.
    if kind == Kind::Endpoint {
        object_name(&format!("{at}.metadata.name"), &name)?;
    } else {
        dns_label(&format!("{at}.metadata.name"), &name)?;
    }
    let normalized = Document {
        api_version: expected.to_string(),
        kind: kind.as_str().to_string(),
        metadata: meta,
        spec,
        status: None,
    };
    Ok(Resource {
        key: ResourceKey::new(kind, namespace, name),
        doc: to_json(&normalized),
    })
}

fn from_value<T: DeserializeOwned>(at: &str, value: Value) -> Result<T, ResourceError> {
    // An absent spec is an empty one.
    let value = if value.is_null() {
        Value::Object(serde_json::Map::new())
    } else {
        value
    };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path.is_empty() || path == "." {
            at.to_string()
        } else {
            format!("{at}.{path}")
        };
        ResourceError::new(path, e.into_inner().to_string())
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    // Serializing these plain structs cannot fail (string keys only).
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 bytes.
pub fn dns_label(path: &str, s: &str) -> Result<(), ResourceError> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ResourceError::new(
            path,
            format!(
                "{s:?} is not a DNS label: lowercase letters, digits and '-', \
                 starting and ending with a letter or digit, at most 63 characters"
            ),
        ))
    }
}

/// A Kubernetes object name such as a ServiceAccount's: DNS labels joined by dots, at
/// most 253 bytes.
pub fn dns_subdomain(path: &str, s: &str) -> Result<(), ResourceError> {
    if s.len() <= 253 && !s.is_empty() && s.split('.').all(|l| dns_label(path, l).is_ok()) {
        Ok(())
    } else {
        Err(ResourceError::new(
            path,
            format!(
                "{s:?} is not a DNS subdomain: dot-separated DNS labels (lowercase letters, \
                 digits and '-'), at most 253 characters"
            ),
        ))
    }
}

/// Endpoint names: DNS labels, except that they may be up to 253 bytes (derived names).
fn object_name(path: &str, s: &str) -> Result<(), ResourceError> {
    if s.len() <= 63 {
        return dns_label(path, s);
    }
    let label_like = s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if label_like && !s.starts_with('-') && !s.ends_with('-') {
        Ok(())
    } else {
        dns_label(path, s)
    }
}

/// A DNS host name: labels of letters, digits, `-` and `_`, at most 253 bytes.
fn host_name(path: &str, s: &str) -> Result<(), ResourceError> {
    let s = s.strip_suffix('.').unwrap_or(s);
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(ResourceError::new(path, format!("{s:?} is not a DNS name")))
    }
}

/// A Service's [`crate::ACCESS_LOG_ANNOTATION`]: `stdout`, an absolute path or `off`.
pub fn access_log(
    at: &str,
    value: &str,
) -> Result<Option<tandem_xds::domain::AccessLogTarget>, ResourceError> {
    if value.trim() == "off" {
        return Ok(None);
    }
    tandem_xds::domain::AccessLogTarget::parse_remote(value)
        .map(Some)
        .map_err(|e| {
            ResourceError::new(
                format!(
                    "{at}.metadata.annotations[\"{}\"]",
                    crate::ACCESS_LOG_ANNOTATION
                ),
                format!("{e}, or `off`"),
            )
        })
}

fn service(at: &str, spec: &ServiceSpec) -> Result<(), ResourceError> {
    let mut ports = BTreeSet::new();
    let mut names = BTreeSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let pat = format!("{at}.ports[{i}]");
        if p.port == 0 {
            return Err(ResourceError::new(
                format!("{pat}.port"),
                "must be 1..=65535",
            ));
        }
        if !ports.insert(p.port) {
            return Err(ResourceError::new(
                format!("{pat}.port"),
                format!("port {} is listed twice", p.port),
            ));
        }
        if let Some(name) = &p.name {
            dns_label(&format!("{pat}.name"), name)?;
            if !names.insert(name.clone()) {
                return Err(ResourceError::new(
                    format!("{pat}.name"),
                    format!("port name {name:?} is listed twice"),
                ));
            }
        }
    }
    let mut seen = BTreeSet::new();
    for (i, a) in spec.addresses.iter().enumerate() {
        let ip = virtual_address(&format!("{at}.addresses[{i}]"), a)?;
        if !seen.insert(ip) {
            return Err(ResourceError::new(
                format!("{at}.addresses[{i}]"),
                format!("{ip} is listed twice"),
            ));
        }
    }
    let mut accounts = BTreeSet::new();
    for (i, a) in spec.service_accounts.iter().enumerate() {
        let path = format!("{at}.serviceAccounts[{i}]");
        dns_subdomain(&path, a)?;
        if !accounts.insert(a) {
            return Err(ResourceError::new(path, format!("{a:?} is listed twice")));
        }
    }
    if let Some(dns) = &spec.dns {
        dns_spec(&format!("{at}.dns"), dns)?;
    }
    if let Some(mode) = spec.mtls.as_ref().and_then(|m| m.mode.as_deref()) {
        tls_mode(&format!("{at}.mtls.mode"), mode)?;
    }
    Ok(())
}

/// One of a service's virtual addresses: an IP literal a workload can connect to, so not
/// unspecified, loopback (never intercepted) or multicast.
pub fn virtual_address(path: &str, s: &str) -> Result<std::net::IpAddr, ResourceError> {
    let ip: std::net::IpAddr = s
        .parse()
        .map_err(|_| ResourceError::new(path, format!("{s:?} is not an IP address")))?;
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
        return Err(ResourceError::new(
            path,
            format!("{ip} cannot be a service address (unspecified, loopback or multicast)"),
        ));
    }
    Ok(ip)
}

/// A service's `mtls.mode`: `mutual`, `permissive` or `disabled`.
pub fn tls_mode(path: &str, s: &str) -> Result<TlsMode, ResourceError> {
    [TlsMode::Mutual, TlsMode::Permissive, TlsMode::Disabled]
        .into_iter()
        .find(|m| m.as_str() == s)
        .ok_or_else(|| {
            ResourceError::new(
                path,
                format!("{s:?} is not a TLS mode: use mutual, permissive or disabled"),
            )
        })
}

fn dns_spec(at: &str, dns: &DnsSpec) -> Result<(), ResourceError> {
    match (&dns.name, dns.port, &dns.srv) {
        (Some(name), Some(port), None) => {
            host_name(&format!("{at}.name"), name)?;
            if port == 0 {
                return Err(ResourceError::new(
                    format!("{at}.port"),
                    "must be 1..=65535",
                ));
            }
            Ok(())
        }
        (Some(_), None, None) => Err(ResourceError::new(
            format!("{at}.port"),
            "required with name (the port of the endpoints found)",
        )),
        (None, None, Some(srv)) => {
            host_name(&format!("{at}.srv"), srv)?;
            let labels: Vec<&str> = srv.split('.').collect();
            if labels.len() < 3 || !labels[0].starts_with('_') || !labels[1].starts_with('_') {
                return Err(ResourceError::new(
                    format!("{at}.srv"),
                    format!("{srv:?} is not an SRV name: use _service._proto.domain"),
                ));
            }
            Ok(())
        }
        (None, Some(_), Some(_)) | (None, Some(_), None) => Err(ResourceError::new(
            format!("{at}.port"),
            "only allowed with name",
        )),
        (Some(_), _, Some(_)) => Err(ResourceError::new(
            at,
            "give either name and port (A/AAAA) or srv, not both",
        )),
        (None, None, None) => Err(ResourceError::new(
            at,
            "give either name and port (A/AAAA) or srv",
        )),
    }
}

fn endpoint(at: &str, spec: &EndpointSpec) -> Result<SocketAddr, ResourceError> {
    dns_label(&format!("{at}.service"), &spec.service)?;
    let addr: SocketAddr = spec.address.parse().map_err(|_| {
        ResourceError::new(
            format!("{at}.address"),
            format!("{:?} is not ip:port", spec.address),
        )
    })?;
    if addr.port() == 0 {
        return Err(ResourceError::new(
            format!("{at}.address"),
            "port 0 is not a valid endpoint port",
        ));
    }
    for key in spec.labels.keys() {
        if key.is_empty() || key.len() > 253 {
            return Err(ResourceError::new(
                format!("{at}.labels"),
                format!("label key {key:?} must be 1..=253 characters"),
            ));
        }
    }
    Ok(addr)
}

/// A header name: an HTTP token, returned lowercase (HTTP/2 and the domain types want it so).
fn header_name(path: &str, name: &str) -> Result<String, ResourceError> {
    http::HeaderName::from_bytes(name.as_bytes())
        .map(|n| n.as_str().to_string())
        .map_err(|_| ResourceError::new(path, format!("{name:?} is not a header name")))
}

/// A Gateway API duration string; the error carries `path`.
pub(super) fn duration(path: &str, text: &str) -> Result<Duration, ResourceError> {
    super::duration::parse(text).map_err(|e| ResourceError::new(path, e))
}

/// RE2 syntax, linear time (the `regex` crate), at most [`MAX_REGEX_LEN`] bytes.
fn regex(path: &str, pattern: &str) -> Result<(), ResourceError> {
    if pattern.len() > MAX_REGEX_LEN {
        return Err(ResourceError::new(
            path,
            format!("regular expression longer than {MAX_REGEX_LEN} bytes"),
        ));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map(|_| ())
        .map_err(|e| {
            let msg = e.to_string();
            let last = msg
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid")
                .trim()
                .to_string();
            ResourceError::new(path, format!("invalid regular expression: {last}"))
        })
}

/// Metadata of a normalized document (for callers that read stored documents).
pub fn metadata_of(doc: &Value) -> Metadata {
    doc.get("metadata")
        .and_then(|m| serde_json::from_value(m.clone()).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
