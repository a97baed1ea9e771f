//! Round trips MeshConfig → XdsSnapshot → ProxyView, and rejections with exact paths.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{
    route, route_match, NonForwardingAction, RouteConfiguration,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpConnectionManager, HttpFilter,
};
use envoy_types::pb::google::protobuf::{Any, Duration};
use prost::Name;

use super::*;
use crate::domain::*;

mod access_log;
mod addresses;
mod determinism;
mod policy;
mod ports;
mod retry;
mod security;
mod traffic;

fn svc(name: &str) -> ServiceRef {
    ServiceRef::new("default", name)
}

fn service(name: &str, protocol: AppProtocol) -> (ServiceRef, Service) {
    (
        svc(name),
        Service {
            id: svc(name),
            ports: vec![ServicePort {
                name: None,
                port: 9080,
                protocol,
            }],
            tls_mode: Default::default(),
            addresses: Vec::new(),
            service_accounts: Vec::new(),
            access_log: None,
        },
    )
}

fn endpoint(service: &str, addr: &str, zone: Option<&str>) -> Endpoint {
    Endpoint {
        service: svc(service),
        address: addr.parse().unwrap(),
        labels: zone
            .map(|z| [("zone".to_string(), z.to_string())].into_iter().collect())
            .unwrap_or_default(),
        service_port: None,
    }
}

fn backend(name: &str, weight: u32) -> Backend {
    Backend {
        service: svc(name),
        port: Some(9080),
        weight,
    }
}

fn prefix(p: &str) -> RouteMatch {
    RouteMatch {
        path: PathMatch::Prefix(p.to_string()),
        ..Default::default()
    }
}

fn rule(matches: Vec<RouteMatch>, backends: Vec<Backend>) -> RouteRule {
    RouteRule {
        matches,
        backends,
        ..Default::default()
    }
}

fn http_route(name: &str, created: u64, rules: Vec<RouteRule>) -> HttpRoute {
    HttpRoute {
        namespace: "default".into(),
        name: name.into(),
        parents: vec![svc("reviews")],
        parent_ports: Default::default(),
        rules,
        created,
    }
}

/// reviews (virtual: routes only), reviews-v1 (two zones), reviews-v2 (no endpoints).
fn mesh() -> MeshConfig {
    let mut m = MeshConfig {
        services: [
            service("reviews", AppProtocol::Http),
            service("reviews-v1", AppProtocol::Http2),
            service("reviews-v2", AppProtocol::Detect),
        ]
        .into_iter()
        .collect(),
        ..Default::default()
    };
    m.endpoints.insert(
        svc("reviews-v1"),
        vec![
            endpoint("reviews-v1", "10.0.0.1:9081", Some("a")),
            endpoint("reviews-v1", "10.0.0.2:9081", Some("b")),
            endpoint("reviews-v1", "10.0.0.3:9081", None),
        ],
    );
    let split = http_route(
        "split",
        5,
        vec![
            rule(
                vec![],
                vec![backend("reviews-v1", 90), backend("reviews-v2", 10)],
            ),
            rule(
                vec![RouteMatch {
                    headers: vec![ValueMatch {
                        name: "x-canary".into(),
                        value: StringMatch::Exact("1".into()),
                    }],
                    ..prefix("/")
                }],
                vec![backend("reviews-v2", 1)],
            ),
            rule(
                vec![RouteMatch {
                    path: PathMatch::Exact("/healthz".into()),
                    ..Default::default()
                }],
                vec![backend("reviews-v1", 1)],
            ),
            rule(
                vec![
                    prefix("/api"),
                    RouteMatch {
                        method: Some("GET".into()),
                        query_params: vec![ValueMatch {
                            name: "debug".into(),
                            value: StringMatch::Regex("[01]".into()),
                        }],
                        ..prefix("/api/v2/")
                    },
                ],
                vec![backend("reviews-v2", 0), backend("reviews-v1", 0)],
            ),
            rule(
                vec![RouteMatch {
                    path: PathMatch::Regex("/items/[0-9]+".into()),
                    ..Default::default()
                }],
                vec![backend("reviews-v1", 3), backend("reviews-v2", 0)],
            ),
        ],
    );
    let older = http_route(
        "zz-older",
        1,
        vec![rule(vec![], vec![backend("reviews-v1", 1)])],
    );
    m.routes.insert(("default".into(), "split".into()), split);
    m.routes
        .insert(("default".into(), "zz-older".into()), older);
    m
}

