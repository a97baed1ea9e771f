//! Mutual TLS 1.3 between sidecars with identities from the real control plane: the
//! caller's identity reaches the app, the inbound port refuses everything but a mesh
//! client certificate over TLS 1.3, a server with the wrong identity is refused, modes
//! `permissive` and `disabled`, and opaque TCP wrapped in TLS.

// Test helpers panic on failure by design, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tandem_tests::client::{self, header};
use tandem_tests::control_plane::{ControlPlane, TempDir};
use tandem_tests::mesh::{self, service, service_with_protocol};
use tandem_tests::tcp::TcpEchoServer;
use tandem_tests::traffic::wait_dump;
use tandem_tests::upstream::{HttpServer, ECHO_HEADERS, SERVER};
use tandem_tests::zero_trust::{
    foreign_client_cert, openssl_probe, register, service_with_mode, sidecar, spiffe, wait_mtls_to,
};
use tandem_tests::{within, Proxy, STEP_TIMEOUT};

/// `web` (client sidecar, no app) → `api` (sidecar in front of an echo app).
struct Pair {
    cp: ControlPlane,
    app: HttpServer,
    server: Proxy,
    client: Proxy,
}

async fn pair(api_doc: String) -> Pair {
    let cp = ControlPlane::start().await;
    cp.apply_ok(&mesh::docs(&[service("web"), api_doc])).await;
    let app = HttpServer::echo("api-app").await;
    let server = sidecar(&cp, "api", app.addr().port(), &[]).await;
    register(&cp, "api", server.inbound()).await;
    let client = sidecar(&cp, "web", 1, &[]).await;
    Pair {
        cp,
        app,
        server,
        client,
    }
}

