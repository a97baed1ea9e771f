//! Route actions: `route` (clusters, rewrites, mirrors, timeouts, retries) and `redirect`.

use envoy_types::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier, redirect_action, route_action, HeaderMatcher,
    RedirectAction, RetryPolicy, RouteAction,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    string_matcher::MatchPattern, RegexMatchAndSubstitute,
};

use super::reject_rest;
use crate::convert::rewrite::literal_substitution;
use crate::convert::to_xds::IDEMPOTENT_METHODS;
use crate::convert::{fraction, std_duration, ConvertError, PathRewriter, FULL_PATH_PATTERN};
use crate::domain::{
    ClusterWeight, Fraction, PathRewrite, ProxyMirror, ProxyRedirect, ProxyRetry, ProxyRoute,
    DEFAULT_RETRY_BACKOFF,
};

/// `route` → the forwarding fields of `out`.
// `total_weight` is deprecated but, when set, must agree with the weights.
#[allow(deprecated)]
pub(super) fn route_action(
    mut ra: RouteAction,
    out: &mut ProxyRoute,
    path: &str,
) -> Result<(), ConvertError> {
    let spec = ra.cluster_specifier.take();
    let host = ra.host_rewrite_specifier.take();
    let regex_rewrite = ra.regex_rewrite.take();
    let mirrors = std::mem::take(&mut ra.request_mirror_policies);
    let timeout = ra.timeout.take();
    let retry = ra.retry_policy.take();
    if !ra.prefix_rewrite.is_empty() {
        return Err(ConvertError::new(
            format!("{path}.prefix_rewrite"),
            "not supported: use regex_rewrite",
        ));
    }
    reject_rest(&ra, path)?;
    out.clusters = clusters(spec, path)?;
    out.host_rewrite = match host {
        None => None,
        Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(h))
            if h.parse::<http::uri::Authority>().is_ok() =>
        {
            Some(h)
        }
        Some(_) => {
            return Err(ConvertError::new(
                path,
                "only host_rewrite_literal with a valid authority is supported as host rewrite",
            ))
        }
    };
    out.path_rewrite = regex_rewrite
        .map(|r| path_rewrite(r, &format!("{path}.regex_rewrite")))
        .transpose()?;
    out.mirrors = mirrors
        .into_iter()
        .enumerate()
        .map(|(i, m)| mirror(m, &format!("{path}.request_mirror_policies[{i}]")))
        .collect::<Result<_, _>>()?;
    // Zero is "no timeout" in Envoy and Gateway API; the domain has no such value, and the
    // control plane reads `0s` as absent too, so zero decodes as `None` (the proxy's own
    // default bounds the request).
    out.timeout = timeout
        .map(|t| std_duration(t, &format!("{path}.timeout")))
        .transpose()?
        .filter(|t| !t.is_zero());
    if let Some(r) = retry {
        retry_policy(r, out, &format!("{path}.retry_policy"))?;
    }
    Ok(())
}

fn clusters(
    spec: Option<route_action::ClusterSpecifier>,
    path: &str,
) -> Result<Vec<ClusterWeight>, ConvertError> {
    use route_action::ClusterSpecifier;
    match spec {
        Some(ClusterSpecifier::Cluster(c)) if !c.is_empty() => Ok(vec![ClusterWeight {
            cluster: c,
            weight: 1,
        }]),
        Some(ClusterSpecifier::Cluster(_)) => Err(ConvertError::new(
            format!("{path}.cluster"),
            "must be non-empty",
        )),
        Some(ClusterSpecifier::WeightedClusters(mut wc)) => {
            let wpath = format!("{path}.weighted_clusters");
            let items = std::mem::take(&mut wc.clusters);
            #[allow(deprecated)]
            let declared_total = wc.total_weight.take();
            reject_rest(&wc, &wpath)?;
            let mut out = Vec::new();
            let mut total: u64 = 0;
            for (i, mut cw) in items.into_iter().enumerate() {
                let cpath = format!("{wpath}.clusters[{i}]");
                let name = std::mem::take(&mut cw.name);
                let weight = cw.weight.take();
                reject_rest(&cw, &cpath)?;
                if name.is_empty() {
                    return Err(ConvertError::new(
                        format!("{cpath}.name"),
                        "must be non-empty",
                    ));
                }
                let weight = weight
                    .ok_or_else(|| ConvertError::new(format!("{cpath}.weight"), "required"))?
                    .value;
                total += u64::from(weight);
                out.push(ClusterWeight {
                    cluster: name,
                    weight,
                });
            }
            if total == 0 {
                return Err(ConvertError::new(wpath, "no cluster has a non-zero weight"));
            }
            if total > u64::from(u32::MAX) {
                return Err(ConvertError::new(wpath, "weights sum above 4294967295"));
            }
            if declared_total.is_some_and(|t| u64::from(t.value) != total) {
                return Err(ConvertError::new(
                    format!("{wpath}.total_weight"),
                    "differs from the sum of the weights",
                ));
            }
            Ok(out)
        }
        Some(_) => Err(ConvertError::new(
            path,
            "unsupported cluster specifier: only cluster and weighted_clusters",
        )),
        None => Err(ConvertError::new(format!("{path}.cluster"), "required")),
    }
}

