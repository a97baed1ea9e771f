//! The CRDs' `openAPIV3Schema`s, checked with Python's `jsonschema` (installed with
//! kubernetes-validate), and the documents they are checked on: the examples of the docs
//! and invalid documents the schemas claim to refuse.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

/// For each (schema, document): `None` when the schema accepts it, else the first error.
pub fn check(python: &Path, cases: &[(Value, Value)]) -> Vec<Option<String>> {
    let script = r#"
import json, sys, jsonschema
out = []
for case in json.load(sys.stdin):
    cls = jsonschema.validators.validator_for(case["schema"], default=jsonschema.Draft4Validator)
    v = cls(case["schema"])
    errors = sorted(v.iter_errors(case["doc"]), key=lambda e: [str(p) for p in e.path])
    out.append(None if not errors else "/".join(map(str, errors[0].path)) + ": " + errors[0].message)
print(json.dumps(out))
"#;
    let input: Vec<Value> = cases
        .iter()
        .map(|(s, d)| json!({"schema": s, "doc": d}))
        .collect();
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&input).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "jsonschema: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every node of a structural schema has a `type`; `properties` and
/// `additionalProperties` never meet; `items` is one schema.
pub fn assert_structural(at: &str, node: &Value) {
    assert!(node["type"].is_string(), "{at}: no type");
    assert!(
        !(node.get("properties").is_some() && node.get("additionalProperties").is_some()),
        "{at}: properties and additionalProperties"
    );
    if let Some(props) = node["properties"].as_object() {
        for (k, v) in props {
            assert_structural(&format!("{at}.{k}"), v);
        }
    }
    if let Some(items) = node.get("items") {
        assert!(items.is_object(), "{at}.items: one schema");
        assert_structural(&format!("{at}[]"), items);
    }
}

/// The documents of Tandem's three kinds in the docs' YAML examples.
pub fn documented_examples(docs_dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for file in ["control-plane.md", "security.md", "kubernetes.md"] {
        let text = std::fs::read_to_string(docs_dir.join(file)).unwrap();
        for block in text.split("```yaml\n").skip(1) {
            let block = block.split("```").next().unwrap();
            let ours = ["DestinationPolicy", "AuthorizationPolicy", "FaultInjection"]
                .iter()
                .any(|k| block.contains(&format!("kind: {k}")));
            if !ours {
                continue;
            }
            let docs = tandem_resources::parse_text(block)
                .unwrap_or_else(|e| panic!("{file}: an example does not parse: {e}\n{block}"));
            out.extend(docs.into_iter().filter(|d| {
                d["apiVersion"] == "tandem.dev/v1alpha1"
                    && ["DestinationPolicy", "AuthorizationPolicy", "FaultInjection"]
                        .contains(&d["kind"].as_str().unwrap_or_default())
            }));
        }
    }
    out
}

fn doc(kind: &str, spec: Value) -> Value {
    json!({"apiVersion": "tandem.dev/v1alpha1", "kind": kind,
           "metadata": {"name": "web", "namespace": "shop"}, "spec": spec})
}

fn policy(spec: Value) -> Value {
    let mut s = json!({"targetRef": {"name": "web"}});
    for (k, v) in spec.as_object().unwrap() {
        s[k] = v.clone();
    }
    doc("DestinationPolicy", s)
}

fn authz_rule(rule: Value) -> Value {
    doc("AuthorizationPolicy", json!({"rules": [rule]}))
}

