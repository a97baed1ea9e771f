//! Everything that can go wrong with a proxied request, and the one place it becomes a status.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use crate::body::ProxyBody;

/// The header on every response the proxy answers itself.
pub const ERROR_HEADER: &str = "tandem-proxy-error";

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
            ProxyError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            ProxyError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        }
    }

    /// The response sent to the client: status, error header and a one-line body.
    pub fn into_response(self) -> Response<ProxyBody> {
        let status = self.status();
        let reason = one_line(&self.to_string());
        // Overflow says just that in the header, so clients and dashboards can tell load
        // shedding from a failing upstream without parsing prose.
        let header = match self {
            ProxyError::Overflow { .. } => HeaderValue::from_static("overflow"),
            _ => HeaderValue::from_str(&reason)
                .unwrap_or_else(|_| HeaderValue::from_static("invalid reason")),
        };
        let mut resp = Response::new(ProxyBody::full(Bytes::from(format!("{reason}\n"))));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(ERROR_HEADER, header);
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
        resp
    }
}

/// Rewrites a response the proxy answered itself (it carries [`ERROR_HEADER`]) for a gRPC
/// client: gRPC clients read `grpc-status` from a trailers-only response and would see any
/// other HTTP status as `UNKNOWN`. The mapping follows gRPC's HTTP-to-status table, except
/// that the proxy's own timeout is `DEADLINE_EXCEEDED` and a route with no backend is
/// `UNAVAILABLE` (as Gateway API's GRPCRoute asks).
pub fn into_grpc(resp: Response<ProxyBody>) -> Response<ProxyBody> {
    let code: u16 = match resp.status().as_u16() {
        400 => 13,                   // INTERNAL
        401 => 16,                   // UNAUTHENTICATED
        403 => 7,                    // PERMISSION_DENIED
        404 => 12,                   // UNIMPLEMENTED
        504 => 4,                    // DEADLINE_EXCEEDED
        429 | 500 | 502 | 503 => 14, // UNAVAILABLE
        _ => 2,                      // UNKNOWN
    };
    let (mut parts, _) = resp.into_parts();
    parts.status = StatusCode::OK;
    let message = parts.headers.get(ERROR_HEADER).cloned();
    parts.headers.remove(http::header::CONTENT_LENGTH);
    parts.headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    parts.headers.insert("grpc-status", HeaderValue::from(code));
    if let Some(m) = message {
        parts.headers.insert("grpc-message", m);
    }
    Response::from_parts(parts, ProxyBody::full(Bytes::new()))
}

/// Whether a request is gRPC (`content-type: application/grpc[+proto|…]`).
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
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
    fn grpc_clients_get_a_grpc_status() {
        let r = into_grpc(ProxyError::NoBackend("r".into()).into_response());
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "14");
        assert!(r.headers()["grpc-message"]
            .to_str()
            .unwrap()
            .contains("no backend"));
        assert_eq!(r.headers()[http::header::CONTENT_TYPE], "application/grpc");
        let r = into_grpc(ProxyError::Timeout(Duration::from_secs(1)).into_response());
        assert_eq!(r.headers()["grpc-status"], "4");
    }

    #[test]
    fn statuses_and_headers() {
        let r = ProxyError::UnknownService("nope\r\nx: y".into()).into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let h = r.headers()[ERROR_HEADER].to_str().unwrap();
        assert!(h.starts_with("unknown service"), "{h}");
        assert!(!h.contains('\n'));
        assert_eq!(
            ProxyError::Timeout(Duration::from_secs(1)).status(),
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
}
