//! The proxy's own request limits (`limits` in the config), checked before anything is
//! sent anywhere: a request over them gets a 414 or 431 that says which limit.

use http::Request;

use crate::config::Limits;
use crate::errors::ProxyError;

/// Rejects requests over the configured limits before anything is sent upstream.
pub fn check<B>(req: &Request<B>, limits: &Limits) -> Result<(), ProxyError> {
    let uri = req.uri();
    let uri_len = uri.path_and_query().map_or(1, |pq| pq.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.scheme_str().map_or(0, |s| s.len() + 3);
    if uri_len > limits.max_uri_bytes {
        return Err(ProxyError::UriTooLong {
            len: uri_len,
            max: limits.max_uri_bytes,
        });
    }
    let headers = req.headers();
    if headers.len() > limits.max_headers {
        return Err(ProxyError::HeadersTooLarge(format!(
            "{} headers, limit {}",
            headers.len(),
            limits.max_headers
        )));
    }
    // Name, value, ": " and CRLF, as they would appear on an HTTP/1 wire.
    let bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if bytes > limits.max_header_bytes {
        return Err(ProxyError::HeadersTooLarge(format!(
            "{bytes} bytes, limit {}",
            limits.max_header_bytes
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn limits_reject_long_targets_and_header_floods() {
        let limits = Limits {
            max_header_bytes: 1024,
            max_headers: 3,
            max_uri_bytes: 32,
            retry_buffer_bytes: 0,
        };
        let ok = Request::get("/short").header("a", "1").body(()).unwrap();
        assert!(check(&ok, &limits).is_ok());
        let long = Request::get(format!("/{}", "x".repeat(40)))
            .body(())
            .unwrap();
        assert_eq!(
            check(&long, &limits).unwrap_err().status(),
            StatusCode::URI_TOO_LONG
        );
        let mut many = Request::get("/").body(()).unwrap();
        for i in 0..4 {
            many.headers_mut().insert(
                http::HeaderName::from_bytes(format!("h{i}").as_bytes()).unwrap(),
                http::HeaderValue::from_static("v"),
            );
        }
        assert_eq!(
            check(&many, &limits).unwrap_err().status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        let big = Request::get("/")
            .header("a", "v".repeat(2000))
            .body(())
            .unwrap();
        assert_eq!(
            check(&big, &limits).unwrap_err().status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }
}
