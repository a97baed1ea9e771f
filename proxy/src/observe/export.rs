//! Spans leave through a bounded queue to one export task, which sends them to the
//! collector over OTLP/gRPC (the OpenTelemetry exporter) in batches.
//!
//! The SDK's own batch processor runs a thread of its own per provider and reports drops
//! only in its internal log; this processor is the few lines that make a full queue a
//! counted drop (`tandem_trace_spans_total{result="dropped"}`) and run the export on the
//! proxy's runtime, where the tonic channel lives.

use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use prometheus::IntCounter;
use tokio::sync::mpsc;

use crate::metrics::ObserveMetrics;

/// Spans waiting for export before new ones are dropped.
pub const QUEUE: usize = 4096;
/// Spans per export call.
const BATCH: usize = 512;
/// How long a span may wait for its batch to fill.
const LINGER: Duration = Duration::from_millis(500);
/// One export call's deadline: a collector that hangs costs one batch, not the queue.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Hands finished spans to the export task; never blocks the request that ended them.
#[derive(Debug)]
pub struct QueueProcessor {
    queue: mpsc::Sender<SpanData>,
    dropped: IntCounter,
}

impl QueueProcessor {
    /// The processor and the task that drains it into `exporter` (spawned on the current
    /// runtime; it ends when the processor is dropped).
    pub fn start<E>(exporter: E, metrics: &ObserveMetrics) -> Self
    where
        E: SpanExporter + 'static,
    {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(export_loop(
            exporter,
            rx,
            metrics.spans("exported"),
            metrics.spans("failed"),
        ));
        QueueProcessor {
            queue,
            dropped: metrics.spans("dropped"),
        }
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if self.queue.try_send(span).is_err() {
            self.dropped.inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

async fn export_loop<E: SpanExporter>(
    exporter: E,
    mut rx: mpsc::Receiver<SpanData>,
    exported: IntCounter,
    failed: IntCounter,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = Vec::with_capacity(BATCH);
        batch.push(first);
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        match tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(batch)).await {
            Ok(Ok(())) => exported.inc_by(n),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, spans = n, "trace export failed");
                failed.inc_by(n);
            }
            Err(_) => {
                tracing::debug!(spans = n, "trace export timed out");
                failed.inc_by(n);
            }
        }
    }
}
