//! Proxy side: accepted xDS resources → [`ProxyView`].
//!
//! Tandem's proxy implements a subset of xDS. Anything outside it that would change what
//! the proxy does (a `direct_response` other than a bodiless 500, `runtime_fraction`
//! matches, a cluster type other than EDS, HTTP filters other than fault and router,
//! endpoint priorities, retry conditions Tandem lacks, TLS other than mesh TLS 1.3 with
//! SDS secrets, RBAC beyond Tandem's rules, ...; see `security` for the zero-trust
//! resources) is an [`FromXdsError::Invalid`]
//! error naming the resource and field, so the client NACKs it instead of silently
//! ignoring it. Benign fields (names, `stat_prefix`, metadata, `connect_timeout`) are
//! accepted. A field that is
//! set but not understood is reported with its protobuf field number.
//!
//! Resources that are valid but reference ones not (yet) present give
//! [`FromXdsError::Incomplete`], so a client can wait for the rest.

mod access_log;
mod action;
mod cluster;
mod filters;
mod route;
mod security;
mod virtual_address;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use envoy_types::pb::envoy::config::core::v3::{
    config_source::ConfigSourceSpecifier, ConfigSource, HealthStatus,
};
use envoy_types::pb::envoy::config::endpoint::v3::{lb_endpoint, ClusterLoadAssignment};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;

use super::{
    unpack, ConvertError, FromXdsError, Missing, Resources, CLUSTER_TYPE, ENDPOINT_TYPE,
    LISTENER_TYPE, ROUTE_TYPE, SECRET_TYPE,
};
use crate::domain::{is_inbound_listener, ProxyCluster, ProxyRoute, ProxyView};

/// Builds the proxy's view of a complete, consistent set of resources (per type URL, name
/// → `Any`), as one proxy receives them: at most one inbound listener (its own).
pub fn to_proxy_view(resources: &Resources) -> Result<ProxyView, FromXdsError> {
    let analysis = analyze(resources)?;
    if analysis.missing.is_empty() {
        Ok(analysis.view)
    } else {
        Err(FromXdsError::Incomplete(analysis.missing))
    }
}

/// Checks a whole snapshot as [`to_proxy_view`] would, except that it holds the inbound
/// listener of every workload (each stream gets only its own): each must be valid, and
/// the view's `inbound` is meaningless.
pub(crate) fn check_snapshot(resources: &Resources) -> Result<(), FromXdsError> {
    let analysis = analyze_with(resources, Inbound::Many)?;
    if analysis.missing.is_empty() {
        Ok(())
    } else {
        Err(FromXdsError::Incomplete(analysis.missing))
    }
}

/// How many inbound listeners a set of resources may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inbound {
    /// One proxy's resources: its own at most.
    One,
    /// A control plane snapshot: one per workload.
    Many,
}

/// What [`analyze`] learns from a set of resources, complete or not.
#[derive(Debug, Default)]
pub(crate) struct Analysis {
    /// The view; meaningful only when `missing` is empty.
    pub view: ProxyView,
    /// Referenced resources that are absent.
    pub missing: Vec<Missing>,
    /// Route configuration names the listeners reference.
    pub route_refs: BTreeSet<String>,
    /// `ClusterLoadAssignment` names the clusters reference.
    pub endpoint_refs: BTreeSet<String>,
}

/// Decodes and validates every resource (any invalid one is an error), then links them.
pub(crate) fn analyze(resources: &Resources) -> Result<Analysis, ConvertError> {
    analyze_with(resources, Inbound::One)
}

