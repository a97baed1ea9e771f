//! The access log: one JSON line per HTTP request, written by a thread of its own.
//!
//! A request only hands its [`Entry`] to a bounded queue and never waits: when the writer
//! falls behind (a slow disk, a blocked stdout pipe), new lines are dropped and counted in
//! `tandem_access_log_lines_total{result="dropped"}`. Formatting happens on the writer
//! thread, so the request path pays for a few clones and a queue push.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{Method, Version};
use prometheus::IntCounter;
use serde::Serialize;

use crate::metrics::{Direction, ObserveMetrics};

/// Lines waiting for the writer before new ones are dropped.
const QUEUE: usize = 16 * 1024;

/// Where the log goes (the proxy's flag, or the control plane through xDS).
pub use tandem_xds::domain::AccessLogTarget as Target;

/// Everything one line says about a request.
#[derive(Debug)]
pub struct Entry {
    /// When the request arrived.
    pub start: SystemTime,
    /// From arrival to the end of the response body.
    pub duration: Duration,
    /// Which listener.
    pub direction: Direction,
    /// Request method.
    pub method: Method,
    /// `Host` or `:authority`.
    pub authority: Option<String>,
    /// Path and query.
    pub path: String,
    /// The client's HTTP version.
    pub protocol: Version,
    /// The status the client got.
    pub status: u16,
    /// Request body bytes read from the client.
    pub request_bytes: u64,
    /// Response body bytes sent to the client.
    pub response_bytes: u64,
    /// The endpoint of the last attempt (the app, inbound).
    pub upstream: Option<SocketAddr>,
    /// The destination service.
    pub dst_service: Option<Arc<str>>,
    /// Route (`namespace/name/rule-N`).
    pub route: Option<Arc<str>>,
    /// Backend picked by the route's split.
    pub backend: Option<Arc<str>>,
    /// Attempts after the first.
    pub retries: u32,
    /// The caller's SPIFFE ID (inbound, mutual TLS).
    pub peer_identity: Option<Arc<str>>,
    /// The W3C trace id, when the request is traced.
    pub trace_id: Option<String>,
    /// Why the proxy answered itself (`tandem-proxy-error`), or `client_reset` when the
    /// client left before the body ended.
    pub response_flag: Option<String>,
    /// `User-Agent`.
    pub user_agent: Option<String>,
    /// `x-request-id`, when the caller set one.
    pub request_id: Option<String>,
}

/// The line as written: field names Envoy's and Linkerd's users search for.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    direction: &'static str,
    method: &'a str,
    authority: Option<&'a str>,
    path: &'a str,
    protocol: &'static str,
    status: u16,
    duration_ms: f64,
    request_bytes: u64,
    response_bytes: u64,
    upstream: Option<String>,
    dst_service: Option<&'a str>,
    route: Option<&'a str>,
    backend: Option<&'a str>,
    retries: u32,
    peer_identity: Option<&'a str>,
    trace_id: Option<&'a str>,
    response_flag: Option<&'a str>,
    user_agent: Option<&'a str>,
    request_id: Option<&'a str>,
}

impl Entry {
    /// The JSON line, without its newline.
    pub fn to_json(&self) -> String {
        let line = Line {
            time: humantime::format_rfc3339_millis(self.start).to_string(),
            direction: self.direction.as_str(),
            method: self.method.as_str(),
            authority: self.authority.as_deref(),
            path: &self.path,
            protocol: version_text(self.protocol),
            status: self.status,
            duration_ms: (self.duration.as_secs_f64() * 1e6).round() / 1e3,
            request_bytes: self.request_bytes,
            response_bytes: self.response_bytes,
            upstream: self.upstream.map(|a| a.to_string()),
            dst_service: self.dst_service.as_deref(),
            route: self.route.as_deref(),
            backend: self.backend.as_deref(),
            retries: self.retries,
            peer_identity: self.peer_identity.as_deref(),
            trace_id: self.trace_id.as_deref(),
            response_flag: self.response_flag.as_deref(),
            user_agent: self.user_agent.as_deref(),
            request_id: self.request_id.as_deref(),
        };
        // Serializing plain strings and numbers cannot fail.
        serde_json::to_string(&line).unwrap_or_default()
    }
}

