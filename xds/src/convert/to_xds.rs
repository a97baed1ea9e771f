//! Control plane side: [`MeshConfig`] → [`XdsSnapshot`].
//!
//! For every service `s` (see `docs/control-plane.md`, "xDS mapping"):
//! - one `Listener` per alias of `s` ([`aliases`](crate::domain::ServiceRef::aliases)), each an `ApiListener` whose
//!   `HttpConnectionManager` takes its routes over RDS (ADS) from route config `fqdn(s)`,
//!   with the router filter last, preceded by the fault filter only when a route of `s`
//!   injects faults (so proxyless gRPC configs stay minimal);
//! - one `RouteConfiguration` `fqdn(s)` with one virtual host `*`: the rules of every
//!   HTTPRoute whose parents include `s`, in Gateway API precedence (see [`precedence`]),
//!   or, with no HTTPRoute attached, one catch-all route to `s`'s own cluster
//!   ([`route`] has the per-rule mapping: filters, timeouts, retries, faults);
//! - one EDS `Cluster` (ADS) and one `ClusterLoadAssignment` per referenced service: each
//!   backend and mirror of an attached rule, and each service with no HTTPRoute; the
//!   cluster carries the service's `DestinationPolicy` ([`cluster`]), and a TLS transport
//!   socket when the service is called with mutual TLS ([`MeshConfig::upstream_tls`]);
//! - for every virtual address of `s` and every port of `s`, a `Listener` named
//!   `<ip>_<port>` ([`address_listener_name`](crate::domain::address_listener_name)) with
//!   that address, `bind_to_port: false` (Istio's form for intercepted traffic): an HTTP
//!   port's filter chain is the same connection manager over RDS, an opaque TCP port's is
//!   a `tcp_proxy` to `s`'s own cluster, and a port of unknown protocol has both, told
//!   apart by the HTTP inspector ([`virtual_address`]);
//! - when the mesh has a trust bundle: the SDS `Secret` [`TRUST_BUNDLE_SECRET`] with the
//!   roots, and one inbound `Listener` [`inbound_listener_name`] per service holding its
//!   TLS mode and authorization rules (`security` has the shapes). Inbound listeners are
//!   served only to the workload they belong to
//!   ([`AdsStream::with_identity`](crate::ads::AdsStream::with_identity)).
//!
//! Path matches: Gateway API `PathPrefix` matches whole segments. Envoy's
//! `path_separated_prefix` would say exactly that, but proxyless gRPC NACKs the whole
//! RouteConfiguration on it ("invalid path specifier"), so a prefix `/a` becomes the
//! `safe_regex` `/a(/.*)?` (escaped literal, whole-path match) and the prefix `/` becomes
//! `prefix: ""`. [`from_xds`](super::from_xds) recognises that exact regex shape and gives
//! back `PathMatch::Prefix`.

mod access_log;
mod action;
mod cluster;
mod ports;
mod route;
mod security;
mod virtual_address;

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::{
    address, config_source::ConfigSourceSpecifier, socket_address, Address, AggregatedConfigSource,
    ApiVersion, ConfigSource, HealthStatus, Locality, SocketAddress,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint as XdsEndpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    route as xds_route, route_action, route_match, Route, RouteAction, RouteConfiguration,
    RouteMatch as XdsRouteMatch, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter, HttpConnectionManager, HttpFilter, Rds,
};
use envoy_types::pb::google::protobuf::UInt32Value;

use self::ports::{ClusterKey, Resolve};
use super::canonical::pack_cluster;
use super::{pack, ConvertError, XdsSnapshot};
use crate::domain::{
    inbound_listener_name, CallPolicy, HttpRoute, MeshConfig, Service, TRUST_BUNDLE_SECRET,
};

pub use access_log::{FILE_ACCESS_LOGGER, STDOUT_ACCESS_LOGGER};
pub use route::precedence;
pub use security::{
    AUTHZ_ALLOW_FILTER, AUTHZ_DENY_FILTER, HTTP_CONNECTION_MANAGER, INBOUND_PORT,
    INBOUND_STAT_PREFIX, MESH_ALPN, RAW_BUFFER_TRANSPORT_SOCKET, RAW_PROTOCOL, TLS_INSPECTOR,
    TLS_PROTOCOL, TLS_TRANSPORT_SOCKET,
};
pub use virtual_address::{
    HTTP_APPLICATION_PROTOCOLS, HTTP_CHAIN, HTTP_INSPECTOR, TCP_CHAIN, TCP_PROXY,
};

