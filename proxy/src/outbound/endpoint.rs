//! Endpoint state: what the proxy has learned about one endpoint from the requests it sent
//! there — its load (requests in flight), its latency (peak EWMA) and its health
//! (consecutive failures, ejections). The balance stage reads the first two, the breaker
//! stage writes the third. Shared by every worker thread and kept across config changes,
//! so a reload does not forget that an endpoint is slow or failing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tandem_xds::domain::OutlierDetection;

/// How fast old latency observations fade (Finagle's and Linkerd's default decay).
const EWMA_DECAY: Duration = Duration::from_secs(10);
/// The latency assumed for an endpoint with no observation yet: low enough that new
/// endpoints get tried, high enough that they do not take all the traffic at once.
const DEFAULT_RTT: Duration = Duration::from_millis(5);

/// Nanoseconds since a process-wide origin: lets instants live in atomics.
///
/// Read from tokio's clock, which is the system's monotonic clock in the proxy and a
/// clock the tests can pause and advance (ejection, probation and the retry budget's
/// window are then tested without waiting). The origin lies an hour before the first
/// reading, so a paused test clock that started a little earlier still reads after it.
pub fn now_nanos() -> u64 {
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(|| {
        let now = std::time::Instant::now();
        now.checked_sub(Duration::from_secs(3600)).unwrap_or(now)
    });
    let now = tokio::time::Instant::now().into_std();
    // Starts at 1 so that 0 can mean "never".
    u64::try_from(now.saturating_duration_since(origin).as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// How one attempt to an endpoint ended, as outlier detection counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response that is not a server error.
    Success,
    /// A 5xx response.
    ServerError(u16),
    /// No response: connect failure, reset, timeout.
    ConnectionFailure,
}

impl Outcome {
    /// The outcome of a response status.
    pub fn of_status(status: u16) -> Outcome {
        if status >= 500 {
            Outcome::ServerError(status)
        } else {
            Outcome::Success
        }
    }

    fn is_gateway_error(self) -> bool {
        matches!(
            self,
            Outcome::ConnectionFailure | Outcome::ServerError(502..=504)
        )
    }
}

#[derive(Debug)]
struct Ewma {
    /// Peak-sensitive moving average of latency, in nanoseconds.
    cost: f64,
    /// When `cost` was last updated (see [`now_nanos`]).
    stamp: u64,
}

/// One endpoint's live state.
#[derive(Debug)]
pub struct EndpointState {
    /// Where it listens.
    pub addr: SocketAddr,
    in_flight: AtomicU32,
    ewma: Mutex<Ewma>,
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    /// Ejected until this instant ([`now_nanos`]); 0: in rotation.
    ejected_until: AtomicU64,
    /// Ejections in the current run of offences (the next lasts this many + 1 times base).
    ejections: AtomicU32,
    /// When the last ejection ended or was due to end.
    last_ejection_end: AtomicU64,
}

impl EndpointState {
    /// A fresh endpoint: nothing in flight, default latency, healthy.
    pub fn new(addr: SocketAddr) -> Self {
        Self::with_latency(addr, DEFAULT_RTT.as_nanos() as f64)
    }

    /// A fresh endpoint assumed to answer in `latency` nanoseconds: an endpoint joining a
    /// cluster starts at its peers' average, so it neither starves (a pessimistic default
    /// above the peers' latency would never be picked at low load) nor takes a burst.
    pub fn with_latency(addr: SocketAddr, latency: f64) -> Self {
        EndpointState {
            addr,
            in_flight: AtomicU32::new(0),
            ewma: Mutex::new(Ewma {
                cost: latency,
                stamp: now_nanos(),
            }),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            last_ejection_end: AtomicU64::new(0),
        }
    }

    /// Requests sent and not yet answered.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Marks a request as sent; the guard marks it answered when dropped.
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// The peak-EWMA load score: decayed latency times (requests in flight + 1). Lower is
    /// better. An endpoint that answered slowly a while ago slowly earns its way back.
    pub fn ewma_cost(&self, now: u64) -> f64 {
        self.latency(now) * f64::from(self.in_flight() + 1)
    }

    /// The latency estimate (nanoseconds), decayed by the time since the last response.
    pub fn latency(&self, now: u64) -> f64 {
        match self.ewma.lock() {
            Ok(e) => {
                let idle = now.saturating_sub(e.stamp) as f64;
                e.cost * (-idle / EWMA_DECAY.as_nanos() as f64).exp()
            }
            Err(_) => DEFAULT_RTT.as_nanos() as f64,
        }
    }

    /// Records a response latency: a slower response than the average replaces it at once
    /// (the "peak"), a faster one is averaged in with a time-based weight.
    pub fn observe_latency(&self, rtt: Duration, now: u64) {
        let rtt = rtt.as_nanos() as f64;
        if let Ok(mut e) = self.ewma.lock() {
            if rtt > e.cost {
                e.cost = rtt;
            } else {
                let elapsed = now.saturating_sub(e.stamp) as f64;
                let w = (-elapsed / EWMA_DECAY.as_nanos() as f64).exp();
                e.cost = e.cost * w + rtt * (1.0 - w);
            }
            e.stamp = now;
        }
    }

    /// Whether the endpoint is out of rotation at `now`. An ejection that has run its
    /// course ends here (the endpoint is back, on probation), which `on_return` reports.
    pub fn is_ejected(&self, now: u64, on_return: impl FnOnce()) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        if until == 0 {
            return false;
        }
        if now < until {
            return true;
        }
        if self
            .ejected_until
            .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.last_ejection_end.store(until, Ordering::Relaxed);
            on_return();
        }
        false
    }

    /// Counts an outcome; returns true when it crosses a configured threshold (the caller
    /// checks the cluster-wide cap and calls [`Self::eject`]).
    pub fn record(&self, outcome: Outcome, policy: &OutlierDetection) -> bool {
        match outcome {
            Outcome::Success => {
                // Relaxed stores: a lost reset only delays an ejection by one request.
                if self.consecutive_5xx.load(Ordering::Relaxed) != 0 {
                    self.consecutive_5xx.store(0, Ordering::Relaxed);
                }
                if self.consecutive_gateway.load(Ordering::Relaxed) != 0 {
                    self.consecutive_gateway.store(0, Ordering::Relaxed);
                }
                false
            }
            failure => {
                let n5xx = self.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
                let ngw = if failure.is_gateway_error() {
                    self.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1
                } else {
                    self.consecutive_gateway.store(0, Ordering::Relaxed);
                    0
                };
                policy.consecutive_5xx.is_some_and(|t| n5xx >= t)
                    || policy.consecutive_gateway_errors.is_some_and(|t| ngw >= t)
            }
        }
    }

    /// Takes the endpoint out of rotation; returns false if it already was. The n-th
    /// ejection in a run lasts n × base (capped); a run ends when the endpoint has stayed
    /// in rotation for longer than the longest ejection.
    pub fn eject(&self, policy: &OutlierDetection, now: u64) -> bool {
        let last_end = self.last_ejection_end.load(Ordering::Relaxed);
        let quiet = Duration::from_nanos(now.saturating_sub(last_end));
        if last_end != 0 && quiet > policy.max_ejection_time {
            self.ejections.store(0, Ordering::Relaxed);
        }
        let n = self.ejections.load(Ordering::Relaxed) + 1;
        let length = policy
            .base_ejection_time
            .saturating_mul(n)
            .min(policy.max_ejection_time.max(policy.base_ejection_time));
        let until = now.saturating_add(u64::try_from(length.as_nanos()).unwrap_or(u64::MAX));
        if self
            .ejected_until
            .compare_exchange(0, until, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        self.ejections.store(n, Ordering::Relaxed);
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        self.consecutive_gateway.store(0, Ordering::Relaxed);
        true
    }
}

