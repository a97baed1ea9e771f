//! Route matching micro-benchmark: the per-request cost of tandem-proxy's route table.
//!
//! Builds a `ProxyView` with one service, `bench`, whose route config has N routes of
//! realistic shape (exact and prefix paths, method, header and query matches, 10 % regex
//! paths) ending in a catch-all 90/10 split, compiles it with `RouteTable::build` as the
//! proxy does for every snapshot, and measures what the proxy does per request:
//! `Destination::route` + `Route::pick_backend` + `Cluster::pick(None)`.
//!
//! - `route/last/N`: worst case, the request matches only the last route (the split), so
//!   every route's condition is evaluated and fails.
//! - `route/middle/N`: the request (with `x-canary: 1`) matches route N/2, a header opt-in:
//!   on average a request that matches a uniformly chosen route scans half the table.
//! - `parts/*`: the pieces alone: the 90/10 weighted pick, P2C over three endpoints, the
//!   destination lookup by `Host`.
//! - `build/N`: compiling the table (once per config push, not per request).
//!
//! Run: `benches/routing.sh` or `cargo bench -p tandem-benches --bench route_match`.
//! See docs/benchmarks.md, "Routing overhead".

// Benchmark code: a broken fixture should stop the run loudly.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion};
use http::{HeaderMap, HeaderValue, Method, Uri};
use tandem_proxy::outbound::cluster::Registry;
use tandem_proxy::outbound::route::RouteTable;
use tandem_xds::domain::{
    AppProtocol, ClusterWeight, PathMatch, ProxyCluster, ProxyRoute, ProxyView, RouteMatch,
    StringMatch, ValueMatch,
};

/// Route table sizes measured (20 is the end-to-end benchmark's table).
const SIZES: [usize; 4] = [10, 20, 100, 1000];

const CONFIG: &str = "bench.default.svc.cluster.local";
const V1: &str = "bench-v1.default.svc.cluster.local";
const V2: &str = "bench-v2.default.svc.cluster.local";

fn one(cluster: &str) -> Vec<ClusterWeight> {
    vec![ClusterWeight {
        cluster: cluster.into(),
        weight: 1,
    }]
}

fn value(name: &str, v: String) -> ValueMatch {
    ValueMatch {
        name: name.into(),
        value: StringMatch::Exact(v),
    }
}

/// Route `i` of the table: a condition the benchmark's requests do not satisfy, of one of
/// the shapes real route tables are made of. Several pass the path test and fail later
/// (on the header or query), which is the costlier kind of miss.
fn filler(i: usize) -> ProxyRoute {
    let matches = match i % 10 {
        0 | 5 => RouteMatch {
            path: PathMatch::Exact(format!("/svc{i}/health")),
            ..Default::default()
        },
        1 | 6 => RouteMatch {
            path: PathMatch::Prefix(format!("/svc{i}")),
            method: Some("GET".into()),
            ..Default::default()
        },
        2 | 7 => RouteMatch {
            path: PathMatch::Prefix("/api/users".into()),
            headers: vec![value("x-tenant", format!("tenant-{i}"))],
            ..Default::default()
        },
        3 | 8 => RouteMatch {
            path: PathMatch::Prefix("/api".into()),
            query_params: vec![value("version", format!("v{i}"))],
            ..Default::default()
        },
        4 => RouteMatch {
            path: PathMatch::Prefix(format!("/svc{i}/v2")),
            method: Some("POST".into()),
            headers: vec![value("content-type", "application/grpc".into())],
            ..Default::default()
        },
        _ => RouteMatch {
            path: PathMatch::Regex(format!("/svc{i}/items/[0-9]+")),
            ..Default::default()
        },
    };
    ProxyRoute {
        name: format!("default/bench/rule-{i}"),
        matches,
        clusters: one(if i.is_multiple_of(2) { V1 } else { V2 }),
        ..Default::default()
    }
}

