//! Reconnect and retry waits for the proxy's own clients (xDS, identity): exponential, capped,
//! with ±50 % jitter so a fleet of proxies does not retry in lockstep when a server returns.

use std::time::Duration;

/// `base × 2^attempt`, at most `cap`, then ±50 % jitter (never below 10 ms).
pub fn jittered(base: Duration, attempt: u32, cap: Duration) -> Duration {
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let exp = millis(base)
        .saturating_mul(1 << attempt.min(16))
        .min(millis(cap))
        .max(1);
    let jitter = crate::random::random_below(exp) as i64 - (exp / 2) as i64;
    Duration::from_millis((exp as i64 + jitter).max(10) as u64)
}
