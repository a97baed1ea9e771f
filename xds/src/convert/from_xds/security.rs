//! Zero-trust resources → domain: the trust bundle `Secret`, a cluster's transport socket,
//! and a workload's inbound `Listener`.
//!
//! Only the shapes [`to_xds`](crate::convert::to_xds) produces are accepted (TLS 1.3, the
//! workload certificate and the roots by SDS over ADS, one exact URI SAN per cluster, RBAC
//! policies built from Tandem rules). Anything else would ask the proxy for a behaviour it
//! does not have (inline keys, older TLS, other SAN checks, CEL conditions, ...), so it is
//! refused with its field path.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

use envoy_types::pb::envoy::config::core::v3::{
    address, data_source, socket_address, transport_socket, TransportSocket,
};
use envoy_types::pb::envoy::config::listener::v3::{
    filter, listener_filter, FilterChain, Listener, ListenerFilter,
};
use envoy_types::pb::envoy::config::rbac::v3::{
    permission, principal, rbac, Permission, Policy, Principal as XdsPrincipal,
};
use envoy_types::pb::envoy::config::route::v3::header_matcher;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter, HttpConnectionManager, HttpFilter,
};
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::ValidationContextType, secret, subject_alt_name_matcher::SanType,
    tls_parameters::TlsProtocol, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret,
    UpstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    path_matcher, string_matcher::MatchPattern, StringMatcher,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Name;

use super::{check_ads, name_mismatch, reject_rest};
use crate::convert::to_xds::{
    INBOUND_PORT, RAW_BUFFER_TRANSPORT_SOCKET, RAW_PROTOCOL, TLS_INSPECTOR, TLS_PROTOCOL,
};
use crate::convert::{unpack, ConvertError};
use crate::domain::{
    inbound_listener_service, AuthzRule, InboundPolicy, PathPattern, Principal, TlsMode,
    TrustBundle, UpstreamTls, TRUST_BUNDLE_SECRET, WORKLOAD_CERT_SECRET,
};

/// The trust bundle: the secret [`TRUST_BUNDLE_SECRET`] holding only an inline PEM
/// `trusted_ca` with at least one certificate. Any other secret is refused: the workload
/// key and certificate never travel over xDS.
pub(super) fn trust_bundle(
    mut s: Secret,
    name: &str,
    path: &str,
) -> Result<TrustBundle, ConvertError> {
    if s.name != name {
        return Err(name_mismatch(path, &s.name));
    }
    if name != TRUST_BUNDLE_SECRET {
        return Err(ConvertError::new(
            format!("{path}.name"),
            format!("only the secret {TRUST_BUNDLE_SECRET:?} (the trust bundle) is supported"),
        ));
    }
    let mut cvc = match s.r#type.take() {
        Some(secret::Type::ValidationContext(cvc)) => cvc,
        Some(secret::Type::TlsCertificate(_)) => {
            return Err(ConvertError::new(
                format!("{path}.tls_certificate"),
                "certificates are not accepted over xDS: the proxy holds its own",
            ))
        }
        Some(secret::Type::SessionTicketKeys(_)) => {
            return Err(ConvertError::new(
                format!("{path}.session_ticket_keys"),
                "not supported",
            ))
        }
        Some(secret::Type::GenericSecret(_)) => {
            return Err(ConvertError::new(
                format!("{path}.generic_secret"),
                "not supported",
            ))
        }
        None => {
            return Err(ConvertError::new(
                format!("{path}.validation_context"),
                "required",
            ))
        }
    };
    let path = format!("{path}.validation_context");
    let ca = cvc.trusted_ca.take();
    reject_rest(&cvc, &path)?;
    let path = format!("{path}.trusted_ca");
    let mut ca = ca.ok_or_else(|| ConvertError::new(&path, "required"))?;
    let pem = match ca.specifier.take() {
        Some(data_source::Specifier::InlineString(pem)) => pem,
        Some(_) => {
            return Err(ConvertError::new(
                &path,
                "only inline_string is supported: the proxy reads no files for xDS",
            ))
        }
        None => {
            return Err(ConvertError::new(
                format!("{path}.inline_string"),
                "required",
            ))
        }
    };
    reject_rest(&ca, &path)?;
    if !has_certificate(&pem) {
        return Err(ConvertError::new(
            format!("{path}.inline_string"),
            "holds no PEM CERTIFICATE block",
        ));
    }
    Ok(TrustBundle { roots_pem: pem })
}

