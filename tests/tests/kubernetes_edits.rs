//! The control plane's own edits in Kubernetes mode, against the Kubernetes API test
//! server. A guarded canary is written to the cluster's HTTPRoute (weights,
//! `canary.tandem.dev/*` state, `kubernetes.io/change-cause`), as Flagger does, mirrored
//! back and served to a real proxy; the Lease holder's controller rolls a failing canary
//! back by itself, and the reason is in the cluster object and in `tandemctl history`. A
//! chaos experiment's FaultInjection and route edits land in the cluster and are taken
//! out of it when the steady state breaks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{json, Value};
use tandem_tests::control_plane::ControlPlane;
use tandem_tests::kube_api::KubeApi;
use tandem_tests::load::{Load, LoadSpec};
use tandem_tests::mesh::{self, docs, endpoint, service};
use tandem_tests::upstream::HttpServer;
use tandem_tests::{eventually, Proxy};

const ROUTES: (&str, &str) = ("gateway.networking.k8s.io/v1", "httproutes");
const LIMIT: Duration = Duration::from_secs(20);

/// The cluster's HTTPRoute `web`: everything to web-v1, web-v2 deployed at weight 0.
fn route() -> Value {
    json!({
        "apiVersion": ROUTES.0, "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "default",
                     "labels": {"team": "shop"}},
        "spec": {
            "parentRefs": [{"kind": "Service", "name": "web", "port": 80}],
            "rules": [{"backendRefs": [
                {"name": "web-v1", "port": 80, "weight": 100},
                {"name": "web-v2", "port": 80, "weight": 0},
            ]}]
        }
    })
}

fn weights(o: &Value) -> Vec<(String, u64)> {
    o["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_string(),
                b["weight"].as_u64().unwrap_or(1),
            )
        })
        .collect()
}

async fn ctl_ok(cp: &ControlPlane, args: &[&str]) -> String {
    cp.tandemctl(args)
        .await
        .expect_ok(&args.join(" "))
        .to_owned()
}

/// The API test server with the control plane's namespace, and a control plane in
/// Kubernetes mode on it.
async fn cluster_and_control_plane() -> (KubeApi, ControlPlane) {
    let api = KubeApi::start().await.expect("API test server");
    api.create(
        "v1",
        "namespaces",
        json!({"metadata": {"name": "tandem-system"}}),
    )
    .unwrap();
    let kubeconfig = api.kubeconfig().to_str().unwrap().to_string();
    let cp = ControlPlane::start_with(&[
        "--kubernetes",
        "--kubeconfig",
        &kubeconfig,
        "--lease-duration",
        "3s",
    ])
    .await;
    (api, cp)
}

/// `web` → web-v1 (healthy) and `v2` at weight 0 by the cluster's route, a client proxy
/// following it, and steady load through it.
struct Mesh {
    api: KubeApi,
    cp: ControlPlane,
    _v1: HttpServer,
    _v2: HttpServer,
    proxy: Proxy,
    load: Load,
    /// The route as the cluster first stored it.
    created: Value,
}

