//! Invalid configuration never reaches the proxies: the control plane rejects it at apply
//! time, with the field path, applying nothing of the request, while traffic continues.

// Test helpers panic on failure by design, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use tandem_tests::control_plane::ControlPlane;
use tandem_tests::load::{Load, LoadSpec};
use tandem_tests::mesh::{self, docs, endpoint, service, split_route};
use tandem_tests::upstream::HttpServer;
use tandem_tests::Proxy;

const PROPAGATION: Duration = Duration::from_secs(15);

/// An HTTPRoute for `web` whose only rule matches the path with regular expression `re`.
fn regex_route(re: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{ name: web-split, namespace: default }}\n\
         spec:\n  parentRefs:\n    - {{ kind: Service, name: web, port: 80 }}\n  rules:\n    \
         - matches:\n        - path: {{ type: RegularExpression, value: {re:?} }}\n      \
         backendRefs:\n        - {{ name: web-v2, port: 80, weight: 1 }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_invalid_route_is_rejected_at_apply_time_and_changes_nothing() {
    let v1 = HttpServer::echo("web-v1").await;
    let v2 = HttpServer::echo("web-v2").await;
    let cp = ControlPlane::start().await;
    cp.apply_ok(&docs(&[
        service("web"),
        service("web-v1"),
        service("web-v2"),
        endpoint("web-v1", v1.addr()),
        endpoint("web-v2", v2.addr()),
        split_route("web-split", "web", &[("web-v1", 100), ("web-v2", 0)]),
    ]))
    .await;
    let proxy = Proxy::start_xds(cp.xds(), "client", &["--workers", "1"]).await;
    mesh::wait_split(
        &proxy,
        "web",
        &[("web-v1", 100), ("web-v2", 0)],
        PROPAGATION,
    )
    .await;

    let history = cp.tandemctl(&["-o", "json", "history"]).await;
    let history = history.expect_ok("history").to_owned();
    let route_before = cp.api_get("/v1/routes/default/web-split").await;
    let version_before = proxy.config_version().await;
    let xds_before = mesh::xds_status(&proxy).await["versions"].clone();
    let load = Load::start(&[proxy.outbound()], LoadSpec::new("web"));
    load.wait_more(20, Duration::from_secs(20)).await;

    let cases = [
        (
            "weight over 1000000",
            split_route("web-split", "web", &[("web-v1", 0), ("web-v2", 1_000_001)]),
            "spec.rules[0].backendRefs[1].weight",
        ),
        (
            "regex that does not compile",
            regex_route("/a("),
            "spec.rules[0].matches[0].path.value",
        ),
        (
            // A valid document before the invalid one: nothing of the request applies.
            "valid Service then an invalid route",
            docs(&[service("extra"), regex_route("/v[")]),
            "documents[1].spec.rules[0].matches[0].path.value",
        ),
    ];
    for (what, yaml, path) in &cases {
        let out = cp.apply(yaml).await;
        assert!(
            !out.status.success(),
            "{what}: apply must fail; stdout {:?} stderr {:?}",
            out.stdout,
            out.stderr
        );
        assert!(
            out.stderr.contains(path),
            "{what}: stderr names the field path {path}: {:?}",
            out.stderr
        );
        assert_eq!(
            out.stderr.trim_end().lines().count(),
            1,
            "{what}: one-line reason: {:?}",
            out.stderr
        );
    }

    let after = cp.tandemctl(&["-o", "json", "history"]).await;
    assert_eq!(after.expect_ok("history"), history, "history unchanged");
    assert_eq!(
        cp.api_get("/v1/routes/default/web-split").await,
        route_before,
        "route unchanged"
    );
    let (status, body) = cp.api_call("GET", "/v1/services/default/extra", None).await;
    assert_eq!(
        status, 404,
        "the valid Service of the rejected request was not applied: {body}"
    );

    load.wait_more(50, Duration::from_secs(20)).await;
    let report = load.stop().await;
    report.assert_no_failures("load while invalid routes are applied");
    assert_eq!(
        report.by_server(),
        BTreeMap::from([("web-v1".to_owned(), report.ok)]),
        "all traffic stayed on v1"
    );
    assert_eq!(
        proxy.config_version().await,
        version_before,
        "the proxy got no new config"
    );
    assert_eq!(mesh::xds_status(&proxy).await["versions"], xds_before);
    assert_eq!(mesh::metric(&proxy, "tandem_xds_rejected_total").await, 0.0);
}