/// Whether `pem` has a `BEGIN CERTIFICATE` line followed by its `END` line. The proxy parses
/// the certificates; this only keeps an obviously empty bundle from replacing a good one.
fn has_certificate(pem: &str) -> bool {
    pem.split_once("-----BEGIN CERTIFICATE-----")
        .is_some_and(|(_, rest)| rest.contains("-----END CERTIFICATE-----"))
}

/// A cluster's transport socket: none or raw buffer → plaintext; the TLS socket → mutual
/// TLS expecting the one exact URI SAN it names.
pub(super) fn upstream_tls(
    socket: Option<TransportSocket>,
    path: &str,
) -> Result<Option<UpstreamTls>, ConvertError> {
    let Some(any) = transport_socket_config(socket, path)? else {
        return Ok(None);
    };
    let path = format!("{path}.transport_socket.typed_config");
    let mut ctx: UpstreamTlsContext = unpack(&any, &path)?;
    if !ctx.sni.is_empty() {
        return Err(ConvertError::new(
            format!("{path}.sni"),
            "not supported: the server is checked by its SPIFFE ID, not its name",
        ));
    }
    let common = ctx.common_tls_context.take();
    reject_rest(&ctx, &path)?;
    let path = format!("{path}.common_tls_context");
    let common = common.ok_or_else(|| ConvertError::new(&path, "required"))?;
    let validation = common_tls_context(common, &path)?;
    let cpath = format!("{path}.combined_validation_context");
    let mut combined = match validation {
        ValidationContextType::CombinedValidationContext(c) => c,
        _ => {
            return Err(ConvertError::new(
                cpath,
                "required: the server's identity must be checked",
            ))
        }
    };
    let roots = combined.validation_context_sds_secret_config.take();
    let default = combined.default_validation_context.take();
    reject_rest(&combined, &cpath)?;
    trust_bundle_sds(
        roots,
        &format!("{cpath}.validation_context_sds_secret_config"),
    )?;
    let dpath = format!("{cpath}.default_validation_context");
    let mut default = default.ok_or_else(|| ConvertError::new(&dpath, "required"))?;
    let sans = std::mem::take(&mut default.match_typed_subject_alt_names);
    reject_rest(&default, &dpath)?;
    let spath = format!("{dpath}.match_typed_subject_alt_names");
    let mut sans = sans.into_iter();
    let (Some(mut san), None) = (sans.next(), sans.next()) else {
        return Err(ConvertError::new(
            spath,
            "exactly one SAN matcher (the server's SPIFFE ID) is supported",
        ));
    };
    let spath = format!("{spath}[0]");
    if san.san_type != SanType::Uri as i32 {
        return Err(ConvertError::new(
            format!("{spath}.san_type"),
            "only URI SANs (SPIFFE IDs) are supported",
        ));
    }
    san.san_type = 0;
    let matcher = san.matcher.take();
    reject_rest(&san, &spath)?;
    let identity = match string_match(matcher, &format!("{spath}.matcher"))? {
        MatchPattern::Exact(id) if !id.is_empty() => id,
        _ => {
            return Err(ConvertError::new(
                format!("{spath}.matcher"),
                "only a non-empty exact match is supported",
            ))
        }
    };
    Ok(Some(UpstreamTls { identity }))
}

/// The typed config of a TLS transport socket, or `None` for plaintext (absent, or the raw
/// buffer socket).
fn transport_socket_config(
    socket: Option<TransportSocket>,
    path: &str,
) -> Result<Option<Any>, ConvertError> {
    let path = format!("{path}.transport_socket");
    let Some(socket) = socket else {
        return Ok(None);
    };
    match socket.config_type {
        Some(transport_socket::ConfigType::TypedConfig(any)) => {
            if any.type_url == RawBuffer::type_url() {
                Ok(None)
            } else if any.type_url == UpstreamTlsContext::type_url()
                || any.type_url == DownstreamTlsContext::type_url()
            {
                Ok(Some(any))
            } else {
                Err(ConvertError::new(
                    format!("{path}.typed_config"),
                    format!("unsupported transport socket {:?}", any.type_url),
                ))
            }
        }
        None if socket.name == RAW_BUFFER_TRANSPORT_SOCKET => Ok(None),
        None => Err(ConvertError::new(
            format!("{path}.typed_config"),
            format!("unsupported transport socket {:?}", socket.name),
        )),
    }
}

