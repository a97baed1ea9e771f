//! AuthorizationPolicy enforced by the server's sidecar: HTTP requests by caller identity,
//! namespace, path, method and port (403 and `tandem_authz_denied_total`), opaque TCP
//! connections closed before any byte reaches the app, and the mesh-wide default.

// Test helpers panic on failure by design, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tandem_tests::client;
use tandem_tests::control_plane::ControlPlane;
use tandem_tests::mesh::{self, service, service_with_protocol};
use tandem_tests::tcp::{try_round_trip, TcpEchoServer};
use tandem_tests::traffic::wait_dump;
use tandem_tests::upstream::HttpServer;
use tandem_tests::zero_trust::{openssl_probe, register, sidecar, wait_mtls_to};
use tandem_tests::{within, Proxy, STEP_TIMEOUT};

fn policy(name: &str, target: &str, action: &str, rules: &str) -> String {
    format!(
        "apiVersion: tandem.dev/v1alpha1\nkind: AuthorizationPolicy\n\
         metadata: {{ name: {name}, namespace: default }}\n\
         spec:\n  targetRef: {{ kind: Service, name: {target} }}\n  action: {action}\n  rules:\n{rules}"
    )
}

async fn status(proxy: &Proxy, method: &str, path: &str) -> u16 {
    let pool = client::http1(proxy.outbound());
    let req = client::request(method, &format!("http://api{path}"), client::empty());
    within(STEP_TIMEOUT, "request", client::send(&pool, req))
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
        .status()
        .as_u16()
}

