//! The `filters` of an HTTPRoute rule (Gateway API `HTTPRouteFilter`).
//!
//! Each filter's `type` names the one field that must carry its settings. At most one filter
//! of each type per rule, except `RequestMirror` (Gateway API allows several mirrors);
//! `RequestRedirect` answers the request itself, so it excludes `URLRewrite` and
//! `backendRefs`; `ReplacePrefixMatch` needs every match of the rule to be a `PathPrefix`.

use std::collections::BTreeMap;

use super::route::service_ref;
use super::{dns_label, header_name};
use crate::spec::{
    ExtensionRefSpec, FilterSpec, FilterType, HeaderFilterSpec, MatchSpec, MirrorSpec,
    PathModifierSpec, PathModifierType, PathType, RedirectSpec, RuleSpec, UrlRewriteSpec,
};
use crate::{Kind, ResourceError, TANDEM_GROUP};

/// Most `set`, `add` and `remove` entries each in a header filter (as in Gateway API).
pub const MAX_HEADER_ACTIONS: usize = 16;
/// Longest header value in a header filter (as in Gateway API).
pub const MAX_HEADER_VALUE: usize = 4096;
/// Longest path in a redirect or rewrite (as in Gateway API).
pub const MAX_PATH_LEN: usize = 1024;
/// Redirect status codes Gateway API allows.
pub const REDIRECT_CODES: [i64; 5] = [301, 302, 303, 307, 308];

/// Validates (and normalizes) `rule.filters`; `at` is the rule's path.
pub(super) fn rule_filters(at: &str, rule: &mut RuleSpec) -> Result<(), ResourceError> {
    let first = filter_list(at, &mut rule.filters, &rule.matches)?;
    if let Some(&r) = first.get(&FilterType::RequestRedirect) {
        if let Some(&u) = first.get(&FilterType::UrlRewrite) {
            return Err(ResourceError::new(
                format!("{at}.filters[{}].type", r.max(u)),
                format!(
                    "RequestRedirect (filters[{r}]) and URLRewrite (filters[{u}]) cannot be \
                     combined in one rule"
                ),
            ));
        }
        if !rule.backend_refs.is_empty() {
            return Err(ResourceError::new(
                format!("{at}.filters[{r}]"),
                "a RequestRedirect answers the request itself: the rule must have no backendRefs",
            ));
        }
    }
    Ok(())
}

/// Validates (and normalizes) each filter of a rule on its own, and that no type but
/// `RequestMirror` repeats; `matches` are the rule's (path modifiers need them). Returns
/// the index of the first filter of each type, for the checks across filters.
pub(super) fn filter_list(
    at: &str,
    filters: &mut [FilterSpec],
    matches: &[MatchSpec],
) -> Result<BTreeMap<FilterType, usize>, ResourceError> {
    let mut first: BTreeMap<FilterType, usize> = BTreeMap::new();
    for (i, f) in filters.iter_mut().enumerate() {
        let fat = format!("{at}.filters[{i}]");
        settings_match_type(&fat, f)?;
        if f.kind != FilterType::RequestMirror {
            if let Some(j) = first.get(&f.kind) {
                return Err(ResourceError::new(
                    format!("{fat}.type"),
                    format!("only one {} filter per rule (also filters[{j}])", f.kind),
                ));
            }
        }
        first.entry(f.kind).or_insert(i);
        let field = format!("{fat}.{}", f.kind.field());
        if let Some(h) = &mut f.request_header_modifier {
            header_filter(&field, h)?;
        }
        if let Some(h) = &mut f.response_header_modifier {
            header_filter(&field, h)?;
        }
        if let Some(r) = &f.request_redirect {
            redirect(&field, r, matches)?;
        }
        if let Some(u) = &f.url_rewrite {
            url_rewrite(&field, u, matches)?;
        }
        if let Some(m) = &f.request_mirror {
            mirror(&field, m)?;
        }
        if let Some(e) = &f.extension_ref {
            extension_ref(&field, e)?;
        }
    }
    Ok(first)
}

