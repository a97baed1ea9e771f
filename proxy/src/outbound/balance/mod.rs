//! Stage 7, balance: which endpoint of the backend takes this attempt. Power of two
//! choices over peak EWMA latency × load (default), or over requests in flight, or round
//! robin; ejected endpoints are skipped, and so is the endpoint a retry just failed on,
//! while any other remains.
//!
//! The policy (which rule, what to avoid) is here; the measurements it reads (latency,
//! requests in flight) are the endpoints' own ([`EndpointState`]), shared by every worker.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tandem_xds::domain::LoadBalancer;

use super::breaker::outlier::Ejections;
use super::endpoint::{now_nanos, EndpointState};
use crate::random::random_below;

/// One backend's balancer, as one snapshot configures it.
#[derive(Debug)]
pub struct Balancer {
    lb: LoadBalancer,
    /// Round robin's position.
    next: AtomicUsize,
}

impl Balancer {
    /// A balancer applying `lb`.
    pub fn new(lb: LoadBalancer) -> Self {
        Balancer {
            lb,
            next: AtomicUsize::new(0),
        }
    }

    /// Chooses among `eps`, avoiding `avoid` and ejected endpoints while others remain;
    /// `None` only when there are no endpoints.
    pub fn pick<'a>(
        &self,
        eps: &'a [Arc<EndpointState>],
        avoid: Option<SocketAddr>,
        ejections: &Ejections,
    ) -> Option<&'a Arc<EndpointState>> {
        if eps.len() <= 1 {
            return eps.first();
        }
        // Read only when there is a choice to make: most services have one endpoint.
        let now = now_nanos();
        if avoid.is_none() && ejections.none() {
            return Some(self.choose(eps.len(), |i| &eps[i], now));
        }
        let mut pool: Vec<&Arc<EndpointState>> = eps
            .iter()
            .filter(|e| Some(e.addr) != avoid && !ejections.is_ejected(e, now))
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
        if self.lb == LoadBalancer::RoundRobin {
            return get(self.next.fetch_add(1, Ordering::Relaxed) % n);
        }
        let i = random_below(n as u64) as usize;
        let mut j = random_below(n as u64 - 1) as usize;
        if j >= i {
            j += 1;
        }
        let (a, b) = (get(i), get(j));
        let a_better = match self.lb {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(n: u16) -> Vec<Arc<EndpointState>> {
        (1..=n)
            .map(|p| Arc::new(EndpointState::new(([127, 0, 0, 1], p).into())))
            .collect()
    }

    #[test]
    fn least_request_prefers_the_idler_endpoint() {
        let eps = endpoints(2);
        let b = Balancer::new(LoadBalancer::LeastRequest);
        let none = Ejections::default();
        let _busy: Vec<_> = (0..3).map(|_| eps[0].start()).collect();
        assert!((0..100).all(|_| b.pick(&eps, None, &none).unwrap().addr.port() == 2));
    }

    #[test]
    fn the_avoided_endpoint_is_used_only_when_nothing_else_is_left() {
        let eps = endpoints(1);
        let b = Balancer::new(LoadBalancer::PeakEwma);
        let none = Ejections::default();
        let only = eps[0].addr;
        assert_eq!(b.pick(&eps, Some(only), &none).unwrap().addr, only);
        assert!(b.pick(&[], None, &none).is_none());
        let eps = endpoints(3);
        let avoid = eps[1].addr;
        assert!((0..100).all(|_| b.pick(&eps, Some(avoid), &none).unwrap().addr != avoid));
    }
}