fn analyze_with(resources: &Resources, inbound: Inbound) -> Result<Analysis, ConvertError> {
    let mut a = Analysis::default();
    let mut missing = BTreeSet::new();
    for (type_url, items) in resources {
        if ![
            LISTENER_TYPE,
            ROUTE_TYPE,
            CLUSTER_TYPE,
            ENDPOINT_TYPE,
            SECRET_TYPE,
        ]
        .contains(&type_url.as_str())
        {
            if let Some(name) = items.keys().next() {
                return Err(ConvertError::new(
                    format!("{type_url}[{name}]"),
                    "unsupported resource type",
                ));
            }
        }
    }
    let empty = BTreeMap::new();
    let of = |t: &str| resources.get(t).unwrap_or(&empty);
    let mut address_listeners: BTreeMap<SocketAddr, String> = BTreeMap::new();

    for (name, any) in of(LISTENER_TYPE) {
        let path = format!("Listener[{name}]");
        if is_inbound_listener(name) {
            // Inbound listeners route nothing: no route configuration to reference.
            let policy = security::inbound_listener(unpack(any, &path)?, name, &path)?;
            if inbound == Inbound::One && a.view.inbound.is_some() {
                return Err(ConvertError::new(path, "more than one inbound listener"));
            }
            a.view.inbound = Some(policy);
            continue;
        }
        let l: Listener = unpack(any, &path)?;
        if l.address.is_some() {
            // A service's virtual address, for intercepted connections.
            let (addr, target) = virtual_address::listener(l, name, &path)?;
            a.route_refs.extend(target.route_config.clone());
            if let Some(old) = a.view.addresses.insert(addr, target) {
                return Err(ConvertError::new(
                    format!("{path}.address"),
                    format!("{addr} is also the address of another listener ({old:?})"),
                ));
            }
            address_listeners.insert(addr, name.clone());
            continue;
        }
        let rc = listener(l, name, &path)?;
        a.route_refs.insert(rc.clone());
        a.view.listeners.insert(name.clone(), rc);
    }
    let mut route_clusters: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (name, any) in of(ROUTE_TYPE) {
        let path = format!("RouteConfiguration[{name}]");
        let rc: RouteConfiguration = unpack(any, &path)?;
        if rc.name != *name {
            return Err(name_mismatch(&path, &rc.name));
        }
        let routes: Vec<ProxyRoute> = route::route_configuration(rc, &path)?;
        let used = routes
            .iter()
            .flat_map(|r| {
                let mirrors = r.mirrors.iter().map(|m| m.cluster.clone());
                r.clusters.iter().map(|c| c.cluster.clone()).chain(mirrors)
            })
            .collect();
        route_clusters.insert(name, used);
        a.view.route_configs.insert(name.clone(), routes);
    }
    let mut clusters: BTreeMap<&str, cluster::ClusterInfo> = BTreeMap::new();
    for (name, any) in of(CLUSTER_TYPE) {
        let path = format!("Cluster[{name}]");
        let info = cluster::cluster(unpack(any, &path)?, name, &path)?;
        a.endpoint_refs.insert(info.eds_name.clone());
        clusters.insert(name, info);
    }
    for (name, any) in of(SECRET_TYPE) {
        let path = format!("Secret[{name}]");
        let secret: Secret = unpack(any, &path)?;
        a.view.trust_bundle = Some(security::trust_bundle(secret, name, &path)?);
    }
    let mut assignments: BTreeMap<&str, Vec<SocketAddr>> = BTreeMap::new();
    for (name, any) in of(ENDPOINT_TYPE) {
        let path = format!("ClusterLoadAssignment[{name}]");
        assignments.insert(name, load_assignment(unpack(any, &path)?, name, &path)?);
    }

    // Link.
    for (listener, rc) in &a.view.listeners {
        if !route_clusters.contains_key(rc.as_str()) {
            missing.insert(Missing {
                type_url: ROUTE_TYPE,
                name: rc.clone(),
                referenced_by: format!("Listener[{listener}]"),
            });
        }
    }
    for (addr, target) in &a.view.addresses {
        let name = address_listeners.get(addr).cloned().unwrap_or_default();
        let route_config = target.route_config.as_deref();
        let cluster = target.cluster.as_deref();
        for (type_url, wanted, present) in [
            (
                ROUTE_TYPE,
                route_config,
                route_config.is_some_and(|rc| route_clusters.contains_key(rc)),
            ),
            (
                CLUSTER_TYPE,
                cluster,
                cluster.is_some_and(|c| clusters.contains_key(c)),
            ),
        ] {
            if let (Some(wanted), false) = (wanted, present) {
                missing.insert(Missing {
                    type_url,
                    name: wanted.to_string(),
                    referenced_by: format!("Listener[{name}]"),
                });
            }
        }
    }
    for (rc, used) in &route_clusters {
        for c in used {
            if !clusters.contains_key(c.as_str()) {
                missing.insert(Missing {
                    type_url: CLUSTER_TYPE,
                    name: c.clone(),
                    referenced_by: format!("RouteConfiguration[{rc}]"),
                });
            }
        }
    }
    for (name, info) in clusters {
        match assignments.get(info.eds_name.as_str()) {
            Some(endpoints) => {
                a.view.clusters.insert(
                    name.to_string(),
                    ProxyCluster {
                        protocol: info.protocol,
                        endpoints: endpoints.clone(),
                        policy: info.policy,
                        tls: info.tls,
                    },
                );
            }
            None => {
                missing.insert(Missing {
                    type_url: ENDPOINT_TYPE,
                    name: info.eds_name,
                    referenced_by: format!("Cluster[{name}]"),
                });
            }
        }
    }
    a.missing = missing.into_iter().collect();
    Ok(a)
}

