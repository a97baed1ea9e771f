//! inject and uninject on one pod, with the patch applied by the `json-patch` crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};

use super::*;
use crate::uninject::uninject;

fn pod_at<'a>(doc: &'a Value) -> PodTemplate<'a> {
    PodTemplate {
        metadata: &doc["metadata"],
        spec: &doc["spec"],
        metadata_path: "/metadata",
        spec_path: "/spec",
        namespace: Some("shop"),
        workload: None,
    }
}

fn apply(doc: &Value, ops: &[Operation]) -> Value {
    let patch: json_patch::Patch = serde_json::from_value(crate::patch::to_json(ops)).unwrap();
    let mut out = doc.clone();
    json_patch::patch(&mut out, &patch).unwrap();
    out
}

fn injected(doc: &Value, settings: &Settings) -> (Value, Injected) {
    match inject(&pod_at(doc), settings, NamespacePolicy::Enabled).unwrap() {
        Outcome::Injected(done) => (apply(doc, &done.ops), *done),
        Outcome::Skipped(why) => panic!("skipped: {why}"),
    }
}

fn uninjected(doc: &Value) -> Value {
    let ops = uninject(&pod_at(doc)).unwrap().expect("has a proxy");
    apply(doc, &ops)
}

fn names(spec: &Value, list: &str) -> Vec<String> {
    spec[list]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

fn web() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "web:1",
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}}}]}
    })
}

#[test]
fn native_puts_init_then_proxy_before_the_users_init_containers() {
    let mut pod = web();
    pod["spec"]["initContainers"] = json!([{"name": "migrate", "image": "m"}]);
    let (out, done) = injected(&pod, &Settings::default());
    assert_eq!(
        names(&out["spec"], "initContainers"),
        ["tandem-init", "tandem-proxy", "migrate"]
    );
    assert_eq!(names(&out["spec"], "containers"), ["web"]);
    let proxy = &out["spec"]["initContainers"][1];
    assert_eq!(proxy["restartPolicy"], "Always");
    assert_eq!(proxy["startupProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(
        out["spec"]["containers"][0]["readinessProbe"]["httpGet"],
        json!({"path": "/app-health/web/readyz", "port": 15000, "scheme": "HTTP"})
    );
    let env = proxy["env"].as_array().unwrap();
    let probes = env
        .iter()
        .find(|e| e["name"] == "TANDEM_APP_PROBES")
        .unwrap();
    let probes: Value = serde_json::from_str(probes["value"].as_str().unwrap()).unwrap();
    assert_eq!(probes["/app-health/web/readyz"]["httpGet"]["port"], 8080);
    let record: Record = serde_json::from_str(
        out["metadata"]["annotations"]["tandem.dev/injected"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(record, done.record);
    assert_eq!(record.service, "web");
    assert_eq!(record.created, ["annotations"]);
}

#[test]
fn legacy_puts_the_proxy_first_and_appends_init() {
    let mut pod = web();
    pod["metadata"]["annotations"] = json!({"config.tandem.dev/sidecar-mode": "legacy"});
    pod["spec"]["initContainers"] = json!([{"name": "migrate", "image": "m"}]);
    let (out, _) = injected(&pod, &Settings::default());
    assert_eq!(
        names(&out["spec"], "initContainers"),
        ["migrate", "tandem-init"]
    );
    assert_eq!(names(&out["spec"], "containers"), ["tandem-proxy", "web"]);
    let proxy = &out["spec"]["containers"][0];
    assert!(proxy.get("restartPolicy").is_none());
    assert_eq!(
        proxy["lifecycle"]["postStart"]["exec"]["command"][1],
        "wait-ready"
    );
    assert_eq!(
        out["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"],
        "web"
    );
}

#[test]
fn uninject_restores_exactly_and_injecting_twice_changes_nothing() {
    let mut bare = web();
    bare["metadata"] = json!({"name": "web"});
    let mut legacy = web();
    legacy["metadata"]["annotations"] = json!({"config.tandem.dev/sidecar-mode": "legacy"});
    legacy["spec"]["initContainers"] = json!([{"name": "migrate", "image": "m"}]);
    for pod in [web(), bare, legacy] {
        let (out, _) = injected(&pod, &Settings::default());
        assert_ne!(out, pod);
        assert_eq!(uninjected(&out), pod);
        let again = inject(
            &pod_at(&out),
            &Settings::default(),
            NamespacePolicy::Enabled,
        )
        .unwrap();
        assert_eq!(again, Outcome::Skipped(Skip::AlreadyInjected));
    }
    // A pod without a proxy has nothing to undo.
    assert!(uninject(&pod_at(&web())).unwrap().is_none());
}

#[test]
fn a_bad_annotation_or_no_containers_is_an_error_not_a_half_patch() {
    let mut pod = web();
    pod["metadata"]["annotations"] = json!({"config.tandem.dev/proxy-uid": "0"});
    let e = inject(
        &pod_at(&pod),
        &Settings::default(),
        NamespacePolicy::Enabled,
    )
    .unwrap_err();
    assert!(matches!(e, InjectError::Settings(_)), "{e}");
    let mut empty = web();
    empty["spec"]["containers"] = json!([]);
    let e = inject(
        &pod_at(&empty),
        &Settings::default(),
        NamespacePolicy::Enabled,
    )
    .unwrap_err();
    assert_eq!(e, InjectError::NoContainers);
}

#[test]
fn grpc_probe_ports_join_the_skip_list_and_typos_warn() {
    let mut pod = web();
    pod["metadata"]["annotations"] = json!({
        "config.tandem.dev/skip-inbound-ports": "7000",
        "config.tandem.dev/proxy-cpu-reqest": "1"
    });
    pod["spec"]["containers"][0]["livenessProbe"] = json!({"grpc": {"port": 9090}});
    let (out, done) = injected(&pod, &Settings::default());
    let args = out["spec"]["initContainers"][0]["args"].as_array().unwrap();
    let at = args
        .iter()
        .position(|a| a == "--skip-inbound-ports")
        .unwrap();
    assert_eq!(args[at + 1], "7000,9090");
    assert_eq!(done.record.probe_ports_skipped, [9090]);
    assert!(
        done.warnings.iter().any(|w| w.contains("proxy-cpu-reqest")),
        "{:?}",
        done.warnings
    );
}
