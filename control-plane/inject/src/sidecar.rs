//! What the injector adds to a pod, all from the proxy's one image: two containers,
//! `tandem-init`, which installs the redirection rules and exits, and `tandem-proxy`; and
//! one volume, `tandem-token`, the pod's ServiceAccount token for audience `tandem`.
//!
//! Static values travel as arguments (readable in `kubectl describe`); values only the
//! kubelet knows (the pod's IP, namespace and ServiceAccount) and those that change
//! between pods of one template (the CA's pins, filled at admission) as environment
//! variables. The proxy proves who it is with the projected token, which kubelet renews
//! and the proxy re-reads at every certificate request; the control plane checks it with
//! a TokenReview and names the certificate `spiffe://<td>/ns/<ns>/sa/<serviceaccount>`.
//! Both containers run with every capability dropped but the two the rules need (init)
//! or none at all (proxy) and no privilege escalation; the proxy with a read-only root
//! filesystem.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::probes::APP_PROBES_ENV;
use crate::settings::{Mode, PortRange, Settings};

/// The proxy container's name.
pub const PROXY_NAME: &str = "tandem-proxy";
/// The redirection init container's name.
pub const INIT_NAME: &str = "tandem-init";
/// The projected volume holding the pod's ServiceAccount token for the mesh.
pub const TOKEN_VOLUME: &str = "tandem-token";
/// Where the proxy container mounts it (read-only).
pub const TOKEN_DIR: &str = "/var/run/secrets/tandem.dev/serviceaccount";
/// The token's file name in [`TOKEN_DIR`].
pub const TOKEN_FILE: &str = "token";
/// The audience the token is issued for, and the one the control plane's TokenReview asks
/// for: a token for the mesh is no use against the API server, and the reverse.
pub const TOKEN_AUDIENCE: &str = "tandem";
/// The token's lifetime as requested from kubelet, which renews it at 80 % of it.
pub const TOKEN_EXPIRATION_SECONDS: u32 = 3600;
/// Where the images put the binary (the legacy `postStart` hook runs it by path).
pub const PROXY_BIN: &str = "/usr/local/bin/tandem-proxy";
/// How long the legacy `postStart` hook waits for `/ready`.
pub const LEGACY_READY_TIMEOUT: &str = "120s";

