//! What the proxy reports about each HTTP request beyond its metrics: a JSON access log
//! line ([`access_log`]) and one trace span per hop ([`trace`], with the context in
//! headers in [`propagation`] and the OTLP export in [`export`]).
//!
//! Both are off unless configured, and then cost one [`Record`] per request: started in
//! [`crate::forward`] before the request goes anywhere, told the outcome when the
//! response head is ready, finished by [`body::ObservedBody`] when the response body
//! ends, so durations and byte counts cover the whole exchange as Envoy's and Linkerd's
//! logs do. Neither can slow or fail a request: both leave through bounded queues whose
//! overflow is counted.

pub mod access_log;
pub mod asked_log;
pub mod body;
pub mod export;
pub mod propagation;
pub mod trace;

use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, Request};
use opentelemetry::KeyValue;
use tokio::time::Instant;

use crate::http::request_body::ReceivedBytes;
use crate::metrics::{Direction, ObserveMetrics};
use crate::outbound::Labels;
use access_log::{AccessLog, AccessLogError, Entry, Target};
use asked_log::AskedLog;
use tandem_xds::domain::AccessLogTarget;
use trace::{HopSpan, TraceError, TraceSettings, Tracing};

/// What to report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObserveSettings {
    /// Where access log lines go (`None`: no access log).
    pub access_log: Option<Target>,
    /// Where spans go and how many (`None`: no tracing).
    pub tracing: Option<TraceSettings>,
}

