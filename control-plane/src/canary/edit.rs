//! Editing route documents: weights of the rules a canary owns, its annotations, and the
//! route a canary creates when none is attached.

use serde_json::{json, Map, Value};

use super::*;

/// Sets stable = 100 − `percent` and canary = `percent` in every rule of `doc` that
/// sends traffic only to them and names the stable; adds the canary's backendRef where
/// missing. Returns whether any rule qualified.
pub fn set_weights(
    doc: &mut Value,
    namespace: &str,
    stable: &str,
    canary: &str,
    percent: u8,
) -> bool {
    let route_ns = route_namespace(doc).to_string();
    let Some(rules) = doc.pointer_mut("/spec/rules").and_then(Value::as_array_mut) else {
        return false;
    };
    let mut any = false;
    for rule in rules {
        let Some(refs) = rule.get_mut("backendRefs").and_then(Value::as_array_mut) else {
            continue;
        };
        let is = |r: &Value, name: &str| refers_to(r, &route_ns, namespace, name);
        if !splits(refs, &route_ns, namespace, stable, canary) {
            continue;
        }
        any = true;
        let mut template: Option<Map<String, Value>> = None;
        let mut has_canary = false;
        for r in refs.iter_mut() {
            if is(r, stable) {
                if template.is_none() {
                    template = r.as_object().cloned();
                }
                r["weight"] = json!(100 - u32::from(percent));
            } else if is(r, canary) {
                has_canary = true;
                r["weight"] = json!(u32::from(percent));
            }
        }
        if !has_canary {
            // The canary's ref looks like the stable's (namespace, port, kind), minus
            // anything specific to the stable (filters).
            let mut added = Map::new();
            if let Some(t) = template {
                for key in ["group", "kind", "namespace", "port"] {
                    if let Some(v) = t.get(key) {
                        added.insert(key.to_string(), v.clone());
                    }
                }
            }
            added.insert("name".into(), json!(canary));
            added.insert("weight".into(), json!(u32::from(percent)));
            refs.push(Value::Object(added));
        }
    }
    any
}

/// Whether a rule with these backendRefs is a canary's to edit: it names the stable and
/// sends traffic nowhere else than the stable and the canary (other backends at weight 0
/// are deployed, not released, and do not count).
fn splits(refs: &[Value], route_ns: &str, namespace: &str, stable: &str, canary: &str) -> bool {
    let is = |r: &Value, name: &str| refers_to(r, route_ns, namespace, name);
    refs.iter().any(|r| is(r, stable))
        && refs.iter().all(|r| {
            is(r, stable) || is(r, canary) || r.get("weight").and_then(Value::as_i64) == Some(0)
        })
}

/// Replaces the canary annotations of `doc` with `state`'s (or removes them).
pub(super) fn set_annotations(doc: &mut Value, state: Option<&CanaryState>) {
    let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let mut annotations = meta
        .get("annotations")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    annotations.retain(|k, _| !k.starts_with(ANNOTATION_PREFIX));
    if let Some(s) = state {
        for (k, v) in s.annotations() {
            annotations.insert(k.to_string(), Value::String(v));
        }
    }
    if annotations.is_empty() {
        meta.remove("annotations");
    } else {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
}

/// `SERVICE-canary`: one catch-all rule splitting between stable and canary.
pub(super) fn new_route(
    target: &Target<'_>,
    name: &str,
    stable: &str,
    canary: &str,
    percent: u8,
) -> Value {
    let reference = |svc: &str, weight: Option<u32>| {
        let mut r = Map::new();
        r.insert("kind".into(), json!("Service"));
        r.insert("name".into(), json!(svc));
        if let Some(Some(port)) = target.services.get(svc) {
            r.insert("port".into(), json!(port));
        }
        if let Some(w) = weight {
            r.insert("weight".into(), json!(w));
        }
        Value::Object(r)
    };
    json!({
        "apiVersion": GATEWAY_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": target.namespace},
        "spec": {
            "parentRefs": [reference(target.service, None)],
            "rules": [{
                "backendRefs": [
                    reference(stable, Some(100 - u32::from(percent))),
                    reference(canary, Some(u32::from(percent))),
                ],
            }],
        },
    })
}

/// The current weights of stable and canary in the first rule a canary of them edits.
pub fn observed_weights(
    target: &Target<'_>,
    stable: &str,
    canary: &str,
) -> Option<BTreeMap<String, i64>> {
    for r in target.attached() {
        let ns = route_namespace(r);
        for rule in r["spec"]["rules"].as_array().into_iter().flatten() {
            let Some(refs) = rule["backendRefs"].as_array() else {
                continue;
            };
            if !splits(refs, ns, target.namespace, stable, canary) {
                continue;
            }
            let weight = |name: &str| {
                refs.iter()
                    .find(|b| refers_to(b, ns, target.namespace, name))
                    .map(|b| b.get("weight").and_then(Value::as_i64).unwrap_or(1))
            };
            if let Some(s) = weight(stable) {
                let mut out = BTreeMap::from([(stable.to_string(), s)]);
                out.insert(canary.to_string(), weight(canary).unwrap_or(0));
                return Some(out);
            }
        }
    }
    None
}

pub(crate) fn route_namespace(doc: &Value) -> &str {
    doc["metadata"]["namespace"]
        .as_str()
        .unwrap_or(tandem_xds::domain::DEFAULT_NAMESPACE)
}

pub(crate) fn route_id(doc: &Value) -> String {
    format!(
        "{}/{}",
        route_namespace(doc),
        doc["metadata"]["name"].as_str().unwrap_or_default()
    )
}

/// Whether a parentRef/backendRef (in a route of namespace `route_ns`) names Service
/// `namespace/name`.
pub(crate) fn refers_to(r: &Value, route_ns: &str, namespace: &str, name: &str) -> bool {
    let group_ok = r
        .get("group")
        .and_then(Value::as_str)
        .is_none_or(|g| g.is_empty() || g == "core");
    let kind_ok = r
        .get("kind")
        .and_then(Value::as_str)
        .is_none_or(|k| k == "Service");
    let ns = r
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or(route_ns);
    group_ok && kind_ok && ns == namespace && r.get("name").and_then(Value::as_str) == Some(name)
}
