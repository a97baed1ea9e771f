//! The proxies' own metrics, as the control plane sees them: a background task scrapes
//! `http://ADMIN/metrics` of every connected proxy (admin address from the node metadata,
//! see [`crate::proxies`]) every few seconds and keeps the last two minutes of
//! per-backend counters; [`Telemetry::stats`] turns them into rates over a window.
//!
//! Why a background scraper rather than scraping on demand: a rate needs two readings some
//! seconds apart, and `tandemctl canary status` should answer at once. Only the series the
//! control plane uses are kept (outbound requests and latency buckets per `backend`), so
//! memory is bounded by proxies × backends × buckets, not by what proxies export.
//!
//! Rates per proxy come from its newest reading and the newest one at least a window
//! older (or its oldest, when it has not been watched that long); a counter that went
//! down means the proxy restarted, and its new value is the increase. Rates add up over
//! proxies; success rate and p99 come from the summed increases.
//!
//! The same scrape also keeps each proxy's identity expiry gauges
//! ([`IDENTITY_CERT_EXPIRY`], [`TRUST_BUNDLE_EXPIRY`]) for `tandemctl check`.

pub mod prometheus;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::proxies::ProxyStatus;
use crate::store::Store;

/// The proxies' gauge: when the workload certificate expires (Unix seconds).
pub const IDENTITY_CERT_EXPIRY: &str = "tandem_identity_cert_expiry_timestamp_seconds";
/// The proxies' gauge: when the first root of their trust bundle expires (Unix seconds).
pub const TRUST_BUNDLE_EXPIRY: &str = "tandem_trust_bundle_expiry_timestamp_seconds";

/// A proxy's identity expiry gauges as last scraped (`None`: not exported, e.g. a proxy
/// without identity, or not scraped yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IdentityExpiry {
    /// Workload certificate not-after, Unix seconds.
    pub cert_expiry: Option<u64>,
    /// Earliest trust bundle root not-after, Unix seconds.
    pub bundle_expiry: Option<u64>,
}

/// One connected proxy with its identity expiry, for `GET /v1/ca/proxies`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyIdentity {
    /// xDS node id.
    pub node: String,
    /// Its service, if known.
    pub service: Option<String>,
    /// Whether its metrics were scraped at least once since it connected.
    pub scraped: bool,
    /// The gauges.
    #[serde(flatten)]
    pub expiry: IdentityExpiry,
}

/// Picks the identity gauges out of a scrape; a gauge with several series (labels) counts
/// by its earliest value, the one that matters for expiry.
pub fn extract_identity(samples: &[prometheus::Sample]) -> IdentityExpiry {
    let earliest = |name: &str| {
        samples
            .iter()
            .filter(|s| s.name == name && s.value.is_finite() && s.value > 0.0)
            .map(|s| s.value as u64)
            .min()
    };
    IdentityExpiry {
        cert_expiry: earliest(IDENTITY_CERT_EXPIRY),
        bundle_expiry: earliest(TRUST_BUNDLE_EXPIRY),
    }
}

/// How long readings are kept.
pub const RETENTION: Duration = Duration::from_secs(120);
/// The default window of [`Telemetry::stats`].
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30);
/// The default time between two scrapes.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// Longest wait for one proxy's `/metrics`: a slow proxy must not hold up the round.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest `/metrics` body read.
const MAX_BODY: usize = 8 << 20;
/// Scrapes in flight at once.
const MAX_CONCURRENT: usize = 16;
/// Series kept per reading: a bound against a proxy exporting unbounded label values.
const MAX_SERIES: usize = 4096;

/// The requests counter the proxies export.
pub const REQUESTS_METRIC: &str = "tandem_requests_total";
/// The latency histogram's buckets.
pub const DURATION_BUCKET_METRIC: &str = "tandem_request_duration_seconds_bucket";
/// The proxies' open client connections gauge.
pub const OPEN_CONNECTIONS_METRIC: &str = "tandem_tcp_connections_open";