async fn loaded_mesh(v2: HttpServer) -> Mesh {
    let (api, cp) = cluster_and_control_plane().await;
    let v1 = HttpServer::echo("web-v1").await;
    cp.apply_ok(&docs(&[
        service("web"),
        service("web-v1"),
        service("web-v2"),
        endpoint("web-v1", v1.addr()),
        endpoint("web-v2", v2.addr()),
    ]))
    .await;
    let created = api.create(ROUTES.0, ROUTES.1, route()).unwrap();
    let proxy = Proxy::start_xds(cp.xds(), "client", &["--workers", "1"]).await;
    mesh::wait_split(&proxy, "web", &[("web-v1", 100), ("web-v2", 0)], LIMIT).await;
    let load = Load::start(&[proxy.outbound()], LoadSpec::new("web"));
    load.wait_more(100, Duration::from_secs(30)).await;
    Mesh {
        api,
        cp,
        _v1: v1,
        _v2: v2,
        proxy,
        load,
        created,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_canary_in_the_cluster_is_rolled_back_by_the_lease_holder() {
    let v2 = HttpServer::builder("web-v2").fail_ratio(0.2).start().await;
    // Every field bound: the upstreams must live as long as the test.
    let Mesh {
        api,
        cp,
        _v1,
        _v2,
        proxy,
        load,
        created: _,
    } = loaded_mesh(v2).await;

    // Started through the REST API: written to the cluster's route, which the proxy
    // then follows through the mirror.
    let started = ctl_ok(
        &cp,
        &[
            "canary",
            "start",
            "web",
            "--stable",
            "web-v1",
            "--canary",
            "web-v2",
            "--auto",
            "--max-error-rate",
            "1%",
            "--min-requests",
            "20",
            "--step-time",
            "30s",
        ],
    )
    .await;
    eprintln!("{started}");
    let o = api.get(ROUTES.0, ROUTES.1, "default", "web").unwrap();
    let a = &o["metadata"]["annotations"];
    assert_eq!(a["canary.tandem.dev/state"], "running", "{o}");
    assert_eq!(a["canary.tandem.dev/auto"], "true", "{o}");
    assert_eq!(
        a["kubernetes.io/change-cause"], "canary default/web start",
        "{o}"
    );
    assert!(
        a.get("tandem.dev/source").is_none(),
        "the store's marker stays home: {o}"
    );
    assert_eq!(
        o["metadata"]["labels"]["team"], "shop",
        "the rest is kept: {o}"
    );
    assert_eq!(
        weights(&o),
        [("web-v1".to_string(), 95), ("web-v2".to_string(), 5)]
    );

    // No person acts from here: the Lease holder sees web-v2 fail and rolls back, in the
    // cluster.
    let rolled_back = eventually(LIMIT, "the rollback in the cluster", || async {
        let o = api
            .get(ROUTES.0, ROUTES.1, "default", "web")
            .map_err(|e| e.to_string())?;
        (o["metadata"]["annotations"]["canary.tandem.dev/state"] == "aborted")
            .then_some(o.clone())
            .ok_or(o.to_string())
    })
    .await;
    let cause = rolled_back["metadata"]["annotations"]["kubernetes.io/change-cause"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        cause.starts_with("canary default/web rolled back: web-v2 error rate ")
            && cause.contains("> 1% over"),
        "{cause}"
    );
    assert_eq!(
        weights(&rolled_back),
        [("web-v1".to_string(), 100), ("web-v2".to_string(), 0)]
    );
    mesh::wait_split(&proxy, "web", &[("web-v1", 100), ("web-v2", 0)], LIMIT).await;
    let report = load.stop().await;
    let total = report.ok + report.failed;
    eprintln!(
        "rolled back in the cluster: {} of {total} requests failed ({cause})",
        report.failed
    );
    // The load stops at the rollback, so the share is over a few seconds; the promise
    // over a whole experiment is measured in canary.rs and benches/canary.sh.
    assert!(
        report.failed * 50 <= total,
        "{} of {total} failed",
        report.failed
    );

    // The mirrored revision says why, and the REST API reads the same state.
    let history = cp.history().await;
    assert!(
        history
            .iter()
            .any(|r| r["summary"].as_str().is_some_and(|s| s.starts_with(&cause))),
        "{history:?}"
    );
    let status = ctl_ok(&cp, &["canary", "status", "web", "-o", "json"]).await;
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["state"]["phase"], "aborted", "{status}");

    // A person's action goes to the cluster too, and keeps what the object has beyond
    // the canary's fields (a label added with kubectl meanwhile).
    api.merge_patch(
        ROUTES.0,
        ROUTES.1,
        "default",
        "web",
        json!({"metadata": {"labels": {"edited": "by-hand"}}}),
    )
    .unwrap();
    eventually(LIMIT, "the hand edit mirrored", || async {
        let r = cp.api_get("/v1/routes/default/web").await;
        (r["metadata"]["labels"]["edited"] == "by-hand")
            .then_some(())
            .ok_or(r.to_string())
    })
    .await;
    ctl_ok(
        &cp,
        &[
            "canary", "start", "web", "--stable", "web-v1", "--canary", "web-v2", "--steps",
            "50,100",
        ],
    )
    .await;
    let o = api.get(ROUTES.0, ROUTES.1, "default", "web").unwrap();
    assert_eq!(o["metadata"]["labels"]["edited"], "by-hand", "{o}");
    assert_eq!(
        weights(&o),
        [("web-v1".to_string(), 50), ("web-v2".to_string(), 50)]
    );
    mesh::wait_split(&proxy, "web", &[("web-v1", 50), ("web-v2", 50)], LIMIT).await;
    ctl_ok(&cp, &["canary", "abort", "web"]).await;
    mesh::wait_split(&proxy, "web", &[("web-v1", 100), ("web-v2", 0)], LIMIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chaos_experiment_in_the_cluster_ends_by_itself_and_leaves_the_route_as_it_was() {
    const FAULTS: (&str, &str) = ("tandem.dev/v1alpha1", "faultinjections");
    let Mesh {
        api,
        cp,
        _v1,
        _v2,
        proxy,
        load,
        created,
    } = loaded_mesh(HttpServer::echo("web-v2").await).await;

    let out = cp
        .tandemctl(&[
            "chaos",
            "run",
            "web",
            "--abort",
            "30%",
            "--for",
            "60s",
            "--max-error-rate",
            "5%",
        ])
        .await;
    assert!(!out.status.success(), "the steady state broke: {out:?}");
    assert!(out.stderr.contains("broken"), "{out:?}");
    let report = load.stop().await;
    assert!(report.failed > 0, "the fault was injected");

    // In the cluster: the FaultInjection is gone and the route is back to its spec.
    assert!(
        api.list(FAULTS.0, FAULTS.1, Some("default"))
            .unwrap()
            .is_empty(),
        "the FaultInjection is deleted from the cluster"
    );
    let o = api.get(ROUTES.0, ROUTES.1, "default", "web").unwrap();
    assert_eq!(o["spec"], created["spec"], "the route is restored: {o}");
    let cause = o["metadata"]["annotations"]["kubernetes.io/change-cause"]
        .as_str()
        .unwrap();
    assert!(
        cause.starts_with("chaos default/web ended: steady state broken: web error rate"),
        "{cause}"
    );
    let history = cp.history().await;
    assert!(
        history.iter().any(|r| r["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("chaos default/web started: abort 30%"))),
        "{history:?}"
    );
    // Every request succeeds again.
    let seen = mesh::answered_by(&proxy, "web", 30).await;
    assert_eq!(seen.get("web-v1"), Some(&30), "{seen:?}");
}