/// Waits until `server`'s inbound policy has `allow` rules (`Some`) and `deny` rules as
/// counted.
async fn wait_policy(server: &Proxy, allow: Option<usize>, deny: usize) {
    wait_dump(server, Duration::from_secs(15), "the inbound policy", |d| {
        let inbound = &d["routes"]["inbound"];
        let allow_ok = match allow {
            None => inbound["allow"].is_null(),
            Some(n) => inbound["allow"].as_array().is_some_and(|a| a.len() == n),
        };
        allow_ok && inbound["deny"].as_array().is_some_and(|a| a.len() == deny)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requests_are_allowed_and_denied_by_identity_path_method_and_port() {
    let cp = ControlPlane::start().await;
    cp.apply_ok(&mesh::docs(&[
        service("web"),
        service("ops"),
        service("api"),
    ]))
    .await;
    let app = HttpServer::echo("api-app").await;
    let server = sidecar(&cp, "api", app.addr().port(), &[]).await;
    register(&cp, "api", server.inbound()).await;
    let web = sidecar(&cp, "web", 1, &[]).await;
    let ops = sidecar(&cp, "ops", 1, &[]).await;
    wait_mtls_to(&web, "api").await;
    wait_mtls_to(&ops, "api").await;
    // No policy: everyone in.
    assert_eq!(status(&ops, "GET", "/api/items").await, 200);

    let port = server.inbound().port();
    cp.apply_ok(&policy(
        "api-readers",
        "api",
        "ALLOW",
        &format!(
            "    - from: [ {{ principal: \"spiffe://cluster.local/ns/default/sa/web\" }} ]\n\
             \x20     paths: [\"/api/*\"]\n      methods: [GET]\n      ports: [{port}]\n"
        ),
    ))
    .await;
    wait_policy(&server, Some(1), 0).await;
    assert_eq!(status(&web, "GET", "/api/items").await, 200);
    assert_eq!(status(&web, "POST", "/api/items").await, 403, "method");
    assert_eq!(status(&web, "GET", "/admin").await, 403, "path");
    assert_eq!(status(&ops, "GET", "/api/items").await, 403, "identity");
    let denied = server
        .metrics()
        .await
        .value("tandem_authz_denied_total", &[("dst_service", "api")]);
    assert_eq!(denied, 3.0);

    // A DENY rule wins over the ALLOW rule.
    cp.apply_ok(&policy(
        "no-deletes",
        "api",
        "DENY",
        "    - from: [ { namespace: default } ]\n      paths: [\"/api/secret\"]\n",
    ))
    .await;
    wait_policy(&server, Some(1), 1).await;
    assert_eq!(status(&web, "GET", "/api/secret").await, 403);
    assert_eq!(status(&web, "GET", "/api/items").await, 200);
    // The path is checked as the app will read it: dot segments, escapes and doubled
    // slashes do not slip past a rule, and the app gets the normalized path.
    for sneaky in [
        "/api/../admin",
        "/api/%2e%2e/admin",
        "//api/secret",
        "/api/./secret",
    ] {
        assert_eq!(status(&web, "GET", sneaky).await, 403, "{sneaky}");
    }
    assert_eq!(status(&web, "GET", "/api%2Fsecret").await, 400);
    let pool = client::http1(web.outbound());
    let req = client::request("GET", "http://api/api/./items/../list", client::empty());
    let resp = within(STEP_TIMEOUT, "request", client::send(&pool, req))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        client::header(&resp, tandem_tests::upstream::ECHO_PATH),
        Some("/api/list")
    );
    let served = app.requests();
    assert_eq!(served, 4, "only allowed requests reached the app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_default_deny_admits_only_what_a_policy_allows() {
    let cp = ControlPlane::start_with(&["--default-authz", "deny"]).await;
    cp.apply_ok(&mesh::docs(&[service("web"), service("api")]))
        .await;
    let app = HttpServer::echo("api-app").await;
    let server = sidecar(&cp, "api", app.addr().port(), &[]).await;
    register(&cp, "api", server.inbound()).await;
    let web = sidecar(&cp, "web", 1, &[]).await;
    wait_mtls_to(&web, "api").await;
    wait_policy(&server, Some(0), 0).await;
    assert_eq!(status(&web, "GET", "/").await, 403);
    assert_eq!(app.requests(), 0);

    cp.apply_ok(&policy(
        "mesh-callers",
        "api",
        "ALLOW",
        "    - from: [ { authenticated: true } ]\n",
    ))
    .await;
    wait_policy(&server, Some(1), 0).await;
    assert_eq!(status(&web, "GET", "/").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_are_refused_before_any_byte_reaches_the_app() {
    let cp = ControlPlane::start().await;
    cp.apply_ok(&mesh::docs(&[
        service("web"),
        service("ops"),
        service_with_protocol("db", "tcp"),
        policy(
            "db-clients",
            "db",
            "ALLOW",
            "    - from: [ { principal: \"spiffe://cluster.local/ns/default/sa/web\" } ]\n",
        ),
    ]))
    .await;
    let db = TcpEchoServer::start().await;
    let server = sidecar(&cp, "db", db.addr().port(), &[]).await;
    register(&cp, "db", server.inbound()).await;
    let listen = ["--listen", "db=127.0.0.1:0"];
    let web = sidecar(&cp, "web", 1, &listen).await;
    let ops = sidecar(&cp, "ops", 1, &listen).await;
    wait_mtls_to(&web, "db").await;
    wait_mtls_to(&ops, "db").await;
    wait_policy(&server, Some(1), 0).await;

    let ok = try_round_trip(web.service_addr("db"), b"select 1").await;
    assert_eq!(ok.as_deref(), Ok(&b"select 1"[..]));
    assert_eq!(db.connections(), 1);
    let refused = try_round_trip(ops.service_addr("db"), b"select 1").await;
    assert!(refused.is_err(), "ops must not reach db: {refused:?}");
    assert_eq!(
        db.connections(),
        1,
        "the denied connection never reached the app"
    );
    let denied = server.metrics().await.value(
        "tandem_authz_denied_total",
        &[("dst_service", "db"), ("protocol", "tcp")],
    );
    assert_eq!(denied, 1.0);
}

/// A sidecar with an identity but no inbound policy (its Service is not in the mesh) denies;
/// once the Service exists, the same client with a mesh certificate gets through. The
/// client is `openssl s_client` with a certificate issued for `web`: the positive control
/// of the refusals probed in mtls.rs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_without_an_inbound_policy_denies_until_its_service_exists() {
    let cp = ControlPlane::start().await;
    cp.apply_ok(&service("web")).await;
    let app = HttpServer::echo("ghost-app").await;
    let ghost = sidecar(&cp, "ghost", app.addr().port(), &[]).await;
    let web = tandem_tests::secure_xds::issue(&cp, "web").await;
    let dir = tandem_tests::control_plane::TempDir::new("web-cert");
    let (crt, key) = (dir.path().join("web.crt"), dir.path().join("web.key"));
    std::fs::write(&crt, &web.chain_pem).unwrap();
    std::fs::write(&key, &web.key_pem).unwrap();
    let args = [
        "-tls1_3",
        "-cert",
        crt.to_str().unwrap(),
        "-key",
        key.to_str().unwrap(),
    ];

    let denied = openssl_probe(ghost.inbound(), &args).await;
    assert!(
        denied.output.starts_with("HTTP/1.1 403"),
        "{}",
        denied.output
    );
    assert!(
        denied.output.contains("no inbound policy"),
        "{}",
        denied.output
    );
    assert_eq!(app.requests(), 0);

    cp.apply_ok(&service("ghost")).await;
    wait_policy(&ghost, None, 0).await;
    let allowed = openssl_probe(ghost.inbound(), &args).await;
    assert!(
        allowed.output.starts_with("HTTP/1.1 200"),
        "{}",
        allowed.output
    );
    assert_eq!(app.requests(), 1);
}
