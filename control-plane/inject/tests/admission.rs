//! The injector on real AdmissionReview documents (`testdata/reviews/`): the answer is
//! checked, its JSON Patch applied with the `json-patch` crate, and the result validated
//! strictly against the Kubernetes 1.29 and 1.33 schemas; inject twice = inject once,
//! uninject(inject(pod)) = pod, and malformed reviews are refused with a reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{json, Value};
use support::{applied, fixture, patch_of, testdata, validate, validator, TempDir, VERSIONS};
use tandem_inject::review::{review, Query, ReviewError};
use tandem_inject::workload::{self, Namespaces};
use tandem_inject::{PodTemplate, Settings};

const ENABLED: &str = "/inject/namespace-enabled";
const STRICT: &str = "/inject/namespace-enabled/strict";
const POD_ONLY: &str = "/inject";

fn answer(name: &str, path: &str) -> (Value, Value) {
    let doc = fixture(&format!("reviews/{name}"));
    let body = serde_json::to_vec(&doc).unwrap();
    let out = review(&body, Query::from_path(path).unwrap(), &Settings::default()).unwrap();
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(out["kind"], "AdmissionReview");
    assert_eq!(out["response"]["uid"], doc["request"]["uid"], "uid echoed");
    (doc["request"]["object"].clone(), out)
}

/// The injected pod of a fixture.
fn injected(name: &str, path: &str) -> Value {
    let (pod, out) = answer(name, path);
    assert_eq!(out["response"]["allowed"], true);
    let patch = patch_of(&out).unwrap_or_else(|| panic!("{name}: no patch: {out}"));
    applied(&pod, &patch)
}

fn names(pod: &Value, list: &str) -> Vec<String> {
    pod["spec"][list]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|l| pod["spec"][*l].as_array().into_iter().flatten())
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn args(c: &Value) -> Vec<String> {
    c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

fn flag(c: &Value, name: &str) -> Option<String> {
    let args = args(c);
    let at = args.iter().position(|a| a == name)?;
    args.get(at + 1).cloned()
}

fn env<'a>(c: &'a Value, name: &str) -> Option<&'a Value> {
    c["env"].as_array()?.iter().find(|e| e["name"] == name)
}

