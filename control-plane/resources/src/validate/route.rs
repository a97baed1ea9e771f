//! `HTTPRoute`: parents, rules, matches and backends; then each rule's filters
//! ([`super::filters`]), timeouts and retry.

use std::collections::BTreeSet;
use std::time::Duration;

use super::{dns_label, duration, filters, regex, MAX_BACKEND_REFS, MAX_MATCHES};
use super::{MAX_PARENT_REFS, MAX_REGEX_LEN, MAX_RULES, MAX_VALUE_MATCHES, MAX_WEIGHT};
use crate::spec::{
    HttpRouteSpec, MatchSpec, Metadata, PathType, RetrySpec, RuleSpec, ServiceRefSpec,
    TimeoutsSpec, ValueMatchSpec, ValueType,
};
use crate::{ResourceError, NON_IDEMPOTENT_RETRY_ANNOTATION};

/// Most retries per request: more only multiplies load during an outage, which the
/// retry budget would cut short anyway.
pub const MAX_RETRY_ATTEMPTS: i64 = 10;

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Validates (and normalizes: header names lowercase) a route's spec; `at` is its path.
pub(super) fn route(at: &str, spec: &mut HttpRouteSpec) -> Result<(), ResourceError> {
    parent_refs(at, &spec.parent_refs)?;
    if spec.rules.len() > MAX_RULES {
        return Err(ResourceError::new(
            format!("{at}.rules"),
            format!("at most {MAX_RULES} rules per route"),
        ));
    }
    for (i, rule) in spec.rules.iter_mut().enumerate() {
        route_rule(&format!("{at}.rules[{i}]"), rule)?;
    }
    Ok(())
}

/// A route's `parentRefs` (HTTPRoute and GRPCRoute alike): 1..=32 Services, named with an
/// explicit `kind`; `at` is the spec's path.
pub(super) fn parent_refs(at: &str, refs: &[ServiceRefSpec]) -> Result<(), ResourceError> {
    if refs.is_empty() {
        return Err(ResourceError::new(
            format!("{at}.parentRefs"),
            "at least one parentRef (kind: Service) is required",
        ));
    }
    if refs.len() > MAX_PARENT_REFS {
        return Err(ResourceError::new(
            format!("{at}.parentRefs"),
            format!("at most {MAX_PARENT_REFS} parentRefs"),
        ));
    }
    for (i, p) in refs.iter().enumerate() {
        let pat = format!("{at}.parentRefs[{i}]");
        if p.kind.is_none() {
            return Err(ResourceError::new(
                format!("{pat}.kind"),
                "required: Service (Gateway parents are not supported)",
            ));
        }
        service_ref(&pat, p)?;
        if p.weight.is_some() {
            return Err(ResourceError::new(
                format!("{pat}.weight"),
                "not allowed in a parentRef",
            ));
        }
        if p.filters.is_some() {
            return Err(ResourceError::new(
                format!("{pat}.filters"),
                "not allowed in a parentRef",
            ));
        }
    }
    Ok(())
}

/// The route annotations Tandem reads: `retry.tandem.dev/non-idempotent` must be `"true"`
/// or `"false"`, so a typo does not silently leave POST retries off.
pub(super) fn annotations(at: &str, meta: &Metadata) -> Result<(), ResourceError> {
    match meta.annotations.get(NON_IDEMPOTENT_RETRY_ANNOTATION) {
        None => Ok(()),
        Some(v) if v == "true" || v == "false" => Ok(()),
        Some(v) => Err(ResourceError::new(
            format!("{at}.metadata.annotations[{NON_IDEMPOTENT_RETRY_ANNOTATION}]"),
            format!("{v:?} must be \"true\" or \"false\""),
        )),
    }
}

/// A parentRef, backendRef or mirror backendRef: a Service by name.
pub(super) fn service_ref(at: &str, r: &ServiceRefSpec) -> Result<(), ResourceError> {
    if let Some(group) = &r.group {
        if !group.is_empty() && group != "core" {
            return Err(ResourceError::new(
                format!("{at}.group"),
                format!("{group:?} is not supported: use \"\" or \"core\""),
            ));
        }
    }
    if let Some(kind) = &r.kind {
        if kind != "Service" {
            return Err(ResourceError::new(
                format!("{at}.kind"),
                format!("{kind:?} is not supported: use Service"),
            ));
        }
    }
    dns_label(&format!("{at}.name"), &r.name)?;
    if let Some(ns) = &r.namespace {
        dns_label(&format!("{at}.namespace"), ns)?;
    }
    if r.port == Some(0) {
        return Err(ResourceError::new(
            format!("{at}.port"),
            "must be 1..=65535",
        ));
    }
    Ok(())
}

fn route_rule(at: &str, rule: &mut RuleSpec) -> Result<(), ResourceError> {
    if rule.matches.len() > MAX_MATCHES {
        return Err(ResourceError::new(
            format!("{at}.matches"),
            format!("at most {MAX_MATCHES} matches per rule"),
        ));
    }
    for (i, m) in rule.matches.iter_mut().enumerate() {
        route_match(&format!("{at}.matches[{i}]"), m)?;
    }
    backend_refs(at, &rule.backend_refs)?;
    filters::rule_filters(at, rule)?;
    if let Some(t) = &rule.timeouts {
        timeouts(&format!("{at}.timeouts"), t)?;
    }
    if let Some(r) = &rule.retry {
        retry(&format!("{at}.retry"), r)?;
    }
    Ok(())
}

