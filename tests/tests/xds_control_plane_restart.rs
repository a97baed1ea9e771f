//! The control plane is not in the data path: killed under load, no request fails and the
//! proxies keep serving their last config; restarted on the same data dir and xDS port,
//! the proxies reconnect, resync, and take changes again.

// Test helpers panic on failure by design, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::join_all;
use tandem_tests::control_plane::ControlPlane;
use tandem_tests::load::{Load, LoadSpec};
use tandem_tests::mesh::{self, docs, endpoint, service, split_route};
use tandem_tests::upstream::HttpServer;
use tandem_tests::{eventually, Proxy};

/// How long a change may take to reach a proxy.
const PROPAGATION: Duration = Duration::from_secs(15);

/// How long a proxy may take to notice the control plane is gone, or back. Reconnects
/// back off up to 5 s (±50% jitter), so a reconnect is due within 7.5 s of the restart.
const RECONNECT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_control_plane_killed_under_load_then_restarted_on_the_same_port() {
    let v1 = HttpServer::echo("web-v1").await;
    let v2 = HttpServer::echo("web-v2").await;
    let mut cp = ControlPlane::start().await;
    let route = |w1, w2| split_route("web-split", "web", &[("web-v1", w1), ("web-v2", w2)]);
    cp.apply_ok(&docs(&[
        service("web"),
        service("web-v1"),
        service("web-v2"),
        endpoint("web-v1", v1.addr()),
        endpoint("web-v2", v2.addr()),
        route(100, 0),
    ]))
    .await;
    let xds_port = cp.xds().port();

    let proxies: Vec<Proxy> = join_all((0..3).map(|i| {
        let cp = &cp;
        async move {
            let id = format!("client-{i}");
            Proxy::start_xds(cp.xds(), "client", &["--node-id", &id, "--workers", "1"]).await
        }
    }))
    .await;
    for p in &proxies {
        mesh::wait_split(p, "web", &[("web-v1", 100), ("web-v2", 0)], PROPAGATION).await;
        assert_eq!(mesh::metric(p, "tandem_xds_connected").await, 1.0);
    }
    let targets: Vec<_> = proxies.iter().map(Proxy::outbound).collect();
    let load = Load::start(&targets, LoadSpec::new("web"));
    load.wait_more(100, Duration::from_secs(30)).await;

    cp.kill().await;
    for p in &proxies {
        mesh::wait_metric(
            p,
            "tandem_xds_connected",
            RECONNECT,
            "proxy to notice the control plane is gone",
            |v| v == 0.0,
        )
        .await;
        assert_eq!(
            mesh::xds_status(p).await["connected"],
            false,
            "/config_dump xds.connected while the control plane is down"
        );
    }
    // Still serving, from the last config, with no control plane.
    load.wait_more(200, Duration::from_secs(30)).await;
    for p in &proxies {
        mesh::wait_split(p, "web", &[("web-v1", 100), ("web-v2", 0)], PROPAGATION).await;
    }

    cp.restart().await;
    assert_eq!(cp.xds().port(), xds_port, "restarted on the same xDS port");
    for (i, p) in proxies.iter().enumerate() {
        mesh::wait_metric(
            p,
            "tandem_xds_connected",
            RECONNECT,
            "proxy to reconnect to the restarted control plane",
            |v| v == 1.0,
        )
        .await;
        // Resync: the new stream's responses were acknowledged for every type (versions
        // are opaque, so the restarted control plane may or may not reuse the old ones).
        let node = format!("client-{i}");
        eventually(
            PROPAGATION,
            &format!("restarted control plane to see {node} ack every resource type"),
            || async {
                let status = cp.api_get("/v1/status").await;
                let acked = status["proxies"]
                    .as_array()
                    .and_then(|ps| ps.iter().find(|e| e["node"] == node.as_str()))
                    .map(|e| e["acked"].clone());
                let mine = mesh::xds_status(p).await;
                match acked {
                    Some(a)
                        if a.as_object()
                            .is_some_and(|m| m.len() == tandem_xds::convert::ALL_TYPES.len())
                            && a == mine["versions"]
                            && mine["connected"] == true =>
                    {
                        Ok(())
                    }
                    _ => Err(format!("status {status}; proxy xds {mine}")),
                }
            },
        )
        .await;
        mesh::wait_split(p, "web", &[("web-v1", 100), ("web-v2", 0)], PROPAGATION).await;
    }
    load.wait_more(100, Duration::from_secs(30)).await;

    // The restarted control plane pushes changes again.
    cp.apply_ok(&route(0, 100)).await;
    for p in &proxies {
        mesh::wait_split(p, "web", &[("web-v1", 0), ("web-v2", 100)], PROPAGATION).await;
    }
    load.wait_more(100, Duration::from_secs(30)).await;
    let report = load.stop().await;
    report.assert_no_failures("load across kill, restart and a route change");

    for p in &proxies {
        assert_eq!(
            mesh::answered_by(p, "web", 30).await,
            BTreeMap::from([("web-v2".to_owned(), 30)]),
            "proxy {} after the post-restart change",
            p.admin()
        );
    }
    let status = cp.api_get("/v1/status").await;
    assert_eq!(
        status["proxies"].as_array().map(Vec::len),
        Some(3),
        "every proxy reconnected: {status}"
    );
}
