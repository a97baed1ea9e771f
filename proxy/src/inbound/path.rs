//! The request path as authorization must see it: the same path the app will serve.
//!
//! Apps and frameworks decode `%2e`, collapse `//` and resolve `..` before routing, so a
//! rule checked against the raw path could allow `/api/../admin` that the app serves as
//! `/admin`. The inbound side normalizes first (RFC 3986 §6.2.2: unreserved characters
//! decoded, dot segments removed; and merged slashes, as Istio's `merge_slashes`), checks
//! the normalized path, and forwards exactly that path to the app. An encoded `/` or `\`
//! (which apps disagree about) and a raw `\` are refused outright.

use std::borrow::Cow;

/// Why a path cannot be normalized safely (answered `400`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AmbiguousPath(pub &'static str);

/// The normalized form of `path` (without its query); borrowed when already normal.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, AmbiguousPath> {
    if !path.starts_with('/') {
        // `*` (OPTIONS) and the like: nothing a path rule can match.
        return Ok(Cow::Borrowed(path));
    }
    let suspicious =
        path.contains('%') || path.contains("//") || path.contains("/.") || path.contains('\\');
    if !suspicious {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut segments: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing || segments.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// Decodes `%XX` of unreserved characters; keeps other escapes (upper-cased hex).
fn decode_unreserved(path: &str) -> Result<String, AmbiguousPath> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\\' {
            return Err(AmbiguousPath("a backslash in the request path"));
        }
        let escaped = (b == b'%')
            .then(|| path.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match escaped {
            Some(b'/' | b'\\') => {
                return Err(AmbiguousPath(
                    "an encoded slash or backslash in the request path",
                ))
            }
            Some(v) if v.is_ascii_alphanumeric() || b"-._~".contains(&v) => {
                out.push(char::from(v));
                i += 3;
            }
            Some(v) => {
                out.push_str(&format!("%{v:02X}"));
                i += 3;
            }
            // Request targets are ASCII (the parser refuses anything else).
            None => {
                out.push(char::from(b));
                i += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_paths_are_borrowed() {
        for p in ["/", "/api/items", "/a.b/c-d_e~f", "*"] {
            assert!(matches!(normalize(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn dot_segments_escapes_and_slashes_resolve_as_the_app_would() {
        for (raw, want) in [
            ("/api/../admin", "/admin"),
            ("/api/%2e%2e/admin", "/admin"),
            ("/api/%2E%2E/admin", "/admin"),
            ("//admin", "/admin"),
            ("/./admin", "/admin"),
            ("/%61dmin", "/admin"),
            ("/a/b/..", "/a/"),
            ("/a/./", "/a/"),
            ("/../../x", "/x"),
            ("/a//b///c/", "/a/b/c/"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/..", "/"),
        ] {
            assert_eq!(normalize(raw).unwrap(), want, "{raw}");
        }
    }

    #[test]
    fn encoded_slashes_and_backslashes_are_refused() {
        for raw in ["/api%2F..%2Fadmin", "/api%5cadmin", "/api\\admin"] {
            assert!(normalize(raw).is_err(), "{raw}");
        }
    }
}
