//! Stage 5, rewrite: the route's request edits — header changes, then the path, then the
//! host — before the request is copied for retries and mirrors, so every attempt and every
//! shadow carries the same edited request.

use http::request::Parts;
use http::uri::{Authority, PathAndQuery};
use http::Uri;

use super::route::{HeaderEdits, PathEdit};

/// The request edits of one route.
#[derive(Debug, Clone, Copy)]
pub struct RequestEdits<'a> {
    /// Header changes.
    pub headers: &'a HeaderEdits,
    /// A new path.
    pub path: Option<&'a PathEdit>,
    /// A new `Host` / `:authority`.
    pub host: Option<&'a Authority>,
}

impl RequestEdits<'_> {
    /// Applies the edits to a request head; returns the authority the upstream is to see
    /// (the rewritten host, else the one the client named).
    pub fn apply(&self, parts: &mut Parts, authority: Option<Authority>) -> Option<Authority> {
        if !self.headers.is_empty() {
            self.headers.apply(&mut parts.headers);
        }
        if let Some(edit) = self.path {
            parts.uri = edit.rewrite_uri(&parts.uri);
        }
        let Some(host) = self.host else {
            return authority;
        };
        // The new host replaces both places the old one could be named.
        parts.headers.remove(http::header::HOST);
        if parts.uri.authority().is_some() {
            parts.uri = Uri::from(
                parts
                    .uri
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| PathAndQuery::from_static("/")),
            );
        }
        Some(host.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(uri: &str, host: &str) -> Parts {
        Request::get(uri)
            .header("host", host)
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn a_host_rewrite_replaces_the_host_header_and_an_absolute_target() {
        let none = HeaderEdits::default();
        let host: Authority = "api.internal:8080".parse().unwrap();
        let edits = RequestEdits {
            headers: &none,
            path: None,
            host: Some(&host),
        };
        let mut p = parts("http://web/a?b=1", "web");
        let got = edits.apply(&mut p, Some("web".parse().unwrap()));
        assert_eq!(got, Some(host));
        assert_eq!(p.uri, "/a?b=1");
        assert!(!p.headers.contains_key("host"));
    }

    #[test]
    fn no_edits_leave_the_request_and_its_authority_alone() {
        let none = HeaderEdits::default();
        let edits = RequestEdits {
            headers: &none,
            path: None,
            host: None,
        };
        let mut p = parts("/a", "web");
        let got = edits.apply(&mut p, Some("web".parse().unwrap()));
        assert_eq!(got.unwrap().as_str(), "web");
        assert_eq!(p.uri, "/a");
        assert_eq!(p.headers["host"], "web");
    }
}