/// Invalid documents the schemas claim to refuse (and Tandem's validator refuses too).
pub fn invalid_documents() -> Vec<(&'static str, Value)> {
    let mut bad_name = policy(json!({}));
    bad_name["metadata"]["name"] = json!("Web.v1");
    vec![
        (
            "policy without targetRef",
            doc("DestinationPolicy", json!({})),
        ),
        ("policy name not a DNS label", bad_name),
        (
            "targetRef.name not a DNS label",
            doc("DestinationPolicy", json!({"targetRef": {"name": "Web_1"}})),
        ),
        (
            "targetRef.kind not Service",
            doc(
                "DestinationPolicy",
                json!({"targetRef": {"name": "web", "kind": "Deployment"}}),
            ),
        ),
        (
            "targetRef.group",
            doc(
                "DestinationPolicy",
                json!({"targetRef": {"name": "web", "group": "apps"}}),
            ),
        ),
        (
            "unknown loadBalancer",
            policy(json!({"loadBalancer": "random"})),
        ),
        (
            "maxConnections 0",
            policy(json!({"connectionPool": {"maxConnections": 0}})),
        ),
        (
            "maxRequests above u32",
            policy(json!({"connectionPool": {"maxRequests": 4294967296_i64}})),
        ),
        (
            "consecutive5xx 0",
            policy(json!({"outlierDetection": {"consecutive5xx": 0}})),
        ),
        (
            "maxEjectionPercent 101",
            policy(json!({"outlierDetection": {"maxEjectionPercent": 101}})),
        ),
        (
            "baseEjectionTime not a duration",
            policy(json!({"outlierDetection": {"baseEjectionTime": "30 seconds"}})),
        ),
        (
            "maxEjectionTime in days",
            policy(json!({"outlierDetection": {"maxEjectionTime": "1d"}})),
        ),
        (
            "retryBudget.percent -1",
            policy(json!({"retryBudget": {"percent": -1}})),
        ),
        (
            "minRetriesPerSecond too high",
            policy(json!({"retryBudget": {"minRetriesPerSecond": 100001}})),
        ),
        (
            "authz action",
            doc(
                "AuthorizationPolicy",
                json!({"action": "AUDIT", "rules": []}),
            ),
        ),
        ("authz port 0", authz_rule(json!({"ports": [0]}))),
        ("authz port 65536", authz_rule(json!({"ports": [65536]}))),
        (
            "authz lowercase method",
            authz_rule(json!({"methods": ["get"]})),
        ),
        (
            "authz method with a space",
            authz_rule(json!({"methods": ["GE T"]})),
        ),
        (
            "authz * inside a path",
            authz_rule(json!({"paths": ["/a*b"]})),
        ),
        (
            "authz path without / or *",
            authz_rule(json!({"paths": ["api"]})),
        ),
        (
            "authz path with a query",
            authz_rule(json!({"paths": ["/a?b=1"]})),
        ),
        ("authz from entry empty", authz_rule(json!({"from": [{}]}))),
        (
            "authz from entry with two fields",
            authz_rule(json!({"from": [{"namespace": "a", "authenticated": true}]})),
        ),
        (
            "authz authenticated false",
            authz_rule(json!({"from": [{"authenticated": false}]})),
        ),
        (
            "authz principal not SPIFFE",
            authz_rule(json!({"from": [{"principal": "web.shop"}]})),
        ),
        (
            "authz principal trust domain uppercase",
            authz_rule(json!({"from": [{"principal": "spiffe://Cluster.local/ns/a/sa/b"}]})),
        ),
        (
            "authz from namespace not a label",
            authz_rule(json!({"from": [{"namespace": "Shop"}]})),
        ),
        (
            "authz 65 rules",
            doc(
                "AuthorizationPolicy",
                json!({"rules": vec![json!({"ports": [80]}); 65]}),
            ),
        ),
        ("authz 65 ports", authz_rule(json!({"ports": vec![80; 65]}))),
        (
            "fault without delay or abort",
            doc("FaultInjection", json!({})),
        ),
        (
            "fault delay without fixedDelay",
            doc("FaultInjection", json!({"delay": {"percent": 10}})),
        ),
        (
            "fault fixedDelay not a duration",
            doc("FaultInjection", json!({"delay": {"fixedDelay": "2 s"}})),
        ),
        (
            "fault delay percent 150",
            doc(
                "FaultInjection",
                json!({"delay": {"fixedDelay": "1s", "percent": 150}}),
            ),
        ),
        (
            "fault abort status 600",
            doc("FaultInjection", json!({"abort": {"httpStatus": 600}})),
        ),
        (
            "fault abort status 199",
            doc("FaultInjection", json!({"abort": {"httpStatus": 199}})),
        ),
        (
            "fault abort without httpStatus",
            doc("FaultInjection", json!({"abort": {"percent": 5}})),
        ),
    ]
}

/// Valid documents beyond the docs' examples, at the edges of the ranges.
pub fn valid_documents() -> Vec<Value> {
    vec![
        policy(
            json!({"loadBalancer": "roundRobin", "connectionPool": {"maxConnections": 4294967295_i64},
                      "outlierDetection": {"consecutive5xx": 1, "baseEjectionTime": "1m30s",
                                           "maxEjectionTime": "5m", "maxEjectionPercent": 100},
                      "retryBudget": {"percent": 0, "minRetriesPerSecond": 100000}}),
        ),
        doc(
            "AuthorizationPolicy",
            json!({"targetRef": {"name": "web"}, "action": "DENY", "rules": [{
            "from": [{"principal": "spiffe://cluster.local/ns/shop/sa/web"}, {"namespace": "ops"},
                     {"authenticated": true}],
            "paths": ["*", "/api/*", "*.png", "/exact"], "methods": ["GET", "PURGE"],
            "ports": [1, 65535]}]}),
        ),
        doc(
            "FaultInjection",
            json!({"delay": {"fixedDelay": "500ms", "percent": 0.5}}),
        ),
        doc("FaultInjection", json!({"abort": {"httpStatus": 503}})),
    ]
}
