//! Destinations by address, for connections a transparent sidecar intercepts: the app
//! connected to `address:port` and never said a service name.
//!
//! A service's virtual address (a cluster IP) is that service: its HTTP routes, splits and
//! retries, or its own cluster for opaque TCP. An endpoint's own address (a pod IP) is
//! that one endpoint, as the app asked: its cluster's mutual TLS, limits and metrics, but
//! no balancing away from it and no route rules, the way Linkerd treats a connection to a
//! pod IP. Anything else is not in the mesh and passes through unchanged.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tandem_xds::domain::{AppProtocol, ClusterWeight, ProxyRoute, ProxyView};

use super::{compile, service_label, Clusters, Destination, MatchError};
use crate::config::Protocol;
use crate::outbound::cluster::Cluster;

/// What an intercepted connection to one address is for.
#[derive(Debug, Clone)]
pub struct Intercepted {
    /// Where HTTP requests go (`None`: the port carries opaque TCP only).
    pub dest: Option<Arc<Destination>>,
    /// Where opaque TCP goes (`None`: the port carries HTTP only).
    pub tcp: Option<Arc<Cluster>>,
    /// How to read the client: `Opaque` for a TCP port, else detect.
    pub listen: Protocol,
    /// `true` for an endpoint's own address: requests go to that endpoint only.
    pub pinned: bool,
}

/// Every intercepted address of `view`: endpoints first, then the services' virtual
/// addresses, which win where both name one address.
pub(super) fn build(
    view: &ProxyView,
    clusters: &Clusters<'_>,
    destinations: &HashMap<&str, Arc<Destination>>,
) -> Result<HashMap<SocketAddr, Intercepted>, MatchError> {
    let endpoints: usize = view.clusters.values().map(|c| c.endpoints.len()).sum();
    let mut by_addr = HashMap::with_capacity(endpoints + view.addresses.len());
    // In name order, so an address two clusters share always goes to the same one.
    for (name, c) in &view.clusters {
        let Some(cluster) = clusters.0.get(name.as_str()) else {
            continue;
        };
        if c.endpoints.is_empty() {
            continue;
        }
        let direct = direct_destination(name, cluster, clusters)?;
        let listen = match Protocol::from(c.protocol) {
            Protocol::Opaque => Protocol::Opaque,
            _ => Protocol::Detect,
        };
        for addr in &c.endpoints {
            by_addr.entry(*addr).or_insert_with(|| Intercepted {
                dest: Some(direct.clone()),
                tcp: Some(cluster.clone()),
                listen,
                pinned: true,
            });
        }
    }
    for (addr, target) in &view.addresses {
        let at = || format!("addresses[{addr}]");
        let dest = match &target.route_config {
            Some(rc) => Some(
                destinations
                    .get(rc.as_str())
                    .cloned()
                    .ok_or_else(|| MatchError {
                        path: at(),
                        reason: format!("unknown route config {rc:?}"),
                    })?,
            ),
            None => None,
        };
        let tcp = match &target.cluster {
            Some(c) => Some(clusters.get(c, at())?),
            None => None,
        };
        let listen = match target.protocol {
            AppProtocol::Tcp => Protocol::Opaque,
            _ => Protocol::Detect,
        };
        by_addr.insert(
            *addr,
            Intercepted {
                dest,
                tcp,
                listen,
                pinned: false,
            },
        );
    }
    Ok(by_addr)
}

/// The destination of a call to one endpoint of `name`: one catch-all route to its
/// cluster, labelled with the cluster's service.
fn direct_destination(
    name: &str,
    cluster: &Arc<Cluster>,
    clusters: &Clusters<'_>,
) -> Result<Arc<Destination>, MatchError> {
    let label = service_label(name);
    let route = ProxyRoute {
        name: format!("{label}/endpoint"),
        clusters: vec![ClusterWeight {
            cluster: name.to_string(),
            weight: 1,
        }],
        ..Default::default()
    };
    let route = compile(&route, clusters, &format!("clusters[{name}]"))?;
    Ok(Arc::new(Destination {
        name: label.into(),
        routes: vec![route],
        default_cluster: Some(cluster.clone()),
    }))
}