/// A valid `RegexMatchAndSubstitute`; the whole-path shape Tandem emits for
/// `ReplaceFullPath` comes back as [`PathRewrite::Full`].
fn path_rewrite(mut r: RegexMatchAndSubstitute, path: &str) -> Result<PathRewrite, ConvertError> {
    let pattern = r
        .pattern
        .take()
        .ok_or_else(|| ConvertError::new(format!("{path}.pattern"), "required"))?;
    let substitution = std::mem::take(&mut r.substitution);
    reject_rest(&r, path)?;
    PathRewriter::new(&pattern.regex, &substitution)
        .map_err(|e| ConvertError::new(path, e.to_string()))?;
    if pattern.regex == FULL_PATH_PATTERN {
        if let Some(full) = literal_substitution(&substitution) {
            return Ok(PathRewrite::Full(full));
        }
    }
    Ok(PathRewrite::Regex {
        pattern: pattern.regex,
        substitution,
    })
}

fn mirror(
    mut m: route_action::RequestMirrorPolicy,
    path: &str,
) -> Result<ProxyMirror, ConvertError> {
    let cluster = std::mem::take(&mut m.cluster);
    let runtime = m.runtime_fraction.take();
    // Tracing and the shadow `Host` suffix do not change which requests are mirrored.
    m.trace_sampled = None;
    m.disable_shadow_host_suffix_append = false;
    reject_rest(&m, path)?;
    if cluster.is_empty() {
        return Err(ConvertError::new(
            format!("{path}.cluster"),
            "must be non-empty",
        ));
    }
    let fraction = match runtime {
        None => Fraction::ALL,
        Some(rf) => {
            let rpath = format!("{path}.runtime_fraction");
            if !rf.runtime_key.is_empty() {
                return Err(ConvertError::new(
                    format!("{rpath}.runtime_key"),
                    "runtime overrides are not supported",
                ));
            }
            let dv = rf
                .default_value
                .ok_or_else(|| ConvertError::new(format!("{rpath}.default_value"), "required"))?;
            fraction(&dv, &format!("{rpath}.default_value"))?
        }
    };
    Ok(ProxyMirror { cluster, fraction })
}

/// Retry conditions: connection-level ones are accepted (Tandem always retries requests
/// never written upstream); `5xx`, `gateway-error`, `retriable-4xx` and
/// `retriable-status-codes` become status codes; anything else is refused. Without any
/// condition Envoy does not retry, so only `per_try_timeout` is kept.
fn retry_policy(mut r: RetryPolicy, out: &mut ProxyRoute, path: &str) -> Result<(), ConvertError> {
    let retry_on = std::mem::take(&mut r.retry_on);
    let num_retries = r.num_retries.take();
    let per_try = r.per_try_timeout.take();
    let listed = std::mem::take(&mut r.retriable_status_codes);
    let backoff = r.retry_back_off.take();
    let request_headers = std::mem::take(&mut r.retriable_request_headers);
    reject_rest(&r, path)?;
    // Zero: no per-try limit (as for `timeout`).
    out.per_try_timeout = per_try
        .map(|t| std_duration(t, &format!("{path}.per_try_timeout")))
        .transpose()?
        .filter(|t| !t.is_zero());
    let mut codes: Vec<u16> = Vec::new();
    let mut push = |c: u16| {
        if !codes.contains(&c) {
            codes.push(c);
        }
    };
    let mut any_condition = false;
    for token in retry_on.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        any_condition = true;
        match token {
            "connect-failure" | "refused-stream" | "reset" | "reset-before-request" => {}
            "5xx" => (500..=599).for_each(&mut push),
            "gateway-error" => [502, 503, 504].into_iter().for_each(&mut push),
            "retriable-4xx" => push(409),
            "retriable-status-codes" => {
                for (i, c) in listed.iter().enumerate() {
                    let c = u16::try_from(*c).ok().filter(|c| (100..600).contains(c));
                    match c {
                        Some(c) => push(c),
                        None => {
                            return Err(ConvertError::new(
                                format!("{path}.retriable_status_codes[{i}]"),
                                "not an HTTP status",
                            ))
                        }
                    }
                }
            }
            other => {
                return Err(ConvertError::new(
                    format!("{path}.retry_on"),
                    format!("retry condition {other:?} is not supported"),
                ))
            }
        }
    }
    let (base, max) = match backoff {
        None => (DEFAULT_RETRY_BACKOFF, DEFAULT_RETRY_BACKOFF * 10),
        Some(mut b) => {
            let bpath = format!("{path}.retry_back_off");
            let base = b
                .base_interval
                .take()
                .map(|d| std_duration(d, &format!("{bpath}.base_interval")))
                .transpose()?
                .ok_or_else(|| ConvertError::new(format!("{bpath}.base_interval"), "required"))?;
            let max = b
                .max_interval
                .take()
                .map(|d| std_duration(d, &format!("{bpath}.max_interval")))
                .transpose()?
                .unwrap_or(base.saturating_mul(10));
            if max < base {
                return Err(ConvertError::new(
                    format!("{bpath}.max_interval"),
                    "must not be below base_interval",
                ));
            }
            (base, max)
        }
    };
    let idempotent_only = match request_headers.as_slice() {
        [] => false,
        [only] if is_idempotent_matcher(only) => true,
        _ => {
            return Err(ConvertError::new(
                format!("{path}.retriable_request_headers"),
                format!("only one \":method\" safe_regex {IDEMPOTENT_METHODS:?} is supported"),
            ))
        }
    };
    if any_condition {
        out.retry = Some(ProxyRetry {
            attempts: num_retries.map_or(1, |n| n.value),
            codes,
            backoff_base: base,
            backoff_max: max,
            idempotent_only,
        });
    }
    Ok(())
}

