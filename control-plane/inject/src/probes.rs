//! Kubelet's probes behind the proxy.
//!
//! Kubelet probes the pod's IP from the node, in plaintext and without a mesh identity.
//! Once the redirection rules are in place those connections land on the proxy's inbound
//! port, where a closed policy or mutual TLS would refuse them. So an `httpGet` or
//! `tcpSocket` probe of an app container is rewritten into an `httpGet` on the proxy's
//! admin port (which the rules leave alone) at `/app-health/<container>/<livez|readyz|startupz>`,
//! and the original goes to the proxy in `TANDEM_APP_PROBES`, keyed by that path, with a
//! named port resolved to its number: the proxy performs the original check against the
//! app over loopback and answers with its result. Rewriting (rather than excluding the
//! app's port from redirection, Linkerd's way) keeps the app port meshed: a health port
//! that is also the service port would otherwise be open to plaintext from anywhere.
//!
//! gRPC and HTTPS probes are not rewritten (the admin port speaks HTTP/1, and the proxy
//! checks plaintext HTTP only): their port joins the inbound skip list instead. `exec`
//! probes need nothing. A probe with `host` set goes to another address than the pod's and
//! is left as it is. `TANDEM_APP_PROBES` carries the check only (`httpGet` or
//! `tcpSocket`); the timing fields stay in the pod spec, where kubelet enforces them.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

/// The probe fields, each with the last segment of its admin path.
pub const PROBES: [(&str, &str); 3] = [
    ("livenessProbe", "livez"),
    ("readinessProbe", "readyz"),
    ("startupProbe", "startupz"),
];

/// The env var that carries the original probes to the proxy.
pub const APP_PROBES_ENV: &str = "TANDEM_APP_PROBES";

/// One probe to replace: `spec.<list>[index].<field>` becomes `probe`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rewrite {
    /// `containers` or `initContainers`.
    pub list: &'static str,
    /// The container's index in that list (before any container is added).
    pub index: usize,
    /// The probe field.
    pub field: &'static str,
    /// The rewritten probe.
    pub probe: Value,
}

/// What to do with a pod's probes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Probes to replace.
    pub rewrites: Vec<Rewrite>,
    /// `TANDEM_APP_PROBES`: admin path → the original check (`{"httpGet": ...}` or
    /// `{"tcpSocket": ...}`), its port resolved.
    pub app_probes: BTreeMap<String, Value>,
    /// The originals as written, for uninject: container → field → probe.
    pub originals: BTreeMap<String, BTreeMap<String, Value>>,
    /// Ports of gRPC probes, to leave out of inbound redirection.
    pub skip_inbound: Vec<u16>,
    /// Probes left alone, and why.
    pub warnings: Vec<String>,
}

/// The admin path of `container`'s probe ending in `what`.
pub fn admin_path(container: &str, what: &str) -> String {
    format!("/app-health/{container}/{what}")
}

/// Plans the probes of `spec`'s app containers (and of its own native sidecars, init
/// containers with `restartPolicy: Always`, which kubelet probes the same way).
pub fn plan(spec: &Value, admin_port: u16) -> Plan {
    let mut plan = Plan::default();
    for list in ["containers", "initContainers"] {
        let Some(containers) = spec[list].as_array() else {
            continue;
        };
        for (index, c) in containers.iter().enumerate() {
            if list == "initContainers" && c["restartPolicy"].as_str() != Some("Always") {
                continue;
            }
            let name = c["name"].as_str().unwrap_or_default();
            for (field, what) in PROBES {
                let Some(probe) = c.get(field).filter(|p| p.is_object()) else {
                    continue;
                };
                plan_one(
                    &mut plan,
                    c,
                    name,
                    (list, index, field, what),
                    probe,
                    admin_port,
                );
            }
        }
    }
    plan.skip_inbound.sort_unstable();
    plan.skip_inbound.dedup();
    plan
}