/// A request in flight to an endpoint; dropping it ends it.
#[derive(Debug)]
pub struct InFlight<'a>(&'a EndpointState);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: Some(3),
            consecutive_gateway_errors: None,
            base_ejection_time: Duration::from_secs(1),
            max_ejection_time: Duration::from_secs(10),
            max_ejection_percent: 100,
        }
    }

    #[test]
    fn consecutive_failures_eject_for_growing_times_and_success_resets() {
        let ep = EndpointState::new("127.0.0.1:1".parse().unwrap());
        let p = policy();
        assert!(!ep.record(Outcome::ServerError(500), &p));
        assert!(!ep.record(Outcome::ServerError(500), &p));
        assert!(!ep.record(Outcome::Success, &p), "success resets");
        assert!(!ep.record(Outcome::ServerError(500), &p));
        assert!(!ep.record(Outcome::ConnectionFailure, &p));
        assert!(ep.record(Outcome::ServerError(503), &p));
        let t0 = 1_000_000_000;
        assert!(ep.eject(&p, t0));
        assert!(!ep.eject(&p, t0), "already ejected");
        let mut returned = 0;
        assert!(ep.is_ejected(t0 + 999_000_000, || returned += 1));
        assert!(!ep.is_ejected(t0 + 1_000_000_000, || returned += 1));
        assert_eq!(returned, 1, "the return is reported once");
        // A repeat offence soon after doubles the ejection.
        let t1 = t0 + 2_000_000_000;
        assert!(ep.eject(&p, t1));
        assert!(ep.is_ejected(t1 + 1_900_000_000, || {}));
        assert!(!ep.is_ejected(t1 + 2_000_000_000, || {}));
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let ep = EndpointState::new("127.0.0.1:1".parse().unwrap());
        let t = now_nanos();
        ep.observe_latency(Duration::from_millis(100), t);
        let high = ep.ewma_cost(t);
        assert!((high - 100e6).abs() < 1e3, "{high}");
        ep.observe_latency(Duration::from_millis(1), t + 10_000_000_000);
        let lower = ep.ewma_cost(t + 10_000_000_000);
        assert!(lower < 50e6, "{lower}");
        let _busy = ep.start();
        assert!(ep.ewma_cost(t + 10_000_000_000) > lower * 1.9);
    }
}
