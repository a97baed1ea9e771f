//! Routing driven by the control plane: route changes and endpoint changes applied with
//! `tandemctl` reach every proxy over xDS while traffic flows, with no failed request, and
//! `GET /v1/status` reports what each proxy acknowledged.

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

/// Starts `n` proxies in xDS mode for service `client`, node ids `client-0`, ...
async fn proxies(cp: &ControlPlane, n: usize) -> Vec<Proxy> {
    let ids: Vec<String> = (0..n).map(|i| format!("client-{i}")).collect();
    join_all(ids.iter().map(|id| async move {
        Proxy::start_xds(cp.xds(), "client", &["--node-id", id, "--workers", "1"]).await
    }))
    .await
}

fn only(server: &str, n: u64) -> BTreeMap<String, u64> {
    BTreeMap::from([(server.to_owned(), n)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_route_change_reaches_every_proxy_without_a_failed_request() {
    let v1 = HttpServer::echo("web-v1").await;
    let v2 = HttpServer::echo("web-v2").await;
    let cp = ControlPlane::start().await;
    let base = [
        service("web"),
        service("web-v1"),
        service("web-v2"),
        endpoint("web-v1", v1.addr()),
        endpoint("web-v2", v2.addr()),
    ];
    let route = |w1, w2| split_route("web-split", "web", &[("web-v1", w1), ("web-v2", w2)]);
    let mut all = base.to_vec();
    all.push(route(100, 0));
    cp.apply_ok(&docs(&all)).await;

    let proxies = proxies(&cp, 3).await;
    for p in &proxies {
        mesh::wait_split(p, "web", &[("web-v1", 100), ("web-v2", 0)], PROPAGATION).await;
        assert_eq!(
            mesh::answered_by(p, "web", 20).await,
            only("web-v1", 20),
            "100/0 before the change"
        );
    }

    let targets: Vec<_> = proxies.iter().map(Proxy::outbound).collect();
    let load = Load::start(&targets, LoadSpec::new("web"));
    load.wait_more(150, Duration::from_secs(30)).await;
    for (w1, w2) in [(50, 50), (0, 100)] {
        cp.apply_ok(&route(w1, w2)).await;
        for p in &proxies {
            mesh::wait_split(p, "web", &[("web-v1", w1), ("web-v2", w2)], PROPAGATION).await;
        }
        load.wait_more(150, Duration::from_secs(30)).await;
    }
    let report = load.stop().await;
    report.assert_no_failures("load across 100/0 → 50/50 → 0/100");
    for (target, by) in &report.by_target {
        assert!(
            by.get("web-v1").is_some_and(|n| *n > 0) && by.get("web-v2").is_some_and(|n| *n > 0),
            "every proxy served both versions during the change; via {target}: {by:?}"
        );
    }

    for p in &proxies {
        assert_eq!(
            mesh::answered_by(p, "web", 50).await,
            only("web-v2", 50),
            "proxy {} after 0/100",
            p.admin()
        );
    }

    // The control plane knows what each proxy acknowledged: the same versions the
    // proxies report themselves.
    for (i, p) in proxies.iter().enumerate() {
        let node = format!("client-{i}");
        let versions = mesh::xds_status(p).await["versions"].clone();
        assert_eq!(
            versions.as_object().map(|v| v.len()),
            Some(tandem_xds::convert::ALL_TYPES.len()),
            "proxy {node} accepted every type (the SDS trust bundle too, empty without identity): {versions}"
        );
        eventually(
            PROPAGATION,
            &format!("/v1/status to show {node} acked {versions}"),
            || async {
                let status = cp.api_get("/v1/status").await;
                let entry = status["proxies"]
                    .as_array()
                    .and_then(|ps| ps.iter().find(|e| e["node"] == node.as_str()).cloned());
                match entry {
                    Some(e)
                        if e["acked"] == versions
                            && e["service"] == "client"
                            && e["nacked"].as_object().is_none_or(|n| n.is_empty()) =>
                    {
                        Ok(())
                    }
                    _ => Err(status.to_string()),
                }
            },
        )
        .await;
    }
    let status = cp.api_get("/v1/status").await;
    assert_eq!(
        status["proxies"].as_array().map(Vec::len),
        Some(3),
        "three connected proxies: {status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_endpoint_add_and_remove_reach_the_proxy() {
    let a = HttpServer::echo("api-a").await;
    let b = HttpServer::echo("api-b").await;
    let cp = ControlPlane::start().await;
    cp.apply_ok(&service("api")).await;
    let (a_addr, b_addr) = (a.addr().to_string(), b.addr().to_string());
    cp.tandemctl(&["endpoint", "add", "api", &a_addr])
        .await
        .expect_ok("endpoint add A");

    let proxy = Proxy::start_xds(cp.xds(), "client", &["--workers", "1"]).await;
    assert_eq!(
        mesh::answered_by(&proxy, "api", 10).await,
        only("api-a", 10)
    );

    let load = Load::start(&[proxy.outbound()], LoadSpec::new("api"));
    load.wait_more(20, Duration::from_secs(20)).await;

    cp.tandemctl(&["endpoint", "add", "api", &b_addr])
        .await
        .expect_ok("endpoint add B");
    eventually(
        PROPAGATION,
        "requests to reach the added endpoint B",
        || async {
            let seen = mesh::answered_by(&proxy, "api", 4).await;
            if seen.contains_key("api-b") {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    )
    .await;
    // The default balancer (peak EWMA) follows latency, so a fixed split of a few
    // requests is not promised; both endpoints taking a share of the load is.
    let (a_before, b_before) = (a.requests(), b.requests());
    eventually(
        PROPAGATION,
        "both A and B to take a share of the load",
        || async {
            let (a_more, b_more) = (a.requests() - a_before, b.requests() - b_before);
            if a_more >= 5 && b_more >= 5 {
                Ok(())
            } else {
                Err(format!("A answered {a_more} more, B {b_more} more"))
            }
        },
    )
    .await;

    cp.tandemctl(&["endpoint", "remove", "api", &a_addr])
        .await
        .expect_ok("endpoint remove A");
    eventually(PROPAGATION, "the proxy to drop endpoint A", || async {
        let eps = mesh::cluster_endpoints(&proxy, "api").await;
        if eps.as_deref() == Some(&[b.addr()][..]) {
            Ok(())
        } else {
            Err(format!("{eps:?}"))
        }
    })
    .await;
    assert_eq!(
        mesh::answered_by(&proxy, "api", 20).await,
        only("api-b", 20)
    );

    load.wait_more(20, Duration::from_secs(20)).await;
    load.stop()
        .await
        .assert_no_failures("load across endpoint add and remove");
}

/// Waits until every one of 5 fresh requests to `host` through `proxy` is answered 200
/// by `server`.
async fn wait_answered(proxy: &Proxy, host: &str, server: &str) {
    eventually(
        PROPAGATION,
        &format!("{host} answered by {server}"),
        || async {
            let seen = mesh::try_answered_by(proxy, host, 5).await?;
            (seen == only(server, 5))
                .then_some(())
                .ok_or(format!("{seen:?}"))
        },
    )
    .await;
}

fn port_endpoint(service: &str, address: std::net::SocketAddr, port: u16) -> String {
    format!(
        "apiVersion: tandem.dev/v1alpha1\nkind: Endpoint\nmetadata: {{ namespace: default }}\n\
         spec: {{ service: {service}, address: \"{address}\", servicePort: {port} }}\n"
    )
}

fn port_route(name: &str, parent_port: u16, backend: &str, backend_port: u16) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{ name: {name}, namespace: default }}\nspec:\n\
         \x20 parentRefs:\n    - {{ kind: Service, name: multi, port: {parent_port} }}\n\
         \x20 rules:\n    - backendRefs:\n        - {{ name: {backend}, port: {backend_port} }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_port_of_a_service_with_several_is_its_own_destination() {
    let http = HttpServer::echo("multi-http").await;
    let admin = HttpServer::echo("multi-admin").await;
    let other = HttpServer::echo("other").await;
    let cp = ControlPlane::start().await;
    let multi = "apiVersion: tandem.dev/v1alpha1\nkind: Service\n\
                 metadata: { name: multi, namespace: default }\nspec:\n  ports:\n\
                 \x20   - { port: 80, name: http, protocol: http }\n\
                 \x20   - { port: 81, name: admin, protocol: http }\n"
        .to_string();
    cp.apply_ok(&docs(&[
        multi,
        port_endpoint("multi", http.addr(), 80),
        port_endpoint("multi", admin.addr(), 81),
        service("other"),
        endpoint("other", other.addr()),
    ]))
    .await;
    let proxy = Proxy::start_xds(cp.xds(), "client", &[]).await;

    // Each port balances over its own endpoints; no port means the first.
    wait_answered(&proxy, "multi:80", "multi-http").await;
    wait_answered(&proxy, "multi:81", "multi-admin").await;
    wait_answered(&proxy, "multi", "multi-http").await;
    wait_answered(&proxy, "multi.default.svc.cluster.local:81", "multi-admin").await;
    let dump = proxy.config_dump().await;
    for port in [80, 81] {
        let cluster = format!("{}:{port}", mesh::fqdn("multi"));
        assert_eq!(
            dump["routes"]["clusters"][&cluster]["endpoints"]
                .as_array()
                .map(Vec::len),
            Some(1),
            "{cluster}: {}",
            dump["routes"]["clusters"]
        );
    }

    // A route attaches to the port its parentRef names and nowhere else; a backendRef's
    // port picks that port's endpoints.
    cp.apply_ok(&port_route("admin-to-other", 81, "other", 80))
        .await;
    wait_answered(&proxy, "multi:81", "other").await;
    wait_answered(&proxy, "multi:80", "multi-http").await;
    cp.apply_ok(&port_route("http-to-admin", 80, "multi", 81))
        .await;
    wait_answered(&proxy, "multi:80", "multi-admin").await;
    wait_answered(&proxy, "multi:81", "other").await;

    // A port the Service does not have is named in apply's warning.
    let out = cp.apply(&port_route("nowhere", 82, "multi", 80)).await;
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(
        said.contains("port 82 of Service default/multi does not exist"),
        "{said}"
    );
}
