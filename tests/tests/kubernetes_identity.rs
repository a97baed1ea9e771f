//! Identities from ServiceAccounts, against the Kubernetes API test server: real
//! sidecars present projected ServiceAccount tokens (audience `tandem`) to the real
//! control plane in `--kubernetes` mode, which checks them with `TokenReview` and issues
//! `spiffe://cluster.local/ns/<ns>/sa/<serviceaccount>`; a token for another audience is
//! refused; the discovered Service's pods' accounts become the identity its clients
//! expect, and the caller's account reaches the app over mutual TLS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{json, Value};
use tandem_tests::client::{self, header};
use tandem_tests::control_plane::{ControlPlane, TempDir};
use tandem_tests::kube_api::{tokenreview::API_SERVER_AUDIENCE, KubeApi};
use tandem_tests::traffic::wait_dump;
use tandem_tests::upstream::{HttpServer, ECHO_HEADERS, SERVER};
use tandem_tests::{mesh, within, Proxy, STEP_TIMEOUT};

const LIMIT: Duration = Duration::from_secs(15);

fn spiffe(account: &str) -> String {
    format!("spiffe://cluster.local/ns/default/sa/{account}")
}

/// The SHA-256 of every root the control plane trusts, comma-separated (`--ca-pins`).
async fn pins(cp: &ControlPlane) -> String {
    let out = cp.tandemctl(&["ca", "status", "-o", "json"]).await;
    let status: Value = serde_json::from_str(out.expect_ok("ca status")).unwrap();
    let pins: Vec<&str> = status["roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["sha256"].as_str().unwrap())
        .collect();
    pins.join(",")
}

/// `POST /v1/certificates` with `token` and a CSR that is not one, as (status, error):
/// the endpoint authenticates before it reads the CSR, so 400 means the token passed
/// and 401/403 that it did not.
fn present(cp: &ControlPlane, token: &str) -> (u16, String) {
    let body = json!({"token": token, "csr_pem": "not a CSR"}).to_string();
    let out = std::process::Command::new("curl")
        .args(["-sk", "--tlsv1.3", "-o", "-", "-w", "\n%{http_code}"])
        .args(["-H", "content-type: application/json", "-d", &body])
        .arg(format!("https://{}/v1/certificates", cp.identity()))
        .output()
        .expect("curl (apt-get install -y curl)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let error = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.to_string());
    (code.trim().parse().unwrap_or(0), error)
}

fn slice(port: u16, ip: &str, ready: bool) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-abc", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": ready},
                       "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "default"}}],
    })
}