fn fqdn(name: &str) -> String {
    svc(name).fqdn()
}

fn cw(name: &str, weight: u32) -> ClusterWeight {
    ClusterWeight {
        cluster: fqdn(name),
        weight,
    }
}

#[test]
fn type_urls_match_the_generated_types() {
    assert_eq!(LISTENER_TYPE, Listener::type_url());
    assert_eq!(ROUTE_TYPE, RouteConfiguration::type_url());
    assert_eq!(CLUSTER_TYPE, Cluster::type_url());
    assert_eq!(
        ENDPOINT_TYPE,
        envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment::type_url()
    );
}

#[test]
fn round_trip_orders_routes_by_gateway_api_precedence() {
    let snap = to_snapshot(&mesh(), "v1").unwrap();
    snap.check_consistent().unwrap();
    let view = to_proxy_view(snap.resources()).unwrap();
    let routes = &view.route_configs[&fqdn("reviews")];
    let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "default/split/rule-2/match-0",    // Exact
            "default/split/rule-4/match-0",    // RegularExpression
            "default/split/rule-3/match-1",    // longest prefix (/api/v2)
            "default/split/rule-3/match-0",    // /api
            "default/split/rule-1/match-0",    // / with a header
            "default/zz-older/rule-0/match-0", // / in the older route
            "default/split/rule-0/match-0",    // / in the newer route
        ]
    );
    // Matches survive the trip, the segment prefix included (trailing / dropped).
    assert_eq!(routes[0].matches.path, PathMatch::Exact("/healthz".into()));
    assert_eq!(
        routes[1].matches.path,
        PathMatch::Regex("/items/[0-9]+".into())
    );
    assert_eq!(routes[2].matches.path, PathMatch::Prefix("/api/v2".into()));
    assert_eq!(routes[2].matches.method.as_deref(), Some("GET"));
    assert_eq!(
        routes[2].matches.query_params,
        vec![ValueMatch {
            name: "debug".into(),
            value: StringMatch::Regex("[01]".into())
        }]
    );
    assert_eq!(routes[3].matches.path, PathMatch::Prefix("/api".into()));
    assert_eq!(routes[4].matches.path, PathMatch::Prefix("/".into()));
    assert_eq!(routes[4].matches.headers[0].name, "x-canary");
    // Actions: single backend → weight 1; split keeps weights (zeros included); all zero → 500.
    assert_eq!(routes[0].clusters, vec![cw("reviews-v1", 1)]);
    assert_eq!(
        routes[1].clusters,
        vec![cw("reviews-v1", 3), cw("reviews-v2", 0)]
    );
    assert!(routes[2].clusters.is_empty());
    assert_eq!(
        routes[6].clusters,
        vec![cw("reviews-v1", 90), cw("reviews-v2", 10)]
    );
}

#[test]
fn round_trip_listeners_clusters_and_endpoints() {
    let snap = to_snapshot(&mesh(), "v1").unwrap();
    let view = to_proxy_view(snap.resources()).unwrap();
    let listeners: Vec<&str> = view
        .listeners
        .iter()
        .filter(|(_, rc)| **rc == fqdn("reviews"))
        .map(|(l, _)| l.as_str())
        .collect();
    assert_eq!(
        listeners,
        [
            "reviews",
            "reviews.default",
            "reviews.default.svc",
            "reviews.default.svc.cluster.local"
        ]
    );
    assert_eq!(view.listeners.len(), 12);
    // reviews has routes and is nobody's backend: no cluster of its own.
    let clusters: Vec<&str> = view.clusters.keys().map(String::as_str).collect();
    assert_eq!(clusters, [fqdn("reviews-v1"), fqdn("reviews-v2")]);
    let v1 = &view.clusters[&fqdn("reviews-v1")];
    assert_eq!(v1.protocol, AppProtocol::Http2);
    // Grouped by zone: "" first, then a, b.
    let addrs: Vec<SocketAddr> = ["10.0.0.3:9081", "10.0.0.1:9081", "10.0.0.2:9081"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    assert_eq!(v1.endpoints, addrs);
    assert!(view.clusters[&fqdn("reviews-v2")].endpoints.is_empty());
    assert_eq!(
        view.clusters[&fqdn("reviews-v2")].protocol,
        AppProtocol::Detect
    );
    // A service without routes routes everything to itself.
    let own = &view.route_configs[&fqdn("reviews-v2")];
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].matches, prefix("/"));
    assert_eq!(own[0].clusters, vec![cw("reviews-v2", 1)]);
}