/// Why reporting could not start.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// The access log.
    #[error(transparent)]
    AccessLog(#[from] AccessLogError),
    /// Tracing.
    #[error(transparent)]
    Trace(#[from] TraceError),
}

/// The proxy's reporters, shared by every worker.
#[derive(Debug)]
pub struct Observer {
    /// The proxy's own access log (`--access-log`): both directions.
    log: Option<AccessLog>,
    /// The access log the control plane asks for: inbound requests, when there is no
    /// `--access-log`.
    asked: AskedLog,
    tracing: Option<Tracing>,
}

impl Observer {
    /// Starts what `settings` asks for (inside the runtime: the span exporter's channel
    /// lives there).
    pub fn start(
        settings: &ObserveSettings,
        metrics: &ObserveMetrics,
    ) -> Result<Self, ObserveError> {
        let log = match &settings.access_log {
            Some(target) => Some(AccessLog::start(target, metrics)?),
            None => None,
        };
        let tracing = match &settings.tracing {
            Some(t) => Some(Tracing::start(t, metrics)?),
            None => None,
        };
        Ok(Observer {
            log,
            asked: AskedLog::new(metrics.clone()),
            tracing,
        })
    }

    /// Begins observing `req` (and, when tracing, rewrites its trace context for the next
    /// hop); `None` when nothing is reported, which is the whole cost then. `asked`: the
    /// access log the control plane asks for on this request's listener.
    pub fn begin<B>(
        &self,
        direction: Direction,
        peer_identity: Option<&Arc<str>>,
        asked: Option<&AccessLogTarget>,
        req: &mut Request<B>,
    ) -> Option<Box<Record>> {
        // The proxy's own flag wins: it was given for this proxy alone.
        let log = match (&self.log, asked) {
            (Some(log), _) => Some(log.clone()),
            (None, Some(target)) => self.asked.get(target),
            (None, None) => None,
        };
        if log.is_none() && self.tracing.is_none() {
            return None;
        }
        let authority = crate::http::headers::authority(req.uri(), req.headers());
        let span = self
            .tracing
            .as_ref()
            .map(|t| {
                // The headers leave the request while the context is rewritten, so the
                // attributes can read the rest of it.
                let mut headers = std::mem::take(req.headers_mut());
                let inbound = direction == Direction::Inbound;
                let span = t.begin(inbound, req.method(), &mut headers, |h| {
                    span_attributes(direction, req, h, authority.as_ref(), peer_identity)
                });
                *req.headers_mut() = headers;
                span
            })
            // An unsampled span has nothing to report: it needs no record.
            .filter(HopSpan::is_recording);
        if log.is_none() && span.is_none() {
            return None;
        }
        let path = req
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
        let headers = req.headers();
        let entry = Entry {
            start: SystemTime::now(),
            duration: Default::default(),
            direction,
            method: req.method().clone(),
            authority: authority.map(|a| a.to_string()),
            path,
            protocol: req.version(),
            status: 0,
            request_bytes: 0,
            response_bytes: 0,
            upstream: None,
            dst_service: None,
            route: None,
            backend: None,
            retries: 0,
            peer_identity: peer_identity.cloned(),
            trace_id: span.as_ref().and_then(HopSpan::trace_id),
            response_flag: None,
            user_agent: text(headers, "user-agent"),
            request_id: text(headers, "x-request-id"),
        };
        let received = ReceivedBytes::default();
        req.extensions_mut().insert(received.clone());
        Some(Box::new(Record {
            started: Instant::now(),
            received,
            entry,
            log,
            span,
        }))
    }
}

/// One observed request, from arrival to the end of its response body.
#[derive(Debug)]
pub struct Record {
    started: Instant,
    /// The request body's bytes, counted as the body is read.
    received: ReceivedBytes,
    entry: Entry,
    log: Option<AccessLog>,
    span: Option<HopSpan>,
}

impl Record {
    /// The response head is ready: its `status`, the proxy's own error kind (`flag`,
    /// [`crate::errors::ProxyError::flag`]) if it answered itself, and where the request
    /// went (`labels`, as the metrics have them).
    pub fn respond(&mut self, status: u16, flag: Option<&'static str>, labels: &Labels) {
        let e = &mut self.entry;
        e.status = status;
        e.response_flag = flag.map(str::to_string);
        e.upstream = labels.endpoint;
        e.dst_service = labels.dst.clone();
        e.route = labels.route.clone();
        e.backend = labels.backend.clone();
        e.retries = labels.attempts.saturating_sub(1);
    }

    /// The response body ended after `bytes` (`cut`: the flag of a body that did not end
    /// normally); writes the line and ends the span.
    pub fn finish(self: Box<Self>, bytes: u64, cut: Option<&'static str>) {
        let Record {
            started,
            received,
            mut entry,
            log,
            span,
        } = *self;
        entry.duration = started.elapsed();
        entry.response_bytes = bytes;
        entry.request_bytes = received.get();
        if entry.response_flag.is_none() {
            entry.response_flag = cut.map(str::to_string);
        }
        if let Some(span) = span {
            let mut attrs = Vec::with_capacity(6);
            if let Some(up) = entry.upstream {
                attrs.push(KeyValue::new("network.peer.address", up.ip().to_string()));
                attrs.push(KeyValue::new("network.peer.port", i64::from(up.port())));
            }
            for (key, value) in [
                ("tandem.dst_service", &entry.dst_service),
                ("tandem.route", &entry.route),
                ("tandem.backend", &entry.backend),
            ] {
                if let Some(v) = value {
                    attrs.push(KeyValue::new(key, v.to_string()));
                }
            }
            if entry.retries > 0 {
                attrs.push(KeyValue::new(
                    "http.request.resend_count",
                    i64::from(entry.retries),
                ));
            }
            span.end(entry.status, entry.response_flag.as_deref(), attrs);
        }
        if let Some(log) = log {
            log.log(entry);
        }
    }
}

/// A header's value as text, if it is.
fn text(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A span's request attributes, by OpenTelemetry's HTTP conventions (built only for a
/// sampled span).
fn span_attributes<B>(
    direction: Direction,
    req: &Request<B>,
    headers: &HeaderMap,
    authority: Option<&http::uri::Authority>,
    peer_identity: Option<&Arc<str>>,
) -> Vec<KeyValue> {
    let uri = req.uri();
    let mut attrs = vec![
        KeyValue::new("http.request.method", req.method().as_str().to_string()),
        KeyValue::new("url.path", uri.path().to_string()),
        KeyValue::new("url.scheme", "http"),
        KeyValue::new(
            "network.protocol.version",
            match req.version() {
                http::Version::HTTP_2 => "2",
                http::Version::HTTP_10 => "1.0",
                _ => "1.1",
            },
        ),
    ];
    if let Some(q) = uri.query() {
        attrs.push(KeyValue::new("url.query", q.to_string()));
    }
    if let Some(a) = authority {
        attrs.push(KeyValue::new("server.address", a.host().to_string()));
        if let Some(port) = a.port_u16() {
            attrs.push(KeyValue::new("server.port", i64::from(port)));
        }
        if direction == Direction::Outbound {
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            attrs.push(KeyValue::new("url.full", format!("http://{a}{path}")));
        }
    }
    if let Some(ua) = text(headers, "user-agent") {
        attrs.push(KeyValue::new("user_agent.original", ua));
    }
    if let Some(id) = peer_identity {
        attrs.push(KeyValue::new("tandem.peer.identity", id.to_string()));
    }
    attrs
}
