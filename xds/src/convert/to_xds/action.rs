//! What an xDS route does: forward (clusters, rewrites, mirrors, timeouts, retries),
//! redirect, or answer 500; plus the header modifiers and the per-route fault config.

use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValue, HeaderValueOption,
    RuntimeFractionalPercent,
};
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher, redirect_action, retry_policy, route, route_action, weighted_cluster,
    DirectResponseAction, HeaderMatcher, RedirectAction, RetryPolicy as XdsRetryPolicy,
    RouteAction, WeightedCluster,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{
    fault_delay, FaultDelay as XdsFaultDelay,
};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    fault_abort, FaultAbort as XdsFaultAbort, HttpFault,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    string_matcher, RegexMatchAndSubstitute, StringMatcher,
};
use envoy_types::pb::google::protobuf::UInt32Value;

use super::ports::Resolve;
use super::route::regex_matcher;
use super::{CONNECTION_RETRY_ON, IDEMPOTENT_METHODS, NO_BACKEND_STATUS};
use crate::convert::rewrite::{escape_substitution, prefix_rewrite};
use crate::convert::{fractional_percent, pb_duration, ConvertError, FULL_PATH_PATTERN};
use crate::domain::{
    FaultInjection, HeaderModifier, PathMatch, PathModifier, RequestRedirect, RetryPolicy,
    RouteMatch, RouteRule,
};

/// The shortest retry backoff Envoy applies.
const MIN_BACKOFF: std::time::Duration = std::time::Duration::from_millis(1);

/// `direct_response` 500: no backend (Gateway API), or an unresolvable filter.
pub(super) fn no_backend() -> route::Action {
    route::Action::DirectResponse(DirectResponseAction {
        status: NO_BACKEND_STATUS,
        ..Default::default()
    })
}

