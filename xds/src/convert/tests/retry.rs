//! Timeouts and retries: round trip, Envoy defaults for foreign policies, rejections.

use std::time::Duration as StdDuration;

use envoy_types::pb::envoy::config::route::v3::{header_matcher, retry_policy, HeaderMatcher};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher, StringMatcher};

use super::traffic::{
    edit_web_route, ms, route_action_of, rule_name, traffic_mesh, view_of, web_routes, xds_index,
    WEB_RC,
};
use super::*;

#[test]
fn timeouts_round_trip_and_zero_means_no_timeout() {
    let (snap, view) = view_of(&traffic_mesh());
    let routes = web_routes(&view);
    let api = &routes[&rule_name(0)];
    assert_eq!(api.timeout, Some(StdDuration::from_secs(5)));
    assert_eq!(api.per_try_timeout, Some(StdDuration::from_secs(1)));
    // backendRequest without retry: a RetryPolicy with no retries carries it.
    let full = &routes[&rule_name(4)];
    // Zero (no timeout) is emitted for Envoy, and read back as no route timeout.
    assert_eq!(full.timeout, None);
    assert_eq!(full.per_try_timeout, Some(ms(250)));
    assert_eq!(full.retry, None);
    let rc: RouteConfiguration = unpack(snap.get(ROUTE_TYPE, &fqdn("web")).unwrap(), "x").unwrap();
    let mut xr = rc.virtual_hosts[0].routes[xds_index(&snap, 4)].clone();
    let rp = route_action_of(&mut xr).retry_policy.clone().unwrap();
    // No conditions: nothing is retried; no `num_retries: 0`, which gRPC rejects.
    assert_eq!(rp.num_retries, None);
    assert!(rp.retry_on.is_empty());
    // No timeouts set: Envoy's `timeout` stays unset (the proxy's default applies).
    assert_eq!(routes[&rule_name(5)].timeout, None);
    let i = xds_index(&snap, 4);
    let res = edit_web_route(snap.resources(), i, |r| {
        route_action_of(r).timeout = Some(Duration {
            seconds: -1,
            nanos: 0,
        });
    });
    assert_eq!(
        invalid(&res).path,
        format!("{WEB_RC}.routes[{i}].route.timeout")
    );
}

#[test]
fn retries_round_trip_with_the_idempotent_flag() {
    let (_, view) = view_of(&traffic_mesh());
    let routes = web_routes(&view);
    assert_eq!(
        routes[&rule_name(0)].retry,
        Some(ProxyRetry {
            attempts: 3,
            codes: vec![503, 502],
            backoff_base: ms(50),
            backoff_max: ms(500),
            idempotent_only: true,
        })
    );
    assert_eq!(
        routes[&rule_name(5)].retry,
        Some(ProxyRetry {
            attempts: 2,
            codes: vec![],
            backoff_base: DEFAULT_RETRY_BACKOFF,
            backoff_max: DEFAULT_RETRY_BACKOFF * 10,
            idempotent_only: false,
        })
    );
}

#[test]
fn backoff_below_envoys_floor_is_sent_as_one_millisecond() {
    let mut m = traffic_mesh();
    m.routes
        .get_mut(&("default".to_string(), "traffic".to_string()))
        .unwrap()
        .rules[5]
        .retry
        .as_mut()
        .unwrap()
        .backoff = StdDuration::ZERO;
    let (_, view) = view_of(&m);
    let retry = web_routes(&view)[&rule_name(5)].retry.clone().unwrap();
    assert_eq!((retry.backoff_base, retry.backoff_max), (ms(1), ms(10)));
}

#[test]
fn zero_attempts_send_no_retry_policy() {
    let mut m = traffic_mesh();
    m.routes
        .get_mut(&("default".to_string(), "traffic".to_string()))
        .unwrap()
        .rules[5]
        .retry
        .as_mut()
        .unwrap()
        .attempts = 0;
    let (snap, view) = view_of(&m);
    assert_eq!(web_routes(&view)[&rule_name(5)].retry, None);
    let rc: RouteConfiguration = unpack(snap.get(ROUTE_TYPE, &fqdn("web")).unwrap(), "x").unwrap();
    let mut xr = rc.virtual_hosts[0].routes[xds_index(&snap, 5)].clone();
    assert_eq!(route_action_of(&mut xr).retry_policy, None);
}

#[test]
fn foreign_retry_policies_decode_with_envoy_defaults() {
    let (snap, _) = view_of(&traffic_mesh());
    let i = xds_index(&snap, 5);
    let with_retry = |f: &dyn Fn(&mut envoy_types::pb::envoy::config::route::v3::RetryPolicy)| {
        edit_web_route(snap.resources(), i, |r| {
            f(route_action_of(r).retry_policy.as_mut().unwrap())
        })
    };
    let res = with_retry(&|p| {
        p.retry_on = "gateway-error, connect-failure,retriable-4xx".into();
        p.num_retries = None;
        p.retry_back_off = None;
    });
    let retry = web_routes(&to_proxy_view(&res).unwrap())[&rule_name(5)]
        .retry
        .clone()
        .unwrap();
    assert_eq!(retry.codes, [502, 503, 504, 409]);
    assert_eq!(retry.attempts, 1, "Envoy's default num_retries");
    assert_eq!(retry.backoff_base, ms(25));
    assert_eq!(retry.backoff_max, ms(250));
    let res = with_retry(&|p| p.retry_on = "5xx".into());
    let retry = web_routes(&to_proxy_view(&res).unwrap())[&rule_name(5)]
        .retry
        .clone()
        .unwrap();
    assert_eq!(retry.codes, (500..=599).collect::<Vec<u16>>());

    let path = format!("{WEB_RC}.routes[{i}].route.retry_policy");
    let res = with_retry(&|p| p.retry_on = "5xx,envoy-ratelimited".into());
    let err = invalid(&res);
    assert_eq!(err.path, format!("{path}.retry_on"));
    assert!(err.reason.contains("envoy-ratelimited"), "{err}");
    let res = with_retry(&|p| {
        p.retriable_request_headers = vec![HeaderMatcher {
            name: ":method".into(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                StringMatcher {
                    match_pattern: Some(string_matcher::MatchPattern::Exact("GET".into())),
                    ignore_case: false,
                },
            )),
            ..Default::default()
        }]
    });
    assert_eq!(
        invalid(&res).path,
        format!("{path}.retriable_request_headers")
    );
    let res = with_retry(&|p| {
        p.retry_back_off = Some(retry_policy::RetryBackOff {
            base_interval: Some(Duration {
                seconds: 1,
                nanos: 0,
            }),
            max_interval: Some(Duration {
                seconds: 0,
                nanos: 5,
            }),
        })
    });
    assert_eq!(
        invalid(&res).path,
        format!("{path}.retry_back_off.max_interval")
    );
    let res = with_retry(&|p| p.host_selection_retry_max_attempts = 3);
    let err = invalid(&res);
    assert_eq!(err.path, path);
    assert!(err.reason.contains("protobuf field 6"), "{err}");
}