fn version_text(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// Why the access log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    /// The file could not be opened for appending.
    #[error("access log: cannot open {path}: {source}")]
    Open {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The writer thread could not be started.
    #[error("access log: cannot start the writer thread: {0}")]
    Thread(std::io::Error),
}

/// The request path's end of the log: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct AccessLog {
    queue: SyncSender<Entry>,
    dropped: IntCounter,
}

impl AccessLog {
    /// Opens `target` and starts the writer thread, which runs until every handle is gone.
    pub fn start(target: &Target, metrics: &ObserveMetrics) -> Result<Self, AccessLogError> {
        let out: Box<dyn Write + Send> = match target {
            Target::Stdout => Box::new(std::io::stdout()),
            Target::File(path) => Box::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| AccessLogError::Open {
                        path: path.display().to_string(),
                        source,
                    })?,
            ),
        };
        let (queue, rx) = mpsc::sync_channel(QUEUE);
        let written = metrics.log_lines("written");
        let failed = metrics.log_lines("failed");
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx, out, written, failed))
            .map_err(AccessLogError::Thread)?;
        Ok(AccessLog {
            queue,
            dropped: metrics.log_lines("dropped"),
        })
    }

    /// Queues one line; drops it (counted) if the writer is behind.
    pub fn log(&self, entry: Entry) {
        match self.queue.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }
}

/// The writer thread: lines as they come, flushed whenever the queue runs empty, so a
/// burst costs one write and a quiet log is never stale.
fn write_lines(
    rx: Receiver<Entry>,
    out: Box<dyn Write + Send>,
    written: IntCounter,
    failed: IntCounter,
) {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(entry) = next {
            let mut line = entry.to_json();
            line.push('\n');
            match out.write_all(line.as_bytes()) {
                Ok(()) => written.inc(),
                Err(_) => failed.inc(),
            }
            next = rx.try_recv().ok();
        }
        if out.flush().is_err() {
            failed.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            start: SystemTime::UNIX_EPOCH + Duration::from_millis(1_780_000_000_123),
            duration: Duration::from_micros(1_234_567),
            direction: Direction::Outbound,
            method: Method::POST,
            authority: Some("api:8080".into()),
            path: "/v1/items?x=\"1\"".into(),
            protocol: Version::HTTP_2,
            status: 503,
            request_bytes: 12,
            response_bytes: 34,
            upstream: Some("10.0.0.7:8080".parse().unwrap()),
            dst_service: Some("api".into()),
            route: Some("default/api/rule-0".into()),
            backend: Some("api-v2".into()),
            retries: 2,
            peer_identity: None,
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            response_flag: Some("no_endpoints".into()),
            user_agent: Some("curl/8".into()),
            request_id: None,
        }
    }

    #[test]
    fn a_line_is_one_json_object_with_every_field() {
        let line = entry().to_json();
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["time"], "2026-05-28T20:26:40.123Z");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/v1/items?x=\"1\"");
        assert_eq!(v["protocol"], "HTTP/2");
        assert_eq!(v["status"], 503);
        assert_eq!(v["duration_ms"], 1234.567);
        assert_eq!(v["upstream"], "10.0.0.7:8080");
        assert_eq!(v["retries"], 2);
        assert_eq!(v["response_flag"], "no_endpoints");
        assert_eq!(v["peer_identity"], serde_json::Value::Null);
        assert_eq!(v["direction"], "outbound");
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let registry = prometheus::Registry::new();
        let metrics = ObserveMetrics::register(&registry).unwrap();
        // A queue nobody reads: the writer thread is never started.
        let (queue, _rx) = mpsc::sync_channel(1);
        let log = AccessLog {
            queue,
            dropped: metrics.log_lines("dropped"),
        };
        log.log(entry());
        log.log(entry());
        log.log(entry());
        assert_eq!(metrics.log_lines("dropped").get(), 2);
    }
}
