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
    let route = crate::resources::domain::http_route(&rs[2].doc, 7).unwrap();
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
