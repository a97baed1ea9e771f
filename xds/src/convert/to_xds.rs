//! Control plane side: [`MeshConfig`] → [`XdsSnapshot`].
//!
//! For every service `s` (see `docs/control-plane.md`, "xDS mapping"):
//! - one `Listener` per alias of `s` ([`ServiceRef::aliases`]), each an `ApiListener` whose
//!   `HttpConnectionManager` takes its routes over RDS (ADS) from route config `fqdn(s)`,
//!   with the router filter as the only (and so last) HTTP filter;
//! - one `RouteConfiguration` `fqdn(s)` with one virtual host `*`: the rules of every
//!   HTTPRoute whose parents include `s`, in Gateway API precedence (see [`precedence`]),
//!   or, with no HTTPRoute attached, one catch-all route to `s`'s own cluster;
//! - one EDS `Cluster` (ADS, `ROUND_ROBIN`) and one `ClusterLoadAssignment` per referenced
//!   service: each backend of an attached rule, and each service with no HTTPRoute.
//!
//! Path matches: Gateway API `PathPrefix` matches whole segments. Envoy's
//! `path_separated_prefix` would say exactly that, but proxyless gRPC NACKs the whole
//! RouteConfiguration on it ("invalid path specifier"), so a prefix `/a` becomes the
//! `safe_regex` `/a(/.*)?` (escaped literal, whole-path match) and the prefix `/` becomes
//! `prefix: ""`. [`from_xds`](super::from_xds) recognises that exact regex shape and gives
//! back `PathMatch::Prefix`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::{
    address, config_source::ConfigSourceSpecifier, socket_address, Address, AggregatedConfigSource,
    ApiVersion, ConfigSource, HealthStatus, Locality, Metadata, SocketAddress,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint as XdsEndpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher, query_parameter_matcher, route, route_action, route_match, weighted_cluster,
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, Route, RouteAction,
    RouteConfiguration, RouteMatch as XdsRouteMatch, VirtualHost, WeightedCluster,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter, HttpConnectionManager, HttpFilter, Rds,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, RegexMatcher, StringMatcher};
use envoy_types::pb::google::protobuf::{value, Struct, UInt32Value, Value};

use super::{pack, ConvertError, XdsSnapshot};
use crate::domain::{
    AppProtocol, HttpRoute, MeshConfig, PathMatch, RouteMatch, RouteRule, ServiceRef, StringMatch,
};

/// Name of the router HTTP filter.
pub const ROUTER_FILTER: &str = "envoy.filters.http.router";
/// `filter_metadata` key of Tandem's own cluster metadata.
pub const TANDEM_METADATA: &str = "tandem";
/// Field of [`TANDEM_METADATA`] carrying the cluster's [`AppProtocol`] (`http`, `http2`,
/// `tcp`); absent means detect.
pub const PROTOCOL_FIELD: &str = "protocol";
/// Name of the catch-all route of a service with no HTTPRoute attached.
pub const DEFAULT_ROUTE_NAME: &str = "default";
/// HTTP status of a rule with no backend, or only zero weights (as Gateway API says).
pub const NO_BACKEND_STATUS: u32 = 500;

/// Builds the xDS snapshot of `mesh` at `version`.
///
/// Fails only on input the control plane should have rejected (an invalid regex, weights
/// summing above `u32::MAX`), with the path of the offending HTTPRoute field.
pub fn to_snapshot(mesh: &MeshConfig, version: &str) -> Result<XdsSnapshot, ConvertError> {
    let mut snap = XdsSnapshot::new(version);
    let mut clusters: BTreeSet<ServiceRef> = BTreeSet::new();
    for svc in mesh.services.keys() {
        let fqdn = svc.fqdn();
        for alias in svc.aliases() {
            snap.insert(alias.clone(), pack(&listener(&alias, &fqdn)));
        }
        let attached: Vec<&HttpRoute> = mesh
            .routes
            .values()
            .filter(|r| r.parents.contains(svc))
            .collect();
        let routes = if attached.is_empty() {
            clusters.insert(svc.clone());
            vec![Route {
                name: DEFAULT_ROUTE_NAME.to_string(),
                r#match: Some(XdsRouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix(String::new())),
                    ..Default::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(fqdn.clone())),
                    ..Default::default()
                })),
                ..Default::default()
            }]
        } else {
            for r in &attached {
                for rule in &r.rules {
                    clusters.extend(rule.backends.iter().map(|b| b.service.clone()));
                }
            }
            attached_routes(&attached)?
        };
        let rc = RouteConfiguration {
            name: fqdn.clone(),
            virtual_hosts: vec![VirtualHost {
                name: fqdn.clone(),
                domains: vec!["*".to_string()],
                routes,
                ..Default::default()
            }],
            ..Default::default()
        };
        snap.insert(fqdn, pack(&rc));
    }
    for svc in &clusters {
        let protocol = mesh
            .services
            .get(svc)
            .map(|s| {
                let mut protos = s.ports.iter().map(|p| p.protocol);
                match protos.next() {
                    Some(first) if protos.all(|p| p == first) => first,
                    _ => AppProtocol::Detect,
                }
            })
            .unwrap_or_default();
        snap.insert(svc.fqdn(), pack(&eds_cluster(&svc.fqdn(), protocol)));
        let endpoints = mesh.endpoints.get(svc).map(Vec::as_slice).unwrap_or(&[]);
        snap.insert(svc.fqdn(), pack(&load_assignment(&svc.fqdn(), endpoints)));
    }
    Ok(snap)
}