/// What mesh TLS contexts share: TLS 1.3, the workload certificate by SDS over ADS (never
/// inline), any ALPN (the proxy offers what the cluster's protocol needs). Returns the
/// validation context for the caller's own check.
fn common_tls_context(
    mut c: CommonTlsContext,
    path: &str,
) -> Result<ValidationContextType, ConvertError> {
    if !c.tls_certificates.is_empty() {
        return Err(ConvertError::new(
            format!("{path}.tls_certificates"),
            "inline certificates are not supported: the proxy holds its own",
        ));
    }
    let params = c.tls_params.take();
    let certs = std::mem::take(&mut c.tls_certificate_sds_secret_configs);
    let validation = c.validation_context_type.take();
    c.alpn_protocols.clear();
    reject_rest(&c, path)?;

    let ppath = format!("{path}.tls_params");
    let mut params = params.ok_or_else(|| ConvertError::new(&ppath, "required (TLS 1.3)"))?;
    if params.tls_minimum_protocol_version != TlsProtocol::TlSv13 as i32 {
        return Err(ConvertError::new(
            format!("{ppath}.tls_minimum_protocol_version"),
            "must be TLSv1_3: the mesh speaks TLS 1.3 only",
        ));
    }
    // TLS_AUTO as a maximum is 1.3 in Envoy.
    let max = params.tls_maximum_protocol_version;
    if max != TlsProtocol::TlSv13 as i32 && max != TlsProtocol::TlsAuto as i32 {
        return Err(ConvertError::new(
            format!("{ppath}.tls_maximum_protocol_version"),
            "must be TLSv1_3",
        ));
    }
    params.tls_minimum_protocol_version = 0;
    params.tls_maximum_protocol_version = 0;
    reject_rest(&params, &ppath)?;

    let cpath = format!("{path}.tls_certificate_sds_secret_configs");
    let mut certs = certs.into_iter();
    let (Some(cert), None) = (certs.next(), certs.next()) else {
        return Err(ConvertError::new(
            cpath,
            format!("exactly one is supported: the workload certificate {WORKLOAD_CERT_SECRET:?}"),
        ));
    };
    sds(cert, WORKLOAD_CERT_SECRET, &format!("{cpath}[0]"))?;
    validation.ok_or_else(|| {
        ConvertError::new(
            format!("{path}.validation_context_type"),
            "required: the peer's certificate must be checked against the trust bundle",
        )
    })
}

/// An SDS reference to the trust bundle.
fn trust_bundle_sds(config: Option<SdsSecretConfig>, path: &str) -> Result<(), ConvertError> {
    let config = config.ok_or_else(|| ConvertError::new(path, "required"))?;
    sds(config, TRUST_BUNDLE_SECRET, path)
}

/// An SDS reference over ADS to the secret `want`.
fn sds(mut config: SdsSecretConfig, want: &str, path: &str) -> Result<(), ConvertError> {
    if config.name != want {
        return Err(ConvertError::new(
            format!("{path}.name"),
            format!("{:?}: only {want:?} is supported here", config.name),
        ));
    }
    check_ads(config.sds_config.take(), &format!("{path}.sds_config"))?;
    config.name.clear();
    reject_rest(&config, path)
}

/// A string matcher's pattern; case-insensitive matching is refused (SPIFFE IDs, paths
/// and methods are compared exactly).
fn string_match(m: Option<StringMatcher>, path: &str) -> Result<MatchPattern, ConvertError> {
    let m = m.ok_or_else(|| ConvertError::new(path, "required"))?;
    if m.ignore_case {
        return Err(ConvertError::new(
            format!("{path}.ignore_case"),
            "not supported",
        ));
    }
    m.match_pattern
        .ok_or_else(|| ConvertError::new(path, "a match pattern is required"))
}

