//! HTTPRoute rules → xDS `Route`s: precedence and matches here, actions and filters in
//! [`action`].

use std::cmp::Ordering;
use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::route::v3::{
    header_matcher, query_parameter_matcher, route_match, HeaderMatcher, QueryParameterMatcher,
    Route, RouteMatch as XdsRouteMatch,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, RegexMatcher, StringMatcher};

use super::ports::Resolve;
use super::{action, FAULT_FILTER};
use crate::convert::{pack, ConvertError};
use crate::domain::{FaultInjection, HttpRoute, PathMatch, RouteMatch, RouteRule, StringMatch};

/// `FaultInjection`s by (namespace, name).
pub(super) type Faults = BTreeMap<(String, String), FaultInjection>;

/// One match of one rule of one route, with what precedence needs to order it.
struct Entry<'a> {
    route: &'a HttpRoute,
    rule_index: usize,
    match_index: usize,
    rule: &'a RouteRule,
    matches: &'a RouteMatch,
}

/// Orders two matches by Gateway API precedence (`Less` = evaluated first).
///
/// The spec (HTTPRouteRule.matches): an `Exact` path match first, then the `PathPrefix`
/// with the most characters, then a match with a method, then the most header matches,
/// then the most query param matches; across routes the oldest route (`created`), then
/// `{namespace}/{name}` alphabetically; within a route, the first rule (and the first match
/// of that rule). The place of `RegularExpression` paths is left to implementations: Tandem
/// puts them between `Exact` and `PathPrefix` (longer pattern first), so a prefix such as
/// `/` never shadows a regex.
pub fn precedence(a: &RouteMatch, b: &RouteMatch) -> Ordering {
    fn rank(p: &PathMatch) -> (u8, std::cmp::Reverse<usize>) {
        match p {
            PathMatch::Exact(_) => (0, std::cmp::Reverse(0)),
            PathMatch::Regex(r) => (1, std::cmp::Reverse(r.len())),
            PathMatch::Prefix(p) => (2, std::cmp::Reverse(p.trim_end_matches('/').len())),
        }
    }
    rank(&a.path)
        .cmp(&rank(&b.path))
        .then_with(|| b.method.is_some().cmp(&a.method.is_some()))
        .then_with(|| b.headers.len().cmp(&a.headers.len()))
        .then_with(|| b.query_params.len().cmp(&a.query_params.len()))
}

/// The xDS routes of the HTTPRoutes attached to one service, in precedence order.
pub(super) fn attached_routes(
    attached: &[&HttpRoute],
    faults: &Faults,
    resolve: &Resolve<'_>,
) -> Result<Vec<Route>, ConvertError> {
    let default_match = RouteMatch::default();
    let mut entries = Vec::new();
    for route in attached {
        for (rule_index, rule) in route.rules.iter().enumerate() {
            if rule.matches.is_empty() {
                entries.push(Entry {
                    route,
                    rule_index,
                    match_index: 0,
                    rule,
                    matches: &default_match,
                });
            }
            for (match_index, m) in rule.matches.iter().enumerate() {
                entries.push(Entry {
                    route,
                    rule_index,
                    match_index,
                    rule,
                    matches: m,
                });
            }
        }
    }
    entries.sort_by(|a, b| {
        precedence(a.matches, b.matches)
            .then_with(|| a.route.created.cmp(&b.route.created))
            .then_with(|| {
                (&a.route.namespace, &a.route.name).cmp(&(&b.route.namespace, &b.route.name))
            })
            .then_with(|| a.rule_index.cmp(&b.rule_index))
            .then_with(|| a.match_index.cmp(&b.match_index))
    });
    entries
        .iter()
        .map(|e| xds_route(e, faults, resolve))
        .collect()
}

