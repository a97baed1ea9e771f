//! Typed proxy configuration: parsed from the static file, validated into domain types.
//!
//! Parsing and validation are separate steps so that every error names the field it is
//! about (`services[1].endpoints[0]: ...`), whichever step found it.

mod file;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use tandem_xds::domain::AppProtocol;

pub use file::FileConfig;
pub use validate::{parse, ConfigError};

/// How a listener or an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Detect per connection (listeners) or keep the client's protocol (upstreams).
    Detect,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 with prior knowledge (h2c).
    Http2,
    /// Opaque TCP: bytes forwarded unchanged.
    Opaque,
}

/// The proxy's protocol names and the mesh's protocol hints are the same four choices.
impl From<AppProtocol> for Protocol {
    fn from(p: AppProtocol) -> Self {
        match p {
            AppProtocol::Detect => Protocol::Detect,
            AppProtocol::Http => Protocol::Http1,
            AppProtocol::Http2 => Protocol::Http2,
            AppProtocol::Tcp => Protocol::Opaque,
        }
    }
}

impl From<Protocol> for AppProtocol {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Detect => AppProtocol::Detect,
            Protocol::Http1 => AppProtocol::Http,
            Protocol::Http2 => AppProtocol::Http2,
            Protocol::Opaque => AppProtocol::Tcp,
        }
    }
}

/// A validated, immutable proxy configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// This workload's own service name (`dst_service` on inbound).
    pub service: String,
    /// Protocol of the inbound listener.
    pub inbound_protocol: Protocol,
    /// Services by name.
    pub services: BTreeMap<String, Service>,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Request limits.
    pub limits: Limits,
}

/// A destination service and its endpoints.
#[derive(Debug, Clone, Serialize)]
pub struct Service {
    /// Name as matched against `Host`.
    pub name: String,
    /// Upstream protocol.
    pub protocol: Protocol,
    /// Instances; may be empty (requests get 503).
    pub endpoints: Vec<SocketAddr>,
    /// Dedicated outbound listener, if any.
    pub listen: Option<SocketAddr>,
}

/// Timeouts, all non-zero.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Timeouts {
    /// TCP connect to an endpoint.
    #[serde(with = "duration_text")]
    pub connect: Duration,
    /// Request sent → response headers received.
    #[serde(with = "duration_text")]
    pub request: Duration,
    /// Protocol detection on a new connection.
    #[serde(with = "duration_text")]
    pub detect: Duration,
    /// Client connection without activity.
    #[serde(with = "duration_text")]
    pub idle: Duration,
    /// First byte of an HTTP/1 request head → the whole head received (a client that
    /// trickles its headers is closed then, whatever `idle` says).
    #[serde(with = "duration_text")]
    pub request_headers: Duration,
    /// Pooled upstream connection without use.
    #[serde(with = "duration_text")]
    pub upstream_idle: Duration,
    /// How long shutdown waits for in-flight work.
    #[serde(with = "duration_text")]
    pub shutdown_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(1),
            request: Duration::from_secs(15),
            detect: Duration::from_secs(1),
            idle: Duration::from_secs(300),
            // Envoy's recommended edge value; a legitimate head arrives in one packet or
            // a few round trips.
            request_headers: Duration::from_secs(10),
            // Below the common 60 s keep-alive of upstream servers, so the proxy closes
            // idle connections before the server does (the classic keep-alive race).
            upstream_idle: Duration::from_secs(20),
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

/// Request size limits.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Limits {
    /// Request header block (names, values, request line).
    pub max_header_bytes: usize,
    /// Number of request headers.
    pub max_headers: usize,
    /// Request target length.
    pub max_uri_bytes: usize,
    /// Request body bytes kept so that a retry can send them again; a larger body is
    /// streamed without a copy and not retried (unless it was never sent at all).
    pub retry_buffer_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_uri_bytes: 8 * 1024,
            retry_buffer_bytes: 64 * 1024,
        }
    }
}

mod duration_text {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}