/// Why a scrape failed.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// Connect, HTTP or body error.
    #[error("GET {0}: {1}")]
    Http(String, String),
    /// No answer within the timeout.
    #[error("GET {0}: no answer within {1:?}")]
    Timeout(String, Duration),
    /// A non-200 answer.
    #[error("GET {0}: HTTP {1}")]
    Status(String, u16),
    /// The body is not exposition format.
    #[error("GET {0}: {1}")]
    Parse(String, prometheus::ParseError),
}

/// One backend's counters in one reading, summed over routes and callers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackendCounts {
    /// Requests.
    pub requests: f64,
    /// Requests answered 5xx.
    pub errors: f64,
    /// Latency histogram: (upper bound in seconds, cumulative count), by upper bound.
    pub buckets: Vec<(f64, f64)>,
}

impl BackendCounts {
    fn add_bucket(&mut self, le: f64, count: f64) {
        match self.buckets.iter_mut().find(|(b, _)| *b == le) {
            Some((_, c)) => *c += count,
            None => {
                self.buckets.push((le, count));
                self.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
        }
    }

    /// `self - earlier`, treating a counter that went down as reset (the proxy restarted):
    /// then the whole current value is the increase.
    fn since(&self, earlier: Option<&BackendCounts>) -> BackendCounts {
        let Some(e) = earlier else {
            return self.clone();
        };
        if self.requests < e.requests {
            return self.clone();
        }
        let buckets = self
            .buckets
            .iter()
            .map(|(le, c)| {
                let before = e
                    .buckets
                    .iter()
                    .find(|(b, _)| b == le)
                    .map_or(0.0, |(_, c)| *c);
                (*le, (c - before).max(0.0))
            })
            .collect();
        BackendCounts {
            requests: self.requests - e.requests,
            errors: (self.errors - e.errors).max(0.0),
            buckets,
        }
    }

    fn add(&mut self, other: &BackendCounts) {
        self.requests += other.requests;
        self.errors += other.errors;
        for (le, c) in &other.buckets {
            self.add_bucket(*le, *c);
        }
    }
}

/// Where a proxy's outbound requests went: the service called, the route that matched,
/// the backend that answered (the proxies' `dst_service`, `route` and `backend` labels),
/// and who called (`src_service`).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    /// The calling service: on outbound series, the proxy's own service (empty when the
    /// proxy exports none).
    pub caller: String,
    /// The service called.
    pub service: String,
    /// The route (`namespace/name/rule-N`), empty when none matched.
    pub route: String,
    /// The backend service.
    pub backend: String,
}

/// A proxy's open client connections, as its `tandem_tcp_connections_open` says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct OpenConnections {
    /// Connections its service's callers hold to it.
    pub inbound: f64,
    /// Connections its app holds to it, to call others.
    pub outbound: f64,
}

/// One scrape of one proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// When it was taken.
    pub at: Instant,
    /// Counters per (service, route, backend) of its outbound requests.
    pub series: BTreeMap<SeriesKey, BackendCounts>,
    /// Its open client connections.
    pub open: OpenConnections,
}

/// How [`Telemetry::stats_by`] groups the series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// By the service called.
    Service,
    /// By route.
    Route,
    /// By backend service.
    Backend,
}

impl Group {
    fn key(self, k: &SeriesKey) -> &str {
        match self {
            Group::Service => &k.service,
            Group::Route => &k.route,
            Group::Backend => &k.backend,
        }
    }
}

/// The open-connection gauges of a scrape.
pub fn extract_open(samples: &[prometheus::Sample]) -> OpenConnections {
    let mut open = OpenConnections::default();
    for s in samples
        .iter()
        .filter(|s| s.name == OPEN_CONNECTIONS_METRIC && s.value.is_finite())
    {
        match s.label("direction") {
            Some("inbound") => open.inbound += s.value,
            Some("outbound") => open.outbound += s.value,
            _ => {}
        }
    }
    open
}

