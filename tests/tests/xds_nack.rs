//! A proxy NACKs an invalid resource that reaches it anyway (from a fake control plane
//! that skips validation) and keeps routing with its previous config; a later valid
//! version is accepted.

// Test helpers panic on failure by design, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use tandem_tests::fake_ads::{describe, edit_route_config, FakeAds};
use tandem_tests::load::{Load, LoadSpec};
use tandem_tests::mesh;
use tandem_tests::upstream::HttpServer;
use tandem_tests::{eventually, Proxy};
use tandem_xds::convert::{to_snapshot, ENDPOINT_TYPE, ROUTE_TYPE};
use tandem_xds::domain::{AppProtocol, Endpoint, MeshConfig, Service, ServicePort, ServiceRef};
use tandem_xds::envoy::discovery::DiscoveryRequest;
use tandem_xds::envoy_types::pb::envoy::config::route::v3::{
    route, route_match, NonForwardingAction,
};
use tandem_xds::envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher;

const STEP: Duration = Duration::from_secs(15);

/// Service `web` (no HTTPRoute: its default route goes to its own cluster) served by
/// `backend`.
fn mesh_with(backend: std::net::SocketAddr) -> MeshConfig {
    let web = ServiceRef::new("default", "web");
    let mut mesh = MeshConfig::default();
    mesh.services.insert(
        web.clone(),
        Service {
            id: web.clone(),
            ports: vec![ServicePort {
                name: None,
                port: 80,
                protocol: AppProtocol::Http,
            }],
            tls_mode: Default::default(),
            addresses: Vec::new(),
            service_accounts: Vec::new(),
            access_log: None,
        },
    );
    mesh.endpoints.insert(
        web.clone(),
        vec![Endpoint {
            service: web,
            address: backend,
            labels: BTreeMap::new(),
            service_port: None,
        }],
    );
    mesh
}

fn is_route_nack(r: &DiscoveryRequest, needle: &str) -> bool {
    r.type_url == ROUTE_TYPE
        && r.error_detail
            .as_ref()
            .is_some_and(|e| e.message.contains(needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_invalid_resource_on_the_wire_is_nacked_and_the_old_config_keeps_serving() {
    let old = HttpServer::echo("old").await;
    let new = HttpServer::echo("new").await;
    let v1 = to_snapshot(&mesh_with(old.addr()), "1").expect("valid mesh");
    v1.check_consistent().expect("v1 is consistent");
    let fake = FakeAds::start(v1.clone()).await;
    let rc = mesh::fqdn("web");

    let proxy = Proxy::start_xds(fake.addr(), "client", &["--workers", "1"]).await;
    assert_eq!(
        mesh::answered_by(&proxy, "web", 5).await,
        BTreeMap::from([("old".to_owned(), 5)])
    );
    let version_before = proxy.config_version().await;
    let load = Load::start(&[proxy.outbound()], LoadSpec::new("web"));
    load.wait_more(20, STEP).await;

    // Version 2: the route's path is a regex that does not compile.
    let v2 = edit_route_config(&v1, "2", &rc, |rc| {
        rc.virtual_hosts[0].routes[0]
            .r#match
            .as_mut()
            .expect("route has a match")
            .path_specifier = Some(route_match::PathSpecifier::SafeRegex(RegexMatcher {
            regex: "/(unclosed".to_owned(),
            ..Default::default()
        }));
    });
    fake.publish(v2);
    let nack = fake
        .wait_request(STEP, "a RouteConfiguration NACK of version 2", |r| {
            is_route_nack(r, "safe_regex")
        })
        .await;
    assert_eq!(
        nack.version_info,
        "1",
        "a NACK carries the last accepted version: {}",
        describe(&nack)
    );
    eventually(STEP, "/config_dump xds.last_nack to be set", || async {
        let x = mesh::xds_status(&proxy).await;
        match x["last_nack"].as_str() {
            Some(m) if m.contains("safe_regex") => Ok(()),
            _ => Err(x.to_string()),
        }
    })
    .await;
    mesh::wait_metric(
        &proxy,
        "tandem_xds_rejected_total",
        STEP,
        "the NACK to be counted",
        |v| v >= 1.0,
    )
    .await;
    assert_eq!(
        mesh::answered_by(&proxy, "web", 10).await,
        BTreeMap::from([("old".to_owned(), 10)]),
        "still routing with version 1"
    );
    assert_eq!(proxy.config_version().await, version_before);

    // Version 3: an action Tandem does not support (a non-forwarding action).
    let v3 = edit_route_config(&v1, "3", &rc, |rc| {
        rc.virtual_hosts[0].routes[0].action = Some(route::Action::NonForwardingAction(
            NonForwardingAction::default(),
        ));
    });
    fake.publish(v3);
    let nack = fake
        .wait_request(STEP, "a RouteConfiguration NACK of version 3", |r| {
            is_route_nack(r, "non_forwarding_action")
        })
        .await;
    assert_eq!(nack.version_info, "1", "{}", describe(&nack));
    mesh::wait_metric(
        &proxy,
        "tandem_xds_rejected_total",
        STEP,
        "the second NACK to be counted",
        |v| v >= 2.0,
    )
    .await;
    assert_eq!(
        mesh::answered_by(&proxy, "web", 10).await,
        BTreeMap::from([("old".to_owned(), 10)]),
        "still routing with version 1"
    );
    assert_eq!(proxy.config_version().await, version_before);
    load.wait_more(50, STEP).await;

    // Version 4: valid again, and different (the endpoint moved): accepted and used.
    fake.publish(to_snapshot(&mesh_with(new.addr()), "4").expect("valid mesh"));
    eventually(
        STEP,
        "version 4 to be routed to the new backend",
        || async {
            let seen = mesh::answered_by(&proxy, "web", 3).await;
            if seen.get("new") == Some(&3) {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    )
    .await;
    // The route config (valid again, after the rejected ones) and the moved endpoint are
    // the accepted version 4.
    let versions = mesh::xds_status(&proxy).await["versions"].clone();
    for url in [ROUTE_TYPE, ENDPOINT_TYPE] {
        assert_eq!(versions[url], "4", "accepted version of {url}: {versions}");
    }

    let report = load.stop().await;
    report.assert_no_failures("load across two NACKed versions and a valid one");
    let requests = fake.requests();
    assert!(
        requests
            .iter()
            .filter(|r| r.error_detail.is_some())
            .all(|r| r.type_url == ROUTE_TYPE),
        "only the route configs were NACKed: {:#?}",
        requests.iter().map(describe).collect::<Vec<_>>()
    );
}