/// The ADS config source (`ads {}`, resource API v3).
pub(crate) fn ads_source() -> ConfigSource {
    ConfigSource {
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

fn listener(alias: &str, route_config: &str) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: route_config.to_string(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads_source()),
            route_config_name: route_config.to_string(),
        })),
        http_filters: vec![HttpFilter {
            name: ROUTER_FILTER.to_string(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack(
                &Router::default(),
            ))),
            ..Default::default()
        }],
        ..Default::default()
    };
    Listener {
        name: alias.to_string(),
        api_listener: Some(ApiListener {
            api_listener: Some(pack(&hcm)),
        }),
        ..Default::default()
    }
}

fn eds_cluster(name: &str, protocol: AppProtocol) -> Cluster {
    let protocol = match protocol {
        AppProtocol::Detect => None,
        AppProtocol::Http => Some("http"),
        AppProtocol::Http2 => Some("http2"),
        AppProtocol::Tcp => Some("tcp"),
    };
    let metadata = protocol.map(|p| Metadata {
        filter_metadata: [(
            TANDEM_METADATA.to_string(),
            Struct {
                fields: [(
                    PROTOCOL_FIELD.to_string(),
                    Value {
                        kind: Some(value::Kind::StringValue(p.to_string())),
                    },
                )]
                .into_iter()
                .collect(),
            },
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    });
    Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ads_source()),
            service_name: String::new(),
        }),
        lb_policy: cluster::LbPolicy::RoundRobin as i32,
        metadata,
        ..Default::default()
    }
}

fn load_assignment(name: &str, endpoints: &[crate::domain::Endpoint]) -> ClusterLoadAssignment {
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

/// One match of one rule of one route, with what precedence needs to order it.
struct Entry<'a> {
    route: &'a HttpRoute,
    rule_index: usize,
    match_index: usize,
    rule: &'a RouteRule,
    matches: &'a RouteMatch,
}

/// Orders two matches by Gateway API precedence (`Less` = evaluated first).
///
/// The spec (HTTPRouteRule.matches): an `Exact` path match first, then the `PathPrefix`
/// with the most characters, then a match with a method, then the most header matches,
/// then the most query param matches; across routes the oldest route (`created`), then
/// `{namespace}/{name}` alphabetically; within a route, the first rule (and the first match
/// of that rule). The place of `RegularExpression` paths is left to implementations: Tandem
/// puts them between `Exact` and `PathPrefix` (longer pattern first), so a prefix such as
/// `/` never shadows a regex.
pub fn precedence(a: &RouteMatch, b: &RouteMatch) -> Ordering {
    fn rank(p: &PathMatch) -> (u8, std::cmp::Reverse<usize>) {
        match p {
            PathMatch::Exact(_) => (0, std::cmp::Reverse(0)),
            PathMatch::Regex(r) => (1, std::cmp::Reverse(r.len())),
            PathMatch::Prefix(p) => (2, std::cmp::Reverse(p.trim_end_matches('/').len())),
        }
    }
    rank(&a.path)
        .cmp(&rank(&b.path))
        .then_with(|| b.method.is_some().cmp(&a.method.is_some()))
        .then_with(|| b.headers.len().cmp(&a.headers.len()))
        .then_with(|| b.query_params.len().cmp(&a.query_params.len()))
}

fn attached_routes(attached: &[&HttpRoute]) -> Result<Vec<Route>, ConvertError> {
    let default_match = RouteMatch::default();
    let mut entries = Vec::new();
    for route in attached {
        for (rule_index, rule) in route.rules.iter().enumerate() {
            if rule.matches.is_empty() {
                entries.push(Entry {
                    route,
                    rule_index,
                    match_index: 0,
                    rule,
                    matches: &default_match,
                });
            }
            for (match_index, m) in rule.matches.iter().enumerate() {
                entries.push(Entry {
                    route,
                    rule_index,
                    match_index,
                    rule,
                    matches: m,
                });
            }
        }
    }
    entries.sort_by(|a, b| {
        precedence(a.matches, b.matches)
            .then_with(|| a.route.created.cmp(&b.route.created))
            .then_with(|| {
                (&a.route.namespace, &a.route.name).cmp(&(&b.route.namespace, &b.route.name))
            })
            .then_with(|| a.rule_index.cmp(&b.rule_index))
            .then_with(|| a.match_index.cmp(&b.match_index))
    });
    entries.iter().map(xds_route).collect()
}

