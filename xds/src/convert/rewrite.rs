//! Path rewriting with the semantics of Envoy's `RegexMatchAndSubstitute`: every match of
//! an RE2 pattern in the path is replaced by a substitution in which `\1`… name capture
//! groups (RE2 `GlobalReplace`).
//!
//! Gateway API's `ReplaceFullPath` and `ReplacePrefixMatch` both travel as such a pair
//! (`regex_rewrite`), so one mechanism serves the control plane (which builds the pairs
//! here) and the proxy (which applies them with [`PathRewriter`]). The patterns built here
//! are anchored at the start of the path, so "replace every match" replaces exactly once.

use std::borrow::Cow;

/// The `regex_rewrite` pattern Tandem emits for `ReplaceFullPath`: the whole path, once.
/// `^` anchors to the start of the subject, so after the one (possibly empty) match no
/// other position can match again.
pub const FULL_PATH_PATTERN: &str = "^.*$";

/// A `regex_rewrite` pattern or substitution that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRewrite(pub String);

/// A compiled `RegexMatchAndSubstitute`: build it once per route, apply it per request.
///
/// ```
/// use tandem_xds::convert::PathRewriter;
/// let r = PathRewriter::new(r"^/api/(v[0-9]+)", r"/\1/internal").unwrap();
/// assert_eq!(r.apply("/api/v2/users"), "/v2/internal/users");
/// ```
#[derive(Debug, Clone)]
pub struct PathRewriter {
    regex: regex::Regex,
    /// The substitution in the `regex` crate's syntax (`${1}`, `$$`).
    replacement: String,
}

impl PathRewriter {
    /// Compiles `pattern` (RE2 syntax; the `regex` crate accepts the linear-time subset
    /// Envoy allows) and `substitution` (RE2 rewrite syntax: `\0`…`\9` name groups, `\\` is a
    /// backslash, any other `\` is an error, as in RE2).
    pub fn new(pattern: &str, substitution: &str) -> Result<Self, InvalidRewrite> {
        let regex = regex::Regex::new(pattern)
            .map_err(|e| InvalidRewrite(format!("invalid regex: {e}")))?;
        let groups = regex.captures_len() - 1;
        let mut replacement = String::with_capacity(substitution.len() + 4);
        let mut chars = substitution.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('\\') => replacement.push('\\'),
                    Some(d @ '0'..='9') => {
                        let n = d as usize - '0' as usize;
                        if n > groups {
                            return Err(InvalidRewrite(format!(
                                "substitution references group \\{n}, the pattern has {groups}"
                            )));
                        }
                        // Braces: `$1a` would name a group `1a` in the regex crate.
                        replacement.push_str(&format!("${{{n}}}"));
                    }
                    _ => {
                        return Err(InvalidRewrite(
                            "substitution: `\\` must be followed by a digit or `\\`".into(),
                        ))
                    }
                },
                '$' => replacement.push_str("$$"),
                c => replacement.push(c),
            }
        }
        Ok(PathRewriter { regex, replacement })
    }

    /// The rewritten path: every non-overlapping match replaced.
    pub fn apply<'a>(&self, path: &'a str) -> Cow<'a, str> {
        self.regex.replace_all(path, self.replacement.as_str())
    }
}

/// Applies one `regex_rewrite` to `path` (compiling it each time: for tests and one-offs;
/// a proxy keeps a [`PathRewriter`]).
///
/// ```
/// assert_eq!(tandem_xds::convert::rewrite_path("^/foo", "/xyz", "/foo/bar").unwrap(), "/xyz/bar");
/// ```
pub fn rewrite_path(
    pattern: &str,
    substitution: &str,
    path: &str,
) -> Result<String, InvalidRewrite> {
    Ok(PathRewriter::new(pattern, substitution)?
        .apply(path)
        .into_owned())
}

/// `literal` as an RE2 substitution that inserts it unchanged.
pub(crate) fn escape_substitution(literal: &str) -> String {
    literal.replace('\\', "\\\\")
}