/// A service `bench` with `n` routes: fillers, a header opt-in at n/2 (`x-canary: 1` on
/// `/api/users`), and a catch-all 90/10 split last.
fn view(n: usize) -> ProxyView {
    let mut v = ProxyView::default();
    for alias in ["bench", "bench.default", "bench.default.svc", CONFIG] {
        v.listeners.insert(alias.into(), CONFIG.into());
    }
    for (name, count) in [(V1, 3u16), (V2, 2u16), (CONFIG, 1u16)] {
        let base = if name == V2 { 20_000 } else { 10_000 };
        v.clusters.insert(
            name.into(),
            ProxyCluster {
                protocol: AppProtocol::Detect,
                endpoints: (0..count)
                    .map(|k| SocketAddr::from(([127, 0, 0, 1], base + k)))
                    .collect(),
                ..Default::default()
            },
        );
    }
    let mut routes: Vec<ProxyRoute> = (0..n - 1).map(filler).collect();
    routes[n / 2] = ProxyRoute {
        name: format!("default/bench/rule-{}", n / 2),
        matches: RouteMatch {
            path: PathMatch::Prefix("/api/users".into()),
            headers: vec![value("x-canary", "1".into())],
            ..Default::default()
        },
        clusters: one(V2),
        ..Default::default()
    };
    routes.push(ProxyRoute {
        name: format!("default/bench/rule-{}", n - 1),
        matches: RouteMatch::default(),
        clusters: vec![
            ClusterWeight {
                cluster: V1.into(),
                weight: 90,
            },
            ClusterWeight {
                cluster: V2.into(),
                weight: 10,
            },
        ],
        ..Default::default()
    });
    v.route_configs.insert(CONFIG.into(), routes);
    v
}

/// A typical client request's method, target and headers (as the proxy sees them after
/// parsing); `canary` adds the opt-in header.
fn request(canary: bool) -> (Method, Uri, HeaderMap) {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "bench"),
        ("user-agent", "bench-client/1.0"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip"),
        ("x-request-id", "9f0c2a4e-5b1d-4c3a-8e7f-0a1b2c3d4e5f"),
        ("x-tenant", "acme"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    if canary {
        h.insert("x-canary", HeaderValue::from_static("1"));
    }
    (Method::GET, "/api/users/42?page=2".parse().unwrap(), h)
}

fn bench_route(c: &mut Criterion) {
    let mut g = c.benchmark_group("route");
    for n in SIZES {
        let table = RouteTable::build(&view(n), &Registry::default(), false).expect("route table");
        let dest = table.destination("bench").expect("destination");
        for (case, canary, want) in [("last", false, n - 1), ("middle", true, n / 2)] {
            let (method, uri, headers) = request(canary);
            let hit = dest.route(&method, &uri, &headers).expect("a route");
            assert_eq!(
                &*hit.name,
                format!("default/bench/rule-{want}"),
                "{case}/{n}"
            );
            g.bench_with_input(BenchmarkId::new(case, n), &n, |b, _| {
                b.iter(|| {
                    let route = dest
                        .route(black_box(&method), black_box(&uri), black_box(&headers))
                        .expect("route");
                    let cluster = route.pick_backend().expect("backend");
                    black_box(cluster.pick(None).expect("endpoint").addr)
                })
            });
        }
    }
    g.finish();
}

fn bench_parts(c: &mut Criterion) {
    let mut g = c.benchmark_group("parts");
    let table = RouteTable::build(&view(20), &Registry::default(), false).expect("route table");
    let dest = table.destination("bench").expect("destination");
    let (method, uri, headers) = request(false);
    let split = dest.route(&method, &uri, &headers).expect("split route");
    let v2 = (0..100_000)
        .filter(|_| split.pick_backend().is_some_and(|c| &*c.name == V2))
        .count();
    assert!(
        (8_000..12_000).contains(&v2),
        "90/10 split gave {v2} of 100000 to v2"
    );
    g.bench_function("pick_backend_90_10", |b| {
        b.iter(|| black_box(split.pick_backend().expect("backend")))
    });
    let v1 = (0..64)
        .filter_map(|_| split.pick_backend())
        .find(|c| &*c.name == V1)
        .expect("bench-v1");
    g.bench_function("cluster_pick_p2c_3_endpoints", |b| {
        b.iter(|| black_box(v1.pick(None).expect("endpoint").addr))
    });
    g.bench_function("destination_by_host", |b| {
        b.iter(|| black_box(table.destination(black_box("bench")).is_some()))
    });
    g.finish();
}

fn bench_build(c: &mut Criterion) {
    let mut g = c.benchmark_group("build");
    for n in SIZES {
        let v = view(n);
        let registry = Registry::default();
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| black_box(RouteTable::build(&v, &registry, false).expect("route table")))
        });
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench_route(&mut c);
    bench_parts(&mut c);
    bench_build(&mut c);
    c.final_summary();
}
