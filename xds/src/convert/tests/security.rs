//! Zero-trust resources: trust bundle `Secret`, upstream TLS per cluster, inbound listener
//! per workload; round trips for every TLS mode and several rule shapes, and rejections.

use envoy_types::pb::envoy::config::core::v3::{transport_socket, TransportSocket};
use envoy_types::pb::envoy::config::listener::v3::{filter, FilterChain};
use envoy_types::pb::envoy::config::rbac::v3::{permission, principal, rbac, Permission};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::ValidationContextType, secret, subject_alt_name_matcher::SanType,
    tls_parameters::TlsProtocol, DownstreamTlsContext, Secret, SubjectAltNameMatcher,
    TlsCertificate, UpstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};
use envoy_types::pb::google::protobuf::BoolValue;

use super::traffic::edit;
use super::*;
use crate::convert::to_xds::{AUTHZ_ALLOW_FILTER, AUTHZ_DENY_FILTER, TLS_INSPECTOR};

const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n";
const TD: &str = "cluster.local";

fn v1_inbound() -> String {
    inbound_listener_name(&svc("reviews-v1"))
}

fn v1_cluster_path() -> String {
    format!("Cluster[{}]", fqdn("reviews-v1"))
}

/// The shared mesh with identity: reviews-v1 in `mode`, and `policies` (namespace
/// `default`, targeting reviews-v1).
pub(super) fn secure_mesh(
    mode: TlsMode,
    policies: Vec<(AuthzAction, Vec<AuthzRule>)>,
) -> MeshConfig {
    let mut m = mesh();
    m.security = MeshSecurity {
        trust_domain: TD.into(),
        default_action: AuthzDefault::Allow,
        trust_bundle_pem: PEM.into(),
    };
    if let Some(s) = m.services.get_mut(&svc("reviews-v1")) {
        s.tls_mode = mode;
    }
    for (i, (action, rules)) in policies.into_iter().enumerate() {
        let name = format!("p{i}");
        m.authz.insert(
            ("default".into(), name.clone()),
            AuthorizationPolicy {
                namespace: "default".into(),
                name,
                target: Some(svc("reviews-v1")),
                action,
                rules,
            },
        );
    }
    m
}

/// The resources one proxy of reviews-v1 gets: every inbound listener but its own removed.
fn as_v1(res: &Resources) -> Resources {
    let mut res = res.clone();
    let own = v1_inbound();
    if let Some(listeners) = res.get_mut(LISTENER_TYPE) {
        listeners.retain(|n, _| !is_inbound_listener(n) || *n == own);
    }
    res
}

pub(super) fn v1_view(m: &MeshConfig) -> ProxyView {
    let snap = to_snapshot(m, "v1").unwrap();
    snap.check_consistent().unwrap();
    to_proxy_view(&as_v1(snap.resources())).unwrap()
}

pub(super) fn secure_resources() -> Resources {
    let m = secure_mesh(
        TlsMode::Permissive,
        vec![
            (AuthzAction::Deny, vec![rule_from(Principal::Authenticated)]),
            (AuthzAction::Allow, vec![AuthzRule::default()]),
        ],
    );
    as_v1(to_snapshot(&m, "v1").unwrap().resources())
}

fn rule_from(p: Principal) -> AuthzRule {
    AuthzRule {
        from: vec![p],
        ..Default::default()
    }
}

pub(super) fn rule_shapes() -> Vec<AuthzRule> {
    vec![
        AuthzRule::default(),
        AuthzRule {
            from: vec![
                Principal::Identity("spiffe://cluster.local/ns/shop/sa/cart".into()),
                Principal::Namespace("billing".into()),
                Principal::Authenticated,
            ],
            ..Default::default()
        },
        AuthzRule {
            paths: vec![
                PathPattern::Exact("/healthz".into()),
                PathPattern::Prefix("/api/".into()),
                PathPattern::Suffix(".js".into()),
                PathPattern::Any,
            ],
            ..Default::default()
        },
        AuthzRule {
            from: vec![Principal::Namespace("shop".into())],
            methods: vec!["GET".into(), "HEAD".into()],
            ports: vec![9080, 15006],
            ..Default::default()
        },
        AuthzRule {
            paths: vec![PathPattern::Prefix("/admin".into())],
            ports: vec![8443],
            ..Default::default()
        },
    ]
}

pub(super) fn invalid_at(res: &Resources, path: &str) -> ConvertError {
    match to_proxy_view(res) {
        Err(FromXdsError::Invalid(e)) => {
            assert_eq!(e.path, path, "{e}");
            e
        }
        other => panic!("expected Invalid at {path}, got {other:?}"),
    }
}

