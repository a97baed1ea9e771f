//! Outlier ejection (passive health checking): an endpoint that fails too often in a row
//! leaves rotation for a while, longer each time it offends again, and never more of a
//! cluster than its `max_ejection_percent` (at least one). The per-endpoint counters live
//! in [`EndpointState`]; this is the cluster-wide part: the cap and the count.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tandem_xds::domain::OutlierDetection;

use crate::outbound::endpoint::{now_nanos, EndpointState, Outcome};

/// How many endpoints of one cluster are out of rotation; kept across snapshots.
#[derive(Debug, Default)]
pub struct Ejections {
    count: AtomicU32,
}

impl Ejections {
    /// Whether no endpoint is ejected (the balancer's fast path).
    pub fn none(&self) -> bool {
        self.count.load(Ordering::Relaxed) == 0
    }

    /// Whether `ep` is out of rotation at `now`; an ejection that has run its course ends
    /// here and frees its place.
    pub fn is_ejected(&self, ep: &EndpointState, now: u64) -> bool {
        ep.is_ejected(now, || {
            self.count.fetch_sub(1, Ordering::Relaxed);
        })
    }

    /// Counts afresh for a new set of endpoints: endpoints removed while ejected must not
    /// hold ejection places.
    pub fn recount(&self, endpoints: &[Arc<EndpointState>], now: u64) {
        let ejected = endpoints
            .iter()
            .filter(|e| e.is_ejected(now, || {}))
            .count();
        self.count.store(
            u32::try_from(ejected).unwrap_or(u32::MAX),
            Ordering::Relaxed,
        );
    }

    /// Records how an attempt to `ep` (one of `endpoints` in all) ended; true when that
    /// got it ejected.
    pub fn record(
        &self,
        policy: Option<&OutlierDetection>,
        endpoints: usize,
        ep: &EndpointState,
        outcome: Outcome,
    ) -> bool {
        let Some(policy) = policy else {
            return false;
        };
        if !ep.record(outcome, policy) {
            return false;
        }
        let n = u32::try_from(endpoints).unwrap_or(u32::MAX);
        // At least one endpoint may always be ejected, as in Envoy.
        let cap = (n.saturating_mul(policy.max_ejection_percent) / 100).max(1);
        if self.count.load(Ordering::Relaxed) >= cap {
            return false;
        }
        if ep.eject(policy, now_nanos()) {
            self.count.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy() -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: Some(2),
            consecutive_gateway_errors: None,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }

    fn endpoints(n: u16) -> Vec<Arc<EndpointState>> {
        (1..=n)
            .map(|p| Arc::new(EndpointState::new(([127, 0, 0, 1], p).into())))
            .collect()
    }

    /// Ejection, return on probation, and a repeat offence, on the clock the proxy reads
    /// (tokio's, paused here): the ejection ends exactly after the base time, and the next
    /// one in the same run lasts twice as long.
    #[tokio::test(start_paused = true)]
    async fn ejected_endpoints_return_on_probation_and_repeat_offences_last_longer() {
        let eps = endpoints(4);
        let ejections = Ejections::default();
        let p = policy();
        let fail = |ej: &Ejections| ej.record(Some(&p), 4, &eps[0], Outcome::ServerError(503));
        assert!(!fail(&ejections));
        assert!(fail(&ejections), "the second 5xx in a row ejects");
        assert!(!ejections.none());
        assert!(ejections.is_ejected(&eps[0], now_nanos()));

        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(ejections.is_ejected(&eps[0], now_nanos()));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            !ejections.is_ejected(&eps[0], now_nanos()),
            "back after 30 s"
        );
        assert!(ejections.none(), "its place is freed");

        // On probation: offending again soon ejects for 2 × base.
        assert!(!fail(&ejections));
        assert!(fail(&ejections));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(ejections.is_ejected(&eps[0], now_nanos()));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!ejections.is_ejected(&eps[0], now_nanos()));
    }

    #[test]
    fn the_cap_keeps_most_endpoints_in_rotation_and_no_policy_ejects_nothing() {
        let eps = endpoints(4);
        let ejections = Ejections::default();
        let p = policy();
        let now = now_nanos();
        for ep in &eps[..2] {
            ep.record(Outcome::ConnectionFailure, &p);
            assert!(ejections.record(Some(&p), 4, ep, Outcome::ConnectionFailure));
        }
        eps[2].record(Outcome::ConnectionFailure, &p);
        assert!(
            !ejections.record(Some(&p), 4, &eps[2], Outcome::ConnectionFailure),
            "50 % of 4 are out already"
        );
        let fresh = Ejections::default();
        for _ in 0..10 {
            assert!(!fresh.record(None, 4, &eps[3], Outcome::ConnectionFailure));
        }
        // A new endpoint set counts only the ejected endpoints it keeps.
        ejections.recount(&eps[1..], now);
        assert!(!ejections.none());
        ejections.recount(&eps[2..], now);
        assert!(ejections.none());
    }
}
