//! `RouteConfiguration` → routes in evaluation order: matches here, actions in
//! [`super::action`], filters in [`super::filters`].

use envoy_types::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier, query_parameter_matcher::QueryParameterMatchSpecifier,
    route, route_match::PathSpecifier, HeaderMatcher, QueryParameterMatcher, Route,
    RouteConfiguration, RouteMatch as XdsRouteMatch,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};

use super::filters::{header_modifier, per_filter_config};
use super::{action, reject_rest};
use crate::convert::to_xds::NO_BACKEND_STATUS;
use crate::convert::ConvertError;
use crate::domain::{PathMatch, ProxyRoute, RouteMatch, StringMatch, ValueMatch};

/// The routes of a route configuration's (single) virtual host, in order. Its `domains`
/// are not consulted: the proxy picks the route configuration by listener name.
pub(super) fn route_configuration(
    mut rc: RouteConfiguration,
    path: &str,
) -> Result<Vec<ProxyRoute>, ConvertError> {
    let vhosts = std::mem::take(&mut rc.virtual_hosts);
    rc.name.clear();
    rc.validate_clusters = None;
    rc.metadata = None;
    reject_rest(&rc, path)?;
    if vhosts.len() > 1 {
        return Err(ConvertError::new(
            format!("{path}.virtual_hosts"),
            format!(
                "at most one virtual host is supported, got {}",
                vhosts.len()
            ),
        ));
    }
    let mut out = Vec::new();
    for (i, mut vh) in vhosts.into_iter().enumerate() {
        let vpath = format!("{path}.virtual_hosts[{i}]");
        let routes = std::mem::take(&mut vh.routes);
        vh.name.clear();
        vh.domains.clear();
        vh.metadata = None;
        reject_rest(&vh, &vpath)?;
        for (j, r) in routes.into_iter().enumerate() {
            out.push(one_route(r, &format!("{vpath}.routes[{j}]"))?);
        }
    }
    Ok(out)
}

fn one_route(mut r: Route, path: &str) -> Result<ProxyRoute, ConvertError> {
    let name = std::mem::take(&mut r.name);
    let m = r.r#match.take();
    let action = r.action.take();
    let per_filter = std::mem::take(&mut r.typed_per_filter_config);
    let req_add = std::mem::take(&mut r.request_headers_to_add);
    let req_remove = std::mem::take(&mut r.request_headers_to_remove);
    let resp_add = std::mem::take(&mut r.response_headers_to_add);
    let resp_remove = std::mem::take(&mut r.response_headers_to_remove);
    r.metadata = None;
    r.decorator = None;
    r.stat_prefix.clear();
    reject_rest(&r, path)?;
    let m = m.ok_or_else(|| ConvertError::new(format!("{path}.match"), "required"))?;
    let mut out = ProxyRoute {
        name,
        matches: route_match(m, &format!("{path}.match"))?,
        request_headers: header_modifier(req_add, req_remove, path, "request_headers_to_add")?,
        response_headers: header_modifier(resp_add, resp_remove, path, "response_headers_to_add")?,
        fault: per_filter_config(per_filter, path)?,
        ..Default::default()
    };
    match action {
        Some(route::Action::Route(ra)) => {
            action::route_action(ra, &mut out, &format!("{path}.route"))?
        }
        Some(route::Action::DirectResponse(d)) => {
            if d.status != NO_BACKEND_STATUS || d.body.is_some() || d.body_format.is_some() {
                return Err(ConvertError::new(
                    format!("{path}.direct_response"),
                    "only a 500 without body is supported",
                ));
            }
        }
        Some(route::Action::Redirect(rd)) => {
            out.redirect = Some(action::redirect(rd, &format!("{path}.redirect"))?);
        }
        Some(route::Action::FilterAction(_)) => {
            return Err(unsupported_action(path, "filter_action"));
        }
        Some(route::Action::NonForwardingAction(_)) => {
            return Err(unsupported_action(path, "non_forwarding_action"));
        }
        None => {
            return Err(ConvertError::new(
                format!("{path}.route"),
                "an action is required",
            ))
        }
    };
    Ok(out)
}

fn unsupported_action(path: &str, field: &str) -> ConvertError {
    ConvertError::new(
        format!("{path}.{field}"),
        "unsupported route action: only route, redirect and direct_response",
    )
}

