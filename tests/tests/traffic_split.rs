//! Weighted splits and header opt-in, through a real control plane and proxy: the split a
//! route asks for is the split the backends see, and a backend at weight 0 (deployed, not
//! released) receives only the requests that opt in.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tandem_tests::control_plane::ControlPlane;
use tandem_tests::mesh::{self, docs, endpoint, service, split_route};
use tandem_tests::traffic::{burst, percent, route, routes_of, wait_dump, Shot};
use tandem_tests::upstream::HttpServer;
use tandem_tests::Proxy;

const PROPAGATION: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_splits_hold_within_two_points_over_ten_thousand_requests() {
    let v1 = HttpServer::echo("web-v1").await;
    let v2 = HttpServer::echo("web-v2").await;
    let cp = ControlPlane::start().await;
    let mut all = vec![
        service("web"),
        service("web-v1"),
        service("web-v2"),
        endpoint("web-v1", v1.addr()),
        endpoint("web-v2", v2.addr()),
    ];
    all.push(split_route(
        "web-split",
        "web",
        &[("web-v1", 90), ("web-v2", 10)],
    ));
    cp.apply_ok(&docs(&all)).await;
    let proxy = Proxy::start_xds(cp.xds(), "client", &["--workers", "1"]).await;

    for (w1, w2) in [(90u64, 10u64), (99, 1)] {
        cp.apply_ok(&split_route(
            "web-split",
            "web",
            &[("web-v1", w1), ("web-v2", w2)],
        ))
        .await;
        mesh::wait_split(
            &proxy,
            "web",
            &[("web-v1", w1), ("web-v2", w2)],
            PROPAGATION,
        )
        .await;
        let t = burst(proxy.outbound(), &Shot::get("http://web/"), 10_000, 16).await;
        assert_eq!(t.status(200), 10_000, "{w1}/{w2}: {t:?}");
        let got = percent(t.server("web-v2"), t.total());
        println!("split {w1}/{w2}: web-v2 got {got:.2} % of 10,000");
        assert!(
            (got - w2 as f64).abs() <= 2.0,
            "{w1}/{w2}: web-v2 share {got:.2} % is more than 2 points off: {t:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_match_opts_requests_into_a_canary_at_weight_zero() {
    let v1 = HttpServer::echo("web-v1").await;
    let v2 = HttpServer::echo("web-v2").await;
    let cp = ControlPlane::start().await;
    let rules = "    - matches:\n        - headers: [{ name: x-canary, value: \"true\" }]\n\
                 \x20     backendRefs: [{ name: web-v2, port: 80 }]\n\
                 \x20   - backendRefs:\n        - { name: web-v1, port: 80, weight: 100 }\n\
                 \x20       - { name: web-v2, port: 80, weight: 0 }\n";
    cp.apply_ok(&docs(&[
        service("web"),
        service("web-v1"),
        service("web-v2"),
        endpoint("web-v1", v1.addr()),
        endpoint("web-v2", v2.addr()),
        route("web-canary", "web", rules),
    ]))
    .await;
    let proxy = Proxy::start_xds(cp.xds(), "client", &["--workers", "1"]).await;
    wait_dump(&proxy, PROPAGATION, "two routes for web", |d| {
        routes_of(d, "web").len() == 2
    })
    .await;

    let plain = burst(proxy.outbound(), &Shot::get("http://web/"), 500, 8).await;
    assert_eq!(
        plain.server("web-v1"),
        500,
        "weight 0 gets nothing: {plain:?}"
    );
    let opted = burst(
        proxy.outbound(),
        &Shot::get("http://web/").header("x-canary", "true"),
        500,
        8,
    )
    .await;
    assert_eq!(
        opted.server("web-v2"),
        500,
        "opted-in requests reach the canary: {opted:?}"
    );
}