/// Forward to the rule's backends, or 500 when none has weight.
pub(super) fn forward(
    rule: &RouteRule,
    m: &RouteMatch,
    path: &str,
    resolve: &Resolve<'_>,
) -> Result<route::Action, ConvertError> {
    let total: u64 = rule.backends.iter().map(|b| u64::from(b.weight)).sum();
    if total == 0 {
        return Ok(no_backend());
    }
    if total > u64::from(u32::MAX) {
        return Err(ConvertError::new(
            format!("{path}.backendRefs"),
            "weights sum above 4294967295",
        ));
    }
    let specifier = match rule.backends.as_slice() {
        [only] => route_action::ClusterSpecifier::Cluster(resolve.name(&only.service, only.port)),
        many => route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: many
                .iter()
                .map(|b| weighted_cluster::ClusterWeight {
                    name: resolve.name(&b.service, b.port),
                    weight: Some(UInt32Value { value: b.weight }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
    };
    let filters = &rule.filters;
    let rewrite = filters.rewrite.as_ref();
    let regex_rewrite = match rewrite.and_then(|r| r.path.as_ref()) {
        Some(modifier) => path_rewrite(modifier, m, &format!("{path}.filters.urlRewrite.path"))?,
        None => None,
    };
    Ok(route::Action::Route(RouteAction {
        cluster_specifier: Some(specifier),
        host_rewrite_specifier: rewrite
            .and_then(|r| r.hostname.clone())
            .map(route_action::HostRewriteSpecifier::HostRewriteLiteral),
        regex_rewrite,
        request_mirror_policies: filters
            .mirrors
            .iter()
            .map(|mirror| route_action::RequestMirrorPolicy {
                cluster: resolve.name(&mirror.backend, None),
                runtime_fraction: Some(RuntimeFractionalPercent {
                    default_value: Some(fractional_percent(mirror.fraction)),
                    runtime_key: String::new(),
                }),
                ..Default::default()
            })
            .collect(),
        timeout: rule.timeouts.request.map(pb_duration),
        retry_policy: retry_policy(rule.retry.as_ref(), rule.timeouts.backend_request),
        ..Default::default()
    }))
}

/// The `regex_rewrite` of a path modifier (`None`: the path stays as it is).
fn path_rewrite(
    modifier: &PathModifier,
    m: &RouteMatch,
    path: &str,
) -> Result<Option<RegexMatchAndSubstitute>, ConvertError> {
    let (pattern, substitution) = match modifier {
        PathModifier::ReplaceFullPath(full) => {
            (FULL_PATH_PATTERN.to_string(), escape_substitution(full))
        }
        PathModifier::ReplacePrefixMatch(replacement) => {
            let PathMatch::Prefix(prefix) = &m.path else {
                return Err(ConvertError::new(
                    path,
                    "ReplacePrefixMatch requires a PathPrefix match",
                ));
            };
            match prefix_rewrite(prefix, replacement) {
                Some(pair) => pair,
                None => return Ok(None),
            }
        }
    };
    Ok(Some(RegexMatchAndSubstitute {
        pattern: Some(regex_matcher(&pattern)),
        substitution,
    }))
}

/// Gateway API `RequestRedirect` → `RedirectAction`.
pub(super) fn redirect(
    r: &RequestRedirect,
    m: &RouteMatch,
    path: &str,
) -> Result<route::Action, ConvertError> {
    use redirect_action::{PathRewriteSpecifier, RedirectResponseCode as Code};
    let code = match r.status_code {
        301 => Code::MovedPermanently,
        302 => Code::Found,
        303 => Code::SeeOther,
        307 => Code::TemporaryRedirect,
        308 => Code::PermanentRedirect,
        other => {
            return Err(ConvertError::new(
                format!("{path}.statusCode"),
                format!("{other} is not a redirect status (301, 302, 303, 307, 308)"),
            ))
        }
    };
    let path_rewrite_specifier = match &r.path {
        None => None,
        // A literal path: Envoy's own field for it.
        Some(PathModifier::ReplaceFullPath(full)) => {
            Some(PathRewriteSpecifier::PathRedirect(full.clone()))
        }
        Some(modifier) => path_rewrite(modifier, m, &format!("{path}.path"))?
            .map(PathRewriteSpecifier::RegexRewrite),
    };
    Ok(route::Action::Redirect(RedirectAction {
        scheme_rewrite_specifier: r
            .scheme
            .clone()
            .map(redirect_action::SchemeRewriteSpecifier::SchemeRedirect),
        host_redirect: r.hostname.clone().unwrap_or_default(),
        port_redirect: r.port.map(u32::from).unwrap_or(0),
        path_rewrite_specifier,
        response_code: code as i32,
        strip_query: false,
    }))
}

/// `set` overwrites, `add` appends (remove travels in `*_headers_to_remove`).
pub(super) fn header_options(h: &HeaderModifier) -> Vec<HeaderValueOption> {
    let option = |name: &str, value: &str, action: HeaderAppendAction| HeaderValueOption {
        header: Some(HeaderValue {
            key: name.to_string(),
            value: value.to_string(),
            ..Default::default()
        }),
        append_action: action as i32,
        // Envoy drops empty values unless told not to; Gateway API sets them.
        keep_empty_value: value.is_empty(),
        ..Default::default()
    };
    h.set
        .iter()
        .map(|x| {
            option(
                &x.name,
                &x.value,
                HeaderAppendAction::OverwriteIfExistsOrAdd,
            )
        })
        .chain(
            h.add
                .iter()
                .map(|x| option(&x.name, &x.value, HeaderAppendAction::AppendIfExistsOrAdd)),
        )
        .collect()
}

/// A `FaultInjection` as the fault filter's per-route config.
pub(super) fn http_fault(f: &FaultInjection) -> HttpFault {
    HttpFault {
        delay: f.delay.as_ref().map(|d| XdsFaultDelay {
            percentage: Some(fractional_percent(d.fraction)),
            fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::FixedDelay(pb_duration(
                d.duration,
            ))),
        }),
        abort: f.abort.as_ref().map(|a| XdsFaultAbort {
            percentage: Some(fractional_percent(a.fraction)),
            error_type: Some(fault_abort::ErrorType::HttpStatus(u32::from(a.status))),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The route's retry policy; also the carrier of the per-try timeout, so a rule with a
/// `backendRequest` timeout and no retry gets one without conditions (which retries
/// nothing). `num_retries: 0` is never sent: proxyless gRPC rejects the whole route
/// configuration for it, so zero attempts is "no retry" too.
fn retry_policy(
    retry: Option<&RetryPolicy>,
    per_try: Option<std::time::Duration>,
) -> Option<XdsRetryPolicy> {
    let retry = retry.filter(|r| r.attempts > 0);
    if retry.is_none() && per_try.is_none() {
        return None;
    }
    let mut p = XdsRetryPolicy {
        per_try_timeout: per_try.map(pb_duration),
        ..Default::default()
    };
    if let Some(r) = retry {
        p.retry_on = CONNECTION_RETRY_ON.to_string();
        if !r.codes.is_empty() {
            p.retry_on.push_str(",retriable-status-codes");
        }
        p.retriable_status_codes = r.codes.iter().map(|c| u32::from(*c)).collect();
        p.num_retries = Some(UInt32Value { value: r.attempts });
        // Envoy refuses a zero base and rounds anything below 1 ms up to 1 ms: send that.
        let base = r.backoff.max(MIN_BACKOFF);
        p.retry_back_off = Some(retry_policy::RetryBackOff {
            base_interval: Some(pb_duration(base)),
            max_interval: Some(pb_duration(base.saturating_mul(10))),
        });
        if !r.non_idempotent {
            p.retriable_request_headers = vec![HeaderMatcher {
                name: ":method".to_string(),
                header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                    StringMatcher {
                        match_pattern: Some(string_matcher::MatchPattern::SafeRegex(
                            regex_matcher(IDEMPOTENT_METHODS),
                        )),
                        ignore_case: false,
                    },
                )),
                ..Default::default()
            }];
        }
    }
    Some(p)
}