/// Fails when `rest` (a message whose understood fields were taken out) still has a field
/// set, naming its protobuf field number.
pub(crate) fn reject_rest<T: prost::Message + Default + PartialEq>(
    rest: &T,
    path: &str,
) -> Result<(), ConvertError> {
    if *rest == T::default() {
        return Ok(());
    }
    let bytes = rest.encode_to_vec();
    let mut key: u64 = 0;
    for (i, b) in bytes.iter().take(10).enumerate() {
        key |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            break;
        }
    }
    Err(ConvertError::new(
        path,
        format!(
            "sets a field Tandem does not support (protobuf field {})",
            key >> 3
        ),
    ))
}

pub(super) fn name_mismatch(path: &str, got: &str) -> ConvertError {
    ConvertError::new(
        format!("{path}.name"),
        format!("resource is named {got:?}, not as announced"),
    )
}

pub(super) fn check_ads(source: Option<ConfigSource>, path: &str) -> Result<(), ConvertError> {
    match source.and_then(|s| s.config_source_specifier) {
        Some(ConfigSourceSpecifier::Ads(_)) | Some(ConfigSourceSpecifier::Self_(_)) => Ok(()),
        Some(_) => Err(ConvertError::new(path, "config source must be ads or self")),
        None => Err(ConvertError::new(path, "required")),
    }
}

/// A listener: must be an API listener with an RDS `HttpConnectionManager`; returns the
/// route configuration name.
fn listener(mut l: Listener, name: &str, path: &str) -> Result<String, ConvertError> {
    if l.name != name {
        return Err(name_mismatch(path, &l.name));
    }
    let api = l.api_listener.take();
    l.name.clear();
    l.stat_prefix.clear();
    l.metadata = None;
    reject_rest(&l, path)?;
    let path = format!("{path}.api_listener");
    let any = api
        .and_then(|a| a.api_listener)
        .ok_or_else(|| ConvertError::new(&path, "required: Tandem consumes API listeners only"))?;
    let path = format!("{path}.api_listener");
    let hcm: HttpConnectionManager = unpack(&any, &path)?;
    let (route_config, _codec) = http_connection_manager(hcm, &path)?;
    Ok(route_config)
}