/// The literal a substitution inserts, when it references no capture group.
pub(crate) fn literal_substitution(substitution: &str) -> Option<String> {
    let mut out = String::with_capacity(substitution.len());
    let mut chars = substitution.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next()? {
                '\\' => out.push('\\'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// The `(pattern, substitution)` of Gateway API `ReplacePrefixMatch` `replacement` for a
/// rule matched by `PathPrefix` `prefix`; `None` when it changes no path (prefix `/`,
/// replacement `/`).
///
/// Both sides are taken without a trailing `/` (the spec's table treats `/foo` and `/foo/`
/// alike). With `P` the prefix and `R` the replacement:
/// - `R` empty: `^P/?` → `/` (`/foo` → `/`, `/foo/bar` → `/bar`);
/// - `P` empty (prefix `/`): `^/` → `R/` (`/bar` → `/x/bar`);
/// - otherwise `^P` → `R` (`/foo` → `/xyz`, `/foo/bar` → `/xyz/bar`).
///
/// The match is segment-wise, so the path is `P`, or `P/` followed by more: the anchored
/// pattern meets exactly the matched prefix.
pub(crate) fn prefix_rewrite(prefix: &str, replacement: &str) -> Option<(String, String)> {
    let p = prefix.trim_end_matches('/');
    let r = replacement.trim_end_matches('/');
    match (p.is_empty(), r.is_empty()) {
        (true, true) => None,
        (false, true) => Some((format!("^{}/?", regex::escape(p)), "/".to_string())),
        (true, false) => Some(("^/".to_string(), format!("{}/", escape_substitution(r)))),
        (false, false) => Some((format!("^{}", regex::escape(p)), escape_substitution(r))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(p: &str, r: &str, path: &str) -> String {
        match prefix_rewrite(p, r) {
            Some((pat, sub)) => rewrite_path(&pat, &sub, path).unwrap(),
            None => path.to_string(),
        }
    }

    /// Gateway API's `HTTPPathModifier` table, plus the `/` prefix.
    #[test]
    fn replace_prefix_match_follows_gateway_api() {
        let table = [
            // (prefix match, replacement, request path, result)
            ("/foo", "/xyz", "/foo/bar", "/xyz/bar"),
            ("/foo", "/xyz/", "/foo/bar", "/xyz/bar"),
            ("/foo/", "/xyz", "/foo/bar", "/xyz/bar"),
            ("/foo/", "/xyz/", "/foo/bar", "/xyz/bar"),
            ("/foo", "/xyz", "/foo", "/xyz"),
            ("/foo", "/xyz", "/foo/", "/xyz/"),
            ("/foo", "", "/foo/bar", "/bar"),
            ("/foo", "", "/foo/", "/"),
            ("/foo", "", "/foo", "/"),
            ("/foo", "/", "/foo/", "/"),
            ("/foo", "/", "/foo", "/"),
            ("/foo", "/", "/foo/bar", "/bar"),
            ("/", "/x", "/bar", "/x/bar"),
            ("/", "/x", "/", "/x/"),
            ("/", "/", "/bar", "/bar"),
            // Regex characters in the prefix are literal; `\` and `$` in the replacement too.
            ("/a.b", "/c$1\\d", "/a.b/e", "/c$1\\d/e"),
            ("/a.b", "/c", "/axb/e", "/axb/e"),
        ];
        for (p, r, path, want) in table {
            assert_eq!(prefix(p, r, path), want, "prefix {p:?} → {r:?} on {path:?}");
        }
    }

    #[test]
    fn full_path_replaces_once() {
        for path in ["/", "/a/b", ""] {
            assert_eq!(
                rewrite_path(FULL_PATH_PATTERN, &escape_substitution("/new"), path).unwrap(),
                "/new"
            );
        }
        assert_eq!(
            literal_substitution(&escape_substitution("/a\\b")),
            Some("/a\\b".into())
        );
        assert_eq!(literal_substitution("/\\1"), None);
    }

    #[test]
    fn substitutions_translate_groups_and_reject_bad_escapes() {
        assert_eq!(
            rewrite_path("^/(a)(b)", "/\\2\\1x", "/abc").unwrap(),
            "/baxc"
        );
        assert!(rewrite_path("^/(a)", "\\2", "/a").is_err());
        assert!(rewrite_path("^/a", "\\n", "/a").is_err());
        assert!(rewrite_path("^/a", "x\\", "/a").is_err());
        assert!(rewrite_path("(", "x", "/a").is_err());
        // Without an anchor every match is replaced, as RE2 GlobalReplace does.
        assert_eq!(rewrite_path("o", "0", "/foo/boo").unwrap(), "/f00/b00");
    }
}
