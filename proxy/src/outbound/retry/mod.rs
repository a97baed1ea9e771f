//! Stage 6, retry: which failed attempts are sent again, and how long to wait first.
//!
//! A request that was never written upstream (connect refused, a pooled connection that
//! closed under it) is always sent again, to another endpoint, whatever its method, at
//! most [`MAX_UNSENT_RETRIES`] times. Anything else is retried only when the route has a
//! retry policy, the method is idempotent (or the route allows otherwise), the body is
//! still replayable ([`replay`]) and the backend's retry budget ([`budget`]) has room;
//! each policy retry waits a jittered, growing backoff ([`backoff`]). Mirrors ([`mirror`])
//! live here because they are built from the same kept copy of the request.

pub mod backoff;
pub mod budget;
pub mod mirror;
pub mod replay;

use http::Method;
use tandem_xds::domain::ProxyRetry;

use crate::errors::{ProxyError, Retryable};
use crate::random::random_below;

/// Extra attempts for requests that never reached an endpoint.
pub const MAX_UNSENT_RETRIES: u32 = 2;

/// The retry decisions of one request.
#[derive(Debug)]
pub struct Retries<'a> {
    /// The route's policy, if it applies to this request's method.
    policy: Option<&'a ProxyRetry>,
    unsent: u32,
    sent: u32,
}

impl<'a> Retries<'a> {
    /// The decisions for a request with `method` on a route with `retry`.
    pub fn new(retry: Option<&'a ProxyRetry>, method: &Method) -> Self {
        let policy =
            retry.filter(|r| r.attempts > 0 && (!r.idempotent_only || is_idempotent(method)));
        Retries {
            policy,
            unsent: 0,
            sent: 0,
        }
    }

    /// Whether a policy may retry this request at all (then its body is kept).
    pub fn enabled(&self) -> bool {
        self.policy.is_some()
    }

    /// Whether a response with `status` is to be retried (budget and body permitting).
    pub fn on_status(&self, status: u16) -> bool {
        self.policy
            .is_some_and(|r| r.codes.contains(&status) && self.sent < r.attempts)
    }

    /// Whether a failed attempt is to be retried by the policy (budget and body
    /// permitting).
    pub fn on_failure(&self, error: &ProxyError) -> bool {
        error.retryable() != Retryable::No && self.policy.is_some_and(|r| self.sent < r.attempts)
    }

    /// Whether a request that never reached its endpoint goes to another one; counts it.
    pub fn resend_unsent(&mut self) -> bool {
        if self.unsent >= MAX_UNSENT_RETRIES {
            return false;
        }
        self.unsent += 1;
        true
    }

    /// Counts a policy retry and waits its backoff.
    pub async fn backoff(&mut self) {
        self.sent += 1;
        if let Some(r) = self.policy {
            tokio::time::sleep(backoff::delay(r, self.sent, random_below)).await;
        }
    }
}

/// Methods that may be retried without the route's explicit consent (RFC 9110 §9.2.2).
pub fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::time::Duration;

    fn policy(attempts: u32, idempotent_only: bool) -> ProxyRetry {
        ProxyRetry {
            attempts,
            codes: vec![503],
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            idempotent_only,
        }
    }

    fn written() -> ProxyError {
        ProxyError::AttemptTimeout(Duration::from_secs(1))
    }

    #[test]
    fn the_policy_applies_to_idempotent_methods_unless_the_route_allows_all() {
        let strict = policy(2, true);
        assert!(Retries::new(Some(&strict), &Method::GET).enabled());
        assert!(Retries::new(Some(&strict), &Method::PUT).enabled());
        assert!(!Retries::new(Some(&strict), &Method::POST).enabled());
        let lax = policy(2, false);
        assert!(Retries::new(Some(&lax), &Method::POST).enabled());
        assert!(!Retries::new(Some(&policy(0, false)), &Method::GET).enabled());
        assert!(!Retries::new(None, &Method::GET).enabled());
    }

    #[tokio::test(start_paused = true)]
    async fn statuses_and_failures_are_retried_up_to_the_attempts() {
        let p = policy(2, true);
        let mut r = Retries::new(Some(&p), &Method::GET);
        assert!(r.on_status(503));
        assert!(!r.on_status(500), "not a retried status");
        assert!(r.on_failure(&written()));
        r.backoff().await;
        r.backoff().await;
        assert!(!r.on_status(503), "two retries spent");
        assert!(!r.on_failure(&written()));
    }

    #[test]
    fn the_requests_own_deadline_or_a_refusal_is_never_retried() {
        let p = policy(3, false);
        let r = Retries::new(Some(&p), &Method::GET);
        assert!(!r.on_failure(&ProxyError::Timeout(Duration::from_secs(1))));
        assert!(!r.on_failure(&ProxyError::Denied));
        let refused = ProxyError::Connect {
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        assert!(r.on_failure(&refused));
    }

    #[test]
    fn unsent_requests_go_elsewhere_twice_without_a_policy() {
        let mut r = Retries::new(None, &Method::POST);
        assert!(r.resend_unsent());
        assert!(r.resend_unsent());
        assert!(!r.resend_unsent());
        assert!(
            !r.on_failure(&written()),
            "no policy: a written request is not resent"
        );
    }

    /// Backoff on the clock the proxy sleeps on (paused): each wait is at least half of
    /// base × 2^(n-1) and at most the whole of it, capped at the maximum. The timer
    /// rounds a sleep up to the millisecond, so a drawn delay just under the whole waits
    /// exactly the whole; that the draw itself stays below it is `backoff`'s own test.
    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_from_the_base_with_jitter_up_to_the_cap() {
        let p = policy(6, false);
        let mut r = Retries::new(Some(&p), &Method::GET);
        for expected_ms in [100u64, 200, 400, 800, 1000, 1000] {
            let start = tokio::time::Instant::now();
            r.backoff().await;
            let waited = start.elapsed();
            let full = Duration::from_millis(expected_ms);
            assert!(
                waited >= full / 2 && waited <= full,
                "{waited:?} for {full:?}"
            );
        }
    }
}