#[test]
fn load_assignment_has_localities_weights_and_health() {
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    let snap = to_snapshot(&mesh(), "v1").unwrap();
    let any = snap.get(ENDPOINT_TYPE, &fqdn("reviews-v1")).unwrap();
    let cla: ClusterLoadAssignment = unpack(any, "x").unwrap();
    let zones: Vec<&str> = cla
        .endpoints
        .iter()
        .map(|g| g.locality.as_ref().unwrap().zone.as_str())
        .collect();
    assert_eq!(zones, ["", "a", "b"]);
    for g in &cla.endpoints {
        assert_eq!(g.load_balancing_weight.unwrap().value, 1);
        assert!(g.lb_endpoints.iter().all(|e| e.health_status == 1));
    }
}

#[test]
fn listener_has_rds_over_ads_and_router_last() {
    let snap = to_snapshot(&mesh(), "v1").unwrap();
    let l: Listener = unpack(snap.get(LISTENER_TYPE, "reviews").unwrap(), "x").unwrap();
    let hcm: HttpConnectionManager =
        unpack(l.api_listener.unwrap().api_listener.as_ref().unwrap(), "x").unwrap();
    assert_eq!(hcm.stat_prefix, fqdn("reviews"));
    assert_eq!(hcm.http_filters.last().unwrap().name, to_xds::ROUTER_FILTER);
    match hcm.route_specifier.unwrap() {
        envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier::Rds(rds) => {
            assert_eq!(rds.route_config_name, fqdn("reviews"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn invalid_domain_regex_is_reported_with_the_route_path() {
    let mut m = mesh();
    m.routes
        .get_mut(&("default".to_string(), "split".to_string()))
        .unwrap()
        .rules[4]
        .matches[0]
        .path = PathMatch::Regex("(".into());
    let err = to_snapshot(&m, "v1").unwrap_err();
    assert_eq!(
        err.path,
        "HTTPRoute[default/split].rules[4].matches[0].path.value"
    );
    assert!(err.reason.starts_with("invalid regex"), "{err}");
}

/// Rewrites the RouteConfiguration of reviews with `f`.
fn edit_rc(snap: &XdsSnapshot, f: impl FnOnce(&mut RouteConfiguration)) -> Resources {
    traffic::edit(snap.resources(), &fqdn("reviews"), f)
}

fn invalid(res: &Resources) -> ConvertError {
    match to_proxy_view(res) {
        Err(FromXdsError::Invalid(e)) => e,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

const RC: &str = "RouteConfiguration[reviews.default.svc.cluster.local].virtual_hosts[0]";

#[test]
fn bad_regex_is_invalid_with_exact_path() {
    let snap = to_snapshot(&mesh(), "v1").unwrap();
    let res = edit_rc(&snap, |rc| {
        rc.virtual_hosts[0].routes[2]
            .r#match
            .as_mut()
            .unwrap()
            .path_specifier = Some(route_match::PathSpecifier::SafeRegex(
            envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher {
                regex: "a(".into(),
                ..Default::default()
            },
        ));
    });
    let err = invalid(&res);
    assert_eq!(err.path, format!("{RC}.routes[2].match.safe_regex"));
    assert!(err.to_string().contains(": invalid regex"), "{err}");
}

#[test]
fn unsupported_action_and_runtime_fraction_are_invalid() {
    let snap = to_snapshot(&mesh(), "v1").unwrap();
    let res = edit_rc(&snap, |rc| {
        rc.virtual_hosts[0].routes[1].action =
            Some(route::Action::NonForwardingAction(NonForwardingAction {}));
    });
    assert_eq!(
        invalid(&res).path,
        format!("{RC}.routes[1].non_forwarding_action")
    );

    let res = edit_rc(&snap, |rc| {
        rc.virtual_hosts[0].routes[0]
            .r#match
            .as_mut()
            .unwrap()
            .runtime_fraction = Some(RuntimeFractionalPercent::default());
    });
    assert_eq!(
        invalid(&res).path,
        format!("{RC}.routes[0].match.runtime_fraction")
    );

    // An unknown-to-Tandem RouteAction field (idle_timeout, field 24) is named by number.
    let res = edit_rc(&snap, |rc| {
        if let Some(route::Action::Route(ra)) = &mut rc.virtual_hosts[0].routes[6].action {
            ra.idle_timeout = Some(Duration {
                seconds: 1,
                nanos: 0,
            });
        }
    });
    let err = invalid(&res);
    assert_eq!(err.path, format!("{RC}.routes[6].route"));
    assert!(err.reason.contains("protobuf field 24"), "{err}");
}

#[test]
fn wrong_type_url_is_invalid() {
    let snap = to_snapshot(&mesh(), "v1").unwrap();
    let mut res = snap.resources().clone();
    let cluster = snap.get(CLUSTER_TYPE, &fqdn("reviews-v1")).unwrap().clone();
    res.get_mut(LISTENER_TYPE)
        .unwrap()
        .insert("reviews".into(), cluster);
    let err = invalid(&res);
    assert_eq!(err.path, "Listener[reviews]");
    assert!(
        err.reason.contains("envoy.config.cluster.v3.Cluster"),
        "{err}"
    );
}

#[test]
fn non_eds_cluster_and_extra_filter_are_invalid() {
    let snap = to_snapshot(&mesh(), "v1").unwrap();
    let name = fqdn("reviews-v1");
    let res = traffic::edit::<Cluster>(snap.resources(), &name, |c| {
        c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::StrictDns as i32,
        ));
    });
    let err = invalid(&res);
    assert_eq!(
        err.to_string(),
        format!("Cluster[{name}].type: only EDS clusters are supported, got STRICT_DNS")
    );

    let res = traffic::edit_hcm(snap.resources(), "reviews", |hcm| {
        hcm.http_filters.insert(
            0,
            HttpFilter {
                name: "cors".into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(Any {
                    type_url: "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"
                        .into(),
                    value: vec![],
                })),
                ..Default::default()
            },
        );
    });
    let err = invalid(&res);
    assert_eq!(
        err.path,
        "Listener[reviews].api_listener.api_listener.http_filters[0]"
    );
    assert!(err.reason.contains("cors.v3.Cors"), "{err}");
}

#[test]
fn missing_resources_are_incomplete_not_invalid() {
    let snap = to_snapshot(&mesh(), "v1").unwrap();
    let mut res = snap.resources().clone();
    res.get_mut(ENDPOINT_TYPE)
        .unwrap()
        .remove(&fqdn("reviews-v2"));
    res.get_mut(ROUTE_TYPE).unwrap().remove(&fqdn("reviews-v1"));
    match to_proxy_view(&res) {
        Err(FromXdsError::Incomplete(missing)) => {
            let got: Vec<(&str, &str)> = missing
                .iter()
                .map(|m| (m.type_url, m.name.as_str()))
                .collect();
            let v1 = fqdn("reviews-v1");
            let v2 = fqdn("reviews-v2");
            let mut want = vec![(ENDPOINT_TYPE, v2.as_str())];
            want.extend(std::iter::repeat_n((ROUTE_TYPE, v1.as_str()), 4));
            let mut got_sorted = got.clone();
            got_sorted.sort();
            want.sort();
            assert_eq!(got_sorted, want);
        }
        other => panic!("expected Incomplete, got {other:?}"),
    }
    assert!(snap.check_consistent().is_ok());
    let empty: BTreeMap<String, BTreeMap<String, Any>> = BTreeMap::new();
    assert_eq!(to_proxy_view(&empty).unwrap(), ProxyView::default());
}

#[test]
fn prefixes_with_regex_characters_and_raw_envoy_prefixes() {
    let mut m = mesh();
    m.routes
        .get_mut(&("default".to_string(), "split".to_string()))
        .unwrap()
        .rules[3]
        .matches[0]
        .path = PathMatch::Prefix("/a.b+/".into());
    let snap = to_snapshot(&m, "v1").unwrap();
    let view = to_proxy_view(snap.resources()).unwrap();
    let routes = &view.route_configs[&fqdn("reviews")];
    assert!(routes
        .iter()
        .any(|r| r.matches.path == PathMatch::Prefix("/a.b+".into())));
    // A plain Envoy prefix is a raw string prefix: kept exact as a regex.
    let res = edit_rc(&snap, |rc| {
        rc.virtual_hosts[0].routes[0]
            .r#match
            .as_mut()
            .unwrap()
            .path_specifier = Some(route_match::PathSpecifier::Prefix("/ab".into()));
    });
    let view = to_proxy_view(&res).unwrap();
    assert_eq!(
        view.route_configs[&fqdn("reviews")][0].matches.path,
        PathMatch::Regex("/ab.*".into())
    );
}
