//! Stage 1, route: the routing table of one snapshot. Which service a request is for
//! ([`RouteTable::destination`]), and which of its routes matches ([`Destination::route`]);
//! the route carries everything the later stages apply: filters, fault, backends, retry
//! policy, timeouts, mirrors.
//!
//! Built from a [`ProxyView`] — decoded from xDS, or derived from the static config file —
//! and immutable afterwards; the live state of clusters and endpoints sits in the
//! [`Registry`] the build is given.

mod filters;
mod intercepted;
mod matcher;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method, Uri};
use tandem_xds::domain::{FaultInjection, Fraction, ProxyRetry, ProxyRoute, ProxyView};

pub use filters::{HeaderEdits, PathEdit, Redirect};
pub use intercepted::Intercepted;
pub use matcher::{MatchError, Matcher};

use super::cluster::{Cluster, Registry};
use super::split::Split;
use crate::config::Protocol;

/// One compiled route: a condition, weighted clusters, and what to do on the way.
#[derive(Debug)]
pub struct Route {
    /// The `route` metric label: `namespace/name/rule-N` (matches of one rule share it).
    pub name: Arc<str>,
    matcher: Matcher,
    /// The weighted backends.
    pub split: Split,
    /// Request header changes.
    pub request_headers: HeaderEdits,
    /// Response header changes.
    pub response_headers: HeaderEdits,
    /// Answer with a redirect instead of forwarding.
    pub redirect: Option<Redirect>,
    /// New `Host` / `:authority`.
    pub host_rewrite: Option<http::uri::Authority>,
    /// New path.
    pub path_rewrite: Option<PathEdit>,
    /// Shadow clusters and the share of requests each receives.
    pub mirrors: Vec<(Arc<Cluster>, Fraction)>,
    /// Injected faults.
    pub fault: Option<FaultInjection>,
    /// Whole-request timeout, overriding the proxy default.
    pub timeout: Option<Duration>,
    /// Per-attempt timeout.
    pub per_try_timeout: Option<Duration>,
    /// Retries on responses and on failures after the request was written.
    pub retry: Option<ProxyRetry>,
}

impl Route {
    /// Whether the request satisfies this route's condition.
    pub fn matches(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> bool {
        self.matcher.matches(method, uri, headers)
    }

    /// Picks a backend cluster by weight; `None` if there is none with weight.
    pub fn pick_backend(&self) -> Option<&Arc<Cluster>> {
        self.split.pick()
    }
}

/// A service as a destination: its routes in evaluation order.
#[derive(Debug)]
pub struct Destination {
    /// Service name (the `dst_service` label).
    pub name: Arc<str>,
    routes: Vec<Route>,
    /// The service's own cluster, used for opaque TCP where there is no request to route.
    pub default_cluster: Option<Arc<Cluster>>,
}

impl Destination {
    /// The first route whose condition the request satisfies.
    pub fn route(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(method, uri, headers))
    }
}

/// All destinations of a snapshot, by every name a client may use for them, and by the
/// addresses a transparent sidecar intercepts connections to.
#[derive(Debug, Default)]
pub struct RouteTable {
    by_name: HashMap<String, Arc<Destination>>,
    /// Names that are `host:port` (the ports of a service with several), by host then
    /// port, so that a request's authority is looked up without building a string.
    by_host_port: HashMap<String, HashMap<u16, Arc<Destination>>>,
    by_addr: HashMap<SocketAddr, Intercepted>,
}

