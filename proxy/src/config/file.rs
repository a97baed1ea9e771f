//! The static config file exactly as users write it (YAML), before validation.
//!
//! Everything here is plain strings and options so that a typo produces a validation
//! error with a field path rather than a terse deserializer message.

use serde::{Deserialize, Serialize};

/// The whole config file.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// This workload's own service name.
    #[serde(default)]
    pub service: Option<String>,
    /// How the inbound listener treats connections.
    #[serde(default)]
    pub inbound: Option<FileInbound>,
    /// The services this workload may call.
    #[serde(default)]
    pub services: Vec<FileService>,
    /// Timeouts.
    #[serde(default)]
    pub timeouts: Option<FileTimeouts>,
    /// Request limits.
    #[serde(default)]
    pub limits: Option<FileLimits>,
}

/// `inbound:` section.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileInbound {
    /// `detect`, `http1`, `http2` or `opaque`.
    #[serde(default)]
    pub protocol: Option<String>,
}

/// One entry of `services:`.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileService {
    /// Name matched against `Host` / `:authority`.
    pub name: String,
    /// `detect`, `http1`, `http2` or `opaque`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// `addr:port` of each instance.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Optional dedicated outbound listener.
    #[serde(default)]
    pub listen: Option<String>,
}

/// `timeouts:` section; durations in humantime form (`250ms`, `1s`).
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileTimeouts {
    /// TCP connect to an endpoint.
    pub connect: Option<String>,
    /// Request sent → response headers.
    pub request: Option<String>,
    /// Protocol detection.
    pub detect: Option<String>,
    /// Idle client connections.
    pub idle: Option<String>,
    /// First byte of an HTTP/1 request head → the whole head.
    pub request_headers: Option<String>,
    /// Idle pooled upstream connections.
    pub upstream_idle: Option<String>,
    /// Grace period on shutdown.
    pub shutdown_grace: Option<String>,
}

/// `limits:` section.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    /// Request header block size.
    pub max_header_bytes: Option<u64>,
    /// Request header count.
    pub max_headers: Option<u64>,
    /// Request target length.
    pub max_uri_bytes: Option<u64>,
    /// Request body bytes kept for retries.
    pub retry_buffer_bytes: Option<u64>,
}
