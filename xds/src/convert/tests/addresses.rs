//! Services' virtual addresses: listeners per `address:port`, one per port protocol shape,
//! round-tripped to the proxy's view; malformed ones rejected with their path.

use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::google::protobuf::BoolValue;

use super::*;

/// reviews (HTTP routes) at 10.96.0.10 on an HTTP, a TCP and an unknown port (and an IPv6
/// address); reviews-v2 with no address.
fn with_addresses() -> MeshConfig {
    let mut m = mesh();
    let reviews = m.services.get_mut(&svc("reviews")).unwrap();
    reviews.addresses = vec!["10.96.0.10".parse().unwrap(), "fd00::10".parse().unwrap()];
    reviews.ports = vec![
        ServicePort {
            name: Some("http".into()),
            port: 80,
            protocol: AppProtocol::Http,
        },
        ServicePort {
            name: Some("grpc".into()),
            port: 81,
            protocol: AppProtocol::Http2,
        },
        ServicePort {
            name: None,
            port: 5432,
            protocol: AppProtocol::Tcp,
        },
        ServicePort {
            name: None,
            port: 9000,
            protocol: AppProtocol::Detect,
        },
    ];
    m
}

/// What `reviews:port` maps to: a service with several ports has a route config and a
/// cluster per port.
fn target(protocol: AppProtocol, port: u16, rc: bool, cluster: bool) -> AddressTarget {
    let name = svc("reviews").port_name(port);
    AddressTarget {
        protocol,
        route_config: rc.then(|| name.clone()),
        cluster: cluster.then_some(name),
    }
}

#[test]
fn every_address_and_port_is_a_listener_the_proxy_maps_back() {
    let snap = to_snapshot(&with_addresses(), "v1").unwrap();
    let view = to_proxy_view(snap.resources()).unwrap();
    let at = |a: &str| view.addresses[&a.parse::<SocketAddr>().unwrap()].clone();
    assert_eq!(view.addresses.len(), 8);
    assert_eq!(
        at("10.96.0.10:80"),
        target(AppProtocol::Http, 80, true, false)
    );
    assert_eq!(
        at("10.96.0.10:81"),
        target(AppProtocol::Http2, 81, true, false)
    );
    assert_eq!(
        at("10.96.0.10:5432"),
        target(AppProtocol::Tcp, 5432, false, true)
    );
    assert_eq!(
        at("[fd00::10]:9000"),
        target(AppProtocol::Detect, 9000, true, true)
    );
    // Opaque TCP needs the service's own cluster of that port, though its HTTP goes to
    // backends; the HTTP-only ports need none.
    assert!(view.clusters.contains_key(&svc("reviews").port_name(5432)));
    assert!(!view.clusters.contains_key(&svc("reviews").port_name(80)));
    assert!(!view.clusters.contains_key(&fqdn("reviews")));
    // The name says where, as Istio's do; not bound, outbound.
    let l: Listener = unpack(snap.get(LISTENER_TYPE, "10.96.0.10_80").unwrap(), "x").unwrap();
    assert_eq!(l.bind_to_port, Some(BoolValue { value: false }));
    assert!(snap.get(LISTENER_TYPE, "fd00::10_9000").is_some());
    assert!(snap.check_consistent().is_ok());
}

#[test]
fn a_service_without_addresses_gets_no_address_listener_nor_extra_cluster() {
    let snap = to_snapshot(&mesh(), "v1").unwrap();
    let view = to_proxy_view(snap.resources()).unwrap();
    assert!(view.addresses.is_empty());
    assert!(!view.clusters.contains_key(&fqdn("reviews")));
}

fn edit_listener(snap: &XdsSnapshot, name: &str, f: impl FnOnce(&mut Listener)) -> Resources {
    let mut res = snap.resources().clone();
    let any = res.get_mut(LISTENER_TYPE).unwrap().get_mut(name).unwrap();
    let mut l: Listener = unpack(any, "x").unwrap();
    f(&mut l);
    *any = pack(&l);
    res
}

#[test]
fn malformed_address_listeners_are_invalid_with_their_path() {
    let snap = to_snapshot(&with_addresses(), "v1").unwrap();
    let res = edit_listener(&snap, "10.96.0.10_80", |l| l.bind_to_port = None);
    let err = invalid(&res);
    assert_eq!(err.path, "Listener[10.96.0.10_80].bind_to_port");

    let res = edit_listener(&snap, "10.96.0.10_5432", |l| {
        l.filter_chains[0].filters[0].name = "envoy.filters.network.redis_proxy".into()
    });
    let err = invalid(&res);
    assert_eq!(
        err.path,
        "Listener[10.96.0.10_5432].filter_chains[0].filters[0].name"
    );

    // Two chains without the inspector's match: which one would a connection take?
    let res = edit_listener(&snap, "10.96.0.10_9000", |l| {
        l.filter_chains[0].filter_chain_match = None;
    });
    let err = invalid(&res);
    assert_eq!(err.path, "Listener[10.96.0.10_9000].filter_chains");

    let res = edit_listener(&snap, "10.96.0.10_9000", |l| l.listener_filters.clear());
    let err = invalid(&res);
    assert_eq!(
        err.path,
        "Listener[10.96.0.10_9000].filter_chains[0].filter_chain_match"
    );

    // Another listener claiming the same address.
    let mut res = snap.resources().clone();
    let listeners = res.get_mut(LISTENER_TYPE).unwrap();
    let mut l: Listener = unpack(&listeners["10.96.0.10_80"], "x").unwrap();
    l.name = "copy".into();
    listeners.insert("copy".into(), pack(&l));
    let err = invalid(&res);
    assert!(err.path.ends_with(".address"), "{err}");
}

#[test]
fn an_address_listener_without_its_route_config_or_cluster_is_incomplete() {
    let snap = to_snapshot(&with_addresses(), "v1").unwrap();
    let mut res = snap.resources().clone();
    res.get_mut(CLUSTER_TYPE)
        .unwrap()
        .remove(&svc("reviews").port_name(5432));
    match to_proxy_view(&res) {
        Err(FromXdsError::Incomplete(missing)) => {
            assert!(missing.iter().any(|m| m.type_url == CLUSTER_TYPE
                && m.referenced_by.starts_with("Listener[10.96.0.10_5432")));
        }
        other => panic!("expected Incomplete, got {other:?}"),
    }
}