/// Exactly the settings field of the filter's `type` is set.
fn settings_match_type(at: &str, f: &FilterSpec) -> Result<(), ResourceError> {
    let set = [
        (
            FilterType::RequestHeaderModifier,
            f.request_header_modifier.is_some(),
        ),
        (
            FilterType::ResponseHeaderModifier,
            f.response_header_modifier.is_some(),
        ),
        (FilterType::RequestRedirect, f.request_redirect.is_some()),
        (FilterType::UrlRewrite, f.url_rewrite.is_some()),
        (FilterType::RequestMirror, f.request_mirror.is_some()),
        (FilterType::ExtensionRef, f.extension_ref.is_some()),
    ];
    for (kind, present) in set {
        if present && kind != f.kind {
            return Err(ResourceError::new(
                format!("{at}.{}", kind.field()),
                format!("only allowed when type is {kind} (type is {})", f.kind),
            ));
        }
        if !present && kind == f.kind {
            return Err(ResourceError::new(
                format!("{at}.{}", kind.field()),
                format!("required when type is {kind}"),
            ));
        }
    }
    Ok(())
}

/// Header names become lowercase; one action per header name, as Gateway API requires.
fn header_filter(at: &str, h: &mut HeaderFilterSpec) -> Result<(), ResourceError> {
    let mut actions: BTreeMap<String, String> = BTreeMap::new();
    let mut claim = |path: String, name: &str| -> Result<(), ResourceError> {
        if let Some(other) = actions.get(name) {
            return Err(ResourceError::new(
                path,
                format!("header {name:?} already has an action ({other})"),
            ));
        }
        actions.insert(
            name.to_string(),
            path.rsplit('.').next().unwrap_or_default().into(),
        );
        Ok(())
    };
    for (list, entries) in [("set", &mut h.set), ("add", &mut h.add)] {
        if entries.len() > MAX_HEADER_ACTIONS {
            return Err(ResourceError::new(
                format!("{at}.{list}"),
                format!("at most {MAX_HEADER_ACTIONS} entries"),
            ));
        }
        for (i, e) in entries.iter_mut().enumerate() {
            let eat = format!("{at}.{list}[{i}]");
            e.name = header_name(&format!("{eat}.name"), &e.name)?;
            if e.value.is_empty() || e.value.len() > MAX_HEADER_VALUE {
                return Err(ResourceError::new(
                    format!("{eat}.value"),
                    format!("must be 1..={MAX_HEADER_VALUE} bytes"),
                ));
            }
            if http::HeaderValue::from_str(&e.value).is_err() {
                return Err(ResourceError::new(
                    format!("{eat}.value"),
                    "not a valid header value",
                ));
            }
            claim(eat, &e.name)?;
        }
    }
    if h.remove.len() > MAX_HEADER_ACTIONS {
        return Err(ResourceError::new(
            format!("{at}.remove"),
            format!("at most {MAX_HEADER_ACTIONS} entries"),
        ));
    }
    for (i, name) in h.remove.iter_mut().enumerate() {
        let rat = format!("{at}.remove[{i}]");
        *name = header_name(&rat, name)?;
        claim(rat, name)?;
    }
    Ok(())
}

fn redirect(at: &str, r: &RedirectSpec, matches: &[MatchSpec]) -> Result<(), ResourceError> {
    if let Some(scheme) = &r.scheme {
        if scheme != "http" && scheme != "https" {
            return Err(ResourceError::new(
                format!("{at}.scheme"),
                format!("{scheme:?} is not http or https"),
            ));
        }
    }
    if let Some(host) = &r.hostname {
        precise_hostname(&format!("{at}.hostname"), host)?;
    }
    if let Some(p) = &r.path {
        path_modifier(&format!("{at}.path"), p, matches)?;
    }
    if let Some(port) = r.port {
        if !(1..=65535).contains(&port) {
            return Err(ResourceError::new(
                format!("{at}.port"),
                "must be 1..=65535",
            ));
        }
    }
    if let Some(code) = r.status_code {
        if !REDIRECT_CODES.contains(&code) {
            return Err(ResourceError::new(
                format!("{at}.statusCode"),
                format!("{code} is not one of 301, 302, 303, 307, 308"),
            ));
        }
    }
    Ok(())
}

fn url_rewrite(at: &str, u: &UrlRewriteSpec, matches: &[MatchSpec]) -> Result<(), ResourceError> {
    if let Some(host) = &u.hostname {
        precise_hostname(&format!("{at}.hostname"), host)?;
    }
    if let Some(p) = &u.path {
        path_modifier(&format!("{at}.path"), p, matches)?;
    }
    Ok(())
}