fn is_idempotent_matcher(h: &HeaderMatcher) -> bool {
    let want = HeaderMatcher {
        name: ":method".to_string(),
        header_match_specifier: h.header_match_specifier.clone(),
        ..Default::default()
    };
    let regex_ok = match &h.header_match_specifier {
        Some(HeaderMatchSpecifier::StringMatch(sm)) => {
            !sm.ignore_case
                && matches!(&sm.match_pattern, Some(MatchPattern::SafeRegex(r))
                    if r.regex == IDEMPOTENT_METHODS && r.engine_type.is_none())
        }
        _ => false,
    };
    regex_ok && *h == want
}

/// `redirect` → a [`ProxyRedirect`].
pub(super) fn redirect(mut r: RedirectAction, path: &str) -> Result<ProxyRedirect, ConvertError> {
    use redirect_action::{
        PathRewriteSpecifier, RedirectResponseCode as Code, SchemeRewriteSpecifier,
    };
    let scheme = match r.scheme_rewrite_specifier.take() {
        None | Some(SchemeRewriteSpecifier::HttpsRedirect(false)) => None,
        Some(SchemeRewriteSpecifier::HttpsRedirect(true)) => Some("https".to_string()),
        Some(SchemeRewriteSpecifier::SchemeRedirect(s)) if s.is_empty() => None,
        Some(SchemeRewriteSpecifier::SchemeRedirect(s)) => Some(s.to_ascii_lowercase()),
    };
    let host = Some(std::mem::take(&mut r.host_redirect)).filter(|h| !h.is_empty());
    let port = match std::mem::take(&mut r.port_redirect) {
        0 => None,
        p => Some(
            u16::try_from(p)
                .map_err(|_| ConvertError::new(format!("{path}.port_redirect"), "above 65535"))?,
        ),
    };
    let rpath = match r.path_rewrite_specifier.take() {
        None => None,
        Some(PathRewriteSpecifier::PathRedirect(p)) => Some(PathRewrite::Full(p)),
        Some(PathRewriteSpecifier::RegexRewrite(rw)) => {
            Some(path_rewrite(rw, &format!("{path}.regex_rewrite"))?)
        }
        Some(PathRewriteSpecifier::PrefixRewrite(_)) => {
            return Err(ConvertError::new(
                format!("{path}.prefix_rewrite"),
                "not supported: use regex_rewrite",
            ))
        }
        Some(PathRewriteSpecifier::PathRewrite(_)) => {
            return Err(ConvertError::new(
                format!("{path}.path_rewrite"),
                "not supported: use path_redirect or regex_rewrite",
            ))
        }
    };
    let code = std::mem::take(&mut r.response_code);
    let status = match Code::try_from(code) {
        Ok(Code::MovedPermanently) => 301,
        Ok(Code::Found) => 302,
        Ok(Code::SeeOther) => 303,
        Ok(Code::TemporaryRedirect) => 307,
        Ok(Code::PermanentRedirect) => 308,
        Err(_) => {
            return Err(ConvertError::new(
                format!("{path}.response_code"),
                format!("unknown response code {code}"),
            ))
        }
    };
    // What is left (`strip_query`): Gateway API redirects keep the query.
    reject_rest(&r, path)?;
    Ok(ProxyRedirect {
        scheme,
        host,
        port,
        path: rpath,
        status,
    })
}
