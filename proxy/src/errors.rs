//! Everything that can go wrong with a proxied request: what happened, who is to blame,
//! whether it may be sent again, and the one place it becomes a status
//! ([`ProxyError::status`]). Responses are built from it in [`crate::forward::respond`].

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;

/// The header on every response the proxy answers itself.
pub const ERROR_HEADER: &str = "tandem-proxy-error";

/// Who a failure is down to: what a dashboard or an on-call engineer should look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The request itself: malformed, over a limit, naming nothing.
    Client,
    /// The destination: unreachable, failing, slow, or presenting the wrong identity.
    Upstream,
    /// This proxy: it is not ready to do what the request needs (no certificate yet).
    Proxy,
    /// The mesh's configuration or policy: no such service or route, no backend with
    /// weight, an authorization denial, a connection pool limit.
    Policy,
}

/// Whether the proxy may send a failed request again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retryable {
    /// No byte of it reached the upstream (connect refused, handshake failed, a pooled
    /// connection closed under it): as safe to send elsewhere as the first attempt,
    /// whatever its method.
    Unsent,
    /// It was written and then failed: only a retry policy may send it again, and only for
    /// idempotent methods unless the route says otherwise.
    Idempotent,
    /// Not by the proxy: the client's mistake, a policy's refusal, or the request's own
    /// deadline.
    No,
}

