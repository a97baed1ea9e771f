//! Gateway API route status: whether each parent accepted an `HTTPRoute` or `GRPCRoute`
//! (`Accepted`) and whether everything it names exists (`ResolvedRefs`), computed from the
//! mesh's state, the way Gateway API controllers write it.
//!
//! Outside Kubernetes nothing writes a route's status back into its document: the REST API
//! computes it when a route is read, and `apply` turns unresolved references into warnings
//! (or, when asked to be strict, into a refusal with the field path). In a cluster the same
//! conditions are what gets written to the route's `status` subresource.
//!
//! A reference is resolved when the named resource exists in the store: a parent or
//! backend `Service` (registering an endpoint creates its service), a mirror's `Service`,
//! an `ExtensionRef`'s `FaultInjection`. A port must exist too: a `parentRef.port` among
//! its Service's ports (when it declares some), a `backendRef.port` among those of a
//! Service with several (a Service with one port is one destination whatever port is
//! named). References point at resources, not at endpoints:
//! a backend with no endpoints yet is resolved (its requests get 503 until it has some).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

/// `controllerName` of Tandem's route status entries.
pub const CONTROLLER_NAME: &str = "tandem.dev/mesh";

/// Namespace and name of an existing resource.
pub type Known = BTreeSet<(String, String)>;

/// What the mesh has, as far as route references go.
#[derive(Debug, Clone, Default)]
pub struct World {
    /// Services.
    pub services: Known,
    /// `FaultInjection`s.
    pub faults: Known,
    /// The ports of the services that declare some.
    pub ports: BTreeMap<(String, String), BTreeSet<u16>>,
}

impl World {
    /// Adds the Service `namespace/name` stored as `doc`, with the ports it declares.
    pub fn add_service(&mut self, namespace: &str, name: &str, doc: &Value) {
        let key = (namespace.to_string(), name.to_string());
        // A stored Service was validated; one that no longer parses declares no ports.
        let ports: BTreeSet<u16> = crate::domain::service_spec(doc)
            .map(|spec| spec.ports.iter().map(|p| p.port).collect())
            .unwrap_or_default();
        if ports.is_empty() {
            self.ports.remove(&key);
        } else {
            self.ports.insert(key.clone(), ports);
        }
        self.services.insert(key);
    }
}

/// One reference of a route that names nothing that exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// Where, from the document's root: `spec.rules[0].backendRefs[1]`.
    pub path: String,
    /// What it names: `Service default/web-v3`.
    pub target: String,
    /// The condition it fails: `Accepted` (a parent) or `ResolvedRefs` (the rest).
    pub condition: &'static str,
    /// The reason Gateway API gives: `NoMatchingParent`, `BackendNotFound`, `InvalidFilter`.
    pub reason: &'static str,
}

impl std::fmt::Display for Unresolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} does not exist ({}=False, {})",
            self.path, self.target, self.condition, self.reason
        )
    }
}

