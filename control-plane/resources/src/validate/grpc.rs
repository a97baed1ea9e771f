//! `GRPCRoute` (Gateway API v1, mesh form): parents, rules, method and header matches,
//! backends, and the four filter types GRPCRoute allows. Parent and backend references,
//! header matches and filter settings follow the same rules as in `HTTPRoute`
//! ([`super::route`], [`super::filters`]).

use std::collections::BTreeMap;

use super::route::{backend_refs, parent_refs, value_matches};
use super::{filters, regex, MAX_MATCHES, MAX_REGEX_LEN, MAX_RULES};
use crate::spec::{
    FilterType, GrpcMatchSpec, GrpcMethodMatchSpec, GrpcMethodMatchType, GrpcRouteSpec,
    GrpcRuleSpec,
};
use crate::ResourceError;

/// The filter types a GRPCRoute rule may carry (Gateway API `GRPCRouteFilterType`).
pub const GRPC_FILTER_TYPES: [FilterType; 4] = [
    FilterType::RequestHeaderModifier,
    FilterType::ResponseHeaderModifier,
    FilterType::RequestMirror,
    FilterType::ExtensionRef,
];

/// Validates (and normalizes: header names lowercase, empty `service`/`method` dropped) a
/// GRPCRoute's spec; `at` is its path.
pub(super) fn grpc_route(at: &str, spec: &mut GrpcRouteSpec) -> Result<(), ResourceError> {
    // An empty list says nothing; drop it so the stored document stays tidy.
    if matches!(&spec.hostnames, Some(v) if v.is_null() || v.as_array().is_some_and(Vec::is_empty))
    {
        spec.hostnames = None;
    }
    if spec.hostnames.is_some() {
        return Err(ResourceError::new(
            format!("{at}.hostnames"),
            "not supported: a mesh route applies to all traffic addressed to its parent \
             Services, whatever the host name (HTTPRoute rejects hostnames too)",
        ));
    }
    parent_refs(at, &spec.parent_refs)?;
    if spec.rules.len() > MAX_RULES {
        return Err(ResourceError::new(
            format!("{at}.rules"),
            format!("at most {MAX_RULES} rules per route"),
        ));
    }
    for (i, rule) in spec.rules.iter_mut().enumerate() {
        grpc_rule(&format!("{at}.rules[{i}]"), rule)?;
    }
    Ok(())
}

fn grpc_rule(at: &str, rule: &mut GrpcRuleSpec) -> Result<(), ResourceError> {
    if rule.matches.len() > MAX_MATCHES {
        return Err(ResourceError::new(
            format!("{at}.matches"),
            format!("at most {MAX_MATCHES} matches per rule"),
        ));
    }
    for (i, m) in rule.matches.iter_mut().enumerate() {
        grpc_match(&format!("{at}.matches[{i}]"), m)?;
    }
    backend_refs(at, &rule.backend_refs)?;
    for (i, f) in rule.filters.iter().enumerate() {
        if !GRPC_FILTER_TYPES.contains(&f.kind) {
            return Err(ResourceError::new(
                format!("{at}.filters[{i}].type"),
                format!(
                    "{} is not a GRPCRoute filter: use RequestHeaderModifier, \
                     ResponseHeaderModifier, RequestMirror or ExtensionRef",
                    f.kind
                ),
            ));
        }
    }
    // No path modifiers among the allowed types, so the matches are not needed.
    filters::filter_list(at, &mut rule.filters, &[])?;
    Ok(())
}

fn grpc_match(at: &str, m: &mut GrpcMatchSpec) -> Result<(), ResourceError> {
    if let Some(method) = &mut m.method {
        method_match(&format!("{at}.method"), method)?;
    }
    let hat = format!("{at}.headers");
    value_matches(&hat, &mut m.headers, true)?;
    // Gateway API lists headers as a map keyed by name: a name appears once.
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, h) in m.headers.iter().enumerate() {
        if h.value.is_empty() {
            return Err(ResourceError::new(
                format!("{hat}[{i}].value"),
                "must not be empty",
            ));
        }
        if let Some(j) = seen.insert(h.name.as_str(), i) {
            return Err(ResourceError::new(
                format!("{hat}[{i}].name"),
                format!("header {:?} is also headers[{j}]", h.name),
            ));
        }
    }
    Ok(())
}

