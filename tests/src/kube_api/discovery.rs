//! Discovery documents, what `kubectl` reads before anything else to learn which resources
//! exist, their kinds, scopes and verbs: the legacy (unaggregated) forms `/api`, `/apis`,
//! `/apis/<group>` and one resource list per group version. Clients that ask for aggregated
//! discovery (`apidiscovery.k8s.io/v2`) fall back to these when the answer is plain
//! `application/json`, as kubectl does.

use serde_json::{json, Value};

use super::resources::{groups, ResourceType, TYPES};

/// `/version`: the Kubernetes release the served types follow.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-tandem-test",
        "platform": "linux/amd64",
    })
}

/// `/api`: the core group's versions.
pub fn core_versions(server_addr: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": server_addr }],
    })
}

fn group_doc(group: &str) -> Value {
    let versions: Vec<Value> = groups()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({ "groupVersion": format!("{g}/{v}"), "version": v }))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({ "name": group, "versions": versions, "preferredVersion": preferred })
}

/// `/apis`: every named group.
pub fn group_list() -> Value {
    let mut names: Vec<&str> = Vec::new();
    for (g, _) in groups() {
        if !g.is_empty() && !names.contains(&g) {
            names.push(g);
        }
    }
    let docs: Vec<Value> = names.into_iter().map(group_doc).collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": docs })
}

/// `/apis/<group>`, or `None` for a group not served.
pub fn group(group: &str) -> Option<Value> {
    groups().iter().any(|(g, _)| *g == group).then(|| {
        let mut doc = group_doc(group);
        doc["kind"] = json!("APIGroup");
        doc["apiVersion"] = json!("v1");
        doc
    })
}

fn resource_entries(t: &ResourceType) -> Vec<Value> {
    let mut out = vec![json!({
        "name": t.plural,
        "singularName": t.singular,
        "namespaced": t.namespaced,
        "kind": t.kind,
        "verbs": t.verbs(),
        "shortNames": t.short_names,
    })];
    if t.status_subresource {
        out.push(json!({
            "name": format!("{}/status", t.plural),
            "singularName": "",
            "namespaced": t.namespaced,
            "kind": t.kind,
            "verbs": ["get", "patch", "update"],
        }));
    }
    out
}

/// `/api/v1` or `/apis/<group>/<version>`: the resources of one group version.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let types: Vec<&ResourceType> = TYPES
        .iter()
        .filter(|t| t.group == group && t.version == version)
        .collect();
    if types.is_empty() {
        return None;
    }
    let group_version = types.first().map(|t| t.api_version()).unwrap_or_default();
    let resources: Vec<Value> = types.into_iter().flat_map(resource_entries).collect();
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}
