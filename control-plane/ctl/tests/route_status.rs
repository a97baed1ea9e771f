//! Route status outside Kubernetes: `apply` warns about (or, with `--strict`, refuses) a
//! route whose parent, backends, mirrors or fault filters name nothing that exists, and
//! `get routes` shows the Gateway API conditions, which follow the mesh as it changes.
#![allow(clippy::unwrap_used)]

mod support;

use serde_json::Value;
use support::{write, ControlPlane, TempDir};

const ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: split, namespace: shop }
spec:
  parentRefs: [{ kind: Service, name: web, port: 80 }]
  rules:
    - backendRefs: [{ name: web-v1, port: 80, weight: 90 }, { name: web-v2, port: 80, weight: 10 }]
";

fn service(name: &str) -> String {
    format!(
        "apiVersion: tandem.dev/v1alpha1\nkind: Service\nmetadata: {{ name: {name}, namespace: shop }}\n\
         spec: {{ ports: [{{ port: 80, protocol: http }}] }}\n"
    )
}

/// The conditions of the route's first parent, by type: (status, reason).
fn conditions(route: &Value) -> Vec<(String, String, String)> {
    route["status"]["parents"][0]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
                c["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn cond(t: &str, s: &str, r: &str) -> (String, String, String) {
    (t.into(), s.into(), r.into())
}

#[test]
fn strict_apply_refuses_unknown_references_with_their_path_and_applies_nothing() {
    let dir = TempDir::new("strict");
    let cp = ControlPlane::start(dir.path(), &[]);
    let route = write(dir.path(), "route.yaml", ROUTE);
    let out = cp.ctl(&["apply", "--strict", "-f", &route]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("documents[0].spec.parentRefs[0]")
            && err.contains("Service shop/web does not exist"),
        "{err}"
    );
    assert!(
        cp.json(&["get", "routes"])["items"]
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing applied"
    );

    // The same file with the services it names (one an endpoint's, created with it) passes.
    let endpoint =
        "apiVersion: tandem.dev/v1alpha1\nkind: Endpoint\nmetadata: { namespace: shop }\n\
                    spec: { service: web-v2, address: \"127.0.0.1:9082\" }\n";
    let all = write(
        dir.path(),
        "all.yaml",
        &[
            ROUTE.to_string(),
            service("web"),
            service("web-v1"),
            endpoint.to_string(),
        ]
        .join("---\n"),
    );
    let out = cp.ctl(&["apply", "--strict", "-f", &all]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).is_empty(), "{out:?}");
}

#[test]
fn apply_warns_and_get_routes_shows_conditions_that_follow_the_mesh() {
    let dir = TempDir::new("status");
    let cp = ControlPlane::start(dir.path(), &[]);
    let parent = write(
        dir.path(),
        "web.yaml",
        &[service("web"), service("web-v1")].join("---\n"),
    );
    cp.ok(&["apply", "-f", &parent]);
    let route = write(dir.path(), "route.yaml", ROUTE);
    let out = cp.ctl(&["apply", "-f", &route]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "Warning: HTTPRoute shop/split: spec.rules[0].backendRefs[1]: Service shop/web-v2 does not exist (ResolvedRefs=False, BackendNotFound)"
    );

    let got = cp.json(&["get", "routes", "split", "-n", "shop"]);
    assert_eq!(
        conditions(&got),
        [
            cond("Accepted", "True", "Accepted"),
            cond("ResolvedRefs", "False", "BackendNotFound")
        ]
    );
    assert_eq!(got["status"]["parents"][0]["parentRef"]["name"], "web");
    assert_eq!(
        got["status"]["parents"][0]["controllerName"],
        "tandem.dev/mesh"
    );
    assert!(got["status"]["parents"][0]["conditions"][1]["message"]
        .as_str()
        .unwrap()
        .contains("shop/web-v2"));
    let table = cp.ok(&["get", "routes"]);
    assert!(
        table.contains("ACCEPTED") && table.contains("False(BackendNotFound)"),
        "{table}"
    );

    // The backend appears: resolved, without touching the route.
    let v2 = write(dir.path(), "v2.yaml", &service("web-v2"));
    cp.ok(&["apply", "-f", &v2]);
    let got = cp.json(&["get", "routes", "split", "-n", "shop"]);
    assert_eq!(
        conditions(&got),
        [
            cond("Accepted", "True", "Accepted"),
            cond("ResolvedRefs", "True", "ResolvedRefs")
        ]
    );
    // The parent goes: no longer accepted, as the list says too.
    cp.ok(&["delete", "service", "web", "-n", "shop"]);
    let list = cp.json(&["get", "routes"]);
    assert_eq!(
        conditions(&list["items"][0])[0],
        cond("Accepted", "False", "NoMatchingParent")
    );
}
