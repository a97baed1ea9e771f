//! Hop-by-hop header handling (RFC 9110 §7.6.1) and request-target rewriting per protocol.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::Version;

/// Headers that describe one connection, never the message (RFC 9110 §7.6.1, plus the
/// non-standard `Proxy-Connection` and `Keep-Alive` that old clients still send, and
/// `HTTP2-Settings`, which only an h2c upgrade uses).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("http2-settings"),
];

/// The cleartext HTTP/2 upgrade token. RFC 9113 §3.1 removed the h2c upgrade: the mesh
/// never carries it (the request goes on as HTTP/1.1, as a server ignoring `Upgrade` may
/// answer it, RFC 9110 §7.8), and HTTP/2 is chosen per connection by prior knowledge.
const H2C: &str = "h2c";

/// Whether the request asks for an HTTP/1.1 protocol switch (WebSocket and the like).
pub fn is_upgrading<B>(req: &http::Request<B>) -> bool {
    req.version() == Version::HTTP_11 && is_upgrade(req.headers())
}

/// Whether a request asks to switch to a protocol the mesh carries (`Connection: upgrade`
/// + `Upgrade` offering something other than `h2c`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    connection_has(headers, "upgrade") && carried_upgrades(headers).next().is_some()
}

/// The protocols `Upgrade` offers, but h2c.
fn carried_upgrades(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| {
            let name = p.split('/').next().unwrap_or(p);
            !p.is_empty() && !name.eq_ignore_ascii_case(H2C)
        })
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers, including any the `Connection` header names.
///
/// With `keep_upgrade`, `Connection: upgrade` and `Upgrade` survive so the upstream sees the
/// protocol switch it must answer. `TE: trailers` survives too: gRPC over HTTP/2 needs it.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none of these: one pass over the names (cheap comparisons of
    // standard headers) avoids a hashed removal per hop-by-hop name on every request.
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            if !(keep_upgrade && name == header::UPGRADE) {
                headers.remove(&name);
            }
        }
    }
    let te_trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    for name in &HOP_BY_HOP {
        if keep_upgrade && (name == header::UPGRADE || name == header::CONNECTION) {
            continue;
        }
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        // Offered beside another protocol, h2c is dropped from the list.
        let carried: Vec<&str> = carried_upgrades(headers).collect();
        let joined = carried.join(", ");
        let current = headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if joined != current || headers.get_all(header::UPGRADE).iter().count() > 1 {
            if let Ok(v) = HeaderValue::from_str(&joined) {
                headers.insert(header::UPGRADE, v);
            }
        }
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// The authority a request names: the URI's (absolute-form or HTTP/2 `:authority`), else `Host`.
pub fn authority(uri: &Uri, headers: &HeaderMap) -> Option<Authority> {
    if let Some(a) = uri.authority() {
        return Some(a.clone());
    }
    let host = headers.get(header::HOST)?;
    Authority::try_from(host.as_bytes()).ok()
}

/// [`set_target`] on a request head.
pub fn retarget(parts: &mut http::request::Parts, authority: Option<&Authority>, to_h2: bool) {
    set_target(
        &mut parts.uri,
        &mut parts.headers,
        &mut parts.version,
        authority,
        to_h2,
    );
}

/// Rewrites the request target and version for the upstream protocol.
///
/// HTTP/1 gets origin-form (`/path?q`) and a `Host` header; HTTP/2 gets an absolute URI
/// whose authority becomes `:authority` — the service name the client used, not the
/// endpoint address, so virtual hosting upstream keeps working.
pub fn set_target(
    uri: &mut Uri,
    headers: &mut HeaderMap,
    version: &mut Version,
    authority: Option<&Authority>,
    to_h2: bool,
) {
    let pq = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    if to_h2 {
        *version = Version::HTTP_2;
        if let Some(a) = authority {
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(uri.scheme().cloned().unwrap_or(Scheme::HTTP));
            parts.authority = Some(a.clone());
            parts.path_and_query = Some(pq);
            if let Ok(u) = Uri::from_parts(parts) {
                *uri = u;
            }
        }
        // `:authority` carries it; a duplicate Host confuses some HTTP/2 servers.
        headers.remove(header::HOST);
    } else {
        *version = Version::HTTP_11;
        if !headers.contains_key(header::HOST) {
            if let Some(a) = authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
                headers.insert(header::HOST, a);
            }
        }
        *uri = Uri::from(pq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_listed_and_standard_hop_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, x-foo"),
            ("x-foo", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers, deflate"),
            ("x-bar", "kept"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["x-bar"], "kept");
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn an_h2c_upgrade_is_not_carried_and_its_headers_go() {
        let mut h = map(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA"),
            ("x-bar", "kept"),
        ]);
        assert!(!is_upgrade(&h), "h2c is not an upgrade the mesh carries");
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-bar"], "kept");
        // Sent without naming it in Connection, HTTP2-Settings still goes.
        let mut h = map(&[("http2-settings", "AAMA")]);
        strip_hop_by_hop(&mut h, false);
        assert!(h.is_empty(), "{h:?}");
        // Offered beside WebSocket, only WebSocket survives.
        let mut h = map(&[("connection", "upgrade"), ("upgrade", "H2C, websocket")]);
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
    }

    #[test]
    fn upgrade_survives_when_tunnelling() {
        let mut h = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("keep-alive", "1"),
        ]);
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert!(!h.contains_key("keep-alive"));
    }

    #[test]
    fn targets_per_protocol() {
        let mut uri: Uri = "http://echo:8080/a?b=1".parse().unwrap();
        let mut h = HeaderMap::new();
        let mut v = Version::HTTP_11;
        let a = authority(&uri, &h).unwrap();
        set_target(&mut uri, &mut h, &mut v, Some(&a), false);
        assert_eq!(uri, "/a?b=1");
        assert_eq!(h["host"], "echo:8080");

        let mut h = map(&[("host", "echo")]);
        let mut uri: Uri = "/x".parse().unwrap();
        let a = authority(&uri, &h).unwrap();
        set_target(&mut uri, &mut h, &mut v, Some(&a), true);
        assert_eq!(uri, "http://echo/x");
        assert_eq!(v, Version::HTTP_2);
        assert!(!h.contains_key("host"));
    }
}
