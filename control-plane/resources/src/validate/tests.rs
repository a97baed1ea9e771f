use serde_json::{json, Value};

use super::*;

fn route_doc(rules: Value) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "r"},
        "spec": {"parentRefs": [{"kind": "Service", "name": "reviews", "port": 9080}], "rules": rules}
    })
}

fn err(docs: Vec<Value>) -> String {
    match validate_documents(docs) {
        Ok(r) => panic!("expected an error, got {r:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn contract_example_is_valid() {
    let text = r#"
apiVersion: tandem.dev/v1alpha1
kind: Service
metadata: { name: reviews, namespace: default }
spec:
  ports:
    - { port: 9080, name: http, protocol: http }
---
apiVersion: tandem.dev/v1alpha1
kind: Endpoint
metadata: { namespace: default }
spec:
  service: reviews-v1
  address: 127.0.0.1:9081
  labels: { version: v1 }
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: reviews-split, namespace: default }
spec:
  parentRefs:
    - { kind: Service, name: reviews, port: 9080 }
  rules:
    - matches:
        - path: { type: PathPrefix, value: / }
          headers: [ { name: X-Canary, value: "1" } ]
          queryParams: [ { name: debug, value: "1" } ]
          method: GET
      backendRefs:
        - { name: reviews-v1, port: 9080, weight: 90 }
        - { name: reviews-v2, port: 9080, weight: 10 }
"#;
    let docs = parse_text(text).unwrap();
    assert_eq!(docs.len(), 3);
    let rs = validate_documents(docs).unwrap();
    assert_eq!(rs[0].key.to_string(), "Service default/reviews");
    assert_eq!(
        rs[1].key.to_string(),
        "Endpoint default/reviews-v1-127-0-0-1-9081"
    );
    assert_eq!(rs[2].key.to_string(), "HTTPRoute default/reviews-split");
    // Header names are normalized to lowercase.
    assert_eq!(
        rs[2].doc["spec"]["rules"][0]["matches"][0]["headers"][0]["name"],
        "x-canary"
    );
    let route = crate::domain::http_route(&rs[2].doc, 7).unwrap();
    assert_eq!(route.created, 7);
    assert_eq!(route.rules[0].backends[1].weight, 10);
    assert_eq!(route.parents[0].to_string_pair(), ("default", "reviews"));
}

trait Pair {
    fn to_string_pair(&self) -> (&str, &str);
}
impl Pair for tandem_xds::domain::ServiceRef {
    fn to_string_pair(&self) -> (&str, &str) {
        (&self.namespace, &self.name)
    }
}

#[test]
fn json_and_lists_parse() {
    let docs = parse_text(r#"[{"a": 1}, {"b": 2}]"#).unwrap();
    assert_eq!(docs.len(), 2);
    let docs = parse_text("---\n---\nkind: X\n").unwrap();
    assert_eq!(docs.len(), 1);
    assert!(parse_text("a: [").is_err());
}

#[test]
fn weight_limits_carry_the_path() {
    let doc =
        route_doc(json!([{"backendRefs": [{"name": "a"}, {"name": "b", "weight": 1000001}]}]));
    let other = |n: &str| json!({"apiVersion": "tandem.dev/v1alpha1", "kind": "Service", "metadata": {"name": n}});
    assert_eq!(
        err(vec![other("x"), other("y"), doc]),
        "documents[2].spec.rules[0].backendRefs[1].weight: must be ≤ 1000000"
    );
    let doc = route_doc(json!([{"backendRefs": [{"name": "a", "weight": -1}]}]));
    assert!(err(vec![doc]).ends_with("backendRefs[0].weight: must be ≥ 0"));
    let doc = route_doc(
        json!([{"backendRefs": [{"name": "a", "weight": 0}, {"name": "b", "weight": 1000000}]}]),
    );
    validate_documents(vec![doc]).unwrap();
}

#[test]
fn count_limits() {
    let refs: Vec<Value> = (0..17).map(|i| json!({"name": format!("b{i}")})).collect();
    let e = err(vec![route_doc(json!([{"backendRefs": refs}]))]);
    assert!(
        e.starts_with("documents[0].spec.rules[0].backendRefs: at most 16"),
        "{e}"
    );
    let matches: Vec<Value> = (0..17).map(|_| json!({"method": "GET"})).collect();
    let e = err(vec![route_doc(json!([{"matches": matches}]))]);
    assert!(
        e.starts_with("documents[0].spec.rules[0].matches: at most 16"),
        "{e}"
    );
    let rules: Vec<Value> = (0..65).map(|_| json!({})).collect();
    let e = err(vec![route_doc(Value::Array(rules))]);
    assert!(e.starts_with("documents[0].spec.rules: at most 64"), "{e}");
    let rules: Vec<Value> = (0..64).map(|_| json!({})).collect();
    validate_documents(vec![route_doc(Value::Array(rules))]).unwrap();
}

#[test]
fn names_are_dns_labels() {
    let mut doc = json!({"apiVersion": "tandem.dev/v1alpha1", "kind": "Service", "metadata": {"name": "Reviews"}});
    assert!(err(vec![doc.clone()])
        .starts_with("documents[0].metadata.name: \"Reviews\" is not a DNS label"));
    doc["metadata"]["name"] = json!("a".repeat(64));
    assert!(err(vec![doc.clone()]).starts_with("documents[0].metadata.name:"));
    doc["metadata"]["name"] = json!("-a");
    assert!(err(vec![doc.clone()]).starts_with("documents[0].metadata.name:"));
    doc["metadata"]["name"] = json!("a".repeat(63));
    doc["metadata"]["namespace"] = json!("Prod");
    assert!(err(vec![doc.clone()]).starts_with("documents[0].metadata.namespace:"));
    doc["metadata"]["namespace"] = json!("prod-1");
    validate_documents(vec![doc]).unwrap();
    let e = err(vec![route_doc(json!([{"backendRefs": [{"name": "B_x"}]}]))]);
    assert!(
        e.starts_with("documents[0].spec.rules[0].backendRefs[0].name:"),
        "{e}"
    );
}

#[test]
fn unknown_fields_are_rejected_with_path() {
    let doc = route_doc(json!([{"backendRefs": [{"name": "a", "wieght": 3}]}]));
    let e = err(vec![doc]);
    assert!(
        e.starts_with("documents[0].spec.rules[0].backendRefs[0].wieght: unknown field"),
        "{e}"
    );
    let doc = json!({"apiVersion": "tandem.dev/v1alpha1", "kind": "Service", "metadata": {"name": "a"}, "extra": 1});
    let e = err(vec![doc]);
    assert!(
        e.starts_with("documents[0].extra: unknown field")
            || e.starts_with("documents[0]: unknown field"),
        "{e}"
    );
    let doc = json!({"apiVersion": "tandem.dev/v1alpha1", "kind": "Service", "metadata": {"name": "a"}, "spec": {"ports": [{"port": 1, "protocl": "http"}]}});
    assert!(err(vec![doc]).starts_with("documents[0].spec.ports[0].protocl: unknown field"));
}

#[test]
fn kind_and_api_version_are_checked() {
    let doc =
        json!({"apiVersion": "tandem.dev/v1alpha1", "kind": "Gateway", "metadata": {"name": "a"}});
    assert!(err(vec![doc]).starts_with("documents[0].kind: unknown kind \"Gateway\""));
    let doc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}});
    assert!(err(vec![doc]).starts_with("documents[0].apiVersion:"));
    let doc = json!({"apiVersion": "tandem.dev/v1alpha1", "kind": "HTTPRoute", "metadata": {"name": "a"}});
    assert!(err(vec![doc]).starts_with("documents[0].apiVersion:"));
    let e = err(vec![json!("text")]);
    assert!(
        e.starts_with("documents[0]: a document must be a mapping"),
        "{e}"
    );
}

