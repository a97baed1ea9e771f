//! The CustomResourceDefinitions of Tandem's own kinds (`tandem.dev/v1alpha1`):
//! `DestinationPolicy`, `AuthorizationPolicy`, `FaultInjection`, namespaced.
//!
//! Their `openAPIV3Schema`s are structural (every node typed, no `additionalProperties`
//! beside `properties`) and mirror the serde forms of `tandem_resources::spec`. They refuse
//! what OpenAPI can say of the rules in `tandem_resources::validate`: required fields,
//! enums, integer ranges, duration and name patterns, list lengths, "at least one of"
//! (`minProperties`) and "exactly one of" (`minProperties` = `maxProperties` = 1) where the
//! object has no other fields. The rest stays with the control plane's own validation,
//! which runs on every object it reads: `maxEjectionTime` not shorter than
//! `baseEjectionTime`, a zero `baseEjectionTime`, `.` and `..` in a SPIFFE path, a policy
//! per Service. No CEL (`x-kubernetes-validations`): every rule here is plain OpenAPI.
//! Unknown fields are pruned by the API server, and refused by `kubectl`'s default
//! server-side field validation (strict).

use serde_json::{json, Value};

use super::render::{meta, Manifest};

/// The API group.
pub const GROUP: &str = "tandem.dev";

/// A DNS label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63), as names must be.
const LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A Gateway API duration (GEP-2257), as `tandem_resources::duration` reads it.
const DURATION: &str = "^([0-9]{1,5}(h|m|s|ms)){1,4}$";

fn label() -> Value {
    json!({"type": "string", "maxLength": 63, "pattern": LABEL})
}

fn int(min: i64, max: i64) -> Value {
    json!({"type": "integer", "format": "int64", "minimum": min, "maximum": max})
}

fn duration() -> Value {
    json!({"type": "string", "maxLength": 32, "pattern": DURATION})
}

fn percent() -> Value {
    json!({"type": "number", "minimum": 0, "maximum": 100})
}

fn object(properties: Value) -> Value {
    json!({"type": "object", "properties": properties})
}

fn list(max: usize, items: Value) -> Value {
    json!({"type": "array", "maxItems": max, "items": items})
}

/// `targetRef`: a Service, by name, in the policy's namespace unless given.
fn target_ref() -> Value {
    let mut t = object(json!({
        "group": {"type": "string", "enum": ["", "core"]},
        "kind": {"type": "string", "enum": ["Service"]},
        "name": label(),
        "namespace": label(),
    }));
    t["required"] = json!(["name"]);
    t
}

fn destination_policy() -> Value {
    let mut spec = object(json!({
        "targetRef": target_ref(),
        "loadBalancer": {"type": "string", "enum": ["peakEwma", "leastRequest", "roundRobin"]},
        "connectionPool": object(json!({
            "maxConnections": int(1, u32::MAX.into()),
            "maxPendingRequests": int(1, u32::MAX.into()),
            "maxRequests": int(1, u32::MAX.into()),
        })),
        "outlierDetection": object(json!({
            "consecutive5xx": int(1, 1_000_000),
            "consecutiveGatewayErrors": int(1, 1_000_000),
            "baseEjectionTime": duration(),
            "maxEjectionTime": duration(),
            "maxEjectionPercent": int(0, 100),
        })),
        "retryBudget": object(json!({
            "percent": int(0, 100),
            "minRetriesPerSecond": int(0, 100_000),
        })),
    }));
    spec["required"] = json!(["targetRef"]);
    spec
}

fn authorization_policy() -> Value {
    let mut source = object(json!({
        "principal": {"type": "string", "maxLength": 1024,
                      "pattern": "^spiffe://[a-z0-9._-]+(/[A-Za-z0-9._-]+)+$"},
        "namespace": label(),
        // `false` means nothing (omit `from` to match anyone): refused.
        "authenticated": {"type": "boolean", "enum": [true]},
    }));
    source["minProperties"] = json!(1);
    source["maxProperties"] = json!(1);
    object(json!({
        "targetRef": target_ref(),
        "action": {"type": "string", "enum": ["ALLOW", "DENY"]},
        "rules": list(64, object(json!({
            "from": list(64, source),
            // `*`, or `/...` with an optional trailing `*`, or `*...` (suffix): one `*`
            // at most, no spaces, `?`, `#` or control characters.
            "paths": list(64, {
                json!({"type": "string", "maxLength": 1024,
                       "pattern": "^(\\*|/[^*?# \\x00-\\x1f\\x7f]*\\*?|\\*[^*?# \\x00-\\x1f\\x7f]+)$"})
            }),
            // An uppercase HTTP token.
            "methods": list(64, json!({"type": "string", "maxLength": 32,
                                       "pattern": "^[A-Z0-9!#$%&'*+.^_`|~-]+$"})),
            "ports": list(64, int(1, 65535)),
        }))),
    }))
}

fn fault_injection() -> Value {
    let mut delay = object(json!({"fixedDelay": duration(), "percent": percent()}));
    delay["required"] = json!(["fixedDelay"]);
    let mut abort = object(json!({"httpStatus": int(200, 599), "percent": percent()}));
    abort["required"] = json!(["httpStatus"]);
    let mut spec = object(json!({"delay": delay, "abort": abort}));
    // Its only fields are delay and abort: at least one of them.
    spec["minProperties"] = json!(1);
    spec
}

fn crd(kind: &str, plural: &str, short: &[&str], doc: &str, spec: Value) -> Manifest {
    let mut top = object(json!({
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        // Names are DNS labels (Tandem names xDS resources after them); only name and
        // generateName may be constrained in a CRD's metadata.
        "metadata": object(json!({"name": label()})),
        "spec": spec,
    }));
    top["required"] = json!(["spec"]);
    top["description"] = json!(doc);
    Manifest::new(
        "crds.yaml",
        "",
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": meta(&format!("{plural}.{GROUP}"), None),
            "spec": {
                "group": GROUP,
                "scope": "Namespaced",
                "names": {"kind": kind, "listKind": format!("{kind}List"), "plural": plural,
                          "singular": kind.to_ascii_lowercase(), "shortNames": short,
                          "categories": ["tandem"]},
                "versions": [{
                    "name": "v1alpha1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": top},
                }],
            },
        }),
    )
}

/// The three CRDs.
pub fn crds() -> Vec<Manifest> {
    let mut out = vec![
        crd("DestinationPolicy", "destinationpolicies", &["dpol"],
            "How every client calls one Service: load balancer, connection limits, outlier detection, retry budget.",
            destination_policy()),
        crd("AuthorizationPolicy", "authorizationpolicies", &["authz"],
            "Which client identities may call a Service, on which paths, methods and ports.",
            authorization_policy()),
        crd("FaultInjection", "faultinjections", &["fault"],
            "Delays and errors injected by an HTTPRoute's ExtensionRef filter.",
            fault_injection()),
    ];
    out[0].comment =
        "# Tandem's own kinds. Gateway API's HTTPRoute and GRPCRoute are not here: install\n\
                      # them from the Gateway API release (standard channel) first.";
    out
}

/// The `openAPIV3Schema` of each CRD, by kind, for tests and the docs.
pub fn schemas() -> Vec<(String, Value)> {
    crds()
        .into_iter()
        .map(|m| {
            let kind = m.body["spec"]["names"]["kind"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (
                kind,
                m.body["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone(),
            )
        })
        .collect()
}
