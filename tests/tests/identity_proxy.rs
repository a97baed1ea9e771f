//! The proxy obtains and renews its workload identity: a join token from `tandemctl`, a
//! key made in the proxy, a certificate from the real control plane's CA over TLS 1.3
//! pinned to the CA in the token, renewal at half life while traffic flows.

// Test helpers panic on failure by design, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tandem_tests::control_plane::ControlPlane;
use tandem_tests::load::{Load, LoadSpec};
use tandem_tests::mesh::{self, service};
use tandem_tests::upstream::HttpServer;
use tandem_tests::{eventually, Proxy};

/// How long renewals may take to show (the test control plane issues 10 s certificates).
const RENEWAL: Duration = Duration::from_secs(30);

async fn join_token(cp: &ControlPlane, service: &str) -> String {
    cp.tandemctl(&["token", "create", "--service", service])
        .await
        .expect_ok("token create")
        .trim()
        .to_string()
}

/// Proxy arguments that fetch a certificate with `token` from the identity endpoint.
fn identity_args<'a>(token: &'a str, id_addr: &'a str) -> [&'a str; 6] {
    [
        "--token",
        token,
        "--identity-addr",
        id_addr,
        "--workers",
        "1",
    ]
}

fn identity(dump: &serde_json::Value) -> serde_json::Value {
    match dump.get("identity") {
        Some(i) if i.is_object() => i.clone(),
        _ => panic!("/config_dump has no `identity` object: {dump}"),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_with_a_token_is_ready_only_with_exactly_its_identity() {
    let cp = ControlPlane::start().await;
    cp.apply_ok(&service("web")).await;
    let token = join_token(&cp, "web").await;
    let id_addr = cp.identity().to_string();
    let proxy = Proxy::start_xds(cp.xds(), "web", &identity_args(&token, &id_addr)).await;

    assert_eq!(proxy.admin_get("/ready").await.0, 200);
    let (_, dump_text) = proxy.admin_get("/config_dump").await;
    let dump: serde_json::Value = serde_json::from_str(&dump_text).unwrap();
    let id = identity(&dump);
    assert_eq!(id["spiffe_id"], "spiffe://cluster.local/ns/default/sa/web");
    let not_after = id["not_after"].as_u64().unwrap();
    assert!(
        (now() + 23 * 3600..=now() + 24 * 3600 + 60).contains(&not_after),
        "24 h certificate: {id}"
    );
    let roots = id["trust_bundle"].as_array().unwrap();
    assert_eq!(roots.len(), 1, "{id}");
    assert!(roots[0]["not_after"].as_u64().unwrap() > not_after);
    for secret in ["PRIVATE", "BEGIN", &token] {
        assert!(!dump_text.contains(secret), "the dump shows {secret:?}");
        assert!(!proxy.stderr().contains(secret), "the log shows {secret:?}");
    }

    let metrics = proxy.metrics().await;
    assert_eq!(
        metrics.value("tandem_identity_cert_expiry_timestamp_seconds", &[]),
        not_after as f64
    );
    assert_eq!(
        metrics.value("tandem_trust_bundle_expiry_timestamp_seconds", &[]),
        roots[0]["not_after"].as_u64().unwrap() as f64
    );
    assert_eq!(
        metrics.get("tandem_identity_renewals_total", &[("result", "ok")]),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_another_service_gives_that_identity_only_to_that_service() {
    let cp = ControlPlane::start().await;
    cp.apply_ok(&mesh::docs(&[service("web"), service("api")]))
        .await;
    let token = join_token(&cp, "api").await;
    let id_addr = cp.identity().to_string();
    let args = identity_args(&token, &id_addr);

    // --service web with a token for api: refused, with the reason, and never ready.
    let failure = Proxy::try_start_xds(cp.xds(), "web", &args)
        .await
        .expect_err("a proxy for web must not run as api");
    assert_eq!(failure.status.and_then(|s| s.code()), Some(2), "{failure}");
    assert!(
        failure.stderr.contains(
            "the credential is for spiffe://cluster.local/ns/default/sa/api, but this proxy runs as --namespace default, service account web"
        ),
        "{failure}"
    );

    // The same token for the service it names works.
    let proxy = Proxy::start_xds(cp.xds(), "api", &args).await;
    let id = identity(&proxy.config_dump().await);
    assert_eq!(id["spiffe_id"], "spiffe://cluster.local/ns/default/sa/api");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_a_wrong_pin_never_makes_the_proxy_ready() {
    let cp = ControlPlane::start().await;
    cp.apply_ok(&service("web")).await;
    let token = join_token(&cp, "web").await;
    // Flip the last hex digit of the CA pin (the last field).
    let last = token.chars().last().unwrap();
    let flipped = if last == '0' { '1' } else { '0' };
    let bad = format!("{}{flipped}", &token[..token.len() - 1]);
    let id_addr = cp.identity().to_string();

    let failure = Proxy::try_start_xds(cp.xds(), "web", &identity_args(&bad, &id_addr))
        .await
        .expect_err("a pin mismatch must never become ready");
    assert!(failure.status.is_none(), "it keeps retrying: {failure}");
    assert!(failure.stderr.contains("CA pin mismatch"), "{failure}");
    assert!(
        !failure.stderr.contains("certificate obtained"),
        "{failure}"
    );
    // The handshake failed before the token was sent: nothing was issued.
    assert!(
        !cp.stderr().contains("issued a workload certificate"),
        "{}",
        cp.stderr()
    );
}

/// Certificates live 10 s and the join token 6 s: the second and third renewals happen
/// after the token expired, so they can only have been authenticated by the certificate
/// in force (mTLS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_is_renewed_at_half_life_over_mtls_while_traffic_flows() {
    // Build (or find) the proxy binary first: the 6 s token must not expire during a build.
    tokio::task::spawn_blocking(tandem_tests::proxy::binary)
        .await
        .unwrap();
    let upstream = HttpServer::echo("api-a").await;
    let cp = ControlPlane::start_with(&["--cert-ttl", "10s"]).await;
    // api is a plain app without a sidecar: its TLS mode says so (mutual-TLS traffic
    // between sidecars across renewals is in trust_rotation.rs).
    cp.apply_ok(&mesh::docs(&[
        tandem_tests::zero_trust::service_with_mode("api", "disabled"),
        service("client"),
    ]))
    .await;
    cp.tandemctl(&["endpoint", "add", "api", &upstream.addr().to_string()])
        .await
        .expect_ok("endpoint add");
    let token = cp
        .tandemctl(&["token", "create", "--service", "client", "--ttl", "6s"])
        .await
        .expect_ok("token create")
        .trim()
        .to_string();
    let token_expiry = now() + 6;
    let id_addr = cp.identity().to_string();
    let proxy = Proxy::start_xds(cp.xds(), "client", &identity_args(&token, &id_addr)).await;
    let first = identity(&proxy.config_dump().await)["not_after"]
        .as_u64()
        .unwrap();
    mesh::answered_by(&proxy, "api", 5).await;

    let load = Load::start(&[proxy.outbound()], LoadSpec::new("api"));
    load.wait_more(20, Duration::from_secs(20)).await;
    let renewed = eventually(RENEWAL, "three renewals", || async {
        let m = proxy.metrics().await;
        let ok = m.value("tandem_identity_renewals_total", &[("result", "ok")]);
        if ok >= 3.0 {
            Ok(m.value("tandem_identity_cert_expiry_timestamp_seconds", &[]))
        } else {
            Err(format!("renewals ok = {ok}"))
        }
    })
    .await;
    load.wait_more(20, Duration::from_secs(20)).await;
    let report = load.stop().await;
    report.assert_no_failures("load across three certificate renewals");
    assert!(
        now() > token_expiry + 1,
        "the token expired before the last renewal"
    );
    assert!(
        cp.stderr().contains("client certificate"),
        "renewals authenticated by the certificate: {}",
        cp.stderr()
    );

    let id = identity(&proxy.config_dump().await);
    assert_eq!(
        id["spiffe_id"],
        "spiffe://cluster.local/ns/default/sa/client"
    );
    let now_not_after = id["not_after"].as_u64().unwrap();
    assert!(now_not_after > first, "{first} → {id}");
    assert!(renewed as u64 > first);
    assert_eq!(proxy.admin_get("/ready").await.0, 200);
    let errors = proxy
        .metrics()
        .await
        .value("tandem_identity_renewals_total", &[("result", "error")]);
    assert_eq!(errors, 0.0, "{}", proxy.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_a_config_file_is_a_usage_error() {
    let failure = Proxy::try_start("services: []\n", &["--token", "tdm1.x.y.z"])
        .await
        .expect_err("--token needs --control-plane");
    assert_eq!(failure.status.and_then(|s| s.code()), Some(2), "{failure}");
    assert!(
        failure
            .stderr
            .contains("--token, --service-account-token-file, --ca-pins and --identity-addr are for --control-plane mode"),
        "{failure}"
    );
}