/// Name of the router HTTP filter.
pub const ROUTER_FILTER: &str = "envoy.filters.http.router";
/// Name of the fault injection HTTP filter, and the `typed_per_filter_config` key of a
/// route's faults.
pub const FAULT_FILTER: &str = "envoy.filters.http.fault";
/// `filter_metadata` key of Tandem's own cluster metadata.
pub const TANDEM_METADATA: &str = "tandem";
/// Field of [`TANDEM_METADATA`] carrying the cluster's [`AppProtocol`](crate::domain::AppProtocol) (`http`, `http2`,
/// `tcp`); absent means detect.
pub const PROTOCOL_FIELD: &str = "protocol";
/// Field of [`TANDEM_METADATA`] naming a load balancer Envoy does not have
/// ([`PEAK_EWMA`]); `lb_policy` then holds the fallback other clients use.
pub const LB_FIELD: &str = "lb";
/// Value of [`LB_FIELD`] for P2C over peak-EWMA latency.
pub const PEAK_EWMA: &str = "peak_ewma";
/// Name of the catch-all route of a service with no HTTPRoute attached.
pub const DEFAULT_ROUTE_NAME: &str = "default";
/// HTTP status of a rule with no backend, or only zero weights (as Gateway API says), or
/// an unresolvable `ExtensionRef` filter.
pub const NO_BACKEND_STATUS: u32 = 500;
/// `retry_on` conditions that are always on in Tandem (requests never written upstream).
pub const CONNECTION_RETRY_ON: &str = "connect-failure,refused-stream,reset";
/// `safe_regex` on `:method` in `retriable_request_headers` for idempotent-only retries.
pub const IDEMPOTENT_METHODS: &str = "GET|HEAD|OPTIONS|PUT|DELETE|TRACE";

/// Builds the xDS snapshot of `mesh` at `version`.
///
/// Fails only on input the control plane should have rejected (an invalid regex, weights
/// summing above `u32::MAX`, `ReplacePrefixMatch` without a `PathPrefix` match, a redirect
/// status other than 301/302/303/307/308), with the path of the offending HTTPRoute field.
pub fn to_snapshot(mesh: &MeshConfig, version: &str) -> Result<XdsSnapshot, ConvertError> {
    let mut snap = XdsSnapshot::new(version);
    let mut clusters: BTreeSet<ClusterKey> = BTreeSet::new();
    for (svc, service) in &mesh.services {
        let configs = port_configs(service);
        for (config, port) in &configs {
            let resolve = Resolve::new(mesh, *port);
            let attached: Vec<&HttpRoute> = mesh
                .routes
                .values()
                .filter(|r| r.governs(svc, *port))
                .collect();
            let routes = if attached.is_empty() {
                let own = resolve.key(svc, *port);
                let route = default_route(own.name());
                clusters.insert(own);
                vec![route]
            } else {
                for r in &attached {
                    for rule in &r.rules {
                        clusters.extend(
                            rule.backends
                                .iter()
                                .map(|b| resolve.key(&b.service, b.port)),
                        );
                        clusters.extend(
                            rule.filters
                                .mirrors
                                .iter()
                                .map(|m| resolve.key(&m.backend, None)),
                        );
                    }
                }
                route::attached_routes(&attached, &mesh.faults, &resolve)?
            };
            let with_fault = routes
                .iter()
                .any(|r| r.typed_per_filter_config.contains_key(FAULT_FILTER));
            for l in virtual_address::listeners(service, *port, config, with_fault) {
                snap.insert(l.name.clone(), pack(&l));
            }
            if virtual_address::carries_tcp(service, *port) {
                // Opaque TCP to a virtual address goes to the service's own endpoints.
                clusters.insert(resolve.key(svc, *port));
            }
            for (alias, target) in listener_names(service, config, *port) {
                snap.insert(alias.clone(), pack(&listener(&alias, &target, with_fault)));
            }
            let rc = RouteConfiguration {
                name: config.clone(),
                virtual_hosts: vec![VirtualHost {
                    name: config.clone(),
                    domains: vec!["*".to_string()],
                    routes,
                    ..Default::default()
                }],
                ..Default::default()
            };
            snap.insert(config.clone(), pack(&rc));
        }
    }
    for key in &clusters {
        let svc = &key.service;
        // Map order is (namespace, name): deterministic when two policies target one
        // service (the control plane rejects that at apply time).
        let policy = mesh
            .policies
            .values()
            .find(|p| p.target == *svc)
            .map(|p| p.policy)
            .unwrap_or_else(CallPolicy::default);
        let name = key.name();
        let mut c = cluster::eds_cluster(&name, key.protocol(mesh), &policy);
        // Backends and mirrors alike: the cluster is the service's, so is its identity.
        c.transport_socket = mesh
            .upstream_tls(svc)
            .map(|tls| security::upstream_transport_socket(&tls));
        snap.insert(name.clone(), pack_cluster(c));
        snap.insert(
            name.clone(),
            pack(&load_assignment(&name, &key.endpoints(mesh))),
        );
    }
    // Without a trust bundle there are no identities, so no inbound policy to enforce.
    if !mesh.security.trust_bundle_pem.is_empty() {
        snap.insert(
            TRUST_BUNDLE_SECRET,
            pack(&security::trust_bundle_secret(
                &mesh.security.trust_bundle_pem,
            )),
        );
        for svc in mesh.services.keys() {
            let policy = mesh.inbound_policy(svc);
            snap.insert(
                inbound_listener_name(svc),
                pack(&security::inbound_listener(
                    &policy,
                    &mesh.security.trust_domain,
                )),
            );
        }
    }
    Ok(snap)
}

