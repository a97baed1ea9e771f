//! Services with several ports: a cluster and a route config per port, endpoints split by
//! the port they serve, routes attached per `parentRef.port`, backends resolved to a port.

use super::*;

fn port(port: u16, protocol: AppProtocol) -> ServicePort {
    ServicePort {
        name: None,
        port,
        protocol,
    }
}

fn serving(service: &str, addr: &str, port: Option<u16>) -> Endpoint {
    Endpoint {
        service_port: port,
        ..endpoint(service, addr, None)
    }
}

/// web and web-v2 on HTTP 80 and gRPC 9090 (web at 10.96.0.20), each instance listening
/// on 8080 and 9091, plus one web instance that serves both on 7000; reviews-v1 single-port.
fn multi() -> MeshConfig {
    let mut m = mesh();
    for name in ["web", "web-v2"] {
        let (id, mut s) = service(name, AppProtocol::Http);
        s.ports = vec![port(80, AppProtocol::Http), port(9090, AppProtocol::Http2)];
        m.services.insert(id, s);
    }
    m.services.get_mut(&svc("web")).unwrap().addresses = vec!["10.96.0.20".parse().unwrap()];
    m.endpoints.insert(
        svc("web"),
        vec![
            serving("web", "10.0.0.1:8080", Some(80)),
            serving("web", "10.0.0.1:9091", Some(9090)),
            serving("web", "10.0.0.2:7000", None),
        ],
    );
    m.endpoints.insert(
        svc("web-v2"),
        vec![
            serving("web-v2", "10.0.1.1:8080", Some(80)),
            serving("web-v2", "10.0.1.1:9091", Some(9090)),
        ],
    );
    m
}

/// A backend that names no port.
fn portless(name: &str) -> Backend {
    Backend {
        port: None,
        ..backend(name, 1)
    }
}

fn addrs(view: &ProxyView, cluster: &str) -> Vec<String> {
    let mut v: Vec<String> = view.clusters[cluster]
        .endpoints
        .iter()
        .map(ToString::to_string)
        .collect();
    v.sort();
    v
}

fn first_clusters(view: &ProxyView, config: &str) -> Vec<String> {
    view.route_configs[config][0]
        .clusters
        .iter()
        .map(|c| c.cluster.clone())
        .collect()
}

#[test]
fn each_port_is_a_cluster_of_the_endpoints_serving_it() {
    let snap = to_snapshot(&multi(), "v1").unwrap();
    let view = to_proxy_view(snap.resources()).unwrap();
    let web = svc("web");
    assert_eq!(
        addrs(&view, &web.port_name(80)),
        ["10.0.0.1:8080", "10.0.0.2:7000"]
    );
    assert_eq!(
        addrs(&view, &web.port_name(9090)),
        ["10.0.0.1:9091", "10.0.0.2:7000"]
    );
    assert!(!view.clusters.contains_key(&web.fqdn()));
    assert_eq!(
        view.clusters[&web.port_name(9090)].protocol,
        AppProtocol::Http2
    );
    assert_eq!(
        view.clusters[&web.port_name(80)].protocol,
        AppProtocol::Http
    );
    // Named with a port, clients reach that port; named without, the first.
    assert_eq!(view.listeners["web:9090"], web.port_name(9090));
    assert_eq!(
        view.listeners["web.default.svc.cluster.local:9090"],
        web.port_name(9090)
    );
    assert_eq!(view.listeners["web"], web.port_name(80));
    assert_eq!(view.listeners["web.default"], web.port_name(80));
    assert!(!view.listeners.contains_key("web:8080"));
    // The virtual address of each port takes that port's routes.
    let at = &view.addresses[&"10.96.0.20:9090".parse().unwrap()];
    assert_eq!(
        at.route_config.as_deref(),
        Some(web.port_name(9090).as_str())
    );
    assert_eq!(
        first_clusters(&view, &web.port_name(9090)),
        [web.port_name(9090)]
    );
    // A single-port service keeps one cluster named by its FQDN.
    assert!(view.listeners.contains_key("reviews"));
    assert!(!view.listeners.contains_key("reviews:9080"));
    assert!(snap.check_consistent().is_ok());
}

