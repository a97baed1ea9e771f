//! The rules of validity. Every error names the field: `documents[2].spec.rules[0].
//! backendRefs[1].weight: must be ≤ 1000000`. Nothing here touches the store.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use tandem_xds::domain::DEFAULT_NAMESPACE;

use super::spec::{
    DnsSpec, Document, EndpointSpec, HttpRouteSpec, MatchSpec, Metadata, PathType, RuleSpec,
    ServiceRefSpec, ServiceSpec, ValueMatchSpec, ValueType,
};
use super::{
    derived_endpoint_name, Kind, Resource, ResourceError, ResourceKey, GATEWAY_API_VERSION,
    TANDEM_API_VERSION,
};

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

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

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
                "unknown kind {:?}: expected Service, Endpoint or HTTPRoute",
                doc.kind
            ),
        )
    })?;
    let expected = match kind {
        Kind::Service | Kind::Endpoint => TANDEM_API_VERSION,
        Kind::HttpRoute => GATEWAY_API_VERSION,
    };
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
            to_json(&spec)
        }
        Kind::Endpoint => {
            let spec: EndpointSpec = from_value(&spec_at, doc.spec)?;
            let addr = endpoint(&spec_at, &spec)?;
            if meta.name.is_none() {
                meta.name = Some(derived_endpoint_name(&spec.service, &addr));
            }
            to_json(&EndpointSpec {
                address: addr.to_string(),
                ..spec
            })
        }
        Kind::HttpRoute => {
            let mut spec: HttpRouteSpec = from_value(&spec_at, doc.spec)?;
            route(&spec_at, &mut spec)?;
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
    if let Some(dns) = &spec.dns {
        dns_spec(&format!("{at}.dns"), dns)?;
    }
    Ok(())
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

fn route(at: &str, spec: &mut HttpRouteSpec) -> Result<(), ResourceError> {
    if spec.parent_refs.is_empty() {
        return Err(ResourceError::new(
            format!("{at}.parentRefs"),
            "at least one parentRef (kind: Service) is required",
        ));
    }
    if spec.parent_refs.len() > MAX_PARENT_REFS {
        return Err(ResourceError::new(
            format!("{at}.parentRefs"),
            format!("at most {MAX_PARENT_REFS} parentRefs"),
        ));
    }
    for (i, p) in spec.parent_refs.iter().enumerate() {
        let pat = format!("{at}.parentRefs[{i}]");
        if p.kind.is_none() {
            return Err(ResourceError::new(
                format!("{pat}.kind"),
                "required: Service (Gateway parents are not supported)",
            ));
        }
        service_ref(&pat, p)?;
        if p.weight.is_some() {
            return Err(ResourceError::new(
                format!("{pat}.weight"),
                "not allowed in a parentRef",
            ));
        }
    }
    if spec.rules.len() > MAX_RULES {
        return Err(ResourceError::new(
            format!("{at}.rules"),
            format!("at most {MAX_RULES} rules per route"),
        ));
    }
    for (i, rule) in spec.rules.iter_mut().enumerate() {
        route_rule(&format!("{at}.rules[{i}]"), rule)?;
    }
    Ok(())
}

fn service_ref(at: &str, r: &ServiceRefSpec) -> Result<(), ResourceError> {
    if let Some(group) = &r.group {
        if !group.is_empty() && group != "core" {
            return Err(ResourceError::new(
                format!("{at}.group"),
                format!("{group:?} is not supported: use \"\" or \"core\""),
            ));
        }
    }
    if let Some(kind) = &r.kind {
        if kind != "Service" {
            return Err(ResourceError::new(
                format!("{at}.kind"),
                format!("{kind:?} is not supported: use Service"),
            ));
        }
    }
    dns_label(&format!("{at}.name"), &r.name)?;
    if let Some(ns) = &r.namespace {
        dns_label(&format!("{at}.namespace"), ns)?;
    }
    if r.port == Some(0) {
        return Err(ResourceError::new(
            format!("{at}.port"),
            "must be 1..=65535",
        ));
    }
    Ok(())
}

fn route_rule(at: &str, rule: &mut RuleSpec) -> Result<(), ResourceError> {
    if rule.matches.len() > MAX_MATCHES {
        return Err(ResourceError::new(
            format!("{at}.matches"),
            format!("at most {MAX_MATCHES} matches per rule"),
        ));
    }
    for (i, m) in rule.matches.iter_mut().enumerate() {
        route_match(&format!("{at}.matches[{i}]"), m)?;
    }
    if rule.backend_refs.len() > MAX_BACKEND_REFS {
        return Err(ResourceError::new(
            format!("{at}.backendRefs"),
            format!("at most {MAX_BACKEND_REFS} backendRefs per rule"),
        ));
    }
    for (i, b) in rule.backend_refs.iter().enumerate() {
        let bat = format!("{at}.backendRefs[{i}]");
        service_ref(&bat, b)?;
        match b.weight {
            Some(w) if w < 0 => {
                return Err(ResourceError::new(format!("{bat}.weight"), "must be ≥ 0"))
            }
            Some(w) if w > MAX_WEIGHT => {
                return Err(ResourceError::new(
                    format!("{bat}.weight"),
                    format!("must be ≤ {MAX_WEIGHT}"),
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

fn route_match(at: &str, m: &mut MatchSpec) -> Result<(), ResourceError> {
    if let Some(path) = &m.path {
        let pat = format!("{at}.path.value");
        match path.kind {
            PathType::Exact | PathType::PathPrefix => {
                if !path.value.starts_with('/') {
                    return Err(ResourceError::new(pat, "must start with '/'"));
                }
                if path.value.len() > MAX_REGEX_LEN {
                    return Err(ResourceError::new(
                        pat,
                        format!("at most {MAX_REGEX_LEN} bytes"),
                    ));
                }
            }
            PathType::RegularExpression => regex(&pat, &path.value)?,
        }
    }
    if let Some(method) = &m.method {
        if !METHODS.contains(&method.as_str()) {
            return Err(ResourceError::new(
                format!("{at}.method"),
                format!("{method:?} is not one of {}", METHODS.join(", ")),
            ));
        }
    }
    value_matches(&format!("{at}.headers"), &mut m.headers, true)?;
    value_matches(&format!("{at}.queryParams"), &mut m.query_params, false)?;
    Ok(())
}

fn value_matches(at: &str, list: &mut [ValueMatchSpec], header: bool) -> Result<(), ResourceError> {
    if list.len() > MAX_VALUE_MATCHES {
        return Err(ResourceError::new(
            at,
            format!("at most {MAX_VALUE_MATCHES} entries"),
        ));
    }
    for (i, v) in list.iter_mut().enumerate() {
        let vat = format!("{at}[{i}]");
        if header {
            let name = http::HeaderName::from_bytes(v.name.as_bytes()).map_err(|_| {
                ResourceError::new(
                    format!("{vat}.name"),
                    format!("{:?} is not a header name", v.name),
                )
            })?;
            v.name = name.as_str().to_string();
        } else if v.name.is_empty() {
            return Err(ResourceError::new(
                format!("{vat}.name"),
                "must not be empty",
            ));
        }
        match v.kind {
            ValueType::Exact => {
                if header && http::HeaderValue::from_str(&v.value).is_err() {
                    return Err(ResourceError::new(
                        format!("{vat}.value"),
                        "not a valid header value",
                    ));
                }
            }
            ValueType::RegularExpression => regex(&format!("{vat}.value"), &v.value)?,
        }
    }
    Ok(())
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
