//! Zero-trust resources: the trust bundle `Secret`, a cluster's upstream TLS transport
//! socket, and a workload's inbound `Listener` (TLS mode as filter chains, authorization
//! as RBAC HTTP filters).
//!
//! Every resource names the workload certificate and the roots through SDS over ADS
//! ([`WORKLOAD_CERT_SECRET`], [`TRUST_BUNDLE_SECRET`]) rather than inline, so a rotation
//! changes one secret instead of every cluster and listener.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{
    address, data_source, socket_address, transport_socket, Address, DataSource, SocketAddress,
    TransportSocket,
};
use envoy_types::pb::envoy::config::listener::v3::{
    filter, listener_filter, Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter,
};
use envoy_types::pb::envoy::config::rbac::v3::{
    permission, principal, rbac, Permission, Policy, Principal as XdsPrincipal,
};
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher, HeaderMatcher, RouteConfiguration,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter, HttpConnectionManager, HttpFilter,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
    secret,
    subject_alt_name_matcher::SanType,
    tls_parameters::TlsProtocol,
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret,
    SubjectAltNameMatcher, TlsParameters, UpstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    path_matcher, string_matcher::MatchPattern, PathMatcher, StringMatcher,
};
use envoy_types::pb::google::protobuf::{Any, BoolValue};
use prost::Name;

use super::{ads_source, ROUTER_FILTER};
use crate::convert::pack;
use crate::domain::{
    inbound_listener_name, AuthzRule, InboundPolicy, PathPattern, Principal, TlsMode, UpstreamTls,
    TRUST_BUNDLE_SECRET, WORKLOAD_CERT_SECRET,
};

/// Name of the TLS transport socket (clusters and inbound filter chains).
pub const TLS_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.tls";
/// Name of the plaintext transport socket (what an absent transport socket means).
pub const RAW_BUFFER_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.raw_buffer";
/// Name of the TLS inspector listener filter: Envoy needs it to tell TLS from plaintext
/// (`filter_chain_match.transport_protocol`).
pub const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";
/// Name of the HTTP connection manager network filter.
pub const HTTP_CONNECTION_MANAGER: &str = "envoy.filters.network.http_connection_manager";
/// Name of the inbound listener's RBAC filter holding the deny rules.
pub const AUTHZ_DENY_FILTER: &str = "tandem.authz.deny";
/// Name of the inbound listener's RBAC filter holding the allow rules.
pub const AUTHZ_ALLOW_FILTER: &str = "tandem.authz.allow";
/// `filter_chain_match.transport_protocol` of the mutual TLS chain.
pub const TLS_PROTOCOL: &str = "tls";
/// `filter_chain_match.transport_protocol` of the plaintext chain.
pub const RAW_PROTOCOL: &str = "raw_buffer";
/// The port every inbound listener binds (Istio's, so traffic capture rules carry over).
pub const INBOUND_PORT: u16 = 15006;
/// `stat_prefix` of the inbound HTTP connection manager.
pub const INBOUND_STAT_PREFIX: &str = "inbound";
/// ALPN offered on mesh TLS connections, most preferred first.
pub const MESH_ALPN: [&str; 2] = ["h2", "http/1.1"];

