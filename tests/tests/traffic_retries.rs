//! Retries: a route's retry policy hides an upstream that fails a share of requests; the
//! retry budget keeps retries from multiplying load during a total outage; and a request
//! that never reached an endpoint is sent elsewhere whatever its method.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tandem_tests::control_plane::ControlPlane;
use tandem_tests::mesh::{docs, endpoint, service};
use tandem_tests::traffic::{
    burst, destination_policy, route, routes_of, wait_dump, web_b_mesh, Shot,
};
use tandem_tests::upstream::HttpServer;
use tandem_tests::Proxy;

const PROPAGATION: Duration = Duration::from_secs(15);

/// A route for `web` to backend `web-b` retrying 503 up to three times.
fn retrying_route() -> String {
    route(
        "web-retry",
        "web",
        "    - backendRefs: [{ name: web-b, port: 80 }]\n      retry: { codes: [503], attempts: 3, backoff: 1ms }\n",
    )
}

/// Whether a `/config_dump` holds the retry policy of [`retrying_route`].
fn has_retry_policy(dump: &serde_json::Value) -> bool {
    routes_of(dump, "web")
        .first()
        .is_some_and(|r| r["retry"]["attempts"] == 3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_recover_from_an_upstream_failing_thirty_percent() {
    let flaky = HttpServer::builder("web-b").fail_ratio(0.3).start().await;
    let (_cp, proxy) = web_b_mesh(
        &[flaky.addr()],
        &[
            retrying_route(),
            // 30 % failures need more than the default 20 % budget.
            destination_policy("web-b", "web-b", "  retryBudget: { percent: 60 }\n"),
        ],
        has_retry_policy,
    )
    .await;

    let t = burst(proxy.outbound(), &Shot::get("http://web/"), 1000, 8).await;
    let m = proxy.metrics().await;
    // Concurrent requests interleave, so each attempt fails with about 30 % chance: with
    // three retries a request fails only when all four attempts do, 0.3^4 = 0.8 % (8 of
    // 1000 expected; without retries 300).
    let failed = 1000 - t.status(200);
    assert!(failed <= 25, "retries recover almost everything: {t:?}");
    let retries = m.value(
        "tandem_retries_total",
        &[("backend", "web-b"), ("reason", "policy")],
    );
    let upstream = flaky.requests();
    println!(
        "30 % failing upstream: {failed} of 1000 failed, {retries} retries, {upstream} upstream requests"
    );
    assert!(retries >= 300.0, "about 30 % were retried: {retries}");
    assert_eq!(
        upstream,
        1000 + retries as u64,
        "each retry is one more upstream request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_caps_retries_during_a_total_outage() {
    let down = HttpServer::builder("web-b").status(503).start().await;
    let (_cp, proxy) = web_b_mesh(
        &[down.addr()],
        &[
            retrying_route(),
            destination_policy(
                "web-b",
                "web-b",
                "  retryBudget: { percent: 20, minRetriesPerSecond: 1 }\n",
            ),
        ],
        has_retry_policy,
    )
    .await;

    let t = burst(proxy.outbound(), &Shot::get("http://web/"), 1000, 8).await;
    assert_eq!(t.status(503), 1000, "{t:?}");
    let upstream = down.requests();
    let m = proxy.metrics().await;
    let exhausted = m.value(
        "tandem_retry_budget_exhausted_total",
        &[("backend", "web-b")],
    );
    println!("total outage: {upstream} upstream requests for 1000 (without a budget: 4000), budget refused {exhausted}");
    // 20 % of 1000 plus 1/s over the 10 s window.
    assert!(
        upstream <= 1000 + 200 + 10,
        "retries stay within the budget: {upstream} upstream requests"
    );
    assert!(
        upstream >= 1000 + 150,
        "the budget still allows retries: {upstream}"
    );
    assert!(exhausted > 0.0, "refusals are counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_that_never_reached_an_endpoint_is_sent_to_another() {
    let live = HttpServer::echo("web-b").await;
    // A port that refuses connections: bound, then closed.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (_cp, proxy) = web_b_mesh(
        &[live.addr(), dead],
        &[
            route(
                "web-b-only",
                "web",
                "    - backendRefs: [{ name: web-b, port: 80 }]\n",
            ),
            destination_policy("web-b", "web-b", "  loadBalancer: roundRobin\n"),
        ],
        |d| {
            let c = &d["routes"]["clusters"][tandem_tests::mesh::fqdn("web-b")];
            c["endpoints"].as_array().is_some_and(|e| e.len() == 2)
                && c["policy"]["lb"] == "roundRobin"
        },
    )
    .await;

    let body = b"order #42: one bicycle".to_vec();
    let t = burst(
        proxy.outbound(),
        &Shot::get("http://web/orders").with_body("POST", &body),
        200,
        4,
    )
    .await;
    assert_eq!(t.status(200), 200, "no POST failed: {t:?}");
    let m = proxy.metrics().await;
    let unsent = m.value(
        "tandem_retries_total",
        &[("backend", "web-b"), ("reason", "unsent")],
    );
    println!("POST to a half-dead backend: 200/200 ok, {unsent} sent again after connect refused");
    assert!(
        unsent >= 50.0,
        "round robin sent about half to the dead port first: {unsent}"
    );
    assert_eq!(
        live.requests(),
        200,
        "each POST reached the live endpoint exactly once"
    );
}

/// A route for `web` → `web-b` retrying 503 once, for POST too when `non_idempotent`.
fn post_retry_route(non_idempotent: bool) -> String {
    let annotation = if non_idempotent {
        "\n  annotations: { retry.tandem.dev/non-idempotent: \"true\" }"
    } else {
        ""
    };
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata:\n  name: web-retry\n  namespace: default{annotation}\nspec:\n\
         \x20 parentRefs: [{{ kind: Service, name: web }}]\n\
         \x20 rules:\n    - backendRefs: [{{ name: web-b, port: 80 }}]\n      retry: {{ codes: [503], attempts: 1, backoff: 1ms }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_replayed_from_a_bounded_buffer_and_post_needs_the_routes_consent() {
    // Every second request fails: with one client at a time, a failed first attempt's
    // retry is the next request, which succeeds.
    let flaky = HttpServer::builder("web-b").fail_ratio(0.5).start().await;
    let cp = ControlPlane::start().await;
    cp.apply_ok(&docs(&[
        service("web"),
        service("web-b"),
        endpoint("web-b", flaky.addr()),
        post_retry_route(true),
    ]))
    .await;
    let proxy = Proxy::start_xds(
        cp.xds(),
        "client",
        &["--workers", "1", "--retry-buffer-bytes", "1024"],
    )
    .await;
    wait_dump(&proxy, PROPAGATION, "the POST retry policy", |d| {
        routes_of(d, "web")
            .first()
            .is_some_and(|r| r["retry"]["idempotent_only"] == false)
    })
    .await;
    let c = tandem_tests::client::http1(proxy.outbound());
    let post = |body: Vec<u8>| {
        let c = c.clone();
        async move {
            let req = tandem_tests::client::request(
                "POST",
                "http://web/orders",
                tandem_tests::client::full(body),
            );
            tandem_tests::within(
                tandem_tests::STEP_TIMEOUT,
                "POST",
                tandem_tests::client::send(&c, req),
            )
            .await
            .unwrap()
        }
    };
    let small = b"x".repeat(600);
    let big = b"y".repeat(4096);
    // Request 1 succeeds; request 2 fails and its retry (request 3) succeeds with the
    // same body, replayed from the buffer.
    let first = post(small.clone()).await;
    assert_eq!(first.status(), 200);
    let replayed = post(small.clone()).await;
    assert_eq!(replayed.status(), 200, "{replayed:?}");
    assert_eq!(
        replayed.body().as_ref(),
        small.as_slice(),
        "the retry carried the whole body"
    );
    assert_eq!(flaky.requests(), 3);
    // Request 4 fails; a body over the 1024-byte buffer cannot be replayed: no retry.
    let too_big = post(big).await;
    assert_eq!(too_big.status(), 503, "{too_big:?}");
    assert_eq!(flaky.requests(), 4);

    // Without the route's consent, a failed POST is not retried.
    cp.apply_ok(&post_retry_route(false)).await;
    wait_dump(
        &proxy,
        PROPAGATION,
        "the idempotent-only retry policy",
        |d| {
            routes_of(d, "web")
                .first()
                .is_some_and(|r| r["retry"]["idempotent_only"] == true)
        },
    )
    .await;
    assert_eq!(post(small.clone()).await.status(), 200, "request 5");
    assert_eq!(
        post(small).await.status(),
        503,
        "request 6 fails and stays failed"
    );
    assert_eq!(flaky.requests(), 6);
}
