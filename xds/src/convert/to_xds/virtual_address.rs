//! A service's virtual addresses as listeners: one per `address:port`, not bound
//! (`bind_to_port: false`), the form Envoy and Istio use for destinations a sidecar
//! intercepts rather than listens for. The port's protocol picks the filter chains.

use std::net::SocketAddr;

use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address, Address, SocketAddress, TrafficDirection,
};
use envoy_types::pb::envoy::config::listener::v3::{
    filter, listener_filter, Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter,
};
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::CodecType;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    tcp_proxy, TcpProxy,
};
use envoy_types::pb::google::protobuf::BoolValue;

use super::{http_connection_manager, HTTP_CONNECTION_MANAGER};
use crate::convert::pack;
use crate::domain::{address_listener_name, AppProtocol, Service};

/// Name of the HTTP inspector listener filter, which tells HTTP from other bytes on a
/// port of unknown protocol.
pub const HTTP_INSPECTOR: &str = "envoy.filters.listener.http_inspector";
/// Name of the TCP proxy network filter.
pub const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";
/// `filter_chain_match.application_protocols` the HTTP inspector reports for HTTP.
pub const HTTP_APPLICATION_PROTOCOLS: [&str; 3] = ["http/1.0", "http/1.1", "h2c"];
/// Name of the HTTP filter chain.
pub const HTTP_CHAIN: &str = "http";
/// Name of the opaque TCP filter chain.
pub const TCP_CHAIN: &str = "tcp";

/// Whether some virtual `address:port` of `service` on `port` (`None`: any of its ports)
/// may carry opaque TCP, which needs the service's own cluster.
pub(super) fn carries_tcp(service: &Service, port: Option<u16>) -> bool {
    !service.addresses.is_empty()
        && service
            .ports
            .iter()
            .filter(|p| !service.per_port() || Some(p.port) == port)
            .any(|p| matches!(p.protocol, AppProtocol::Tcp | AppProtocol::Detect))
}

/// The listeners of every `address:port` of `service` whose route configuration and
/// cluster are both named `name`: all its ports, or only `port` for a service with a
/// configuration per port.
pub(super) fn listeners(
    service: &Service,
    port: Option<u16>,
    name: &str,
    with_fault: bool,
) -> Vec<Listener> {
    let mut out = Vec::with_capacity(service.addresses.len() * service.ports.len());
    for ip in &service.addresses {
        for p in &service.ports {
            if service.per_port() && Some(p.port) != port {
                continue;
            }
            let addr = SocketAddr::new(*ip, p.port);
            out.push(listener(addr, p.protocol, name, with_fault));
        }
    }
    out
}

fn listener(addr: SocketAddr, protocol: AppProtocol, fqdn: &str, with_fault: bool) -> Listener {
    let http = || {
        let mut hcm = http_connection_manager(fqdn, with_fault);
        // The port's HTTP version, where the service says it.
        hcm.codec_type = match protocol {
            AppProtocol::Http => CodecType::Http1,
            AppProtocol::Http2 => CodecType::Http2,
            AppProtocol::Tcp | AppProtocol::Detect => CodecType::Auto,
        } as i32;
        FilterChain {
            name: HTTP_CHAIN.to_string(),
            filters: vec![Filter {
                name: HTTP_CONNECTION_MANAGER.to_string(),
                config_type: Some(filter::ConfigType::TypedConfig(pack(&hcm))),
            }],
            ..Default::default()
        }
    };
    let tcp = || FilterChain {
        name: TCP_CHAIN.to_string(),
        filters: vec![Filter {
            name: TCP_PROXY.to_string(),
            config_type: Some(filter::ConfigType::TypedConfig(pack(&TcpProxy {
                stat_prefix: fqdn.to_string(),
                cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(fqdn.to_string())),
                ..Default::default()
            }))),
        }],
        ..Default::default()
    };
    let mut l = Listener {
        name: address_listener_name(addr),
        address: Some(socket(addr)),
        bind_to_port: Some(BoolValue { value: false }),
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    };
    match protocol {
        AppProtocol::Http | AppProtocol::Http2 => l.filter_chains = vec![http()],
        AppProtocol::Tcp => l.filter_chains = vec![tcp()],
        AppProtocol::Detect => {
            l.listener_filters = vec![ListenerFilter {
                name: HTTP_INSPECTOR.to_string(),
                config_type: Some(listener_filter::ConfigType::TypedConfig(pack(
                    &HttpInspector {},
                ))),
                ..Default::default()
            }];
            let mut chain = http();
            chain.filter_chain_match = Some(FilterChainMatch {
                application_protocols: HTTP_APPLICATION_PROTOCOLS
                    .iter()
                    .map(|p| p.to_string())
                    .collect(),
                ..Default::default()
            });
            l.filter_chains = vec![chain];
            l.default_filter_chain = Some(tcp());
        }
    }
    l
}

fn socket(addr: SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: addr.ip().to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                addr.port(),
            ))),
            ..Default::default()
        })),
    }
}