/// A workload's inbound listener `name` (`inbound|<ns>|<name>`): bound to
/// `0.0.0.0:`[`INBOUND_PORT`], one filter chain per accepted transport (its TLS mode), each
/// with the same HTTP connection manager: RBAC deny, RBAC allow, router.
pub(super) fn inbound_listener(
    mut l: Listener,
    name: &str,
    path: &str,
) -> Result<InboundPolicy, ConvertError> {
    if l.name != name {
        return Err(name_mismatch(path, &l.name));
    }
    let service = inbound_listener_service(name).ok_or_else(|| {
        ConvertError::new(
            format!("{path}.name"),
            "an inbound listener is named inbound|<namespace>|<name>",
        )
    })?;
    let address = l.address.take();
    let chains = std::mem::take(&mut l.filter_chains);
    let listener_filters = std::mem::take(&mut l.listener_filters);
    l.name.clear();
    l.stat_prefix.clear();
    l.metadata = None;
    reject_rest(&l, path)?;
    inbound_address(address, &format!("{path}.address"))?;

    let mut tls = false;
    let mut raw = false;
    let mut rules: Option<Authz> = None;
    for (i, chain) in chains.into_iter().enumerate() {
        let cpath = format!("{path}.filter_chains[{i}]");
        let (is_tls, chain_rules) = filter_chain(chain, name, &cpath)?;
        let seen = if is_tls { &mut tls } else { &mut raw };
        if std::mem::replace(seen, true) {
            return Err(ConvertError::new(
                format!("{cpath}.filter_chain_match.transport_protocol"),
                "one filter chain per transport protocol",
            ));
        }
        match &rules {
            None => rules = Some(chain_rules),
            Some(first) if *first == chain_rules => {}
            Some(_) => {
                return Err(ConvertError::new(
                    format!("{cpath}.filters[0]"),
                    "every filter chain must enforce the same authorization",
                ))
            }
        }
    }
    let mode = match (tls, raw) {
        (true, false) => TlsMode::Mutual,
        (true, true) => TlsMode::Permissive,
        (false, true) => TlsMode::Disabled,
        (false, false) => {
            return Err(ConvertError::new(
                format!("{path}.filter_chains"),
                "required: a tls and/or a raw_buffer chain",
            ))
        }
    };
    inspector(listener_filters, tls, &format!("{path}.listener_filters"))?;
    let (deny, allow) = rules.unwrap_or_default();
    Ok(InboundPolicy {
        service,
        mode,
        deny,
        allow,
    })
}

/// The inbound address must be `0.0.0.0:`[`INBOUND_PORT`] over TCP: the proxy binds its
/// inbound port itself and has no way to follow another address.
fn inbound_address(
    address: Option<envoy_types::pb::envoy::config::core::v3::Address>,
    path: &str,
) -> Result<(), ConvertError> {
    let path = format!("{path}.socket_address");
    let mut sa = match address.and_then(|a| a.address) {
        Some(address::Address::SocketAddress(sa)) => sa,
        _ => return Err(ConvertError::new(path, "required")),
    };
    let port = sa.port_specifier.take();
    let ip: Option<Ipv4Addr> = sa.address.parse().ok();
    sa.address.clear();
    if ip != Some(Ipv4Addr::UNSPECIFIED)
        || port
            != Some(socket_address::PortSpecifier::PortValue(u32::from(
                INBOUND_PORT,
            )))
    {
        return Err(ConvertError::new(
            &path,
            format!("must be 0.0.0.0:{INBOUND_PORT}"),
        ));
    }
    reject_rest(&sa, &path)
}