/// Edits reviews-v1's upstream TLS context.
fn edit_upstream(res: &Resources, f: impl FnOnce(&mut UpstreamTlsContext)) -> Resources {
    edit::<Cluster>(res, &fqdn("reviews-v1"), |c| {
        let Some(transport_socket::ConfigType::TypedConfig(any)) = c
            .transport_socket
            .as_mut()
            .and_then(|t| t.config_type.as_mut())
        else {
            panic!("no TLS transport socket");
        };
        let mut ctx: UpstreamTlsContext = unpack(any, "x").unwrap();
        f(&mut ctx);
        *any = pack(&ctx);
    })
}

/// Edits the HTTP connection manager of filter chain `chain` of reviews-v1's inbound
/// listener.
pub(super) fn edit_inbound_hcm(
    res: &Resources,
    chain: usize,
    f: impl FnOnce(&mut HttpConnectionManager),
) -> Resources {
    edit::<Listener>(res, &v1_inbound(), |l| {
        let Some(filter::ConfigType::TypedConfig(any)) =
            l.filter_chains[chain].filters[0].config_type.as_mut()
        else {
            panic!("no HCM");
        };
        let mut hcm: HttpConnectionManager = unpack(any, "x").unwrap();
        f(&mut hcm);
        *any = pack(&hcm);
    })
}

/// Edits the RBAC config of HTTP filter `i` of chain 0 (in Permissive: the TLS chain) —
/// and of chain 1 alike, so the chains still agree.
fn edit_rbac(res: &Resources, i: usize, f: impl Fn(&mut HttpRbac)) -> Resources {
    let mut out = res.clone();
    for chain in 0..2 {
        out = edit_inbound_hcm(&out, chain, |hcm| {
            let Some(http_filter::ConfigType::TypedConfig(any)) =
                hcm.http_filters[i].config_type.as_mut()
            else {
                panic!("no RBAC");
            };
            let mut r: HttpRbac = unpack(any, "x").unwrap();
            f(&mut r);
            *any = pack(&r);
        });
    }
    out
}

pub(super) const INBOUND: &str = "Listener[inbound|default|reviews-v1]";

#[test]
fn secret_type_url_matches_the_generated_type() {
    assert_eq!(SECRET_TYPE, Secret::type_url());
    assert_eq!(ALL_TYPES[0], SECRET_TYPE, "secrets warm first");
}

#[test]
fn every_mode_and_rule_shape_round_trips() {
    for mode in [TlsMode::Mutual, TlsMode::Permissive, TlsMode::Disabled] {
        let m = secure_mesh(
            mode,
            vec![
                (AuthzAction::Deny, rule_shapes()),
                (AuthzAction::Allow, rule_shapes()),
            ],
        );
        let view = v1_view(&m);
        let want = m.inbound_policy(&svc("reviews-v1"));
        assert_eq!(want.deny.len(), 5);
        assert_eq!(view.inbound, Some(want), "{mode:?}");
        assert_eq!(
            view.trust_bundle,
            Some(TrustBundle {
                roots_pem: PEM.into()
            })
        );
        let tls = &view.clusters[&fqdn("reviews-v1")].tls;
        assert_eq!(*tls, m.upstream_tls(&svc("reviews-v1")), "{mode:?}");
        assert_eq!(tls.is_some(), mode != TlsMode::Disabled);
        // Outbound listeners are untouched by the inbound one.
        assert_eq!(view.listeners.len(), 12);
    }
}

#[test]
fn a_service_running_as_several_accounts_is_called_expecting_any_of_them() {
    let mut m = secure_mesh(TlsMode::Mutual, vec![]);
    if let Some(s) = m.services.get_mut(&svc("reviews-v1")) {
        s.service_accounts = vec!["reviews".into(), "default".into(), "reviews".into()];
    }
    let view = v1_view(&m);
    let tls = view.clusters[&fqdn("reviews-v1")].tls.clone().unwrap();
    assert_eq!(
        tls.identities,
        [
            format!("spiffe://{TD}/ns/default/sa/default"),
            format!("spiffe://{TD}/ns/default/sa/reviews"),
        ]
    );
    assert_eq!(Some(tls), m.upstream_tls(&svc("reviews-v1")));
    // Without accounts, the service's own name is the account (standalone).
    let plain = v1_view(&secure_mesh(TlsMode::Mutual, vec![]));
    assert_eq!(
        plain.clusters[&fqdn("reviews-v1")]
            .tls
            .as_ref()
            .unwrap()
            .identities,
        [format!("spiffe://{TD}/ns/default/sa/reviews-v1")]
    );
}

