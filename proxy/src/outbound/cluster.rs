//! A backend: its endpoints with their live state, and the policy that the balance,
//! breaker and retry stages apply to it.
//!
//! [`Cluster`] belongs to one snapshot; the [`ClusterState`] it points to (endpoint
//! health and latency, ejections, limits, retry budget) lives in the [`Registry`] across
//! snapshots, so a reload does not forget that an endpoint is slow or failing.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tandem_xds::domain::CallPolicy;

use super::balance::Balancer;
use super::breaker::outlier::Ejections;
use super::endpoint::{now_nanos, EndpointState, Outcome};
use super::retry::budget::Budget;
use crate::client::limits::LimitState;
use crate::config::Protocol;

/// What outlives a snapshot for one cluster.
#[derive(Debug, Default)]
pub struct ClusterState {
    endpoints: Mutex<HashMap<SocketAddr, Arc<EndpointState>>>,
    /// Endpoints out of rotation.
    pub ejections: Ejections,
    /// Pool limit counters.
    pub limits: Arc<LimitState>,
    /// Retry budget window.
    pub budget: Budget,
}

/// Cluster states by cluster name, shared by the snapshots a store publishes.
#[derive(Debug, Default)]
pub struct Registry {
    clusters: Mutex<HashMap<String, Arc<ClusterState>>>,
}