#[test]
fn regexes_compile_and_are_bounded() {
    let bad =
        route_doc(json!([{"matches": [{"path": {"type": "RegularExpression", "value": "/a("}}]}]));
    let e = err(vec![bad]);
    assert!(
        e.starts_with(
            "documents[0].spec.rules[0].matches[0].path.value: invalid regular expression"
        ),
        "{e}"
    );
    // Backreferences are not RE2 syntax.
    let bad = route_doc(
        json!([{"matches": [{"headers": [{"type": "RegularExpression", "name": "x", "value": "(a)\\1"}]}]}]),
    );
    let e = err(vec![bad]);
    assert!(
        e.starts_with(
            "documents[0].spec.rules[0].matches[0].headers[0].value: invalid regular expression"
        ),
        "{e}"
    );
    let long = route_doc(
        json!([{"matches": [{"queryParams": [{"type": "RegularExpression", "name": "q", "value": "a".repeat(1025)}]}]}]),
    );
    assert!(err(vec![long]).contains("queryParams[0].value: regular expression longer than 1024"));
    let ok = route_doc(
        json!([{"matches": [{"path": {"type": "RegularExpression", "value": "/v[0-9]+/.*"}}]}]),
    );
    validate_documents(vec![ok]).unwrap();
}

#[test]
fn matches_are_checked() {
    let e = err(vec![route_doc(
        json!([{"matches": [{"path": {"value": "a"}}]}]),
    )]);
    assert!(
        e.ends_with("matches[0].path.value: must start with '/'"),
        "{e}"
    );
    let e = err(vec![route_doc(json!([{"matches": [{"method": "get"}]}]))]);
    assert!(e.contains("matches[0].method:"), "{e}");
    let e = err(vec![route_doc(
        json!([{"matches": [{"headers": [{"name": "bad header", "value": "1"}]}]}]),
    )]);
    assert!(e.contains("headers[0].name:"), "{e}");
    let e = err(vec![route_doc(
        json!([{"matches": [{"path": {"type": "Prefix", "value": "/"}}]}]),
    )]);
    assert!(e.contains("matches[0].path.type: unknown variant"), "{e}");
}

#[test]
fn refs_are_checked() {
    let mut doc = route_doc(json!([]));
    doc["spec"]["parentRefs"] = json!([{"name": "reviews"}]);
    assert!(err(vec![doc.clone()]).starts_with("documents[0].spec.parentRefs[0].kind: required"));
    doc["spec"]["parentRefs"] = json!([{"kind": "Gateway", "name": "gw"}]);
    assert!(err(vec![doc.clone()]).starts_with("documents[0].spec.parentRefs[0].kind:"));
    doc["spec"]["parentRefs"] =
        json!([{"group": "core", "kind": "Service", "name": "a", "namespace": "other"}]);
    validate_documents(vec![doc.clone()]).unwrap();
    doc["spec"]["parentRefs"] = json!([]);
    assert!(err(vec![doc.clone()]).starts_with("documents[0].spec.parentRefs: at least one"));
    let e = err(vec![route_doc(
        json!([{"backendRefs": [{"name": "a", "group": "apps"}]}]),
    )]);
    assert!(e.contains("backendRefs[0].group:"), "{e}");
}