/// Picks the series the control plane uses out of a scrape: outbound requests and latency
/// buckets (an empty `backend` included), summed per (caller, service, route, backend) over
/// codes and TLS. The caller adds no series in practice: a proxy's outbound series all
/// carry its own service.
pub fn extract(samples: &[prometheus::Sample]) -> BTreeMap<SeriesKey, BackendCounts> {
    let mut out: BTreeMap<SeriesKey, BackendCounts> = BTreeMap::new();
    for s in samples {
        let is_requests = s.name == REQUESTS_METRIC;
        if !is_requests && s.name != DURATION_BUCKET_METRIC {
            continue;
        }
        if s.label("direction") != Some("outbound") || !s.value.is_finite() {
            continue;
        }
        // A request the proxy answered before picking a backend (an injected fault, no
        // route) has an empty `backend`: it still counts for its service.
        let Some(backend) = s.label("backend") else {
            continue;
        };
        let key = SeriesKey {
            caller: s.label("src_service").unwrap_or_default().to_string(),
            service: s.label("dst_service").unwrap_or_default().to_string(),
            route: s.label("route").unwrap_or_default().to_string(),
            backend: backend.to_string(),
        };
        if !out.contains_key(&key) && out.len() >= MAX_SERIES {
            continue;
        }
        let entry = out.entry(key).or_default();
        if is_requests {
            entry.requests += s.value;
            if s.label("code").is_some_and(|c| c.starts_with('5')) {
                entry.errors += s.value;
            }
        } else if let Some(le) = s.label("le").and_then(parse_le) {
            entry.add_bucket(le, s.value);
        }
    }
    out
}

fn parse_le(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        _ => text.parse().ok(),
    }
}

/// One backend over a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BackendStats {
    /// Requests per second, summed over proxies.
    pub requests_per_second: f64,
    /// Requests in the window.
    pub requests: f64,
    /// Share of requests not answered 5xx (0..=1); `None` without requests.
    pub success_rate: Option<f64>,
    /// 99th percentile latency in seconds, interpolated within its bucket; `None` without
    /// requests.
    pub p99_seconds: Option<f64>,
    /// Median latency in seconds, likewise.
    pub p50_seconds: Option<f64>,
    /// 95th percentile latency in seconds, likewise.
    pub p95_seconds: Option<f64>,
}

/// What [`Telemetry::stats`] reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WindowStats {
    /// Proxies with an admin address (being scraped).
    pub proxies_scraped: usize,
    /// Proxies with at least two readings (contributing rates).
    pub proxies_reporting: usize,
    /// The window asked for, in seconds.
    pub window_seconds: f64,
    /// Per backend.
    pub backends: BTreeMap<String, BackendStats>,
}

/// Increases per series and the seconds they span, for one proxy's readings over
/// `window` (ending at its newest reading). `None` with fewer than two readings.
fn increase(
    readings: &VecDeque<Reading>,
    window: Duration,
) -> Option<(f64, BTreeMap<SeriesKey, BackendCounts>)> {
    let newest = readings.back()?;
    let cutoff = newest.at.checked_sub(window);
    let base = readings
        .iter()
        .rev()
        .find(|r| cutoff.is_some_and(|c| r.at <= c))
        .or_else(|| readings.front())?;
    let secs = newest.at.duration_since(base.at).as_secs_f64();
    if secs <= 0.0 {
        return None;
    }
    let deltas = newest
        .series
        .iter()
        .map(|(key, counts)| (key.clone(), counts.since(base.series.get(key))))
        .collect();
    Some((secs, deltas))
}

/// The 99th percentile from cumulative bucket counts, interpolated linearly within the
/// bucket that holds it (as Prometheus' `histogram_quantile`); when that is the `+Inf`
/// bucket, the largest finite bound.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (le, count) in buckets {
        if *count >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            if *count <= below {
                return Some(*le);
            }
            return Some(lower + (le - lower) * (rank - below) / (count - below));
        }
        lower = *le;
        below = *count;
    }
    Some(lower)
}

/// Combines the proxies' readings into per-backend stats over `window`.
pub fn combine<'a>(
    proxies: impl Iterator<Item = &'a VecDeque<Reading>>,
    window: Duration,
) -> WindowStats {
    combine_by(proxies, window, Group::Backend)
}

/// Combines the proxies' readings into stats over `window`, per `group` (the map
/// [`WindowStats::backends`] is then keyed by service, route or backend).
pub fn combine_by<'a>(
    proxies: impl Iterator<Item = &'a VecDeque<Reading>>,
    window: Duration,
    group: Group,
) -> WindowStats {
    let (proxies_scraped, proxies_reporting, mut backends) =
        combine_keyed(proxies, window, |k| group.key(k).to_string());
    // Requests answered before a route or backend was picked have none to be filed under.
    backends.retain(|name, _| !name.is_empty());
    WindowStats {
        proxies_scraped,
        proxies_reporting,
        window_seconds: window.as_secs_f64(),
        backends,
    }
}

