//! Kubernetes mode against the Kubernetes API test server (`tandem_tests::kube_api`, held
//! to the real protocol by kube-rs in `tests/kube_api.rs`): the real control plane with
//! `--kubernetes` mirrors HTTPRoutes from the "cluster", serves them over xDS to a real
//! proxy, writes Gateway API status back, keeps serving the previous version of a route
//! that stops validating, survives a relist after `410 Gone`, and refuses REST writes of
//! what the cluster owns.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{json, Value};
use tandem_tests::control_plane::ControlPlane;
use tandem_tests::kube_api::KubeApi;
use tandem_tests::zero_trust::{ca_roots, roots_of, sidecar};
use tandem_tests::{eventually, mesh, Proxy};

const ROUTES: (&str, &str) = ("gateway.networking.k8s.io/v1", "httproutes");
const LIMIT: Duration = Duration::from_secs(15);

fn route(name: &str, backends: &[(&str, u64)], path: Value) -> Value {
    let refs: Vec<Value> = backends
        .iter()
        .map(|(b, w)| json!({"name": b, "port": 80, "weight": w}))
        .collect();
    json!({
        "apiVersion": ROUTES.0, "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "parentRefs": [{"kind": "Service", "name": "web", "port": 80}],
            "rules": [{"matches": [{"path": path}], "backendRefs": refs}]
        }
    })
}

/// The API test server with the control plane's namespace, where its Lease lives.
async fn cluster() -> KubeApi {
    let api = KubeApi::start().await.expect("API test server");
    api.create(
        "v1",
        "namespaces",
        json!({"metadata": {"name": "tandem-system"}}),
    )
    .expect("namespace");
    api
}

fn prefix() -> Value {
    json!({"type": "PathPrefix", "value": "/"})
}

/// Tandem's conditions on the cluster object `name`, as (type, status, reason), once its
/// status was written for `generation`.
async fn conditions(api: &KubeApi, name: &str, generation: u64) -> Vec<(String, String, String)> {
    eventually(
        LIMIT,
        &format!("status of {name} for generation {generation}"),
        || async {
            let o = api
                .get(ROUTES.0, ROUTES.1, "default", name)
                .map_err(|e| e.to_string())?;
            let ours = o["status"]["parents"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["controllerName"] == "tandem.dev/mesh"))
                .cloned()
                .ok_or_else(|| format!("no status yet: {o}"))?;
            let cs = ours["conditions"].as_array().cloned().unwrap_or_default();
            if cs.iter().any(|c| c["observedGeneration"] != generation) {
                return Err(format!("status is for another generation: {ours}"));
            }
            assert!(
                cs.iter().all(|c| c["lastTransitionTime"].is_string()),
                "{ours}"
            );
            Ok(cs
                .iter()
                .map(|c| {
                    (
                        c["type"].as_str().unwrap().to_string(),
                        c["status"].as_str().unwrap().to_string(),
                        c["reason"].as_str().unwrap().to_string(),
                    )
                })
                .collect())
        },
    )
    .await
}

fn c(t: &str, s: &str, r: &str) -> (String, String, String) {
    (t.into(), s.into(), r.into())
}

