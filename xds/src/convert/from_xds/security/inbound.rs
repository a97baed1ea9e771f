//! A workload's inbound listener: its TLS mode as filter chains, its authorization as the
//! RBAC filters of the HTTP connection manager every chain shares.

use std::net::Ipv4Addr;

use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
use envoy_types::pb::envoy::config::listener::v3::{
    filter, listener_filter, FilterChain, Listener, ListenerFilter,
};
use envoy_types::pb::envoy::config::rbac::v3::rbac;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, http_filter, HttpConnectionManager, HttpFilter,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::ValidationContextType, DownstreamTlsContext,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Name;

use crate::convert::from_xds::access_log::access_log;
use crate::convert::from_xds::{name_mismatch, reject_rest};
use crate::convert::to_xds::{INBOUND_PORT, RAW_PROTOCOL, TLS_INSPECTOR, TLS_PROTOCOL};
use crate::convert::{unpack, ConvertError};
use crate::domain::{
    inbound_listener_service, AccessLogTarget, AuthzRule, InboundPolicy, TlsMode,
    TRUST_BUNDLE_SECRET,
};

use super::policies::rbac_filter;
use super::{common_tls_context, transport_socket_config, trust_bundle_sds};

/// A workload's inbound listener `name` (`inbound|<ns>|<name>`): bound to
/// `0.0.0.0:`[`INBOUND_PORT`], one filter chain per accepted transport (its TLS mode), each
/// with the same HTTP connection manager: RBAC deny, RBAC allow, router.
pub(in crate::convert::from_xds) fn inbound_listener(
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
    let mut rules: Option<Chain> = None;
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
                    "every filter chain must enforce the same authorization and access log",
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
    let Chain {
        deny,
        allow,
        access_log,
    } = rules.unwrap_or_default();
    Ok(InboundPolicy {
        service,
        mode,
        deny,
        allow,
        access_log,
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

/// What an inbound HTTP connection manager enforces — deny rules, then allow rules (as in
/// [`InboundPolicy`]) — and where it logs.
#[derive(Debug, Default, PartialEq)]
struct Chain {
    deny: Vec<AuthzRule>,
    allow: Option<Vec<AuthzRule>>,
    access_log: Option<AccessLogTarget>,
}

/// One inbound filter chain: whether it is the TLS one, and what it enforces.
fn filter_chain(
    mut chain: FilterChain,
    listener: &str,
    path: &str,
) -> Result<(bool, Chain), ConvertError> {
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
/// optional RBAC deny, optional RBAC allow, router; optionally an access log.
fn inbound_hcm(any: &Any, listener: &str, path: &str) -> Result<Chain, ConvertError> {
    let mut hcm: HttpConnectionManager = unpack(any, path)?;
    let route = hcm.route_specifier.take();
    let filters = std::mem::take(&mut hcm.http_filters);
    let access_log = access_log(
        std::mem::take(&mut hcm.access_log),
        &format!("{path}.access_log"),
    )?;
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
    Ok(Chain {
        deny: deny.unwrap_or_default(),
        allow,
        access_log,
    })
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