impl RouteTable {
    /// Compiles a view; the error names the route config, route and field at fault.
    /// Endpoint and cluster state is taken from (and kept in) `registry`. The table by
    /// address is built only for a proxy `intercepting` connections (transparent mode):
    /// the others never look an address up, and it costs an entry per endpoint.
    pub fn build(
        view: &ProxyView,
        registry: &Registry,
        intercepting: bool,
    ) -> Result<Self, MatchError> {
        let clusters = Clusters::build(view, registry);
        let mut destinations: HashMap<&str, Arc<Destination>> = HashMap::new();
        for (config_name, routes) in &view.route_configs {
            let compiled = routes
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    compile(
                        r,
                        &clusters,
                        &format!("route_configs[{config_name}].routes[{i}]"),
                    )
                })
                .collect::<Result<_, _>>()?;
            let name = service_label(config_name);
            destinations.insert(
                config_name.as_str(),
                Arc::new(Destination {
                    name: name.into(),
                    routes: compiled,
                    default_cluster: clusters.0.get(config_name.as_str()).cloned(),
                }),
            );
        }
        let mut by_name = HashMap::with_capacity(view.listeners.len());
        let mut by_host_port: HashMap<String, HashMap<u16, Arc<Destination>>> = HashMap::new();
        for (listener, config_name) in &view.listeners {
            let dest = destinations
                .get(config_name.as_str())
                .ok_or_else(|| MatchError {
                    path: format!("listeners[{listener}]"),
                    reason: format!("unknown route config {config_name:?}"),
                })?;
            if let Some((host, port)) = split_port(listener) {
                by_host_port
                    .entry(host.to_string())
                    .or_default()
                    .insert(port, dest.clone());
            }
            by_name.insert(listener.clone(), dest.clone());
        }
        let by_addr = if intercepting {
            intercepted::build(view, &clusters, &destinations)?
        } else {
            HashMap::new()
        };
        Ok(RouteTable {
            by_name,
            by_host_port,
            by_addr,
        })
    }

    /// The destination a host name (port already stripped, lowercase) refers to.
    pub fn destination(&self, host: &str) -> Option<&Arc<Destination>> {
        self.by_name.get(host)
    }

    /// The destination of `host` (lowercase) called on `port`: that port's, for a service
    /// with a destination per port, else the host's.
    pub fn destination_at(&self, host: &str, port: Option<u16>) -> Option<&Arc<Destination>> {
        // Most meshes have no service with several ports: no second hash of the host.
        port.filter(|_| !self.by_host_port.is_empty())
            .and_then(|p| self.by_host_port.get(host)?.get(&p))
            .or_else(|| self.by_name.get(host))
    }

    /// What an intercepted connection to `addr` is for: a service's virtual address, or
    /// one endpoint of a cluster; `None`: not in the mesh.
    pub fn intercepted(&self, addr: &SocketAddr) -> Option<&Intercepted> {
        self.by_addr.get(addr)
    }
}

/// The view's clusters, compiled once and shared by every route that names them.
struct Clusters<'v>(HashMap<&'v str, Arc<Cluster>>);

impl<'v> Clusters<'v> {
    /// Every cluster of `view`, with the state `registry` keeps for it; clusters no
    /// longer configured are forgotten.
    fn build(view: &'v ProxyView, registry: &Registry) -> Self {
        let clusters: HashMap<&str, Arc<Cluster>> = view
            .clusters
            .iter()
            .map(|(name, c)| {
                let mut cluster = Cluster::new(
                    name,
                    service_label(name),
                    Protocol::from(c.protocol),
                    &c.endpoints,
                    c.policy,
                    registry.cluster(name),
                );
                cluster.tls = c
                    .tls
                    .as_ref()
                    .map(|t| crate::tls::expected_servers(&t.identities));
                (name.as_str(), Arc::new(cluster))
            })
            .collect();
        registry.retain(&clusters.keys().copied().collect::<HashSet<_>>());
        Clusters(clusters)
    }

    /// The cluster `name`, or an error at `path`.
    fn get(&self, name: &str, path: String) -> Result<Arc<Cluster>, MatchError> {
        self.0.get(name).cloned().ok_or_else(|| MatchError {
            path,
            reason: format!("unknown cluster {name:?}"),
        })
    }
}

