//! Route filters compiled for the request path: header changes with names and values
//! already parsed, path rewrites with their regex compiled, redirects.

use http::header::{HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, StatusCode, Uri};
use tandem_xds::convert::PathRewriter;
use tandem_xds::domain::{HeaderModifier, PathRewrite, ProxyRedirect};

use super::MatchError;

/// A [`HeaderModifier`] ready to apply.
#[derive(Debug, Default)]
pub struct HeaderEdits {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderEdits {
    /// Parses every name and value; the error names the entry at fault under `at`.
    pub fn compile(m: &HeaderModifier, at: &str) -> Result<Self, MatchError> {
        let pair = |i: usize, kind: &str, name: &str, value: &str| {
            let name = header_name(name, &format!("{at}.{kind}[{i}].name"))?;
            let value = HeaderValue::from_str(value).map_err(|_| MatchError {
                path: format!("{at}.{kind}[{i}].value"),
                reason: "not a valid header value".into(),
            })?;
            Ok::<_, MatchError>((name, value))
        };
        Ok(HeaderEdits {
            set: m
                .set
                .iter()
                .enumerate()
                .map(|(i, h)| pair(i, "set", &h.name, &h.value))
                .collect::<Result<_, _>>()?,
            add: m
                .add
                .iter()
                .enumerate()
                .map(|(i, h)| pair(i, "add", &h.name, &h.value))
                .collect::<Result<_, _>>()?,
            remove: m
                .remove
                .iter()
                .enumerate()
                .map(|(i, n)| header_name(n, &format!("{at}.remove[{i}]")))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Whether it changes nothing (the common case, checked before touching headers).
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Removes, then sets, then appends, as Gateway API orders them.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

fn header_name(name: &str, path: &str) -> Result<HeaderName, MatchError> {
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(|_| MatchError {
        path: path.to_string(),
        reason: format!("{name:?} is not a valid header name"),
    })
}

/// A path change, compiled.
#[derive(Debug)]
pub enum PathEdit {
    /// The whole path is replaced.
    Full(String),
    /// Regex substitution over the path (not the query), RE2 rewrite syntax.
    Regex(PathRewriter),
}

impl PathEdit {
    /// Compiles a rewrite.
    pub fn compile(r: &PathRewrite, at: &str) -> Result<Self, MatchError> {
        match r {
            PathRewrite::Full(p) => Ok(PathEdit::Full(p.clone())),
            PathRewrite::Regex {
                pattern,
                substitution,
            } => PathRewriter::new(pattern, substitution)
                .map(PathEdit::Regex)
                .map_err(|e| MatchError {
                    path: at.to_string(),
                    reason: e.to_string(),
                }),
        }
    }

    /// The new path for `path`.
    pub fn apply(&self, path: &str) -> String {
        match self {
            PathEdit::Full(p) => p.clone(),
            PathEdit::Regex(r) => r.apply(path).into_owned(),
        }
    }

    /// `uri` with its path changed and its query kept.
    pub fn rewrite_uri(&self, uri: &Uri) -> Uri {
        let path = self.apply(uri.path());
        let path = if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        let pq = match uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let mut parts = uri.clone().into_parts();
        match PathAndQuery::try_from(pq) {
            Ok(pq) => parts.path_and_query = Some(pq),
            Err(_) => return uri.clone(),
        }
        Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
    }
}

/// A redirect, compiled.
#[derive(Debug)]
pub struct Redirect {
    scheme: Option<Scheme>,
    host: Option<String>,
    port: Option<u16>,
    path: Option<PathEdit>,
    /// The status answered.
    pub status: StatusCode,
}

impl Redirect {
    /// Checks scheme and status.
    pub fn compile(r: &ProxyRedirect, at: &str) -> Result<Self, MatchError> {
        let err = |field: &str, reason: String| MatchError {
            path: format!("{at}.{field}"),
            reason,
        };
        let scheme = r
            .scheme
            .as_deref()
            .map(|s| match s {
                "http" => Ok(Scheme::HTTP),
                "https" => Ok(Scheme::HTTPS),
                other => Err(err("scheme", format!("unsupported scheme {other:?}"))),
            })
            .transpose()?;
        let status = StatusCode::from_u16(r.status)
            .ok()
            .filter(|s| s.is_redirection())
            .ok_or_else(|| err("status", format!("{} is not a redirect status", r.status)))?;
        Ok(Redirect {
            scheme,
            host: r.host.clone(),
            port: r.port,
            path: r
                .path
                .as_ref()
                .map(|p| PathEdit::compile(p, &format!("{at}.path")))
                .transpose()?,
            status,
        })
    }

    /// The `Location` for a request to `uri` at `authority`; the scheme is `http` unless
    /// the request said otherwise (plaintext mesh traffic).
    pub fn location(&self, uri: &Uri, authority: Option<&Authority>) -> String {
        let scheme = self
            .scheme
            .clone()
            .or_else(|| uri.scheme().cloned())
            .unwrap_or(Scheme::HTTP);
        let host = self
            .host
            .clone()
            .or_else(|| authority.map(|a| a.host().to_string()))
            .unwrap_or_default();
        // A scheme change drops the old port (the new scheme's default applies), as the
        // Gateway API spec says; otherwise the request's port is kept.
        let port = self.port.or_else(|| {
            if self.scheme.is_some() && self.scheme.as_ref() != uri.scheme() {
                None
            } else {
                authority.and_then(Authority::port_u16)
            }
        });
        let default_port = if scheme == Scheme::HTTPS { 443 } else { 80 };
        let port = match port {
            Some(p) if p != default_port => format!(":{p}"),
            _ => String::new(),
        };
        let path = match &self.path {
            Some(edit) => edit.rewrite_uri(uri),
            None => uri.clone(),
        };
        let pq = path.path_and_query().map_or("/", PathAndQuery::as_str);
        format!("{scheme}://{host}{port}{pq}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_xds::domain::Header;

    #[test]
    fn header_edits_remove_set_add_in_order() {
        let m = HeaderModifier {
            set: vec![Header {
                name: "X-Env".into(),
                value: "canary".into(),
            }],
            add: vec![Header {
                name: "x-tag".into(),
                value: "b".into(),
            }],
            remove: vec!["x-secret".into()],
        };
        let e = HeaderEdits::compile(&m, "r").unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-env", "prod".parse().unwrap());
        h.insert("x-tag", "a".parse().unwrap());
        h.insert("x-secret", "s".parse().unwrap());
        e.apply(&mut h);
        assert_eq!(h["x-env"], "canary");
        assert_eq!(h.get_all("x-tag").iter().count(), 2);
        assert!(h.get("x-secret").is_none());
        let bad = HeaderModifier {
            set: vec![Header {
                name: "bad name".into(),
                value: "v".into(),
            }],
            ..Default::default()
        };
        assert_eq!(
            HeaderEdits::compile(&bad, "r").unwrap_err().path,
            "r.set[0].name"
        );
    }

    #[test]
    fn regex_rewrite_keeps_the_query_and_translates_groups() {
        let edit = PathEdit::compile(
            &PathRewrite::Regex {
                pattern: "^/api/v(\\d+)".into(),
                substitution: "/v\\1/api".into(),
            },
            "r",
        )
        .unwrap();
        let uri: Uri = "/api/v2/users?x=1".parse().unwrap();
        assert_eq!(edit.rewrite_uri(&uri), "/v2/api/users?x=1");
    }

    #[test]
    fn redirect_location_changes_only_what_it_says() {
        let r = Redirect::compile(
            &ProxyRedirect {
                scheme: Some("https".into()),
                host: None,
                port: None,
                path: Some(PathRewrite::Full("/new".into())),
                status: 301,
            },
            "r",
        )
        .unwrap();
        let auth: Authority = "web:8080".parse().unwrap();
        let uri: Uri = "/old?q=1".parse().unwrap();
        assert_eq!(r.location(&uri, Some(&auth)), "https://web/new?q=1");
        assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    }
}
