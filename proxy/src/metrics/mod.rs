//! Prometheus metrics: one registry, names and label sets fixed here.
//!
//! Labels stay bounded: `dst_service` is always a configured name or `unknown`, never a raw
//! `Host` value, and codes are HTTP status codes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Counter, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

mod observe;
pub mod process;
mod security;
mod traffic;

pub use observe::ObserveMetrics;
pub use security::SecurityMetrics;
pub use traffic::{RetryReason, TrafficMetrics};

/// Which listener a request or connection came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Mesh → local app.
    Inbound,
    /// Local app → mesh.
    Outbound,
}

impl Direction {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// The labels that say where a request went.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestLabels<'a> {
    /// Destination service.
    pub dst: &'a str,
    /// Route (`namespace/name/rule-N`).
    pub route: &'a str,
    /// Backend (cluster short name).
    pub backend: &'a str,
    /// Source service: this workload on outbound, the mTLS peer's service on inbound
    /// (`unknown` without mutual TLS).
    pub src: &'a str,
    /// Whether the hop was mutual TLS.
    pub tls: bool,
}

/// Every metric the proxy exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Retries, ejections, limits, faults, mirrors.
    pub traffic: TrafficMetrics,
    /// Handshakes, plaintext refused, authorization denials.
    pub security: SecurityMetrics,
    /// Access log lines and trace spans.
    pub observe: ObserveMetrics,
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    tcp_open: IntGaugeVec,
    tcp_total: IntCounterVec,
    tcp_bytes: IntCounterVec,
    detect: IntCounterVec,
    reloads: IntCounterVec,
    config_version: IntGauge,
    xds_connected: IntGauge,
    xds_rejected: IntCounter,
    xds_age: Gauge,
    config_updated: Arc<AtomicU64>,
    rss: Gauge,
    cpu: Counter,
    fds: Gauge,
    identity_expiry: Gauge,
    bundle_expiry: Gauge,
    identity_renewals: IntCounterVec,
}

