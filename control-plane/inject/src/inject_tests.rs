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
    assert_eq!(record.created, ["annotations", "volumes"]);
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
    let mut legacy_with_volumes = legacy.clone();
    legacy_with_volumes["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
    for pod in [web(), bare, legacy, with_volumes(), legacy_with_volumes] {
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

/// [`web`] with two volumes of its own, one mounted.
fn with_volumes() -> Value {
    let mut pod = web();
    pod["spec"]["volumes"] = json!([
        {"name": "config", "configMap": {"name": "web"}},
        {"name": "kube-api-access-x7k2p", "projected": {"sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}
    ]);
    pod["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "config", "mountPath": "/etc/web"}]);
    pod
}

fn env_of<'a>(c: &'a Value, name: &str) -> Option<&'a Value> {
    c["env"].as_array()?.iter().find(|e| e["name"] == name)
}

const PIN_A: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const PIN_B: &str = "2222222222222222222222222222222222222222222222222222222222222222";

#[test]
fn the_proxy_proves_who_it_is_with_a_projected_service_account_token() {
    let settings = Settings {
        ca_pins: vec![PIN_A.into(), PIN_B.into()],
        ..Settings::default()
    };
    let mut legacy = web();
    legacy["metadata"]["annotations"] = json!({"config.tandem.dev/sidecar-mode": "legacy"});
    for (pod, proxy_at) in [
        (web(), "/spec/initContainers/1"),
        (legacy, "/spec/containers/0"),
    ] {
        let (out, done) = injected(&pod, &settings);
        // A pod without volumes gets the list, with the token's volume only.
        assert_eq!(
            out["spec"]["volumes"],
            json!([{"name": "tandem-token", "projected": {"sources": [{"serviceAccountToken": {
                "audience": "tandem", "expirationSeconds": 3600, "path": "token"}}]}}])
        );
        assert!(done.record.created.contains(&"volumes".to_string()));
        assert_eq!(done.record.volumes, ["tandem-token"]);
        let proxy = out.pointer(proxy_at).unwrap();
        assert_eq!(proxy["name"], "tandem-proxy");
        assert_eq!(
            proxy["volumeMounts"],
            json!([{"name": "tandem-token",
                "mountPath": "/var/run/secrets/tandem.dev/serviceaccount", "readOnly": true}])
        );
        assert_eq!(
            env_of(proxy, "TANDEM_SERVICE_ACCOUNT_TOKEN_FILE").unwrap()["value"],
            "/var/run/secrets/tandem.dev/serviceaccount/token"
        );
        assert_eq!(
            env_of(proxy, "TANDEM_SERVICE_ACCOUNT").unwrap()["valueFrom"],
            json!({"fieldRef": {"fieldPath": "spec.serviceAccountName"}})
        );
        assert_eq!(
            env_of(proxy, "TANDEM_CA_PINS").unwrap()["value"],
            format!("{PIN_A},{PIN_B}")
        );
        // No join token, from a Secret or otherwise.
        assert!(env_of(proxy, "TANDEM_TOKEN").is_none());
        assert!(!out.to_string().contains("secretKeyRef"), "{out}");
        // Nothing else mounts the token.
        let app = out["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "web")
            .unwrap();
        assert!(app["volumeMounts"].is_null(), "{app}");
        assert_eq!(out["spec"]["initContainers"][0]["name"], "tandem-init");
        assert!(out["spec"]["initContainers"][0]["volumeMounts"].is_null());
    }
    // Without pins (settings that know no CA) the variable is absent, not empty.
    let (out, _) = injected(&web(), &Settings::default());
    assert!(env_of(&out["spec"]["initContainers"][1], "TANDEM_CA_PINS").is_none());
}

#[test]
fn a_pod_with_volumes_keeps_them_and_gets_the_token_after_them() {
    let pod = with_volumes();
    let (out, done) = injected(&pod, &Settings::default());
    let volumes: Vec<&str> = out["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(volumes, ["config", "kube-api-access-x7k2p", "tandem-token"]);
    assert_eq!(out["spec"]["volumes"][0], pod["spec"]["volumes"][0]);
    assert_eq!(out["spec"]["volumes"][1], pod["spec"]["volumes"][1]);
    assert!(!done.record.created.contains(&"volumes".to_string()));
    assert!(done.ops.iter().any(|op| matches!(op,
        Operation::Add { path, .. } if path == "/spec/volumes/-")));
    assert_eq!(uninjected(&out), pod);

    // Without its record (a hand-edited pod), uninject still takes the token's volume
    // with the containers and leaves the pod's own.
    let mut unrecorded = out.clone();
    unrecorded["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("tandem.dev/injected");
    let left = uninjected(&unrecorded);
    assert_eq!(left["spec"]["volumes"], pod["spec"]["volumes"]);
    assert_eq!(names(&left["spec"], "initContainers"), Vec::<String>::new());
}

#[test]
fn a_pod_whose_volume_takes_the_tokens_name_is_not_injected() {
    let mut pod = with_volumes();
    pod["spec"]["volumes"][0]["name"] = json!("tandem-token");
    let e = inject(
        &pod_at(&pod),
        &Settings::default(),
        NamespacePolicy::Enabled,
    )
    .unwrap_err();
    assert_eq!(e, InjectError::VolumeTaken);
    assert!(e.to_string().contains("tandem-token"), "{e}");
}

#[test]
fn records_of_version_1_still_uninject_and_unknown_versions_are_refused() {
    // What the injector wrote before the token's volume: a version 1 record that names no
    // volume, in a pod without one.
    let pod = with_volumes();
    let (mut out, done) = injected(&pod, &Settings::default());
    let token_at = out["spec"]["volumes"].as_array().unwrap().len() - 1;
    out["spec"]["volumes"]
        .as_array_mut()
        .unwrap()
        .remove(token_at);
    let v1 = Record {
        version: 1,
        volumes: Vec::new(),
        ..done.record.clone()
    };
    let ann = &mut out["metadata"]["annotations"];
    ann["tandem.dev/injected"] = json!(v1.to_annotation());
    assert!(!v1.to_annotation().contains("volumes"));
    assert_eq!(uninjected(&out), pod);

    let v3 = Record {
        version: 3,
        ..done.record
    };
    out["metadata"]["annotations"]["tandem.dev/injected"] = json!(v3.to_annotation());
    let e = uninject(&pod_at(&out)).unwrap_err();
    assert!(e.to_string().contains("version 3"), "{e}");
}

#[test]
fn access_log_and_tracing_annotations_reach_the_proxy_and_bad_ones_are_refused() {
    let mut pod = web();
    let (out, _) = injected(&pod, &Settings::default());
    let proxy = &out["spec"]["initContainers"][1];
    for name in [
        "TANDEM_ACCESS_LOG",
        "TANDEM_TRACE_COLLECTOR",
        "TANDEM_TRACE_SAMPLING",
    ] {
        assert!(env_of(proxy, name).is_none(), "{name} is opt-in");
    }
    pod["metadata"]["annotations"] = json!({
        "config.tandem.dev/access-log": "stdout",
        "config.tandem.dev/trace-collector": "http://otel-collector.observability:4317",
        "config.tandem.dev/trace-sampling": "0.25"
    });
    let (out, _) = injected(&pod, &Settings::default());
    let proxy = &out["spec"]["initContainers"][1];
    assert_eq!(
        env_of(proxy, "TANDEM_ACCESS_LOG").unwrap()["value"],
        "stdout"
    );
    assert_eq!(
        env_of(proxy, "TANDEM_TRACE_COLLECTOR").unwrap()["value"],
        "http://otel-collector.observability:4317"
    );
    assert_eq!(
        env_of(proxy, "TANDEM_TRACE_SAMPLING").unwrap()["value"],
        "0.25"
    );

    // A cluster default turned off by one workload.
    let on = Settings {
        access_log: Some("stdout".into()),
        ..Settings::default()
    };
    pod["metadata"]["annotations"] = json!({"config.tandem.dev/access-log": "off"});
    let (out, _) = injected(&pod, &on);
    assert!(env_of(&out["spec"]["initContainers"][1], "TANDEM_ACCESS_LOG").is_none());

    for (key, value) in [
        ("config.tandem.dev/access-log", "relative/path"),
        ("config.tandem.dev/trace-collector", "otel:4317"),
        ("config.tandem.dev/trace-collector", "https://otel:4317"),
        ("config.tandem.dev/trace-sampling", "1.5"),
        ("config.tandem.dev/trace-sampling", "ten percent"),
    ] {
        pod["metadata"]["annotations"] = json!({ key: value });
        let e = inject(
            &pod_at(&pod),
            &Settings::default(),
            NamespacePolicy::Enabled,
        )
        .unwrap_err();
        assert!(e.to_string().contains(key), "{key}={value}: {e}");
    }
}