/// The mesh service name of a pod, first found of: the `config.tandem.dev/service`
/// annotation, the `app.kubernetes.io/name` label, the `app` label, then `workload` (the
/// owning workload's name, when the caller knows it), the controlling StatefulSet's name,
/// the pod's `generateName` without the ReplicaSet's `-<pod-template-hash>-` tail, and its
/// name.
pub fn service_name(metadata: &Value, workload: Option<&str>) -> Option<String> {
    let ann = &metadata["annotations"];
    let labels = &metadata["labels"];
    let given = [
        ann[crate::annotations::SERVICE].as_str(),
        labels["app.kubernetes.io/name"].as_str(),
        labels["app"].as_str(),
        workload,
    ];
    if let Some(name) = given.into_iter().flatten().find(|n| !n.trim().is_empty()) {
        return Some(name.trim().to_string());
    }
    // A StatefulSet names its pods `<set>-<ordinal>` itself (no generateName): its name is
    // in the controller reference.
    let statefulset = metadata["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["controller"] == true && o["kind"] == "StatefulSet")
        .and_then(|o| o["name"].as_str());
    if let Some(name) = statefulset {
        return Some(name.to_string());
    }
    if let Some(generate) = metadata["generateName"].as_str() {
        let mut base = generate.trim_end_matches('-');
        if let Some(hash) = labels["pod-template-hash"].as_str() {
            base = base
                .strip_suffix(hash)
                .map_or(base, |b| b.trim_end_matches('-'));
        }
        if !base.is_empty() {
            return Some(base.to_string());
        }
    }
    metadata["name"].as_str().map(str::to_string)
}

/// The pod volume [`TOKEN_VOLUME`]: a ServiceAccount token projected by kubelet for
/// [`TOKEN_AUDIENCE`]. It is projected whatever `automountServiceAccountToken` says.
pub fn token_volume() -> Value {
    json!({
        "name": TOKEN_VOLUME,
        "projected": {"sources": [{"serviceAccountToken": {
            "audience": TOKEN_AUDIENCE,
            "expirationSeconds": TOKEN_EXPIRATION_SECONDS,
            "path": TOKEN_FILE,
        }}]}
    })
}

/// The redirection init container. Runs as root with NET_ADMIN and NET_RAW only, which
/// is what installing netfilter rules in the pod's network namespace takes.
pub fn init_container(s: &Settings, skip_inbound: &[PortRange]) -> Value {
    let list = |ports: &[PortRange]| {
        ports
            .iter()
            .map(PortRange::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut args = vec![
        "init".to_string(),
        "--proxy-uid".into(),
        s.proxy_uid.to_string(),
        "--inbound-port".into(),
        s.inbound_port.to_string(),
        "--outbound-port".into(),
        s.outbound_port.to_string(),
        // The rules leave the admin port alone (kubelet's probes go there).
        "--admin-port".into(),
        s.admin_port.to_string(),
    ];
    let lists = [
        ("--skip-inbound-ports", list(skip_inbound)),
        ("--skip-outbound-ports", list(&s.skip_outbound_ports)),
        ("--skip-outbound-cidrs", s.skip_outbound_cidrs.join(",")),
    ];
    for (flag, value) in lists {
        if !value.is_empty() {
            args.push(flag.to_string());
            args.push(value);
        }
    }
    let mut c = json!({
        "name": INIT_NAME,
        "image": s.proxy_image,
        "args": args,
        "resources": {
            "requests": {"cpu": "10m", "memory": "10Mi"},
            "limits": {"cpu": "100m", "memory": "50Mi"}
        },
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": false,
            "privileged": false,
            "allowPrivilegeEscalation": false,
            // iptables-restore takes its lock file under /run; the container lives for
            // one command, so a writable root beats a volume added to every pod.
            "readOnlyRootFilesystem": false,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}
        }
    });
    pull_policy(&mut c, s);
    c
}

/// The proxy container, for `mode`, with the app's probes in `app_probes`.
pub fn proxy_container(s: &Settings, service: &str, app_probes: &BTreeMap<String, Value>) -> Value {
    let admin = s.admin_port;
    let field = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}});
    let mut env = vec![
        field("TANDEM_NAMESPACE", "metadata.namespace"),
        field("TANDEM_POD_IP", "status.podIP"),
        // Identity: the token says who the pod is, the certificate must name the same
        // ServiceAccount, and the pins say which roots the identity endpoint may chain to.
        field("TANDEM_SERVICE_ACCOUNT", "spec.serviceAccountName"),
        json!({"name": "TANDEM_SERVICE_ACCOUNT_TOKEN_FILE",
            "value": format!("{TOKEN_DIR}/{TOKEN_FILE}")}),
    ];
    if !s.ca_pins.is_empty() {
        env.push(json!({"name": "TANDEM_CA_PINS", "value": s.ca_pins.join(",")}));
    }
    for (name, value) in [
        ("TANDEM_ACCESS_LOG", &s.access_log),
        ("TANDEM_TRACE_COLLECTOR", &s.trace_collector),
        ("TANDEM_TRACE_SAMPLING", &s.trace_sampling),
    ] {
        if let Some(v) = value {
            env.push(json!({"name": name, "value": v}));
        }
    }
    if !app_probes.is_empty() {
        let probes = serde_json::to_string(app_probes).unwrap_or_default();
        env.push(json!({"name": APP_PROBES_ENV, "value": probes}));
    }
    let http = |path: &str| json!({"path": path, "port": admin, "scheme": "HTTP"});
    let mut resources = json!({});
    for (kind, name, v) in [
        ("requests", "cpu", &s.cpu_request),
        ("requests", "memory", &s.memory_request),
        ("limits", "cpu", &s.cpu_limit),
        ("limits", "memory", &s.memory_limit),
    ] {
        if let Some(v) = v {
            resources[kind][name] = json!(v);
        }
    }
    let mut c = json!({
        "name": PROXY_NAME,
        "image": s.proxy_image,
        "args": [
            "--transparent",
            "--control-plane", s.control_plane,
            "--service", service,
            "--inbound-addr", format!("0.0.0.0:{}", s.inbound_port),
            "--outbound-addr", format!("127.0.0.1:{}", s.outbound_port),
            "--admin-addr", format!("0.0.0.0:{admin}"),
            "--log", s.log_level,
        ],
        "env": env,
        "volumeMounts": [{"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true}],
        "ports": [{"name": "tandem-admin", "containerPort": admin, "protocol": "TCP"}],
        "resources": resources,
        "readinessProbe": {"httpGet": http("/ready"), "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"httpGet": http("/live"), "periodSeconds": 10, "failureThreshold": 3},
        "securityContext": {
            "runAsUser": s.proxy_uid,
            "runAsGroup": s.proxy_uid,
            "runAsNonRoot": true,
            "privileged": false,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}
        }
    });
    match s.mode {
        Mode::Native => {
            c["restartPolicy"] = json!("Always");
            // The app containers start once this succeeds: up to two minutes, checked
            // every second so that a ready proxy lets the app start at once.
            c["startupProbe"] =
                json!({"httpGet": http("/ready"), "periodSeconds": 1, "failureThreshold": 120});
        }
        Mode::Legacy => {
            // Kubelet starts the next container only when this hook returns.
            c["lifecycle"] = json!({"postStart": {"exec": {"command": [
                PROXY_BIN, "wait-ready",
                "--admin-addr", format!("127.0.0.1:{admin}"),
                "--timeout", LEGACY_READY_TIMEOUT,
            ]}}});
        }
    }
    pull_policy(&mut c, s);
    c
}

fn pull_policy(c: &mut Value, s: &Settings) {
    if let Some(p) = &s.image_pull_policy {
        c["imagePullPolicy"] = json!(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_name_rule() {
        let m = json!({"annotations": {"config.tandem.dev/service": "svc"},
            "labels": {"app.kubernetes.io/name": "k8s", "app": "app"}});
        assert_eq!(service_name(&m, Some("w")).as_deref(), Some("svc"));
        let m = json!({"labels": {"app.kubernetes.io/name": "k8s", "app": "app"}});
        assert_eq!(service_name(&m, None).as_deref(), Some("k8s"));
        let m = json!({"labels": {"app": "app"}});
        assert_eq!(service_name(&m, None).as_deref(), Some("app"));
        let m = json!({"labels": {"x": "y"}});
        assert_eq!(service_name(&m, Some("web")).as_deref(), Some("web"));
        let m =
            json!({"generateName": "web-7d4b9c8f5-", "labels": {"pod-template-hash": "7d4b9c8f5"}});
        assert_eq!(service_name(&m, None).as_deref(), Some("web"));
        let m = json!({"generateName": "batch-"});
        assert_eq!(service_name(&m, None).as_deref(), Some("batch"));
        let m = json!({"name": "db-0", "ownerReferences": [
            {"kind": "StatefulSet", "name": "db", "controller": true}]});
        assert_eq!(service_name(&m, None).as_deref(), Some("db"));
        let m = json!({"name": "solo"});
        assert_eq!(service_name(&m, None).as_deref(), Some("solo"));
        assert_eq!(service_name(&json!({}), None), None);
    }

    #[test]
    fn init_lists_only_what_is_set() {
        let s = Settings {
            skip_outbound_ports: vec![],
            ..Settings::default()
        };
        let c = init_container(&s, &[PortRange::single(9090)]);
        assert_eq!(
            c["args"],
            json!([
                "init",
                "--proxy-uid",
                "2102",
                "--inbound-port",
                "15006",
                "--outbound-port",
                "15001",
                "--admin-port",
                "15000",
                "--skip-inbound-ports",
                "9090"
            ])
        );
    }
}