/// A sidecar for `service` running as `account`, with the ServiceAccount token in a file.
async fn sidecar(
    cp: &ControlPlane,
    dir: &TempDir,
    service: &str,
    account: &str,
    token: &str,
    app_port: u16,
) -> Proxy {
    let path = dir.path().join(format!("{account}.token"));
    std::fs::write(&path, token).unwrap();
    let (pins, id, port) = (
        pins(cp).await,
        cp.identity().to_string(),
        app_port.to_string(),
    );
    Proxy::start_xds(
        cp.xds(),
        service,
        &[
            "--service-account-token-file",
            path.to_str().unwrap(),
            "--service-account",
            account,
            "--ca-pins",
            &pins,
            "--identity-addr",
            &id,
            "--app-port",
            &port,
            "--workers",
            "1",
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_become_mesh_identities_checked_by_token_review() {
    let api = KubeApi::start().await.expect("API test server");
    api.create(
        "v1",
        "namespaces",
        json!({"metadata": {"name": "tandem-system"}}),
    )
    .unwrap();
    api.register_token("web-token", "default", "web-sa", &["tandem"]);
    api.register_token("client-token", "default", "client", &["tandem"]);
    api.register_token("api-only", "default", "web-sa", &[API_SERVER_AUDIENCE]);
    let kubeconfig = api.kubeconfig().to_str().unwrap().to_string();
    let cp = ControlPlane::start_with(&["--kubernetes", "--kubeconfig", &kubeconfig]).await;

    // The identity endpoint asks the API server about each token, for audience tandem.
    let (code, _) = present(&cp, "web-token");
    assert_eq!(
        code, 400,
        "a good token passes; only the junk CSR is refused"
    );
    let (code, why) = present(&cp, "api-only");
    assert_eq!(code, 401, "{why}");
    assert!(why.contains("audience"), "{why}");
    let (code, why) = present(&cp, "never-issued");
    assert_eq!(code, 401, "{why}");
    api.revoke_token("web-token");
    assert_eq!(present(&cp, "web-token").0, 401, "a revoked token");
    api.register_token("web-token", "default", "web-sa", &["tandem"]);

    // The web pod runs as web-sa; its endpoint is listed before it is ready (a pod's
    // proxy asks for its config first), at an address the sidecar will replace.
    api.create("v1", "pods", json!({
        "metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web"}},
        "spec": {"serviceAccountName": "web-sa", "containers": [{"name": "web", "image": "web:1"}]}
    }))
    .unwrap();
    api.create(
        "v1",
        "services",
        json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.30", "clusterIPs": ["10.96.0.30"],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
        }),
    )
    .unwrap();
    api.create(
        "discovery.k8s.io/v1",
        "endpointslices",
        slice(1, "127.0.0.1", false),
    )
    .unwrap();
    let dir = TempDir::new("sa-tokens");
    let app = HttpServer::echo("web-app").await;
    eventually_accounts(&cp, &["web-sa"]).await;
    let server = sidecar(&cp, &dir, "web", "web-sa", "web-token", app.addr().port()).await;
    let dump = server.config_dump().await;
    assert_eq!(
        dump["identity"]["spiffe_id"],
        spiffe("web-sa"),
        "{}",
        dump["identity"]
    );

    // Now the pod is ready, at its sidecar's inbound port.
    let mut s = api
        .get(
            "discovery.k8s.io/v1",
            "endpointslices",
            "default",
            "web-abc",
        )
        .unwrap();
    let ready = slice(server.inbound().port(), "127.0.0.1", true);
    s["ports"] = ready["ports"].clone();
    s["endpoints"] = ready["endpoints"].clone();
    api.replace("discovery.k8s.io/v1", "endpointslices", s)
        .unwrap();

    // A client (its account named after its service, as standalone) calls web expecting
    // web-sa, and web's app sees the client's ServiceAccount identity.
    let client = sidecar(&cp, &dir, "client", "client", "client-token", 1).await;
    let cluster = mesh::fqdn("web");
    wait_dump(&client, LIMIT, "mutual TLS to web as web-sa", |d| {
        let c = &d["routes"]["clusters"][&cluster];
        c["tls"]["identities"] == json!([spiffe("web-sa")])
            && c["endpoints"].as_array().is_some_and(|e| e.len() == 1)
    })
    .await;
    let pool = client::http1(client.outbound());
    for i in 0..10 {
        let req = http::Request::builder()
            .uri("http://web/")
            .body(client::empty())
            .unwrap();
        let resp = within(STEP_TIMEOUT, "request", client::send(&pool, req))
            .await
            .unwrap_or_else(|e| panic!("request #{i}: {e}"));
        assert_eq!(resp.status(), 200, "#{i}: {resp:?}");
        assert_eq!(header(&resp, SERVER), Some("web-app"));
        let seen: Value = serde_json::from_str(header(&resp, ECHO_HEADERS).unwrap()).unwrap();
        assert_eq!(
            seen["x-forwarded-client-cert"],
            json!([format!("URI={}", spiffe("client"))]),
        );
    }
}

/// Waits until the control plane's `web` service runs as exactly `accounts`.
async fn eventually_accounts(cp: &ControlPlane, accounts: &[&str]) {
    tandem_tests::eventually(LIMIT, &format!("web to run as {accounts:?}"), || async {
        let (code, svc) = cp.api_call("GET", "/v1/services/default/web", None).await;
        let got = svc["spec"]["serviceAccounts"].clone();
        (code == 200 && got == json!(accounts))
            .then_some(())
            .ok_or(format!("{code} {svc}"))
    })
    .await;
}