/// The TLS inspector, exactly when there is a TLS chain (Envoy cannot tell TLS from
/// plaintext without it; with no TLS chain it would only cost a read).
fn inspector(filters: Vec<ListenerFilter>, tls: bool, path: &str) -> Result<(), ConvertError> {
    let mut filters = filters.into_iter();
    match (filters.next(), filters.next(), tls) {
        (None, _, false) => Ok(()),
        (Some(mut f), None, true) => {
            let fpath = format!("{path}[0]");
            let config = f.config_type.take();
            if f.name != TLS_INSPECTOR {
                return Err(ConvertError::new(
                    format!("{fpath}.name"),
                    format!("only {TLS_INSPECTOR:?} is supported"),
                ));
            }
            f.name.clear();
            reject_rest(&f, &fpath)?;
            match config {
                Some(listener_filter::ConfigType::TypedConfig(any)) => {
                    let tpath = format!("{fpath}.typed_config");
                    let ti: TlsInspector = unpack(&any, &tpath)?;
                    reject_rest(&ti, &tpath)
                }
                None => Ok(()),
                Some(_) => Err(ConvertError::new(
                    format!("{fpath}.config_discovery"),
                    "not supported",
                )),
            }
        }
        (None, _, true) => Err(ConvertError::new(
            path,
            format!("{TLS_INSPECTOR:?} is required with a tls filter chain"),
        )),
        _ => Err(ConvertError::new(
            path,
            format!("only {TLS_INSPECTOR:?}, with a tls filter chain, is supported"),
        )),
    }
}

/// What an inbound HTTP connection manager enforces: deny rules, then allow rules (as in
/// [`InboundPolicy`]).
type Authz = (Vec<AuthzRule>, Option<Vec<AuthzRule>>);

/// One inbound filter chain: whether it is the TLS one, and what it enforces.
fn filter_chain(
    mut chain: FilterChain,
    listener: &str,
    path: &str,
) -> Result<(bool, Authz), ConvertError> {
    let fcm = chain.filter_chain_match.take();
    let socket = chain.transport_socket.take();
    let filters = std::mem::take(&mut chain.filters);
    chain.name.clear();
    chain.metadata = None;
    reject_rest(&chain, path)?;
    let mpath = format!("{path}.filter_chain_match");
    let mut fcm = fcm.ok_or_else(|| ConvertError::new(&mpath, "required"))?;
    let protocol = std::mem::take(&mut fcm.transport_protocol);
    reject_rest(&fcm, &mpath)?;
    let tls = match protocol.as_str() {
        TLS_PROTOCOL => true,
        RAW_PROTOCOL => false,
        other => {
            return Err(ConvertError::new(
                format!("{mpath}.transport_protocol"),
                format!("{other:?}: must be \"tls\" or \"raw_buffer\""),
            ))
        }
    };
    let config = transport_socket_config(socket, path)?;
    match (tls, config) {
        (true, Some(any)) => {
            downstream_tls(&any, &format!("{path}.transport_socket.typed_config"))?
        }
        (true, None) => {
            return Err(ConvertError::new(
                format!("{path}.transport_socket"),
                "the tls chain needs the TLS transport socket",
            ))
        }
        (false, Some(_)) => {
            return Err(ConvertError::new(
                format!("{path}.transport_socket"),
                "the raw_buffer chain is plaintext",
            ))
        }
        (false, None) => {}
    }
    let mut filters = filters.into_iter();
    let (Some(mut f), None) = (filters.next(), filters.next()) else {
        return Err(ConvertError::new(
            format!("{path}.filters"),
            "exactly one filter (the HTTP connection manager) is supported",
        ));
    };
    let fpath = format!("{path}.filters[0]");
    let config = f.config_type.take();
    f.name.clear();
    reject_rest(&f, &fpath)?;
    let any = match config {
        Some(filter::ConfigType::TypedConfig(any)) => any,
        _ => {
            return Err(ConvertError::new(
                format!("{fpath}.typed_config"),
                "required",
            ))
        }
    };
    let rules = inbound_hcm(&any, listener, &format!("{fpath}.typed_config"))?;
    Ok((tls, rules))
}

/// Mutual TLS 1.3: a client certificate required and checked against the trust bundle (any
/// mesh identity: who may call is the RBAC filters' business).
fn downstream_tls(any: &Any, path: &str) -> Result<(), ConvertError> {
    let mut ctx: DownstreamTlsContext = unpack(any, path)?;
    let require = ctx.require_client_certificate.take();
    let common = ctx.common_tls_context.take();
    reject_rest(&ctx, path)?;
    if !require.is_some_and(|b| b.value) {
        return Err(ConvertError::new(
            format!("{path}.require_client_certificate"),
            "must be true: inbound TLS is mutual",
        ));
    }
    let path = format!("{path}.common_tls_context");
    let common = common.ok_or_else(|| ConvertError::new(&path, "required"))?;
    match common_tls_context(common, &path)? {
        ValidationContextType::ValidationContextSdsSecretConfig(c) => trust_bundle_sds(
            Some(c),
            &format!("{path}.validation_context_sds_secret_config"),
        ),
        _ => Err(ConvertError::new(
            format!("{path}.validation_context_sds_secret_config"),
            format!("required, naming {TRUST_BUNDLE_SECRET:?} (and nothing else)"),
        )),
    }
}