/// Who calls whom over `window`: stats per (caller, service called), from the callers'
/// outbound series. A caller whose proxy exports no `src_service` is the empty name.
pub fn combine_edges<'a>(
    proxies: impl Iterator<Item = &'a VecDeque<Reading>>,
    window: Duration,
) -> BTreeMap<(String, String), BackendStats> {
    combine_keyed(proxies, window, |k| (k.caller.clone(), k.service.clone())).2
}

/// Sums the proxies' increases over `window` per `key` of their series: (proxies scraped,
/// proxies reporting, stats per key).
fn combine_keyed<'a, K: Ord + Clone>(
    proxies: impl Iterator<Item = &'a VecDeque<Reading>>,
    window: Duration,
    key: impl Fn(&SeriesKey) -> K,
) -> (usize, usize, BTreeMap<K, BackendStats>) {
    let (mut scraped, mut reporting) = (0, 0);
    let mut stats: BTreeMap<K, BackendStats> = BTreeMap::new();
    let mut totals: BTreeMap<K, BackendCounts> = BTreeMap::new();
    for readings in proxies {
        scraped += 1;
        let Some((secs, deltas)) = increase(readings, window) else {
            continue;
        };
        reporting += 1;
        for (series, d) in deltas {
            let k = key(&series);
            stats.entry(k.clone()).or_default().requests_per_second += d.requests / secs;
            totals.entry(k).or_default().add(&d);
        }
    }
    for (k, t) in totals {
        let s = stats.entry(k).or_default();
        s.requests = t.requests;
        if t.requests > 0.0 {
            s.success_rate = Some(1.0 - t.errors / t.requests);
            s.p50_seconds = quantile(0.5, &t.buckets);
            s.p95_seconds = quantile(0.95, &t.buckets);
            s.p99_seconds = quantile(0.99, &t.buckets);
        }
    }
    (scraped, reporting, stats)
}

/// The time between two scrapes while [`Telemetry::hurry`] was called recently.
pub const FAST_INTERVAL: Duration = Duration::from_secs(1);
/// How long one [`Telemetry::hurry`] keeps the scraper fast.
const HURRY_FOR: Duration = Duration::from_secs(5);

/// The readings of every scraped proxy. Share it as `Arc<Telemetry>`.
#[derive(Debug, Default)]
pub struct Telemetry {
    proxies: Mutex<BTreeMap<String, VecDeque<Reading>>>,
    identity: Mutex<BTreeMap<String, IdentityExpiry>>,
    /// Until when the scraper runs at [`FAST_INTERVAL`].
    fast_until: Mutex<Option<Instant>>,
    /// Wakes a scraper sleeping its slow interval when [`Telemetry::hurry`] is called.
    hurried: tokio::sync::Notify,
}

impl Telemetry {
    /// Asks for scrapes every [`FAST_INTERVAL`] for the next few seconds (a guarded
    /// canary is being judged).
    pub fn hurry(&self) {
        let was_fast = match self.fast_until.lock() {
            Ok(mut until) => {
                let now = Instant::now();
                let was = until.is_some_and(|u| now < u);
                *until = Some(now + HURRY_FOR);
                was
            }
            Err(_) => true,
        };
        if !was_fast {
            // A scraper asleep for its slow interval reads at once.
            self.hurried.notify_one();
        }
    }

    /// The wait before the next scrape: `interval`, or [`FAST_INTERVAL`] when hurried.
    fn next_wait(&self, interval: Duration) -> Duration {
        let fast = self
            .fast_until
            .lock()
            .ok()
            .and_then(|u| *u)
            .is_some_and(|u| Instant::now() < u);
        if fast {
            interval.min(FAST_INTERVAL)
        } else {
            interval
        }
    }

    /// Per-backend stats over `window`, from the readings kept.
    pub fn stats(&self, window: Duration) -> WindowStats {
        self.stats_by(window, Group::Backend)
    }