/// `prefix` → the domain's segment prefix when it is `""` or `/`, else a whole-path regex
/// with raw-prefix semantics; the regex shape [`crate::convert::to_xds`] emits for a
/// segment prefix becomes `PathMatch::Prefix` again.
fn route_match(mut m: XdsRouteMatch, path: &str) -> Result<RouteMatch, ConvertError> {
    let spec = m.path_specifier.take();
    let headers = std::mem::take(&mut m.headers);
    let query = std::mem::take(&mut m.query_parameters);
    if m.case_sensitive.take().is_some_and(|b| !b.value) {
        return Err(ConvertError::new(
            format!("{path}.case_sensitive"),
            "case-insensitive path matching is not supported",
        ));
    }
    if m.runtime_fraction.is_some() {
        return Err(ConvertError::new(
            format!("{path}.runtime_fraction"),
            "not supported",
        ));
    }
    reject_rest(&m, path)?;
    let path_match = match spec {
        Some(PathSpecifier::Prefix(p)) if p.is_empty() || p == "/" => PathMatch::Prefix("/".into()),
        Some(PathSpecifier::Prefix(p)) => PathMatch::Regex(format!("{}.*", regex::escape(&p))),
        Some(PathSpecifier::Path(p)) => PathMatch::Exact(p),
        Some(PathSpecifier::PathSeparatedPrefix(p)) => PathMatch::Prefix(p),
        Some(PathSpecifier::SafeRegex(r)) => {
            let rpath = format!("{path}.safe_regex");
            compile(&r.regex, &rpath)?;
            match as_segment_prefix(&r.regex) {
                Some(prefix) => PathMatch::Prefix(prefix),
                None => PathMatch::Regex(r.regex),
            }
        }
        Some(PathSpecifier::ConnectMatcher(_)) => {
            return Err(ConvertError::new(
                format!("{path}.connect_matcher"),
                "not supported",
            ))
        }
        Some(PathSpecifier::PathMatchPolicy(_)) => {
            return Err(ConvertError::new(
                format!("{path}.path_match_policy"),
                "not supported",
            ))
        }
        None => {
            return Err(ConvertError::new(
                format!("{path}.path_specifier"),
                "required",
            ))
        }
    };
    let mut out = RouteMatch {
        path: path_match,
        ..Default::default()
    };
    for (i, h) in headers.into_iter().enumerate() {
        header(h, &mut out, &format!("{path}.headers[{i}]"))?;
    }
    for (i, q) in query.into_iter().enumerate() {
        out.query_params
            .push(query_param(q, &format!("{path}.query_parameters[{i}]"))?);
    }
    Ok(out)
}

fn compile(re: &str, path: &str) -> Result<(), ConvertError> {
    regex::Regex::new(re)
        .map(|_| ())
        .map_err(|e| ConvertError::new(path, format!("invalid regex: {e}")))
}

/// `ESCAPED(/.*)?` with `ESCAPED` = `regex::escape(p)` for a path `p` not ending in `/`
/// → `p`.
fn as_segment_prefix(re: &str) -> Option<String> {
    let lit = re.strip_suffix("(/.*)?")?;
    let mut out = String::new();
    let mut chars = lit.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' { chars.next()? } else { c });
    }
    (out.starts_with('/') && !out.ends_with('/') && regex::escape(&out) == lit).then_some(out)
}

fn string_match(sm: StringMatcher, path: &str) -> Result<StringMatch, ConvertError> {
    if sm.ignore_case {
        return Err(ConvertError::new(
            format!("{path}.ignore_case"),
            "case-insensitive matching is not supported",
        ));
    }
    match sm.match_pattern {
        Some(MatchPattern::Exact(v)) => Ok(StringMatch::Exact(v)),
        Some(MatchPattern::SafeRegex(r)) => {
            compile(&r.regex, &format!("{path}.safe_regex"))?;
            Ok(StringMatch::Regex(r.regex))
        }
        _ => Err(ConvertError::new(
            path,
            "only exact and safe_regex string matches are supported",
        )),
    }
}

// The deprecated `exact_match`/`safe_regex_match` forms are still sent by control planes.
#[allow(deprecated)]
fn header(mut h: HeaderMatcher, out: &mut RouteMatch, path: &str) -> Result<(), ConvertError> {
    let spec = h.header_match_specifier.take();
    let name = std::mem::take(&mut h.name).to_ascii_lowercase();
    reject_rest(&h, path)?;
    let value = match spec {
        Some(HeaderMatchSpecifier::ExactMatch(v)) => StringMatch::Exact(v),
        Some(HeaderMatchSpecifier::SafeRegexMatch(r)) => {
            compile(&r.regex, &format!("{path}.safe_regex_match"))?;
            StringMatch::Regex(r.regex)
        }
        Some(HeaderMatchSpecifier::StringMatch(sm)) => {
            string_match(sm, &format!("{path}.string_match"))?
        }
        _ => {
            return Err(ConvertError::new(
                path,
                "only exact and regex header matches are supported",
            ))
        }
    };
    if name == ":method" {
        match value {
            StringMatch::Exact(m) if out.method.is_none() => out.method = Some(m),
            _ => {
                return Err(ConvertError::new(
                    path,
                    "only one exact :method match is supported",
                ))
            }
        }
    } else if name.starts_with(':') || name.is_empty() {
        return Err(ConvertError::new(
            format!("{path}.name"),
            format!("matching on {name:?} is not supported"),
        ));
    } else {
        out.headers.push(ValueMatch { name, value });
    }
    Ok(())
}

fn query_param(q: QueryParameterMatcher, path: &str) -> Result<ValueMatch, ConvertError> {
    match q.query_parameter_match_specifier {
        Some(QueryParameterMatchSpecifier::StringMatch(sm)) => Ok(ValueMatch {
            name: q.name,
            value: string_match(sm, &format!("{path}.string_match"))?,
        }),
        _ => Err(ConvertError::new(
            path,
            "only exact and regex query parameter matches are supported",
        )),
    }
}
