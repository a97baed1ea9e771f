//! Route-level traffic management: filters, redirects, rewrites, mirrors and faults,
//! round trip and rejections (timeouts and retries in `retry`), plus the shared fixture.

use std::time::Duration as StdDuration;

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::route::v3::{redirect_action, route, Route, RouteAction};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{fault_abort, HttpFault};
use envoy_types::pb::envoy::r#type::v3::{fractional_percent::DenominatorType, FractionalPercent};

use super::*;
use crate::convert::to_xds::{FAULT_FILTER, ROUTER_FILTER};

pub(super) const WEB_RC: &str =
    "RouteConfiguration[web.default.svc.cluster.local].virtual_hosts[0]";

fn h(name: &str, value: &str) -> Header {
    Header {
        name: name.into(),
        value: value.into(),
    }
}

pub(super) fn ms(ms: u64) -> StdDuration {
    StdDuration::from_millis(ms)
}

fn web_rule(m: RouteMatch, backends: Vec<Backend>, filters: RouteFilters) -> RouteRule {
    RouteRule {
        matches: vec![m],
        backends,
        filters,
        ..Default::default()
    }
}

/// `web` (virtual) routes to web-v1/web-v2 with every traffic feature; `shadow` only
/// receives mirrored traffic.
pub(super) fn traffic_mesh() -> MeshConfig {
    let mut m = MeshConfig {
        services: [
            service("web", AppProtocol::Http),
            service("web-v1", AppProtocol::Http),
            service("web-v2", AppProtocol::Http),
            service("shadow", AppProtocol::Http),
        ]
        .into_iter()
        .collect(),
        ..Default::default()
    };
    m.endpoints
        .insert(svc("shadow"), vec![endpoint("shadow", "10.0.9.1:80", None)]);
    let everything = RouteRule {
        matches: vec![prefix("/api/")],
        backends: vec![backend("web-v1", 1)],
        filters: RouteFilters {
            request_headers: HeaderModifier {
                set: vec![h("x-set", "1")],
                add: vec![h("x-add", "2"), h("x-empty", "")],
                remove: vec!["x-gone".into()],
            },
            response_headers: HeaderModifier {
                set: vec![h("x-resp", "yes")],
                add: vec![],
                remove: vec!["server".into()],
            },
            redirect: None,
            rewrite: Some(UrlRewrite {
                hostname: Some("internal.web".into()),
                path: Some(PathModifier::ReplacePrefixMatch("/v1".into())),
            }),
            mirrors: vec![RequestMirror {
                backend: svc("shadow"),
                fraction: Fraction::from_percent(25.0),
            }],
            fault: Some("chaos".into()),
        },
        timeouts: RouteTimeouts {
            request: Some(StdDuration::from_secs(5)),
            backend_request: Some(StdDuration::from_secs(1)),
        },
        retry: Some(RetryPolicy {
            attempts: 3,
            codes: vec![503, 502],
            backoff: ms(50),
            non_idempotent: false,
        }),
    };
    let redirect_full = web_rule(
        RouteMatch {
            path: PathMatch::Exact("/old".into()),
            ..Default::default()
        },
        vec![],
        RouteFilters {
            redirect: Some(RequestRedirect {
                scheme: Some("https".into()),
                hostname: Some("example.com".into()),
                path: Some(PathModifier::ReplaceFullPath("/new".into())),
                port: Some(8443),
                status_code: 308,
            }),
            ..Default::default()
        },
    );
    let redirect_prefix = web_rule(
        prefix("/legacy"),
        vec![],
        RouteFilters {
            redirect: Some(RequestRedirect {
                scheme: None,
                hostname: None,
                path: Some(PathModifier::ReplacePrefixMatch("/modern".into())),
                port: None,
                status_code: 302,
            }),
            ..Default::default()
        },
    );
    let dangling = web_rule(
        prefix("/broken"),
        vec![backend("web-v2", 1)],
        RouteFilters {
            fault: Some("missing".into()),
            ..Default::default()
        },
    );
    let full_rewrite = RouteRule {
        timeouts: RouteTimeouts {
            request: Some(StdDuration::ZERO),
            backend_request: Some(ms(250)),
        },
        ..web_rule(
            prefix("/full"),
            vec![backend("web-v2", 1)],
            RouteFilters {
                rewrite: Some(UrlRewrite {
                    hostname: None,
                    path: Some(PathModifier::ReplaceFullPath("/index.html".into())),
                }),
                ..Default::default()
            },
        )
    };
    let split = RouteRule {
        retry: Some(RetryPolicy {
            attempts: 2,
            codes: vec![],
            backoff: DEFAULT_RETRY_BACKOFF,
            non_idempotent: true,
        }),
        ..rule(vec![], vec![backend("web-v1", 90), backend("web-v2", 10)])
    };
    let route = HttpRoute {
        namespace: "default".into(),
        name: "traffic".into(),
        parents: vec![svc("web")],
        parent_ports: Default::default(),
        rules: vec![
            everything,
            redirect_full,
            redirect_prefix,
            dangling,
            full_rewrite,
            split,
        ],
        created: 1,
    };
    m.routes.insert(("default".into(), "traffic".into()), route);
    m.faults.insert(
        ("default".into(), "chaos".into()),
        FaultInjection {
            delay: Some(FaultDelay {
                duration: ms(100),
                fraction: Fraction::from_percent(10.0),
            }),
            abort: Some(FaultAbort {
                status: 503,
                fraction: Fraction::from_percent(0.5),
            }),
        },
    );
    m
}