/// An HTTP connection manager: routes over RDS (ADS), fault and router filters only;
/// returns the route configuration name and the codec type.
pub(super) fn http_connection_manager(
    mut hcm: HttpConnectionManager,
    path: &str,
) -> Result<(String, i32), ConvertError> {
    let route_specifier = hcm.route_specifier.take();
    let filters = std::mem::take(&mut hcm.http_filters);
    let codec = std::mem::take(&mut hcm.codec_type);
    hcm.stat_prefix.clear();
    reject_rest(&hcm, path)?;
    filters::http_filters(filters, &format!("{path}.http_filters"))?;
    match route_specifier {
        Some(RouteSpecifier::Rds(rds)) => {
            check_ads(rds.config_source, &format!("{path}.rds.config_source"))?;
            if rds.route_config_name.is_empty() {
                return Err(ConvertError::new(
                    format!("{path}.rds.route_config_name"),
                    "must be non-empty",
                ));
            }
            Ok((rds.route_config_name, codec))
        }
        Some(RouteSpecifier::RouteConfig(_)) => Err(ConvertError::new(
            format!("{path}.route_config"),
            "inline route configurations are not supported: use RDS",
        )),
        Some(RouteSpecifier::ScopedRoutes(_)) => Err(ConvertError::new(
            format!("{path}.scoped_routes"),
            "scoped routes are not supported: use RDS",
        )),
        None => Err(ConvertError::new(format!("{path}.rds"), "required")),
    }
}

/// Endpoint addresses of a load assignment, in order, without duplicates; endpoints whose
/// health is not UNKNOWN or HEALTHY are left out (they take no traffic).
fn load_assignment(
    mut cla: ClusterLoadAssignment,
    name: &str,
    path: &str,
) -> Result<Vec<SocketAddr>, ConvertError> {
    if cla.cluster_name != name {
        return Err(ConvertError::new(
            format!("{path}.cluster_name"),
            format!("resource is named {:?}, not as announced", cla.cluster_name),
        ));
    }
    let groups = std::mem::take(&mut cla.endpoints);
    cla.cluster_name.clear();
    reject_rest(&cla, path)?;
    let mut out = Vec::new();
    for (i, mut g) in groups.into_iter().enumerate() {
        let gpath = format!("{path}.endpoints[{i}]");
        if g.priority != 0 {
            return Err(ConvertError::new(
                format!("{gpath}.priority"),
                "priorities are not supported",
            ));
        }
        if g.locality.is_none() {
            return Err(ConvertError::new(format!("{gpath}.locality"), "required"));
        }
        let lb_endpoints = std::mem::take(&mut g.lb_endpoints);
        g.locality = None;
        g.load_balancing_weight = None;
        g.metadata = None;
        reject_rest(&g, &gpath)?;
        for (j, mut e) in lb_endpoints.into_iter().enumerate() {
            let epath = format!("{gpath}.lb_endpoints[{j}]");
            if e.load_balancing_weight.is_some_and(|w| w.value != 1) {
                return Err(ConvertError::new(
                    format!("{epath}.load_balancing_weight"),
                    "endpoint weights are not supported",
                ));
            }
            let health = std::mem::take(&mut e.health_status);
            let host = e.host_identifier.take();
            e.load_balancing_weight = None;
            e.metadata = None;
            reject_rest(&e, &epath)?;
            let addr = endpoint_address(host, &format!("{epath}.endpoint"))?;
            let ready =
                health == HealthStatus::Unknown as i32 || health == HealthStatus::Healthy as i32;
            if ready && !out.contains(&addr) {
                out.push(addr);
            }
        }
    }
    Ok(out)
}

fn endpoint_address(
    host: Option<lb_endpoint::HostIdentifier>,
    path: &str,
) -> Result<SocketAddr, ConvertError> {
    let mut ep = match host {
        Some(lb_endpoint::HostIdentifier::Endpoint(ep)) => ep,
        Some(lb_endpoint::HostIdentifier::EndpointName(_)) => {
            return Err(ConvertError::new(path, "named endpoints are not supported"))
        }
        None => return Err(ConvertError::new(path, "required")),
    };
    let address = ep.address.take();
    ep.hostname.clear();
    reject_rest(&ep, path)?;
    virtual_address::socket_address(address, &format!("{path}.address"))
}