    /// Stats over `window` per service, route or backend.
    pub fn stats_by(&self, window: Duration, group: Group) -> WindowStats {
        match self.proxies.lock() {
            Ok(map) => combine_by(map.values(), window, group),
            Err(_) => WindowStats::default(),
        }
    }

    /// Who calls whom over `window`: per (caller, service called), from the readings kept.
    pub fn edges(&self, window: Duration) -> BTreeMap<(String, String), BackendStats> {
        match self.proxies.lock() {
            Ok(map) => combine_edges(map.values(), window),
            Err(_) => BTreeMap::new(),
        }
    }

    /// Each scraped proxy's open connections, from its newest reading.
    pub fn open_connections(&self) -> BTreeMap<String, OpenConnections> {
        match self.proxies.lock() {
            Ok(map) => map
                .iter()
                .filter_map(|(node, r)| Some((node.clone(), r.back()?.open)))
                .collect(),
            Err(_) => BTreeMap::new(),
        }
    }

    /// Records a reading of `node`, dropping what is older than [`RETENTION`].
    pub fn record(&self, node: &str, reading: Reading) {
        if let Ok(mut map) = self.proxies.lock() {
            let list = map.entry(node.to_string()).or_default();
            let cutoff = reading.at.checked_sub(RETENTION);
            list.push_back(reading);
            while list
                .front()
                .is_some_and(|r| cutoff.is_some_and(|c| r.at < c))
            {
                list.pop_front();
            }
        }
    }

    /// Forgets every proxy not in `nodes` (disconnected).
    pub fn retain(&self, nodes: &[String]) {
        if let Ok(mut map) = self.proxies.lock() {
            map.retain(|n, _| nodes.contains(n));
        }
        if let Ok(mut map) = self.identity.lock() {
            map.retain(|n, _| nodes.contains(n));
        }
    }

    /// Records `node`'s identity gauges from its latest scrape.
    pub fn record_identity(&self, node: &str, expiry: IdentityExpiry) {
        if let Ok(mut map) = self.identity.lock() {
            map.insert(node.to_string(), expiry);
        }
    }

    /// Every proxy of `proxies` with its identity gauges as last scraped.
    pub fn identities(&self, proxies: &[ProxyStatus]) -> Vec<ProxyIdentity> {
        let map = match self.identity.lock() {
            Ok(map) => map.clone(),
            Err(_) => BTreeMap::new(),
        };
        proxies
            .iter()
            .map(|p| ProxyIdentity {
                node: p.node.clone(),
                service: p.service.clone(),
                scraped: map.contains_key(&p.node),
                expiry: map.get(&p.node).copied().unwrap_or_default(),
            })
            .collect()
    }
}

/// Scrapes every connected proxy with an admin address every `interval` (every
/// [`FAST_INTERVAL`] while hurried), forever.
pub async fn run_scraper(telemetry: Arc<Telemetry>, store: Arc<Store>, interval: Duration) {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let timeout = SCRAPE_TIMEOUT.min(interval);
    let mut next = Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = telemetry.hurried.notified() => {}
        }
        // The pace is read every round: a guarded canary asks for faster readings.
        next = Instant::now() + telemetry.next_wait(interval);
        let targets: Vec<(String, SocketAddr)> = store
            .proxies()
            .list()
            .into_iter()
            .filter_map(|p| Some((p.node, p.admin_addr?)))
            .collect();
        let nodes: Vec<String> = targets.iter().map(|(n, _)| n.clone()).collect();
        let mut pending = targets.into_iter();
        let mut running = JoinSet::new();
        loop {
            while running.len() < MAX_CONCURRENT {
                let Some((node, addr)) = pending.next() else {
                    break;
                };
                let client = client.clone();
                running.spawn(async move {
                    let result = scrape(&client, addr, timeout).await;
                    (node, result)
                });
            }
            let Some(done) = running.join_next().await else {
                break;
            };
            match done {
                Ok((node, Ok((series, open, identity)))) => {
                    telemetry.record(
                        &node,
                        Reading {
                            at: Instant::now(),
                            series,
                            open,
                        },
                    );
                    telemetry.record_identity(&node, identity);
                }
                Ok((node, Err(e))) => tracing::debug!(%node, error = %e, "metrics scrape failed"),
                Err(e) => tracing::warn!(error = %e, "metrics scrape task failed"),
            }
        }
        telemetry.retain(&nodes);
    }
}