#[test]
fn allow_and_deny_presence_round_trips() {
    // No policy: no RBAC filter at all, allow None.
    let view = v1_view(&secure_mesh(TlsMode::Mutual, vec![]));
    let inbound = view.inbound.unwrap();
    assert!(inbound.deny.is_empty() && inbound.allow.is_none());
    // Default deny without ALLOW policies: an ALLOW filter with no policy (deny all).
    let mut m = secure_mesh(TlsMode::Mutual, vec![]);
    m.security.default_action = AuthzDefault::Deny;
    assert_eq!(v1_view(&m).inbound.unwrap().allow, Some(vec![]));
    // Deny only.
    let m = secure_mesh(
        TlsMode::Mutual,
        vec![(AuthzAction::Deny, vec![AuthzRule::default()])],
    );
    let inbound = v1_view(&m).inbound.unwrap();
    assert_eq!(inbound.deny, vec![AuthzRule::default()]);
    assert!(inbound.allow.is_none());
}

#[test]
fn any_path_and_root_prefix_are_one_matcher() {
    // `/*` (prefix "/") and `*` say the same thing on the wire; both read back as Any.
    let m = secure_mesh(
        TlsMode::Mutual,
        vec![(
            AuthzAction::Allow,
            vec![AuthzRule {
                paths: vec![PathPattern::Prefix("/".into())],
                ..Default::default()
            }],
        )],
    );
    let allow = v1_view(&m).inbound.unwrap().allow.unwrap();
    assert_eq!(allow[0].paths, vec![PathPattern::Any]);
}

#[test]
fn inbound_listener_shape_per_mode() {
    for (mode, protocols) in [
        (TlsMode::Mutual, vec!["tls"]),
        (TlsMode::Permissive, vec!["tls", "raw_buffer"]),
        (TlsMode::Disabled, vec!["raw_buffer"]),
    ] {
        let m = secure_mesh(
            mode,
            vec![
                (AuthzAction::Deny, rule_shapes()),
                (AuthzAction::Allow, vec![]),
            ],
        );
        let snap = to_snapshot(&m, "v1").unwrap();
        let l: Listener = unpack(snap.get(LISTENER_TYPE, &v1_inbound()).unwrap(), "x").unwrap();
        let got: Vec<&str> = l
            .filter_chains
            .iter()
            .map(|c| {
                c.filter_chain_match
                    .as_ref()
                    .unwrap()
                    .transport_protocol
                    .as_str()
            })
            .collect();
        assert_eq!(got, protocols);
        let inspectors: Vec<&str> = l.listener_filters.iter().map(|f| f.name.as_str()).collect();
        let want: &[&str] = if mode == TlsMode::Disabled {
            &[]
        } else {
            &[TLS_INSPECTOR]
        };
        assert_eq!(inspectors, want);
        for c in &l.filter_chains {
            let tls = c.filter_chain_match.as_ref().unwrap().transport_protocol == "tls";
            assert_eq!(c.transport_socket.is_some(), tls);
            let Some(filter::ConfigType::TypedConfig(any)) = &c.filters[0].config_type else {
                panic!()
            };
            let hcm: HttpConnectionManager = unpack(any, "x").unwrap();
            let names: Vec<&str> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
            assert_eq!(
                names,
                [AUTHZ_DENY_FILTER, AUTHZ_ALLOW_FILTER, to_xds::ROUTER_FILTER]
            );
        }
    }
}

#[test]
fn no_trust_bundle_means_no_secret_no_inbound_and_plaintext_clusters() {
    let mut m = secure_mesh(TlsMode::Mutual, vec![]);
    m.security.trust_bundle_pem.clear();
    let snap = to_snapshot(&m, "v1").unwrap();
    assert_eq!(snap.of_type(SECRET_TYPE).count(), 0);
    assert!(!snap
        .of_type(LISTENER_TYPE)
        .any(|(n, _)| is_inbound_listener(n)));
    let c: Cluster = unpack(snap.get(CLUSTER_TYPE, &fqdn("reviews-v1")).unwrap(), "x").unwrap();
    assert!(c.transport_socket.is_none());
    let view = to_proxy_view(snap.resources()).unwrap();
    assert!(view.inbound.is_none() && view.trust_bundle.is_none());
}