fn path_modifier(
    at: &str,
    p: &PathModifierSpec,
    matches: &[MatchSpec],
) -> Result<(), ResourceError> {
    let (value, other, value_field, other_field) = match p.kind {
        PathModifierType::ReplaceFullPath => (
            &p.replace_full_path,
            &p.replace_prefix_match,
            "replaceFullPath",
            "replacePrefixMatch",
        ),
        PathModifierType::ReplacePrefixMatch => (
            &p.replace_prefix_match,
            &p.replace_full_path,
            "replacePrefixMatch",
            "replaceFullPath",
        ),
    };
    let kind = match p.kind {
        PathModifierType::ReplaceFullPath => "ReplaceFullPath",
        PathModifierType::ReplacePrefixMatch => "ReplacePrefixMatch",
    };
    if other.is_some() {
        return Err(ResourceError::new(
            format!("{at}.{other_field}"),
            format!("not allowed when type is {kind}"),
        ));
    }
    let Some(value) = value else {
        return Err(ResourceError::new(
            format!("{at}.{value_field}"),
            format!("required when type is {kind}"),
        ));
    };
    let vat = format!("{at}.{value_field}");
    // An empty prefix replacement is allowed (`/foo/bar` with prefix `/foo` → `/bar`).
    let empty_ok = p.kind == PathModifierType::ReplacePrefixMatch && value.is_empty();
    if !empty_ok {
        if !value.starts_with('/') {
            return Err(ResourceError::new(vat, "must start with '/'"));
        }
        if value.len() > MAX_PATH_LEN {
            return Err(ResourceError::new(
                vat,
                format!("at most {MAX_PATH_LEN} bytes"),
            ));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#')
        {
            return Err(ResourceError::new(
                vat,
                format!("{value:?} is not a path: printable ASCII without spaces, '?' or '#'"),
            ));
        }
    }
    if p.kind == PathModifierType::ReplacePrefixMatch {
        // A rule without matches, or a match without a path, matches PathPrefix `/`.
        for (i, m) in matches.iter().enumerate() {
            if let Some(path) = &m.path {
                if path.kind != PathType::PathPrefix {
                    return Err(ResourceError::new(
                        format!("{at}.type"),
                        format!(
                            "ReplacePrefixMatch needs every match of the rule to use a \
                             PathPrefix path; matches[{i}] uses {:?}",
                            path.kind
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn mirror(at: &str, m: &MirrorSpec) -> Result<(), ResourceError> {
    let bat = format!("{at}.backendRef");
    service_ref(&bat, &m.backend_ref)?;
    if m.backend_ref.weight.is_some() {
        return Err(ResourceError::new(
            format!("{bat}.weight"),
            "not allowed in a mirror's backendRef",
        ));
    }
    if m.backend_ref.filters.is_some() {
        return Err(ResourceError::new(
            format!("{bat}.filters"),
            "not allowed in a mirror's backendRef",
        ));
    }
    if m.percent.is_some() && m.fraction.is_some() {
        return Err(ResourceError::new(
            format!("{at}.fraction"),
            "give percent or fraction, not both",
        ));
    }
    if let Some(p) = m.percent {
        if !(0..=100).contains(&p) {
            return Err(ResourceError::new(
                format!("{at}.percent"),
                "must be 0..=100",
            ));
        }
    }
    if let Some(f) = &m.fraction {
        let denominator = f.denominator.unwrap_or(100);
        if denominator < 1 || denominator > i64::from(i32::MAX) {
            return Err(ResourceError::new(
                format!("{at}.fraction.denominator"),
                "must be 1..=2147483647",
            ));
        }
        if f.numerator < 0 || f.numerator > denominator {
            return Err(ResourceError::new(
                format!("{at}.fraction.numerator"),
                format!("must be 0..={denominator} (the denominator)"),
            ));
        }
    }
    Ok(())
}

fn extension_ref(at: &str, e: &ExtensionRefSpec) -> Result<(), ResourceError> {
    if e.group != TANDEM_GROUP {
        return Err(ResourceError::new(
            format!("{at}.group"),
            format!("{:?} is not supported: use {TANDEM_GROUP}", e.group),
        ));
    }
    let fault = Kind::FaultInjection.as_str();
    if e.kind != fault {
        return Err(ResourceError::new(
            format!("{at}.kind"),
            format!("{:?} is not supported: use {fault}", e.kind),
        ));
    }
    dns_label(&format!("{at}.name"), &e.name)
}

/// Gateway API `PreciseHostname`: lowercase RFC 1123 labels, no wildcard, ≤ 253 bytes.
fn precise_hostname(at: &str, s: &str) -> Result<(), ResourceError> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if s.len() <= 253 && s.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(ResourceError::new(
            at,
            format!("{s:?} is not a host name: lowercase DNS labels separated by '.'"),
        ))
    }
}