/// The SDS secret [`TRUST_BUNDLE_SECRET`] holding `pem` as the trusted CA.
pub(super) fn trust_bundle_secret(pem: &str) -> Secret {
    Secret {
        name: TRUST_BUNDLE_SECRET.to_string(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(DataSource {
                    specifier: Some(data_source::Specifier::InlineString(pem.to_string())),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )),
    }
}

/// The transport socket of a cluster whose endpoints are called with mutual TLS 1.3,
/// checking that the server presents one of `tls.identities` as a URI SAN (Envoy accepts
/// a certificate when any matcher matches).
pub(super) fn upstream_transport_socket(tls: &UpstreamTls) -> TransportSocket {
    let validation =
        ValidationContextType::CombinedValidationContext(CombinedCertificateValidationContext {
            default_validation_context: Some(CertificateValidationContext {
                match_typed_subject_alt_names: tls
                    .identities
                    .iter()
                    .map(|id| SubjectAltNameMatcher {
                        san_type: SanType::Uri as i32,
                        matcher: Some(exact(id)),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            validation_context_sds_secret_config: Some(sds(TRUST_BUNDLE_SECRET)),
            ..Default::default()
        });
    let ctx = UpstreamTlsContext {
        common_tls_context: Some(common_tls_context(validation)),
        ..Default::default()
    };
    tls_socket(pack(&ctx))
}

/// The inbound listener of `policy.service`; `trust_domain` spells namespace principals.
pub(super) fn inbound_listener(policy: &InboundPolicy, trust_domain: &str) -> Listener {
    let name = inbound_listener_name(&policy.service);
    let (tls, raw) = match policy.mode {
        TlsMode::Mutual => (true, false),
        TlsMode::Permissive => (true, true),
        TlsMode::Disabled => (false, true),
    };
    let mut filter_chains = Vec::with_capacity(2);
    if tls {
        let ctx = DownstreamTlsContext {
            common_tls_context: Some(common_tls_context(
                ValidationContextType::ValidationContextSdsSecretConfig(sds(TRUST_BUNDLE_SECRET)),
            )),
            require_client_certificate: Some(BoolValue { value: true }),
            ..Default::default()
        };
        filter_chains.push(FilterChain {
            filter_chain_match: Some(FilterChainMatch {
                transport_protocol: TLS_PROTOCOL.to_string(),
                ..Default::default()
            }),
            filters: vec![inbound_hcm(&name, policy, trust_domain)],
            transport_socket: Some(tls_socket(pack(&ctx))),
            ..Default::default()
        });
    }
    if raw {
        filter_chains.push(FilterChain {
            filter_chain_match: Some(FilterChainMatch {
                transport_protocol: RAW_PROTOCOL.to_string(),
                ..Default::default()
            }),
            filters: vec![inbound_hcm(&name, policy, trust_domain)],
            ..Default::default()
        });
    }
    let listener_filters = if tls {
        vec![ListenerFilter {
            name: TLS_INSPECTOR.to_string(),
            config_type: Some(listener_filter::ConfigType::TypedConfig(pack(
                &TlsInspector::default(),
            ))),
            ..Default::default()
        }]
    } else {
        Vec::new()
    };
    Listener {
        name,
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "0.0.0.0".to_string(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                    INBOUND_PORT,
                ))),
                ..Default::default()
            })),
        }),
        filter_chains,
        listener_filters,
        ..Default::default()
    }
}

/// TLS 1.3 only, the workload certificate over SDS, mesh ALPN, and `validation`.
fn common_tls_context(validation: ValidationContextType) -> CommonTlsContext {
    CommonTlsContext {
        tls_params: Some(TlsParameters {
            tls_minimum_protocol_version: TlsProtocol::TlSv13 as i32,
            tls_maximum_protocol_version: TlsProtocol::TlSv13 as i32,
            ..Default::default()
        }),
        tls_certificate_sds_secret_configs: vec![sds(WORKLOAD_CERT_SECRET)],
        validation_context_type: Some(validation),
        alpn_protocols: MESH_ALPN.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    }
}

fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(ads_source()),
    }
}

fn tls_socket(typed_config: Any) -> TransportSocket {
    TransportSocket {
        name: TLS_TRANSPORT_SOCKET.to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(typed_config)),
    }
}

fn exact(s: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::Exact(s.to_string())),
        ..Default::default()
    }
}

fn prefix(s: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::Prefix(s.to_string())),
        ..Default::default()
    }
}

/// The inbound HTTP connection manager: RBAC deny, RBAC allow, router. Its inline route
/// configuration is empty on purpose: the proxy hands inbound requests to its own
/// application, so there is nothing to route.
fn inbound_hcm(name: &str, policy: &InboundPolicy, trust_domain: &str) -> Filter {
    let mut http_filters = Vec::with_capacity(3);
    if !policy.deny.is_empty() {
        http_filters.push(rbac_filter(
            AUTHZ_DENY_FILTER,
            rbac::Action::Deny,
            &policy.deny,
            trust_domain,
        ));
    }
    if let Some(allow) = &policy.allow {
        http_filters.push(rbac_filter(
            AUTHZ_ALLOW_FILTER,
            rbac::Action::Allow,
            allow,
            trust_domain,
        ));
    }
    http_filters.push(HttpFilter {
        name: ROUTER_FILTER.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack(
            &Router::default(),
        ))),
        ..Default::default()
    });
    let hcm = HttpConnectionManager {
        stat_prefix: INBOUND_STAT_PREFIX.to_string(),
        route_specifier: Some(RouteSpecifier::RouteConfig(RouteConfiguration {
            name: name.to_string(),
            ..Default::default()
        })),
        http_filters,
        access_log: super::access_log::access_logs(policy.access_log.as_ref()),
        ..Default::default()
    };
    Filter {
        name: HTTP_CONNECTION_MANAGER.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(pack(&hcm))),
    }
}