/// The inbound HTTP connection manager: an empty inline route configuration named after
/// the listener (the proxy forwards inbound requests to its application itself), then
/// optional RBAC deny, optional RBAC allow, router.
fn inbound_hcm(any: &Any, listener: &str, path: &str) -> Result<Authz, ConvertError> {
    let mut hcm: HttpConnectionManager = unpack(any, path)?;
    let route = hcm.route_specifier.take();
    let filters = std::mem::take(&mut hcm.http_filters);
    hcm.stat_prefix.clear();
    hcm.codec_type = 0;
    reject_rest(&hcm, path)?;
    let rpath = format!("{path}.route_config");
    let mut rc = match route {
        Some(RouteSpecifier::RouteConfig(rc)) => rc,
        _ => {
            return Err(ConvertError::new(
                rpath,
                "required: an empty inline route configuration",
            ))
        }
    };
    if rc.name != listener {
        return Err(ConvertError::new(
            format!("{rpath}.name"),
            format!("must be the listener's name {listener:?}"),
        ));
    }
    rc.name.clear();
    reject_rest(&rc, &rpath)?;

    let fpath = format!("{path}.http_filters");
    let Some((last, rbacs)) = filters.split_last() else {
        return Err(ConvertError::new(
            fpath,
            "expected at least one HTTP filter (the router, last)",
        ));
    };
    router(last, &format!("{fpath}[{}]", rbacs.len()))?;
    let mut deny = None;
    let mut allow = None;
    for (i, f) in rbacs.iter().enumerate() {
        let ipath = format!("{fpath}[{i}]");
        let (action, rules) = rbac_filter(f, &ipath)?;
        match action {
            rbac::Action::Deny if deny.is_none() && allow.is_none() => deny = Some(rules),
            rbac::Action::Allow if allow.is_none() => allow = Some(rules),
            _ => {
                return Err(ConvertError::new(
                    ipath,
                    "only one DENY then one ALLOW RBAC filter, before the router, are supported",
                ))
            }
        }
    }
    Ok((deny.unwrap_or_default(), allow))
}

fn router(f: &HttpFilter, path: &str) -> Result<(), ConvertError> {
    let mut f = f.clone();
    let config = f.config_type.take();
    f.name.clear();
    reject_rest(&f, path)?;
    let tpath = format!("{path}.typed_config");
    match config {
        Some(http_filter::ConfigType::TypedConfig(any)) if any.type_url == Router::type_url() => {
            let r: Router = unpack(&any, &tpath)?;
            reject_rest(&r, &tpath)
        }
        _ => Err(ConvertError::new(
            path,
            "the last filter must be the router",
        )),
    }
}

/// An RBAC HTTP filter: its action and its policies `rule-0`, `rule-1`, ... as rules.
fn rbac_filter(f: &HttpFilter, path: &str) -> Result<(rbac::Action, Vec<AuthzRule>), ConvertError> {
    let mut f = f.clone();
    let config = f.config_type.take();
    f.name.clear();
    reject_rest(&f, path)?;
    let tpath = format!("{path}.typed_config");
    let any = match config {
        Some(http_filter::ConfigType::TypedConfig(any)) if any.type_url == HttpRbac::type_url() => {
            any
        }
        Some(http_filter::ConfigType::TypedConfig(any)) => {
            return Err(ConvertError::new(
                path,
                format!("unsupported HTTP filter {:?}", any.type_url),
            ))
        }
        _ => return Err(ConvertError::new(tpath, "required")),
    };
    let mut http: HttpRbac = unpack(&any, &tpath)?;
    let rules = http.rules.take();
    http.rules_stat_prefix.clear();
    reject_rest(&http, &tpath)?;
    let rpath = format!("{tpath}.rules");
    let mut rules = rules.ok_or_else(|| ConvertError::new(&rpath, "required"))?;
    let action = match rbac::Action::try_from(rules.action) {
        Ok(a @ (rbac::Action::Allow | rbac::Action::Deny)) => a,
        _ => {
            return Err(ConvertError::new(
                format!("{rpath}.action"),
                "only ALLOW and DENY are supported",
            ))
        }
    };
    rules.action = 0;
    let mut policies: HashMap<String, Policy> = std::mem::take(&mut rules.policies);
    reject_rest(&rules, &rpath)?;
    let n = policies.len();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("rule-{i}");
        let Some(p) = policies.remove(&key) else {
            return Err(ConvertError::new(
                format!("{rpath}.policies"),
                format!(
                    "policies must be named rule-0 .. rule-{}",
                    n.saturating_sub(1)
                ),
            ));
        };
        out.push(policy(p, &format!("{rpath}.policies[{key}]"))?);
    }
    Ok((action, out))
}

