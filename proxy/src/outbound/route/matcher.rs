//! Request matching for one route: path, method, headers and query parameters, compiled once
//! per snapshot so that matching a request allocates nothing.

use http::{HeaderMap, Method, Uri};
use regex::Regex;
use tandem_xds::domain::{PathMatch, RouteMatch, StringMatch, ValueMatch};

/// Why a match could not be compiled.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct MatchError {
    /// Field within the match.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

/// A compiled [`RouteMatch`].
#[derive(Debug, Clone)]
pub struct Matcher {
    path: PathMatcher,
    method: Option<Method>,
    headers: Vec<(http::HeaderName, ValueMatcher)>,
    query: Vec<(String, ValueMatcher)>,
}

#[derive(Debug, Clone)]
enum PathMatcher {
    Exact(String),
    /// Gateway API `PathPrefix`: whole `/`-separated segments; stored without a trailing `/`.
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug, Clone)]
enum ValueMatcher {
    Exact(String),
    Regex(Regex),
}

impl ValueMatcher {
    fn matches(&self, v: &str) -> bool {
        match self {
            ValueMatcher::Exact(e) => e == v,
            ValueMatcher::Regex(r) => r.is_match(v),
        }
    }
}

/// Anchors a pattern so it must match the whole value, as Gateway API and Envoy require.
fn whole(pattern: &str, path: &str) -> Result<Regex, MatchError> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .build()
        .map_err(|e| MatchError {
            path: path.to_string(),
            reason: format!("invalid regular expression: {e}"),
        })
}

fn value_matcher(m: &StringMatch, path: &str) -> Result<ValueMatcher, MatchError> {
    Ok(match m {
        StringMatch::Exact(v) => ValueMatcher::Exact(v.clone()),
        StringMatch::Regex(r) => ValueMatcher::Regex(whole(r, path)?),
    })
}

impl Matcher {
    /// Compiles `m`; `at` prefixes error paths.
    pub fn compile(m: &RouteMatch, at: &str) -> Result<Self, MatchError> {
        let path = match &m.path {
            PathMatch::Exact(p) => PathMatcher::Exact(p.clone()),
            PathMatch::Prefix(p) => PathMatcher::Prefix(p.trim_end_matches('/').to_string()),
            PathMatch::Regex(r) => PathMatcher::Regex(whole(r, &format!("{at}.path"))?),
        };
        let method = match &m.method {
            Some(name) => Some(Method::from_bytes(name.as_bytes()).map_err(|_| MatchError {
                path: format!("{at}.method"),
                reason: format!("invalid method {name:?}"),
            })?),
            None => None,
        };
        let headers = m
            .headers
            .iter()
            .enumerate()
            .map(|(i, ValueMatch { name, value })| {
                let at = format!("{at}.headers[{i}]");
                let name =
                    http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| MatchError {
                        path: format!("{at}.name"),
                        reason: format!("invalid header name {name:?}"),
                    })?;
                Ok((name, value_matcher(value, &format!("{at}.value"))?))
            })
            .collect::<Result<_, MatchError>>()?;
        let query = m
            .query_params
            .iter()
            .enumerate()
            .map(|(i, ValueMatch { name, value })| {
                Ok((
                    name.clone(),
                    value_matcher(value, &format!("{at}.query_params[{i}].value"))?,
                ))
            })
            .collect::<Result<_, MatchError>>()?;
        Ok(Matcher {
            path,
            method,
            headers,
            query,
        })
    }

    /// Whether a request with this method, target and headers satisfies every condition.
    pub fn matches(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> bool {
        let path = uri.path();
        let path_ok = match &self.path {
            PathMatcher::Exact(p) => path == p,
            PathMatcher::Prefix(p) => {
                p.is_empty()
                    || (path.starts_with(p.as_str())
                        && matches!(path.as_bytes().get(p.len()), None | Some(b'/')))
            }
            PathMatcher::Regex(r) => r.is_match(path),
        };
        if !path_ok {
            return false;
        }
        if self.method.as_ref().is_some_and(|m| m != method) {
            return false;
        }
        // A repeated header matches if any of its values does.
        let headers_ok = self.headers.iter().all(|(name, want)| {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| want.matches(v))
        });
        if !headers_ok {
            return false;
        }
        if self.query.is_empty() {
            return true;
        }
        let query = uri.query().unwrap_or("");
        self.query.iter().all(|(name, want)| {
            query
                .split('&')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k == name).then_some(v)
                })
                .next()
                .is_some_and(|v| want.matches(v))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> (Method, Uri, HeaderMap) {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        (method.parse().unwrap(), uri.parse().unwrap(), h)
    }

    fn check(m: &RouteMatch, method: &str, uri: &str, headers: &[(&str, &str)]) -> bool {
        let (me, u, h) = req(method, uri, headers);
        Matcher::compile(m, "m").unwrap().matches(&me, &u, &h)
    }

    #[test]
    fn prefix_matches_whole_segments() {
        let m = RouteMatch {
            path: PathMatch::Prefix("/api/".into()),
            ..Default::default()
        };
        assert!(check(&m, "GET", "/api", &[]));
        assert!(check(&m, "GET", "/api/v1", &[]));
        assert!(!check(&m, "GET", "/apix", &[]));
        assert!(check(&RouteMatch::default(), "GET", "/anything", &[]));
    }

    #[test]
    fn exact_regex_method_headers_query() {
        let m = RouteMatch {
            path: PathMatch::Regex("/users/[0-9]+".into()),
            method: Some("POST".into()),
            headers: vec![ValueMatch {
                name: "x-canary".into(),
                value: StringMatch::Exact("1".into()),
            }],
            query_params: vec![ValueMatch {
                name: "v".into(),
                value: StringMatch::Regex("[ab]".into()),
            }],
        };
        assert!(check(&m, "POST", "/users/42?v=a", &[("x-canary", "1")]));
        assert!(
            !check(&m, "POST", "/users/42x?v=a", &[("x-canary", "1")]),
            "regex is anchored"
        );
        assert!(!check(&m, "GET", "/users/42?v=a", &[("x-canary", "1")]));
        assert!(!check(&m, "POST", "/users/42?v=c", &[("x-canary", "1")]));
        assert!(!check(&m, "POST", "/users/42?v=a", &[("x-canary", "2")]));
        assert!(check(
            &m,
            "POST",
            "/users/42?v=a",
            &[("x-canary", "2"), ("x-canary", "1")]
        ));
        let exact = RouteMatch {
            path: PathMatch::Exact("/x".into()),
            ..Default::default()
        };
        assert!(check(&exact, "GET", "/x?q=1", &[]));
        assert!(!check(&exact, "GET", "/x/", &[]));
    }

    #[test]
    fn bad_regex_names_its_field() {
        let m = RouteMatch {
            headers: vec![ValueMatch {
                name: "a".into(),
                value: StringMatch::Regex("(".into()),
            }],
            ..Default::default()
        };
        let e = Matcher::compile(&m, "routes[3]").unwrap_err();
        assert_eq!(e.path, "routes[3].headers[0].value");
    }
}
