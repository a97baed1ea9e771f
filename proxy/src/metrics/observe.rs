//! Metrics of the proxy's own reports: access log lines and trace spans, by what became
//! of them. Both are written off the request path through bounded queues, so a slow disk
//! or an absent collector shows up here as drops, never as latency.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

/// Counters of access log lines and trace spans.
#[derive(Debug, Clone)]
pub struct ObserveMetrics {
    log_lines: IntCounterVec,
    spans: IntCounterVec,
}

impl ObserveMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &["result"])?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let m = ObserveMetrics {
            log_lines: counter(
                "tandem_access_log_lines_total",
                "Access log lines: written, dropped (queue full) or failed (write error).",
            )?,
            spans: counter(
                "tandem_trace_spans_total",
                "Trace spans: exported, dropped (queue full) or failed (the collector refused \
                 or did not answer).",
            )?,
        };
        for result in ["written", "dropped", "failed"] {
            m.log_lines.with_label_values(&[result]);
        }
        for result in ["exported", "dropped", "failed"] {
            m.spans.with_label_values(&[result]);
        }
        Ok(m)
    }

    /// The counter of access log lines with `result`.
    pub fn log_lines(&self, result: &str) -> IntCounter {
        self.log_lines.with_label_values(&[result])
    }

    /// The counter of trace spans with `result`.
    pub fn spans(&self, result: &str) -> IntCounter {
        self.spans.with_label_values(&[result])
    }
}