/// Compiles one route found at `at`.
fn compile(r: &ProxyRoute, clusters: &Clusters<'_>, at: &str) -> Result<Route, MatchError> {
    let matcher = Matcher::compile(&r.matches, &format!("{at}.match"))?;
    let backends = r
        .clusters
        .iter()
        .enumerate()
        .map(|(j, cw)| {
            Ok((
                clusters.get(&cw.cluster, format!("{at}.clusters[{j}]"))?,
                cw.weight,
            ))
        })
        .collect::<Result<_, MatchError>>()?;
    let mirrors = r
        .mirrors
        .iter()
        .enumerate()
        .map(|(j, m)| {
            Ok((
                clusters.get(&m.cluster, format!("{at}.mirrors[{j}]"))?,
                m.fraction,
            ))
        })
        .collect::<Result<_, MatchError>>()?;
    let host_rewrite = r
        .host_rewrite
        .as_deref()
        .map(|h| {
            h.parse().map_err(|_| MatchError {
                path: format!("{at}.host_rewrite"),
                reason: format!("{h:?} is not a valid authority"),
            })
        })
        .transpose()?;
    Ok(Route {
        name: route_label(&r.name).into(),
        matcher,
        split: Split::new(backends),
        request_headers: HeaderEdits::compile(
            &r.request_headers,
            &format!("{at}.request_headers"),
        )?,
        response_headers: HeaderEdits::compile(
            &r.response_headers,
            &format!("{at}.response_headers"),
        )?,
        redirect: r
            .redirect
            .as_ref()
            .map(|rd| Redirect::compile(rd, &format!("{at}.redirect")))
            .transpose()?,
        host_rewrite,
        path_rewrite: r
            .path_rewrite
            .as_ref()
            .map(|p| PathEdit::compile(p, &format!("{at}.path_rewrite")))
            .transpose()?,
        mirrors,
        fault: r.fault.clone(),
        timeout: r.timeout,
        per_try_timeout: r.per_try_timeout,
        retry: r.retry.clone(),
    })
}

/// The `route` label of an xDS route name: matches of one rule
/// (`ns/route/rule-0/match-1`) share the rule's label, which keeps the label set bounded
/// by rules, not by matches.
fn route_label(name: &str) -> &str {
    match name.rsplit_once("/match-") {
        Some((rule, n)) if n.bytes().all(|b| b.is_ascii_digit()) => rule,
        _ => name,
    }
}

/// A name's `host` and `port` when it is `host:port`.
fn split_port(name: &str) -> Option<(&str, u16)> {
    let (host, port) = name.rsplit_once(':')?;
    Some((host, port.parse().ok()?))
}