fn xds_route(e: &Entry<'_>) -> Result<Route, ConvertError> {
    let path = format!(
        "HTTPRoute[{}/{}].rules[{}]",
        e.route.namespace, e.route.name, e.rule_index
    );
    let m_path = format!("{path}.matches[{}]", e.match_index);
    Ok(Route {
        name: format!(
            "{}/{}/rule-{}/match-{}",
            e.route.namespace, e.route.name, e.rule_index, e.match_index
        ),
        r#match: Some(xds_match(e.matches, &m_path)?),
        action: Some(xds_action(e.rule, &path)?),
        ..Default::default()
    })
}

fn check_regex(re: &str, path: &str) -> Result<(), ConvertError> {
    regex::Regex::new(re)
        .map(|_| ())
        .map_err(|e| ConvertError::new(path, format!("invalid regex: {e}")))
}

fn string_matcher(m: &StringMatch, path: &str) -> Result<StringMatcher, ConvertError> {
    let pattern = match m {
        StringMatch::Exact(v) => string_matcher::MatchPattern::Exact(v.clone()),
        StringMatch::Regex(r) => {
            check_regex(r, path)?;
            string_matcher::MatchPattern::SafeRegex(regex_matcher(r))
        }
    };
    Ok(StringMatcher {
        match_pattern: Some(pattern),
        ignore_case: false,
    })
}

fn regex_matcher(re: &str) -> RegexMatcher {
    RegexMatcher {
        regex: re.to_string(),
        ..Default::default()
    }
}

/// The whole-path regex that gives Gateway API `PathPrefix` semantics for `prefix`
/// (trailing `/` ignored, as the spec says): `/a` → `/a(/.*)?`.
pub(crate) fn segment_prefix_regex(prefix: &str) -> String {
    format!("{}(/.*)?", regex::escape(prefix.trim_end_matches('/')))
}

fn xds_match(m: &RouteMatch, path: &str) -> Result<XdsRouteMatch, ConvertError> {
    let path_specifier = match &m.path {
        PathMatch::Exact(p) => route_match::PathSpecifier::Path(p.clone()),
        PathMatch::Prefix(p) if p.trim_end_matches('/').is_empty() => {
            route_match::PathSpecifier::Prefix(String::new())
        }
        PathMatch::Prefix(p) => {
            route_match::PathSpecifier::SafeRegex(regex_matcher(&segment_prefix_regex(p)))
        }
        PathMatch::Regex(r) => {
            check_regex(r, &format!("{path}.path.value"))?;
            route_match::PathSpecifier::SafeRegex(regex_matcher(r))
        }
    };
    let mut headers = Vec::new();
    if let Some(method) = &m.method {
        headers.push(HeaderMatcher {
            name: ":method".to_string(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                StringMatcher {
                    match_pattern: Some(string_matcher::MatchPattern::Exact(method.clone())),
                    ignore_case: false,
                },
            )),
            ..Default::default()
        });
    }
    for (i, h) in m.headers.iter().enumerate() {
        headers.push(HeaderMatcher {
            name: h.name.clone(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                string_matcher(&h.value, &format!("{path}.headers[{i}].value"))?,
            )),
            ..Default::default()
        });
    }
    let query_parameters = m
        .query_params
        .iter()
        .enumerate()
        .map(|(i, q)| {
            Ok(QueryParameterMatcher {
                name: q.name.clone(),
                query_parameter_match_specifier: Some(
                    query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(
                        string_matcher(&q.value, &format!("{path}.queryParams[{i}].value"))?,
                    ),
                ),
            })
        })
        .collect::<Result<_, ConvertError>>()?;
    Ok(XdsRouteMatch {
        path_specifier: Some(path_specifier),
        headers,
        query_parameters,
        ..Default::default()
    })
}

fn xds_action(rule: &RouteRule, path: &str) -> Result<route::Action, ConvertError> {
    let total: u64 = rule.backends.iter().map(|b| u64::from(b.weight)).sum();
    if total == 0 {
        return Ok(route::Action::DirectResponse(DirectResponseAction {
            status: NO_BACKEND_STATUS,
            ..Default::default()
        }));
    }
    if total > u64::from(u32::MAX) {
        return Err(ConvertError::new(
            format!("{path}.backendRefs"),
            "weights sum above 4294967295",
        ));
    }
    let specifier = match rule.backends.as_slice() {
        [only] => route_action::ClusterSpecifier::Cluster(only.service.fqdn()),
        many => route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: many
                .iter()
                .map(|b| weighted_cluster::ClusterWeight {
                    name: b.service.fqdn(),
                    weight: Some(UInt32Value { value: b.weight }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
    };
    Ok(route::Action::Route(RouteAction {
        cluster_specifier: Some(specifier),
        ..Default::default()
    }))
}
