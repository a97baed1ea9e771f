//! Distributed tracing: one span per proxy hop (server on the inbound side, client on
//! the outbound side), parent-based sampling with a ratio for new traces, and the
//! context written on the way out so the next hop's span is this one's child.

use std::borrow::Cow;

use http::HeaderMap;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, Tracer as _, TracerProvider as _,
};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SpanExporter as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, Span};
use opentelemetry_sdk::Resource;

use super::export::QueueProcessor;
use super::propagation::{self, B3Form};
use crate::metrics::ObserveMetrics;

/// How tracing is configured.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// The OTLP/gRPC collector, `http://host:4317`.
    pub collector: String,
    /// The share of new traces sampled (0 to 1); a caller's decision is followed.
    pub sampling: f64,
    /// `service.name` of the proxy's spans: the workload's service.
    pub service: String,
    /// `service.namespace`.
    pub namespace: String,
}

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The collector address is not an `http://` URL.
    #[error("--trace-collector: expected http://host:port, got {0:?}")]
    Collector(String),
    /// The ratio is outside 0..=1.
    #[error("--trace-sampling: expected a ratio from 0 to 1, got {0}")]
    Sampling(f64),
    /// The exporter could not be built.
    #[error("--trace-collector: {0}")]
    Exporter(String),
}

/// The proxy's tracer.
#[derive(Debug)]
pub struct Tracing {
    tracer: SdkTracer,
    sampling: f64,
    // Spans are only exported while the provider lives.
    _provider: SdkTracerProvider,
}

/// One hop's span and the B3 form to answer in.
#[derive(Debug)]
pub struct HopSpan {
    span: Span,
    kind: SpanKind,
}

impl Tracing {
    /// The exporter (its channel connects lazily, so an absent collector is not a
    /// startup error but failed exports) and the tracer. Must run inside the runtime.
    pub fn start(settings: &TraceSettings, metrics: &ObserveMetrics) -> Result<Self, TraceError> {
        if !settings.collector.starts_with("http://") {
            return Err(TraceError::Collector(settings.collector.clone()));
        }
        if !(0.0..=1.0).contains(&settings.sampling) {
            return Err(TraceError::Sampling(settings.sampling));
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(settings.collector.clone())
            .build()
            .map_err(|e| TraceError::Exporter(e.to_string()))?;
        let resource = Resource::builder_empty()
            .with_service_name(settings.service.clone())
            .with_attributes([
                KeyValue::new("service.namespace", settings.namespace.clone()),
                KeyValue::new("telemetry.sdk.name", "opentelemetry"),
                KeyValue::new("telemetry.sdk.language", "rust"),
            ])
            .build();
        let mut exporter = exporter;
        exporter.set_resource(&resource);
        let provider = SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.sampling,
            ))))
            .with_span_processor(QueueProcessor::start(exporter, metrics))
            .with_resource(resource)
            .build();
        Ok(Tracing {
            tracer: provider.tracer("tandem-proxy"),
            sampling: settings.sampling,
            _provider: provider,
        })
    }

    /// Starts this hop's span as the child of the caller's context in `headers`, and
    /// rewrites `headers` so the next hop is this span's child. `attrs` is only called
    /// for a sampled span: an unsampled one costs its ids and the headers, nothing more.
    pub fn begin(
        &self,
        inbound: bool,
        method: &http::Method,
        headers: &mut HeaderMap,
        attrs: impl FnOnce(&HeaderMap) -> Vec<KeyValue>,
    ) -> HopSpan {
        let (parent, form): (_, B3Form) = propagation::extract(headers, self.sampling);
        let kind = if inbound {
            SpanKind::Server
        } else {
            SpanKind::Client
        };
        let name: Cow<'static, str> = match method.as_str() {
            "GET" => Cow::Borrowed("GET"),
            "POST" => Cow::Borrowed("POST"),
            other => Cow::Owned(other.to_string()),
        };
        let mut span = self
            .tracer
            .span_builder(name)
            .with_kind(kind.clone())
            .start_with_context(&self.tracer, &parent);
        if span.is_recording() {
            span.set_attributes(attrs(headers));
        }
        propagation::inject(span.span_context(), form, headers);
        HopSpan { span, kind }
    }
}

impl HopSpan {
    /// Whether the span is sampled (recorded and exported).
    pub fn is_recording(&self) -> bool {
        self.span.is_recording()
    }

    /// The trace id, for the access log (only for a sampled span: an unsampled id
    /// names nothing a collector will have).
    pub fn trace_id(&self) -> Option<String> {
        let sc: &SpanContext = self.span.span_context();
        sc.is_sampled().then(|| format!("{:032x}", sc.trace_id()))
    }

    /// Ends the span with the response's status and what the proxy learned.
    pub fn end(mut self, status: u16, flag: Option<&str>, attrs: Vec<KeyValue>) {
        if !self.span.is_recording() {
            return;
        }
        self.span.set_attributes(attrs);
        self.span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        // OpenTelemetry's HTTP conventions: a server span fails on 5xx only (a 4xx is the
        // client's doing); a client span on 4xx too.
        let failed = status >= 500 || (status >= 400 && self.kind == SpanKind::Client);
        if failed || flag.is_some() {
            let error_type = flag.map_or_else(|| status.to_string(), str::to_string);
            self.span
                .set_attribute(KeyValue::new("error.type", error_type.clone()));
            if failed {
                self.span.set_status(Status::error(error_type));
            }
        }
        self.span.end();
    }
}