fn method_match(at: &str, m: &mut GrpcMethodMatchSpec) -> Result<(), ResourceError> {
    // Gateway API: "If left empty or omitted, will match any service" (and method).
    m.service = m.service.take().filter(|s| !s.is_empty());
    m.method = m.method.take().filter(|s| !s.is_empty());
    if m.service.is_none() && m.method.is_none() {
        return Err(ResourceError::new(
            at,
            "give service, method or both (omit `method` to match every call)",
        ));
    }
    let parts = [("service", &m.service), ("method", &m.method)];
    for (field, value) in parts {
        let Some(value) = value else { continue };
        let path = format!("{at}.{field}");
        if value.len() > MAX_REGEX_LEN {
            return Err(ResourceError::new(
                path,
                format!("at most {MAX_REGEX_LEN} bytes"),
            ));
        }
        match m.kind {
            GrpcMethodMatchType::Exact if field == "service" => service_name(&path, value)?,
            GrpcMethodMatchType::Exact => method_name(&path, value)?,
            GrpcMethodMatchType::RegularExpression => {
                regex(&path, value)?;
                // The pattern is placed inside the whole-path regex `/(?:S)/(?:M)`, where
                // an anchor would never match: say so instead of matching nothing.
                let anchored_end = value.ends_with('$') && !value.ends_with("\\$");
                if value.starts_with('^') || anchored_end {
                    return Err(ResourceError::new(
                        path,
                        format!(
                            "{value:?}: drop the ^ and $ anchors, the pattern always matches \
                             the whole {field} name"
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Gateway API's service syntax, `^(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$`: a
/// fully qualified protobuf name such as `grpc.health.v1.Health`.
fn service_name(at: &str, s: &str) -> Result<(), ResourceError> {
    let name = s.strip_prefix('.').unwrap_or(s);
    if name.split('.').all(identifier) {
        Ok(())
    } else {
        Err(ResourceError::new(
            at,
            format!(
                "{s:?} is not a gRPC service name: dot-separated identifiers \
                 (letters, digits, '_'; not starting with a digit), e.g. pkg.v1.Service"
            ),
        ))
    }
}

/// Gateway API's method syntax, `^[A-Za-z_][A-Za-z_0-9]*$`.
fn method_name(at: &str, s: &str) -> Result<(), ResourceError> {
    if identifier(s) {
        Ok(())
    } else {
        Err(ResourceError::new(
            at,
            format!(
                "{s:?} is not a gRPC method name: letters, digits and '_', not starting \
                 with a digit (no '/')"
            ),
        ))
    }
}

fn identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::validate_documents;

    fn grpc_doc(spec: Value) -> Value {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GRPCRoute",
            "metadata": {"name": "g"},
            "spec": spec
        })
    }

    fn with_rules(rules: Value) -> Value {
        grpc_doc(json!({"parentRefs": [{"kind": "Service", "name": "echo"}], "rules": rules}))
    }

    fn err(doc: Value) -> String {
        match validate_documents(vec![doc]) {
            Ok(r) => panic!("expected an error, got {r:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn match_err(m: Value) -> String {
        err(with_rules(json!([{"matches": [m]}])))
    }

    /// The example of docs/control-plane.md, verbatim.
    const DOCS_EXAMPLE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: echo, namespace: default }
spec:
  parentRefs: [ { kind: Service, name: echo, port: 80 } ]   # as for HTTPRoute
  rules:
    - matches:
        - method: { service: grpc.health.v1.Health, method: Check }   # type: Exact (default)
        - method: { type: RegularExpression, service: "shop\\.v[0-9]+\\..*", method: "Get.*" }
          headers: [ { name: x-canary, value: "1" } ]   # type Exact (default) | RegularExpression
      filters:            # RequestHeaderModifier | ResponseHeaderModifier | RequestMirror | ExtensionRef
        - type: RequestHeaderModifier
          requestHeaderModifier: { set: [ { name: x-route, value: grpc } ] }
        - type: ExtensionRef                       # a Tandem FaultInjection, as for HTTPRoute
          extensionRef: { group: tandem.dev, kind: FaultInjection, name: flaky }
      backendRefs: [ { name: echo-v2, port: 80 } ]
    - backendRefs:                                 # no matches: every call (the catch-all)
        - { name: echo-v1, port: 80, weight: 100 }
        - { name: echo-v2, port: 80, weight: 0 }     # deployed, not released
"#;

    #[test]
    fn the_documented_example_is_valid() {
        let docs = crate::parse_text(DOCS_EXAMPLE).unwrap();
        let rs = validate_documents(docs).unwrap();
        assert_eq!(rs[0].key.to_string(), "GRPCRoute default/echo");
        let route = crate::domain::grpc_route(&rs[0].doc, 1).unwrap();
        assert_eq!(route.rules.len(), 2);
        assert_eq!(route.rules[0].matches.len(), 2);
    }

    #[test]
    fn a_full_route_is_valid_and_normalized() {
        let text = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: echo }
spec:
  parentRefs: [ { kind: Service, name: echo, port: 80 } ]
  hostnames: []
  rules:
    - matches:
        - method: { service: grpc.health.v1.Health, method: Check }
          headers: [ { name: X-Canary, value: "1" } ]
        - method: { type: RegularExpression, service: "grpc\\.health\\..*" }
        - method: { service: "", method: Watch }
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: { set: [ { name: X-Env, value: prod } ] }
        - type: ResponseHeaderModifier
          responseHeaderModifier: { remove: [ X-Debug ] }
        - type: RequestMirror
          requestMirror: { backendRef: { name: shadow, port: 80 }, percent: 5 }
        - type: ExtensionRef
          extensionRef: { group: tandem.dev, kind: FaultInjection, name: flaky }
      backendRefs: [ { name: echo-v2, port: 80, weight: 0 } ]
    - backendRefs: [ { name: echo-v1, port: 80 } ]
"#;
        let docs = crate::parse_text(text).unwrap();
        let rs = validate_documents(docs).unwrap();
        assert_eq!(rs[0].key.to_string(), "GRPCRoute default/echo");
        let spec = &rs[0].doc["spec"];
        assert!(spec.get("hostnames").is_none(), "{spec}");
        let m = &spec["rules"][0]["matches"];
        assert_eq!(m[0]["headers"][0]["name"], "x-canary");
        assert_eq!(m[0]["method"]["type"], "Exact");
        assert_eq!(m[2]["method"], json!({"type": "Exact", "method": "Watch"}));
        assert_eq!(
            spec["rules"][0]["filters"][0]["requestHeaderModifier"]["set"][0]["name"],
            "x-env"
        );
        assert_eq!(rs[0].doc["apiVersion"], "gateway.networking.k8s.io/v1");
    }

    #[test]
    fn route_level_errors_name_their_field() {
        let e = err(grpc_doc(json!({
            "parentRefs": [{"kind": "Service", "name": "echo"}],
            "hostnames": ["echo.example.com"]
        })));
        assert!(
            e.starts_with("documents[0].spec.hostnames: not supported"),
            "{e}"
        );
        assert_eq!(
            err(grpc_doc(json!({"rules": []}))),
            "documents[0].spec.parentRefs: at least one parentRef (kind: Service) is required"
        );
        assert_eq!(
            err(grpc_doc(json!({"parentRefs": [{"name": "echo"}]}))),
            "documents[0].spec.parentRefs[0].kind: required: Service (Gateway parents are not supported)"
        );
        // Gateway API's GRPCRoute has neither timeouts nor retry: unknown fields.
        let e = err(with_rules(json!([{"timeouts": {"request": "1s"}}])));
        assert!(
            e.starts_with("documents[0].spec.rules[0].timeouts: unknown field `timeouts`"),
            "{e}"
        );
        let e = err(with_rules(json!([{"retry": {"attempts": 1}}])));
        assert!(e.contains("unknown field `retry`"), "{e}");
        let e = err(with_rules(json!([{"name": "first"}])));
        assert!(e.contains("unknown field `name`"), "{e}");
        let e = err(
            grpc_doc(json!({"parentRefs": [{"kind": "Service", "name": "echo"}]}))
                .as_object()
                .map(|o| {
                    let mut o = o.clone();
                    o.insert(
                        "apiVersion".into(),
                        json!("gateway.networking.k8s.io/v1beta1"),
                    );
                    Value::Object(o)
                })
                .unwrap(),
        );
        assert!(
            e.starts_with("documents[0].apiVersion: \"gateway.networking.k8s.io/v1beta1\" is not served for GRPCRoute"),
            "{e}"
        );
    }

    #[test]
    fn method_matches_are_checked_with_paths() {
        let at = "documents[0].spec.rules[0].matches[0].method";
        assert_eq!(
            match_err(json!({"method": {}})),
            format!("{at}: give service, method or both (omit `method` to match every call)")
        );
        assert_eq!(
            match_err(json!({"method": {"service": "", "method": ""}})),
            format!("{at}: give service, method or both (omit `method` to match every call)")
        );
        let e = match_err(json!({"method": {"service": "pkg/Svc"}}));
        assert!(
            e.starts_with(&format!(
                "{at}.service: \"pkg/Svc\" is not a gRPC service name"
            )),
            "{e}"
        );
        for bad in ["1pkg.Svc", "pkg..Svc", "pkg.Svc.", "pkg-x.Svc", "pkg.Svc*"] {
            let e = match_err(json!({"method": {"service": bad}}));
            assert!(e.starts_with(&format!("{at}.service: ")), "{bad}: {e}");
        }
        for good in [".pkg.Svc", "Pkg.V1.Svc_2", "_x"] {
            validate_documents(vec![with_rules(
                json!([{"matches": [{"method": {"service": good}}]}]),
            )])
            .unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        let e = match_err(json!({"method": {"service": "a.B", "method": "Get/Thing"}}));
        assert!(
            e.starts_with(&format!(
                "{at}.method: \"Get/Thing\" is not a gRPC method name"
            )),
            "{e}"
        );
        let e = match_err(json!({"method": {"method": "9Lives"}}));
        assert!(e.starts_with(&format!("{at}.method: ")), "{e}");
        let e = match_err(json!({"method": {"type": "Prefix", "service": "a"}}));
        assert!(
            e.starts_with(&format!("{at}.type: unknown variant `Prefix`")),
            "{e}"
        );
        let e = match_err(json!({"method": {"service": "a".repeat(1025)}}));
        assert_eq!(e, format!("{at}.service: at most 1024 bytes"));
    }

    #[test]
    fn regular_expressions_compile_and_are_not_anchored() {
        let at = "documents[0].spec.rules[0].matches[0].method";
        let e = match_err(json!({"method": {"type": "RegularExpression", "service": "(a"}}));
        assert!(
            e.starts_with(&format!("{at}.service: invalid regular expression")),
            "{e}"
        );
        let e = match_err(json!({"method": {"type": "RegularExpression", "method": "Get[0-9"}}));
        assert!(
            e.starts_with(&format!("{at}.method: invalid regular expression")),
            "{e}"
        );
        let e = match_err(json!({"method": {"type": "RegularExpression", "service": "^a\\.B$"}}));
        assert!(
            e.starts_with(&format!(
                "{at}.service: \"^a\\\\.B$\": drop the ^ and $ anchors"
            )),
            "{e}"
        );
        let e = match_err(json!({"method": {"type": "RegularExpression", "method": "Get.*$"}}));
        assert!(e.starts_with(&format!("{at}.method: ")), "{e}");
        // An escaped dollar is a literal, and regexes need not be identifiers.
        validate_documents(vec![with_rules(json!([{"matches": [{"method": {
            "type": "RegularExpression", "service": "a\\$", "method": "Get|List.*"
        }}]}]))])
        .unwrap();
    }

    #[test]
    fn header_matches_and_filters_are_checked_with_paths() {
        let at = "documents[0].spec.rules[0].matches[0].headers";
        assert_eq!(
            match_err(json!({"headers": [{"name": "bad header", "value": "1"}]})),
            format!("{at}[0].name: \"bad header\" is not a header name")
        );
        assert_eq!(
            match_err(json!({"headers": [{"name": "x", "value": ""}]})),
            format!("{at}[0].value: must not be empty")
        );
        assert_eq!(
            match_err(json!({"headers": [
                {"name": "X-A", "value": "1"},
                {"name": "x-a", "type": "RegularExpression", "value": "2"}
            ]})),
            format!("{at}[1].name: header \"x-a\" is also headers[0]")
        );
        let e = match_err(
            json!({"headers": [{"name": "x", "type": "RegularExpression", "value": "("}]}),
        );
        assert!(
            e.starts_with(&format!("{at}[0].value: invalid regular expression")),
            "{e}"
        );
        let rat = "documents[0].spec.rules[0]";
        assert_eq!(
            err(with_rules(
                json!([{"filters": [{"type": "URLRewrite", "urlRewrite": {"hostname": "x"}}]}])
            )),
            format!(
                "{rat}.filters[0].type: URLRewrite is not a GRPCRoute filter: use \
                 RequestHeaderModifier, ResponseHeaderModifier, RequestMirror or ExtensionRef"
            )
        );
        let e = err(with_rules(json!([{"filters": [{"type": "RequestRedirect",
            "requestRedirect": {"statusCode": 301}}]}])));
        assert!(
            e.starts_with(&format!(
                "{rat}.filters[0].type: RequestRedirect is not a GRPCRoute filter"
            )),
            "{e}"
        );
        assert_eq!(
            err(with_rules(json!([{"filters": [{"type": "ExtensionRef",
                "extensionRef": {"group": "example.com", "kind": "FaultInjection", "name": "f"}}]}]))),
            format!("{rat}.filters[0].extensionRef.group: \"example.com\" is not supported: use tandem.dev")
        );
        assert_eq!(
            err(with_rules(json!([{"filters": [
                {"type": "RequestHeaderModifier", "requestHeaderModifier": {"remove": ["a"]}},
                {"type": "RequestHeaderModifier", "requestHeaderModifier": {"remove": ["b"]}}
            ]}]))),
            format!("{rat}.filters[1].type: only one RequestHeaderModifier filter per rule (also filters[0])")
        );
        assert_eq!(
            err(with_rules(
                json!([{"filters": [{"type": "RequestMirror", "requestMirror":
                {"backendRef": {"name": "shadow"}, "percent": 101}}]}])
            )),
            format!("{rat}.filters[0].requestMirror.percent: must be 0..=100")
        );
        assert_eq!(
            err(with_rules(
                json!([{"backendRefs": [{"name": "v1", "weight": -1}]}])
            )),
            format!("{rat}.backendRefs[0].weight: must be ≥ 0")
        );
        assert_eq!(
            err(with_rules(json!([{"backendRefs": [{"name": "v1", "filters": []}]}]))),
            format!("{rat}.backendRefs[0].filters: per-backend filters are not supported: put the filters on the rule")
        );
    }
}
