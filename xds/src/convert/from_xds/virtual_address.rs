//! A listener with an address: a service's virtual `address:port`, which a transparent
//! sidecar matches intercepted connections against. It must not be bound, and its filter
//! chains say the port's protocol: an HTTP connection manager over RDS, a TCP proxy to
//! one cluster, or both behind the HTTP inspector.

use std::net::{IpAddr, SocketAddr};

use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Address, TrafficDirection};
use envoy_types::pb::envoy::config::listener::v3::{
    filter, listener_filter, FilterChain, FilterChainMatch, Listener, ListenerFilter,
};
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::CodecType;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    tcp_proxy, TcpProxy,
};

use super::{http_connection_manager, name_mismatch, reject_rest};
use crate::convert::to_xds::{
    HTTP_APPLICATION_PROTOCOLS, HTTP_CONNECTION_MANAGER, HTTP_INSPECTOR, TCP_PROXY,
};
use crate::convert::{unpack, ConvertError};
use crate::domain::{AddressTarget, AppProtocol};

/// What one chain does with a connection.
enum Chain {
    /// HTTP through this route configuration, with this codec.
    Http(String, i32),
    /// Opaque TCP to this cluster.
    Tcp(String),
}

/// An address listener `name`: its `address:port` and what connections to it are for.
pub(super) fn listener(
    mut l: Listener,
    name: &str,
    path: &str,
) -> Result<(SocketAddr, AddressTarget), ConvertError> {
    if l.name != name {
        return Err(name_mismatch(path, &l.name));
    }
    let addr = socket_address(l.address.take(), &format!("{path}.address"))?;
    if addr.port() == 0 {
        return Err(ConvertError::new(
            format!("{path}.address.socket_address.port_value"),
            "must be 1..=65535",
        ));
    }
    match l.bind_to_port.take() {
        Some(b) if !b.value => {}
        _ => {
            return Err(ConvertError::new(
                format!("{path}.bind_to_port"),
                "must be false: Tandem matches intercepted connections against a service's \
                 address, it does not listen on it",
            ))
        }
    }
    let direction = std::mem::take(&mut l.traffic_direction);
    if direction != TrafficDirection::Outbound as i32
        && direction != TrafficDirection::Unspecified as i32
    {
        return Err(ConvertError::new(
            format!("{path}.traffic_direction"),
            "a service address is outbound",
        ));
    }
    let inspector = inspector(std::mem::take(&mut l.listener_filters), path)?;
    let chains = std::mem::take(&mut l.filter_chains);
    let default_chain = l.default_filter_chain.take();
    l.name.clear();
    l.stat_prefix.clear();
    l.metadata = None;
    reject_rest(&l, path)?;

    let mut http = None;
    let mut matched_http = false;
    let mut tcp = None;
    for (i, c) in chains.into_iter().enumerate() {
        let at = format!("{path}.filter_chains[{i}]");
        let (matched, chain) = filter_chain(c, &at)?;
        if matched && !inspector {
            return Err(ConvertError::new(
                format!("{at}.filter_chain_match"),
                format!(
                    "matching on application protocols needs the {HTTP_INSPECTOR} listener filter"
                ),
            ));
        }
        match chain {
            Chain::Http(..) if http.is_some() => {
                return Err(ConvertError::new(at, "a second HTTP chain"));
            }
            Chain::Tcp(_) if tcp.is_some() => {
                return Err(ConvertError::new(at, "a second TCP chain"));
            }
            Chain::Http(rc, codec) => {
                matched_http = matched;
                http = Some((rc, codec));
            }
            Chain::Tcp(_) if matched => {
                return Err(ConvertError::new(
                    format!("{at}.filter_chain_match"),
                    "only the HTTP chain may match on application protocols",
                ));
            }
            Chain::Tcp(cluster) => tcp = Some(cluster),
        }
    }
    if let Some(c) = default_chain {
        let at = format!("{path}.default_filter_chain");
        match filter_chain(c, &at)? {
            (false, Chain::Tcp(cluster)) if tcp.is_none() => tcp = Some(cluster),
            _ => {
                return Err(ConvertError::new(
                    at,
                    "must be the only TCP proxy chain, without a match",
                ))
            }
        }
    }
    let target = match (http, tcp) {
        (Some((rc, codec)), None) => AddressTarget {
            protocol: codec_protocol(codec),
            route_config: Some(rc),
            cluster: None,
        },
        (None, Some(cluster)) => AddressTarget {
            protocol: AppProtocol::Tcp,
            route_config: None,
            cluster: Some(cluster),
        },
        (Some((rc, _)), Some(cluster)) if matched_http => AddressTarget {
            protocol: AppProtocol::Detect,
            route_config: Some(rc),
            cluster: Some(cluster),
        },
        (Some(_), Some(_)) => {
            return Err(ConvertError::new(
                format!("{path}.filter_chains"),
                "with both HTTP and TCP chains, the HTTP chain must match the application protocols http/1.1 and h2c",
            ))
        }
        (None, None) => {
            return Err(ConvertError::new(
                format!("{path}.filter_chains"),
                "required: an HTTP connection manager or a TCP proxy",
            ))
        }
    };
    Ok((addr, target))
}

