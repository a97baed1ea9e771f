//! The one immutable config snapshot every request reads, swapped atomically on reload.
//!
//! A request loads the snapshot once and uses it to the end, so a reload never changes
//! the rules under a request already in flight, and nothing is ever half-applied.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::{Config, Protocol};

/// One complete, validated configuration generation.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one with each accepted config.
    pub version: u64,
    /// When this snapshot was accepted.
    pub loaded_at: SystemTime,
    /// The validated config it was built from.
    pub config: Config,
    /// This workload's service name, shared as a metric label.
    pub own_service: Arc<str>,
    services: HashMap<String, Arc<Destination>>,
}

/// What the request path needs to know about one destination service.
#[derive(Debug)]
pub struct Destination {
    /// Service name, also the `dst_service` metric label.
    pub name: Arc<str>,
    /// Upstream protocol.
    pub protocol: Protocol,
    /// Endpoints in config order.
    pub endpoints: Vec<SocketAddr>,
    next: AtomicUsize,
}

impl Destination {
    /// Builds a destination over `endpoints`.
    pub fn new(name: &str, protocol: Protocol, endpoints: Vec<SocketAddr>) -> Self {
        Destination {
            name: name.into(),
            protocol,
            endpoints,
            next: AtomicUsize::new(0),
        }
    }

    /// Picks the next endpoint in round-robin order; `None` when there are none.
    ///
    /// Load-aware balancing (P2C over peak EWMA) replaces this with traffic management;
    /// round robin is the honest baseline until endpoint load is measured.
    pub fn pick(&self) -> Option<SocketAddr> {
        match self.endpoints.len() {
            0 => None,
            1 => Some(self.endpoints[0]),
            n => Some(self.endpoints[self.next.fetch_add(1, Ordering::Relaxed) % n]),
        }
    }
}

impl Snapshot {
    /// Builds snapshot number `version` from a validated config.
    pub fn new(version: u64, config: Config) -> Self {
        let services = config
            .services
            .values()
            .map(|s| {
                let dest = Destination::new(&s.name, s.protocol, s.endpoints.clone());
                (s.name.clone(), Arc::new(dest))
            })
            .collect();
        Snapshot {
            version,
            loaded_at: SystemTime::now(),
            own_service: config.service.as_str().into(),
            config,
            services,
        }
    }

    /// The destination for a service name, if configured.
    pub fn destination(&self, name: &str) -> Option<&Arc<Destination>> {
        self.services.get(name)
    }
}

/// Holds the current snapshot and tells watchers when it changes.
#[derive(Debug)]
pub struct Store {
    current: ArcSwap<Snapshot>,
    changed: watch::Sender<u64>,
}

impl Store {
    /// A store serving `config` as version 1.
    pub fn new(config: Config) -> Self {
        let (changed, _) = watch::channel(1);
        Store {
            current: ArcSwap::from_pointee(Snapshot::new(1, config)),
            changed,
        }
    }

    /// The snapshot to use for one request or connection.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Publishes `config` as the next version and returns that version.
    pub fn publish(&self, config: Config) -> u64 {
        let version = self.current.load().version + 1;
        self.current.store(Arc::new(Snapshot::new(version, config)));
        self.changed.send_replace(version);
        version
    }

    /// A receiver that sees each newly published version.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    #[test]
    fn publish_swaps_whole_snapshot_and_keeps_old_one_alive_for_holders() {
        let store = Store::new(
            parse("services:\n  - name: a\n    endpoints: [\"127.0.0.1:1\"]\n").unwrap(),
        );
        let held = store.load();
        let v = store
            .publish(parse("services:\n  - name: b\n    endpoints: [\"127.0.0.1:2\"]\n").unwrap());
        assert_eq!(v, 2);
        assert!(
            held.destination("a").is_some(),
            "in-flight holder keeps its snapshot"
        );
        let now = store.load();
        assert!(now.destination("a").is_none());
        assert!(now.destination("b").is_some());
    }

    #[test]
    fn round_robin_visits_every_endpoint() {
        let eps: Vec<SocketAddr> = (1..=3)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        let d = Destination::new("x", Protocol::Detect, eps.clone());
        let picked: Vec<_> = (0..6).filter_map(|_| d.pick()).collect();
        for e in &eps {
            assert_eq!(picked.iter().filter(|p| *p == e).count(), 2);
        }
        assert!(Destination::new("y", Protocol::Detect, vec![])
            .pick()
            .is_none());
    }
}