fn plan_one(
    plan: &mut Plan,
    container: &Value,
    name: &str,
    (list, index, field, what): (&'static str, usize, &'static str, &str),
    probe: &Value,
    admin_port: u16,
) {
    if let Some(port) = probe["grpc"]["port"].as_u64() {
        if let Ok(port) = u16::try_from(port) {
            plan.skip_inbound.push(port);
        }
        return;
    }
    let handler = ["httpGet", "tcpSocket"]
        .into_iter()
        .find(|h| probe[*h].is_object());
    let Some(handler) = handler else {
        return; // exec, or nothing we know
    };
    if probe[handler].get("host").is_some_and(|h| !h.is_null()) {
        return;
    }
    let Some(port) = resolve_port(container, &probe[handler]["port"]) else {
        plan.warnings.push(format!(
            "{name}: {field} port {} is not a port of the container; probe left as it is",
            probe[handler]["port"]
        ));
        return;
    };
    let https = probe[handler]["scheme"]
        .as_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"));
    if https {
        // The proxy checks plaintext HTTP only: kubelet keeps this probe, on a port the
        // rules leave alone.
        plan.skip_inbound.push(port);
        return;
    }
    let path = admin_path(name, what);
    // Only the check itself: its timing stays in the pod spec, enforced by kubelet.
    let mut check = probe[handler].clone();
    check["port"] = json!(port);
    plan.app_probes
        .insert(path.clone(), json!({ handler: check }));
    plan.originals
        .entry(name.to_string())
        .or_default()
        .insert(field.to_string(), probe.clone());
    let mut rewritten: Map<String, Value> = probe.as_object().cloned().unwrap_or_default();
    rewritten.remove("tcpSocket");
    rewritten.insert(
        "httpGet".into(),
        json!({"path": path, "port": admin_port, "scheme": "HTTP"}),
    );
    plan.rewrites.push(Rewrite {
        list,
        index,
        field,
        probe: Value::Object(rewritten),
    });
}

/// A probe's port as a number: a number as is, a name looked up in the container's ports.
fn resolve_port(container: &Value, port: &Value) -> Option<u16> {
    if let Some(n) = port.as_u64() {
        return u16::try_from(n).ok().filter(|p| *p != 0);
    }
    let name = port.as_str()?;
    container["ports"]
        .as_array()?
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|n| u16::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_and_tcp_probes_move_to_the_admin_port_with_named_ports_resolved() {
        let spec = json!({"containers": [{
            "name": "web",
            "ports": [{"name": "http", "containerPort": 8080}],
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http",
                "httpHeaders": [{"name": "X-Probe", "value": "1"}]}, "periodSeconds": 3},
            "readinessProbe": {"tcpSocket": {"port": 8080}},
            "startupProbe": {"exec": {"command": ["true"]}}
        }]});
        let plan = plan(&spec, 15000);
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
        assert_eq!(plan.rewrites.len(), 2);
        assert_eq!(
            plan.rewrites[0].probe,
            json!({"httpGet": {"path": "/app-health/web/livez", "port": 15000, "scheme": "HTTP"}, "periodSeconds": 3})
        );
        assert_eq!(
            plan.rewrites[1].probe,
            json!({"httpGet": {"path": "/app-health/web/readyz", "port": 15000, "scheme": "HTTP"}})
        );
        assert_eq!(
            plan.app_probes["/app-health/web/livez"],
            json!({"httpGet": {"path": "/healthz", "port": 8080,
                "httpHeaders": [{"name": "X-Probe", "value": "1"}]}}),
            "the check only: periodSeconds stays with kubelet"
        );
        assert_eq!(
            plan.app_probes["/app-health/web/readyz"],
            json!({"tcpSocket": {"port": 8080}})
        );
        assert_eq!(
            plan.originals["web"]["livenessProbe"]["httpGet"]["port"],
            "http"
        );
    }

    #[test]
    fn grpc_probes_skip_their_port_and_unknown_names_warn() {
        let spec = json!({"containers": [{
            "name": "api",
            "livenessProbe": {"grpc": {"port": 9090}},
            "readinessProbe": {"httpGet": {"port": "nope", "path": "/"}},
            "startupProbe": {"httpGet": {"port": 80, "host": "example.com"}}
        }, {
            "name": "tls",
            "ports": [{"name": "https", "containerPort": 8443}],
            "livenessProbe": {"httpGet": {"port": "https", "scheme": "HTTPS"}}
        }], "initContainers": [{"name": "setup", "readinessProbe": {"tcpSocket": {"port": 1}}}]});
        let plan = plan(&spec, 15000);
        assert_eq!(plan.skip_inbound, [8443, 9090]);
        assert!(plan.rewrites.is_empty());
        assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
        assert!(plan.warnings[0].contains("\"nope\""));
    }
}