pub(super) fn web_routes(view: &ProxyView) -> BTreeMap<String, ProxyRoute> {
    view.route_configs[&fqdn("web")]
        .iter()
        .map(|r| (r.name.clone(), r.clone()))
        .collect()
}

pub(super) fn rule_name(i: usize) -> String {
    format!("default/traffic/rule-{i}/match-0")
}

pub(super) fn view_of(m: &MeshConfig) -> (XdsSnapshot, ProxyView) {
    let snap = to_snapshot(m, "v1").unwrap();
    snap.check_consistent().unwrap();
    let view = to_proxy_view(snap.resources()).unwrap();
    (snap, view)
}

/// Rewrites resource `name` of type `T` in a copy of `res`.
pub(super) fn edit<T: prost::Message + Name + Default>(
    res: &Resources,
    name: &str,
    f: impl FnOnce(&mut T),
) -> Resources {
    let mut res = res.clone();
    let any = res.get_mut(&T::type_url()).unwrap().get_mut(name).unwrap();
    let mut msg: T = unpack(any, "x").unwrap();
    f(&mut msg);
    *any = pack(&msg);
    res
}

/// Rewrites the HTTP connection manager of listener `name` in a copy of `res`.
pub(super) fn edit_hcm(
    res: &Resources,
    name: &str,
    f: impl FnOnce(&mut HttpConnectionManager),
) -> Resources {
    edit::<Listener>(res, name, |l| {
        let api = l
            .api_listener
            .as_mut()
            .unwrap()
            .api_listener
            .as_mut()
            .unwrap();
        let mut hcm: HttpConnectionManager = unpack(api, "x").unwrap();
        f(&mut hcm);
        *api = pack(&hcm);
    })
}

/// Edits route `i` of web's route configuration.
pub(super) fn edit_web_route(res: &Resources, i: usize, f: impl FnOnce(&mut Route)) -> Resources {
    edit::<RouteConfiguration>(
        res,
        &fqdn("web"),
        |rc| f(&mut rc.virtual_hosts[0].routes[i]),
    )
}

/// Index of the xDS route of rule `i` in web's route configuration.
pub(super) fn xds_index(snap: &XdsSnapshot, rule: usize) -> usize {
    let rc: RouteConfiguration = unpack(snap.get(ROUTE_TYPE, &fqdn("web")).unwrap(), "x").unwrap();
    rc.virtual_hosts[0]
        .routes
        .iter()
        .position(|r| r.name == rule_name(rule))
        .unwrap()
}