/// One policy as a rule: see `to_xds` for the shape.
fn policy(mut p: Policy, path: &str) -> Result<AuthzRule, ConvertError> {
    let permissions = std::mem::take(&mut p.permissions);
    let principals = std::mem::take(&mut p.principals);
    reject_rest(&p, path)?;
    let mut rule = AuthzRule::default();

    let ppath = format!("{path}.permissions");
    let mut permissions = permissions.into_iter();
    let (Some(permission), None) = (permissions.next(), permissions.next()) else {
        return Err(ConvertError::new(
            ppath,
            "exactly one permission is supported",
        ));
    };
    let ppath = format!("{ppath}[0]");
    match permission.rule {
        Some(permission::Rule::Any(true)) => {}
        Some(permission::Rule::AndRules(set)) if !set.rules.is_empty() => {
            for (i, or) in set.rules.into_iter().enumerate() {
                conditions(or, &mut rule, &format!("{ppath}.and_rules.rules[{i}]"))?;
            }
        }
        _ => {
            return Err(ConvertError::new(
                ppath,
                "only any: true or and_rules of or_rules are supported",
            ))
        }
    }

    let ppath = format!("{path}.principals");
    let mut principals = principals.into_iter();
    let (Some(principal), None) = (principals.next(), principals.next()) else {
        return Err(ConvertError::new(
            ppath,
            "exactly one principal is supported",
        ));
    };
    let ppath = format!("{ppath}[0]");
    match principal.identifier {
        Some(principal::Identifier::Any(true)) => {}
        Some(principal::Identifier::OrIds(set)) if !set.ids.is_empty() => {
            for (i, id) in set.ids.into_iter().enumerate() {
                rule.from
                    .push(principal_of(id, &format!("{ppath}.or_ids.ids[{i}]"))?);
            }
        }
        _ => {
            return Err(ConvertError::new(
                ppath,
                "only any: true or or_ids of authenticated principals are supported",
            ))
        }
    }
    Ok(rule)
}