/// A request the proxy could not carry through.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request names no destination.
    #[error("request has no Host header or authority to name a service")]
    NoAuthority,
    /// The request is malformed in a way the proxy must not forward.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// `Host` names no configured service.
    #[error("unknown service {0:?}")]
    UnknownService(String),
    /// The service has routes, but none matches the request.
    #[error("no route of service {0:?} matches the request")]
    NoRoute(String),
    /// The matching route has no backend with weight.
    #[error("route {0:?} has no backend with weight")]
    NoBackend(String),
    /// The service exists but has no endpoints.
    #[error("service {0:?} has no endpoints")]
    NoEndpoints(String),
    /// TCP connect to the chosen endpoint failed.
    #[error("connect to {addr} failed: {source}")]
    Connect {
        /// The endpoint.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// TCP connect did not finish in time.
    #[error("connect to {0} timed out after {1:?}")]
    ConnectTimeout(SocketAddr, Duration),
    /// The HTTP handshake with the endpoint failed.
    #[error("handshake with {addr} failed: {source}")]
    Handshake {
        /// The endpoint.
        addr: SocketAddr,
        /// Why.
        source: hyper::Error,
    },
    /// The exchange with the endpoint broke before response headers.
    #[error("upstream {addr} failed: {source}")]
    Upstream {
        /// The endpoint.
        addr: SocketAddr,
        /// Why.
        source: hyper::Error,
        /// Whether any of the request was written before it broke.
        written: bool,
    },
    /// The mutual TLS handshake with the endpoint failed (wrong identity, untrusted
    /// certificate, or the endpoint does not speak TLS).
    #[error("TLS with {addr} failed: {reason}")]
    Tls {
        /// The endpoint.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The destination requires mutual TLS and this proxy holds no certificate yet.
    #[error("no workload certificate yet for mutual TLS to {0}")]
    NoIdentity(SocketAddr),
    /// An authorization policy denies the request.
    #[error("denied by authorization policy")]
    Denied,
    /// This workload has an identity but no inbound policy (its Service is not in the
    /// mesh, or the first config has not arrived).
    #[error("no inbound policy for this workload (is its Service applied?)")]
    NoInboundPolicy,
    /// The path cannot be normalized without guessing how the app would read it.
    #[error("bad request path: {0}")]
    BadPath(&'static str),
    /// No response headers within the request timeout.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// No response headers within the route's per-attempt timeout.
    #[error("no response within {0:?}")]
    AttemptTimeout(Duration),
    /// The request target exceeds the limit.
    #[error("request target of {len} bytes exceeds the {max} byte limit")]
    UriTooLong {
        /// Actual length.
        len: usize,
        /// Configured limit.
        max: usize,
    },
    /// Too many or too large request headers.
    #[error("request headers exceed the limit: {0}")]
    HeadersTooLarge(String),
    /// A connection pool limit of the destination is reached.
    #[error("overflow: {backend} is at its {limit} limit")]
    Overflow {
        /// The backend (cluster label).
        backend: String,
        /// Which limit.
        limit: &'static str,
    },
}

impl ProxyError {
    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoAuthority | ProxyError::BadRequest(_) | ProxyError::BadPath(_) => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::NoRoute(_) => StatusCode::NOT_FOUND,
            ProxyError::NoBackend(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::UnknownService(_)
            | ProxyError::NoEndpoints(_)
            | ProxyError::Overflow { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect { .. }
            | ProxyError::ConnectTimeout(..)
            | ProxyError::Handshake { .. }
            | ProxyError::Tls { .. }
            | ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::NoIdentity(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Denied | ProxyError::NoInboundPolicy => StatusCode::FORBIDDEN,
            ProxyError::Timeout(_) | ProxyError::AttemptTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            ProxyError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        }
    }

    /// Who the failure is down to.
    pub fn blame(&self) -> Blame {
        match self {
            ProxyError::NoAuthority
            | ProxyError::BadRequest(_)
            | ProxyError::BadPath(_)
            | ProxyError::UriTooLong { .. }
            | ProxyError::HeadersTooLarge(_) => Blame::Client,
            ProxyError::UnknownService(_)
            | ProxyError::NoRoute(_)
            | ProxyError::NoBackend(_)
            | ProxyError::Denied
            | ProxyError::NoInboundPolicy
            | ProxyError::Overflow { .. } => Blame::Policy,
            ProxyError::NoEndpoints(_)
            | ProxyError::Connect { .. }
            | ProxyError::ConnectTimeout(..)
            | ProxyError::Handshake { .. }
            | ProxyError::Upstream { .. }
            | ProxyError::Tls { .. }
            | ProxyError::Timeout(_)
            | ProxyError::AttemptTimeout(_) => Blame::Upstream,
            ProxyError::NoIdentity(_) => Blame::Proxy,
        }
    }

    /// A short name for the kind of failure: the access log's `response_flag` and a
    /// span's `error.type` (what Envoy's response flags say, spelled out).
    pub fn flag(&self) -> &'static str {
        match self {
            ProxyError::NoAuthority => "no_authority",
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::BadPath(_) => "bad_path",
            ProxyError::UriTooLong { .. } => "uri_too_long",
            ProxyError::HeadersTooLarge(_) => "headers_too_large",
            ProxyError::UnknownService(_) => "unknown_service",
            ProxyError::NoRoute(_) => "no_route",
            ProxyError::NoBackend(_) => "no_backend",
            ProxyError::Denied => "denied",
            ProxyError::NoInboundPolicy => "no_inbound_policy",
            ProxyError::Overflow { .. } => "overflow",
            ProxyError::NoEndpoints(_) => "no_endpoints",
            ProxyError::Connect { .. } => "connect_failed",
            ProxyError::ConnectTimeout(..) => "connect_timeout",
            ProxyError::Handshake { .. } => "handshake_failed",
            ProxyError::Upstream { .. } => "upstream_reset",
            ProxyError::Tls { .. } => "tls_failed",
            ProxyError::Timeout(_) => "timeout",
            ProxyError::AttemptTimeout(_) => "attempt_timeout",
            ProxyError::NoIdentity(_) => "no_identity",
        }
    }

    /// Whether the request may be sent again after this failure.
    pub fn retryable(&self) -> Retryable {
        match self {
            ProxyError::Connect { .. }
            | ProxyError::ConnectTimeout(..)
            | ProxyError::Handshake { .. }
            | ProxyError::Tls { .. }
            | ProxyError::NoIdentity(_)
            | ProxyError::Upstream { written: false, .. } => Retryable::Unsent,
            ProxyError::Upstream { written: true, .. } | ProxyError::AttemptTimeout(_) => {
                Retryable::Idempotent
            }
            _ => Retryable::No,
        }
    }

    /// The one-line reason sent in [`ERROR_HEADER`] and the body: printable ASCII, bounded.
    pub fn reason(&self) -> String {
        one_line(&self.to_string())
    }
}

/// Keeps a reason printable in a header: visible ASCII, bounded length.
fn one_line(text: &str) -> String {
    text.chars()
        .take(300)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(
            ProxyError::Timeout(Duration::from_secs(1)).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            ProxyError::AttemptTimeout(Duration::from_secs(1)).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            ProxyError::UriTooLong { len: 9, max: 8 }.status(),
            StatusCode::URI_TOO_LONG
        );
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        assert_eq!(
            ProxyError::Connect {
                addr,
                source: refused
            }
            .status(),
            StatusCode::BAD_GATEWAY
        );
    }

    #[test]
    fn blame_follows_who_can_fix_it() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        assert_eq!(ProxyError::NoAuthority.blame(), Blame::Client);
        assert_eq!(
            ProxyError::HeadersTooLarge("x".into()).blame(),
            Blame::Client
        );
        assert_eq!(ProxyError::Denied.blame(), Blame::Policy);
        assert_eq!(ProxyError::NoRoute("web".into()).blame(), Blame::Policy);
        let overflow = ProxyError::Overflow {
            backend: "web".into(),
            limit: "max_requests",
        };
        assert_eq!(overflow.blame(), Blame::Policy);
        assert_eq!(
            ProxyError::NoEndpoints("web".into()).blame(),
            Blame::Upstream
        );
        assert_eq!(
            ProxyError::ConnectTimeout(addr, Duration::ZERO).blame(),
            Blame::Upstream
        );
        assert_eq!(ProxyError::NoIdentity(addr).blame(), Blame::Proxy);
    }

    #[test]
    fn only_failures_before_a_byte_was_written_are_unsent() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        let tls = ProxyError::Tls {
            addr,
            reason: "wrong identity".into(),
        };
        assert_eq!(tls.retryable(), Retryable::Unsent);
        assert_eq!(ProxyError::NoIdentity(addr).retryable(), Retryable::Unsent);
        assert_eq!(
            ProxyError::AttemptTimeout(Duration::from_secs(1)).retryable(),
            Retryable::Idempotent
        );
        assert_eq!(
            ProxyError::Timeout(Duration::from_secs(1)).retryable(),
            Retryable::No,
            "the request's own deadline ends it"
        );
        assert_eq!(ProxyError::Denied.retryable(), Retryable::No);
        assert_eq!(ProxyError::BadRequest("x").retryable(), Retryable::No);
    }

    #[test]
    fn reasons_stay_on_one_printable_line() {
        let r = ProxyError::UnknownService("nope\r\nx: y".into()).reason();
        assert!(r.starts_with("unknown service"), "{r}");
        assert!(!r.contains('\n') && !r.contains('\r'));
    }
}
