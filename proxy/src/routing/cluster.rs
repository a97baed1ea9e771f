//! A destination's endpoints and how one is chosen: power of two choices over peak EWMA
//! (default) or over requests in flight, or round robin — skipping ejected endpoints.
//!
//! [`Cluster`] belongs to one snapshot; the [`ClusterState`] it points to (endpoint
//! health and latency, limits, retry budget) lives in the [`Registry`] across snapshots.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tandem_xds::domain::{CallPolicy, LoadBalancer};

use super::budget::Budget;
use super::endpoint::{now_nanos, EndpointState, Outcome};
use super::limits::LimitState;
use super::random_below;
use crate::config::Protocol;

/// What outlives a snapshot for one cluster.
#[derive(Debug, Default)]
pub struct ClusterState {
    endpoints: Mutex<HashMap<SocketAddr, Arc<EndpointState>>>,
    ejected: AtomicU32,
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
    /// The SPIFFE ID its endpoints must present over mutual TLS (`None`: plaintext).
    pub tls: Option<Arc<str>>,
    next: AtomicUsize,
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
        // Endpoints removed while ejected must not hold ejection places.
        let ejected = endpoints
            .iter()
            .filter(|e| e.is_ejected(now, || {}))
            .count();
        state.ejected.store(
            u32::try_from(ejected).unwrap_or(u32::MAX),
            Ordering::Relaxed,
        );
        Cluster {
            name: name.into(),
            label: label.into(),
            protocol,
            endpoints,
            policy,
            state,
            tls: None,
            next: AtomicUsize::new(0),
        }
    }

    /// Chooses an endpoint, avoiding `avoid` (the one a retry just failed on) and ejected
    /// endpoints while others remain; `None` only when there are no endpoints.
    pub fn pick(&self, avoid: Option<SocketAddr>) -> Option<&Arc<EndpointState>> {
        let eps = &self.endpoints;
        if eps.len() <= 1 {
            return eps.first();
        }
        let now = now_nanos();
        if avoid.is_none() && self.state.ejected.load(Ordering::Relaxed) == 0 {
            return Some(self.choose(eps.len(), |i| &eps[i], now));
        }
        let mut pool: Vec<&Arc<EndpointState>> = eps
            .iter()
            .filter(|e| Some(e.addr) != avoid && !self.is_ejected(e, now))
            .collect();
        if pool.is_empty() {
            // Everything is ejected (or only the avoided one is left): better to try a
            // doubtful endpoint than to fail the request outright.
            pool = eps.iter().filter(|e| Some(e.addr) != avoid).collect();
        }
        Some(self.choose(pool.len(), |i| pool[i], now))
    }

    fn choose<'a>(
        &self,
        n: usize,
        get: impl Fn(usize) -> &'a Arc<EndpointState>,
        now: u64,
    ) -> &'a Arc<EndpointState> {
        if n == 1 {
            return get(0);
        }
        if self.policy.lb == LoadBalancer::RoundRobin {
            return get(self.next.fetch_add(1, Ordering::Relaxed) % n);
        }
        let i = random_below(n as u64) as usize;
        let mut j = random_below(n as u64 - 1) as usize;
        if j >= i {
            j += 1;
        }
        let (a, b) = (get(i), get(j));
        let a_better = match self.policy.lb {
            LoadBalancer::LeastRequest => a.in_flight() <= b.in_flight(),
            // Costs within 1 % are a tie, left to the random order of `a` and `b`: float
            // noise must not decide, or equal endpoints would not share the traffic.
            _ => a.ewma_cost(now) <= b.ewma_cost(now) * 1.01,
        };
        if a_better {
            a
        } else {
            b
        }
    }

    fn is_ejected(&self, e: &EndpointState, now: u64) -> bool {
        e.is_ejected(now, || {
            self.state.ejected.fetch_sub(1, Ordering::Relaxed);
        })
    }

    /// Records how an attempt to `ep` ended; true when it got the endpoint ejected.
    pub fn record(&self, ep: &EndpointState, outcome: Outcome) -> bool {
        let Some(policy) = &self.policy.outlier else {
            return false;
        };
        if !ep.record(outcome, policy) {
            return false;
        }
        let n = u32::try_from(self.endpoints.len()).unwrap_or(u32::MAX);
        // At least one endpoint may always be ejected, as in Envoy.
        let cap = (n.saturating_mul(policy.max_ejection_percent) / 100).max(1);
        if self.state.ejected.load(Ordering::Relaxed) >= cap {
            return false;
        }
        if ep.eject(policy, now_nanos()) {
            self.state.ejected.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tandem_xds::domain::OutlierDetection;

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