pub(super) fn route_action_of(r: &mut Route) -> &mut RouteAction {
    match &mut r.action {
        Some(route::Action::Route(ra)) => ra,
        other => panic!("not a route action: {other:?}"),
    }
}

#[test]
fn header_modifiers_round_trip_with_envoy_append_actions() {
    let (snap, view) = view_of(&traffic_mesh());
    let r = &web_routes(&view)[&rule_name(0)];
    let f = &traffic_mesh().routes[&("default".to_string(), "traffic".to_string())].rules[0]
        .filters
        .clone();
    assert_eq!(r.request_headers, f.request_headers);
    assert_eq!(r.response_headers, f.response_headers);
    let rc: RouteConfiguration = unpack(snap.get(ROUTE_TYPE, &fqdn("web")).unwrap(), "x").unwrap();
    let xr = &rc.virtual_hosts[0].routes[xds_index(&snap, 0)];
    let actions: Vec<(&str, i32, bool)> = xr
        .request_headers_to_add
        .iter()
        .map(|o| {
            (
                o.header.as_ref().unwrap().key.as_str(),
                o.append_action,
                o.keep_empty_value,
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            (
                "x-set",
                HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                false
            ),
            (
                "x-add",
                HeaderAppendAction::AppendIfExistsOrAdd as i32,
                false
            ),
            (
                "x-empty",
                HeaderAppendAction::AppendIfExistsOrAdd as i32,
                true
            ),
        ]
    );
    assert_eq!(xr.request_headers_to_remove, ["x-gone"]);
    assert_eq!(xr.response_headers_to_remove, ["server"]);
}

#[test]
fn header_modifier_rejections_name_the_field() {
    let (snap, _) = view_of(&traffic_mesh());
    let i = xds_index(&snap, 0);
    let res = edit_web_route(snap.resources(), i, |r| {
        r.request_headers_to_add[1].append_action = HeaderAppendAction::AddIfAbsent as i32;
    });
    let err = invalid(&res);
    assert_eq!(
        err.path,
        format!("{WEB_RC}.routes[{i}].request_headers_to_add[1].append_action")
    );
    assert!(err.reason.contains("ADD_IF_ABSENT"), "{err}");
    #[allow(deprecated)]
    let res = edit_web_route(snap.resources(), i, |r| {
        r.response_headers_to_add[0].append =
            Some(envoy_types::pb::google::protobuf::BoolValue { value: true });
    });
    assert_eq!(
        invalid(&res).path,
        format!("{WEB_RC}.routes[{i}].response_headers_to_add[0].append")
    );
    // An empty value without keep_empty_value is dropped, as Envoy does.
    let res = edit_web_route(snap.resources(), i, |r| {
        r.request_headers_to_add[2].keep_empty_value = false;
    });
    let view = to_proxy_view(&res).unwrap();
    assert_eq!(
        web_routes(&view)[&rule_name(0)].request_headers.add,
        [h("x-add", "2")]
    );
}

#[test]
fn redirects_round_trip() {
    let (snap, view) = view_of(&traffic_mesh());
    let routes = web_routes(&view);
    assert_eq!(
        routes[&rule_name(1)].redirect,
        Some(ProxyRedirect {
            scheme: Some("https".into()),
            host: Some("example.com".into()),
            port: Some(8443),
            path: Some(PathRewrite::Full("/new".into())),
            status: 308,
        })
    );
    let prefix = routes[&rule_name(2)].redirect.clone().unwrap();
    assert_eq!(prefix.status, 302);
    assert_eq!(
        (prefix.scheme, prefix.host, prefix.port),
        (None, None, None)
    );
    let Some(PathRewrite::Regex {
        pattern,
        substitution,
    }) = prefix.path
    else {
        panic!("{:?}", prefix.path);
    };
    assert_eq!(
        rewrite_path(&pattern, &substitution, "/legacy/a").unwrap(),
        "/modern/a"
    );
    assert!(routes[&rule_name(1)].clusters.is_empty());

    // Every Gateway API status maps to an Envoy code and back.
    for status in [301, 302, 303, 307, 308] {
        let mut m = traffic_mesh();
        m.routes
            .get_mut(&("default".to_string(), "traffic".to_string()))
            .unwrap()
            .rules[1]
            .filters
            .redirect
            .as_mut()
            .unwrap()
            .status_code = status;
        let (_, view) = view_of(&m);
        assert_eq!(
            web_routes(&view)[&rule_name(1)]
                .redirect
                .as_ref()
                .unwrap()
                .status,
            status
        );
    }
    let mut m = traffic_mesh();
    m.routes
        .get_mut(&("default".to_string(), "traffic".to_string()))
        .unwrap()
        .rules[1]
        .filters
        .redirect
        .as_mut()
        .unwrap()
        .status_code = 300;
    assert_eq!(
        to_snapshot(&m, "v1").unwrap_err().path,
        "HTTPRoute[default/traffic].rules[1].filters.requestRedirect.statusCode"
    );

    // strip_query (Gateway API keeps the query) and prefix_rewrite are refused.
    let i = xds_index(&snap, 1);
    let res = edit_web_route(snap.resources(), i, |r| {
        if let Some(route::Action::Redirect(rd)) = &mut r.action {
            rd.strip_query = true;
        }
    });
    let err = invalid(&res);
    assert_eq!(err.path, format!("{WEB_RC}.routes[{i}].redirect"));
    assert!(err.reason.contains("protobuf field 6"), "{err}");
    let res = edit_web_route(snap.resources(), i, |r| {
        if let Some(route::Action::Redirect(rd)) = &mut r.action {
            rd.path_rewrite_specifier = Some(redirect_action::PathRewriteSpecifier::PrefixRewrite(
                "/x".into(),
            ));
        }
    });
    assert_eq!(
        invalid(&res).path,
        format!("{WEB_RC}.routes[{i}].redirect.prefix_rewrite")
    );
}

#[test]
fn url_rewrites_round_trip_and_apply_gateway_api_semantics() {
    let (snap, view) = view_of(&traffic_mesh());
    let routes = web_routes(&view);
    let api = &routes[&rule_name(0)];
    assert_eq!(api.host_rewrite.as_deref(), Some("internal.web"));
    let Some(PathRewrite::Regex {
        pattern,
        substitution,
    }) = &api.path_rewrite
    else {
        panic!("{:?}", api.path_rewrite);
    };
    // Prefix `/api/` (trailing slash ignored) → `/v1`.
    let rw = PathRewriter::new(pattern, substitution).unwrap();
    for (from, to) in [
        ("/api", "/v1"),
        ("/api/", "/v1/"),
        ("/api/users/7", "/v1/users/7"),
    ] {
        assert_eq!(rw.apply(from), to, "{from}");
    }
    assert_eq!(
        routes[&rule_name(4)].path_rewrite,
        Some(PathRewrite::Full("/index.html".into()))
    );

    // A regex_rewrite from another control plane stays a regex; a bad one is refused.
    let i = xds_index(&snap, 4);
    let res = edit_web_route(snap.resources(), i, |r| {
        let rw = route_action_of(r).regex_rewrite.as_mut().unwrap();
        rw.pattern.as_mut().unwrap().regex = "^/full/(.*)$".into();
        rw.substitution = "/\\1".into();
    });
    let view = to_proxy_view(&res).unwrap();
    assert_eq!(
        web_routes(&view)[&rule_name(4)].path_rewrite,
        Some(PathRewrite::Regex {
            pattern: "^/full/(.*)$".into(),
            substitution: "/\\1".into()
        })
    );
    let res = edit_web_route(snap.resources(), i, |r| {
        route_action_of(r)
            .regex_rewrite
            .as_mut()
            .unwrap()
            .substitution = "/\\2".into();
    });
    let err = invalid(&res);
    assert_eq!(
        err.path,
        format!("{WEB_RC}.routes[{i}].route.regex_rewrite")
    );
    assert!(err.reason.contains("group \\2"), "{err}");
    let res = edit_web_route(snap.resources(), i, |r| {
        route_action_of(r).prefix_rewrite = "/x".into();
    });
    assert_eq!(
        invalid(&res).path,
        format!("{WEB_RC}.routes[{i}].route.prefix_rewrite")
    );

    // ReplacePrefixMatch needs a PathPrefix match (the control plane rejects it earlier).
    let mut m = traffic_mesh();
    m.routes
        .get_mut(&("default".to_string(), "traffic".to_string()))
        .unwrap()
        .rules[0]
        .matches[0]
        .path = PathMatch::Exact("/api".into());
    assert_eq!(
        to_snapshot(&m, "v1").unwrap_err().path,
        "HTTPRoute[default/traffic].rules[0].filters.urlRewrite.path"
    );
}

#[test]
fn mirrors_round_trip_and_bring_their_cluster() {
    let (snap, view) = view_of(&traffic_mesh());
    let api = &web_routes(&view)[&rule_name(0)];
    assert_eq!(
        api.mirrors,
        [ProxyMirror {
            cluster: fqdn("shadow"),
            fraction: Fraction(250_000),
        }]
    );
    // The shadow is referenced only as a mirror, yet has its cluster and endpoints.
    assert_eq!(
        view.clusters[&fqdn("shadow")].endpoints,
        ["10.0.9.1:80".parse::<SocketAddr>().unwrap()]
    );
    // Other denominators are read in parts per million; above the denominator is 100 %.
    let i = xds_index(&snap, 0);
    for (numerator, denominator, ppm) in [
        (5, DenominatorType::Hundred, 50_000),
        (5, DenominatorType::TenThousand, 500),
        (7, DenominatorType::Million, 7),
        (300, DenominatorType::Hundred, 1_000_000),
    ] {
        let res = edit_web_route(snap.resources(), i, |r| {
            route_action_of(r).request_mirror_policies[0]
                .runtime_fraction
                .as_mut()
                .unwrap()
                .default_value = Some(FractionalPercent {
                numerator,
                denominator: denominator as i32,
            });
        });
        let view = to_proxy_view(&res).unwrap();
        assert_eq!(
            web_routes(&view)[&rule_name(0)].mirrors[0].fraction,
            Fraction(ppm)
        );
    }
    // Without the shadow's cluster the set is incomplete, not invalid.
    let mut res = snap.resources().clone();
    res.get_mut(CLUSTER_TYPE).unwrap().remove(&fqdn("shadow"));
    assert!(to_proxy_view(&res).unwrap_err().is_incomplete());
    let res = edit_web_route(snap.resources(), i, |r| {
        route_action_of(r).request_mirror_policies[0].cluster_header = "x-mirror".into();
    });
    assert_eq!(
        invalid(&res).path,
        format!("{WEB_RC}.routes[{i}].route.request_mirror_policies[0]")
    );
}

fn hcm_of(snap: &XdsSnapshot, listener: &str) -> HttpConnectionManager {
    let l: Listener = unpack(snap.get(LISTENER_TYPE, listener).unwrap(), "x").unwrap();
    unpack(l.api_listener.unwrap().api_listener.as_ref().unwrap(), "x").unwrap()
}

#[test]
fn faults_round_trip_with_the_filter_only_where_used() {
    let m = traffic_mesh();
    let (snap, view) = view_of(&m);
    let routes = web_routes(&view);
    assert_eq!(
        routes[&rule_name(0)].fault.as_ref(),
        m.faults.get(&("default".to_string(), "chaos".to_string()))
    );
    // A dangling ExtensionRef answers 500, whatever the backends.
    let broken = &routes[&rule_name(3)];
    assert!(broken.clusters.is_empty() && broken.fault.is_none() && broken.redirect.is_none());
    let names = |l: &str| -> Vec<String> {
        hcm_of(&snap, l)
            .http_filters
            .into_iter()
            .map(|f| f.name)
            .collect()
    };
    assert_eq!(names("web"), [FAULT_FILTER, ROUTER_FILTER]);
    assert_eq!(
        names("web.default.svc.cluster.local"),
        [FAULT_FILTER, ROUTER_FILTER]
    );
    assert_eq!(names("shadow"), [ROUTER_FILTER]);
    // Only the dangling reference left: no fault filter at all.
    let mut m2 = m.clone();
    m2.faults.clear();
    let (snap2, _) = view_of(&m2);
    assert_eq!(
        hcm_of(&snap2, "web").http_filters.len(),
        1,
        "no fault filter without a resolved fault"
    );
    // The per-route config is a plain HTTPFault with MILLION denominators.
    let rc: RouteConfiguration = unpack(snap.get(ROUTE_TYPE, &fqdn("web")).unwrap(), "x").unwrap();
    let xr = &rc.virtual_hosts[0].routes[xds_index(&snap, 0)];
    let fault: HttpFault = unpack(&xr.typed_per_filter_config[FAULT_FILTER], "x").unwrap();
    let abort = fault.abort.unwrap();
    assert_eq!(
        abort.error_type,
        Some(fault_abort::ErrorType::HttpStatus(503))
    );
    assert_eq!(
        abort.percentage,
        Some(FractionalPercent {
            numerator: 5_000,
            denominator: DenominatorType::Million as i32
        })
    );
}

#[test]
fn fault_rejections_name_the_field() {
    let (snap, _) = view_of(&traffic_mesh());
    let i = xds_index(&snap, 0);
    let key = format!("{WEB_RC}.routes[{i}].typed_per_filter_config[{FAULT_FILTER}]");
    let with_fault = |f: &dyn Fn(&mut HttpFault)| {
        edit_web_route(snap.resources(), i, |r| {
            let any = r.typed_per_filter_config.get_mut(FAULT_FILTER).unwrap();
            let mut fault: HttpFault = unpack(any, "x").unwrap();
            f(&mut fault);
            *any = pack(&fault);
        })
    };
    let res = with_fault(&|f| {
        f.delay.as_mut().unwrap().fault_delay_secifier = Some(
            fault_delay::FaultDelaySecifier::HeaderDelay(fault_delay::HeaderDelay {}),
        );
    });
    assert_eq!(invalid(&res).path, format!("{key}.delay.header_delay"));
    let res = with_fault(&|f| {
        f.abort.as_mut().unwrap().error_type = Some(fault_abort::ErrorType::GrpcStatus(14));
    });
    assert_eq!(invalid(&res).path, format!("{key}.abort.grpc_status"));
    let res = with_fault(&|f| {
        f.max_active_faults = Some(envoy_types::pb::google::protobuf::UInt32Value { value: 1 });
    });
    let err = invalid(&res);
    assert_eq!(err.path, key);
    assert!(err.reason.contains("protobuf field 6"), "{err}");
    let res = edit_web_route(snap.resources(), i, |r| {
        let any = r.typed_per_filter_config.remove(FAULT_FILTER).unwrap();
        r.typed_per_filter_config
            .insert("envoy.filters.http.cors".into(), any);
    });
    assert_eq!(
        invalid(&res).path,
        format!("{WEB_RC}.routes[{i}].typed_per_filter_config[envoy.filters.http.cors]")
    );
    // A listener-wide fault is refused: faults are per route.
    let res = edit_hcm(snap.resources(), "web", |hcm| {
        hcm.http_filters[0].config_type =
            Some(http_filter::ConfigType::TypedConfig(pack(&HttpFault {
                upstream_cluster: "x".into(),
                ..Default::default()
            })));
    });
    assert_eq!(
        invalid(&res).path,
        "Listener[web].api_listener.api_listener.http_filters[0].typed_config"
    );
}