/// The listener filters: none, or the HTTP inspector alone; whether it is there.
fn inspector(filters: Vec<ListenerFilter>, path: &str) -> Result<bool, ConvertError> {
    let mut found = false;
    for (i, mut f) in filters.into_iter().enumerate() {
        let at = format!("{path}.listener_filters[{i}]");
        if f.name != HTTP_INSPECTOR || found {
            return Err(ConvertError::new(
                format!("{at}.name"),
                format!("only one {HTTP_INSPECTOR} is supported here"),
            ));
        }
        if let Some(listener_filter::ConfigType::TypedConfig(any)) = f.config_type.take() {
            let _: HttpInspector = unpack(&any, &format!("{at}.typed_config"))?;
        }
        f.name.clear();
        reject_rest(&f, &at)?;
        found = true;
    }
    Ok(found)
}

/// One filter chain: whether it matches on application protocols (HTTP only), and what it
/// does.
fn filter_chain(mut c: FilterChain, path: &str) -> Result<(bool, Chain), ConvertError> {
    let matched = match c.filter_chain_match.take() {
        None => false,
        Some(m) => {
            let mut m: FilterChainMatch = m;
            let protocols = std::mem::take(&mut m.application_protocols);
            reject_rest(&m, &format!("{path}.filter_chain_match"))?;
            let http: Vec<String> = HTTP_APPLICATION_PROTOCOLS
                .iter()
                .map(|p| p.to_string())
                .collect();
            if protocols.is_empty() || protocols.iter().any(|p| !http.contains(p)) {
                return Err(ConvertError::new(
                    format!("{path}.filter_chain_match.application_protocols"),
                    format!("only the HTTP protocols {HTTP_APPLICATION_PROTOCOLS:?} are supported"),
                ));
            }
            true
        }
    };
    let filters = std::mem::take(&mut c.filters);
    c.name.clear();
    c.metadata = None;
    reject_rest(&c, path)?;
    let [mut f] = <[_; 1]>::try_from(filters).map_err(|_| {
        ConvertError::new(
            format!("{path}.filters"),
            "exactly one filter: an HTTP connection manager or a TCP proxy",
        )
    })?;
    let at = format!("{path}.filters[0]");
    let Some(filter::ConfigType::TypedConfig(any)) = f.config_type.take() else {
        return Err(ConvertError::new(format!("{at}.typed_config"), "required"));
    };
    let chain = match f.name.as_str() {
        HTTP_CONNECTION_MANAGER => {
            let (rc, codec) =
                http_connection_manager(unpack(&any, &format!("{at}.typed_config"))?, &at)?;
            Chain::Http(rc, codec)
        }
        TCP_PROXY => Chain::Tcp(tcp_proxy(
            unpack(&any, &format!("{at}.typed_config"))?,
            &at,
        )?),
        other => {
            return Err(ConvertError::new(
                format!("{at}.name"),
                format!("{other:?} is not supported: use {HTTP_CONNECTION_MANAGER} or {TCP_PROXY}"),
            ))
        }
    };
    Ok((matched, chain))
}

/// A TCP proxy to one cluster; returns the cluster.
fn tcp_proxy(mut t: TcpProxy, path: &str) -> Result<String, ConvertError> {
    let cluster = match t.cluster_specifier.take() {
        Some(tcp_proxy::ClusterSpecifier::Cluster(c)) if !c.is_empty() => c,
        Some(tcp_proxy::ClusterSpecifier::WeightedClusters(_)) => {
            return Err(ConvertError::new(
                format!("{path}.weighted_clusters"),
                "weighted TCP clusters are not supported",
            ))
        }
        _ => return Err(ConvertError::new(format!("{path}.cluster"), "required")),
    };
    t.stat_prefix.clear();
    reject_rest(&t, path)?;
    Ok(cluster)
}

fn codec_protocol(codec: i32) -> AppProtocol {
    if codec == CodecType::Http1 as i32 {
        AppProtocol::Http
    } else if codec == CodecType::Http2 as i32 {
        AppProtocol::Http2
    } else {
        // AUTO: HTTP of either version, which the proxy tells apart by the first bytes.
        AppProtocol::Detect
    }
}

/// A TCP `SocketAddress` (IP literal and port value) at `path`, which names its parent.
pub(super) fn socket_address(
    address: Option<Address>,
    path: &str,
) -> Result<SocketAddr, ConvertError> {
    let path = format!("{path}.socket_address");
    let mut sa = match address.and_then(|a| a.address) {
        Some(address::Address::SocketAddress(sa)) => sa,
        _ => return Err(ConvertError::new(path, "required")),
    };
    if sa.protocol != 0 {
        return Err(ConvertError::new(
            format!("{path}.protocol"),
            "only TCP is supported",
        ));
    }
    let port = match sa.port_specifier.take() {
        Some(socket_address::PortSpecifier::PortValue(p)) => u16::try_from(p)
            .map_err(|_| ConvertError::new(format!("{path}.port_value"), "above 65535"))?,
        _ => return Err(ConvertError::new(format!("{path}.port_value"), "required")),
    };
    let ip: IpAddr = sa.address.parse().map_err(|_| {
        ConvertError::new(
            format!("{path}.address"),
            format!("{:?} is not an IP address", sa.address),
        )
    })?;
    sa.address.clear();
    reject_rest(&sa, &path)?;
    Ok(SocketAddr::new(ip, port))
}