/// A rule's `backendRefs` (HTTPRoute and GRPCRoute alike): at most 16 Services, weights
/// 0..=1000000, no per-backend filters; `at` is the rule's path.
pub(super) fn backend_refs(at: &str, refs: &[ServiceRefSpec]) -> Result<(), ResourceError> {
    if refs.len() > MAX_BACKEND_REFS {
        return Err(ResourceError::new(
            format!("{at}.backendRefs"),
            format!("at most {MAX_BACKEND_REFS} backendRefs per rule"),
        ));
    }
    for (i, b) in refs.iter().enumerate() {
        let bat = format!("{at}.backendRefs[{i}]");
        service_ref(&bat, b)?;
        match b.weight {
            Some(w) if w < 0 => {
                return Err(ResourceError::new(format!("{bat}.weight"), "must be ≥ 0"))
            }
            Some(w) if w > MAX_WEIGHT => {
                return Err(ResourceError::new(
                    format!("{bat}.weight"),
                    format!("must be ≤ {MAX_WEIGHT}"),
                ))
            }
            _ => {}
        }
        if b.filters.is_some() {
            return Err(ResourceError::new(
                format!("{bat}.filters"),
                "per-backend filters are not supported: put the filters on the rule",
            ));
        }
    }
    Ok(())
}

/// `request` and `backendRequest`; `backendRequest` ≤ `request` unless `request` is `0s`
/// (no timeout), as Gateway API's own validation rule says.
fn timeouts(at: &str, t: &TimeoutsSpec) -> Result<(), ResourceError> {
    let request = t
        .request
        .as_deref()
        .map(|s| duration(&format!("{at}.request"), s))
        .transpose()?;
    let backend = t
        .backend_request
        .as_deref()
        .map(|s| duration(&format!("{at}.backendRequest"), s))
        .transpose()?;
    if let (Some(request), Some(backend)) = (request, backend) {
        if request != Duration::ZERO && backend > request {
            return Err(ResourceError::new(
                format!("{at}.backendRequest"),
                format!(
                    "{:?} is longer than the request timeout {:?}",
                    t.backend_request.as_deref().unwrap_or_default(),
                    t.request.as_deref().unwrap_or_default()
                ),
            ));
        }
    }
    Ok(())
}

fn retry(at: &str, r: &RetrySpec) -> Result<(), ResourceError> {
    let mut seen = BTreeSet::new();
    for (i, code) in r.codes.iter().enumerate() {
        let cat = format!("{at}.codes[{i}]");
        if !(400..=599).contains(code) {
            return Err(ResourceError::new(cat, format!("{code} is not 400..=599")));
        }
        if !seen.insert(*code) {
            return Err(ResourceError::new(cat, format!("{code} is listed twice")));
        }
    }
    if let Some(n) = r.attempts {
        if !(0..=MAX_RETRY_ATTEMPTS).contains(&n) {
            return Err(ResourceError::new(
                format!("{at}.attempts"),
                format!("must be 0..={MAX_RETRY_ATTEMPTS}"),
            ));
        }
    }
    if let Some(b) = &r.backoff {
        duration(&format!("{at}.backoff"), b)?;
    }
    Ok(())
}

fn route_match(at: &str, m: &mut MatchSpec) -> Result<(), ResourceError> {
    if let Some(path) = &m.path {
        let pat = format!("{at}.path.value");
        match path.kind {
            PathType::Exact | PathType::PathPrefix => {
                if !path.value.starts_with('/') {
                    return Err(ResourceError::new(pat, "must start with '/'"));
                }
                if path.value.len() > MAX_REGEX_LEN {
                    return Err(ResourceError::new(
                        pat,
                        format!("at most {MAX_REGEX_LEN} bytes"),
                    ));
                }
            }
            PathType::RegularExpression => regex(&pat, &path.value)?,
        }
    }
    if let Some(method) = &m.method {
        if !METHODS.contains(&method.as_str()) {
            return Err(ResourceError::new(
                format!("{at}.method"),
                format!("{method:?} is not one of {}", METHODS.join(", ")),
            ));
        }
    }
    value_matches(&format!("{at}.headers"), &mut m.headers, true)?;
    value_matches(&format!("{at}.queryParams"), &mut m.query_params, false)?;
    Ok(())
}

/// Header (`header`) or query parameter conditions; header names become lowercase.
pub(super) fn value_matches(
    at: &str,
    list: &mut [ValueMatchSpec],
    header: bool,
) -> Result<(), ResourceError> {
    if list.len() > MAX_VALUE_MATCHES {
        return Err(ResourceError::new(
            at,
            format!("at most {MAX_VALUE_MATCHES} entries"),
        ));
    }
    for (i, v) in list.iter_mut().enumerate() {
        let vat = format!("{at}[{i}]");
        if header {
            v.name = super::header_name(&format!("{vat}.name"), &v.name)?;
        } else if v.name.is_empty() {
            return Err(ResourceError::new(
                format!("{vat}.name"),
                "must not be empty",
            ));
        }
        match v.kind {
            ValueType::Exact => {
                if header && http::HeaderValue::from_str(&v.value).is_err() {
                    return Err(ResourceError::new(
                        format!("{vat}.value"),
                        "not a valid header value",
                    ));
                }
            }
            ValueType::RegularExpression => regex(&format!("{vat}.value"), &v.value)?,
        }
    }
    Ok(())
}
