//! Resilience of calls to a destination: connection pool limits shed the excess at once,
//! outlier detection takes a failing endpoint out and lets it back on probation, and the
//! default balancer sends most traffic to the faster endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tandem_tests::control_plane::ControlPlane;
use tandem_tests::mesh::fqdn;
use tandem_tests::traffic::{burst, destination_policy, percent, route, web_b_mesh, Shot};
use tandem_tests::upstream::HttpServer;
use tandem_tests::{client, within, Proxy, STEP_TIMEOUT};

/// Control plane and proxy for `web` → backend `web-b` over `endpoints`, with a policy.
async fn mesh_with(
    endpoints: &[std::net::SocketAddr],
    policy: &str,
    wait: impl Fn(&serde_json::Value) -> bool,
) -> (ControlPlane, Proxy) {
    let extra = [
        route(
            "web-b-only",
            "web",
            "    - backendRefs: [{ name: web-b, port: 80 }]\n",
        ),
        destination_policy("web-b", "web-b", policy),
    ];
    web_b_mesh(endpoints, &extra, |d| {
        wait(&d["routes"]["clusters"][fqdn("web-b")]["policy"])
    })
    .await
}

/// Sends `n` concurrent GETs on fresh connections; (status, proxy error, elapsed) each.
async fn concurrent(proxy: &Proxy, n: usize) -> Vec<(u16, Option<String>, Duration)> {
    join_all((0..n).map(|i| async move {
        let start = Instant::now();
        let resp = within(
            STEP_TIMEOUT,
            &format!("concurrent GET #{i}"),
            client::get_once(proxy.outbound(), "web", "/"),
        )
        .await
        .unwrap();
        let err = client::header(&resp, "tandem-proxy-error").map(str::to_owned);
        (resp.status().as_u16(), err, start.elapsed())
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_limits_shed_the_excess_fast_with_overflow() {
    let slow = HttpServer::builder("web-b")
        .delay(Duration::from_millis(600))
        .start()
        .await;
    let (_cp, proxy) = mesh_with(
        &[slow.addr()],
        "  connectionPool: { maxConnections: 2, maxPendingRequests: 1, maxRequests: 100 }\n",
        |p| p["limits"]["max_connections"] == 2,
    )
    .await;

    let results = concurrent(&proxy, 10).await;
    let ok: Vec<_> = results.iter().filter(|r| r.0 == 200).collect();
    let shed: Vec<_> = results
        .iter()
        .filter(|r| r.0 == 503 && r.1.as_deref() == Some("overflow"))
        .collect();
    println!(
        "10 concurrent, 2 connections + 1 pending: {} ok, {} shed: {results:?}",
        ok.len(),
        shed.len()
    );
    assert_eq!(
        ok.len(),
        3,
        "two in service and one pending get through: {results:?}"
    );
    assert_eq!(shed.len(), 7, "the rest overflow: {results:?}");
    for (_, _, elapsed) in &shed {
        assert!(
            *elapsed < Duration::from_millis(300),
            "shed fast, not after the upstream: {elapsed:?}"
        );
    }
    let m = proxy.metrics().await;
    assert_eq!(
        m.value("tandem_overflow_total", &[("backend", "web-b")]),
        7.0
    );
    assert_eq!(
        m.value("tandem_circuit_breaker_open", &[("backend", "web-b")]),
        1.0
    );

    // The concurrent-request limit alone.
    let (_cp2, proxy2) = mesh_with(
        &[slow.addr()],
        "  connectionPool: { maxRequests: 3 }\n",
        |p| p["limits"]["max_requests"] == 3,
    )
    .await;
    let results = concurrent(&proxy2, 10).await;
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let shed = results
        .iter()
        .filter(|r| r.1.as_deref() == Some("overflow"))
        .count();
    assert_eq!((ok, shed), (3, 7), "{results:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_is_ejected_and_returns_on_probation() {
    let good = HttpServer::echo("good").await;
    let bad = HttpServer::builder("bad").status(500).start().await;
    let (_cp, proxy) = mesh_with(
        &[good.addr(), bad.addr()],
        "  loadBalancer: roundRobin\n  outlierDetection: { consecutive5xx: 3, baseEjectionTime: 2s, maxEjectionPercent: 50 }\n",
        |p| p["outlier"]["consecutive_5xx"] == 3,
    )
    .await;
    let get = Shot::get("http://web/");

    let first = burst(proxy.outbound(), &get, 40, 1).await;
    let ejected_at = Instant::now();
    assert_eq!(
        bad.requests(),
        3,
        "ejected after exactly 3 consecutive 5xx: {first:?}"
    );
    assert_eq!(first.status(500), 3, "{first:?}");
    let during = burst(proxy.outbound(), &get, 50, 1).await;
    assert_eq!(
        during.status(200),
        50,
        "no traffic to the ejected endpoint: {during:?}"
    );
    assert_eq!(bad.requests(), 3);

    // Back after the 2 s ejection, on probation: three more failures eject it again.
    within(
        Duration::from_secs(10),
        "the endpoint to come back",
        async {
            while bad.requests() == 3 {
                burst(proxy.outbound(), &get, 5, 1).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await;
    let back_after = ejected_at.elapsed();
    println!("ejected after 3 failures; back after {back_after:?}");
    assert!(
        back_after >= Duration::from_millis(1900),
        "not before the ejection time: {back_after:?}"
    );
    burst(proxy.outbound(), &get, 40, 1).await;
    assert_eq!(
        bad.requests(),
        6,
        "a second run of 3 failures ejects it again"
    );
    let m = proxy.metrics().await;
    assert_eq!(
        m.value("tandem_outlier_ejections_total", &[("backend", "web-b")]),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_sends_most_traffic_to_the_faster_endpoint() {
    let fast = HttpServer::builder("fast")
        .delay(Duration::from_millis(3))
        .start()
        .await;
    let slow = HttpServer::builder("slow")
        .delay(Duration::from_millis(30))
        .start()
        .await;
    let (_cp, proxy) = mesh_with(
        &[fast.addr(), slow.addr()],
        "  loadBalancer: peakEwma\n",
        |p| p["lb"] == "peakEwma",
    )
    .await;
    let t = burst(proxy.outbound(), &Shot::get("http://web/"), 1000, 4).await;
    assert_eq!(t.status(200), 1000, "{t:?}");
    let fast_share = percent(t.server("fast"), t.total());
    println!("P2C peak EWMA, 3 ms vs 30 ms endpoints: fast got {fast_share:.1} %");
    assert!(
        fast_share >= 80.0,
        "the faster endpoint gets clearly more: {t:?}"
    );
}