/// Latency buckets in seconds: fine below 10 ms where a proxy's own overhead lives.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    /// Registers every metric. Fails only on a programming error (duplicate names).
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("tandem_requests_total", "HTTP requests by response status."),
            &[
                "direction",
                "src_service",
                "dst_service",
                "route",
                "backend",
                "code",
                "tls",
            ],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "tandem_request_duration_seconds",
                "Time from request received to response headers sent.",
            )
            .buckets(BUCKETS.to_vec()),
            &[
                "direction",
                "src_service",
                "dst_service",
                "route",
                "backend",
                "tls",
            ],
        )?;
        let tcp_open = IntGaugeVec::new(
            Opts::new(
                "tandem_tcp_connections_open",
                "Client connections currently open.",
            ),
            &["direction"],
        )?;
        let tcp_total = IntCounterVec::new(
            Opts::new(
                "tandem_tcp_connections_total",
                "Client connections accepted.",
            ),
            &["direction"],
        )?;
        let tcp_bytes = IntCounterVec::new(
            Opts::new(
                "tandem_tcp_bytes_total",
                "Bytes proxied on opaque TCP connections, by the side that sent them.",
            ),
            &["direction", "peer"],
        )?;
        let detect = IntCounterVec::new(
            Opts::new(
                "tandem_protocol_detect_total",
                "Protocol detection outcomes.",
            ),
            &["result"],
        )?;
        let reloads = IntCounterVec::new(
            Opts::new("tandem_config_reloads_total", "Config reload attempts."),
            &["result"],
        )?;
        let config_version =
            IntGauge::new("tandem_config_version", "Version of the snapshot in use.")?;
        let xds_connected = IntGauge::new(
            "tandem_xds_connected",
            "1 while the ADS stream to the control plane is up.",
        )?;
        let xds_rejected = IntCounter::new(
            "tandem_xds_rejected_total",
            "xDS updates rejected (NACKed or not applicable).",
        )?;
        let xds_age = Gauge::new(
            "tandem_xds_config_age_seconds",
            "Seconds since the config in use was last updated.",
        )?;
        let rss = Gauge::new(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
        )?;
        let cpu = Counter::new(
            "process_cpu_seconds_total",
            "User and system CPU time spent in seconds.",
        )?;
        let fds = Gauge::new("process_open_fds", "Number of open file descriptors.")?;
        let start_time = Gauge::new(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
        )?;
        let identity_expiry = Gauge::new(
            "tandem_identity_cert_expiry_timestamp_seconds",
            "Expiry of the workload certificate in force, Unix seconds (0 before the first).",
        )?;
        let bundle_expiry = Gauge::new(
            "tandem_trust_bundle_expiry_timestamp_seconds",
            "Earliest expiry among the trust bundle's roots, Unix seconds (0 before the first).",
        )?;
        let identity_renewals = IntCounterVec::new(
            Opts::new(
                "tandem_identity_renewals_total",
                "Workload certificate renewal attempts (the first certificate is not one).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(identity_expiry.clone()))?;
        registry.register(Box::new(bundle_expiry.clone()))?;
        registry.register(Box::new(identity_renewals.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(tcp_open.clone()))?;
        registry.register(Box::new(tcp_total.clone()))?;
        registry.register(Box::new(tcp_bytes.clone()))?;
        registry.register(Box::new(detect.clone()))?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(config_version.clone()))?;
        registry.register(Box::new(xds_connected.clone()))?;
        registry.register(Box::new(xds_rejected.clone()))?;
        registry.register(Box::new(xds_age.clone()))?;
        registry.register(Box::new(rss.clone()))?;
        registry.register(Box::new(cpu.clone()))?;
        registry.register(Box::new(fds.clone()))?;
        registry.register(Box::new(start_time.clone()))?;
        start_time.set(process::start_time_seconds());
        // Pre-create the series people alert on, so they read 0 rather than absent.
        for dir in [Direction::Inbound, Direction::Outbound] {
            tcp_open.with_label_values(&[dir.as_str()]);
        }
        for result in ["ok", "error"] {
            reloads.with_label_values(&[result]);
            identity_renewals.with_label_values(&[result]);
        }
        Ok(Metrics {
            traffic: TrafficMetrics::register(&registry)?,
            security: SecurityMetrics::register(&registry)?,
            observe: ObserveMetrics::register(&registry)?,
            registry,
            requests,
            duration,
            tcp_open,
            tcp_total,
            tcp_bytes,
            detect,
            reloads,
            config_version,
            xds_connected,
            xds_rejected,
            xds_age,
            config_updated: Arc::new(AtomicU64::new(now_millis())),
            rss,
            cpu,
            fds,
            identity_expiry,
            bundle_expiry,
            identity_renewals,
        })
    }

    /// Records one finished request (response headers sent). `route` and `backend` are
    /// empty where no route applies (inbound, or failed before routing).
    pub fn request(
        &self,
        dir: Direction,
        labels: &RequestLabels<'_>,
        status: u16,
        elapsed: Duration,
    ) {
        let code = CodeText::new(status);
        let RequestLabels {
            dst,
            route,
            backend,
            src,
            tls,
        } = *labels;
        let tls = if tls { "true" } else { "false" };
        self.requests
            .with_label_values(&[dir.as_str(), src, dst, route, backend, code.as_str(), tls])
            .inc();
        self.duration
            .with_label_values(&[dir.as_str(), src, dst, route, backend, tls])
            .observe(elapsed.as_secs_f64());
    }

    /// A client connection opened; the guard closes it in the gauge when dropped.
    pub fn connection(&self, dir: Direction) -> ConnectionGuard {
        self.tcp_total.with_label_values(&[dir.as_str()]).inc();
        let gauge = self.tcp_open.with_label_values(&[dir.as_str()]);
        gauge.inc();
        ConnectionGuard { gauge }
    }

    /// Counters for the bytes of one tunnel: (read from the client, read from the server).
    pub fn tcp_byte_counters(&self, dir: Direction) -> (IntCounter, IntCounter) {
        (
            self.tcp_bytes.with_label_values(&[dir.as_str(), "client"]),
            self.tcp_bytes.with_label_values(&[dir.as_str(), "server"]),
        )
    }

    /// One protocol detection outcome.
    pub fn detected(&self, result: &'static str) {
        self.detect.with_label_values(&[result]).inc();
    }

    /// One reload attempt.
    pub fn reload(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    /// The snapshot version now serving (also restarts the config age clock).
    pub fn set_config_version(&self, version: u64) {
        self.config_version
            .set(i64::try_from(version).unwrap_or(i64::MAX));
        self.config_updated.store(now_millis(), Ordering::Relaxed);
    }

    /// Whether the ADS stream is up.
    pub fn set_xds_connected(&self, up: bool) {
        self.xds_connected.set(i64::from(up));
    }

    /// One rejected xDS update.
    pub fn xds_rejected(&self) {
        self.xds_rejected.inc();
    }

    /// The certificate now in force expires at `cert`, the earliest root at `bundle`
    /// (Unix seconds).
    pub fn set_identity_expiry(&self, cert: u64, bundle: Option<u64>) {
        self.identity_expiry.set(cert as f64);
        self.bundle_expiry.set(bundle.unwrap_or(0) as f64);
    }

    /// Sets the trust bundle's earliest root expiry (Unix s) alone: the bundle xDS
    /// announces replaces the identity endpoint's during a rotation.
    pub fn set_bundle_expiry(&self, bundle: u64) {
        self.bundle_expiry.set(bundle as f64);
    }

    /// One renewal attempt.
    pub fn identity_renewal(&self, ok: bool) {
        self.identity_renewals
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    /// Renders every metric in the Prometheus text format, refreshing process stats first.
    pub fn render(&self) -> String {
        if let Some(stats) = process::read() {
            self.rss.set(stats.rss_bytes as f64);
            self.fds.set(stats.open_fds as f64);
            let delta = stats.cpu_seconds - self.cpu.get();
            if delta > 0.0 {
                self.cpu.inc_by(delta);
            }
        }
        let age_ms = now_millis().saturating_sub(self.config_updated.load(Ordering::Relaxed));
        self.xds_age.set(age_ms as f64 / 1000.0);
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Decrements the open-connections gauge when the connection ends.
#[derive(Debug)]
pub struct ConnectionGuard {
    gauge: IntGauge,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Status codes as label text without allocating for the common ones.
struct CodeText {
    buf: [u8; 3],
}

impl CodeText {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf).unwrap_or("000")
    }

    fn new(status: u16) -> Self {
        let s = status.min(999);
        CodeText {
            buf: [
                b'0' + (s / 100) as u8,
                b'0' + (s / 10 % 10) as u8,
                b'0' + (s % 10) as u8,
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_counts_appear_in_text_output() {
        let m = Metrics::new().unwrap();
        let labels = RequestLabels {
            dst: "echo",
            route: "default/split/rule-0",
            backend: "echo-v2",
            src: "web",
            tls: true,
        };
        m.request(Direction::Outbound, &labels, 200, Duration::from_millis(3));
        m.request(Direction::Outbound, &labels, 200, Duration::from_millis(3));
        m.request(Direction::Outbound, &labels, 503, Duration::from_millis(1));
        let text = m.render();
        assert!(
            text.contains(
                r#"tandem_requests_total{backend="echo-v2",code="200",direction="outbound",dst_service="echo",route="default/split/rule-0",src_service="web",tls="true"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"tandem_requests_total{backend="echo-v2",code="503",direction="outbound",dst_service="echo",route="default/split/rule-0",src_service="web",tls="true"} 1"#
        ));
        assert!(text.contains(
            r#"tandem_request_duration_seconds_count{backend="echo-v2",direction="outbound",dst_service="echo",route="default/split/rule-0",src_service="web",tls="true"} 3"#
        ));
        assert!(text.contains("process_resident_memory_bytes"));
    }

    #[test]
    fn connection_guard_tracks_open_connections() {
        let m = Metrics::new().unwrap();
        let g = m.connection(Direction::Inbound);
        assert!(m
            .render()
            .contains(r#"tandem_tcp_connections_open{direction="inbound"} 1"#));
        drop(g);
        assert!(m
            .render()
            .contains(r#"tandem_tcp_connections_open{direction="inbound"} 0"#));
    }
}