#[test]
fn snapshot_bytes_are_deterministic() {
    // RBAC policies are a protobuf map; its encoding must not follow HashMap order, or every
    // rebuild would look like a change and push to every stream.
    let m = secure_mesh(
        TlsMode::Permissive,
        vec![
            (AuthzAction::Deny, rule_shapes()),
            (AuthzAction::Allow, rule_shapes()),
        ],
    );
    let a = to_snapshot(&m, "v1").unwrap();
    for _ in 0..5 {
        let b = to_snapshot(&m, "v1").unwrap();
        assert_eq!(
            a.get(LISTENER_TYPE, &v1_inbound()),
            b.get(LISTENER_TYPE, &v1_inbound())
        );
    }
}

#[test]
fn the_whole_snapshot_is_consistent_but_one_proxy_gets_one_inbound_listener() {
    let m = secure_mesh(TlsMode::Mutual, vec![]);
    let snap = to_snapshot(&m, "v1").unwrap();
    snap.check_consistent().unwrap();
    assert_eq!(
        snap.of_type(LISTENER_TYPE)
            .filter(|(n, _)| is_inbound_listener(n))
            .count(),
        3
    );
    let err = invalid_at(
        snap.resources(),
        &format!("Listener[{}]", inbound_listener_name(&svc("reviews-v1"))),
    );
    assert_eq!(err.reason, "more than one inbound listener");
}

#[test]
fn malformed_trust_bundles_are_invalid() {
    let res = secure_resources();
    let bad = edit::<Secret>(&res, TRUST_BUNDLE_SECRET, |s| {
        s.r#type = Some(secret::Type::TlsCertificate(TlsCertificate::default()));
    });
    invalid_at(&bad, "Secret[ROOTCA].tls_certificate");

    let bad = edit::<Secret>(&res, TRUST_BUNDLE_SECRET, |s| {
        if let Some(secret::Type::ValidationContext(v)) = &mut s.r#type {
            v.match_typed_subject_alt_names
                .push(SubjectAltNameMatcher::default());
        }
    });
    invalid_at(&bad, "Secret[ROOTCA].validation_context");

    let bad = edit::<Secret>(&res, TRUST_BUNDLE_SECRET, |s| {
        if let Some(secret::Type::ValidationContext(v)) = &mut s.r#type {
            v.trusted_ca.as_mut().unwrap().specifier = Some(
                envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineString(
                    "no certificate here".into(),
                ),
            );
        }
    });
    let err = invalid_at(
        &bad,
        "Secret[ROOTCA].validation_context.trusted_ca.inline_string",
    );
    assert!(err.reason.contains("CERTIFICATE"), "{err}");

    // Another name, carrying a valid bundle: still not the trust bundle.
    let mut bad = res.clone();
    let mut other: Secret = unpack(&res[SECRET_TYPE][TRUST_BUNDLE_SECRET], "x").unwrap();
    other.name = "default".into();
    bad.get_mut(SECRET_TYPE)
        .unwrap()
        .insert("default".into(), pack(&other));
    invalid_at(&bad, "Secret[default].name");
}

