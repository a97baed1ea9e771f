//! A stored `GRPCRoute` → the domain [`HttpRoute`] that `HTTPRoute`s also become, so the
//! xDS conversion and the proxy need nothing gRPC-specific.
//!
//! gRPC calls are HTTP/2 `POST`s to `/{package.Service}/{Method}`, so a method match is a
//! path match ([`method_path`]) and no method condition is added. GRPCRoute has no
//! timeouts or retry: rules get the defaults (the proxy's timeout; no retry beyond requests
//! never written upstream, which the proxy always retries).

use serde_json::Value;
use tandem_xds::domain::{HttpRoute, PathMatch, RouteMatch, RouteRule, RouteTimeouts};

use super::{backends, identity, parent_ports, parents, route_filters, spec_of, value_match};
use crate::spec::{GrpcMatchSpec, GrpcMethodMatchSpec, GrpcMethodMatchType, GrpcRouteSpec};
use crate::{ResourceError, GRPC_ROUTE_PREFIX};

/// A segment of a gRPC path that a missing `service` or `method` regex stands for.
const ANY_SEGMENT: &str = "[^/]+";

/// The name a GRPCRoute `name` has in [`tandem_xds::domain::MeshConfig::routes`]:
/// `grpc:NAME` ([`GRPC_ROUTE_PREFIX`]).
pub fn grpc_route_name(name: &str) -> String {
    format!("{GRPC_ROUTE_PREFIX}{name}")
}

/// A stored `GRPCRoute` as a domain [`HttpRoute`] named [`grpc_route_name`]; `created`
/// is the revision that first created it (precedence ties go to the older route).
pub fn grpc_route(doc: &Value, created: u64) -> Result<HttpRoute, ResourceError> {
    let (namespace, name) = identity(doc);
    let spec: GrpcRouteSpec = spec_of(doc)?;
    let rules = spec
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            Ok(RouteRule {
                matches: r.matches.iter().map(grpc_match).collect(),
                backends: backends(&r.backend_refs, &namespace),
                filters: route_filters(&format!("spec.rules[{i}]"), &r.filters, &namespace)?,
                timeouts: RouteTimeouts::default(),
                retry: None,
            })
        })
        .collect::<Result<Vec<_>, ResourceError>>()?;
    Ok(HttpRoute {
        parents: parents(&spec.parent_refs, &namespace),
        parent_ports: parent_ports(&spec.parent_refs, &namespace),
        name: grpc_route_name(&name),
        namespace,
        rules,
        created,
    })
}

fn grpc_match(m: &GrpcMatchSpec) -> RouteMatch {
    RouteMatch {
        path: method_path(m.method.as_ref()),
        headers: m.headers.iter().map(value_match).collect(),
        query_params: Vec::new(),
        method: None,
    }
}