#[test]
fn routes_attach_per_parent_port_and_backends_follow_the_called_port() {
    let mut m = multi();
    let web = svc("web");
    let v2 = svc("web-v2");
    let mut split = http_route("split", 1, vec![rule(vec![], vec![portless("web-v2")])]);
    split.parents = vec![web.clone()];
    split.parent_ports = [(web.clone(), [9090].into_iter().collect())]
        .into_iter()
        .collect();
    let mut pinned = rule(vec![prefix("/admin")], vec![portless("web-v2")]);
    pinned.backends[0].port = Some(80);
    pinned.backends.push(backend("reviews-v1", 1));
    pinned.backends[1].port = Some(1234);
    pinned.filters.mirrors = vec![RequestMirror {
        backend: v2.clone(),
        fraction: Fraction::ALL,
    }];
    split.rules.push(pinned);
    m.routes.insert(("default".into(), "split".into()), split);
    let snap = to_snapshot(&m, "v1").unwrap();
    let view = to_proxy_view(snap.resources()).unwrap();

    // Port 9090 is routed: to web-v2's 9090, the port it came in on.
    let grpc = &view.route_configs[&web.port_name(9090)];
    let catch_all = grpc
        .iter()
        .find(|r| r.matches.path == prefix("/").path)
        .unwrap();
    assert_eq!(catch_all.clusters[0].cluster, v2.port_name(9090));
    // A named port wins; a single-port backend is one cluster whatever port is named;
    // mirrors follow the called port.
    let admin = grpc
        .iter()
        .find(|r| r.matches.path == prefix("/admin").path)
        .unwrap();
    let names: Vec<&str> = admin.clusters.iter().map(|c| c.cluster.as_str()).collect();
    assert_eq!(
        names,
        [v2.port_name(80).as_str(), fqdn("reviews-v1").as_str()]
    );
    assert_eq!(admin.mirrors[0].cluster, v2.port_name(9090));
    // Port 80 is not governed by the route: everything to web's own port-80 endpoints.
    assert_eq!(
        first_clusters(&view, &web.port_name(80)),
        [web.port_name(80)]
    );
    assert_eq!(addrs(&view, &v2.port_name(9090)), ["10.0.1.1:9091"]);
    assert_eq!(addrs(&view, &v2.port_name(80)), ["10.0.1.1:8080"]);
}

#[test]
fn a_backend_port_the_service_lacks_is_a_cluster_without_endpoints() {
    let mut m = multi();
    let mut r = http_route("typo", 1, vec![rule(vec![], vec![backend("web-v2", 1)])]);
    r.rules[0].backends[0].port = Some(8081);
    m.routes.insert(("default".into(), "typo".into()), r);
    let snap = to_snapshot(&m, "v1").unwrap();
    let view = to_proxy_view(snap.resources()).unwrap();
    assert!(view.clusters[&svc("web-v2").port_name(8081)]
        .endpoints
        .is_empty());
}

#[test]
fn a_parent_port_limits_a_single_port_service_too() {
    let mut m = mesh();
    let mut r = http_route(
        "elsewhere",
        1,
        vec![rule(vec![], vec![backend("reviews-v1", 1)])],
    );
    r.parents = vec![svc("reviews-v2")];
    r.parent_ports = [(svc("reviews-v2"), [1].into_iter().collect())]
        .into_iter()
        .collect();
    m.routes.insert(("default".into(), "elsewhere".into()), r);
    let view = to_proxy_view(to_snapshot(&m, "v1").unwrap().resources()).unwrap();
    // reviews-v2 listens on 9080, not 1: its own default route stays.
    assert_eq!(
        first_clusters(&view, &fqdn("reviews-v2")),
        [fqdn("reviews-v2")]
    );
}