fn xds_route(e: &Entry<'_>, faults: &Faults, resolve: &Resolve<'_>) -> Result<Route, ConvertError> {
    let path = format!(
        "HTTPRoute[{}/{}].rules[{}]",
        e.route.namespace, e.route.name, e.rule_index
    );
    let m_path = format!("{path}.matches[{}]", e.match_index);
    let filters = &e.rule.filters;
    // Gateway API: an `ExtensionRef` that does not resolve makes the rule answer 500.
    let fault = match &filters.fault {
        None => Ok(None),
        Some(name) => faults
            .get(&(e.route.namespace.clone(), name.clone()))
            .map(Some)
            .ok_or(()),
    };
    let action = match (&fault, &filters.redirect) {
        (Err(()), _) => action::no_backend(),
        (Ok(_), Some(redirect)) => action::redirect(
            redirect,
            e.matches,
            &format!("{path}.filters.requestRedirect"),
        )?,
        (Ok(_), None) => action::forward(e.rule, e.matches, &path, resolve)?,
    };
    let mut route = Route {
        name: format!(
            "{}/{}/rule-{}/match-{}",
            e.route.namespace, e.route.name, e.rule_index, e.match_index
        ),
        r#match: Some(xds_match(e.matches, &m_path)?),
        action: Some(action),
        request_headers_to_add: action::header_options(&filters.request_headers),
        request_headers_to_remove: filters.request_headers.remove.clone(),
        response_headers_to_add: action::header_options(&filters.response_headers),
        response_headers_to_remove: filters.response_headers.remove.clone(),
        ..Default::default()
    };
    // A single key: the map's encoding order cannot vary, so the resource hash is stable
    // (a second key needs a sorted mirror, see `convert::canonical`).
    if let Ok(Some(fault)) = fault {
        route
            .typed_per_filter_config
            .insert(FAULT_FILTER.to_string(), pack(&action::http_fault(fault)));
    }
    Ok(route)
}

fn check_regex(re: &str, path: &str) -> Result<(), ConvertError> {
    regex::Regex::new(re)
        .map(|_| ())
        .map_err(|e| ConvertError::new(path, format!("invalid regex: {e}")))
}

fn string_matcher(m: &StringMatch, path: &str) -> Result<StringMatcher, ConvertError> {
    let pattern = match m {
        StringMatch::Exact(v) => string_matcher::MatchPattern::Exact(v.clone()),
        StringMatch::Regex(r) => {
            check_regex(r, path)?;
            string_matcher::MatchPattern::SafeRegex(regex_matcher(r))
        }
    };
    Ok(StringMatcher {
        match_pattern: Some(pattern),
        ignore_case: false,
    })
}

pub(super) fn regex_matcher(re: &str) -> RegexMatcher {
    RegexMatcher {
        regex: re.to_string(),
        ..Default::default()
    }
}

/// The whole-path regex that gives Gateway API `PathPrefix` semantics for `prefix`
/// (trailing `/` ignored, as the spec says): `/a` → `/a(/.*)?`.
fn segment_prefix_regex(prefix: &str) -> String {
    format!("{}(/.*)?", regex::escape(prefix.trim_end_matches('/')))
}

fn xds_match(m: &RouteMatch, path: &str) -> Result<XdsRouteMatch, ConvertError> {
    let path_specifier = match &m.path {
        PathMatch::Exact(p) => route_match::PathSpecifier::Path(p.clone()),
        PathMatch::Prefix(p) if p.trim_end_matches('/').is_empty() => {
            route_match::PathSpecifier::Prefix(String::new())
        }
        PathMatch::Prefix(p) => {
            route_match::PathSpecifier::SafeRegex(regex_matcher(&segment_prefix_regex(p)))
        }
        PathMatch::Regex(r) => {
            check_regex(r, &format!("{path}.path.value"))?;
            route_match::PathSpecifier::SafeRegex(regex_matcher(r))
        }
    };
    let mut headers = Vec::new();
    if let Some(method) = &m.method {
        headers.push(HeaderMatcher {
            name: ":method".to_string(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                StringMatcher {
                    match_pattern: Some(string_matcher::MatchPattern::Exact(method.clone())),
                    ignore_case: false,
                },
            )),
            ..Default::default()
        });
    }
    for (i, h) in m.headers.iter().enumerate() {
        headers.push(HeaderMatcher {
            name: h.name.clone(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                string_matcher(&h.value, &format!("{path}.headers[{i}].value"))?,
            )),
            ..Default::default()
        });
    }
    let query_parameters = m
        .query_params
        .iter()
        .enumerate()
        .map(|(i, q)| {
            Ok(QueryParameterMatcher {
                name: q.name.clone(),
                query_parameter_match_specifier: Some(
                    query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(
                        string_matcher(&q.value, &format!("{path}.queryParams[{i}].value"))?,
                    ),
                ),
            })
        })
        .collect::<Result<_, ConvertError>>()?;
    Ok(XdsRouteMatch {
        path_specifier: Some(path_specifier),
        headers,
        query_parameters,
        ..Default::default()
    })
}
