//! Errors become responses here, and only here: the status is the error's own
//! ([`ProxyError::status`]), the reason goes in [`ERROR_HEADER`] and the body, and a gRPC
//! client gets a `grpc-status` it can read.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use crate::client::response::ProxyBody;
use crate::errors::{ProxyError, ERROR_HEADER};

/// The response sent to the client: status, error header and a one-line body.
pub fn error_response(e: &ProxyError) -> Response<ProxyBody> {
    let status = e.status();
    let reason = e.reason();
    // Overflow says just that in the header, so clients and dashboards can tell load
    // shedding from a failing upstream without parsing prose.
    let header = match e {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn grpc_clients_get_a_grpc_status() {
        let r = into_grpc(error_response(&ProxyError::NoBackend("r".into())));
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "14");
        assert!(r.headers()["grpc-message"]
            .to_str()
            .unwrap()
            .contains("no backend"));
        assert_eq!(r.headers()[http::header::CONTENT_TYPE], "application/grpc");
        let r = into_grpc(error_response(&ProxyError::Timeout(Duration::from_secs(1))));
        assert_eq!(r.headers()["grpc-status"], "4");
    }

    #[test]
    fn statuses_and_headers() {
        let r = error_response(&ProxyError::UnknownService("nope\r\nx: y".into()));
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let h = r.headers()[ERROR_HEADER].to_str().unwrap();
        assert!(h.starts_with("unknown service"), "{h}");
        assert!(!h.contains('\n'));
        let overflow = error_response(&ProxyError::Overflow {
            backend: "web".into(),
            limit: "max_requests",
        });
        assert_eq!(overflow.headers()[ERROR_HEADER], "overflow");
    }
}