/// One RBAC HTTP filter: each rule is the policy `rule-<i>`.
fn rbac_filter(
    name: &str,
    action: rbac::Action,
    rules: &[AuthzRule],
    trust_domain: &str,
) -> HttpFilter {
    let policies: BTreeMap<String, Policy> = rules
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("rule-{i}"), policy(r, trust_domain)))
        .collect();
    let config = SortedHttpRbac {
        rules: Some(SortedRbac {
            action: action as i32,
            policies,
        }),
    };
    // Same wire format as the generated message, under its type URL.
    let any = Any {
        type_url: HttpRbac::type_url(),
        value: prost::Message::encode_to_vec(&config),
    };
    HttpFilter {
        name: name.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any)),
        ..Default::default()
    }
}

/// `envoy.extensions.filters.http.rbac.v3.RBAC` with only `rules` (field 1). The generated
/// type keeps policies in a `HashMap`, whose iteration order (and so the encoded bytes)
/// changes from one build of the snapshot to the next; the content hashes that decide
/// whether a stream gets a push need the same bytes for the same policy (see
/// `convert::canonical` for the other maps).
#[derive(Clone, PartialEq, prost::Message)]
struct SortedHttpRbac {
    #[prost(message, optional, tag = "1")]
    rules: Option<SortedRbac>,
}

/// `envoy.config.rbac.v3.RBAC` with `action` (1) and `policies` (2) in key order.
#[derive(Clone, PartialEq, prost::Message)]
struct SortedRbac {
    #[prost(int32, tag = "1")]
    action: i32,
    #[prost(btree_map = "string, message", tag = "2")]
    policies: BTreeMap<String, Policy>,
}

/// A rule as an RBAC policy: every non-empty list of the rule is one `or_rules` inside one
/// `and_rules` (an empty list is no condition), and the principals one `or_ids`.
fn policy(rule: &AuthzRule, trust_domain: &str) -> Policy {
    let mut conditions = Vec::with_capacity(3);
    if !rule.paths.is_empty() {
        conditions.push(or_rules(rule.paths.iter().map(|p| {
            let m = match p {
                PathPattern::Any => prefix("/"),
                PathPattern::Exact(s) => exact(s),
                PathPattern::Prefix(s) => prefix(s),
                PathPattern::Suffix(s) => StringMatcher {
                    match_pattern: Some(MatchPattern::Suffix(s.clone())),
                    ..Default::default()
                },
            };
            permission::Rule::UrlPath(PathMatcher {
                rule: Some(path_matcher::Rule::Path(m)),
            })
        })));
    }
    if !rule.methods.is_empty() {
        conditions.push(or_rules(rule.methods.iter().map(|m| {
            permission::Rule::Header(HeaderMatcher {
                name: ":method".to_string(),
                header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
                    exact(m),
                )),
                ..Default::default()
            })
        })));
    }
    if !rule.ports.is_empty() {
        conditions.push(or_rules(
            rule.ports
                .iter()
                .map(|p| permission::Rule::DestinationPort(u32::from(*p))),
        ));
    }
    let permission = if conditions.is_empty() {
        permission::Rule::Any(true)
    } else {
        permission::Rule::AndRules(permission::Set { rules: conditions })
    };
    let principal = if rule.from.is_empty() {
        principal::Identifier::Any(true)
    } else {
        principal::Identifier::OrIds(principal::Set {
            ids: rule
                .from
                .iter()
                .map(|p| {
                    let principal_name = match p {
                        Principal::Identity(id) => Some(exact(id)),
                        Principal::Namespace(ns) => {
                            Some(prefix(&format!("spiffe://{trust_domain}/ns/{ns}/sa/")))
                        }
                        Principal::Authenticated => None,
                    };
                    XdsPrincipal {
                        identifier: Some(principal::Identifier::Authenticated(
                            principal::Authenticated { principal_name },
                        )),
                    }
                })
                .collect(),
        })
    };
    Policy {
        permissions: vec![Permission {
            rule: Some(permission),
        }],
        principals: vec![XdsPrincipal {
            identifier: Some(principal),
        }],
        ..Default::default()
    }
}

fn or_rules(rules: impl Iterator<Item = permission::Rule>) -> Permission {
    Permission {
        rule: Some(permission::Rule::OrRules(permission::Set {
            rules: rules.map(|r| Permission { rule: Some(r) }).collect(),
        })),
    }
}