/// A reference in a route document.
struct Reference {
    path: String,
    kind: RefKind,
    namespace: String,
    name: String,
    port: Option<u16>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RefKind {
    Parent,
    Backend,
    Mirror,
    Fault,
}

/// Every reference a route document makes, in document order.
fn references(doc: &Value) -> Vec<Reference> {
    let own = doc["metadata"]["namespace"]
        .as_str()
        .filter(|n| !n.is_empty())
        .unwrap_or(tandem_xds::domain::DEFAULT_NAMESPACE)
        .to_string();
    let target = |v: &Value, path: String, kind: RefKind| {
        let name = v["name"].as_str()?.to_string();
        let namespace = v["namespace"]
            .as_str()
            .filter(|n| !n.is_empty())
            .map_or_else(|| own.clone(), str::to_string);
        let port = v["port"].as_u64().and_then(|p| u16::try_from(p).ok());
        Some(Reference {
            path,
            kind,
            namespace,
            name,
            port,
        })
    };
    let mut out = Vec::new();
    let spec = &doc["spec"];
    for (i, p) in spec["parentRefs"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        out.extend(target(p, format!("spec.parentRefs[{i}]"), RefKind::Parent));
    }
    for (i, rule) in spec["rules"].as_array().into_iter().flatten().enumerate() {
        let at = format!("spec.rules[{i}]");
        for (j, b) in rule["backendRefs"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            out.extend(target(
                b,
                format!("{at}.backendRefs[{j}]"),
                RefKind::Backend,
            ));
        }
        for (j, f) in rule["filters"].as_array().into_iter().flatten().enumerate() {
            let fat = format!("{at}.filters[{j}]");
            match f["type"].as_str() {
                Some("RequestMirror") => out.extend(target(
                    &f["requestMirror"]["backendRef"],
                    format!("{fat}.requestMirror.backendRef"),
                    RefKind::Mirror,
                )),
                Some("ExtensionRef") => out.extend(target(
                    &f["extensionRef"],
                    format!("{fat}.extensionRef"),
                    RefKind::Fault,
                )),
                _ => {}
            }
        }
    }
    out
}

/// The references of a route document that name nothing in `world`.
pub fn unresolved(doc: &Value, world: &World) -> Vec<Unresolved> {
    references(doc)
        .into_iter()
        .filter_map(|r| {
            let key = (r.namespace.clone(), r.name.clone());
            let (known, what, condition, reason) = match r.kind {
                RefKind::Parent => (&world.services, "Service", "Accepted", "NoMatchingParent"),
                RefKind::Backend | RefKind::Mirror => (
                    &world.services,
                    "Service",
                    "ResolvedRefs",
                    "BackendNotFound",
                ),
                RefKind::Fault => (
                    &world.faults,
                    "FaultInjection",
                    "ResolvedRefs",
                    "InvalidFilter",
                ),
            };
            let target = format!("{what} {}/{}", r.namespace, r.name);
            let missing = |target| {
                Some(Unresolved {
                    path: r.path.clone(),
                    target,
                    condition,
                    reason,
                })
            };
            if !known.contains(&key) {
                return missing(target);
            }
            let declared = world.ports.get(&key);
            let port_missing = match (r.kind, r.port, declared) {
                (RefKind::Parent, Some(port), Some(ports)) => !ports.contains(&port),
                (RefKind::Backend, Some(port), Some(ports)) if ports.len() > 1 => {
                    !ports.contains(&port)
                }
                _ => false,
            };
            if port_missing {
                return missing(format!("port {} of {target}", r.port.unwrap_or_default()));
            }
            None
        })
        .collect()
}

/// The Gateway API `status.parents` of a route document: one entry per parent Service
/// with its `Accepted` and the route's `ResolvedRefs` condition; `observed` is the
/// revision (or, in a cluster, the generation) the conditions were computed for.
pub fn route_status(doc: &Value, world: &World, observed: u64) -> Value {
    let problems = unresolved(doc, world);
    let refs: Vec<&Unresolved> = problems
        .iter()
        .filter(|p| p.condition == "ResolvedRefs")
        .collect();
    let resolved = match refs.first() {
        None => condition(
            "ResolvedRefs",
            true,
            "ResolvedRefs",
            "every reference names an existing resource",
            observed,
        ),
        Some(first) => {
            let message = refs
                .iter()
                .map(|p| format!("{}: {} does not exist", p.path, p.target))
                .collect::<Vec<_>>()
                .join("; ");
            // The first failure's reason: backends before filters in document order.
            let reason = if refs.iter().any(|p| p.reason == "BackendNotFound") {
                "BackendNotFound"
            } else {
                first.reason
            };
            condition("ResolvedRefs", false, reason, &message, observed)
        }
    };
    let parents: Vec<Value> = doc["spec"]["parentRefs"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, parent)| {
            let path = format!("spec.parentRefs[{i}]");
            let accepted = match problems.iter().find(|p| p.path == path) {
                Some(p) => condition(
                    "Accepted",
                    false,
                    "NoMatchingParent",
                    &format!("{} does not exist", p.target),
                    observed,
                ),
                None => condition(
                    "Accepted",
                    true,
                    "Accepted",
                    "the route applies to traffic for this Service",
                    observed,
                ),
            };
            json!({
                "parentRef": parent,
                "controllerName": CONTROLLER_NAME,
                "conditions": [accepted, resolved.clone()],
            })
        })
        .collect();
    Value::Array(parents)
}