/// One `or_rules` of a rule's `and_rules`: all paths, all methods, or all ports; each kind
/// at most once per rule.
fn conditions(or: Permission, rule: &mut AuthzRule, path: &str) -> Result<(), ConvertError> {
    let set = match or.rule {
        Some(permission::Rule::OrRules(set)) if !set.rules.is_empty() => set,
        _ => return Err(ConvertError::new(path, "non-empty or_rules required")),
    };
    let mut kinds = BTreeSet::new();
    let (mut paths, mut methods, mut ports) = (Vec::new(), Vec::new(), Vec::new());
    for (i, p) in set.rules.into_iter().enumerate() {
        let rpath = format!("{path}.or_rules.rules[{i}]");
        match p.rule {
            Some(permission::Rule::UrlPath(mut pm)) => {
                kinds.insert("url_path");
                let mpath = format!("{rpath}.url_path.path");
                let m = match pm.rule.take() {
                    Some(path_matcher::Rule::Path(m)) => m,
                    None => return Err(ConvertError::new(mpath, "required")),
                };
                paths.push(match string_match(Some(m), &mpath)? {
                    MatchPattern::Prefix(p) if p == "/" => PathPattern::Any,
                    MatchPattern::Exact(p) => PathPattern::Exact(p),
                    MatchPattern::Prefix(p) => PathPattern::Prefix(p),
                    MatchPattern::Suffix(p) => PathPattern::Suffix(p),
                    _ => {
                        return Err(ConvertError::new(
                            mpath,
                            "only exact, prefix and suffix are supported",
                        ))
                    }
                });
            }
            Some(permission::Rule::Header(mut h)) => {
                kinds.insert("header");
                let hpath = format!("{rpath}.header");
                if h.name != ":method" {
                    return Err(ConvertError::new(
                        format!("{hpath}.name"),
                        "only :method is supported",
                    ));
                }
                let spec = h.header_match_specifier.take();
                h.name.clear();
                reject_rest(&h, &hpath)?;
                let mpath = format!("{hpath}.string_match");
                let m = match spec {
                    Some(header_matcher::HeaderMatchSpecifier::StringMatch(m)) => m,
                    _ => return Err(ConvertError::new(mpath, "required")),
                };
                match string_match(Some(m), &mpath)? {
                    MatchPattern::Exact(m) if !m.is_empty() => methods.push(m),
                    _ => {
                        return Err(ConvertError::new(
                            mpath,
                            "only a non-empty exact method is supported",
                        ))
                    }
                }
            }
            Some(permission::Rule::DestinationPort(p)) => {
                kinds.insert("destination_port");
                let port = u16::try_from(p).ok().filter(|p| *p != 0).ok_or_else(|| {
                    ConvertError::new(format!("{rpath}.destination_port"), "not in 1..=65535")
                })?;
                ports.push(port);
            }
            _ => {
                return Err(ConvertError::new(
                    rpath,
                    "only url_path, header :method and destination_port are supported",
                ))
            }
        }
    }
    if kinds.len() != 1 {
        return Err(ConvertError::new(
            format!("{path}.or_rules"),
            "one kind of condition per or_rules",
        ));
    }
    if rule_has_twice(rule, &paths, &methods, &ports) {
        return Err(ConvertError::new(
            format!("{path}.or_rules"),
            "each kind of condition at most once per rule",
        ));
    }
    rule.paths.extend(paths);
    rule.methods.extend(methods);
    rule.ports.extend(ports);
    Ok(())
}

/// Whether a kind of condition in the new `or_rules` is already in `rule`.
fn rule_has_twice(
    rule: &AuthzRule,
    paths: &[PathPattern],
    methods: &[String],
    ports: &[u16],
) -> bool {
    (!paths.is_empty() && !rule.paths.is_empty())
        || (!methods.is_empty() && !rule.methods.is_empty())
        || (!ports.is_empty() && !rule.ports.is_empty())
}

/// An authenticated principal: no name (any mesh identity), an exact SPIFFE ID, or the
/// prefix `spiffe://<trust domain>/ns/<ns>/sa/` (a namespace).
fn principal_of(p: XdsPrincipal, path: &str) -> Result<Principal, ConvertError> {
    let apath = format!("{path}.authenticated");
    let mut auth = match p.identifier {
        Some(principal::Identifier::Authenticated(a)) => a,
        _ => {
            return Err(ConvertError::new(
                path,
                "only authenticated principals are supported",
            ))
        }
    };
    let Some(name) = auth.principal_name.take() else {
        return Ok(Principal::Authenticated);
    };
    let npath = format!("{apath}.principal_name");
    match string_match(Some(name), &npath)? {
        MatchPattern::Exact(id) if !id.is_empty() => Ok(Principal::Identity(id)),
        MatchPattern::Prefix(p) => {
            namespace_prefix(&p)
                .map(Principal::Namespace)
                .ok_or_else(|| {
                    ConvertError::new(
                        npath,
                        format!(
                            "{p:?}: a prefix must be spiffe://<trust domain>/ns/<namespace>/sa/"
                        ),
                    )
                })
        }
        _ => Err(ConvertError::new(
            npath,
            "only a non-empty exact SPIFFE ID or a namespace prefix is supported",
        )),
    }
}

/// The namespace of `spiffe://<td>/ns/<ns>/sa/`.
fn namespace_prefix(p: &str) -> Option<String> {
    let (_, rest) = p.strip_prefix("spiffe://")?.split_once('/')?;
    let ns = rest.strip_prefix("ns/")?.strip_suffix("/sa/")?;
    (!ns.is_empty() && !ns.contains('/')).then(|| ns.to_string())
}
