//! The one immutable config snapshot every request reads, swapped atomically on reload:
//! settings, the routing table compiled from the destinations, and this workload's
//! inbound policy. Where snapshots come from is [`crate::discovery`].
//!
//! A request loads the snapshot once and uses it to the end, so a reload never changes
//! the rules under a request already in flight, and nothing is ever half-applied.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tandem_xds::domain::{ClusterWeight, ProxyCluster, ProxyRoute, ProxyView};

use crate::client::ConnectSettings;
use crate::config::{Config, ConfigError};
use crate::outbound::cluster::Registry;
use crate::outbound::route::{Destination, Intercepted, RouteTable};

/// One complete, validated configuration generation.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one with each accepted config.
    pub version: u64,
    /// When this snapshot was accepted.
    pub loaded_at: SystemTime,
    /// Settings (timeouts, limits, listeners) and, in static mode, the services.
    pub config: Config,
    /// The destinations as routed, from the static services or from xDS.
    pub view: ProxyView,
    /// This workload's service name, shared as a metric label.
    pub own_service: Arc<str>,
    routes: RouteTable,
}

impl Snapshot {
    /// Builds snapshot number `version` from settings and a view of the destinations,
    /// keeping what `registry` knows about endpoints that stay.
    pub fn new(
        version: u64,
        config: Config,
        view: ProxyView,
        registry: &Registry,
        intercepting: bool,
    ) -> Result<Self, ConfigError> {
        let routes = RouteTable::build(&view, registry, intercepting).map_err(|e| ConfigError {
            path: e.path,
            reason: e.reason,
        })?;
        Ok(Snapshot {
            version,
            loaded_at: SystemTime::now(),
            own_service: config.service.as_str().into(),
            config,
            view,
            routes,
        })
    }

    /// The destination for a host name (lowercase, port stripped), if known.
    pub fn destination(&self, host: &str) -> Option<&Arc<Destination>> {
        self.routes.destination(host)
    }

    /// The destination for a host name (lowercase) called on `port`: the port's own, for
    /// a service with several ports, else the host's.
    pub fn destination_at(&self, host: &str, port: Option<u16>) -> Option<&Arc<Destination>> {
        self.routes.destination_at(host, port)
    }

    /// What an intercepted connection to `addr` is for; `None`: not in the mesh.
    pub fn intercepted(&self, addr: &std::net::SocketAddr) -> Option<&Intercepted> {
        self.routes.intercepted(addr)
    }

    /// Connect timeout and pool idle time for upstream connections.
    pub fn connect_settings(&self) -> ConnectSettings {
        ConnectSettings {
            connect_timeout: self.config.timeouts.connect,
            idle_timeout: self.config.timeouts.upstream_idle,
        }
    }
}

/// The view a static config file describes: each service is its own listener, route config
/// and cluster, with one catch-all route.
pub fn static_view(config: &Config) -> ProxyView {
    let mut view = ProxyView::default();
    for s in config.services.values() {
        view.listeners.insert(s.name.clone(), s.name.clone());
        view.route_configs.insert(
            s.name.clone(),
            vec![ProxyRoute {
                name: format!("{}/default", s.name),
                matches: Default::default(),
                clusters: vec![ClusterWeight {
                    cluster: s.name.clone(),
                    weight: 1,
                }],
                ..Default::default()
            }],
        );
        view.clusters.insert(
            s.name.clone(),
            ProxyCluster {
                protocol: s.protocol.into(),
                endpoints: s.endpoints.clone(),
                policy: Default::default(),
                tls: None,
            },
        );
    }
    view
}

/// Holds the current snapshot.
#[derive(Debug)]
pub struct Store {
    current: ArcSwap<Snapshot>,
    /// Endpoint health, latency and limits, kept across snapshots.
    registry: Registry,
    /// Whether snapshots carry the table by address (transparent mode).
    intercepting: bool,
}

impl Store {
    /// A store serving a static config as version 1; `intercepting` (transparent mode)
    /// makes every snapshot look destinations up by address too.
    pub fn from_static(config: Config, intercepting: bool) -> Result<Self, ConfigError> {
        let view = static_view(&config);
        let registry = Registry::default();
        let first = Snapshot::new(1, config, view, &registry, intercepting)?;
        Ok(Store {
            current: ArcSwap::from_pointee(first),
            registry,
            intercepting,
        })
    }

    /// Builds the next snapshot (not yet published) from settings and a view.
    pub fn build(&self, config: Config, view: ProxyView) -> Result<Snapshot, ConfigError> {
        Snapshot::new(
            self.next_version(),
            config,
            view,
            &self.registry,
            self.intercepting,
        )
    }

    /// The snapshot to use for one request or connection.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The version the next published snapshot must carry.
    pub fn next_version(&self) -> u64 {
        self.current.load().version + 1
    }

    /// Publishes a snapshot built with [`Store::next_version`].
    pub fn publish(&self, snapshot: Snapshot) -> u64 {
        let version = snapshot.version;
        self.current.store(Arc::new(snapshot));
        version
    }

    /// Builds and publishes the next version of a static config.
    pub fn publish_static(&self, config: Config) -> Result<u64, ConfigError> {
        let view = static_view(&config);
        let snapshot = self.build(config, view)?;
        Ok(self.publish(snapshot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use std::net::SocketAddr;

    #[test]
    fn publish_swaps_whole_snapshot_and_keeps_old_one_alive_for_holders() {
        let store = Store::from_static(
            parse("services:\n  - name: a\n    endpoints: [\"127.0.0.1:1\"]\n").unwrap(),
            false,
        )
        .unwrap();
        let held = store.load();
        let v = store
            .publish_static(
                parse("services:\n  - name: b\n    endpoints: [\"127.0.0.1:2\"]\n").unwrap(),
            )
            .unwrap();
        assert_eq!(v, 2);
        assert!(
            held.destination("a").is_some(),
            "in-flight holder keeps its snapshot"
        );
        let now = store.load();
        assert!(now.destination("a").is_none());
        let b = now.destination("b").unwrap();
        assert_eq!(
            b.default_cluster.as_ref().unwrap().pick(None).unwrap().addr,
            SocketAddr::from(([127, 0, 0, 1], 2))
        );
    }
}