fn generation(o: &Value) -> u64 {
    o["metadata"]["generation"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_from_the_cluster_are_served_with_gateway_api_status() {
    let api = cluster().await;
    let kubeconfig = api.kubeconfig().to_str().unwrap().to_string();
    let cp = ControlPlane::start_with(&["--kubernetes", "--kubeconfig", &kubeconfig]).await;
    let services: Vec<String> = ["web", "web-v1", "web-v2"]
        .iter()
        .map(|s| mesh::service(s))
        .collect();
    cp.apply_ok(&mesh::docs(&services)).await;
    let proxy = Proxy::start_xds(cp.xds(), "client", &[]).await;

    // Applied to the cluster: mirrored, served over xDS, accepted and resolved.
    let created = api
        .create(
            ROUTES.0,
            ROUTES.1,
            route("split", &[("web-v1", 90), ("web-v2", 10)], prefix()),
        )
        .unwrap();
    mesh::wait_split(&proxy, "web", &[("web-v1", 90), ("web-v2", 10)], LIMIT).await;
    let stored = cp.api_get("/v1/routes/default/split").await;
    assert_eq!(
        stored["metadata"]["annotations"]["tandem.dev/source"],
        "kubernetes"
    );
    assert_eq!(
        conditions(&api, "split", generation(&created)).await,
        [
            c("Accepted", "True", "Accepted"),
            c("ResolvedRefs", "True", "ResolvedRefs")
        ]
    );

    // A typo in a backend: still applied (as Gateway API says, its requests get 500),
    // and visible in the status.
    let mut typo = api.get(ROUTES.0, ROUTES.1, "default", "split").unwrap();
    typo["spec"]["rules"][0]["backendRefs"][1]["name"] = json!("web-v3");
    let typo = api.replace(ROUTES.0, ROUTES.1, typo).unwrap();
    assert_eq!(
        conditions(&api, "split", generation(&typo)).await,
        [
            c("Accepted", "True", "Accepted"),
            c("ResolvedRefs", "False", "BackendNotFound")
        ]
    );
    mesh::wait_split(&proxy, "web", &[("web-v1", 90), ("web-v3", 10)], LIMIT).await;

    // An invalid route is not applied: the version before it keeps serving, and the
    // status says what and where.
    let mut broken = api.get(ROUTES.0, ROUTES.1, "default", "split").unwrap();
    broken["spec"]["rules"][0]["matches"][0]["path"] =
        json!({"type": "RegularExpression", "value": "("});
    let broken = api.replace(ROUTES.0, ROUTES.1, broken).unwrap();
    assert_eq!(
        conditions(&api, "split", generation(&broken)).await,
        [c("Accepted", "False", "UnsupportedValue")]
    );
    let o = api.get(ROUTES.0, ROUTES.1, "default", "split").unwrap();
    let message = o["status"]["parents"][0]["conditions"][0]["message"]
        .as_str()
        .unwrap();
    assert!(
        message.contains("spec.rules[0].matches[0].path"),
        "{message}"
    );
    mesh::wait_split(&proxy, "web", &[("web-v1", 90), ("web-v3", 10)], LIMIT).await;

    // Another controller's entry in the status is kept.
    let mut other = api.get(ROUTES.0, ROUTES.1, "default", "split").unwrap();
    let mut parents = other["status"]["parents"].as_array().cloned().unwrap();
    parents.push(json!({"parentRef": {"name": "web"}, "controllerName": "example.com/other", "conditions": []}));
    other["status"]["parents"] = Value::Array(parents);
    api.replace_status(ROUTES.0, ROUTES.1, other).unwrap();
    let mut fixed = api.get(ROUTES.0, ROUTES.1, "default", "split").unwrap();
    fixed["spec"]["rules"][0]["matches"][0]["path"] = prefix();
    fixed["spec"]["rules"][0]["backendRefs"][1]["name"] = json!("web-v2");
    let fixed = api.replace(ROUTES.0, ROUTES.1, fixed).unwrap();
    assert_eq!(
        conditions(&api, "split", generation(&fixed)).await,
        [
            c("Accepted", "True", "Accepted"),
            c("ResolvedRefs", "True", "ResolvedRefs")
        ]
    );
    let o = api.get(ROUTES.0, ROUTES.1, "default", "split").unwrap();
    assert!(
        o["status"]["parents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["controllerName"] == "example.com/other"),
        "{o}"
    );

    // The REST API does not write what the cluster owns.
    let (status, body) = cp
        .api_call(
            "POST",
            "/v1/apply",
            Some(&json!({"documents": [route("rest", &[("web-v1", 1)], prefix())]})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.to_string().contains("kubectl"), "{body}");

    // Deleted in the cluster: gone from the mesh.
    api.delete(ROUTES.0, ROUTES.1, "default", "split").unwrap();
    eventually(LIMIT, "the route to leave the store", || async {
        let items = cp.api_get("/v1/routes").await;
        items["items"]
            .as_array()
            .unwrap()
            .is_empty()
            .then_some(())
            .ok_or(items.to_string())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relist_after_410_gone_loses_nothing() {
    let api = cluster().await;
    let kubeconfig = api.kubeconfig().to_str().unwrap().to_string();
    let cp = ControlPlane::start_with(&["--kubernetes", "--kubeconfig", &kubeconfig]).await;
    cp.apply_ok(&mesh::docs(&[
        mesh::service("web"),
        mesh::service("web-v1"),
    ]))
    .await;
    api.create(
        ROUTES.0,
        ROUTES.1,
        route("first", &[("web-v1", 1)], prefix()),
    )
    .unwrap();
    let names = || async {
        let items = cp.api_get("/v1/routes").await;
        let mut names: Vec<String> = items["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    };
    eventually(LIMIT, "first mirrored", || async {
        let n = names().await;
        (n == ["first"]).then_some(()).ok_or(format!("{n:?}"))
    })
    .await;
    // Writes the watch never hears of, then the history they were in is compacted: the
    // watcher gets 410 Gone and must relist to learn them.
    api.pause_watches(true);
    api.create(
        ROUTES.0,
        ROUTES.1,
        route("second", &[("web-v1", 1)], prefix()),
    )
    .unwrap();
    api.delete(ROUTES.0, ROUTES.1, "default", "first").unwrap();
    api.compact();
    api.pause_watches(false);
    eventually(LIMIT, "the relist to replace first by second", || async {
        let n = names().await;
        (n == ["second"]).then_some(()).ok_or(format!("{n:?}"))
    })
    .await;
}

/// A control plane in Kubernetes mode named `name` in a 3 s Lease.
async fn replica(api: &KubeApi, name: &str) -> ControlPlane {
    let kubeconfig = api.kubeconfig().to_str().unwrap().to_string();
    ControlPlane::start_with(&[
        "--kubernetes",
        "--kubeconfig",
        &kubeconfig,
        "--kubernetes-identity",
        name,
        "--lease-duration",
        "3s",
    ])
    .await
}

/// The replica holding the Lease, from the Lease object.
async fn lease_holder(api: &KubeApi) -> String {
    eventually(LIMIT, "a lease holder", || async {
        let lease = api
            .get(
                "coordination.k8s.io/v1",
                "leases",
                "tandem-system",
                "tandem-control-plane",
            )
            .map_err(|e| e.to_string())?;
        lease["spec"]["holderIdentity"]
            .as_str()
            .map(str::to_string)
            .ok_or(lease.to_string())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_writes_status_and_the_other_takes_over_when_it_dies() {
    let api = cluster().await;
    let mut replicas = vec![replica(&api, "cp-a").await, replica(&api, "cp-b").await];
    for cp in &replicas {
        cp.apply_ok(&mesh::docs(&[
            mesh::service("web"),
            mesh::service("web-v1"),
        ]))
        .await;
    }
    let created = api
        .create(
            ROUTES.0,
            ROUTES.1,
            route("split", &[("web-v1", 1)], prefix()),
        )
        .unwrap();
    assert_eq!(
        conditions(&api, "split", generation(&created)).await,
        [
            c("Accepted", "True", "Accepted"),
            c("ResolvedRefs", "True", "ResolvedRefs")
        ]
    );
    let holder = lease_holder(&api).await;
    let (dead, survivor) = if holder == "cp-a" {
        (0, "cp-b")
    } else {
        (1, "cp-a")
    };

    // The holder dies; a change made now gets its status from the other replica within
    // the lease duration (3 s) and a renewal period, once the lease has moved.
    replicas[dead].kill().await;
    let started = std::time::Instant::now();
    let mut typo = api.get(ROUTES.0, ROUTES.1, "default", "split").unwrap();
    typo["spec"]["rules"][0]["backendRefs"][0]["name"] = json!("web-v9");
    let typo = api.replace(ROUTES.0, ROUTES.1, typo).unwrap();
    assert_eq!(
        conditions(&api, "split", generation(&typo)).await,
        [
            c("Accepted", "True", "Accepted"),
            c("ResolvedRefs", "False", "BackendNotFound")
        ]
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(6),
        "status resumed after {took:?}"
    );
    assert_eq!(lease_holder(&api).await, survivor);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_the_ca_from_one_secret() {
    let api = cluster().await;
    let kubeconfig = api.kubeconfig().to_str().unwrap().to_string();
    let mut fingerprints = Vec::new();
    for name in ["cp-a", "cp-b"] {
        let cp = ControlPlane::start_with(&[
            "--kubernetes",
            "--kubeconfig",
            &kubeconfig,
            "--kubernetes-identity",
            name,
        ])
        .await;
        let bundle = cp.tandemctl(&["ca", "bundle"]).await;
        fingerprints.push(bundle.expect_ok("ca bundle").to_string());
    }
    assert_eq!(
        fingerprints[0], fingerprints[1],
        "both replicas sign with one root"
    );
    let secret = api
        .get("v1", "secrets", "tandem-system", "tandem-ca")
        .unwrap();
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert!(secret["data"]["tls.key"].is_string(), "{secret}");
    // The Secret's certificate is the bundle the replicas hand out.
    let crt = secret["data"]["tls.crt"].as_str().unwrap();
    let out = std::process::Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    out.stdin
        .as_ref()
        .unwrap()
        .write_all(crt.as_bytes())
        .unwrap();
    let pem = String::from_utf8(out.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(pem.trim(), fingerprints[0].trim());
}

/// The endpoints of `service`'s cluster on the proxy, sorted.
async fn endpoints_of(proxy: &Proxy, service: &str) -> Vec<String> {
    let mut eps: Vec<String> = mesh::cluster_endpoints(proxy, service)
        .await
        .unwrap_or_default()
        .iter()
        .map(ToString::to_string)
        .collect();
    eps.sort();
    eps
}

/// Waits until the proxy has exactly `want` for `service`; how long it took.
async fn follow(proxy: &Proxy, service: &str, want: &[&str]) -> Duration {
    let started = std::time::Instant::now();
    eventually(LIMIT, &format!("{service} endpoints {want:?}"), || async {
        let got = endpoints_of(proxy, service).await;
        (got == want).then_some(()).ok_or(format!("{got:?}"))
    })
    .await;
    started.elapsed()
}

fn slice(name: &str, endpoints: Value) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

fn pod_endpoint(ip: &str, pod: &str, ready: bool) -> Value {
    json!({"addresses": [ip], "conditions": {"ready": ready}, "zone": "zone-a",
           "targetRef": {"kind": "Pod", "name": pod, "namespace": "default"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_and_endpoint_slices_are_discovered_and_followed() {
    let api = cluster().await;
    let kubeconfig = api.kubeconfig().to_str().unwrap().to_string();
    let cp = ControlPlane::start_with(&["--kubernetes", "--kubeconfig", &kubeconfig]).await;
    for (name, version) in [("web-1", "v1"), ("web-2", "v2")] {
        api.create("v1", "pods", json!({
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "web", "version": version}},
            "spec": {"containers": [{"name": "web", "image": "web:1"}]}
        }))
        .unwrap();
    }
    api.create(
        "v1",
        "services",
        json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}
        }),
    )
    .unwrap();
    // A Service with two ports: each port its own cluster, over the slice port of the
    // same name.
    api.create("v1", "services", json!({
        "metadata": {"name": "multi", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.21", "clusterIPs": ["10.96.0.21"],
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080},
                           {"name": "grpc", "port": 81, "targetPort": 9091, "appProtocol": "grpc"}]}
    }))
    .unwrap();
    api.create("discovery.k8s.io/v1", "endpointslices", json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "multi-abc", "namespace": "default", "labels": {"kubernetes.io/service-name": "multi"}},
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": 9091, "protocol": "TCP"}, {"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [pod_endpoint("10.244.0.9", "web-1", true)],
    }))
    .unwrap();
    api.create(
        "discovery.k8s.io/v1",
        "endpointslices",
        slice(
            "web-abc",
            json!([pod_endpoint("10.244.0.5", "web-1", true)]),
        ),
    )
    .unwrap();
    let proxy = Proxy::start_xds(cp.xds(), "client", &[]).await;
    follow(&proxy, "web", &["10.244.0.5:8080"]).await;

    // The Service as a Tandem service: its cluster IP and port, protocol from the name.
    let svc = cp.api_get("/v1/services/default/web").await;
    assert_eq!(svc["spec"]["addresses"], json!(["10.96.0.20"]), "{svc}");
    assert_eq!(svc["spec"]["ports"][0]["protocol"], "http", "{svc}");
    let dump = proxy.config_dump().await;
    assert!(
        !dump["routes"]["addresses"]["10.96.0.20:80"].is_null(),
        "{}",
        dump["routes"]["addresses"]
    );
    // The endpoint carries its pod's labels and its zone.
    let eps = cp.api_get("/v1/endpoints?namespace=default").await;
    let labels = &eps["items"][0]["spec"]["labels"];
    assert_eq!(labels["version"], "v1", "{eps}");
    assert_eq!(labels["topology.kubernetes.io/zone"], "zone-a", "{eps}");
    follow(&proxy, "multi:80", &["10.244.0.9:8080"]).await;
    follow(&proxy, "multi:81", &["10.244.0.9:9091"]).await;
    let multi = cp.api_get("/v1/services/default/multi").await;
    assert_eq!(multi["spec"]["ports"][1]["protocol"], "http2", "{multi}");
    let addresses = proxy.config_dump().await["routes"]["addresses"].clone();
    for port in ["10.96.0.21:80", "10.96.0.21:81"] {
        assert!(!addresses[port].is_null(), "{port}: {addresses}");
    }

    // Scale up, a pod goes not-ready, then the Service goes: the proxy follows each.
    let mut s = api
        .get(
            "discovery.k8s.io/v1",
            "endpointslices",
            "default",
            "web-abc",
        )
        .unwrap();
    s["endpoints"] = json!([
        pod_endpoint("10.244.0.5", "web-1", true),
        pod_endpoint("10.244.0.6", "web-2", true)
    ]);
    api.replace("discovery.k8s.io/v1", "endpointslices", s)
        .unwrap();
    let up = follow(&proxy, "web", &["10.244.0.5:8080", "10.244.0.6:8080"]).await;
    let mut s = api
        .get(
            "discovery.k8s.io/v1",
            "endpointslices",
            "default",
            "web-abc",
        )
        .unwrap();
    s["endpoints"] = json!([
        pod_endpoint("10.244.0.5", "web-1", false),
        pod_endpoint("10.244.0.6", "web-2", true)
    ]);
    api.replace("discovery.k8s.io/v1", "endpointslices", s)
        .unwrap();
    let not_ready = follow(&proxy, "web", &["10.244.0.6:8080"]).await;
    eprintln!("endpoint added: {up:?}; not-ready endpoint gone from the proxy: {not_ready:?}");
    // The goal is a second; a shared 2-core machine gets slack, the figure is printed.
    assert!(not_ready < Duration::from_secs(3), "{not_ready:?}");
    api.delete("v1", "services", "default", "web").unwrap();
    eventually(LIMIT, "web to leave the mesh", || async {
        let (code, _) = cp.api_call("GET", "/v1/services/default/web", None).await;
        (code == 404).then_some(()).ok_or(code.to_string())
    })
    .await;
}

/// The injector's webhook configuration as `install` renders it: no `caBundle` yet.
fn webhook_configuration() -> Value {
    let entry = |name: &str| {
        json!({"name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
               "clientConfig": {"service": {"name": "tandem-injector", "namespace": "tandem-system", "path": "/inject"}}})
    };
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "tandem-injector"},
        "webhooks": [entry("namespace.inject.tandem.dev"), entry("pod.inject.tandem.dev")],
    })
}

/// `tandemctl ca bundle` of `cp`.
async fn ca_bundle(cp: &ControlPlane) -> String {
    cp.tandemctl(&["ca", "bundle"])
        .await
        .expect_ok("ca bundle")
        .to_string()
}

/// Waits until every webhook's `caBundle` is `bundle` (PEM).
async fn wait_ca_bundle(api: &KubeApi, bundle: &str, what: &str) {
    use base64::Engine as _;
    eventually(LIMIT, what, || async {
        let config = api
            .get(
                "admissionregistration.k8s.io/v1",
                "mutatingwebhookconfigurations",
                "",
                "tandem-injector",
            )
            .map_err(|e| e.to_string())?;
        let bundles: Vec<String> = config["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                let b64 = w["clientConfig"]["caBundle"].as_str().unwrap_or_default();
                let pem = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap_or_default();
                String::from_utf8_lossy(&pem).into_owned()
            })
            .collect();
        bundles
            .iter()
            .all(|b| b.trim() == bundle.trim())
            .then_some(())
            .ok_or(format!("{} webhooks: {bundles:?}", bundles.len()))
    })
    .await;
}

/// Waits until `cp` lists exactly `want` as (sha256, state).
async fn wait_roots(cp: &ControlPlane, want: &[(&str, &str)], what: &str) {
    eventually(LIMIT, what, || async {
        let got = ca_roots(cp).await;
        let same =
            got.len() == want.len() && got.iter().zip(want).all(|(g, w)| g.0 == w.0 && g.1 == w.1);
        same.then_some(()).ok_or(format!("{got:?}"))
    })
    .await;
}

/// Waits until `proxy` trusts exactly `roots` (signing first) and holds a certificate
/// issued under `issuer`.
async fn wait_proxy_roots(proxy: &Proxy, roots: &[&str], issuer: &str, what: &str) {
    eventually(LIMIT, what, || async {
        let dump = proxy.config_dump().await;
        (roots_of(&dump) == roots && dump["tls"]["certificate_issuer_sha256"] == issuer)
            .then_some(())
            .ok_or(dump["tls"].to_string())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_rotation_steps_reach_every_replica_and_the_lease_holder_keeps_ca_bundle() {
    let api = cluster().await;
    api.create(
        "admissionregistration.k8s.io/v1",
        "mutatingwebhookconfigurations",
        webhook_configuration(),
    )
    .unwrap();
    let mut replicas = vec![replica(&api, "cp-a").await, replica(&api, "cp-b").await];
    // The holder fills in caBundle after the first start.
    let first = ca_bundle(&replicas[0]).await;
    wait_ca_bundle(&api, &first, "caBundle set after the first start").await;
    let old = ca_roots(&replicas[0]).await[0].0.clone();

    // A sidecar whose identity and xDS come from cp-b.
    replicas[1].apply_ok(&mesh::service("web")).await;
    let web = sidecar(&replicas[1], "web", 1, &[]).await;
    wait_proxy_roots(&web, &[&old], &old, "the sidecar under the first root").await;

    // Two rotations at once, one per replica: the API server orders them, neither is lost.
    let (a, b) = tokio::join!(
        replicas[0].tandemctl(&["ca", "rotate", "-o", "json"]),
        replicas[1].tandemctl(&["ca", "rotate", "-o", "json"])
    );
    let added = |out: &tandem_tests::control_plane::CtlOutput| {
        let v: Value = serde_json::from_str(out.expect_ok("ca rotate")).unwrap();
        v["added"]["sha256"].as_str().unwrap().to_string()
    };
    let (new, extra) = (added(&a), added(&b));
    assert_ne!(new, extra);
    let mut want = vec![new.clone(), extra.clone()];
    want.sort();
    for cp in &replicas {
        eventually(LIMIT, "three roots on every replica", || async {
            let roots = ca_roots(cp).await;
            let mut trusted: Vec<String> = roots.iter().skip(1).map(|r| r.0.clone()).collect();
            trusted.sort();
            (roots.first().map(|r| &r.0) == Some(&old) && trusted == want)
                .then_some(())
                .ok_or(format!("{roots:?}"))
        })
        .await;
    }
    // Each replica's answer is its state after the step; the other follows the Secret.
    replicas[0]
        .tandemctl(&["ca", "remove", &extra[..16]])
        .await
        .expect_ok("ca remove (the extra root)");
    for cp in &replicas {
        wait_roots(cp, &[(&old, "signing"), (&new, "trusted")], "two roots").await;
    }
    wait_proxy_roots(&web, &[&old, &new], &old, "the sidecar trusts both").await;
    wait_ca_bundle(
        &api,
        &ca_bundle(&replicas[1]).await,
        "caBundle with both roots",
    )
    .await;

    // Activating on cp-b: cp-a signs with the new root too, and the sidecar renews under it.
    replicas[1]
        .tandemctl(&["ca", "activate", &new[..16]])
        .await
        .expect_ok("ca activate");
    wait_roots(
        &replicas[0],
        &[(&new, "signing"), (&old, "trusted")],
        "cp-a follows the activation",
    )
    .await;
    wait_proxy_roots(&web, &[&new, &old], &new, "the sidecar under the new root").await;

    // The Lease holder dies; the survivor removes the old root and, holding the Lease
    // now, narrows caBundle to the new root.
    let holder = lease_holder(&api).await;
    let (dead, survivor) = if holder == "cp-a" { (0, 1) } else { (1, 0) };
    replicas[dead].kill().await;
    replicas[survivor]
        .tandemctl(&["ca", "remove", &old[..16]])
        .await
        .expect_ok("ca remove (the old root)");
    let last = ca_bundle(&replicas[survivor]).await;
    wait_ca_bundle(&api, &last, "caBundle follows on the new holder").await;
    assert_ne!(lease_holder(&api).await, holder);
    if survivor == 1 {
        wait_proxy_roots(&web, &[&new], &new, "the sidecar drops the old root").await;
    }
    // The Secret holds the new root alone, as tls.crt and in its manifest.
    let secret = api
        .get("v1", "secrets", "tandem-system", "tandem-ca")
        .unwrap();
    let manifest = secret["data"]["roots.json"].as_str().unwrap();
    use base64::Engine as _;
    let manifest: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(manifest)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["signing"], new.as_str(), "{manifest}");
    assert_eq!(manifest["roots"].as_array().unwrap().len(), 1, "{manifest}");

    // A step the CA refuses is the same refusal as on one machine.
    let out = replicas[survivor]
        .tandemctl(&["ca", "remove", &new[..16]])
        .await;
    assert!(!out.status.success());
    assert!(out.stderr.contains("last trusted root"), "{out:?}");
}
