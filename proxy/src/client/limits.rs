//! Connection pool limits of one backend (Envoy's circuit breakers), the mechanism:
//! counters of requests in flight, connections in use and requests waiting for a
//! connection, and the permits that hold a place until dropped. What an overflow means for
//! a request is the breaker stage's business (`outbound::breaker`).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tandem_xds::domain::PoolLimits;
use tokio::sync::Notify;

/// Counters shared by every worker for one destination.
#[derive(Debug, Default)]
pub struct LimitState {
    requests: AtomicU32,
    connections: AtomicU32,
    pending: AtomicU32,
    freed: Notify,
    /// Whether the breaker is reported open (so the gauge is written on changes only).
    open: AtomicBool,
}

/// Which limit turned a request away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// `max_requests`.
    Requests,
    /// `max_pending_requests` (or waiting for a connection took too long).
    Pending,
}

impl LimitState {
    /// Admits one more request in flight, or refuses it. Without `max_requests` nothing is
    /// counted: a shared counter touched by every worker on every request would cost
    /// cache-line traffic for a limit nobody set.
    pub fn admit_request(
        self: &Arc<Self>,
        limits: &PoolLimits,
    ) -> Result<Option<Permit>, Overflow> {
        if limits.max_requests.is_none() {
            return Ok(None);
        }
        acquire(&self.requests, limits.max_requests)
            .then(|| {
                Some(Permit {
                    state: self.clone(),
                    kind: PermitKind::Request,
                })
            })
            .ok_or(Overflow::Requests)
    }

    /// A connection slot (one HTTP/1 connection in use). Waits for one to be freed while
    /// at most `max_pending_requests` others wait, and for at most `wait`.
    pub async fn connection(
        self: &Arc<Self>,
        limits: &PoolLimits,
        wait: Duration,
    ) -> Result<Option<Permit>, Overflow> {
        if limits.max_connections.is_none() {
            return Ok(None);
        }
        let permit = || Permit {
            state: self.clone(),
            kind: PermitKind::Connection,
        };
        if acquire(&self.connections, limits.max_connections) {
            return Ok(Some(permit()));
        }
        if !acquire(&self.pending, limits.max_pending_requests) {
            return Err(Overflow::Pending);
        }
        let _pending = Permit {
            state: self.clone(),
            kind: PermitKind::Pending,
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let freed = self.freed.notified();
            if acquire(&self.connections, limits.max_connections) {
                return Ok(Some(permit()));
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(Overflow::Pending);
            }
        }
    }

    /// Notes that a limit turned a request away; true if the breaker was closed until now.
    pub fn trip(&self) -> bool {
        !self.open.swap(true, Ordering::Relaxed)
    }

    /// Notes that a request was admitted; true if that closes an open breaker (no limit
    /// is reached any more).
    pub fn reset(&self, limits: &PoolLimits) -> bool {
        self.open.load(Ordering::Relaxed)
            && !self.saturated(limits)
            && self.open.swap(false, Ordering::Relaxed)
    }

    /// Whether any limit is currently reached (the `tandem_circuit_breaker_open` gauge).
    pub fn saturated(&self, limits: &PoolLimits) -> bool {
        let at =
            |c: &AtomicU32, max: Option<u32>| max.is_some_and(|m| c.load(Ordering::Relaxed) >= m);
        at(&self.requests, limits.max_requests) || at(&self.connections, limits.max_connections)
    }
}

/// Increments `counter` if it is below `max` (always, when there is no max).
fn acquire(counter: &AtomicU32, max: Option<u32>) -> bool {
    match max {
        None => {
            counter.fetch_add(1, Ordering::Relaxed);
            true
        }
        Some(max) => counter
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok(),
    }
}

#[derive(Debug, Clone, Copy)]
enum PermitKind {
    Request,
    Connection,
    Pending,
}

/// A held request, connection or pending slot; released on drop.
#[derive(Debug)]
pub struct Permit {
    state: Arc<LimitState>,
    kind: PermitKind,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let counter = match self.kind {
            PermitKind::Request => &self.state.requests,
            PermitKind::Connection => &self.state.connections,
            PermitKind::Pending => &self.state.pending,
        };
        counter.fetch_sub(1, Ordering::AcqRel);
        if let PermitKind::Connection = self.kind {
            self.state.freed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn over_the_limits_fails_fast_and_freed_slots_are_handed_on() {
        let state = Arc::new(LimitState::default());
        let limits = PoolLimits {
            max_connections: Some(1),
            max_pending_requests: Some(1),
            max_requests: Some(2),
        };
        let r1 = state.admit_request(&limits).unwrap().unwrap();
        let _r2 = state.admit_request(&limits).unwrap();
        assert_eq!(
            state.admit_request(&limits).unwrap_err(),
            Overflow::Requests
        );
        drop(r1);
        assert!(state.admit_request(&limits).is_ok());

        let wait = Duration::from_secs(5);
        let c1 = state.connection(&limits, wait).await.unwrap();
        assert!(state.saturated(&limits));
        let s = state.clone();
        let waiter =
            tokio::spawn(async move { s.connection(&limits, wait).await.map(|p| p.is_some()) });
        // The second waiter finds the one pending place taken.
        tokio::task::yield_now().await;
        while state.pending.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        let start = std::time::Instant::now();
        assert_eq!(
            state.connection(&limits, wait).await.unwrap_err(),
            Overflow::Pending
        );
        assert!(start.elapsed() < Duration::from_millis(100), "fails fast");
        drop(c1);
        assert_eq!(waiter.await.unwrap(), Ok(true));
    }
}