/// The path match of a GRPCRoute `method` match:
///
/// | `method` | path match |
/// | --- | --- |
/// | absent | `Prefix("/")` (every call) |
/// | Exact, service + method | `Exact("/S/M")` |
/// | Exact, service only | `Prefix("/S")` (whole segment: `/S/anything`, never `/S2/x`) |
/// | Exact, method only | `Regex("/[^/]+/M")` |
/// | RegularExpression | `Regex("/(?:S)/(?:M)")`, a missing part being `[^/]+` |
///
/// A leading `.` of an Exact service (a fully qualified protobuf name, which Gateway API
/// allows) is dropped: gRPC paths never carry it. Regex parts are grouped so that an
/// alternation (`Get|List`) stays inside its segment.
pub fn method_path(m: Option<&GrpcMethodMatchSpec>) -> PathMatch {
    let Some(m) = m else {
        return PathMatch::default();
    };
    let service = m.service.as_deref().filter(|s| !s.is_empty());
    let method = m.method.as_deref().filter(|s| !s.is_empty());
    match m.kind {
        GrpcMethodMatchType::Exact => {
            let service = service.map(|s| s.strip_prefix('.').unwrap_or(s));
            match (service, method) {
                (Some(s), Some(m)) => PathMatch::Exact(format!("/{s}/{m}")),
                (Some(s), None) => PathMatch::Prefix(format!("/{s}")),
                (None, Some(m)) => PathMatch::Regex(format!("/{ANY_SEGMENT}/{}", regex::escape(m))),
                (None, None) => PathMatch::default(),
            }
        }
        GrpcMethodMatchType::RegularExpression => {
            if service.is_none() && method.is_none() {
                return PathMatch::default();
            }
            let part = |p: Option<&str>| p.map_or(ANY_SEGMENT.to_string(), |p| format!("(?:{p})"));
            PathMatch::Regex(format!("/{}/{}", part(service), part(method)))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    use serde_json::json;
    use tandem_xds::convert::to_xds::precedence;
    use tandem_xds::domain::{ServiceRef, StringMatch, ValueMatch};

    use super::*;
    use crate::validate_documents;

    fn exact(service: Option<&str>, method: Option<&str>) -> GrpcMethodMatchSpec {
        GrpcMethodMatchSpec {
            kind: GrpcMethodMatchType::Exact,
            service: service.map(Into::into),
            method: method.map(Into::into),
        }
    }

    fn regex_match(service: Option<&str>, method: Option<&str>) -> GrpcMethodMatchSpec {
        GrpcMethodMatchSpec {
            kind: GrpcMethodMatchType::RegularExpression,
            ..exact(service, method)
        }
    }

    /// Whether `path` matches `p` as the proxy matches (segment prefixes, whole-path
    /// regexes).
    fn hits(p: &PathMatch, path: &str) -> bool {
        match p {
            PathMatch::Exact(e) => e == path,
            PathMatch::Prefix(pre) => {
                let pre = pre.trim_end_matches('/');
                pre.is_empty()
                    || path == pre
                    || path
                        .strip_prefix(pre)
                        .is_some_and(|rest| rest.starts_with('/'))
            }
            PathMatch::Regex(r) => regex::Regex::new(&format!("^(?:{r})$"))
                .unwrap()
                .is_match(path),
        }
    }

    #[test]
    fn each_method_match_shape_has_its_path_match() {
        assert_eq!(method_path(None), PathMatch::Prefix("/".into()));
        assert_eq!(
            method_path(Some(&exact(Some("pkg.v1.Echo"), Some("Say")))),
            PathMatch::Exact("/pkg.v1.Echo/Say".into())
        );
        assert_eq!(
            method_path(Some(&exact(Some(".pkg.v1.Echo"), Some("Say")))),
            PathMatch::Exact("/pkg.v1.Echo/Say".into())
        );
        assert_eq!(
            method_path(Some(&exact(Some("pkg.v1.Echo"), None))),
            PathMatch::Prefix("/pkg.v1.Echo".into())
        );
        assert_eq!(
            method_path(Some(&exact(None, Some("Say")))),
            PathMatch::Regex("/[^/]+/Say".into())
        );
        assert_eq!(
            method_path(Some(&regex_match(Some("pkg\\..*"), Some("Get|List")))),
            PathMatch::Regex("/(?:pkg\\..*)/(?:Get|List)".into())
        );
        assert_eq!(
            method_path(Some(&regex_match(Some("pkg\\..*"), None))),
            PathMatch::Regex("/(?:pkg\\..*)/[^/]+".into())
        );
        assert_eq!(
            method_path(Some(&regex_match(None, Some("Get.*")))),
            PathMatch::Regex("/[^/]+/(?:Get.*)".into())
        );
    }

    #[test]
    fn path_matches_select_the_calls_they_name() {
        let svc_method = method_path(Some(&exact(Some("pkg.Echo"), Some("Say"))));
        assert!(hits(&svc_method, "/pkg.Echo/Say"));
        assert!(!hits(&svc_method, "/pkg.Echo/SayMore"));
        let svc = method_path(Some(&exact(Some("pkg.Echo"), None)));
        assert!(hits(&svc, "/pkg.Echo/Say"));
        assert!(hits(&svc, "/pkg.Echo/Other"));
        assert!(
            !hits(&svc, "/pkg.Echo2/Say"),
            "a segment prefix, not a string prefix"
        );
        let method = method_path(Some(&exact(None, Some("Say"))));
        assert!(hits(&method, "/pkg.Echo/Say"));
        assert!(hits(&method, "/other.Svc/Say"));
        assert!(!hits(&method, "/pkg.Echo/SayMore"));
        assert!(!hits(&method, "/Say"));
        // Alternations stay within their segment.
        let alt = method_path(Some(&regex_match(Some("a\\.A|b\\.B"), Some("Get|List"))));
        assert!(hits(&alt, "/a.A/Get"));
        assert!(hits(&alt, "/b.B/List"));
        assert!(!hits(&alt, "/a.A/Put"));
        assert!(!hits(&alt, "/c.C/Get"));
    }

    #[test]
    fn precedence_puts_exact_calls_before_services_before_the_catch_all() {
        let m = |p: PathMatch| RouteMatch {
            path: p,
            ..RouteMatch::default()
        };
        let svc_method = m(method_path(Some(&exact(Some("pkg.Echo"), Some("Say")))));
        let svc = m(method_path(Some(&exact(Some("pkg.Echo"), None))));
        let method = m(method_path(Some(&exact(None, Some("Say")))));
        let all = m(method_path(None));
        assert_eq!(precedence(&svc_method, &svc), Ordering::Less);
        assert_eq!(precedence(&svc, &all), Ordering::Less);
        assert_eq!(precedence(&method, &all), Ordering::Less);
        // Where Tandem differs from GRPCRoute's rule (the most service characters first):
        // a method-only match (a regex) is tried before a service-only one (a prefix).
        assert_eq!(precedence(&method, &svc), Ordering::Less);
        // Header matches break ties between equal method matches, as in the spec.
        let with_header = RouteMatch {
            headers: vec![ValueMatch {
                name: "x-canary".into(),
                value: StringMatch::Exact("1".into()),
            }],
            ..svc.clone()
        };
        assert_eq!(precedence(&with_header, &svc), Ordering::Less);
    }

    #[test]
    fn a_stored_grpc_route_becomes_a_domain_route() {
        let doc = json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
            "metadata": {"name": "echo", "namespace": "shop"},
            "spec": {
                "parentRefs": [{"kind": "Service", "name": "echo"}],
                "rules": [
                    {"matches": [{"method": {"service": "pkg.Echo", "method": "Say"},
                                  "headers": [{"name": "X-Canary", "value": "1"}]}],
                     "filters": [{"type": "ExtensionRef", "extensionRef":
                                  {"group": "tandem.dev", "kind": "FaultInjection", "name": "flaky"}}],
                     "backendRefs": [{"name": "echo-v2", "port": 80, "weight": 0}]},
                    {"backendRefs": [{"name": "echo-v1", "namespace": "legacy"}]}
                ]
            }
        });
        let stored = validate_documents(vec![doc]).unwrap().remove(0);
        let route = grpc_route(&stored.doc, 7).unwrap();
        assert_eq!(route.name, "grpc:echo");
        assert_eq!(route.namespace, "shop");
        assert_eq!(route.created, 7);
        assert_eq!(route.parents, vec![ServiceRef::new("shop", "echo")]);
        let r0 = &route.rules[0];
        assert_eq!(
            r0.matches,
            vec![RouteMatch {
                path: PathMatch::Exact("/pkg.Echo/Say".into()),
                headers: vec![ValueMatch {
                    name: "x-canary".into(),
                    value: StringMatch::Exact("1".into()),
                }],
                query_params: Vec::new(),
                method: None,
            }]
        );
        assert_eq!(r0.backends[0].service, ServiceRef::new("shop", "echo-v2"));
        assert_eq!((r0.backends[0].port, r0.backends[0].weight), (Some(80), 0));
        assert_eq!(r0.filters.fault.as_deref(), Some("flaky"));
        assert_eq!(r0.retry, None);
        assert_eq!(r0.timeouts, RouteTimeouts::default());
        let r1 = &route.rules[1];
        assert!(
            r1.matches.is_empty(),
            "no matches: the xDS default, every call"
        );
        assert_eq!(r1.backends[0].service, ServiceRef::new("legacy", "echo-v1"));
        assert_eq!(r1.backends[0].weight, 1);
    }
}