#[test]
fn endpoints_and_services_are_checked() {
    let ep = |addr: &str| json!({"apiVersion": "tandem.dev/v1alpha1", "kind": "Endpoint", "spec": {"service": "a", "address": addr}});
    assert!(err(vec![ep("localhost:80")]).starts_with("documents[0].spec.address:"));
    assert!(err(vec![ep("127.0.0.1:0")]).starts_with("documents[0].spec.address:"));
    let r = validate_documents(vec![ep("[::1]:8080")]).unwrap();
    assert_eq!(r[0].key.name, "a-1--8080");
    let svc = |spec: Value| json!({"apiVersion": "tandem.dev/v1alpha1", "kind": "Service", "metadata": {"name": "s"}, "spec": spec});
    assert!(
        err(vec![svc(json!({"ports": [{"port": 80}, {"port": 80}]}))])
            .starts_with("documents[0].spec.ports[1].port:")
    );
    assert!(err(vec![svc(
        json!({"ports": [{"port": 80, "protocol": "udp"}]})
    )])
    .starts_with("documents[0].spec.ports[0].protocol:"));
    assert!(err(vec![svc(json!({"ports": [{"port": 70000}]}))])
        .starts_with("documents[0].spec.ports[0].port:"));
    assert!(err(vec![svc(json!({"dns": {"name": "localhost"}}))])
        .starts_with("documents[0].spec.dns.port:"));
    assert!(err(vec![svc(json!({"dns": {"srv": "example.com"}}))])
        .starts_with("documents[0].spec.dns.srv:"));
    validate_documents(vec![svc(json!({"dns": {"srv": "_http._tcp.example.com"}}))]).unwrap();
    validate_documents(vec![svc(json!({"ports": [{"port": 50051, "protocol": "grpc"}], "dns": {"name": "localhost", "port": 80}}))]).unwrap();
}

#[test]
fn service_addresses_are_ip_literals_a_workload_can_reach() {
    let svc = |addrs: Value| json!({"apiVersion": "tandem.dev/v1alpha1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}], "addresses": addrs}});
    let r = validate_documents(vec![svc(json!(["10.96.0.10", "fd00::10"]))]).unwrap();
    let service = crate::domain::service(&r[0].doc).unwrap();
    assert_eq!(
        service.addresses,
        vec![
            "10.96.0.10".parse::<std::net::IpAddr>().unwrap(),
            "fd00::10".parse().unwrap()
        ]
    );
    for (bad, index) in [
        (json!(["web.local"]), 0),
        (json!(["10.96.0.10", "10.96.0.10"]), 1),
        (json!(["127.0.0.1"]), 0),
        (json!(["0.0.0.0"]), 0),
        (json!(["::"]), 0),
        (json!(["224.0.0.1"]), 0),
        (json!(["10.96.0.10/32"]), 0),
    ] {
        let e = err(vec![svc(bad.clone())]);
        assert!(
            e.starts_with(&format!("documents[0].spec.addresses[{index}]:")),
            "{bad}: {e}"
        );
    }
    assert!(err(vec![svc(json!("10.96.0.10"))]).starts_with("documents[0].spec.addresses"));
}

#[test]
fn service_accounts_are_object_names_listed_once() {
    let svc = |accounts: Value| json!({"apiVersion": "tandem.dev/v1alpha1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"serviceAccounts": accounts}});
    let r = validate_documents(vec![svc(json!(["default", "web.v2"]))]).unwrap();
    let service = crate::domain::service(&r[0].doc).unwrap();
    assert_eq!(service.service_accounts, ["default", "web.v2"]);
    assert_eq!(service.accounts(), ["default", "web.v2"]);
    let none = validate_documents(vec![svc(json!([]))]).unwrap();
    assert_eq!(
        crate::domain::service(&none[0].doc).unwrap().accounts(),
        ["s"]
    );
    for (bad, index) in [
        (json!(["Web"]), 0),
        (json!(["ok", "a..b"]), 1),
        (json!(["x", "x"]), 1),
        (json!([""]), 0),
        (json!(["-a"]), 0),
    ] {
        let e = err(vec![svc(bad.clone())]);
        assert!(
            e.starts_with(&format!("documents[0].spec.serviceAccounts[{index}]:")),
            "{bad}: {e}"
        );
    }
}

#[test]
fn duplicates_in_one_request_are_rejected() {
    let doc =
        json!({"apiVersion": "tandem.dev/v1alpha1", "kind": "Service", "metadata": {"name": "a"}});
    let e = err(vec![doc.clone(), doc]);
    assert!(
        e.starts_with("documents[1].metadata.name: Service default/a is also documents[0]"),
        "{e}"
    );
}

#[test]
fn status_is_ignored_and_not_stored() {
    let doc = json!({"apiVersion": "tandem.dev/v1alpha1", "kind": "Service", "metadata": {"name": "a"}, "status": {"x": 1}});
    let r = validate_documents(vec![doc]).unwrap();
    assert!(r[0].doc.get("status").is_none());
    assert_eq!(r[0].doc["metadata"]["namespace"], "default");
}

// ---- traffic management: filters, timeouts, retry, DestinationPolicy, FaultInjection ----

fn rule_err(rule: Value) -> String {
    err(vec![route_doc(json!([rule]))])
}

fn policy_doc(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "tandem.dev/v1alpha1", "kind": "DestinationPolicy",
           "metadata": {"name": name}, "spec": spec})
}

fn fault_doc(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "tandem.dev/v1alpha1", "kind": "FaultInjection",
           "metadata": {"name": name}, "spec": spec})
}

const FULL_ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: reviews
  annotations: { retry.tandem.dev/non-idempotent: "true" }
spec:
  parentRefs: [ { kind: Service, name: reviews } ]
  rules:
    - matches: [ { path: { type: PathPrefix, value: /api } } ]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [ { name: X-Env, value: prod } ]
            add: [ { name: X-Trace, value: "1" } ]
            remove: [ X-Debug ]
        - type: ResponseHeaderModifier
          responseHeaderModifier: { set: [ { name: Cache-Control, value: no-store } ] }
        - type: URLRewrite
          urlRewrite: { hostname: api.internal, path: { type: ReplacePrefixMatch, replacePrefixMatch: /v2 } }
        - type: RequestMirror
          requestMirror: { backendRef: { name: shadow, port: 9080 }, percent: 20 }
        - type: RequestMirror
          requestMirror: { backendRef: { name: shadow2, namespace: qa }, fraction: { numerator: 1, denominator: 3 } }
        - type: RequestMirror
          requestMirror: { backendRef: { name: shadow3 } }
        - type: ExtensionRef
          extensionRef: { group: tandem.dev, kind: FaultInjection, name: flaky }
      backendRefs: [ { name: reviews-v1, port: 9080 } ]
      timeouts: { request: 2m, backendRequest: 1m0s500ms }
      retry: { codes: [ 503, 502 ], attempts: 3, backoff: 100ms }
    - matches: [ { path: { type: Exact, value: /old } } ]
      filters:
        - type: RequestRedirect
          requestRedirect: { scheme: https, hostname: example.com, port: 8443, path: { type: ReplaceFullPath, replaceFullPath: /new } }
      timeouts: { request: 0s, backendRequest: 5s }
      retry: {}
