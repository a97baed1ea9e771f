//! Certificates and roots change under traffic without a failed request: workload
//! certificates renewed at half life over mutual TLS, and a root rotation (add a root, sign
//! with it, remove the old one) while requests flow between sidecars.

// Test helpers panic on failure by design, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tandem_tests::control_plane::ControlPlane;
use tandem_tests::load::{Load, LoadSpec};
use tandem_tests::mesh::{self, service};
use tandem_tests::upstream::HttpServer;
use tandem_tests::zero_trust::{ca_roots, register, roots_of, sidecar, wait_mtls_to};
use tandem_tests::{eventually, Proxy};

/// How long a rotation step may take to reach every proxy.
const STEP: Duration = Duration::from_secs(20);

/// Waits until `proxy` trusts exactly `roots` (in order) and its certificate chains to
/// `issuer`.
async fn wait_tls(proxy: &Proxy, roots: &[&str], issuer: &str, what: &str) {
    eventually(STEP, what, || async {
        let dump = proxy.config_dump().await;
        let tls = &dump["tls"];
        if roots_of(&dump) == roots && tls["certificate_issuer_sha256"] == issuer {
            Ok(())
        } else {
            Err(tls.to_string())
        }
    })
    .await;
}

/// `web` → `api` over mutual TLS, with steady load through web's sidecar.
async fn loaded_pair(cp: &ControlPlane) -> (HttpServer, Proxy, Proxy, Load) {
    cp.apply_ok(&mesh::docs(&[service("web"), service("api")]))
        .await;
    let app = HttpServer::echo("api-app").await;
    let server = sidecar(cp, "api", app.addr().port(), &[]).await;
    register(cp, "api", server.inbound()).await;
    let client = sidecar(cp, "web", 1, &[]).await;
    wait_mtls_to(&client, "api").await;
    mesh::answered_by(&client, "api", 3).await;
    let load = Load::start(&[client.outbound()], LoadSpec::new("api"));
    load.wait_more(20, Duration::from_secs(20)).await;
    (app, server, client, load)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_rotation_under_load_fails_no_request() {
    let cp = ControlPlane::start().await;
    let (_app, server, client, load) = loaded_pair(&cp).await;
    let initial = ca_roots(&cp).await;
    let old = initial[0].0.clone();
    wait_tls(&client, &[&old], &old, "the first root").await;
    let handshakes = |m: &tandem_tests::metrics::Metrics| {
        m.value(
            "tandem_tls_handshakes_total",
            &[("direction", "outbound"), ("result", "ok")],
        )
    };
    let before = handshakes(&client.metrics().await);

    // 1. A new root joins the bundle; the old one still signs.
    let rotated = cp.tandemctl(&["ca", "rotate", "-o", "json"]).await;
    let rotated: serde_json::Value = serde_json::from_str(rotated.expect_ok("ca rotate")).unwrap();
    let new = rotated["added"]["sha256"].as_str().unwrap().to_string();
    for p in [&client, &server] {
        wait_tls(p, &[&old, &new], &old, "both roots trusted").await;
    }
    load.wait_more(20, STEP).await;

    // 2. The new root signs: both sidecars notice and renew at once, under the new root.
    cp.tandemctl(&["ca", "activate", &new[..16]])
        .await
        .expect_ok("ca activate");
    for p in [&client, &server] {
        wait_tls(p, &[&new, &old], &new, "certificates under the new root").await;
    }
    load.wait_more(20, STEP).await;

    // 3. The old root goes; only the new one is trusted.
    cp.tandemctl(&["ca", "remove", &old[..16]])
        .await
        .expect_ok("ca remove");
    for p in [&client, &server] {
        wait_tls(p, &[&new], &new, "the old root removed").await;
    }
    load.wait_more(20, STEP).await;

    // A sidecar started now (fresh connections, full handshakes) talks to api as well.
    let late = sidecar(&cp, "web", 1, &[]).await;
    wait_mtls_to(&late, "api").await;
    mesh::answered_by(&late, "api", 3).await;

    let report = load.stop().await;
    report.assert_no_failures("load across a root rotation");
    // Each of the three bundle changes retired the pooled connections verified under the
    // previous bundle: the load went on over new handshakes.
    let after = handshakes(&client.metrics().await);
    assert!(after >= before + 3.0, "handshakes {before} → {after}");
    for p in [&client, &server] {
        let m = p.metrics().await;
        assert_eq!(
            m.value("tandem_identity_renewals_total", &[("result", "error")]),
            0.0,
            "{}",
            p.stderr()
        );
        assert!(m.value("tandem_identity_renewals_total", &[("result", "ok")]) >= 1.0);
    }
}

/// Certificates live 10 s: three renewals on each side while requests flow over mutual
/// TLS between the sidecars, and no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_renewal_under_load_between_sidecars_fails_no_request() {
    let cp = ControlPlane::start_with(&["--cert-ttl", "10s"]).await;
    let (app, server, client, load) = loaded_pair(&cp).await;
    for p in [&client, &server] {
        eventually(Duration::from_secs(40), "three renewals", || async {
            let ok = p
                .metrics()
                .await
                .value("tandem_identity_renewals_total", &[("result", "ok")]);
            if ok >= 3.0 {
                Ok(())
            } else {
                Err(format!("renewals ok = {ok}"))
            }
        })
        .await;
    }
    load.wait_more(20, Duration::from_secs(20)).await;
    let report = load.stop().await;
    report.assert_no_failures("load across certificate renewals");
    assert!(app.requests() > 40);
    let m = client.metrics().await;
    let tls = m.value(
        "tandem_requests_total",
        &[("direction", "outbound"), ("tls", "true")],
    );
    let plain = m.value(
        "tandem_requests_total",
        &[("direction", "outbound"), ("tls", "false")],
    );
    assert!(tls > 40.0 && plain == 0.0, "tls {tls}, plaintext {plain}");
}
