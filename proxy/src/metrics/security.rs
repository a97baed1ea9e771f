//! Metrics of mutual TLS and authorization: handshakes by kind (full or resumed, so the
//! cost of TLS under steady load is visible), plaintext refused by a `mutual` inbound
//! port, and requests or connections denied by policy.

use prometheus::{IntCounterVec, Opts, Registry};
use rustls::HandshakeKind;

/// Security counters.
#[derive(Debug, Clone)]
pub struct SecurityMetrics {
    handshakes: IntCounterVec,
    plaintext_refused: IntCounterVec,
    authz_denied: IntCounterVec,
}

impl SecurityMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let m = SecurityMetrics {
            handshakes: counter(
                "tandem_tls_handshakes_total",
                "Mutual TLS handshakes by direction, kind (full, resumed) and result.",
                &["direction", "kind", "result"],
            )?,
            plaintext_refused: counter(
                "tandem_tls_plaintext_refused_total",
                "Plaintext connections refused by an inbound port in mutual mode.",
                &["dst_service"],
            )?,
            authz_denied: counter(
                "tandem_authz_denied_total",
                "Requests (HTTP) and connections (TCP) denied by authorization policy.",
                &["dst_service", "protocol"],
            )?,
        };
        for dir in ["inbound", "outbound"] {
            for kind in ["full", "resumed"] {
                m.handshakes.with_label_values(&[dir, kind, "ok"]);
            }
        }
        Ok(m)
    }

    /// One handshake; `kind` is `None` when it failed before the kind was known.
    pub fn handshake(&self, direction: &str, kind: Option<HandshakeKind>, ok: bool) {
        let kind = match kind {
            Some(HandshakeKind::Resumed) => "resumed",
            Some(_) => "full",
            None => "unknown",
        };
        let result = if ok { "ok" } else { "error" };
        self.handshakes
            .with_label_values(&[direction, kind, result])
            .inc();
    }

    /// A plaintext connection refused.
    pub fn plaintext_refused(&self, dst: &str) {
        self.plaintext_refused.with_label_values(&[dst]).inc();
    }

    /// A request (`protocol` "http") or connection ("tcp") denied.
    pub fn denied(&self, dst: &str, protocol: &str) {
        self.authz_denied.with_label_values(&[dst, protocol]).inc();
    }
}