#[test]
fn a_deployments_pod_in_an_enabled_namespace_gets_a_native_sidecar() {
    let pod = injected("deployment-pod.json", ENABLED);
    assert_eq!(
        names(&pod, "initContainers"),
        ["tandem-init", "tandem-proxy"]
    );
    assert_eq!(names(&pod, "containers"), ["web"]);
    let proxy = container(&pod, "tandem-proxy");
    assert_eq!(proxy["restartPolicy"], "Always");
    assert_eq!(proxy["startupProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(proxy["securityContext"]["runAsUser"], 2102);
    assert_eq!(proxy["securityContext"]["readOnlyRootFilesystem"], true);
    // The ReplicaSet's hash is not part of the service name.
    assert_eq!(flag(proxy, "--service").as_deref(), Some("web"));
    assert_eq!(
        env(proxy, "TANDEM_POD_IP").unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
        "status.podIP"
    );
    // Identity: the ServiceAccount's projected token, no join token.
    assert_eq!(
        env(proxy, "TANDEM_SERVICE_ACCOUNT").unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.serviceAccountName"
    );
    assert_eq!(
        env(proxy, "TANDEM_SERVICE_ACCOUNT_TOKEN_FILE").unwrap()["value"],
        "/var/run/secrets/tandem.dev/serviceaccount/token"
    );
    assert!(env(proxy, "TANDEM_TOKEN").is_none());
    assert!(env(proxy, "TANDEM_CA_PINS").is_none(), "no CA, no pins");
    assert_eq!(
        proxy["volumeMounts"],
        json!([{"name": "tandem-token", "mountPath": "/var/run/secrets/tandem.dev/serviceaccount",
            "readOnly": true}])
    );
    // The pod's own volume (the API server's kube-api-access) first, then the token's.
    let original = fixture("reviews/deployment-pod.json");
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 2);
    assert_eq!(
        volumes[0],
        original["request"]["object"]["spec"]["volumes"][0]
    );
    assert_eq!(
        volumes[1],
        json!({"name": "tandem-token", "projected": {"sources": [{"serviceAccountToken":
            {"audience": "tandem", "expirationSeconds": 3600, "path": "token"}}]}})
    );
    let init = container(&pod, "tandem-init");
    assert_eq!(
        init["securityContext"]["capabilities"],
        json!({"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]})
    );
    assert_eq!(init["securityContext"]["runAsUser"], 0);
    assert!(pod["metadata"]["annotations"]["tandem.dev/injected"].is_string());

    // The same pod where the namespace is not enabled and the pod does not ask: untouched,
    // and nothing said.
    let (_, out) = answer("deployment-pod.json", POD_ONLY);
    assert_eq!(
        out["response"],
        json!({"uid": out["response"]["uid"], "allowed": true})
    );
}

#[test]
fn the_pins_of_the_settings_reach_the_proxy() {
    let pins = ["ab".repeat(32), "cd".repeat(32)];
    let settings = Settings {
        ca_pins: pins.to_vec(),
        ..Settings::default()
    };
    let doc = fixture("reviews/deployment-pod.json");
    let body = serde_json::to_vec(&doc).unwrap();
    let out = review(&body, Query::from_path(ENABLED).unwrap(), &settings).unwrap();
    let pod = applied(&doc["request"]["object"], &patch_of(&out).unwrap());
    assert_eq!(
        env(container(&pod, "tandem-proxy"), "TANDEM_CA_PINS").unwrap()["value"],
        pins.join(",")
    );
}

#[test]
fn existing_init_containers_are_kept_after_ours() {
    let pod = injected("init-containers.json", ENABLED);
    assert_eq!(
        names(&pod, "initContainers"),
        ["tandem-init", "tandem-proxy", "migrate", "log-shipper"]
    );
    assert_eq!(
        flag(container(&pod, "tandem-proxy"), "--service").as_deref(),
        Some("api")
    );
    // The user's own native sidecar is probed by kubelet too: its probe moves as well.
    assert_eq!(
        container(&pod, "log-shipper")["readinessProbe"]["httpGet"]["path"],
        "/app-health/log-shipper/readyz"
    );
    assert_eq!(
        container(&pod, "migrate"),
        &fixture("reviews/init-containers.json")["request"]["object"]["spec"]["initContainers"][0]
    );
}

#[test]
fn http_and_tcp_probes_go_through_the_admin_port_grpc_ports_are_skipped() {
    let pod = injected("probes.json", ENABLED);
    let shop = container(&pod, "shop");
    assert_eq!(
        shop["livenessProbe"],
        json!({"httpGet": {"path": "/app-health/shop/livez", "port": 15000, "scheme": "HTTP"},
            "periodSeconds": 10, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3})
    );
    assert_eq!(
        shop["readinessProbe"]["httpGet"]["path"],
        "/app-health/shop/readyz"
    );
    assert!(shop["readinessProbe"].get("tcpSocket").is_none());
    assert_eq!(
        shop["startupProbe"]["grpc"]["port"], 9090,
        "gRPC probe left alone"
    );
    assert_eq!(
        container(&pod, "cache")["livenessProbe"]["exec"]["command"][0],
        "redis-cli"
    );
    let init = container(&pod, "tandem-init");
    assert_eq!(flag(init, "--skip-inbound-ports").as_deref(), Some("9090"));
    let probes = env(container(&pod, "tandem-proxy"), "TANDEM_APP_PROBES").unwrap();
    let probes: Value = serde_json::from_str(probes["value"].as_str().unwrap()).unwrap();
    assert_eq!(
        probes["/app-health/shop/livez"].as_object().unwrap().len(),
        1,
        "the check only (the proxy refuses unknown fields)"
    );
    assert_eq!(
        probes["/app-health/shop/livez"]["httpGet"],
        json!({"path": "/healthz", "port": 8080, "scheme": "HTTP",
            "httpHeaders": [{"name": "X-Probe", "value": "kubelet"}]}),
        "named port resolved, the rest as written"
    );
    assert_eq!(
        probes["/app-health/shop/readyz"]["tcpSocket"],
        json!({"port": 8080})
    );
    assert_eq!(probes.as_object().unwrap().len(), 2);
}

#[test]
fn annotations_override_every_default() {
    let pod = injected("annotations.json", POD_ONLY);
    // Legacy mode: the proxy is the first app container, held ready by postStart.
    assert_eq!(names(&pod, "containers"), ["tandem-proxy", "app"]);
    assert_eq!(names(&pod, "initContainers"), ["tandem-init"]);
    let proxy = container(&pod, "tandem-proxy");
    assert_eq!(proxy["image"], "registry.example/tandem-proxy:0.2.0");
    assert_eq!(proxy["imagePullPolicy"], "Always");
    assert_eq!(proxy["securityContext"]["runAsUser"], 1337);
    assert_eq!(
        proxy["resources"],
        json!({"requests": {"cpu": "250m", "memory": "96Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}})
    );
    assert_eq!(
        proxy["lifecycle"]["postStart"]["exec"]["command"],
        json!([
            "/usr/local/bin/tandem-proxy",
            "wait-ready",
            "--admin-addr",
            "127.0.0.1:16000",
            "--timeout",
            "120s"
        ])
    );
    for (f, v) in [
        ("--service", "tuned-svc"),
        ("--control-plane", "cp.mesh.example:15010"),
        ("--admin-addr", "0.0.0.0:16000"),
        ("--inbound-addr", "0.0.0.0:16006"),
        ("--outbound-addr", "127.0.0.1:16001"),
        ("--log", "tandem_proxy=debug,info"),
    ] {
        assert_eq!(flag(proxy, f).as_deref(), Some(v), "{f}");
    }
    let init = container(&pod, "tandem-init");
    for (f, v) in [
        ("--proxy-uid", "1337"),
        ("--inbound-port", "16006"),
        ("--outbound-port", "16001"),
        ("--admin-port", "16000"),
        ("--skip-inbound-ports", "9000-9009,9100"),
        ("--skip-outbound-ports", "3306"),
        ("--skip-outbound-cidrs", "169.254.169.254/32,10.96.0.0/12"),
    ] {
        assert_eq!(flag(init, f).as_deref(), Some(v), "{f}");
    }
    assert_eq!(
        container(&pod, "app")["readinessProbe"]["httpGet"]["port"],
        16000
    );
    assert_eq!(
        pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"],
        "app"
    );
}

#[test]
fn pods_that_are_not_injected_are_admitted_unchanged_and_told_why() {
    let (_, out) = answer("host-network.json", POD_ONLY);
    assert_eq!(out["response"]["allowed"], true);
    assert!(out["response"].get("patch").is_none());
    assert!(
        out["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("hostNetwork"),
        "{out}"
    );

    let (_, out) = answer("already-injected.json", ENABLED);
    assert_eq!(
        out["response"],
        json!({"uid": out["response"]["uid"], "allowed": true})
    );

    let (_, out) = answer("bad-annotation.json", ENABLED);
    assert_eq!(out["response"]["allowed"], true);
    assert!(out["response"].get("patch").is_none());
    let warning = out["response"]["warnings"][0].as_str().unwrap();
    assert!(
        warning.contains("proxy-memory-limit") && warning.contains("256MB"),
        "{warning}"
    );

    let (_, out) = answer("no-pod-spec.json", ENABLED);
    assert_eq!(out["response"]["allowed"], true);
    assert!(out["response"]["warnings"][0]
        .as_str()
        .unwrap()
        .contains("no pod spec"));
}

#[test]
fn a_strict_namespace_refuses_what_cannot_be_injected() {
    let (_, out) = answer("bad-annotation.json", STRICT);
    assert_eq!(out["response"]["allowed"], false);
    assert_eq!(out["response"]["status"]["code"], 403);
    let msg = out["response"]["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("proxy-memory-limit") && msg.contains("strict"),
        "{msg}"
    );
    // What can be injected is, strict or not.
    let (_, out) = answer("deployment-pod.json", STRICT);
    assert!(patch_of(&out).is_some());
}

#[test]
fn malformed_reviews_are_refused_with_a_reason() {
    let cases = [
        ("not-json.txt", "not JSON"),
        ("v1beta1.json", "admission.k8s.io/v1beta1"),
        ("no-uid.json", "no request.uid"),
        ("a-pod-not-a-review.json", "kind is \"Pod\""),
    ];
    for (file, says) in cases {
        let body = std::fs::read(testdata(&format!("malformed/{file}"))).unwrap();
        let e: ReviewError = review(
            &body,
            Query::from_path(ENABLED).unwrap(),
            &Settings::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains(says), "{file}: {e}");
    }
}

#[test]
fn injecting_twice_is_injecting_once_and_uninject_restores_the_pod() {
    for (name, path) in [
        ("deployment-pod.json", ENABLED),
        ("init-containers.json", ENABLED),
        ("probes.json", ENABLED),
        ("annotations.json", POD_ONLY),
    ] {
        let (original, _) = answer(name, path);
        let pod = injected(name, path);
        // The injected pod sent again (as a reinvocation would): no patch.
        let mut again = fixture(&format!("reviews/{name}"));
        again["request"]["object"] = pod.clone();
        let out = review(
            &serde_json::to_vec(&again).unwrap(),
            Query::from_path(path).unwrap(),
            &Settings::default(),
        )
        .unwrap();
        assert!(patch_of(&out).is_none(), "{name}: injected twice");
        let template = PodTemplate {
            metadata: &pod["metadata"],
            spec: &pod["spec"],
            metadata_path: "/metadata",
            spec_path: "/spec",
            namespace: None,
            workload: None,
        };
        let ops = tandem_inject::uninject(&template).unwrap().unwrap();
        let patch: json_patch::Patch =
            serde_json::from_value(tandem_inject::patch::to_json(&ops)).unwrap();
        assert_eq!(
            applied(&pod, &patch),
            original,
            "{name}: uninject(inject(pod)) != pod"
        );
    }
}

/// Every document `tandemctl inject` would print for `testdata/workloads/all-kinds.yaml`,
/// Lists opened (the validator has no schema for `List`).
fn injected_workloads() -> Vec<Value> {
    let text = std::fs::read_to_string(testdata("workloads/all-kinds.yaml")).unwrap();
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let namespaces = Namespaces::from_documents(&docs);
    let mut out = Vec::new();
    let mut injected = 0;
    for doc in docs {
        let patch = workload::inject_document(&doc, &Settings::default(), &namespaces);
        injected += patch
            .reports
            .iter()
            .filter(|r| r.result == workload::Change::Injected)
            .count();
        let ops: json_patch::Patch =
            serde_json::from_value(tandem_inject::patch::to_json(&patch.ops)).unwrap();
        let doc = applied(&doc, &ops);
        match doc["kind"].as_str() {
            Some("List") => out.extend(doc["items"].as_array().unwrap().iter().cloned()),
            _ => out.push(doc),
        }
    }
    // Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob and the List's
    // Deployment; not the disabled Pod nor the Pod of the disabled namespace.
    assert_eq!(injected, 7);
    out
}

#[test]
fn injected_pods_workloads_and_the_manifests_validate_against_kubernetes_1_29_and_1_33() {
    let exe = match validator() {
        Ok(exe) => exe,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let dir = TempDir::new("validate");
    let mut files = Vec::new();
    let mut write = |name: String, doc: &Value| {
        let path = dir.0.join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
        files.push(path);
    };
    for (name, path) in [
        ("deployment-pod.json", ENABLED),
        ("init-containers.json", ENABLED),
        ("probes.json", ENABLED),
        ("annotations.json", POD_ONLY),
    ] {
        let (original, _) = answer(name, path);
        write(format!("original-{name}"), &original);
        write(format!("injected-{name}"), &injected(name, path));
    }
    for (i, doc) in injected_workloads().iter().enumerate() {
        write(format!("workload-{i}.json"), doc);
    }
    let mut checked = files.clone();
    for entry in std::fs::read_dir(support::workspace().join("deploy/helm")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            checked.push(path);
        }
    }
    for version in VERSIONS {
        if let Err(out) = validate(&exe, version, &checked) {
            panic!("Kubernetes {version} rejects a document:\n{out}");
        }
    }

    // Legacy mode is for clusters before 1.29: its pods validate there too, while a
    // native sidecar's `restartPolicy` does not exist in 1.27's schema.
    let legacy = dir.0.join("injected-annotations.json");
    let native = dir.0.join("injected-deployment-pod.json");
    for version in ["1.27.0", "1.28.0"] {
        if let Err(out) = validate(&exe, version, std::slice::from_ref(&legacy)) {
            panic!("Kubernetes {version} rejects the legacy-mode pod:\n{out}");
        }
    }
    let out = validate(&exe, "1.27.0", std::slice::from_ref(&native)).unwrap_err();
    assert!(out.contains("restartPolicy"), "{out}");

    // The negative control: the validator does reject what the schema forbids, so a pass
    // above means something.
    let mut bad = injected("deployment-pod.json", ENABLED);
    bad["spec"]["initContainers"][1]["restartPolicyy"] = json!("Always");
    let path = dir.0.join("bad.json");
    std::fs::write(&path, serde_json::to_vec(&bad).unwrap()).unwrap();
    for version in VERSIONS {
        let out = validate(&exe, version, std::slice::from_ref(&path)).unwrap_err();
        assert!(out.contains("restartPolicyy"), "{out}");
    }
}