/// The route configurations of `service`, with the port each is for: one named by its
/// FQDN (for its only port, if any), or one per port ([`port_name`](crate::domain::ServiceRef::port_name)).
fn port_configs(service: &Service) -> Vec<(String, Option<u16>)> {
    if service.per_port() {
        service
            .ports
            .iter()
            .map(|p| (service.id.port_name(p.port), Some(p.port)))
            .collect()
    } else {
        vec![(service.id.fqdn(), service.ports.first().map(|p| p.port))]
    }
}

/// The API listeners (the names clients call the service by) taking route config
/// `config`, of port `port`: every alias, for a service with one configuration; for one
/// with several, every `alias:port`, and the bare aliases for its first port.
fn listener_names(service: &Service, config: &str, port: Option<u16>) -> Vec<(String, String)> {
    let aliases = service.id.aliases();
    if !service.per_port() {
        return aliases
            .into_iter()
            .map(|a| (a, config.to_string()))
            .collect();
    }
    let Some(port) = port else {
        return Vec::new();
    };
    let first = service.ports.first().map(|p| p.port) == Some(port);
    let mut out: Vec<(String, String)> = aliases
        .iter()
        .map(|a| (format!("{a}:{port}"), config.to_string()))
        .collect();
    if first {
        out.extend(aliases.into_iter().map(|a| (a, config.to_string())));
    }
    out
}

/// The catch-all route of a service with no HTTPRoute attached: everything to `cluster`.
fn default_route(cluster: String) -> Route {
    Route {
        name: DEFAULT_ROUTE_NAME.to_string(),
        r#match: Some(XdsRouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix(String::new())),
            ..Default::default()
        }),
        action: Some(xds_route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster)),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The ADS config source (`ads {}`, resource API v3).
pub(crate) fn ads_source() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

fn listener(alias: &str, route_config: &str, with_fault: bool) -> Listener {
    Listener {
        name: alias.to_string(),
        api_listener: Some(ApiListener {
            api_listener: Some(pack(&http_connection_manager(route_config, with_fault))),
        }),
        ..Default::default()
    }
}

/// The HTTP connection manager of a service's listeners: routes over RDS from
/// `route_config`, the fault filter (only when a route injects faults), the router.
pub(crate) fn http_connection_manager(
    route_config: &str,
    with_fault: bool,
) -> HttpConnectionManager {
    let mut http_filters = Vec::with_capacity(2);
    if with_fault {
        // Empty at the listener: each route's `typed_per_filter_config` says what to inject.
        http_filters.push(HttpFilter {
            name: FAULT_FILTER.to_string(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack(
                &HttpFault::default(),
            ))),
            ..Default::default()
        });
    }
    http_filters.push(HttpFilter {
        name: ROUTER_FILTER.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack(
            &Router::default(),
        ))),
        ..Default::default()
    });
    HttpConnectionManager {
        stat_prefix: route_config.to_string(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads_source()),
            route_config_name: route_config.to_string(),
        })),
        http_filters,
        ..Default::default()
    }
}

fn load_assignment(name: &str, endpoints: &[&crate::domain::Endpoint]) -> ClusterLoadAssignment {
    // Zone → addresses, deduplicated (gRPC NACKs a duplicate address).
    let mut by_zone: BTreeMap<&str, BTreeSet<std::net::SocketAddr>> = BTreeMap::new();
    for ep in endpoints {
        by_zone
            .entry(ep.zone().unwrap_or(""))
            .or_default()
            .insert(ep.address);
    }
    let mut seen = BTreeSet::new();
    let groups = by_zone
        .into_iter()
        .map(|(zone, addrs)| LocalityLbEndpoints {
            locality: Some(Locality {
                zone: zone.to_string(),
                ..Default::default()
            }),
            load_balancing_weight: Some(UInt32Value { value: 1 }),
            lb_endpoints: addrs
                .into_iter()
                .filter(|a| seen.insert(*a))
                .map(|a| LbEndpoint {
                    health_status: HealthStatus::Healthy as i32,
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(XdsEndpoint {
                        address: Some(Address {
                            address: Some(address::Address::SocketAddress(SocketAddress {
                                address: a.ip().to_string(),
                                port_specifier: Some(socket_address::PortSpecifier::PortValue(
                                    u32::from(a.port()),
                                )),
                                ..Default::default()
                            })),
                        }),
                        ..Default::default()
                    })),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .filter(|g| !g.lb_endpoints.is_empty())
        .collect();
    ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints: groups,
        ..Default::default()
    }
}
