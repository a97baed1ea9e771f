//! Metrics of traffic management: retries and their budget, outlier ejections, pool
//! limits, injected faults and mirrors. Every series is labelled by backend (a configured
//! cluster's short name), so cardinality follows the config, not the traffic.

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Traffic-management counters.
#[derive(Debug, Clone)]
pub struct TrafficMetrics {
    retries: IntCounterVec,
    budget_exhausted: IntCounterVec,
    ejections: IntCounterVec,
    breaker_open: IntGaugeVec,
    overflow: IntCounterVec,
    faults: IntCounterVec,
    mirrors: IntCounterVec,
    passthrough: IntCounter,
}

/// Why a request was sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// The request never reached the endpoint (connect refused, pool race).
    Unsent,
    /// A retriable status or a failure after the request was written.
    Policy,
}

impl TrafficMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let breaker_open = IntGaugeVec::new(
            Opts::new(
                "tandem_circuit_breaker_open",
                "1 while a connection pool limit of the backend is reached.",
            ),
            &["backend"],
        )?;
        registry.register(Box::new(breaker_open.clone()))?;
        let passthrough = IntCounter::new(
            "tandem_passthrough_connections_total",
            "Intercepted outbound connections to destinations outside the mesh, passed through unchanged.",
        )?;
        registry.register(Box::new(passthrough.clone()))?;
        Ok(TrafficMetrics {
            passthrough,
            retries: counter(
                "tandem_retries_total",
                "Requests sent again, by reason (unsent: never reached the endpoint).",
                &["dst_service", "backend", "reason"],
            )?,
            budget_exhausted: counter(
                "tandem_retry_budget_exhausted_total",
                "Retries not sent because the backend's retry budget was spent.",
                &["backend"],
            )?,
            ejections: counter(
                "tandem_outlier_ejections_total",
                "Endpoints taken out of rotation by outlier detection.",
                &["backend"],
            )?,
            breaker_open,
            overflow: counter(
                "tandem_overflow_total",
                "Requests refused by a connection pool limit.",
                &["backend", "limit"],
            )?,
            faults: counter(
                "tandem_faults_injected_total",
                "Requests delayed or aborted by fault injection.",
                &["dst_service", "kind"],
            )?,
            mirrors: counter(
                "tandem_mirror_requests_total",
                "Mirrored requests, by outcome (sent, skipped: body not replayable).",
                &["backend", "result"],
            )?,
        })
    }

    /// A retry was sent.
    pub fn retry(&self, dst: &str, backend: &str, reason: RetryReason) {
        let reason = match reason {
            RetryReason::Unsent => "unsent",
            RetryReason::Policy => "policy",
        };
        self.retries
            .with_label_values(&[dst, backend, reason])
            .inc();
    }

    /// A retry was refused by the budget.
    pub fn budget_exhausted(&self, backend: &str) {
        self.budget_exhausted.with_label_values(&[backend]).inc();
    }

    /// An endpoint was ejected.
    pub fn ejection(&self, backend: &str) {
        self.ejections.with_label_values(&[backend]).inc();
    }

    /// A request was refused by `limit`.
    pub fn overflow(&self, backend: &str, limit: &str) {
        self.overflow.with_label_values(&[backend, limit]).inc();
    }

    /// Sets the circuit-breaker gauge of `backend`.
    pub fn breaker(&self, backend: &str, open: bool) {
        self.breaker_open
            .with_label_values(&[backend])
            .set(i64::from(open));
    }

    /// A fault (`delay` or `abort`) was injected.
    pub fn fault(&self, dst: &str, kind: &str) {
        self.faults.with_label_values(&[dst, kind]).inc();
    }

    /// An intercepted connection left the mesh unchanged.
    pub fn passthrough(&self) {
        self.passthrough.inc();
    }

    /// A mirror was sent (`sent`) or not (`skipped`).
    pub fn mirror(&self, backend: &str, result: &str) {
        self.mirrors.with_label_values(&[backend, result]).inc();
    }
}
