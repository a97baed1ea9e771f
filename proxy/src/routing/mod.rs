//! The routing table of one snapshot: which service a request is for, which of its routes
//! matches, which weighted backend cluster takes it, and which endpoint.
//!
//! Built from a [`ProxyView`] — decoded from xDS, or derived from the static config file —
//! and immutable afterwards, except for the balancing counters.

mod matcher;

use std::cell::Cell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::{HeaderMap, Method, Uri};
use tandem_xds::domain::ProxyView;

pub use matcher::{MatchError, Matcher};

use crate::config::Protocol;

/// A set of endpoints traffic can be balanced over.
#[derive(Debug)]
pub struct Cluster {
    /// Cluster name (the `backend` label).
    pub name: Arc<str>,
    /// Upstream protocol.
    pub protocol: Protocol,
    /// Endpoints.
    pub endpoints: Vec<SocketAddr>,
    next: AtomicUsize,
}

impl Cluster {
    /// A cluster over `endpoints`.
    pub fn new(name: &str, protocol: Protocol, endpoints: Vec<SocketAddr>) -> Self {
        Cluster {
            name: name.into(),
            protocol,
            endpoints,
            next: AtomicUsize::new(0),
        }
    }

    /// Picks the next endpoint in round-robin order; `None` when there are none.
    ///
    /// Load-aware balancing (P2C over peak EWMA) replaces this with traffic management;
    /// round robin is the honest baseline until endpoint load is measured.
    pub fn pick(&self) -> Option<SocketAddr> {
        match self.endpoints.len() {
            0 => None,
            1 => Some(self.endpoints[0]),
            n => Some(self.endpoints[self.next.fetch_add(1, Ordering::Relaxed) % n]),
        }
    }
}

/// One compiled route: a condition and weighted clusters.
#[derive(Debug)]
pub struct Route {
    /// Route name (for logs and, later, the `route` label).
    pub name: Arc<str>,
    matcher: Matcher,
    backends: Vec<(Arc<Cluster>, u32)>,
    total_weight: u64,
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
    pub fn build(view: &ProxyView) -> Result<Self, MatchError> {
        let clusters: HashMap<&str, Arc<Cluster>> = view
            .clusters
            .iter()
            .map(|(name, c)| {
                let protocol = Protocol::from(c.protocol);
                (
                    name.as_str(),
                    Arc::new(Cluster::new(name, protocol, c.endpoints.clone())),
                )
            })
            .collect();
        let mut destinations: HashMap<&str, Arc<Destination>> = HashMap::new();
        for (config_name, routes) in &view.route_configs {
            let mut compiled = Vec::with_capacity(routes.len());
            for (i, r) in routes.iter().enumerate() {
                let at = format!("route_configs[{config_name}].routes[{i}]");
                let matcher = Matcher::compile(&r.matches, &format!("{at}.match"))?;
                let mut backends = Vec::with_capacity(r.clusters.len());
                for (j, cw) in r.clusters.iter().enumerate() {
                    let cluster = clusters
                        .get(cw.cluster.as_str())
                        .ok_or_else(|| MatchError {
                            path: format!("{at}.clusters[{j}]"),
                            reason: format!("unknown cluster {:?}", cw.cluster),
                        })?;
                    backends.push((cluster.clone(), cw.weight));
                }
                let total_weight = backends.iter().map(|(_, w)| u64::from(*w)).sum();
                compiled.push(Route {
                    name: r.name.as_str().into(),
                    matcher,
                    backends,
                    total_weight,
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
        let table = RouteTable::build(&view()).unwrap();
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
        let table = RouteTable::build(&v).unwrap();
        let r = table
            .destination("web")
            .unwrap()
            .route(&Method::GET, &"/".parse().unwrap(), &HeaderMap::new())
            .unwrap();
        assert!(r.pick_backend().is_none());
        let mut v = view();
        v.clusters.clear();
        let e = RouteTable::build(&v).unwrap_err();
        assert!(
            e.path
                .starts_with("route_configs[web.default.svc.cluster.local].routes[0]"),
            "{e}"
        );
    }
}
