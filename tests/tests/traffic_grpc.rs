//! GRPCRoute through a real control plane and proxy: gRPC calls are routed by service,
//! method and header to two real gRPC backends (`grpc.health.v1.Health` servers that name
//! themselves in `x-server` response metadata), over h2c through the outbound listener.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tandem_tests::control_plane::ControlPlane;
use tandem_tests::grpc::{answered_by, health_client, GrpcHealthServer};
use tandem_tests::mesh::{docs, endpoint, service_with_protocol};
use tandem_tests::traffic::{routes_of, wait_dump};
use tandem_tests::{within, Proxy, STEP_TIMEOUT};
use tonic_health::pb::HealthCheckRequest;

const PROPAGATION: Duration = Duration::from_secs(15);

/// `Check` goes to v2; any `Health` call carrying `x-canary: 1` goes to v2; everything
/// else goes to the catch-all, which splits 100/0 to v1 (v2 deployed, not released).
const GRPC_ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\n\
metadata: { name: echo, namespace: default }\n\
spec:\n\
\x20 parentRefs: [ { kind: Service, name: echo, port: 80 } ]\n\
\x20 rules:\n\
\x20   - matches: [ { method: { service: grpc.health.v1.Health, method: Check } } ]\n\
\x20     backendRefs: [ { name: echo-v2, port: 80 } ]\n\
\x20   - matches:\n\
\x20       - method: { service: grpc.health.v1.Health }\n\
\x20         headers: [ { name: x-canary, value: \"1\" } ]\n\
\x20     backendRefs: [ { name: echo-v2, port: 80 } ]\n\
\x20   - backendRefs:\n\
\x20       - { name: echo-v1, port: 80, weight: 100 }\n\
\x20       - { name: echo-v2, port: 80, weight: 0 }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_route_sends_one_method_to_v2_and_the_rest_to_v1() {
    let v1 = GrpcHealthServer::start_named("echo-v1").await;
    let v2 = GrpcHealthServer::start_named("echo-v2").await;
    let cp = ControlPlane::start().await;
    cp.apply_ok(&docs(&[
        service_with_protocol("echo", "grpc"),
        service_with_protocol("echo-v1", "grpc"),
        service_with_protocol("echo-v2", "grpc"),
        endpoint("echo-v1", v1.addr()),
        endpoint("echo-v2", v2.addr()),
        GRPC_ROUTE.to_string(),
    ]))
    .await;
    let proxy = Proxy::start_xds(cp.xds(), "client", &["--workers", "1"]).await;
    wait_dump(&proxy, PROPAGATION, "three routes for echo", |d| {
        routes_of(d, "echo").len() == 3
    })
    .await;
    // Precedence: the exact call, then the service with a header, then the catch-all;
    // route names carry the `grpc:` prefix.
    let dump = proxy.config_dump().await;
    let names: Vec<&str> = routes_of(&dump, "echo")
        .iter()
        .map(|r| r["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        [
            "default/grpc:echo/rule-0/match-0",
            "default/grpc:echo/rule-1/match-0",
            "default/grpc:echo/rule-2/match-0",
        ]
    );

    let mut client = health_client(proxy.outbound(), "echo").await;
    const CALLS: u64 = 20;
    for i in 0..CALLS {
        let resp = within(
            STEP_TIMEOUT,
            &format!("Check #{i}"),
            client.check(HealthCheckRequest {
                service: String::new(),
            }),
        )
        .await
        .unwrap_or_else(|s| panic!("Check #{i}: {s:?}"));
        assert_eq!(answered_by(&resp), "echo-v2", "Check #{i}");
    }
    for i in 0..CALLS {
        let resp = within(
            STEP_TIMEOUT,
            &format!("Watch #{i}"),
            client.watch(HealthCheckRequest {
                service: String::new(),
            }),
        )
        .await
        .unwrap_or_else(|s| panic!("Watch #{i}: {s:?}"));
        assert_eq!(answered_by(&resp), "echo-v1", "Watch #{i}");
        // The stream works end to end: the first status arrives, then it is dropped.
        let mut stream = resp.into_inner();
        let first = within(
            STEP_TIMEOUT,
            &format!("Watch #{i} first message"),
            stream.message(),
        )
        .await
        .unwrap_or_else(|s| panic!("Watch #{i} stream: {s:?}"));
        assert!(first.is_some(), "Watch #{i} ended without a status");
    }
    for i in 0..CALLS {
        let mut req = tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        });
        req.metadata_mut()
            .insert("x-canary", tonic::metadata::MetadataValue::from_static("1"));
        let resp = within(
            STEP_TIMEOUT,
            &format!("opted-in Watch #{i}"),
            client.watch(req),
        )
        .await
        .unwrap_or_else(|s| panic!("opted-in Watch #{i}: {s:?}"));
        assert_eq!(answered_by(&resp), "echo-v2", "opted-in Watch #{i}");
    }
    // Every call reached exactly the backend its rule names: nothing leaked to v2 through
    // the weight-0 backendRef, nothing was retried elsewhere.
    assert_eq!((v1.requests(), v2.requests()), (CALLS, 2 * CALLS));

    let m = proxy.metrics().await;
    for (rule, backend, want) in [
        ("rule-0", "echo-v2", CALLS),
        ("rule-1", "echo-v2", CALLS),
        ("rule-2", "echo-v1", CALLS),
    ] {
        let route = format!("default/grpc:echo/{rule}");
        let got = m.value(
            "tandem_requests_total",
            &[("route", route.as_str()), ("backend", backend)],
        );
        assert_eq!(
            got, want as f64,
            "tandem_requests_total for {route} → {backend}"
        );
    }
}