fn condition(kind: &str, status: bool, reason: &str, message: &str, observed: u64) -> Value {
    json!({
        "type": kind,
        "status": if status { "True" } else { "False" },
        "reason": reason,
        "message": message,
        "observedGeneration": observed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(items: &[(&str, &str)]) -> Known {
        items
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect()
    }

    fn route() -> Value {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "r", "namespace": "shop"},
            "spec": {
                "parentRefs": [{"kind": "Service", "name": "web", "port": 80},
                               {"kind": "Service", "name": "api", "namespace": "other"}],
                "rules": [
                    {"backendRefs": [{"name": "web-v1", "port": 80}, {"name": "web-v3", "port": 80}]},
                    {"backendRefs": [{"name": "web-v1", "port": 80}],
                     "filters": [
                        {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "shadow"}}},
                        {"type": "ExtensionRef", "extensionRef": {"group": "tandem.dev", "kind": "FaultInjection", "name": "slow"}}
                     ]}
                ]
            }
        })
    }

    #[test]
    fn every_unknown_reference_is_named_with_its_path_and_reason() {
        let world = World {
            services: known(&[("shop", "web"), ("shop", "web-v1")]),
            faults: Known::new(),
            ..World::default()
        };
        let got: Vec<String> = unresolved(&route(), &world)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            got,
            [
                "spec.parentRefs[1]: Service other/api does not exist (Accepted=False, NoMatchingParent)",
                "spec.rules[0].backendRefs[1]: Service shop/web-v3 does not exist (ResolvedRefs=False, BackendNotFound)",
                "spec.rules[1].filters[0].requestMirror.backendRef: Service shop/shadow does not exist (ResolvedRefs=False, BackendNotFound)",
                "spec.rules[1].filters[1].extensionRef: FaultInjection shop/slow does not exist (ResolvedRefs=False, InvalidFilter)",
            ]
        );
    }

    #[test]
    fn status_has_one_entry_per_parent_in_gateway_api_form() {
        let mut world = World {
            services: known(&[("shop", "web"), ("shop", "web-v1")]),
            faults: Known::new(),
            ..World::default()
        };
        let parents = route_status(&route(), &world, 7);
        assert_eq!(parents[0]["parentRef"]["name"], "web");
        assert_eq!(parents[0]["controllerName"], CONTROLLER_NAME);
        let c = &parents[0]["conditions"];
        assert_eq!(c[0]["type"], "Accepted");
        assert_eq!(c[0]["status"], "True");
        assert_eq!(c[1]["type"], "ResolvedRefs");
        assert_eq!(c[1]["status"], "False");
        assert_eq!(c[1]["reason"], "BackendNotFound");
        assert_eq!(c[1]["observedGeneration"], 7);
        assert!(c[1]["message"].as_str().unwrap().contains("shop/web-v3"));
        assert_eq!(parents[1]["conditions"][0]["reason"], "NoMatchingParent");

        // Everything there: accepted and resolved everywhere.
        for s in ["web-v3", "shadow"] {
            world.services.insert(("shop".into(), s.into()));
        }
        world.services.insert(("other".into(), "api".into()));
        world.faults.insert(("shop".into(), "slow".into()));
        let parents = route_status(&route(), &world, 8);
        for p in parents.as_array().unwrap() {
            for c in p["conditions"].as_array().unwrap() {
                assert_eq!(c["status"], "True", "{c}");
            }
        }
        assert!(unresolved(&route(), &world).is_empty());
    }

    #[test]
    fn only_a_missing_filter_is_invalid_filter() {
        let world = World {
            services: known(&[
                ("shop", "web"),
                ("shop", "web-v1"),
                ("shop", "web-v3"),
                ("shop", "shadow"),
                ("other", "api"),
            ]),
            faults: Known::new(),
            ..World::default()
        };
        let parents = route_status(&route(), &world, 1);
        assert_eq!(parents[0]["conditions"][1]["reason"], "InvalidFilter");
    }

    #[test]
    fn a_port_must_be_one_the_service_declares() {
        let mut world = World::default();
        world.add_service(
            "shop",
            "web",
            &json!({"spec": {"ports": [{"port": 80}, {"port": 9090}]}}),
        );
        world.add_service("shop", "one", &json!({"spec": {"ports": [{"port": 8080}]}}));
        world.add_service("shop", "bare", &json!({"spec": {}}));
        let doc = json!({
            "metadata": {"name": "r", "namespace": "shop"},
            "spec": {
                "parentRefs": [{"name": "web", "port": 9090}, {"name": "web", "port": 81},
                               {"name": "one", "port": 80}, {"name": "bare", "port": 80}],
                "rules": [{"backendRefs": [{"name": "web", "port": 9090}, {"name": "web", "port": 7},
                                           {"name": "one", "port": 7}, {"name": "bare", "port": 7}]}]
            }
        });
        let got: Vec<String> = unresolved(&doc, &world)
            .iter()
            .map(ToString::to_string)
            .collect();
        // A parent's port is checked against any declared ports; a backend's only where
        // the Service has several (one port is one destination whatever port is named).
        assert_eq!(
            got,
            [
                "spec.parentRefs[1]: port 81 of Service shop/web does not exist (Accepted=False, NoMatchingParent)",
                "spec.parentRefs[2]: port 80 of Service shop/one does not exist (Accepted=False, NoMatchingParent)",
                "spec.rules[0].backendRefs[1]: port 7 of Service shop/web does not exist (ResolvedRefs=False, BackendNotFound)",
            ]
        );
        let parents = route_status(&doc, &world, 3);
        assert_eq!(parents[0]["conditions"][0]["status"], "True");
        assert_eq!(parents[1]["conditions"][0]["reason"], "NoMatchingParent");

        // Declaring the port again accepts the parent; dropping the ports forgets them.
        world.add_service("shop", "one", &json!({"spec": {}}));
        assert!(unresolved(&doc, &world)
            .iter()
            .all(|u| !u.path.starts_with("spec.parentRefs[2]")));
    }
}