"#;

#[test]
fn full_route_round_trips_to_the_domain() {
    use std::time::Duration;
    use tandem_xds::domain::{
        Fraction, Header, PathModifier, RequestRedirect, ServiceRef, UrlRewrite,
        DEFAULT_RETRY_BACKOFF,
    };
    let rs = validate_documents(parse_text(FULL_ROUTE).unwrap()).unwrap();
    // Header names are stored lowercase; nothing else changes in the stored form.
    let stored = &rs[0].doc["spec"]["rules"][0]["filters"][0]["requestHeaderModifier"];
    assert_eq!(
        stored,
        &json!({"set": [{"name": "x-env", "value": "prod"}],
                "add": [{"name": "x-trace", "value": "1"}], "remove": ["x-debug"]})
    );
    // Validating the stored form again is a no-op (it is a fixed point).
    let again = validate_documents(vec![rs[0].doc.clone()]).unwrap();
    assert_eq!(again[0].doc, rs[0].doc);

    let route = crate::domain::http_route(&rs[0].doc, 3).unwrap();
    let r0 = &route.rules[0];
    let f = &r0.filters;
    assert_eq!(
        f.request_headers.set,
        vec![Header {
            name: "x-env".into(),
            value: "prod".into()
        }]
    );
    assert_eq!(
        f.request_headers.add,
        vec![Header {
            name: "x-trace".into(),
            value: "1".into()
        }]
    );
    assert_eq!(f.request_headers.remove, vec!["x-debug".to_string()]);
    assert_eq!(f.response_headers.set[0].name, "cache-control");
    assert_eq!(
        f.rewrite,
        Some(UrlRewrite {
            hostname: Some("api.internal".into()),
            path: Some(PathModifier::ReplacePrefixMatch("/v2".into())),
        })
    );
    assert_eq!(f.mirrors.len(), 3);
    assert_eq!(f.mirrors[0].backend, ServiceRef::new("default", "shadow"));
    assert_eq!(f.mirrors[0].fraction, Fraction(200_000));
    assert_eq!(f.mirrors[1].backend, ServiceRef::new("qa", "shadow2"));
    assert_eq!(f.mirrors[1].fraction, Fraction(333_333));
    assert_eq!(f.mirrors[2].fraction, Fraction::ALL);
    assert_eq!(f.fault.as_deref(), Some("flaky"));
    assert_eq!(f.redirect, None);
    assert_eq!(r0.timeouts.request, Some(Duration::from_secs(120)));
    assert_eq!(
        r0.timeouts.backend_request,
        Some(Duration::from_millis(60_500))
    );
    let retry = r0.retry.as_ref().unwrap();
    assert_eq!(retry.attempts, 3);
    assert_eq!(retry.codes, vec![503, 502]);
    assert_eq!(retry.backoff, Duration::from_millis(100));
    assert!(retry.non_idempotent);

    let r1 = &route.rules[1];
    assert_eq!(
        r1.filters.redirect,
        Some(RequestRedirect {
            scheme: Some("https".into()),
            hostname: Some("example.com".into()),
            path: Some(PathModifier::ReplaceFullPath("/new".into())),
            port: Some(8443),
            status_code: 302,
        })
    );
    assert!(r1.backends.is_empty());
    // "0s" is Gateway API's "no timeout": None, like an absent field.
    assert_eq!(r1.timeouts.request, None);
    assert_eq!(r1.timeouts.backend_request, Some(Duration::from_secs(5)));
    let retry = r1.retry.as_ref().unwrap();
    assert_eq!(retry.attempts, 1);
    assert!(retry.codes.is_empty());
    assert_eq!(retry.backoff, DEFAULT_RETRY_BACKOFF);
    assert!(retry.non_idempotent);
}

#[test]
fn routes_without_the_new_fields_store_as_before() {
    let doc = route_doc(json!([{"backendRefs": [{"name": "a"}]}]));
    let r = validate_documents(vec![doc]).unwrap();
    assert_eq!(
        r[0].doc["spec"]["rules"][0],
        json!({"matches": [], "backendRefs": [{"name": "a"}]})
    );
    let route = crate::domain::http_route(&r[0].doc, 1).unwrap();
    assert_eq!(route.rules[0].filters, Default::default());
    assert_eq!(route.rules[0].timeouts, Default::default());
    assert_eq!(route.rules[0].retry, None);
}

#[test]
fn filter_type_and_settings_must_agree() {
    assert_eq!(
        rule_err(json!({"filters": [{"type": "RequestHeaderModifier"}]})),
        "documents[0].spec.rules[0].filters[0].requestHeaderModifier: required when type is RequestHeaderModifier"
    );
    assert_eq!(
        rule_err(json!({"filters": [{"type": "RequestHeaderModifier",
            "requestHeaderModifier": {}, "urlRewrite": {}}]})),
        "documents[0].spec.rules[0].filters[0].urlRewrite: only allowed when type is URLRewrite (type is RequestHeaderModifier)"
    );
    let e = rule_err(json!({"filters": [{"type": "CORS"}]}));
    assert!(
        e.starts_with("documents[0].spec.rules[0].filters[0].type: unknown variant `CORS`"),
        "{e}"
    );
    let e = rule_err(json!({"filters": [{"type": "URLRewrite", "urlRewrite": {"hostnam": "a"}}]}));
    assert!(
        e.starts_with("documents[0].spec.rules[0].filters[0].urlRewrite.hostnam: unknown field"),
        "{e}"
    );
}