/// The metric label for a route config or cluster: the service's short name (`reviews`
/// for `reviews.default.svc.cluster.local`, and for its port `...local:9080`), which keeps
/// label values few and readable.
fn service_label(config_name: &str) -> &str {
    let config_name = split_port(config_name).map_or(config_name, |(host, _)| host);
    match config_name.strip_suffix(".svc.cluster.local") {
        Some(short) => short.split('.').next().unwrap_or(short),
        None => config_name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tandem_xds::domain::{
        AppProtocol, ClusterWeight, PathMatch, ProxyCluster, ProxyRoute, RouteMatch,
    };

    fn view() -> ProxyView {
        let mut v = ProxyView::default();
        let cfg = "web.default.svc.cluster.local".to_string();
        for alias in ["web", "web.default", &cfg] {
            v.listeners.insert(alias.to_string(), cfg.clone());
        }
        for (name, port) in [("web-v1", 1), ("web-v2", 2)] {
            v.clusters.insert(
                format!("{name}.default.svc.cluster.local"),
                ProxyCluster {
                    protocol: AppProtocol::Http,
                    endpoints: vec![SocketAddr::from(([127, 0, 0, 1], port))],
                    ..Default::default()
                },
            );
        }
        v.route_configs.insert(
            cfg,
            vec![
                ProxyRoute {
                    name: "canary-header".into(),
                    matches: RouteMatch {
                        headers: vec![tandem_xds::domain::ValueMatch {
                            name: "x-canary".into(),
                            value: tandem_xds::domain::StringMatch::Exact("1".into()),
                        }],
                        ..Default::default()
                    },
                    clusters: vec![ClusterWeight {
                        cluster: "web-v2.default.svc.cluster.local".into(),
                        weight: 1,
                    }],
                    ..Default::default()
                },
                ProxyRoute {
                    name: "split".into(),
                    matches: RouteMatch {
                        path: PathMatch::Prefix("/".into()),
                        ..Default::default()
                    },
                    clusters: vec![
                        ClusterWeight {
                            cluster: "web-v1.default.svc.cluster.local".into(),
                            weight: 90,
                        },
                        ClusterWeight {
                            cluster: "web-v2.default.svc.cluster.local".into(),
                            weight: 10,
                        },
                    ],
                    ..Default::default()
                },
            ],
        );
        v
    }

    #[test]
    fn routes_by_alias_header_and_weight() {
        let table = RouteTable::build(&view(), &Registry::default(), false).unwrap();
        let dest = table.destination("web").unwrap();
        assert_eq!(&*dest.name, "web");
        assert!(table.destination("web.default.svc.cluster.local").is_some());
        let uri: Uri = "/".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-canary", "1".parse().unwrap());
        let r = dest.route(&Method::GET, &uri, &h).unwrap();
        assert_eq!(&*r.name, "canary-header");
        let r = dest.route(&Method::GET, &uri, &HeaderMap::new()).unwrap();
        assert_eq!(&*r.name, "split");
        let n = 20_000;
        let v2 = (0..n)
            .filter(|_| r.pick_backend().unwrap().name.starts_with("web-v2"))
            .count();
        let share = v2 as f64 / n as f64;
        assert!((0.08..0.12).contains(&share), "v2 share {share}");
    }

    #[test]
    fn a_port_of_a_service_with_several_is_its_own_destination() {
        let mut v = view();
        let grpc = "web.default.svc.cluster.local:9090".to_string();
        v.listeners.insert("web:9090".into(), grpc.clone());
        v.clusters.insert(
            grpc.clone(),
            ProxyCluster {
                protocol: AppProtocol::Http2,
                endpoints: vec![SocketAddr::from(([127, 0, 0, 1], 3))],
                ..Default::default()
            },
        );
        v.route_configs.insert(
            grpc.clone(),
            vec![ProxyRoute {
                name: "default".into(),
                clusters: vec![ClusterWeight {
                    cluster: grpc,
                    weight: 1,
                }],
                ..Default::default()
            }],
        );
        let table = RouteTable::build(&v, &Registry::default(), false).unwrap();
        let on = |port| table.destination_at("web", port).unwrap();
        let own = on(Some(9090)).default_cluster.as_ref().unwrap();
        assert_eq!(own.endpoints[0].addr.port(), 3);
        // Labelled with the service, not the port: metrics stay per service.
        assert_eq!(&*on(Some(9090)).name, "web");
        assert_eq!(&*own.label, "web");
        // Any other port, or none, is the bare name's.
        assert!(on(Some(80)).default_cluster.is_none());
        assert!(on(None).default_cluster.is_none());
        assert!(table.destination_at("web-v1", Some(9090)).is_none());
    }

    #[test]
    fn zero_weights_pick_nothing_and_unknown_clusters_are_errors() {
        let mut v = view();
        for routes in v.route_configs.values_mut() {
            for r in routes.iter_mut() {
                for c in r.clusters.iter_mut() {
                    c.weight = 0;
                }
            }
        }
        let table = RouteTable::build(&v, &Registry::default(), false).unwrap();
        let r = table
            .destination("web")
            .unwrap()
            .route(&Method::GET, &"/".parse().unwrap(), &HeaderMap::new())
            .unwrap();
        assert!(r.pick_backend().is_none());
        let mut v = view();
        v.clusters.clear();
        let e = RouteTable::build(&v, &Registry::default(), false).unwrap_err();
        assert!(
            e.path
                .starts_with("route_configs[web.default.svc.cluster.local].routes[0]"),
            "{e}"
        );
    }
}