#[test]
fn upstream_tls_outside_the_mesh_shape_is_invalid() {
    let res = secure_resources();
    let ctx = format!(
        "{}.transport_socket.typed_config.common_tls_context",
        v1_cluster_path()
    );
    let sans = format!(
        "{ctx}.combined_validation_context.default_validation_context.match_typed_subject_alt_names"
    );
    let combined = |ctx: &mut UpstreamTlsContext| match ctx
        .common_tls_context
        .as_mut()
        .unwrap()
        .validation_context_type
        .as_mut()
    {
        Some(ValidationContextType::CombinedValidationContext(c)) => {
            c.default_validation_context.as_mut().unwrap().clone()
        }
        _ => panic!(),
    };
    let set_sans = |ctx: &mut UpstreamTlsContext, sans: Vec<SubjectAltNameMatcher>| {
        if let Some(ValidationContextType::CombinedValidationContext(c)) = ctx
            .common_tls_context
            .as_mut()
            .unwrap()
            .validation_context_type
            .as_mut()
        {
            c.default_validation_context
                .as_mut()
                .unwrap()
                .match_typed_subject_alt_names = sans;
        }
    };

    let bad = edit_upstream(&res, |c| {
        let p = c
            .common_tls_context
            .as_mut()
            .unwrap()
            .tls_params
            .as_mut()
            .unwrap();
        p.tls_minimum_protocol_version = TlsProtocol::TlSv12 as i32;
    });
    invalid_at(
        &bad,
        &format!("{ctx}.tls_params.tls_minimum_protocol_version"),
    );

    let bad = edit_upstream(&res, |c| set_sans(c, vec![]));
    invalid_at(&bad, &sans);

    // A second matcher is another identity the server may present; each is checked.
    let bad = edit_upstream(&res, |c| {
        let one = combined(c).match_typed_subject_alt_names[0].clone();
        let mut two = one.clone();
        two.matcher = Some(StringMatcher {
            match_pattern: Some(MatchPattern::Exact(String::new())),
            ..Default::default()
        });
        set_sans(c, vec![one, two]);
    });
    invalid_at(&bad, &format!("{sans}[1].matcher"));

    let bad = edit_upstream(&res, |c| {
        let mut one = combined(c).match_typed_subject_alt_names[0].clone();
        one.san_type = SanType::Dns as i32;
        set_sans(c, vec![one]);
    });
    invalid_at(&bad, &format!("{sans}[0].san_type"));

    let bad = edit_upstream(&res, |c| {
        let mut one = combined(c).match_typed_subject_alt_names[0].clone();
        one.matcher = Some(StringMatcher {
            match_pattern: Some(MatchPattern::Prefix("spiffe://".into())),
            ..Default::default()
        });
        set_sans(c, vec![one]);
    });
    invalid_at(&bad, &format!("{sans}[0].matcher"));

    let bad = edit_upstream(&res, |c| {
        c.common_tls_context
            .as_mut()
            .unwrap()
            .tls_certificates
            .push(TlsCertificate::default());
    });
    invalid_at(&bad, &format!("{ctx}.tls_certificates"));

    let bad = edit_upstream(&res, |c| c.sni = "reviews".into());
    invalid_at(
        &bad,
        &format!("{}.transport_socket.typed_config.sni", v1_cluster_path()),
    );

    let bad = edit::<Cluster>(&res, &fqdn("reviews-v1"), |c| {
        c.transport_socket_matches.push(Default::default());
    });
    let err = invalid_at(&bad, &v1_cluster_path());
    assert!(err.reason.contains("protobuf field"), "{err}");

    let bad = edit::<Cluster>(&res, &fqdn("reviews-v1"), |c| {
        c.transport_socket = Some(TransportSocket {
            name: "envoy.transport_sockets.alts".into(),
            config_type: None,
        });
    });
    invalid_at(
        &bad,
        &format!("{}.transport_socket.typed_config", v1_cluster_path()),
    );
}

#[test]
fn raw_buffer_transport_socket_is_plaintext() {
    let res = secure_resources();
    for config_type in [
        None,
        Some(transport_socket::ConfigType::TypedConfig(pack(
            &RawBuffer::default(),
        ))),
    ] {
        let res = edit::<Cluster>(&res, &fqdn("reviews-v1"), |c| {
            c.transport_socket = Some(TransportSocket {
                name: to_xds::RAW_BUFFER_TRANSPORT_SOCKET.into(),
                config_type: config_type.clone(),
            });
        });
        let view = to_proxy_view(&res).unwrap();
        assert_eq!(view.clusters[&fqdn("reviews-v1")].tls, None);
    }
}