#[test]
fn one_filter_of_each_type_except_mirrors() {
    let hm = json!({"type": "RequestHeaderModifier", "requestHeaderModifier": {"remove": ["a"]}});
    assert_eq!(
        rule_err(json!({"filters": [hm.clone(), hm]})),
        "documents[0].spec.rules[0].filters[1].type: only one RequestHeaderModifier filter per rule (also filters[0])"
    );
    let ext = json!({"type": "ExtensionRef", "extensionRef": {"group": "tandem.dev", "kind": "FaultInjection", "name": "f"}});
    assert_eq!(
        rule_err(json!({"filters": [ext.clone(), ext]})),
        "documents[0].spec.rules[0].filters[1].type: only one ExtensionRef filter per rule (also filters[0])"
    );
    let m = json!({"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "s"}}});
    validate_documents(vec![route_doc(json!([{"filters": [m.clone(), m]}]))]).unwrap();
}

#[test]
fn redirect_excludes_rewrite_and_backends() {
    let redirect = json!({"type": "RequestRedirect", "requestRedirect": {"scheme": "https"}});
    let rewrite = json!({"type": "URLRewrite", "urlRewrite": {"hostname": "a.b"}});
    assert_eq!(
        rule_err(json!({"filters": [rewrite, redirect.clone()]})),
        "documents[0].spec.rules[0].filters[1].type: RequestRedirect (filters[1]) and URLRewrite (filters[0]) cannot be combined in one rule"
    );
    assert_eq!(
        rule_err(json!({"filters": [redirect.clone()], "backendRefs": [{"name": "a"}]})),
        "documents[0].spec.rules[0].filters[0]: a RequestRedirect answers the request itself: the rule must have no backendRefs"
    );
    let code = |c: i64| json!({"filters": [{"type": "RequestRedirect", "requestRedirect": {"statusCode": c}}]});
    assert_eq!(
        rule_err(code(304)),
        "documents[0].spec.rules[0].filters[0].requestRedirect.statusCode: 304 is not one of 301, 302, 303, 307, 308"
    );
    for ok in [301, 302, 303, 307, 308] {
        validate_documents(vec![route_doc(json!([code(ok)]))]).unwrap();
    }
    assert_eq!(
        rule_err(json!({"filters": [{"type": "RequestRedirect", "requestRedirect": {"scheme": "ftp"}}]})),
        "documents[0].spec.rules[0].filters[0].requestRedirect.scheme: \"ftp\" is not http or https"
    );
    assert_eq!(
        rule_err(json!({"filters": [{"type": "RequestRedirect", "requestRedirect": {"port": 0}}]})),
        "documents[0].spec.rules[0].filters[0].requestRedirect.port: must be 1..=65535"
    );
    assert_eq!(
        rule_err(json!({"filters": [{"type": "RequestRedirect", "requestRedirect": {"hostname": "Example.com"}}]})),
        "documents[0].spec.rules[0].filters[0].requestRedirect.hostname: \"Example.com\" is not a host name: lowercase DNS labels separated by '.'"
    );
}

#[test]
fn replace_prefix_match_needs_path_prefix_matches() {
    let rewrite = json!({"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/b"}}});
    let e = rule_err(json!({
        "matches": [{"path": {"value": "/a"}}, {"path": {"type": "Exact", "value": "/x"}}],
        "filters": [rewrite.clone()]
    }));
    assert_eq!(
        e,
        "documents[0].spec.rules[0].filters[0].urlRewrite.path.type: ReplacePrefixMatch needs every match of the rule to use a PathPrefix path; matches[1] uses Exact"
    );
    // No matches at all, or matches without a path, mean PathPrefix "/".
    validate_documents(vec![route_doc(json!([{"filters": [rewrite.clone()]}]))]).unwrap();
    validate_documents(vec![route_doc(
        json!([{"matches": [{"method": "GET"}], "filters": [rewrite]}]),
    )])
    .unwrap();
    // An empty replacement is allowed ("/foo/bar" with prefix "/foo" → "/bar").
    validate_documents(vec![route_doc(json!([{"filters": [
        {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": ""}}}
    ]}]))])
    .unwrap();
    assert_eq!(
        rule_err(json!({"filters": [{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath", "replacePrefixMatch": "/b"}}}]})),
        "documents[0].spec.rules[0].filters[0].urlRewrite.path.replacePrefixMatch: not allowed when type is ReplaceFullPath"
    );
    assert_eq!(
        rule_err(json!({"filters": [{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath"}}}]})),
        "documents[0].spec.rules[0].filters[0].urlRewrite.path.replaceFullPath: required when type is ReplaceFullPath"
    );
    assert_eq!(
        rule_err(json!({"filters": [{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath", "replaceFullPath": "new"}}}]})),
        "documents[0].spec.rules[0].filters[0].urlRewrite.path.replaceFullPath: must start with '/'"
    );
    assert_eq!(
        rule_err(json!({"filters": [{"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath", "replaceFullPath": "/a b"}}}]})),
        "documents[0].spec.rules[0].filters[0].urlRewrite.path.replaceFullPath: \"/a b\" is not a path: printable ASCII without spaces, '?' or '#'"
    );
}

#[test]
fn header_filters_are_checked() {
    let hm = |v: Value| json!({"filters": [{"type": "ResponseHeaderModifier", "responseHeaderModifier": v}]});
    assert_eq!(
        rule_err(hm(json!({"set": [{"name": "bad header", "value": "1"}]}))),
        "documents[0].spec.rules[0].filters[0].responseHeaderModifier.set[0].name: \"bad header\" is not a header name"
    );
    assert_eq!(
        rule_err(hm(json!({"add": [{"name": "x", "value": ""}]}))),
        "documents[0].spec.rules[0].filters[0].responseHeaderModifier.add[0].value: must be 1..=4096 bytes"
    );
    assert_eq!(
        rule_err(hm(json!({"add": [{"name": "x", "value": "a\nb"}]}))),
        "documents[0].spec.rules[0].filters[0].responseHeaderModifier.add[0].value: not a valid header value"
    );
    assert_eq!(
        rule_err(hm(json!({"set": [{"name": "X-A", "value": "1"}], "remove": ["x-a"]}))),
        "documents[0].spec.rules[0].filters[0].responseHeaderModifier.remove[0]: header \"x-a\" already has an action (set[0])"
    );
    assert_eq!(
        rule_err(hm(json!({"remove": [":authority"]}))),
        "documents[0].spec.rules[0].filters[0].responseHeaderModifier.remove[0]: \":authority\" is not a header name"
    );
    let many: Vec<Value> = (0..17)
        .map(|i| json!({"name": format!("x-{i}"), "value": "v"}))
        .collect();
    assert_eq!(
        rule_err(hm(json!({"set": many}))),
        "documents[0].spec.rules[0].filters[0].responseHeaderModifier.set: at most 16 entries"
    );
}

#[test]
fn mirrors_are_checked() {
    let mirror = |v: Value| json!({"filters": [{"type": "RequestMirror", "requestMirror": v}]});
    assert_eq!(
        rule_err(mirror(json!({"backendRef": {"name": "s"}, "percent": 101}))),
        "documents[0].spec.rules[0].filters[0].requestMirror.percent: must be 0..=100"
    );
    assert_eq!(
        rule_err(mirror(json!({"backendRef": {"name": "s"}, "percent": 5, "fraction": {"numerator": 1}}))),
        "documents[0].spec.rules[0].filters[0].requestMirror.fraction: give percent or fraction, not both"
    );
    assert_eq!(
        rule_err(mirror(json!({"backendRef": {"name": "s"}, "fraction": {"numerator": 101}}))),
        "documents[0].spec.rules[0].filters[0].requestMirror.fraction.numerator: must be 0..=100 (the denominator)"
    );
    assert_eq!(
        rule_err(mirror(json!({"backendRef": {"name": "s"}, "fraction": {"numerator": 0, "denominator": 0}}))),
        "documents[0].spec.rules[0].filters[0].requestMirror.fraction.denominator: must be 1..=2147483647"
    );
    assert_eq!(
        rule_err(mirror(json!({"backendRef": {"name": "s", "weight": 1}}))),
        "documents[0].spec.rules[0].filters[0].requestMirror.backendRef.weight: not allowed in a mirror's backendRef"
    );
    assert_eq!(
        rule_err(mirror(json!({"backendRef": {"name": "S"}}))),
        "documents[0].spec.rules[0].filters[0].requestMirror.backendRef.name: \"S\" is not a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters"
    );
    let e = rule_err(mirror(json!({"percent": 5})));
    assert!(
        e.starts_with(
            "documents[0].spec.rules[0].filters[0].requestMirror: missing field `backendRef`"
        ),
        "{e}"
    );
}

#[test]
fn extension_refs_name_fault_injections() {
    let ext = |g: &str, k: &str| json!({"filters": [{"type": "ExtensionRef", "extensionRef": {"group": g, "kind": k, "name": "f"}}]});
    assert_eq!(
        rule_err(ext("example.com", "FaultInjection")),
        "documents[0].spec.rules[0].filters[0].extensionRef.group: \"example.com\" is not supported: use tandem.dev"
    );
    assert_eq!(
        rule_err(ext("tandem.dev", "RateLimit")),
        "documents[0].spec.rules[0].filters[0].extensionRef.kind: \"RateLimit\" is not supported: use FaultInjection"
    );
}

#[test]
fn backend_filters_are_not_supported() {
    assert_eq!(
        rule_err(json!({"backendRefs": [{"name": "a", "filters": [{"type": "RequestHeaderModifier"}]}]})),
        "documents[0].spec.rules[0].backendRefs[0].filters: per-backend filters are not supported: put the filters on the rule"
    );
}

#[test]
fn timeouts_are_checked() {
    let e = rule_err(json!({"timeouts": {"request": "10"}}));
    assert!(
        e.starts_with(
            "documents[0].spec.rules[0].timeouts.request: \"10\" is not a Gateway API duration"
        ),
        "{e}"
    );
    let e = rule_err(json!({"timeouts": {"backendRequest": "1.5s"}}));
    assert!(
        e.starts_with("documents[0].spec.rules[0].timeouts.backendRequest: \"1.5s\" is not"),
        "{e}"
    );
    assert_eq!(
        rule_err(json!({"timeouts": {"request": "1s", "backendRequest": "1001ms"}})),
        "documents[0].spec.rules[0].timeouts.backendRequest: \"1001ms\" is longer than the request timeout \"1s\""
    );
    validate_documents(vec![route_doc(
        json!([{"timeouts": {"request": "1s", "backendRequest": "1000ms"}}]),
    )])
    .unwrap();
}

#[test]
fn retries_are_checked() {
    assert_eq!(
        rule_err(json!({"retry": {"codes": [503, 399]}})),
        "documents[0].spec.rules[0].retry.codes[1]: 399 is not 400..=599"
    );
    assert_eq!(
        rule_err(json!({"retry": {"codes": [503, 503]}})),
        "documents[0].spec.rules[0].retry.codes[1]: 503 is listed twice"
    );
    assert_eq!(
        rule_err(json!({"retry": {"attempts": 11}})),
        "documents[0].spec.rules[0].retry.attempts: must be 0..=10"
    );
    assert_eq!(
        rule_err(json!({"retry": {"attempts": -1}})),
        "documents[0].spec.rules[0].retry.attempts: must be 0..=10"
    );
    let e = rule_err(json!({"retry": {"backoff": "fast"}}));
    assert!(
        e.starts_with(
            "documents[0].spec.rules[0].retry.backoff: \"fast\" is not a Gateway API duration"
        ),
        "{e}"
    );
    let mut doc = route_doc(json!([{"retry": {"attempts": 0}}]));
    doc["metadata"]["annotations"] = json!({"retry.tandem.dev/non-idempotent": "yes"});
    assert_eq!(
        err(vec![doc.clone()]),
        "documents[0].metadata.annotations[retry.tandem.dev/non-idempotent]: \"yes\" must be \"true\" or \"false\""
    );
    doc["metadata"]["annotations"] = json!({"retry.tandem.dev/non-idempotent": "false"});
    let r = validate_documents(vec![doc]).unwrap();
    let route = crate::domain::http_route(&r[0].doc, 1).unwrap();
    let retry = route.rules[0].retry.as_ref().unwrap();
    assert_eq!(retry.attempts, 0);
    assert!(!retry.non_idempotent);
}

#[test]
fn destination_policy_defaults_and_round_trip() {
    use std::time::Duration;
    use tandem_xds::domain::{
        CallPolicy, LoadBalancer, OutlierDetection, PoolLimits, RetryBudget, ServiceRef,
    };
    let r = validate_documents(vec![policy_doc(
        "p",
        json!({"targetRef": {"name": "reviews"}}),
    )])
    .unwrap();
    assert_eq!(r[0].key.to_string(), "DestinationPolicy default/p");
    assert_eq!(r[0].doc["apiVersion"], "tandem.dev/v1alpha1");
    let p = crate::domain::destination_policy(&r[0].doc).unwrap();
    assert_eq!(p.target, ServiceRef::new("default", "reviews"));
    assert_eq!(p.policy, CallPolicy::default());
    assert_eq!(p.policy.outlier, None);
    assert_eq!(
        p.policy.retry_budget,
        RetryBudget {
            percent: 20,
            min_retries_per_second: 10
        }
    );

    let text = r#"
apiVersion: tandem.dev/v1alpha1
kind: DestinationPolicy
metadata: { name: reviews, namespace: prod }
spec:
  targetRef: { kind: Service, name: reviews, namespace: shop }
  loadBalancer: leastRequest
  connectionPool: { maxConnections: 100, maxPendingRequests: 10, maxRequests: 50 }
  outlierDetection: { consecutiveGatewayErrors: 3, baseEjectionTime: 10s, maxEjectionTime: 2m, maxEjectionPercent: 30 }
  retryBudget: { percent: 10, minRetriesPerSecond: 5 }
"#;
    let r = validate_documents(parse_text(text).unwrap()).unwrap();
    let p = crate::domain::destination_policy(&r[0].doc).unwrap();
    assert_eq!((p.namespace.as_str(), p.name.as_str()), ("prod", "reviews"));
    assert_eq!(p.target, ServiceRef::new("shop", "reviews"));
    assert_eq!(
        p.policy,
        CallPolicy {
            lb: LoadBalancer::LeastRequest,
            limits: PoolLimits {
                max_connections: Some(100),
                max_pending_requests: Some(10),
                max_requests: Some(50),
            },
            outlier: Some(OutlierDetection {
                consecutive_5xx: None,
                consecutive_gateway_errors: Some(3),
                base_ejection_time: Duration::from_secs(10),
                max_ejection_time: Duration::from_secs(120),
                max_ejection_percent: 30,
            }),
            retry_budget: RetryBudget {
                percent: 10,
                min_retries_per_second: 5
            },
        }
    );
    // An empty outlierDetection turns it on with the documented defaults.
    let r = validate_documents(vec![policy_doc(
        "p",
        json!({"targetRef": {"name": "a"}, "outlierDetection": {}, "loadBalancer": "roundRobin"}),
    )])
    .unwrap();
    let p = crate::domain::destination_policy(&r[0].doc).unwrap();
    assert_eq!(p.policy.outlier, Some(OutlierDetection::default()));
    assert_eq!(p.policy.lb, LoadBalancer::RoundRobin);
    assert_eq!(
        OutlierDetection::default().base_ejection_time,
        crate::domain::DEFAULT_BASE_EJECTION
    );
    assert_eq!(
        OutlierDetection::default().max_ejection_time,
        crate::domain::DEFAULT_MAX_EJECTION
    );
}

#[test]
fn destination_policy_errors_carry_paths() {
    let e = |spec: Value| err(vec![policy_doc("p", spec)]);
    let t = json!({"name": "a"});
    let out = e(json!({}));
    assert!(
        out.starts_with("documents[0].spec: missing field `targetRef`"),
        "{out}"
    );
    assert_eq!(
        e(json!({"targetRef": {"name": "a", "kind": "Deployment"}})),
        "documents[0].spec.targetRef.kind: \"Deployment\" is not supported: use Service"
    );
    let out = e(json!({"targetRef": t, "loadBalancer": "random"}));
    assert!(
        out.starts_with("documents[0].spec.loadBalancer: unknown variant `random`"),
        "{out}"
    );
    assert_eq!(
        e(json!({"targetRef": t, "connectionPool": {"maxRequests": 0}})),
        "documents[0].spec.connectionPool.maxRequests: must be 1..=4294967295"
    );
    assert_eq!(
        e(json!({"targetRef": t, "outlierDetection": {"consecutive5xx": 0}})),
        "documents[0].spec.outlierDetection.consecutive5xx: must be 1..=1000000"
    );
    assert_eq!(
        e(json!({"targetRef": t, "outlierDetection": {"baseEjectionTime": "0s"}})),
        "documents[0].spec.outlierDetection.baseEjectionTime: must be longer than 0s"
    );
    assert_eq!(
        e(json!({"targetRef": t, "outlierDetection": {"baseEjectionTime": "10m"}})),
        "documents[0].spec.outlierDetection.maxEjectionTime: 300s is shorter than baseEjectionTime (600s)"
    );
    assert_eq!(
        e(json!({"targetRef": t, "outlierDetection": {"maxEjectionPercent": 101}})),
        "documents[0].spec.outlierDetection.maxEjectionPercent: must be 0..=100"
    );
    assert_eq!(
        e(json!({"targetRef": t, "retryBudget": {"percent": -1}})),
        "documents[0].spec.retryBudget.percent: must be 0..=100"
    );
    assert_eq!(
        e(json!({"targetRef": t, "retryBudget": {"minRetriesPerSecond": 100001}})),
        "documents[0].spec.retryBudget.minRetriesPerSecond: must be 0..=100000"
    );
    let out = e(json!({"targetRef": t, "outlierDetection": {"consecutive5XX": 1}}));
    assert!(
        out.starts_with("documents[0].spec.outlierDetection.consecutive5XX: unknown field"),
        "{out}"
    );
}

#[test]
fn two_policies_for_one_service_in_one_apply_are_rejected() {
    let a = policy_doc("a", json!({"targetRef": {"name": "reviews"}}));
    let b = policy_doc(
        "b",
        json!({"targetRef": {"name": "reviews", "namespace": "default"}}),
    );
    let svc =
        json!({"apiVersion": "tandem.dev/v1alpha1", "kind": "Service", "metadata": {"name": "x"}});
    assert_eq!(
        err(vec![a.clone(), svc, b]),
        "documents[2].spec.targetRef: service default/reviews already has a DestinationPolicy: DestinationPolicy default/a (documents[0])"
    );
    let other = policy_doc("b", json!({"targetRef": {"name": "ratings"}}));
    validate_documents(vec![a, other]).unwrap();
}

#[test]
fn fault_injection_round_trips_and_is_checked() {
    use std::time::Duration;
    use tandem_xds::domain::{FaultAbort, FaultDelay, FaultInjection, Fraction};
    let r = validate_documents(vec![fault_doc(
        "flaky",
        json!({"delay": {"fixedDelay": "250ms", "percent": 0.5}, "abort": {"httpStatus": 503}}),
    )])
    .unwrap();
    assert_eq!(r[0].key.to_string(), "FaultInjection default/flaky");
    let f = crate::domain::fault_injection(&r[0].doc).unwrap();
    assert_eq!(
        f,
        FaultInjection {
            delay: Some(FaultDelay {
                duration: Duration::from_millis(250),
                fraction: Fraction(5_000),
            }),
            abort: Some(FaultAbort {
                status: 503,
                fraction: Fraction::ALL
            }),
        }
    );
    let e = |spec: Value| err(vec![fault_doc("f", spec)]);
    assert_eq!(e(json!({})), "documents[0].spec: give delay, abort or both");
    assert_eq!(
        e(json!({"abort": {"httpStatus": 600}})),
        "documents[0].spec.abort.httpStatus: must be 200..=599"
    );
    assert_eq!(
        e(json!({"abort": {"httpStatus": 500, "percent": 100.5}})),
        "documents[0].spec.abort.percent: must be 0..=100 (fractions allowed, e.g. 0.5)"
    );
    let out = e(json!({"delay": {"fixedDelay": "1d"}}));
    assert!(
        out.starts_with("documents[0].spec.delay.fixedDelay: \"1d\" is not a Gateway API duration"),
        "{out}"
    );
    let out = e(json!({"delay": {"percent": 5}}));
    assert!(
        out.starts_with("documents[0].spec.delay: missing field `fixedDelay`"),
        "{out}"
    );
}

#[test]
fn new_kinds_have_words_and_plurals() {
    use crate::Kind;
    for w in [
        "policies",
        "policy",
        "destinationpolicy",
        "DestinationPolicies",
        "dp",
    ] {
        assert_eq!(Kind::from_word(w), Some(Kind::DestinationPolicy), "{w}");
    }
    for w in ["faults", "fault", "faultinjection", "FaultInjections"] {
        assert_eq!(Kind::from_word(w), Some(Kind::FaultInjection), "{w}");
    }
    assert_eq!(Kind::DestinationPolicy.plural(), "policies");
    assert_eq!(Kind::FaultInjection.plural(), "faults");
    for w in ["grpcroutes", "grpcroute", "GRPCRoute"] {
        assert_eq!(Kind::from_word(w), Some(Kind::GrpcRoute), "{w}");
    }
    assert_eq!(Kind::GrpcRoute.plural(), "grpcroutes");
    assert_eq!(Kind::from_kind_field("GRPCRoute"), Some(Kind::GrpcRoute));
    assert_eq!(
        Kind::plurals_hint(),
        "services, endpoints, routes, grpcroutes, policies, faults or authorizationpolicies"
    );
    for w in ["authz", "AuthorizationPolicy", "authorizationpolicies"] {
        assert_eq!(Kind::from_word(w), Some(Kind::AuthorizationPolicy), "{w}");
    }
    let doc = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "FaultInjection",
                     "metadata": {"name": "f"}, "spec": {"abort": {"httpStatus": 500}}});
    assert_eq!(
        err(vec![doc]),
        "documents[0].apiVersion: \"gateway.networking.k8s.io/v1\" is not served for FaultInjection: use tandem.dev/v1alpha1"
    );
}

#[test]
fn service_tls_mode_is_checked_and_reaches_the_domain() {
    let svc = |spec: Value| json!({"apiVersion": "tandem.dev/v1alpha1", "kind": "Service", "metadata": {"name": "s"}, "spec": spec});
    let e = err(vec![svc(json!({"mtls": {"mode": "strict"}}))]);
    assert_eq!(
        e,
        "documents[0].spec.mtls.mode: \"strict\" is not a TLS mode: use mutual, permissive or disabled"
    );
    let e = err(vec![svc(json!({"mtls": {"mood": "mutual"}}))]);
    assert!(e.starts_with("documents[0].spec.mtls.mood"), "{e}");
    for (spec, want) in [
        (json!({}), tandem_xds::domain::TlsMode::Mutual),
        (json!({"mtls": {}}), tandem_xds::domain::TlsMode::Mutual),
        (
            json!({"mtls": {"mode": "permissive"}}),
            tandem_xds::domain::TlsMode::Permissive,
        ),
        (
            json!({"mtls": {"mode": "disabled"}}),
            tandem_xds::domain::TlsMode::Disabled,
        ),
    ] {
        let r = validate_documents(vec![svc(spec)]).unwrap();
        let s = crate::domain::service(&r[0].doc).unwrap();
        assert_eq!(s.tls_mode, want);
    }
}
