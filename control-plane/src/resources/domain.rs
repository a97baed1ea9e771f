//! Stored (normalized, already validated) documents → [`tandem_xds::domain`] types.

use std::net::SocketAddr;

use serde::de::DeserializeOwned;
use serde_json::Value;
use tandem_xds::domain::{
    AppProtocol, Backend, Endpoint, HttpRoute, PathMatch, RouteMatch, RouteRule, Service,
    ServicePort, ServiceRef, StringMatch, ValueMatch,
};

use super::spec::{
    EndpointSpec, HttpRouteSpec, MatchSpec, PathType, Protocol, ServiceSpec, ValueMatchSpec,
    ValueType,
};
use super::validate::metadata_of;
use super::ResourceError;

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
    })
}

/// A stored `HTTPRoute` as a domain [`HttpRoute`]; `created` is the revision that first
/// created it.
pub fn http_route(doc: &Value, created: u64) -> Result<HttpRoute, ResourceError> {
    let (namespace, name) = identity(doc);
    let spec: HttpRouteSpec = spec_of(doc)?;
    let service_ref = |ns: &Option<String>, name: &str| {
        ServiceRef::new(ns.clone().unwrap_or_else(|| namespace.clone()), name)
    };
    let parents = spec
        .parent_refs
        .iter()
        .map(|p| service_ref(&p.namespace, &p.name))
        .collect();
    let rules = spec
        .rules
        .iter()
        .map(|r| RouteRule {
            matches: r.matches.iter().map(route_match).collect(),
            backends: r
                .backend_refs
                .iter()
                .map(|b| Backend {
                    service: service_ref(&b.namespace, &b.name),
                    port: b.port,
                    weight: u32::try_from(b.weight.unwrap_or(1)).unwrap_or(0),
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    Ok(HttpRoute {
        namespace,
        name,
        parents,
        rules,
        created,
    })
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