/// One `GET http://ADDR/metrics`, parsed and reduced to what the control plane keeps:
/// per-backend counters and the identity expiry gauges.
pub async fn scrape(
    client: &Client<HttpConnector, Empty<Bytes>>,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<
    (
        BTreeMap<SeriesKey, BackendCounts>,
        OpenConnections,
        IdentityExpiry,
    ),
    ScrapeError,
> {
    let url = format!("http://{addr}/metrics");
    let fetch = async {
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| ScrapeError::Http(url.clone(), e.to_string()))?;
        let req = Request::get(uri)
            .body(Empty::new())
            .map_err(|e| ScrapeError::Http(url.clone(), e.to_string()))?;
        let resp = client
            .request(req)
            .await
            .map_err(|e| ScrapeError::Http(url.clone(), e.to_string()))?;
        if resp.status() != http::StatusCode::OK {
            return Err(ScrapeError::Status(url.clone(), resp.status().as_u16()));
        }
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| ScrapeError::Http(url.clone(), e.to_string()))?
            .to_bytes();
        Ok(body)
    };
    let body = tokio::time::timeout(timeout, fetch)
        .await
        .map_err(|_| ScrapeError::Timeout(url.clone(), timeout))??;
    let text = String::from_utf8_lossy(&body);
    let samples = prometheus::parse(&text).map_err(|e| ScrapeError::Parse(url.clone(), e))?;
    Ok((
        extract(&samples),
        extract_open(&samples),
        extract_identity(&samples),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_gauges_take_the_earliest_series() {
        let text = "# TYPE tandem_identity_cert_expiry_timestamp_seconds gauge\n\
            tandem_identity_cert_expiry_timestamp_seconds 1800003600\n\
            tandem_trust_bundle_expiry_timestamp_seconds{root=\"a\"} 2000000000\n\
            tandem_trust_bundle_expiry_timestamp_seconds{root=\"b\"} 1900000000\n";
        let got = extract_identity(&prometheus::parse(text).unwrap());
        assert_eq!(got.cert_expiry, Some(1_800_003_600));
        assert_eq!(got.bundle_expiry, Some(1_900_000_000));
        assert_eq!(extract_identity(&[]), IdentityExpiry::default());
    }

    fn counts(requests: f64, errors: f64, buckets: &[(f64, f64)]) -> BackendCounts {
        BackendCounts {
            requests,
            errors,
            buckets: buckets.to_vec(),
        }
    }

    fn backend(name: &str) -> SeriesKey {
        SeriesKey {
            backend: name.to_string(),
            ..SeriesKey::default()
        }
    }

    fn reading(at: Instant, backends: &[(&str, BackendCounts)]) -> Reading {
        Reading {
            at,
            series: backends
                .iter()
                .map(|(n, c)| (backend(n), c.clone()))
                .collect(),
            open: OpenConnections::default(),
        }
    }

    #[test]
    fn extract_sums_outbound_series_per_backend() {
        let text = r#"
tandem_requests_total{backend="web-v1",code="200",direction="outbound",dst_service="web",route="default/r/rule-0"} 90
tandem_requests_total{backend="web-v1",code="200",direction="outbound",dst_service="web",route="default/r/rule-1"} 5
tandem_requests_total{backend="web-v1",code="503",direction="outbound",dst_service="web",route="default/r/rule-0"} 5
tandem_requests_total{backend="web-v1",code="200",direction="inbound",dst_service="web"} 1000
tandem_requests_total{code="200",direction="outbound",dst_service="other"} 7
tandem_request_duration_seconds_bucket{backend="web-v1",direction="outbound",route="default/r/rule-0",le="0.01"} 50
tandem_request_duration_seconds_bucket{backend="web-v1",direction="outbound",route="default/r/rule-1",le="0.01"} 5
tandem_request_duration_seconds_bucket{backend="web-v1",direction="outbound",route="default/r/rule-0",le="+Inf"} 95
tandem_request_duration_seconds_bucket{backend="web-v1",direction="outbound",route="default/r/rule-1",le="+Inf"} 5
tandem_request_duration_seconds_count{backend="web-v1",direction="outbound",route="default/r/rule-0"} 95
"#;
        let got = extract(&prometheus::parse(text).unwrap());
        let key = |route: &str, service: &str| SeriesKey {
            service: service.to_string(),
            route: route.to_string(),
            backend: "web-v1".to_string(),
            ..SeriesKey::default()
        };
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[&key("default/r/rule-0", "web")], counts(95.0, 5.0, &[]));
        assert_eq!(got[&key("default/r/rule-1", "web")], counts(5.0, 0.0, &[]));
        // The buckets above carry no dst_service: their own series.
        assert_eq!(
            got[&key("default/r/rule-0", "")],
            counts(0.0, 0.0, &[(0.01, 50.0), (f64::INFINITY, 95.0)])
        );
        // Summed per backend, as the canary reads them.
        let readings: VecDeque<Reading> = [
            Reading {
                at: Instant::now(),
                series: BTreeMap::new(),
                open: OpenConnections::default(),
            },
            Reading {
                at: Instant::now() + Duration::from_secs(10),
                series: got,
                open: OpenConnections::default(),
            },
        ]
        .into();
        let stats = combine([&readings].into_iter(), Duration::from_secs(30));
        assert_eq!(stats.backends["web-v1"].requests, 100.0);
        assert_eq!(stats.backends["web-v1"].success_rate, Some(0.95));
        let by_route = combine_by(
            [&readings].into_iter(),
            Duration::from_secs(30),
            Group::Route,
        );
        assert_eq!(by_route.backends["default/r/rule-1"].requests, 5.0);
    }

    #[test]
    fn edges_sum_per_caller_and_service_called_over_proxies() {
        let scrape = |text: &str| extract(&prometheus::parse(text).unwrap());
        // Two proxies of `web` and one of `shop` call `api`; `web` also calls `db`.
        let web = |n: f64| {
            scrape(&format!(
                "tandem_requests_total{{backend=\"api-v1\",code=\"200\",direction=\"outbound\",dst_service=\"api\",src_service=\"web\"}} {n}\n\
                 tandem_requests_total{{backend=\"api-v2\",code=\"503\",direction=\"outbound\",dst_service=\"api\",src_service=\"web\"}} {}\n\
                 tandem_requests_total{{backend=\"db\",code=\"200\",direction=\"outbound\",dst_service=\"db\",src_service=\"web\"}} {n}\n\
                 tandem_requests_total{{backend=\"web\",code=\"200\",direction=\"inbound\",dst_service=\"web\",src_service=\"edge\"}} {n}\n",
                n / 10.0
            ))
        };
        let shop = |n: f64| {
            scrape(&format!(
                "tandem_requests_total{{backend=\"api-v1\",code=\"200\",direction=\"outbound\",dst_service=\"api\",src_service=\"shop\"}} {n}\n"
            ))
        };
        let t0 = Instant::now();
        let two =
            |series: &dyn Fn(f64) -> BTreeMap<SeriesKey, BackendCounts>| -> VecDeque<Reading> {
                [(0, 0.0), (10, 100.0)]
                    .into_iter()
                    .map(|(at, n)| Reading {
                        at: t0 + Duration::from_secs(at),
                        series: series(n),
                        open: OpenConnections::default(),
                    })
                    .collect()
            };
        let (a, b, c) = (two(&web), two(&web), two(&shop));
        let edges = combine_edges([&a, &b, &c].into_iter(), DEFAULT_WINDOW);
        let edge = |from: &str, to: &str| &edges[&(from.to_string(), to.to_string())];
        assert_eq!(edges.len(), 3, "{edges:?}");
        let web_api = edge("web", "api");
        assert_eq!(web_api.requests, 220.0);
        assert!(
            (web_api.requests_per_second - 22.0).abs() < 1e-9,
            "{web_api:?}"
        );
        assert_eq!(web_api.success_rate, Some(200.0 / 220.0));
        assert_eq!(edge("web", "db").requests, 200.0);
        assert_eq!(edge("shop", "api").success_rate, Some(1.0));
        // Inbound series say who called this proxy's app: not an edge of its own.
        assert!(!edges.contains_key(&("edge".to_string(), "web".to_string())));
    }

    #[test]
    fn open_connections_sum_per_direction() {
        let text = "tandem_tcp_connections_open{direction=\"inbound\"} 3\n\
                    tandem_tcp_connections_open{direction=\"outbound\"} 2\n";
        let open = extract_open(&prometheus::parse(text).unwrap());
        assert_eq!(
            open,
            OpenConnections {
                inbound: 3.0,
                outbound: 2.0
            }
        );
    }

    #[test]
    fn quantile_interpolates_within_the_bucket() {
        // 100 requests: 50 ≤ 10 ms, 90 ≤ 20 ms, 100 ≤ 100 ms → p99 at rank 99 lies in
        // (20 ms, 100 ms], 9 of its 10 → 20 + 80 × 0.9 = 92 ms.
        let b = [
            (0.01, 50.0),
            (0.02, 90.0),
            (0.1, 100.0),
            (f64::INFINITY, 100.0),
        ];
        let p99 = quantile(0.99, &b).unwrap();
        assert!((p99 - 0.092).abs() < 1e-9, "{p99}");
        let p50 = quantile(0.5, &b).unwrap();
        assert!((p50 - 0.01).abs() < 1e-9, "{p50}");
        // In the +Inf bucket: the largest finite bound.
        assert_eq!(
            quantile(0.99, &[(0.1, 10.0), (f64::INFINITY, 100.0)]),
            Some(0.1)
        );
        assert_eq!(quantile(0.99, &[(0.1, 0.0), (f64::INFINITY, 0.0)]), None);
        assert_eq!(quantile(0.99, &[]), None);
    }

    #[test]
    fn rates_use_the_window_and_survive_restarts_and_sum_over_proxies() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let b = |n: f64| vec![(0.01, n), (f64::INFINITY, n)];
        // Proxy A: 10 req/s to v1 for 60 s, readings every 10 s; the window (30 s) uses
        // the readings at 30 s and 60 s.
        let a: VecDeque<Reading> = (0..=6)
            .map(|i| {
                let n = 100.0 * i as f64;
                reading(t0 + s(10 * i), &[("v1", counts(n, 0.0, &b(n)))])
            })
            .collect();
        // Proxy B: restarted between its two readings (counter went down): the new value
        // is the increase. 20 requests to v2 in 10 s, 5 of them 503.
        let bb: VecDeque<Reading> = [
            reading(t0 + s(50), &[("v2", counts(1000.0, 0.0, &b(1000.0)))]),
            reading(t0 + s(60), &[("v2", counts(20.0, 5.0, &b(20.0)))]),
        ]
        .into();
        // Proxy C: one reading only, no rate yet.
        let c: VecDeque<Reading> = [reading(t0, &[("v1", counts(5.0, 0.0, &b(5.0)))])].into();
        let stats = combine([&a, &bb, &c].into_iter(), s(30));
        assert_eq!(stats.proxies_scraped, 3);
        assert_eq!(stats.proxies_reporting, 2);
        let v1 = &stats.backends["v1"];
        assert!((v1.requests_per_second - 10.0).abs() < 1e-9, "{v1:?}");
        assert_eq!(v1.requests, 300.0);
        assert_eq!(v1.success_rate, Some(1.0));
        assert!(v1.p99_seconds.is_some_and(|p| p <= 0.01));
        let v2 = &stats.backends["v2"];
        assert!((v2.requests_per_second - 2.0).abs() < 1e-9, "{v2:?}");
        assert_eq!(v2.success_rate, Some(0.75));
    }

    #[test]
    fn record_keeps_two_minutes_and_retain_forgets_gone_proxies() {
        let t = Telemetry::default();
        let t0 = Instant::now();
        for i in 0..30u64 {
            t.record("a", reading(t0 + Duration::from_secs(10 * i), &[]));
        }
        t.record("b", reading(t0, &[]));
        {
            let map = t.proxies.lock().unwrap();
            assert_eq!(map["a"].len(), 13, "readings from 170 s to 290 s");
        }
        t.retain(&["b".to_string()]);
        assert_eq!(t.stats(DEFAULT_WINDOW).proxies_scraped, 1);
    }
}