#[test]
fn inbound_listeners_outside_the_shape_are_invalid() {
    let res = secure_resources();
    let chain0 = format!("{INBOUND}.filter_chains[0]");
    let hcm0 = format!("{chain0}.filters[0].typed_config");
    let policies = format!("{hcm0}.http_filters[0].typed_config.rules.policies[rule-0]");

    // A namespace prefix of another shape.
    let bad = edit_rbac(&res, 0, |r| {
        let p = r
            .rules
            .as_mut()
            .unwrap()
            .policies
            .get_mut("rule-0")
            .unwrap();
        p.principals = vec![principal_of_prefix("spiffe://cluster.local/ns/shop/")];
    });
    invalid_at(
        &bad,
        &format!("{policies}.principals[0].or_ids.ids[0].authenticated.principal_name"),
    );

    // LOG is not an action Tandem enforces.
    let bad = edit_rbac(&res, 0, |r| {
        r.rules.as_mut().unwrap().action = rbac::Action::Log as i32
    });
    invalid_at(
        &bad,
        &format!("{hcm0}.http_filters[0].typed_config.rules.action"),
    );

    // Policies must be rule-0 .. rule-N.
    let bad = edit_rbac(&res, 0, |r| {
        let policies = &mut r.rules.as_mut().unwrap().policies;
        let p = policies.remove("rule-0").unwrap();
        policies.insert("deny-cart".into(), p);
    });
    invalid_at(
        &bad,
        &format!("{hcm0}.http_filters[0].typed_config.rules.policies"),
    );

    // A permission Tandem has no rule for.
    let bad = edit_rbac(&res, 0, |r| {
        let p = r
            .rules
            .as_mut()
            .unwrap()
            .policies
            .get_mut("rule-0")
            .unwrap();
        p.permissions = vec![Permission {
            rule: Some(permission::Rule::AndRules(permission::Set {
                rules: vec![Permission {
                    rule: Some(permission::Rule::OrRules(permission::Set {
                        rules: vec![Permission {
                            rule: Some(permission::Rule::RequestedServerName(
                                StringMatcher::default(),
                            )),
                        }],
                    })),
                }],
            })),
        }];
    });
    invalid_at(
        &bad,
        &format!("{policies}.permissions[0].and_rules.rules[0].or_rules.rules[0]"),
    );

    // ALLOW before DENY.
    let bad = edit_inbound_hcm(&res, 0, |hcm| hcm.http_filters.swap(0, 1));
    invalid_at(&bad, &format!("{hcm0}.http_filters[1]"));

    // The chains disagree.
    let bad = edit_inbound_hcm(&res, 1, |hcm| {
        hcm.http_filters.remove(0);
    });
    invalid_at(&bad, &format!("{INBOUND}.filter_chains[1].filters[0]"));

    // An inbound listener routes nothing.
    let bad = edit_inbound_hcm(&res, 0, |hcm| {
        if let Some(
            envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier::RouteConfig(rc),
        ) = hcm.route_specifier.as_mut()
        {
            rc.virtual_hosts.push(Default::default());
        }
    });
    invalid_at(&bad, &format!("{hcm0}.route_config"));

    // Mutual TLS without a client certificate is not mutual.
    let bad = edit::<Listener>(&res, &v1_inbound(), |l| {
        let Some(transport_socket::ConfigType::TypedConfig(any)) = l.filter_chains[0]
            .transport_socket
            .as_mut()
            .and_then(|t| t.config_type.as_mut())
        else {
            panic!()
        };
        let mut ctx: DownstreamTlsContext = unpack(any, "x").unwrap();
        ctx.require_client_certificate = Some(BoolValue { value: false });
        *any = pack(&ctx);
    });
    invalid_at(
        &bad,
        &format!("{chain0}.transport_socket.typed_config.require_client_certificate"),
    );

    // Without the TLS inspector Envoy could not pick the TLS chain.
    let bad = edit::<Listener>(&res, &v1_inbound(), |l| l.listener_filters.clear());
    invalid_at(&bad, &format!("{INBOUND}.listener_filters"));

    // Two TLS chains.
    let bad = edit::<Listener>(&res, &v1_inbound(), |l| {
        let tls: FilterChain = l.filter_chains[0].clone();
        l.filter_chains[1] = tls;
    });
    invalid_at(
        &bad,
        &format!("{INBOUND}.filter_chains[1].filter_chain_match.transport_protocol"),
    );

    // Another port.
    let bad = edit::<Listener>(&res, &v1_inbound(), |l| {
        l.address = Some(Default::default());
    });
    invalid_at(&bad, &format!("{INBOUND}.address.socket_address"));
}

#[test]
fn malformed_inbound_names_are_invalid() {
    let res = secure_resources();
    let mut bad = res.clone();
    let listeners = bad.get_mut(LISTENER_TYPE).unwrap();
    let mut l: Listener = unpack(&listeners.remove(&v1_inbound()).unwrap(), "x").unwrap();
    l.name = "inbound|reviews-v1".into();
    listeners.insert(l.name.clone(), pack(&l));
    invalid_at(&bad, "Listener[inbound|reviews-v1].name");
}

fn principal_of_prefix(prefix: &str) -> envoy_types::pb::envoy::config::rbac::v3::Principal {
    use envoy_types::pb::envoy::config::rbac::v3::Principal as P;
    P {
        identifier: Some(principal::Identifier::OrIds(principal::Set {
            ids: vec![P {
                identifier: Some(principal::Identifier::Authenticated(
                    principal::Authenticated {
                        principal_name: Some(StringMatcher {
                            match_pattern: Some(MatchPattern::Prefix(prefix.into())),
                            ..Default::default()
                        }),
                    },
                )),
            }],
        })),
    }
}