impl Registry {
    /// The state of `name`, created on first use.
    pub fn cluster(&self, name: &str) -> Arc<ClusterState> {
        match self.clusters.lock() {
            Ok(mut map) => map.entry(name.to_string()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    /// Forgets clusters no longer configured.
    pub fn retain(&self, keep: &HashSet<&str>) {
        if let Ok(mut map) = self.clusters.lock() {
            map.retain(|name, _| keep.contains(name.as_str()));
        }
    }
}

/// A set of endpoints traffic can be balanced over, as one snapshot configures it.
#[derive(Debug)]
pub struct Cluster {
    /// Cluster name.
    pub name: Arc<str>,
    /// The `backend` metric label: the backend service's short name.
    pub label: Arc<str>,
    /// Upstream protocol.
    pub protocol: Protocol,
    /// Endpoints, with their live state.
    pub endpoints: Vec<Arc<EndpointState>>,
    /// Balancing, limits, outlier detection, retry budget.
    pub policy: CallPolicy,
    /// State shared across snapshots.
    pub state: Arc<ClusterState>,
    /// The SPIFFE IDs its endpoints may present over mutual TLS, as one key
    /// ([`crate::tls::expected_servers`]); `None`: plaintext.
    pub tls: Option<Arc<str>>,
    balancer: Balancer,
}

impl Cluster {
    /// A cluster over `endpoints`, reusing what `state` knows about each of them.
    pub fn new(
        name: &str,
        label: &str,
        protocol: Protocol,
        endpoints: &[SocketAddr],
        policy: CallPolicy,
        state: Arc<ClusterState>,
    ) -> Self {
        let now = now_nanos();
        let endpoints: Vec<Arc<EndpointState>> = match state.endpoints.lock() {
            Ok(mut known) => {
                let peers = known.len();
                let average = (peers > 0)
                    .then(|| known.values().map(|e| e.latency(now)).sum::<f64>() / peers as f64);
                let eps: Vec<_> = endpoints
                    .iter()
                    .map(|a| {
                        known
                            .entry(*a)
                            .or_insert_with(|| {
                                Arc::new(match average {
                                    Some(avg) => EndpointState::with_latency(*a, avg),
                                    None => EndpointState::new(*a),
                                })
                            })
                            .clone()
                    })
                    .collect();
                known.retain(|a, _| endpoints.contains(a));
                eps
            }
            Err(_) => endpoints
                .iter()
                .map(|a| Arc::new(EndpointState::new(*a)))
                .collect(),
        };
        state.ejections.recount(&endpoints, now);
        Cluster {
            name: name.into(),
            label: label.into(),
            protocol,
            endpoints,
            policy,
            state,
            tls: None,
            balancer: Balancer::new(policy.lb),
        }
    }

    /// The endpoint at `addr`, for a call the app addressed to it: no balancing, and no
    /// ejection either (the app asked for this one).
    pub fn endpoint(&self, addr: SocketAddr) -> Option<&Arc<EndpointState>> {
        self.endpoints.iter().find(|e| e.addr == addr)
    }

    /// Chooses an endpoint (see [`Balancer::pick`]), avoiding `avoid` (the one a retry
    /// just failed on) and ejected endpoints while others remain; `None` only when there
    /// are no endpoints.
    pub fn pick(&self, avoid: Option<SocketAddr>) -> Option<&Arc<EndpointState>> {
        self.balancer
            .pick(&self.endpoints, avoid, &self.state.ejections)
    }

    /// Records how an attempt to `ep` ended; true when it got the endpoint ejected.
    pub fn record(&self, ep: &EndpointState, outcome: Outcome) -> bool {
        self.state.ejections.record(
            self.policy.outlier.as_ref(),
            self.endpoints.len(),
            ep,
            outcome,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tandem_xds::domain::{LoadBalancer, OutlierDetection};

    fn cluster(lb: LoadBalancer, n: u16, outlier: Option<OutlierDetection>) -> Cluster {
        let addrs: Vec<SocketAddr> = (1..=n)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        let policy = CallPolicy {
            lb,
            outlier,
            ..Default::default()
        };
        Cluster::new("c", "c", Protocol::Http1, &addrs, policy, Arc::default())
    }

    #[test]
    fn p2c_prefers_the_faster_endpoint() {
        let c = cluster(LoadBalancer::PeakEwma, 2, None);
        let now = now_nanos();
        c.endpoints[0].observe_latency(Duration::from_millis(1), now);
        c.endpoints[1].observe_latency(Duration::from_millis(10), now);
        let fast = (0..1000)
            .filter(|_| c.pick(None).unwrap().addr.port() == 1)
            .count();
        // With two endpoints P2C always compares both.
        assert_eq!(fast, 1000);
        // Load counts too: enough requests in flight make the fast one the costlier.
        let held: Vec<_> = (0..20).map(|_| c.endpoints[0].start()).collect();
        assert_eq!(c.pick(None).unwrap().addr.port(), 2);
        drop(held);
    }

    #[test]
    fn round_robin_avoids_and_skips_ejected() {
        let od = OutlierDetection {
            consecutive_5xx: Some(1),
            max_ejection_percent: 50,
            base_ejection_time: Duration::from_secs(60),
            ..Default::default()
        };
        let c = cluster(LoadBalancer::RoundRobin, 3, Some(od));
        let ports: Vec<u16> = (0..6).map(|_| c.pick(None).unwrap().addr.port()).collect();
        assert_eq!(ports, [1, 2, 3, 1, 2, 3]);
        assert!((0..10).all(|_| c.pick(Some(c.endpoints[0].addr)).unwrap().addr.port() != 1));
        assert!(c.record(&c.endpoints[1], Outcome::ServerError(500)));
        // 50 % of 3 rounds down to 1: a second ejection is refused.
        assert!(!c.record(&c.endpoints[2], Outcome::ServerError(500)));
        assert!((0..10).all(|_| c.pick(None).unwrap().addr.port() != 2));
        // A new snapshot of the same cluster keeps the ejection.
        let again = Cluster::new(
            "c",
            "c",
            Protocol::Http1,
            &c.endpoints.iter().map(|e| e.addr).collect::<Vec<_>>(),
            c.policy,
            c.state.clone(),
        );
        assert!((0..10).all(|_| again.pick(None).unwrap().addr.port() != 2));
    }

    #[test]
    fn a_joining_endpoint_starts_at_its_peers_average_latency() {
        let state: Arc<ClusterState> = Arc::default();
        let a = SocketAddr::from(([127, 0, 0, 1], 1));
        let b = SocketAddr::from(([127, 0, 0, 1], 2));
        let one = Cluster::new(
            "c",
            "c",
            Protocol::Http1,
            &[a],
            CallPolicy::default(),
            state.clone(),
        );
        one.endpoints[0].observe_latency(Duration::from_micros(300), now_nanos());
        let two = Cluster::new(
            "c",
            "c",
            Protocol::Http1,
            &[a, b],
            CallPolicy::default(),
            state,
        );
        let now = now_nanos();
        let (la, lb) = (two.endpoints[0].latency(now), two.endpoints[1].latency(now));
        assert!((lb - la).abs() < la * 0.01, "new {lb} vs peer {la}");
        // Equal latencies share the traffic.
        let to_b = (0..1000)
            .filter(|_| two.pick(None).unwrap().addr == b)
            .count();
        assert!((300..=700).contains(&to_b), "{to_b}");
    }
}
