//! The routing table of one snapshot: which service a request is for, which of its routes
//! matches, which weighted backend cluster takes it, and which endpoint.
//!
//! Built from a [`ProxyView`] — decoded from xDS, or derived from the static config file —
//! and immutable afterwards, except for the balancing counters.

mod budget;
mod cluster;
mod endpoint;
mod filters;
mod limits;
mod matcher;

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method, Uri};
use tandem_xds::domain::{FaultInjection, Fraction, ProxyRetry, ProxyView};

pub use budget::Budget;
pub use cluster::{Cluster, ClusterState, Registry};
pub use endpoint::{now_nanos, EndpointState, InFlight, Outcome};
pub use filters::{HeaderEdits, PathEdit, Redirect};
pub use limits::{LimitState, Overflow, Permit};
pub use matcher::{MatchError, Matcher};

use crate::config::Protocol;

/// One compiled route: a condition, weighted clusters, and what to do on the way.
#[derive(Debug)]
pub struct Route {
    /// The `route` metric label: `namespace/name/rule-N` (matches of one rule share it).
    pub name: Arc<str>,
    matcher: Matcher,
    backends: Vec<(Arc<Cluster>, u32)>,
    total_weight: u64,
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
        if self.total_weight == 0 {
            return None;
        }
        if self.backends.len() == 1 {
            return Some(&self.backends[0].0);
        }
        let mut point = random_below(self.total_weight);
        for (cluster, weight) in &self.backends {
            let w = u64::from(*weight);
            if point < w {
                return Some(cluster);
            }
            point -= w;
        }
        None
    }
}

/// Whether a request falls in `fraction` (independently drawn each time).
pub fn sample(fraction: Fraction) -> bool {
    fraction >= Fraction::ALL || random_below(u64::from(Fraction::MILLION)) < u64::from(fraction.0)
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

/// All destinations of a snapshot, by every name a client may use for them.
#[derive(Debug, Default)]
pub struct RouteTable {
    by_name: HashMap<String, Arc<Destination>>,
}

impl RouteTable {
    /// Compiles a view; the error names the route config, route and field at fault.
    /// Endpoint and cluster state is taken from (and kept in) `registry`.
    pub fn build(view: &ProxyView, registry: &Registry) -> Result<Self, MatchError> {
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
                cluster.tls = c.tls.as_ref().map(|t| t.identity.as_str().into());
                (name.as_str(), Arc::new(cluster))
            })
            .collect();
        registry.retain(&clusters.keys().copied().collect::<HashSet<_>>());
        let cluster = |name: &str, path: String| {
            clusters.get(name).cloned().ok_or_else(|| MatchError {
                path,
                reason: format!("unknown cluster {name:?}"),
            })
        };
        let mut destinations: HashMap<&str, Arc<Destination>> = HashMap::new();
        for (config_name, routes) in &view.route_configs {
            let mut compiled = Vec::with_capacity(routes.len());
            for (i, r) in routes.iter().enumerate() {
                let at = format!("route_configs[{config_name}].routes[{i}]");
                let matcher = Matcher::compile(&r.matches, &format!("{at}.match"))?;
                let mut backends = Vec::with_capacity(r.clusters.len());
                for (j, cw) in r.clusters.iter().enumerate() {
                    backends.push((
                        cluster(&cw.cluster, format!("{at}.clusters[{j}]"))?,
                        cw.weight,
                    ));
                }
                let mirrors = r
                    .mirrors
                    .iter()
                    .enumerate()
                    .map(|(j, m)| {
                        Ok((
                            cluster(&m.cluster, format!("{at}.mirrors[{j}]"))?,
                            m.fraction,
                        ))
                    })
                    .collect::<Result<_, MatchError>>()?;
                let total_weight = backends.iter().map(|(_, w)| u64::from(*w)).sum();
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
                compiled.push(Route {
                    name: route_label(&r.name).into(),
                    matcher,
                    backends,
                    total_weight,
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
                });
            }
            let name = service_label(config_name);
            destinations.insert(
                config_name.as_str(),
                Arc::new(Destination {
                    name: name.into(),
                    routes: compiled,
                    default_cluster: clusters.get(config_name.as_str()).cloned(),
                }),
            );
        }
        let mut by_name = HashMap::with_capacity(view.listeners.len());
        for (listener, config_name) in &view.listeners {
            let dest = destinations
                .get(config_name.as_str())
                .ok_or_else(|| MatchError {
                    path: format!("listeners[{listener}]"),
                    reason: format!("unknown route config {config_name:?}"),
                })?;
            by_name.insert(listener.clone(), dest.clone());
        }
        Ok(RouteTable { by_name })
    }

    /// The destination a host name (port already stripped, lowercase) refers to.
    pub fn destination(&self, host: &str) -> Option<&Arc<Destination>> {
        self.by_name.get(host)
    }
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

/// The metric label for a route config: the service's short name (`reviews` for
/// `reviews.default.svc.cluster.local`), which keeps label values few and readable.
fn service_label(config_name: &str) -> &str {
    match config_name.strip_suffix(".svc.cluster.local") {
        Some(short) => short.split('.').next().unwrap_or(short),
        None => config_name,
    }
}

/// A fast per-thread pseudo-random number in `0..bound` (bound > 0): weighted splits need
/// good spread, not cryptographic quality, and must not contend across threads.
pub fn random_below(bound: u64) -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(seed());
    }
    STATE.with(|s| {
        // xorshift64*
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        // Multiply-shift maps to the range without modulo bias worth caring about.
        ((u128::from(r) * u128::from(bound)) >> 64) as u64
    })
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x9e37_79b9);
    let local = 0u8;
    // Mix in a stack address so threads started in the same nanosecond still differ.
    (t ^ (&local as *const u8 as u64).rotate_left(32)) | 1
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
        let table = RouteTable::build(&view(), &Registry::default()).unwrap();
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
    fn zero_weights_pick_nothing_and_unknown_clusters_are_errors() {
        let mut v = view();
        for routes in v.route_configs.values_mut() {
            for r in routes.iter_mut() {
                for c in r.clusters.iter_mut() {
                    c.weight = 0;
                }
            }
        }
        let table = RouteTable::build(&v, &Registry::default()).unwrap();
        let r = table
            .destination("web")
            .unwrap()
            .route(&Method::GET, &"/".parse().unwrap(), &HeaderMap::new())
            .unwrap();
        assert!(r.pick_backend().is_none());
        let mut v = view();
        v.clusters.clear();
        let e = RouteTable::build(&v, &Registry::default()).unwrap_err();
        assert!(
            e.path
                .starts_with("route_configs[web.default.svc.cluster.local].routes[0]"),
            "{e}"
        );
    }
}