async fn get(proxy: &Proxy, host: &str, path: &str) -> http::Response<bytes::Bytes> {
    within(
        STEP_TIMEOUT,
        &format!("GET http://{host}{path}"),
        client::get_once(proxy.outbound(), host, path),
    )
    .await
    .unwrap_or_else(|e| panic!("GET http://{host}{path}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_speak_mutual_tls_and_the_app_learns_the_callers_identity() {
    let p = pair(service("api")).await;
    wait_mtls_to(&p.client, "api").await;

    // A client that claims another identity in the header gets it overwritten.
    let pool = client::http1(p.client.outbound());
    for i in 0..50 {
        let req = http::Request::builder()
            .uri("http://api/whoami")
            .header(
                "x-forwarded-client-cert",
                "URI=spiffe://cluster.local/ns/default/sa/admin",
            )
            .body(client::empty())
            .unwrap();
        let resp = within(STEP_TIMEOUT, "request", client::send(&pool, req))
            .await
            .unwrap_or_else(|e| panic!("request #{i}: {e}"));
        assert_eq!(resp.status(), 200, "#{i}: {resp:?}");
        assert_eq!(header(&resp, SERVER), Some("api-app"));
        let seen: serde_json::Value =
            serde_json::from_str(header(&resp, ECHO_HEADERS).unwrap()).unwrap();
        assert_eq!(
            seen["x-forwarded-client-cert"],
            serde_json::json!([format!("URI={}", spiffe("web"))]),
            "#{i}: the app sees exactly the caller's verified identity"
        );
    }

    let c = p.client.metrics().await;
    let sent = c.value(
        "tandem_requests_total",
        &[
            ("direction", "outbound"),
            ("dst_service", "api"),
            ("tls", "true"),
        ],
    );
    assert_eq!(sent, 50.0);
    let s = p.server.metrics().await;
    let got = s.value(
        "tandem_requests_total",
        &[
            ("direction", "inbound"),
            ("src_service", "web"),
            ("tls", "true"),
        ],
    );
    assert_eq!(got, 50.0);
    // Connection reuse: 50 requests, a handful of handshakes at most.
    let handshakes = c.value(
        "tandem_tls_handshakes_total",
        &[("direction", "outbound"), ("result", "ok")],
    );
    assert!((1.0..=4.0).contains(&handshakes), "{handshakes} handshakes");
    let dump = p.client.config_dump().await;
    assert_eq!(dump["tls"]["trust_domain"], "cluster.local", "{dump}");
    assert!(!serde_json::to_string(&dump).unwrap().contains("BEGIN"));

    // Plaintext to the mutual inbound port: closed, never reaches the app.
    let before = p.app.requests();
    let plain = client::get_once(p.server.inbound(), "api", "/").await;
    assert!(plain.is_err(), "plaintext must be refused: {plain:?}");
    assert_eq!(p.app.requests(), before);
    // The connection closes as the refusal is counted: wait for the count.
    tandem_tests::eventually(Duration::from_secs(5), "the refusal counted", || async {
        let refused = p.server.metrics().await.value(
            "tandem_tls_plaintext_refused_total",
            &[("dst_service", "api")],
        );
        if refused == 1.0 {
            Ok(())
        } else {
            Err(format!("tandem_tls_plaintext_refused_total = {refused}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbound_port_accepts_only_tls13_with_a_mesh_client_certificate() {
    let p = pair(service("api")).await;
    let inbound = p.server.inbound();
    let dir = TempDir::new("foreign-ca");
    let (key, cert) = foreign_client_cert(dir.path());

    let tls12 = openssl_probe(inbound, &["-tls1_2"]).await;
    assert!(!tls12.answered, "TLS 1.2 must fail: {}", tls12.output);
    let anonymous = openssl_probe(inbound, &["-tls1_3"]).await;
    assert!(
        !anonymous.answered,
        "TLS 1.3 without a client certificate must fail: {}",
        anonymous.output
    );
    let foreign = openssl_probe(inbound, &["-tls1_3", "-cert", &cert, "-key", &key]).await;
    assert!(
        !foreign.answered,
        "a certificate from another CA must fail: {}",
        foreign.output
    );
    assert_eq!(p.app.requests(), 0, "nothing reached the app");
    // openssl may exit on the alert before the server has counted the failure.
    tandem_tests::eventually(
        Duration::from_secs(5),
        "three failed handshakes",
        || async {
            let failed = p.server.metrics().await.value(
                "tandem_tls_handshakes_total",
                &[("direction", "inbound"), ("result", "error")],
            );
            if failed >= 3.0 {
                Ok(())
            } else {
                Err(format!("{failed} failed handshakes counted"))
            }
        },
    )
    .await;

    // The same port serves a mesh client.
    wait_mtls_to(&p.client, "api").await;
    let resp = get(&p.client, "api", "/").await;
    assert_eq!(resp.status(), 200, "{resp:?}");
    drop(p.cp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_not_the_announced_identity_is_refused() {
    let cp = ControlPlane::start().await;
    cp.apply_ok(&mesh::docs(&[
        service("web"),
        service("api"),
        service("billing"),
    ]))
    .await;
    let app = HttpServer::echo("billing-app").await;
    // billing's sidecar, registered (wrongly, or maliciously) as an endpoint of api.
    let impostor = sidecar(&cp, "billing", app.addr().port(), &[]).await;
    register(&cp, "api", impostor.inbound()).await;
    let client = sidecar(&cp, "web", 1, &[]).await;
    wait_mtls_to(&client, "api").await;

    let resp = get(&client, "api", "/").await;
    assert_eq!(resp.status(), 502, "{resp:?}");
    let why = header(&resp, "tandem-proxy-error").unwrap_or_default();
    assert!(
        why.contains(&spiffe("billing")) && why.contains(&spiffe("api")),
        "the error names both identities: {why}"
    );
    assert_eq!(
        app.requests(),
        0,
        "not a byte of the request reached billing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_accepts_both_and_disabled_is_plaintext() {
    let p = pair(service_with_mode("api", "permissive")).await;
    wait_mtls_to(&p.client, "api").await;
    assert_eq!(get(&p.client, "api", "/").await.status(), 200);
    let plain = within(
        STEP_TIMEOUT,
        "plaintext GET",
        client::get_once(p.server.inbound(), "api", "/"),
    )
    .await
    .expect("permissive accepts plaintext");
    assert_eq!(plain.status(), 200);
    let s = p.server.metrics().await;
    let inbound = |tls| {
        s.value(
            "tandem_requests_total",
            &[("direction", "inbound"), ("tls", tls)],
        )
    };
    assert_eq!((inbound("true"), inbound("false")), (1.0, 1.0));

    // disabled: clients stop originating TLS, the server serves plaintext only.
    p.cp.apply_ok(&service_with_mode("api", "disabled")).await;
    let cluster = mesh::fqdn("api");
    wait_dump(
        &p.client,
        Duration::from_secs(15),
        "plaintext to api",
        |d| d["routes"]["clusters"][&cluster]["tls"].is_null(),
    )
    .await;
    wait_dump(
        &p.server,
        Duration::from_secs(15),
        "inbound disabled",
        |d| d["routes"]["inbound"]["mode"] == "disabled",
    )
    .await;
    assert_eq!(get(&p.client, "api", "/").await.status(), 200);
    let c = p.client.metrics().await;
    let plain_out = c.value(
        "tandem_requests_total",
        &[
            ("direction", "outbound"),
            ("dst_service", "api"),
            ("tls", "false"),
        ],
    );
    assert_eq!(plain_out, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tcp_between_sidecars_is_wrapped_in_mutual_tls() {
    let cp = ControlPlane::start().await;
    cp.apply_ok(&mesh::docs(&[
        service("web"),
        service_with_protocol("db", "tcp"),
    ]))
    .await;
    let db = TcpEchoServer::start().await;
    let server = sidecar(&cp, "db", db.addr().port(), &[]).await;
    register(&cp, "db", server.inbound()).await;
    let client = sidecar(&cp, "web", 1, &["--listen", "db=127.0.0.1:0"]).await;
    wait_mtls_to(&client, "db").await;

    let echoed = tandem_tests::tcp::round_trip(client.service_addr("db"), b"ping over mtls").await;
    assert_eq!(echoed, b"ping over mtls");
    let s = server.metrics().await;
    let ok = s.value(
        "tandem_tls_handshakes_total",
        &[("direction", "inbound"), ("result", "ok")],
    );
    assert!(ok >= 1.0, "the TCP hop was TLS: {ok}");
    // Plaintext TCP straight to the inbound port never reaches the database.
    let before = db.connections();
    let _ = tandem_tests::tcp::try_round_trip(server.inbound(), b"plain").await;
    assert_eq!(db.connections(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_to_a_known_server_resume_the_tls_session() {
    let p = pair(service("api")).await;
    wait_mtls_to(&p.client, "api").await;
    // One request: one full handshake, and the server's session tickets stored.
    assert_eq!(get(&p.client, "api", "/").await.status(), 200);
    // Four slow requests at once need three more HTTP/1 connections to the same server.
    let slow = (0..4).map(|_| {
        let pool = client::http1(p.client.outbound());
        async move {
            let req = http::Request::builder()
                .uri("http://api/slow")
                .header(tandem_tests::upstream::DELAY_MS, "300")
                .body(client::empty())
                .unwrap();
            client::send(&pool, req).await.unwrap().status()
        }
    });
    let statuses = within(
        STEP_TIMEOUT,
        "four slow requests",
        futures_util::future::join_all(slow),
    )
    .await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let m = p.client.metrics().await;
    let kind = |k| {
        m.value(
            "tandem_tls_handshakes_total",
            &[("direction", "outbound"), ("kind", k), ("result", "ok")],
        )
    };
    // The first connection brought two single-use tickets (rustls uses a TLS 1.3 ticket
    // once): two of the three new connections resume, the third pays a full handshake.
    let (full, resumed) = (kind("full"), kind("resumed"));
    assert_eq!(full + resumed, 4.0, "full {full}, resumed {resumed}");
    assert!(resumed >= 2.0, "full {full}, resumed {resumed}");
}
